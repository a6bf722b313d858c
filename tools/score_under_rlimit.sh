#!/usr/bin/env bash
# Real run of `fastce score` on a logits file larger than the address space the process may use.
#
#   tools/score_under_rlimit.sh [ROWS] [VOCAB] [LIMIT_MIB] [BLOCK_MB]
#       defaults: 24576 32000 1536 64   (a 3.0 GB float32 file, scored under a 1.5 GiB RLIMIT_AS)
#   env: WORK (default /tmp/fastce_rlimit_run), PYTHON (default python), THREADS (default: all)
#
# Steps:
#   1. write WORK/logits.npy (ROWS x VOCAB float32, random logits with the target boosted in
#      a third of the rows) and WORK/targets.npy (int64, every 17th row = -100);
#   2. find the smallest RLIMIT_AS (MiB, bisection) under which `fastce score` works on a tiny
#      file: the fixed cost of the interpreter, NumPy, OpenBLAS and the OpenMP runtime;
#   3. evict the big file from the page cache (posix_fadvise DONTNEED), then time
#      `prlimit --as=LIMIT fastce score ... --block-mb BLOCK_MB` (cold), and again at a tight
#      limit = minimum + 2 blocks + 64 MiB (warm cache);
#   4. show that a whole-file np.load(mmap_mode="r") fails under the same limit;
#   5. recompute the result in-process without a limit, block by block (fastce.score merged,
#      and a float64 NumPy reference), and compare;
#   6. delete the files (also on failure or Ctrl-C).
set -euo pipefail

ROWS=${1:-24576}
VOCAB=${2:-32000}
LIMIT_MIB=${3:-1536}
BLOCK_MB=${4:-64}
WORK=${WORK:-/tmp/fastce_rlimit_run}
PY=${PYTHON:-python}
THREADS_OPT=()
[[ -n "${THREADS:-}" ]] && THREADS_OPT=(--threads "$THREADS")

mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
X="$WORK/logits.npy"; T="$WORK/targets.npy"

echo "== 1. writing $ROWS x $VOCAB float32 logits to $X"
"$PY" - "$X" "$T" "$ROWS" "$VOCAB" <<'EOF'
import sys, time, numpy as np
x_path, t_path, rows, vocab = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t0 = time.time()
rng = np.random.default_rng(2024)
t = rng.integers(0, vocab, rows)
mm = np.lib.format.open_memmap(x_path, mode="w+", dtype=np.float32, shape=(rows, vocab))
step = 512
for r0 in range(0, rows, step):
    r1 = min(rows, r0 + step)
    blk = rng.standard_normal((r1 - r0, vocab), dtype=np.float32)
    sel = np.arange(r0, r1)[::3]
    blk[sel - r0, t[sel]] += 6.0          # a learnable signal in a third of the rows
    mm[r0:r1] = blk
mm.flush(); del mm
t[::17] = -100
np.save(t_path, t)
import os
print(f"   {os.path.getsize(x_path)} bytes ({os.path.getsize(x_path) / 2**30:.2f} GiB) "
      f"in {time.time() - t0:.1f} s")
EOF
FILE_BYTES=$(stat -c %s "$X")

echo "== 2. smallest RLIMIT_AS for 'fastce score' on a tiny file"
"$PY" - "$WORK" <<'EOF'
import sys, numpy as np
d = sys.argv[1]
np.save(f"{d}/tiny.npy", np.zeros((4, 8), np.float32)); np.save(f"{d}/tiny_t.npy", np.arange(4))
EOF
works() {  # works MIB: does fastce score run on the tiny file under RLIMIT_AS = MIB MiB?
    prlimit --as=$(( $1 * 1048576 )) "$PY" -m fastce score "$WORK/tiny.npy" "$WORK/tiny_t.npy" \
        "${THREADS_OPT[@]}" >/dev/null 2>&1
}
lo=16; hi=8192
works $hi || { echo "   does not even work under $hi MiB"; exit 1; }
while (( hi - lo > 4 )); do
    mid=$(( (lo + hi) / 2 ))
    if works $mid; then hi=$mid; else lo=$mid; fi
done
MIN_MIB=$hi
echo "   works at ${MIN_MIB} MiB, fails at ${lo} MiB"

run_limited() {  # run_limited MIB LABEL
    local mib=$1 label=$2
    echo "-- $label: prlimit --as=$(( mib * 1048576 )) ($mib MiB) fastce score $X $T --top-k 5 --block-mb $BLOCK_MB ${THREADS_OPT[*]}"
    /usr/bin/time -f "   wall %e s, user %U s, sys %S s, max RSS %M KiB, exit %x" \
        prlimit --as=$(( mib * 1048576 )) "$PY" -m fastce score "$X" "$T" --top-k 5 \
        --block-mb "$BLOCK_MB" "${THREADS_OPT[@]}" 2>&1 | sed 's/^/   /' || true
}

echo "== 3. scoring under RLIMIT_AS (file: $FILE_BYTES bytes = $(( FILE_BYTES / 1048576 )) MiB)"
"$PY" -c "import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); \
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)" "$X"
run_limited "$LIMIT_MIB" "cold page cache, limit ${LIMIT_MIB} MiB"
TIGHT=$(( MIN_MIB + 2 * ${BLOCK_MB%.*} + 64 ))
run_limited "$TIGHT" "warm page cache, tight limit ${TIGHT} MiB"
"$PY" -m fastce score "$X" "$T" --top-k 5 --block-mb "$BLOCK_MB" --json "${THREADS_OPT[@]}" \
    > "$WORK/cli.json"

echo "== 4. control: np.load(mmap_mode='r') of the whole file under ${LIMIT_MIB} MiB"
prlimit --as=$(( LIMIT_MIB * 1048576 )) "$PY" -c "
import sys, numpy as np
try:
    np.load(sys.argv[1], mmap_mode='r'); print('   whole-file map succeeded')
except Exception as e:
    print('   whole-file map failed:', type(e).__name__, str(e).splitlines()[0])" "$X"

echo "== 5. in-process block-wise recomputation (no limit)"
"$PY" - "$X" "$T" "$WORK/cli.json" <<'EOF'
import json, math, sys, time
import numpy as np, fastce
x = np.load(sys.argv[1], mmap_mode="r"); t = np.load(sys.argv[2])
cli = json.load(open(sys.argv[3]))
t0 = time.time()
acc = fastce.Score.empty(top_k=(1, 5))
nll64, count, correct = 0.0, 0, {1: 0, 5: 0}
step = 1024
for r0 in range(0, x.shape[0], step):
    xb = np.asarray(x[r0:r0 + step]); tb = t[r0:r0 + step]
    acc += fastce.score(xb, tb, top_k=(1, 5))
    keep = tb != -100
    xd = xb[keep].astype(np.float64); td = tb[keep]
    m = xd.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(xd - m).sum(1))
    xt = xd[np.arange(len(td)), td]
    nll64 += float((lse - xt).sum()); count += len(td)
    cls = np.arange(xd.shape[1])[None]
    above = ((xd > xt[:, None]) | ((xd == xt[:, None]) & (cls < td[:, None]))).sum(1)
    for k in correct:
        correct[k] += int((above < k).sum())
print(f"   recomputed in {time.time() - t0:.1f} s")
ref = {"tokens": count, "mean_nll": nll64 / count, "perplexity": math.exp(nll64 / count),
       "top1": correct[1] / count, "top5": correct[5] / count}
api = {"tokens": acc.count, "mean_nll": acc.mean_nll, "perplexity": acc.perplexity,
       "top1": acc.top_k_accuracy[1], "top5": acc.top_k_accuracy[5]}
got = {"tokens": cli["tokens"], "mean_nll": cli["mean_nll"], "perplexity": cli["perplexity"],
       "top1": cli["accuracy"]["top1"], "top5": cli["accuracy"]["top5"]}
print(f"   {'':12}{'fastce score (CLI)':>22}{'fastce.score blocks':>22}{'float64 NumPy':>22}")
for key in ref:
    print(f"   {key:12}{got[key]!r:>22}{api[key]!r:>22}{ref[key]!r:>22}")
rel = abs(got["mean_nll"] - ref["mean_nll"]) / ref["mean_nll"]
print(f"   CLI vs float64 reference: mean NLL rel. diff {rel:.2e}; tokens "
      f"{'equal' if got['tokens'] == ref['tokens'] else 'DIFFER'}; top-1/top-5 "
      f"{'equal' if (got['top1'], got['top5']) == (ref['top1'], ref['top5']) else 'DIFFER'}")
ok = got["tokens"] == ref["tokens"] and rel < 1e-5 and (got["top1"], got["top5"]) == (ref["top1"], ref["top5"])
sys.exit(0 if ok else 1)
EOF
echo "== 6. removing $WORK"
