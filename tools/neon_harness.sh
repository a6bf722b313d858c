#!/usr/bin/env bash
# tools/neon_harness.sh: cross-compile the C kernels for AArch64 (the build table's scalar and
# neon rows, every dtype) with tests/c/kernel_harness.c, statically, and run the harness under
# qemu-aarch64; optionally the vector exp/log sweep (tests/c/vec_math_sweep.c) too. No Python
# extension is built (tools/aarch64.sh does that) and nothing in the source tree is written.
#
# Usage: tools/neon_harness.sh [--modes LIST] [--cpu CPU] [--sweep | --sweep-only] [--stride S]
#                              [--keep] [-- HARNESS-ARGS...]
#   --modes LIST  comma-separated harness runs, each once per ISA (scalar, then neon):
#                   plain       exact-size malloc buffers
#                   guard       buffers that end at (or start after) a PROT_NONE page: catches a
#                               tail load or store past the end (--guard)
#                   misaligned  float/double buffers half an element off their alignment
#                   quick       the harness's --quick grid
#                 (default: plain,guard,misaligned)
#   --cpu CPU     qemu-aarch64 -cpu CPU (e.g. max: SVE, FP16, BF16 ... on; the kernels must not
#                 care). Default: qemu's default CPU.
#   --sweep       also build tests/c/vec_math_sweep.c for scalar and neon and run it: every
#                 float of the exp sweep [-104, 88] and of log's [1, 1e30], split in two
#                 processes; the neon ulps at every S-th float (--stride, default 16: libm
#                 under qemu costs most of the time), the hashes and the bit checks over all.
#                 ~10 minutes under qemu on 2 cores.
#   --sweep-only  the sweep and nothing else.
#   --keep        keep the build directory and print its path.
#   -- ARGS       extra harness arguments (--seed N, -v, --quick).
# Environment: CROSS_CC (default aarch64-linux-gnu-gcc), QEMU (default qemu-aarch64),
#   PYTHON (default python3, reads the build table), JOBS (parallel compiles and runs, default 2),
#   FASTCE_NEON_CACHE (object cache, default ${XDG_CACHE_HOME:-~/.cache}/fastce-neon; "off").
# Needs (Debian): apt-get install qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross
#
# The objects are built as setup.py builds them on an aarch64 host: src/fastce/_csrc/kernels.c
# once per (row, dtype) with BASE_FLAGS (setup.py: -O3 -std=c11 -fno-math-errno -fno-wrapv -g0)
# and the row's flags from include/fastce/build_table.h (tools/build_table.py --arch aarch64);
# dispatch.c, target_check.c, reductions.c, probes.c and buffer_cache.c with the extension's
# flags (-O3 -fno-math-errno -g0 -fopenmp) and -DFASTCE_HAVE_<row>=1; the harness links
# dispatch.c and the kernel objects (it calls the tables directly), the other four are
# compiled to show that they build for aarch64.
#
# Exit status: 0 if everything built and every run passed; 1 if a run failed; 2 on a usage or
# build error.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CROSS_CC="${CROSS_CC:-aarch64-linux-gnu-gcc}"
QEMU="${QEMU:-qemu-aarch64}"
PYTHON="${PYTHON:-python3}"
JOBS="${JOBS:-2}"
MODES="plain,guard,misaligned"
CPU=""
SWEEP=0
HARNESS=1
STRIDE=16
KEEP=0
HARNESS_ARGS=()

while [ $# -gt 0 ]; do
    case "$1" in
        --modes) shift; MODES="${1:?--modes needs a list}" ;;
        --cpu) shift; CPU="${1:?--cpu needs a CPU name}" ;;
        --sweep) SWEEP=1 ;;
        --sweep-only) SWEEP=1; HARNESS=0 ;;
        --stride) shift; STRIDE="${1:?--stride needs a number}" ;;
        --keep) KEEP=1 ;;
        --) shift; HARNESS_ARGS=("$@"); break ;;
        -h|--help) sed -n '2,40p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "neon_harness.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }
say() { echo "neon_harness.sh: $*"; }

for tool in "$CROSS_CC" "$QEMU" "$PYTHON"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        say "$tool not found (apt-get install qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross)"; exit 2
    fi
done
QEMU_RUN=("$QEMU")
[ -n "$CPU" ] && QEMU_RUN+=(-cpu "$CPU")

BUILD="$(mktemp -d "${TMPDIR:-/tmp}/fastce-neon.XXXXXX")"
cleanup() { if [ "$KEEP" = 1 ]; then say "build directory kept: $BUILD"; else rm -rf "$BUILD"; fi; }
trap cleanup EXIT

# setup.py's flags: BASE_FLAGS for the kernel objects, the extension's for its own C sources.
BASE_FLAGS="-O3 -std=c11 -fno-math-errno -fno-wrapv -g0 -I$ROOT/include"
EXT_FLAGS="-O3 -fno-math-errno -g0 -I$ROOT/include"
LINK_FLAGS="-static"
if echo 'int main(void){return 0;}' | "$CROSS_CC" -static -fopenmp -x c - -o "$BUILD/omp-probe" 2>/dev/null; then
    EXT_FLAGS="$EXT_FLAGS -fopenmp"; LINK_FLAGS="$LINK_FLAGS -fopenmp"
fi
say "compiler $($CROSS_CC --version | head -n1), qemu $($QEMU --version | head -n1 | sed 's/.*version //')${CPU:+, -cpu $CPU}"

if ! ISA_ROWS="$("$PYTHON" "$ROOT/tools/build_table.py" --rows --arch aarch64)" || \
   ! DTYPE_ROWS="$("$PYTHON" "$ROOT/tools/build_table.py" --dtypes)"; then
    say "cannot read the build table with $PYTHON tools/build_table.py"; exit 2
fi
if ! echo "$ISA_ROWS" | grep -q '^neon|'; then say "the build table has no aarch64 neon row"; exit 2; fi

UNITS=()   # "name|source|flags"
DEFS=""
ISAS=()
while IFS='|' read -r name code flags; do
    ISAS+=("$name")
    DEFS="$DEFS -DFASTCE_HAVE_${name}=1"
    if [ "$HARNESS" = 1 ]; then
        while IFS='|' read -r dt dtcode; do
            UNITS+=("${name}_${dt}|src/fastce/_csrc/kernels.c|$BASE_FLAGS -DFASTCE_BUILD_ISA=$code -DFASTCE_BUILD_DTYPE=$dtcode $flags")
        done <<< "$DTYPE_ROWS"
    fi
    if [ "$SWEEP" = 1 ]; then
        UNITS+=("sweep_${name}|tests/c/vec_math_sweep.c|-O2 -std=gnu11 -fno-math-errno -I$ROOT/include -DFASTCE_BUILD_ISA=$code $flags -static -lm|link")
    fi
done < <(echo "$ISA_ROWS" | tac)   # widest first: the largest objects start first
if [ "$HARNESS" = 1 ]; then
    for c in dispatch target_check reductions probes buffer_cache; do
        UNITS+=("$c|src/fastce/_csrc/$c.c|$EXT_FLAGS $DEFS")
    done
    UNITS+=("kernel_harness|tests/c/kernel_harness.c|-O2 -std=c11 -fno-math-errno -Wall -Wextra -I$ROOT/include")
fi

# Objects (and the sweep's executables) are cached under a key that hashes the compiler's
# version, the flags and the preprocessed source, as tools/sanitize.sh does.
CACHE="${FASTCE_NEON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fastce-neon}"
if [ "$CACHE" = off ] || ! mkdir -p "$CACHE" 2>/dev/null; then CACHE=""; fi
compile_unit() {
    local name="$1" src="$2" flags="$3" link="$4" t0 out cmd key=""
    t0=$(date +%s.%N)
    if [ "$link" = link ]; then out="$BUILD/$name"; cmd="$CROSS_CC $ROOT/$src $flags -o $out"
    else out="$BUILD/$name.o"; cmd="$CROSS_CC $flags -c $ROOT/$src -o $out"; fi
    if [ -n "$CACHE" ]; then
        key=$( { "$CROSS_CC" --version; echo "$flags $link"; "$CROSS_CC" ${flags/-static -lm/} -E "$ROOT/$src"; } 2>&1 \
               | sed "s|$ROOT|ROOT|g" | sha256sum | cut -c1-32)
        if [ -f "$CACHE/$name-$key" ] && cp "$CACHE/$name-$key" "$out" 2>/dev/null; then
            echo "  [cached] $cmd"; return 0
        fi
    fi
    if ! $cmd > "$BUILD/$name.log" 2>&1; then echo "  [FAILED] $cmd"; cat "$BUILD/$name.log"; return 1; fi
    echo "  [$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0fs", b - a }')] $cmd"
    [ -s "$BUILD/$name.log" ] && sed 's/^/    /' "$BUILD/$name.log"
    if [ -n "$CACHE" ]; then
        cp "$out" "$CACHE/.$name-$key.$$" 2>/dev/null && mv -f "$CACHE/.$name-$key.$$" "$CACHE/$name-$key" 2>/dev/null
        ls -1t "$CACHE/$name"-* 2>/dev/null | tail -n +4 | xargs -r rm -f   # the 3 newest per unit
    fi
    return 0
}

say "compiling ${#UNITS[@]} units ($JOBS at a time) in $BUILD"
FAILED=0
running=0
for u in "${UNITS[@]}"; do
    IFS='|' read -r name src flags link <<< "$u"
    if [ "$running" -ge "$JOBS" ]; then wait -n || FAILED=1; running=$((running - 1)); fi
    compile_unit "$name" "$src" "$flags" "${link:-}" &
    running=$((running + 1))
done
while [ "$running" -gt 0 ]; do wait -n || FAILED=1; running=$((running - 1)); done
if [ "$FAILED" != 0 ]; then say "build failed after $(elapsed)"; exit 2; fi

STATUS=0
if [ "$HARNESS" = 1 ]; then
    OBJS=("$BUILD/dispatch.o" "$BUILD/kernel_harness.o")
    for isa in "${ISAS[@]}"; do
        while IFS='|' read -r dt _; do OBJS+=("$BUILD/${isa}_${dt}.o"); done <<< "$DTYPE_ROWS"
    done
    echo "  $CROSS_CC $LINK_FLAGS ${OBJS[*]} -lm -o $BUILD/kernel_harness"
    if ! "$CROSS_CC" $LINK_FLAGS "${OBJS[@]}" -lm -o "$BUILD/kernel_harness"; then say "link failed"; exit 2; fi
    say "built in $(elapsed)"

    # The runs: one per (mode, ISA), two at a time, reported in order.
    LABELS=()
    for mode in ${MODES//,/ }; do
        case "$mode" in
            plain) margs=() ;; guard) margs=(--guard) ;; misaligned) margs=(--misaligned) ;; quick) margs=(--quick) ;;
            *) say "unknown mode $mode"; exit 2 ;;
        esac
        for isa in "${ISAS[@]}"; do
            LABELS+=("$mode-$isa")
            echo "${QEMU_RUN[*]} $BUILD/kernel_harness --isa $isa ${margs[*]} ${HARNESS_ARGS[*]}" > "$BUILD/run-$mode-$isa.cmd"
        done
    done
    run_one() {
        local label="$1" t0; t0=$(date +%s.%N)
        # shellcheck disable=SC2046
        ( $(cat "$BUILD/run-$label.cmd") > "$BUILD/run-$label.log" 2>&1; echo $? > "$BUILD/run-$label.rc" )
        awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }' > "$BUILD/run-$label.time"
    }
    running=0
    for label in "${LABELS[@]}"; do
        if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
        run_one "$label" &
        running=$((running + 1))
    done
    wait
    for label in "${LABELS[@]}"; do
        rc=$(cat "$BUILD/run-$label.rc" 2>/dev/null || echo 99)
        echo "  $(cat "$BUILD/run-$label.cmd")   ($(cat "$BUILD/run-$label.time" 2>/dev/null)s)"
        grep -v '^case: ' "$BUILD/run-$label.log" | head -n 60 | sed 's/^/    /'
        if [ "$rc" != 0 ]; then say "$label: FAILED (exit status $rc)"; STATUS=1; else say "$label: ok"; fi
    done
fi

if [ "$SWEEP" = 1 ]; then
    # scalar: a quick check that the sweep itself is sound (libm's expf/logf); neon: the sweep.
    for isa in "${ISAS[@]}"; do
        if [ "$isa" = neon ]; then
            say "sweep: neon, 2 processes (--stride $STRIDE)"
            for k in 0 1; do
                "${QEMU_RUN[@]}" "$BUILD/sweep_neon" --part "$k/2" --stride "$STRIDE" > "$BUILD/sweep-neon-$k.log" 2>&1 &
            done
            wait
            for k in 0 1; do
                sed 's/^/    /' "$BUILD/sweep-neon-$k.log"
                grep -q 'vec_math_sweep neon: passed' "$BUILD/sweep-neon-$k.log" || { say "sweep neon part $k: FAILED"; STATUS=1; }
            done
        else
            say "sweep: $isa (special values and the double exp only)"
            for only in special dexp; do
                "${QEMU_RUN[@]}" "$BUILD/sweep_$isa" --only $only > "$BUILD/sweep-$isa-$only.log" 2>&1
                sed 's/^/    /' "$BUILD/sweep-$isa-$only.log"
                grep -q 'passed' "$BUILD/sweep-$isa-$only.log" || { say "sweep $isa $only: FAILED"; STATUS=1; }
            done
        fi
    done
fi

if [ "$STATUS" = 0 ]; then say "PASSED in $(elapsed)"; else say "FAILED in $(elapsed)"; fi
exit "$STATUS"
