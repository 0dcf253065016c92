#!/usr/bin/python3
"""Checks the layering of DESIGN.md on the include lines of every source file:

- a layer reaches another only through its public headers (include/tpde/<layer>/...), and
  only the layers above it; its own private headers it includes by relative name;
- public headers include only public headers;
- nothing below src/fs includes libfuse, and in src/fs only the libfuse driver does
  (fuse_ops.*, mount.cpp);
- the codec and the format parsers know no files: no POSIX file or filesystem headers.

Usage: layering_test.py SOURCE_ROOT [RESULTS_DIR]. Writes "<passed> <failed>" (one check
per file) to RESULTS_DIR/layering.count; exits 1 on any violation, naming file and line.
"""
import os
import re
import sys

ABOVE = {  # layer -> the layers it may use (besides itself)
    "util": set(),
    "codec": {"util"},
    "format": {"util", "codec"},
    "cache": {"util"},
    "store": {"util", "codec", "format", "cache"},
    "fs": {"util", "cache", "store"},
    "tools": {"util", "codec", "format", "cache", "store", "fs"},
}
FUSE_FILES = {"src/fs/fuse_ops.hpp", "src/fs/fuse_ops.cpp", "src/fs/mount.cpp"}
NO_FILES = {"codec", "format"}  # layers that must not know files
FILE_HEADERS = {"fcntl.h", "unistd.h", "filesystem", "fstream", "dirent.h", "sys/stat.h"}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def layer_of(rel):
    parts = rel.split("/")
    if parts[0] == "src" and len(parts) > 2:
        return parts[1], False
    if parts[:2] == ["include", "tpde"] and len(parts) > 3:
        return parts[2], True
    return None, False


def check_file(root, rel):
    layer, public = layer_of(rel)
    problems = []
    with open(os.path.join(root, rel), errors="replace") as f:
        lines = f.readlines()
    for no, line in enumerate(lines, 1):
        m = INCLUDE.match(line)
        if not m:
            continue
        kind, name = m.groups()
        where = f"{rel}:{no}: #include {kind}{name}{'>' if kind == '<' else kind}"
        if kind == "<":
            if name.startswith("fuse") and rel not in FUSE_FILES:
                problems.append(f"{where}: libfuse outside the FUSE driver")
            if layer in NO_FILES and name in FILE_HEADERS:
                problems.append(f"{where}: the {layer} layer knows no files")
            continue
        if name.startswith("tpde/"):
            target = name.split("/")[1]
            if target != layer and target not in ABOVE.get(layer, set()):
                problems.append(f"{where}: {layer} may not use {target}")
            if not os.path.exists(os.path.join(root, "include", name)):
                problems.append(f"{where}: no such public header")
            continue
        if public:
            problems.append(f"{where}: a public header includes a private one")
            continue
        here = os.path.dirname(os.path.join(root, rel))
        if "/" in name or not os.path.exists(os.path.join(here, name)):
            problems.append(f"{where}: not a private header of {layer} "
                            "(another layer's internals?)")
    return problems


def main():
    root = sys.argv[1]
    results = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("RESULTS_DIR", "")
    passed = failed = 0
    for top in ("src", "include"):
        for d, _, names in os.walk(os.path.join(root, top)):
            for n in sorted(names):
                if not n.endswith((".cpp", ".hpp", ".inc")):
                    continue
                rel = os.path.relpath(os.path.join(d, n), root)
                problems = check_file(root, rel)
                for p in problems:
                    print(p)
                if problems:
                    failed += 1
                else:
                    passed += 1
    print(f"layering: {passed} files follow the layers, {failed} do not")
    if results:
        os.makedirs(results, exist_ok=True)
        with open(os.path.join(results, "layering.count"), "w") as f:
            f.write(f"{passed} {failed}\n")
    sys.exit(1 if failed or not passed else 0)


if __name__ == "__main__":
    main()
