#!/usr/bin/python3
"""The programs, their man pages and the README say the same thing.

- option lists: every option in `tpdefs --help` and in `tpde SUB --help` is in the man page
  (tpdefs.1, tpde.1 under its subcommand) and in the README, and every option the man page
  lists exists; options the README shows on a tpde/tpdefs command line exist;
- every --long-option of tpdefs also works as `-o key[=value]` (and ro, and what mount(8),
  fstab and systemd add), unknown items are refused; the helper mount.tpdefs takes the flags
  its man page lists;
- versions: `tpdefs --version`, `tpde --version`, the man pages and the Debian changelog
  carry meson.build's version;
- exit statuses: each man page's EXIT STATUS lists the codes the programs return, and they
  return them (usage errors 2, failures 1; the helper 1 and 32); `tpde foo` says "unknown
  subcommand foo";
- man pages: NAME, SYNOPSIS, DESCRIPTION, OPTIONS, EXIT STATUS, EXAMPLES and SEE ALSO
  sections, no groff warnings, every SEE ALSO page exists (ours, or installed).

Nothing here mounts: a tpdefs command line is checked against a mount point that does not
exist, which it reports (exit 1) only after parsing every option.

Usage: docs_test.py TPDE TPDEFS SOURCE_ROOT [RESULTS_DIR]; results in
RESULTS_DIR/cli_docs.count.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mount"))
from mount_util import Results  # noqa: E402

TPDE, TPDEFS, ROOT = sys.argv[1:4]
res = Results("cli_docs", sys.argv[4] if len(sys.argv) > 4 else None)
PKG = os.path.join(ROOT, "packaging")
TMP = tempfile.mkdtemp(prefix="tpdefs-docs-")
MISSING = os.path.join(TMP, "no-such-dir")  # neither store nor mount point exists


def run(*cmd, timeout=30):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def help_options(cmd):
    """{name: type text} of the options a CLI11 --help lists ("-j,--threads UINT:...")."""
    out = run(*cmd, "--help").stdout
    opts = {}
    section = None
    for line in out.splitlines():
        if re.match(r"^\S", line):
            section = line.strip().rstrip(":")
            continue
        m = re.match(r"^  (-[^\s]+)\s*(.*)$", line)
        if section == "Options" and m:
            names = m.group(1).split(",")
            rest = m.group(2)      # "UINT:UINT in [1 - 256]=8" for a value, a description
            kind = rest if re.match(r"[A-Z]{3,}", rest) else ""
            for n in names:
                opts[re.sub(r"\{.*\}$", "", n)] = kind
    return opts


def man_text(name):
    with open(os.path.join(PKG, name)) as f:
        return f.read()


def man_sections(text):
    """[(title, body)] of the .SH sections."""
    parts = re.split(r"^\.SH\s+", text, flags=re.M)[1:]
    return [(p.split("\n", 1)[0].strip().strip('"'), p.split("\n", 1)[1] if "\n" in p else "")
            for p in parts]


def option_tokens(line):
    return {t.replace("\\-", "-") for t in re.findall(r"(?<![\w-])((?:\\-){1,2}[a-zA-Z][\w\\-]*)",
                                                       line)}


def man_options(body):
    """Options named on the line after each .TP."""
    lines = body.splitlines()
    found = set()
    for i, line in enumerate(lines[:-1]):
        if line.startswith(".TP"):
            found |= option_tokens(lines[i + 1])
    return found


def tpde_subsections(text):
    """{subcommand: body} of tpde.1's .SS "tpde SUB ..." subsections."""
    out = {}
    for part in re.split(r"^\.SS\s+", text, flags=re.M)[1:]:
        head, _, body = part.partition("\n")
        m = re.match(r'"?tpde\s+(\w+)', head)
        if m:
            out[m.group(1)] = body.split("\n.SH", 1)[0]
    return out


def project_version():
    with open(os.path.join(ROOT, "meson.build")) as f:
        return re.search(r"version:\s*'([^']+)'", f.read()).group(1)


readme = open(os.path.join(ROOT, "README.md")).read()
# What the README shows as commands: lines of its code blocks and its `inline code`.
readme_code = []
for block in re.findall(r"^```[a-z]*\n(.*?)^```", readme, re.M | re.S):
    readme_code += block.splitlines()
readme_code += re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", readme, flags=re.M | re.S))
version = project_version()

# --- versions ---------------------------------------------------------------------------
for prog, name in ((TPDEFS, "tpdefs"), (TPDE, "tpde")):
    r = run(prog, "--version")
    res.check(f"{name}_version", r.returncode == 0 and r.stdout.strip() == f"{name} {version}",
              f"rc {r.returncode}, {r.stdout!r}, meson.build says {version}")
for page in ("tpdefs.1", "tpde.1", "mount.tpdefs.8"):
    th = re.search(r"^\.TH .*$", man_text(page), re.M).group(0)
    res.check(f"man_version_{page}", f'"tpdefs {version}"' in th, th)
changelog = os.path.join(PKG, "debian", "changelog")
if os.path.exists(changelog):
    first = open(changelog).readline()
    res.check("debian_changelog_version", f"({version})" in first or f"({version}-" in first,
              first.strip())
else:
    res.check("debian_changelog_version", False, f"{changelog} missing")

# --- tpdefs: --help, man page, README, -o ------------------------------------------------
tpdefs_help = help_options([TPDEFS])
tpdefs_man = dict(man_sections(man_text("tpdefs.1")))
man_opts = man_options(tpdefs_man.get("OPTIONS", ""))
res.check("tpdefs_help_in_man", set(tpdefs_help) <= man_opts,
          f"in --help, not in tpdefs.1: {sorted(set(tpdefs_help) - man_opts)}")
res.check("tpdefs_man_in_help", man_opts <= set(tpdefs_help),
          f"in tpdefs.1, not in --help: {sorted(man_opts - set(tpdefs_help))}")
longs = [o for o in tpdefs_help if o.startswith("--") and o not in ("--help", "--version")]
missing = [o for o in longs if o not in readme]
res.check("tpdefs_help_in_readme", not missing, f"not in README.md: {missing}")


def o_value(name, kind):
    if not kind:
        return name                                   # a flag
    m = re.search(r"\[(\d+) - ", kind)
    if m:
        return f"{name}={m.group(1)}"
    m = re.search(r"\{([^,}]+)", kind)
    if m:
        return f"{name}={m.group(1)}"
    return f"{name}={os.path.join(TMP, 'value')}"


def tpdefs_parses(item):
    """(accepted, detail): accepted = parsed, then stopped at the missing mount point."""
    r = run(TPDEFS, os.path.join(MISSING, "store"), os.path.join(MISSING, "mnt"), "-o", item)
    ok = r.returncode == 1 and "mount point" in r.stderr and not os.path.exists(MISSING)
    return ok, f"-o {item}: rc {r.returncode}: {r.stderr.strip()}"


bad = []
for o in longs:
    ok, detail = tpdefs_parses(o_value(o[2:].replace("-", "_"), tpdefs_help[o]))
    if not ok:
        bad.append(detail)
res.check("tpdefs_every_option_as_o_item", not bad, "; ".join(bad))
ok, detail = tpdefs_parses("ro,rw,defaults,auto,noauto,nofail,_netdev,user,users,nouser,owner,"
                           "dev,suid,nodev,nosuid,exec,noatime,relatime,async,"
                           "x-systemd.automount,X-mount.mkdir,comment=x")
res.check("tpdefs_fstab_items_accepted", ok, detail)
r = run(TPDEFS, MISSING, MISSING, "-o", "cache_mib=64,bogus_option=1")
res.check("tpdefs_unknown_o_item_is_usage_error",
          r.returncode == 2 and "unknown mount option 'bogus_option=1'" in r.stderr,
          f"rc {r.returncode}: {r.stderr.strip()}")
# Options the README shows on a tpdefs or mount command line, and its fstab lines, exist.
shown, items = set(), set()
for line in readme_code:
    line = line.split("#")[0] if not line.lstrip().startswith("#") else ""
    fstab = re.match(r"^\s*\S+\s+\S+\s+(?:fuse\.)?tpdefs\s+(\S+)\s+\d\s+\d\s*$", line)
    if fstab:
        items |= set(fstab.group(1).split(","))
    if not re.search(r"(^|[\s;&|(])(tpdefs|mount(\.tpdefs)?) ", line):
        continue
    if re.search(r"(^|[\s;&|(])tpdefs ", line):
        shown |= set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", line))
    for group in re.findall(r"(?:^|\s)-o\s+(\S+)", line):
        items |= {i for i in group.strip("[]").split(",")
                  if i and not re.search(r"[A-Z.]{2,}|\.\.\.|[\[\]]", i)}
res.check("readme_tpdefs_options_exist", shown and shown <= set(tpdefs_help),
          f"README shows {sorted(shown - set(tpdefs_help))} on tpdefs lines")
res.check("readme_shows_o_items", len(items) >= 3, sorted(items))
for item in sorted(items):
    ok, detail = tpdefs_parses(item)
    res.check(f"readme_o_item_{item.split('=')[0]}", ok, detail)

# --- tpde: every subcommand ----------------------------------------------------------------
tpde_man = man_text("tpde.1")
subs = tpde_subsections(tpde_man)
top = run(TPDE, "--help").stdout
listed = re.findall(r"^  (\w+)\s", top.split("Subcommands:")[-1], re.M)
res.check("tpde_subcommands_in_man", listed and set(listed) == set(subs),
          f"--help: {listed}; tpde.1: {sorted(subs)}")
for sub in listed:
    h = help_options([TPDE, sub])
    m = man_options(subs.get(sub, "")) | {"-h", "--help"}
    res.check(f"tpde_{sub}_help_in_man", set(h) <= m,
              f"in --help, not in tpde.1: {sorted(set(h) - m)}")
    res.check(f"tpde_{sub}_man_in_help", m <= set(h),
              f"in tpde.1, not in --help: {sorted(m - set(h))}")
    miss = [o for o in h if o.startswith("--") and o != "--help" and o not in readme]
    res.check(f"tpde_{sub}_in_readme", f"tpde {sub}" in readme and not miss,
              f"'tpde {sub}' in README: {f'tpde {sub}' in readme}; options not in it: {miss}")
bad = []
for line in readme_code:
    for sub, rest in re.findall(r"(?:^|[\s;&|(])tpde (\w+)([^;&|]*)", line.split(" #")[0]):
        if sub == "foo":
            continue                  # the documented example of an unknown subcommand
        if sub not in listed:
            bad.append(f"tpde {sub}: no such subcommand")
            continue
        h = help_options([TPDE, sub])
        bad += [f"tpde {sub} {t}" for t in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest)
                if t not in h]
res.check("readme_tpde_lines_exist", not bad, "; ".join(bad))
global_man = man_options(dict(man_sections(tpde_man)).get("OPTIONS", ""))
res.check("tpde_global_options_in_man", {"--help", "--version", "-h"} <= global_man, global_man)

# --- exit statuses -------------------------------------------------------------------------
def codes_documented(page):
    body = dict(man_sections(man_text(page))).get("EXIT STATUS", "")
    return sorted(int(c) for c in re.findall(r"^\.B\s+(\d+)\s*$", body, re.M))


res.check("tpdefs_exit_status_documented", codes_documented("tpdefs.1") == [0, 1, 2],
          codes_documented("tpdefs.1"))
res.check("tpde_exit_status_documented", codes_documented("tpde.1") == [0, 1, 2],
          codes_documented("tpde.1"))
res.check("helper_exit_status_documented", codes_documented("mount.tpdefs.8") == [0, 1, 32],
          codes_documented("mount.tpdefs.8"))
r = run(TPDE, "foo")
res.check("tpde_unknown_subcommand", r.returncode == 2 and "unknown subcommand foo" in r.stderr,
          f"rc {r.returncode}: {r.stderr.strip()}")
for args, want, what in (
        ([TPDE], 2, "no subcommand"),
        ([TPDE, "encode"], 2, "missing arguments"),
        ([TPDE, "ls", "--bogus", "x"], 2, "unknown option"),
        ([TPDE, "encode", "--block-size", "1", "x", "-o", "y"], 2, "value out of range"),
        ([TPDE, "ls", MISSING], 1, "not a store"),
        ([TPDE, "stats", MISSING], 1, "one path, not a mount"),
        ([TPDE, "stats", "--json", MISSING, MISSING], 2, "--json with two files"),
        ([TPDE, "--help"], 0, "help"),
        ([TPDE, "stats", "--help"], 0, "subcommand help"),
        ([TPDEFS], 2, "no arguments"),
        ([TPDEFS, MISSING, MISSING, "--cache-mib", "0"], 2, "value out of range"),
        ([TPDEFS, MISSING, MISSING, "--bogus"], 2, "unknown option"),
        ([TPDEFS, MISSING, MISSING], 1, "missing mount point"),
        ([TPDEFS, "--help"], 0, "help")):
    r = run(*args)
    res.check(f"exit_{os.path.basename(args[0])}_{what.replace(' ', '_')}", r.returncode == want,
              f"{' '.join(args[1:])}: rc {r.returncode}, documented {want}: {r.stderr.strip()}")
res.check("no_store_left_by_refused_runs", not os.path.exists(MISSING), MISSING)

# --- the mount helper, run as a program (no mount: -f fakes it) ------------------------------
helper = os.path.join(TMP, "mount.tpdefs")
with open(os.path.join(ROOT, "src", "tools", "mount.tpdefs.in")) as f:
    text = f.read().replace("@TPDEFS@", TPDEFS)
with open(helper, "w") as f:
    f.write(text)
os.chmod(helper, 0o755)
helper_man = dict(man_sections(man_text("mount.tpdefs.8")))
flags = sorted(man_options(helper_man.get("OPTIONS", "")))
bad = []
for fl in flags:
    args = {"-o": ["-o", "cache_mib=64"], "-t": ["-t", "tpdefs"]}.get(fl, [fl])
    r = run(helper, MISSING, MISSING, "-f", *args)
    if r.returncode != 0 or (fl in ("-h", "--help", "-V", "--version") and not r.stdout):
        bad.append(f"{fl}: rc {r.returncode} {r.stderr.strip()}")
res.check("helper_takes_documented_flags", len(flags) >= 8 and not bad, f"{flags}: {bad}")
r = run(helper, MISSING, MISSING, "-v", "-o", "cache_mib=64,nofail", "-f")
res.check("helper_verbose_shows_command",
          r.returncode == 0 and f"{TPDEFS} {MISSING} {MISSING} -o cache_mib=64,nofail" in r.stderr,
          r.stderr)
for args, want, what in (([MISSING, MISSING, "-o", "bogus"], 1, "bad option"),
                         ([MISSING, MISSING, "-o", "cache_mib=64"], 32, "mount failure"),
                         ([MISSING], 1, "missing argument"),
                         ([MISSING, MISSING, "-Z"], 1, "unknown flag"),
                         ([MISSING, MISSING, "-N", "1"], 1, "namespace")):
    r = run(helper, *args)
    res.check(f"helper_exit_{what.replace(' ', '_')}", r.returncode == want,
              f"{args}: rc {r.returncode}, documented {want}: {r.stderr.strip()}")

# --- man pages -----------------------------------------------------------------------------
for page in ("tpdefs.1", "tpde.1", "mount.tpdefs.8"):
    titles = [t for t, _ in man_sections(man_text(page))]
    need = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "EXAMPLES", "SEE ALSO"]
    res.check(f"man_sections_{page}", all(n in titles for n in need),
              f"missing {[n for n in need if n not in titles]}")
    if shutil.which("groff"):
        r = run("groff", "-man", "-ww", "-z", os.path.join(PKG, page))
        res.check(f"man_groff_clean_{page}", r.returncode == 0 and not r.stderr.strip(), r.stderr)
    else:
        res.skip_one(f"man_groff_clean_{page}", "groff is not installed (groff-base)")
    see = dict(man_sections(man_text(page))).get("SEE ALSO", "")
    for name, sec in re.findall(r"\.BR\s+(\S+)\s+\((\d)\)", see):
        name = name.replace("\\-", "-")
        if os.path.exists(os.path.join(PKG, f"{name}.{sec}")):
            res.check(f"see_also_{page}_{name}.{sec}", True)
        elif shutil.which("man"):
            r = run("man", "-w", sec, name)
            res.check(f"see_also_{page}_{name}.{sec}", r.returncode == 0,
                      f"{name}({sec}) is neither ours nor installed: {r.stderr.strip()}")
        else:
            res.skip_one(f"see_also_{page}_{name}.{sec}", "man is not installed to look it up")

shutil.rmtree(TMP, ignore_errors=True)
res.finish()
