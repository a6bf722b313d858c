"""The index targets' check (fastce_check_targets) on every ISA: the first bad position and the
kept targets' count and weight, against NumPy, for every target dtype, with bad targets in
several blocks (CHECK_BLOCK = 65536 targets) and on one and two threads. Without weights the
SIMD ISAs run their own vectorized check_block; uint64 targets and weights take dispatch.c's
scalar loop, as every target does on the scalar ISA."""
import numpy as np
import pytest

import fastce
from fastce import _kernels, _runtime
from fastce._kernels import TARGET_DTYPE_CODES

ISAS = fastce.available_isas()
DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


def reference(t, C, ignore_index, weight):
    """(first bad position or -1, kept weight, kept count) by the index rule, in int64/uint64 terms."""
    wide = t.astype(np.uint64).view(np.int64) if t.dtype == np.uint64 else t.astype(np.int64)
    huge = t > np.iinfo(np.int64).max if t.dtype == np.uint64 else np.zeros(t.shape, bool)
    ignored = (wide == ignore_index) & ~huge
    bad = ~ignored & ((wide < 0) | (wide >= C) | huge)
    kept = ~ignored & ~bad
    first = int(np.argmax(bad)) if bad.any() else -1
    before = kept[:first] if first >= 0 else kept
    w = before.sum() if weight is None else weight.astype(np.float64)[wide[:len(before)][before]].sum()
    return first, float(w), int(before.sum())


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_check_targets_matches_numpy(isa, dtype, weighted):
    rng = np.random.default_rng(DTYPES.index(dtype))
    C, n = 21, 3 * 65536 + 777  # four blocks, the last partial
    ignore_index = -100 if np.issubdtype(dtype, np.signedinteger) else 5
    weight = rng.random(C).astype(np.float32) if weighted else None
    isa_id = _runtime._ISA_IDS[isa]
    t = rng.integers(0, C, n).astype(dtype)
    if np.issubdtype(dtype, np.signedinteger):
        t[rng.random(n) < 0.1] = ignore_index
    else:
        t[rng.random(n) < 0.1] = 5
    cases = [t.copy()]  # all good
    for where in (n - 1, 70000, 3):  # bad in the last block, the second, the first (and later ones)
        bad = cases[-1].copy()
        bad[where] = C if dtype != np.int8 else -3
        cases.append(bad)
    if dtype == np.uint64:
        huge = t.copy()
        huge[100] = np.uint64(2**64 - 100)  # reads as -100 in int64: still out of bounds
        cases.append(huge)
    for case in cases:
        want = reference(case, C, ignore_index, weight)
        for nthreads in (1, 2):
            bad, wsum, kept = _kernels.check_targets(isa_id, case, TARGET_DTYPE_CODES[case.dtype], C,
                                                     ignore_index, weight, nthreads)
            if want[0] >= 0:
                assert bad == want[0], (isa, dtype, nthreads)
            else:
                assert (bad, kept) == (-1, want[2]), (isa, dtype, nthreads)
                assert wsum == pytest.approx(want[1], rel=1e-12)
