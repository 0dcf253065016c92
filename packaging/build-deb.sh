#!/bin/sh
# Builds the Debian package from this tree: packaging/build-deb.sh [OUTDIR]
# The tree (git's files, committed or not, without build directories) is copied to a new
# directory under /tmp with packaging/debian as its debian/, and built there with
#     dpkg-buildpackage -us -uc -b
# (unsigned, binary only), so the work tree stays as it is. The .deb, .buildinfo and
# .changes land in OUTDIR (default: the current directory). Needs the Build-Depends of
# packaging/debian/control (scripts/setup.sh installs them) and build-essential.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-.}" && cd "${1:-.}" && pwd)
version=$(sed -n '1s/^tpdefs (\([^)]*\)).*/\1/p' "$src/packaging/debian/changelog")
work=$(mktemp -d /tmp/tpdefs-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
tree="$work/tpdefs-$version"
mkdir "$tree"
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$src" && git ls-files -z --cached --others --exclude-standard |
        tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -C "$tree" -xf -
else
    tar -C "$src" --exclude='./build*' --exclude=./debian --exclude=./.git -cf - . |
        tar -C "$tree" -xf -
fi
rm -rf "$tree/debian"
cp -r "$src/packaging/debian" "$tree/debian"
(cd "$tree" && DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-parallel=$(nproc)}" \
    dpkg-buildpackage -us -uc -b)
cp "$work"/*.deb "$work"/*.buildinfo "$work"/*.changes "$out"/
echo "build-deb: $(cd "$out" && ls tpdefs_"$version"_*.deb)"
