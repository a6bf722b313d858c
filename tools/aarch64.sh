#!/usr/bin/env bash
# tools/aarch64.sh: cross-build fastce for aarch64 on an x86-64 Debian/Ubuntu machine and run it
# under qemu-user (no binfmt, no arm64 packages installed on the host).
#
# Usage:
#   tools/aarch64.sh setup              fetch the toolchain, the arm64 sysroot and wheels, and build
#   tools/aarch64.sh build              (re)build fastce for aarch64 (incremental)
#   tools/aarch64.sh python ARGS...     run the arm64 Python with the cross-built fastce importable
#   tools/aarch64.sh test PYTEST_ARGS.. run pytest under qemu from the repository root
#   tools/aarch64.sh ci                 the CI selection of the tests (see ci_selection below)
#   tools/aarch64.sh proof              show that the NEON kernels' vector instructions run
#                                       (QEMU_LOG=in_asm; tools/aarch64_proof.py)
#   tools/aarch64.sh env                print the paths and variables it uses
# `python`, `test` and `ci` do `setup` on first use and rebuild when the sources changed.
#
# Environment:
#   FASTCE_AARCH64_HOME  the cache folder: sysroot, wheels, build (default
#                        ${XDG_CACHE_HOME:-$HOME/.cache}/fastce-aarch64); delete it to start over
#   FASTCE_HOST_PYTHON   the host Python that runs Cython and setup.py (default: a venv made in
#                        the cache with Cython, setuptools and numpy)
#   FASTCE_BUILD_JOBS    parallel compiles (setup.py's; default here 2)
#   QEMU_CPU             passed on to qemu (e.g. max, cortex-a72); qemu's default is "max"
#
# How it works (docs/design/aarch64.md):
#   * toolchain: qemu-user, gcc-aarch64-linux-gnu and libc6-dev-arm64-cross from apt, if missing;
#   * sysroot: the arm64 .debs of Python 3.11 and the shared libraries it and the wheels load,
#     fetched with `apt-get download` (arm64 added as a foreign architecture) and unpacked with
#     `dpkg -x`: nothing arm64 is installed on the host;
#   * wheels: `pip install --target SITE --platform manylinux..._aarch64 --only-binary=:all:`;
#   * build: setup.py on the host Python (Cython runs here) with CC=aarch64-linux-gnu-gcc, the
#     sysroot's Python headers and the aarch64 NumPy's headers first on the include path,
#     FASTCE_TARGET_ARCH=aarch64 (setup.py builds the build table's "any" and "aarch64" rows)
#     and SETUPTOOLS_EXT_SUFFIX naming the module _kernels.cpython-311-aarch64-linux-gnu.so;
#     build_py and build_ext write a complete package to $CACHE/build/lib, outside the tree;
#   * run: $CACHE/bin/python3 is a wrapper that execs `qemu-aarch64 -L SYSROOT` on the arm64
#     interpreter and sets its argv[0] to the wrapper itself, so sys.executable is the wrapper
#     and the tests that start `sys.executable` in a subprocess run under qemu too.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${FASTCE_AARCH64_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/fastce-aarch64}"
SYSROOT="$CACHE/sysroot"
SITE="$CACHE/site"
BUILD="$CACHE/build"
BIN="$CACHE/bin"
PYVER=3.11
TRIPLET=aarch64-linux-gnu
CROSS_CC="$TRIPLET-gcc"
EXT_SUFFIX=".cpython-${PYVER/./}-$TRIPLET.so"

# The arm64 packages unpacked into the sysroot: the interpreter and its stdlib, the headers
# (libpython3.11-dev), and the shared libraries that the interpreter, the stdlib's extension
# modules (_ssl, _ctypes, _sqlite3, readline, _decimal, ...) and the wheels (numpy and scipy
# bundle OpenBLAS and gfortran, but not libc, libstdc++ or libgcc_s) load. fastce's own OpenMP
# runtime is libgomp1. Debian bookworm names; `apt-get download` resolves the current versions.
SYSROOT_PACKAGES=(
    "python$PYVER-minimal" "libpython$PYVER-minimal" "libpython$PYVER-stdlib" "libpython$PYVER"
    "libpython$PYVER-dev"
    libc6 libgcc-s1 libstdc++6 libgomp1 zlib1g libffi8 libexpat1 libssl3 libbz2-1.0 liblzma5
    libsqlite3-0 libncursesw6 libtinfo6 libreadline8 libuuid1 libcrypt1 libnsl2
    libtirpc3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1
    libdb5.3 libgdbm6
)
# The wheels of the test run (pyproject's dependencies and the test extra that has aarch64 wheels;
# dask, zarr, mypy, torch and JAX are left out: their tests skip without them).
SITE_PACKAGES=(numpy scipy tqdm ml_dtypes pytest hypothesis psutil)
# Every manylinux tag up to bookworm's glibc 2.36: pip matches --platform tags exactly (it
# does not widen manylinux_2_36 to the older ones), and with manylinux2014 alone it settles on
# old releases (numpy 2.2, whose headers hide PyDataMem_SetHandler from fastce's build).
WHEEL_PLATFORMS=(manylinux2014_aarch64)
for _glibc_minor in $(seq 17 36); do WHEEL_PLATFORMS+=("manylinux_2_${_glibc_minor}_aarch64"); done
unset _glibc_minor

log() { printf '\033[1maarch64.sh:\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Seconds since the epoch, with fractions, for the step timings.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }'; }

# A hash of the package lists (and anything else passed): when it changes, the step is redone.
stamp_of() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root for: $*"; fi
}

# ---- host toolchain ------------------------------------------------------------------------
# qemu-user runs the arm64 interpreter; the cross gcc ships the aarch64 libc headers (libc6-dev-
# arm64-cross) and libgomp for the link; the runtime libraries come from the sysroot instead.
ensure_host_tools() {
    local missing=()
    command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
    command -v "$CROSS_CC" >/dev/null || missing+=("gcc-$TRIPLET")
    [ -e "/usr/$TRIPLET/include/stdio.h" ] || missing+=(libc6-dev-arm64-cross)
    command -v dpkg-deb >/dev/null || die "needs dpkg and apt (Debian or Ubuntu)"
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]} (apt)"
        apt_update_once
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
    fi
}

APT_UPDATED=0
apt_update_once() {
    if [ "$APT_UPDATED" = 0 ]; then
        as_root apt-get update -q >&2
        APT_UPDATED=1
    fi
}

# ---- the arm64 sysroot ---------------------------------------------------------------------
ensure_sysroot() {
    local want have=""
    want="$(stamp_of "${SYSROOT_PACKAGES[@]}")"
    [ -f "$SYSROOT/.fastce-stamp" ] && have="$(cat "$SYSROOT/.fastce-stamp")"
    [ "$want" = "$have" ] && [ -x "$SYSROOT/usr/bin/python$PYVER" ] && return 0

    local t0; t0="$(now)"
    log "fetching the arm64 sysroot into $SYSROOT"
    # apt only downloads arm64 packages once arm64 is a foreign architecture of dpkg, and its
    # lists name them only after the next update. This installs nothing for arm64.
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        as_root dpkg --add-architecture arm64
        APT_UPDATED=0
    fi
    apt_update_once
    local debs="$CACHE/debs"
    rm -rf "$debs" "$SYSROOT"
    mkdir -p "$debs" "$SYSROOT"
    # apt-get download writes into the current folder; as root it drops to the _apt user, who
    # must be able to write there.
    chmod 777 "$debs"
    (cd "$debs" && apt-get download -q "${SYSROOT_PACKAGES[@]/%/:arm64}" >&2)
    local deb
    for deb in "$debs"/*.deb; do
        dpkg -x "$deb" "$SYSROOT"
    done
    rm -rf "$debs"
    printf '%s\n' "$want" >"$SYSROOT/.fastce-stamp"
    log "sysroot ready ($(elapsed "$t0") s)"
}

# ---- the wheels ----------------------------------------------------------------------------
ensure_site() {
    local want have=""
    want="$(stamp_of "${SITE_PACKAGES[@]}" "${WHEEL_PLATFORMS[@]}")"
    [ -f "$SITE/.fastce-stamp" ] && have="$(cat "$SITE/.fastce-stamp")"
    [ "$want" = "$have" ] && return 0

    local t0; t0="$(now)"
    log "fetching the aarch64 wheels into $SITE"
    rm -rf "$SITE"
    mkdir -p "$SITE"
    local plat_args=() p
    for p in "${WHEEL_PLATFORMS[@]}"; do plat_args+=(--platform "$p"); done
    "$HOST_PYTHON" -m pip install -q --disable-pip-version-check --no-compile \
        --target "$SITE" "${plat_args[@]}" --python-version "$PYVER" --implementation cp \
        --abi "cp${PYVER/./}" --only-binary=:all: "${SITE_PACKAGES[@]}" >&2
    printf '%s\n' "$want" >"$SITE/.fastce-stamp"
    log "wheels ready ($(elapsed "$t0") s)"
}

# ---- the host Python (Cython, setuptools, the host NumPy that setup.py imports) -------------
ensure_host_python() {
    # pyproject.toml's build requirements; a python3 on PATH that imports them may still be too
    # old (setuptools < 77 rejects the SPDX license field), so the cache keeps its own venv.
    local check='import Cython, setuptools, numpy
assert int(Cython.__version__.split(".")[0]) >= 3 and int(setuptools.__version__.split(".")[0]) >= 77'
    if [ -n "${FASTCE_HOST_PYTHON:-}" ]; then
        HOST_PYTHON="$FASTCE_HOST_PYTHON"
    else
        HOST_PYTHON="$CACHE/host-venv/bin/python"
        if ! "$HOST_PYTHON" -c "$check" 2>/dev/null; then
            log "making a host venv with Cython, setuptools and numpy in $CACHE/host-venv"
            command -v python3 >/dev/null || die "needs a host python3"
            python3 -m venv "$CACHE/host-venv" >&2 || die "python3 -m venv failed (apt-get install python3-venv?)"
            "$HOST_PYTHON" -m pip install -q --disable-pip-version-check "Cython>=3.0" "setuptools>=77" numpy wheel >&2
        fi
    fi
    "$HOST_PYTHON" -c "$check" || die "$HOST_PYTHON cannot import Cython >= 3, setuptools >= 77 and numpy"
}

# ---- the qemu wrapper: sys.executable of the arm64 Python ----------------------------------
# qemu's -L makes the interpreter's absolute paths (/usr/lib/python3.11, /lib/ld-linux-aarch64.so.1,
# ...) resolve into the sysroot first. -0 sets argv[0] to this wrapper: Python takes it as
# sys.executable, finds no stdlib beside it and falls back to its built-in prefix /usr, which
# -L maps into the sysroot; and a test's `subprocess.run([sys.executable, ...])` comes back here.
write_wrapper() {
    mkdir -p "$BIN"
    local w="$BIN/python$PYVER"
    cat >"$w.tmp" <<EOF
#!/bin/sh
# Written by tools/aarch64.sh: the arm64 Python under qemu-user, with fastce's aarch64 build.
PYTHONPATH="$BUILD/lib:$SITE\${FASTCE_AARCH64_PYTHONPATH:+:\$FASTCE_AARCH64_PYTHONPATH}"
export PYTHONPATH
unset PYTHONHOME
exec qemu-aarch64 -L "$SYSROOT" -0 "\$0" "$SYSROOT/usr/bin/python$PYVER" "\$@"
EOF
    chmod +x "$w.tmp"
    mv "$w.tmp" "$w"
    ln -sf "python$PYVER" "$BIN/python3"
    ln -sf "python$PYVER" "$BIN/python"
}

# ---- the build -----------------------------------------------------------------------------
# Two hashes decide what to redo. The C side (setup.py, the table parser, include/, _csrc/, the
# .pyx/.pxi, the cross compiler, Cython and the aarch64 NumPy) reruns build_ext with --force:
# setup.py compiles the kernel objects on every build_ext run anyway (~30 s here), so it is
# skipped altogether when nothing changed. The Python side (the package's other files) reruns
# build_py, which copies them to $BUILD/lib.
c_hash() {
    (
        cd "$REPO"
        sha256sum setup.py tools/build_table.py
        find include src/fastce/_csrc -type f -print0 | sort -z | xargs -0 sha256sum
        find src/fastce -maxdepth 1 -type f \( -name '*.pyx' -o -name '*.pxi' -o -name '*.pxd' \) \
            -print0 | sort -z | xargs -0 sha256sum
        "$CROSS_CC" --version | head -1
        "$HOST_PYTHON" -c 'import Cython; print(Cython.__version__)'
        ls "$SITE" | grep '^numpy-'
    ) | sha256sum | cut -c1-16
}
py_hash() {
    (cd "$REPO" && find src/fastce -path src/fastce/_csrc -prune -o -type f ! -name '*.c' \
        ! -name '*.so' ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum) \
        | sha256sum | cut -c1-16
}

run_setup_py() {
    local np_inc="$SITE/numpy/_core/include"
    [ -d "$np_inc" ] || die "no aarch64 NumPy headers at $np_inc"
    # CFLAGS come before setup.py's include folders on gcc's command line, so the target's
    # pyconfig.h and NumPy headers win over the host's. The sysroot's pyconfig.h is Debian's
    # multiarch wrapper: it includes <aarch64-linux-gnu/python3.11/pyconfig.h>, hence
    # $SYSROOT/usr/include. LDSHARED replaces the host Python's (its -L and rpath are x86's).
    (
        cd "$REPO"
        export FASTCE_TARGET_ARCH=aarch64
        export CC="$CROSS_CC"
        export LDSHARED="$CROSS_CC -shared"
        export CFLAGS="-I$SYSROOT/usr/include/python$PYVER -I$SYSROOT/usr/include -I$np_inc"
        export SETUPTOOLS_EXT_SUFFIX="$EXT_SUFFIX"
        export FASTCE_BUILD_JOBS="${FASTCE_BUILD_JOBS:-2}"
        "$HOST_PYTHON" setup.py -q "$@" >&2
    )
}

build() {
    local t0 want_c want_py have_c="" have_py=""
    t0="$(now)"
    want_c="$(c_hash)"
    want_py="$(py_hash)"
    [ -f "$BUILD/.c-stamp" ] && have_c="$(cat "$BUILD/.c-stamp")"
    [ -f "$BUILD/.py-stamp" ] && have_py="$(cat "$BUILD/.py-stamp")"
    local so="$BUILD/lib/fastce/_kernels$EXT_SUFFIX"
    if [ "$want_c" = "$have_c" ] && [ "$want_py" = "$have_py" ] && [ -f "$so" ]; then
        return 0
    fi
    mkdir -p "$BUILD"
    if [ "$want_py" != "$have_py" ] || [ ! -f "$so" ]; then
        log "copying the package to $BUILD/lib"
        run_setup_py build_py --build-lib "$BUILD/lib"
        printf '%s\n' "$want_py" >"$BUILD/.py-stamp"
    fi
    if [ "$want_c" != "$have_c" ] || [ ! -f "$so" ]; then
        log "building fastce's extension for aarch64 in $BUILD"
        rm -f "$so"
        run_setup_py build_ext --build-lib "$BUILD/lib" --build-temp "$BUILD/temp" --force
        [ -f "$so" ] || die "the build made no $so"
        if command -v file >/dev/null; then
            file -b "$so" | grep -q aarch64 || die "$so is not an aarch64 object: $(file -b "$so")"
        fi
        printf '%s\n' "$want_c" >"$BUILD/.c-stamp"
    fi
    log "build done ($(elapsed "$t0") s)"
}

setup_all() {
    local t0; t0="$(now)"
    ensure_host_tools
    ensure_host_python
    ensure_sysroot
    ensure_site
    write_wrapper
    build
    log "ready ($(elapsed "$t0") s in all)"
}

run_python() { exec "$BIN/python$PYVER" "$@"; }

# ---- the CI selection ----------------------------------------------------------------------
# Every kernel x dtype x option against the float64 reference and the scalar ISA (the tests are
# parametrized over fastce.available_isas(): scalar and neon here; the option grid, the largest
# file, only for neon: its scalar half is the same code CI runs on x86), plus score, kl_div,
# compare, shard_stats and the linear head. torch is not in the arm64 site: its parity tests
# skip here and run on x86.
CI_GRID=tests/test_cross_entropy_grid.py
ci_selection() {
    printf '%s\n' tests/test_api.py tests/test_options.py tests/test_half.py tests/test_layouts.py \
        tests/test_target_check.py tests/test_small_calls.py tests/test_kl.py tests/test_score.py \
        tests/test_compare.py tests/test_shards.py tests/test_linear.py tests/test_hostile_input.py \
        tests/test_config.py
}

main() {
    local cmd="${1:-}"
    [ $# -gt 0 ] && shift
    case "$cmd" in
        setup) setup_all ;;
        build) ensure_host_tools; ensure_host_python; ensure_sysroot; ensure_site; write_wrapper; build ;;
        python) setup_all; run_python "$@" ;;
        test) setup_all; cd "$REPO"; run_python -m pytest "$@" ;;
        ci)
            setup_all; cd "$REPO"
            "$BIN/python$PYVER" -m pytest "$CI_GRID" -k neon -q "$@"
            # shellcheck disable=SC2046
            run_python -m pytest $(ci_selection) -q "$@" ;;
        proof) setup_all; exec "$HOST_PYTHON" "$REPO/tools/aarch64_proof.py" "$BIN/python$PYVER" ;;
        env)
            echo "FASTCE_AARCH64_HOME=$CACHE"
            echo "SYSROOT=$SYSROOT"
            echo "SITE=$SITE"
            echo "BUILD=$BUILD"
            echo "PYTHON=$BIN/python$PYVER" ;;
        -h | --help | help | "") sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
        *) die "unknown command '$cmd' (setup, build, python, test, ci, proof, env)" ;;
    esac
}

main "$@"
