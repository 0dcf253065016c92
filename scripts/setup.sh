#!/bin/bash
# Installs every Debian package the build, tests and benchmarks need, then configures and
# builds tpdefs with meson. Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
    # build
    g++ meson ninja-build pkg-config
    libfuse3-dev fuse3 libzstd-dev libxxhash-dev libfmt-dev libspdlog-dev libcli11-dev
    nlohmann-json3-dev
    # tests and the decoder fuzzer (clang's libFuzzer)
    libgtest-dev libgmock-dev clang libclang-rt-14-dev
    # benchmarks and real-checkpoint tests (OpenBLAS: Debian's torch trains ~20x slower without)
    libbenchmark-dev python3-torch python3-numpy libopenblas0-openmp zstd xdelta3 fio stress-ng attr rsync
    # scripts/bench/alternatives.py: the float codecs it compares against (zstandard module,
    # c-blosc, zfp's Python binding, fpzip's library, used through ctypes)
    python3-zstandard python3-blosc python3-zfpy libfpzip1
    # tests/cluster: a GlusterFS volume on local bricks, one client mount per "host"
    glusterfs-server glusterfs-client iproute2
    # the Debian package's build and check (tests/packaging), the Prometheus format's parser
    build-essential dpkg-dev debhelper lintian python3-prometheus-client
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup.sh: missing packages (${missing[*]}); run as root to install them" >&2
        exit 1
    fi
    echo "setup.sh: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

builddir=${BUILDDIR:-build}
if [ ! -f "$builddir/build.ninja" ]; then
    meson setup "$builddir" --buildtype=release
fi
ninja -C "$builddir"
