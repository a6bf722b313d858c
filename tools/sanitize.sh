#!/usr/bin/env bash
# tools/sanitize.sh: build the C kernels and tests/c/kernel_harness.c with AddressSanitizer and
# UndefinedBehaviorSanitizer (or plainly, for valgrind) in a temporary directory and run the
# harness. Nothing in the source tree is built or written.
#
# Usage: tools/sanitize.sh [--full | --valgrind] [--isa LIST] [--no-cache] [--keep] [-- HARNESS-ARGS...]
#   (default)   every (ISA, dtype) TU of the build table (include/fastce/build_table.h, read
#               with tools/build_table.py) that the compiler can build, each with its row's
#               flags as setup.py builds it, dispatch.c and the harness, with
#                 -O0 -g1 -fsanitize=address,undefined -fno-sanitize=alignment,null,pointer-overflow
#                 -fno-sanitize-recover=all -fno-omit-frame-pointer
#               then the harness runs twice: on exact-size malloc buffers (ASan), and on buffers
#               that end at a PROT_NONE guard page (--guard: catches the masked and non-temporal
#               vector accesses, which ASan does not instrument). ~45 s cold on 2 cores.
#   --full      the same with -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all
#               -fno-omit-frame-pointer (every UBSan check, optimized code): ~2.5-3 min cold on
#               2 cores with gcc 12.
#   --valgrind  no sanitizers (-O1 -g1); the harness (--quick) runs under
#               `valgrind --error-exitcode=1`. valgrind has no AVX-512: the harness skips it.
#   --isa LIST  comma-separated subset of the build table's rows (include/fastce/build_table.h:
#               scalar,avx2,avx512 on x86-64) to build (default: all buildable; scalar always).
#   --no-cache  always recompile (see CACHE below).
#   --keep      keep the build directory and print its path.
#   -- ARGS     extra harness arguments (--seed N, -v, --quick, --isa NAME, --misaligned).
#               `-- --misaligned` starts the buffers numpy may pass unaligned (x, out, prob,
#               weight, targets, grad_output) half an element off, turns the UBSan alignment
#               check on (recoverable: every site is listed once) and fails if any is hit.
# Environment: CC (default cc), PYTHON (default python3, reads the build table), SAN_FLAGS (replaces the optimization/debug/sanitizer flags),
#   JOBS (parallel compiles, default nproc),
#   FASTCE_SANITIZE_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/fastce-sanitize; "off" disables).
#
# Why -O0 and not all of UBSan by default: each (ISA, dtype) object holds ~70 option-specialized
# kernels (always_inline), and gcc 12 needs tens of CPU-seconds per object for -O1 -g with
# -fsanitize=address,undefined; the per-access UBSan checks (alignment, null, pointer-overflow)
# alone add ~70% at -O0. The harness never hands the kernels misaligned or null pointers unless
# asked (--misaligned), and ASan reports any bad access those checks would lead to.
#
# CACHE: compiled objects are cached under a key that hashes the compiler's version, the flags
# and the preprocessed source, so an edit to any kernel header or TU recompiles exactly what it
# touches and an unchanged tree rebuilds in a second. The build itself always happens in a
# fresh temporary directory.
#
# Exit status: 0 if everything built and the harness passed with no sanitizer report; 1 if the
# harness or a sanitizer failed; 2 on a usage or build error.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CC="${CC:-cc}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
MODE=asan
ISAS=""       # empty: every row of the build table for this machine
USE_CACHE=1
KEEP=0
HARNESS_ARGS=()

while [ $# -gt 0 ]; do
    case "$1" in
        --valgrind) MODE=valgrind ;;
        --full) MODE=full ;;
        --isa) shift; ISAS="${1:?--isa needs a list}" ;;
        --no-cache) USE_CACHE=0 ;;
        --keep) KEEP=1 ;;
        --) shift; HARNESS_ARGS=("$@"); break ;;
        -h|--help) sed -n '2,43p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "sanitize.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }
say() { echo "sanitize.sh: $*"; }

if ! command -v "$CC" >/dev/null 2>&1; then
    say "no C compiler ($CC) found"; exit 2
fi
if [ ! -d "$ROOT/include/fastce" ] || [ ! -f "$ROOT/tests/c/kernel_harness.c" ]; then
    say "$ROOT is not a fastce source checkout"; exit 2
fi

# -g1 (line tables and inlined frames, no variable info) keeps file:line in every report.
# With `-- --misaligned` the alignment check is on and recoverable, so that the run lists every
# misaligned access site once (UBSan reports each source location once) and still fails.
MISALIGNED=0
case " ${HARNESS_ARGS[*]} " in *" --misaligned "*) MISALIGNED=1 ;; esac
case "$MODE" in
    asan)
        if [ "$MISALIGNED" = 1 ]; then
            SAN_FLAGS="${SAN_FLAGS:--O0 -g1 -fsanitize=address,undefined -fno-sanitize=null,pointer-overflow -fno-sanitize-recover=all -fsanitize-recover=alignment -fno-omit-frame-pointer}"
        else
            SAN_FLAGS="${SAN_FLAGS:--O0 -g1 -fsanitize=address,undefined -fno-sanitize=alignment,null,pointer-overflow -fno-sanitize-recover=all -fno-omit-frame-pointer}"
        fi ;;
    full)
        if [ "$MISALIGNED" = 1 ]; then
            SAN_FLAGS="${SAN_FLAGS:--O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fsanitize-recover=alignment -fno-omit-frame-pointer}"
        else
            SAN_FLAGS="${SAN_FLAGS:--O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer}"
        fi ;;
    valgrind)
        SAN_FLAGS="${SAN_FLAGS:--O1 -g1}"
        command -v valgrind >/dev/null 2>&1 || { say "valgrind not found"; exit 2; } ;;
esac
BASE_FLAGS="-std=c11 -fno-math-errno -I$ROOT/include"

CACHE="${FASTCE_SANITIZE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fastce-sanitize}"
if [ "$USE_CACHE" = 0 ] || [ "$CACHE" = off ]; then CACHE=""; fi
if [ -n "$CACHE" ] && ! mkdir -p "$CACHE" 2>/dev/null; then CACHE=""; fi

BUILD="$(mktemp -d "${TMPDIR:-/tmp}/fastce-sanitize.XXXXXX")"
cleanup() { if [ "$KEEP" = 1 ]; then say "build directory kept: $BUILD"; else rm -rf "$BUILD"; fi; }
trap cleanup EXIT
say "mode $MODE, compiler $($CC --version | head -n1), build dir $BUILD"
say "flags: $SAN_FLAGS $BASE_FLAGS"
[ -n "$CACHE" ] && say "object cache: $CACHE" || say "object cache: off"

# ---- which ISA TUs can be built (as setup.py decides: try the flags on an empty program)
try_flags() { echo 'int main(void){return 0;}' > "$BUILD/probe.c" && "$CC" $1 -c "$BUILD/probe.c" -o "$BUILD/probe.o" 2>/dev/null; }
wants() { [ -z "$ISAS" ] && return 0; case ",$ISAS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

UNITS=()      # "name|source|flags": kernels.c once per (ISA, dtype), as setup.py builds it
DEFS=""
# The rows of include/fastce/build_table.h built on this machine's arch ("name|CODE|flags",
# tools/build_table.py), widest first, as setup.py orders them; and the dtype rows.
PYTHON="${PYTHON:-python3}"
if ! ISA_ROWS="$("$PYTHON" "$ROOT/tools/build_table.py" --rows)" || \
   ! DTYPE_ROWS="$("$PYTHON" "$ROOT/tools/build_table.py" --dtypes)"; then
    say "cannot read the build table (include/fastce/build_table.h) with $PYTHON tools/build_table.py"; exit 2
fi
KNOWN_ISAS="$(echo "$ISA_ROWS" | cut -d'|' -f1 | paste -sd, -)"
for isa in ${ISAS//,/ }; do
    case ",$KNOWN_ISAS," in *",$isa,"*) ;; *) say "--isa: $isa is not a row of the build table for this machine ($KNOWN_ISAS)"; exit 2 ;; esac
done
while IFS='|' read -r name code flags; do
    if [ "$name" != scalar ] && ! wants "$name"; then continue; fi
    # The scalar row ("any" arch) is always linked: dispatch.c falls back to it.
    if [ -n "$flags" ] && ! try_flags "$flags"; then
        say "the compiler cannot build $name kernels; skipping them"; continue
    fi
    while IFS='|' read -r dt dtcode; do
        UNITS+=("${name}_${dt}|src/fastce/_csrc/kernels.c|-DFASTCE_BUILD_ISA=$code -DFASTCE_BUILD_DTYPE=$dtcode $flags")
    done <<< "$DTYPE_ROWS"
    DEFS="$DEFS -DFASTCE_HAVE_${name}=1"
done < <(echo "$ISA_ROWS" | tac)
# The dispatcher (the kernel tables the harness calls) and the harness.
UNITS+=("dispatch|src/fastce/_csrc/dispatch.c|$DEFS")
UNITS+=("kernel_harness|tests/c/kernel_harness.c|-Wall -Wextra")

# ---- compile (largest first, $JOBS at a time), through the cache
compile_unit() {
    local name="$1" src="$2" flags="$3" obj="$BUILD/$1.o" key=""
    local cmd="$CC $SAN_FLAGS $BASE_FLAGS $flags -c $ROOT/$src -o $obj"
    if [ -n "$CACHE" ]; then
        key=$( { "$CC" --version; echo "$SAN_FLAGS $BASE_FLAGS $flags"; \
                 "$CC" $BASE_FLAGS $flags -E "$ROOT/$src"; } 2>&1 | sha256sum | cut -c1-32)
        if [ -f "$CACHE/$name-$key.o" ] && cp "$CACHE/$name-$key.o" "$obj" 2>/dev/null; then
            echo "  [cached] $cmd"
            return 0
        fi
    fi
    local t0; t0=$(date +%s.%N)
    if ! $cmd > "$BUILD/$name.log" 2>&1; then
        echo "  [FAILED] $cmd"; cat "$BUILD/$name.log"; return 1
    fi
    echo "  [$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0fs", b - a }')] $cmd"
    [ -s "$BUILD/$name.log" ] && sed 's/^/    /' "$BUILD/$name.log"
    if [ -n "$CACHE" ]; then
        cp "$obj" "$CACHE/.$name-$key.o.$$" 2>/dev/null && mv -f "$CACHE/.$name-$key.o.$$" "$CACHE/$name-$key.o" 2>/dev/null
        # keep only the 3 newest objects of each unit (e.g. default, --full, --valgrind builds)
        ls -1t "$CACHE/$name"-*.o 2>/dev/null | tail -n +4 | xargs -r rm -f
    fi
    return 0
}

say "compiling ${#UNITS[@]} units ($JOBS at a time)"
FAILED=0
running=0
for u in "${UNITS[@]}"; do
    IFS='|' read -r name src flags <<< "$u"
    if [ "$running" -ge "$JOBS" ]; then
        wait -n || FAILED=1
        running=$((running - 1))
    fi
    compile_unit "$name" "$src" "$flags" &
    running=$((running + 1))
done
while [ "$running" -gt 0 ]; do
    wait -n || FAILED=1
    running=$((running - 1))
done
if [ "$FAILED" != 0 ]; then say "build failed after $(elapsed)"; exit 2; fi

OBJS=()
for u in "${UNITS[@]}"; do IFS='|' read -r name _ <<< "$u"; OBJS+=("$BUILD/$name.o"); done
echo "  $CC $SAN_FLAGS ${OBJS[*]} -lm -o $BUILD/kernel_harness"
if ! "$CC" $SAN_FLAGS "${OBJS[@]}" -lm -o "$BUILD/kernel_harness"; then
    say "link failed"; exit 2
fi
say "built in $(elapsed)"

# ---- run (the runs are independent: they go in parallel, and are reported in order)
STATUS=0
LABELS=()
start_run() {  # label, command...
    local label="$1"; shift
    LABELS+=("$label")
    echo "$*" > "$BUILD/run-$label.cmd"
    ( "$@" > "$BUILD/run-$label.log" 2>&1; echo $? > "$BUILD/run-$label.rc" ) &
}
report_runs() {
    wait
    local label rc log
    for label in "${LABELS[@]}"; do
        log="$BUILD/run-$label.log"
        rc=$(cat "$BUILD/run-$label.rc" 2>/dev/null || echo 99)
        echo "  $(cat "$BUILD/run-$label.cmd")"
        local lines; lines=$(grep -vc '^case: ' "$log")
        grep -v '^case: ' "$log" | head -n 200
        if [ "$lines" -gt 200 ]; then
            echo "  ... $((lines - 200)) more lines; the last ones:"
            grep -v '^case: ' "$log" | tail -n 8
            if grep -q 'runtime error:' "$log"; then
                echo "  every UBSan report site (count, site, check):"
                grep -o '[^ ]*: runtime error: [^0-9]*' "$log" | sed 's/ of misaligned address $//; s/ address $//' \
                    | sort | uniq -c | sort -k2 | head -n 100
            fi
        fi
        if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: UndefinedBehaviorSanitizer|ERROR SUMMARY: [1-9]' "$log"; then
            say "$label: FAILED: sanitizer/valgrind report (exit status $rc)"; STATUS=1
        elif [ "$rc" != 0 ]; then
            say "$label: FAILED (exit status $rc)"; STATUS=1
        else
            say "$label: ok"
        fi
    done
}

if [ "$MODE" != valgrind ]; then
    # Not detect_stack_use_after_return: with it, gcc 12 spills 64-byte AVX-512 values with
    # aligned stores (vmovapd) into ASan's fake stack frames, which are only 32-byte aligned, and
    # correct code faults (a 15-line program with one _mm512_storeu_pd to a local array does).
    export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:strict_string_checks=1:check_initialization_order=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=$((1 - MISALIGNED))${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
    say "running (ASAN_OPTIONS=$ASAN_OPTIONS UBSAN_OPTIONS=$UBSAN_OPTIONS)"
    start_run asan "$BUILD/kernel_harness" "${HARNESS_ARGS[@]}"
    case " ${HARNESS_ARGS[*]} " in
        *" --misaligned "*|*" --guard "*) ;;
        *) start_run asan-guard "$BUILD/kernel_harness" --guard "${HARNESS_ARGS[@]}" ;;
    esac
else
    say "running under valgrind"
    start_run valgrind valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
        --track-origins=yes -q "$BUILD/kernel_harness" --quick "${HARNESS_ARGS[@]}"
fi
report_runs

if [ "$STATUS" = 0 ]; then say "PASSED in $(elapsed)"; else say "FAILED in $(elapsed)"; fi
exit "$STATUS"
