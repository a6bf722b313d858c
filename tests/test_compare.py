"""fastce.compare, compare_linear and Comparison: a model against a reference, mergeable.

Against the float64 twin (reference.compare) on every ISA and dtype, 2-D / unbatched / K-dim,
with and without targets and padding; merge equality (split batches give the whole batch's
figures); the histogram's quantiles within one bin of the exact ones; argmax ties; NaN rows;
the linear form against materialized logits; pickling; bad input.
"""

import math
import pickle

import numpy as np
import pytest

import fastce
from fastce._compare import KL_BIN_EDGES, KL_BINS_PER_DECADE, KL_QUANTILES
from _ce_testutil import ref

ml_dtypes = pytest.importorskip("ml_dtypes")  # CI installs it (the test extra)
BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16), BF16]
ids = lambda d: np.dtype(d).name  # noqa: E731
shape_id = lambda s: "x".join(map(str, s))  # noqa: E731


def loss_shape(shape):
    return () if len(shape) == 1 else shape[:1] + shape[2:]


def problem(shape, dtype=np.float32, ref_dtype=None, seed=0, ignore_every=4, spread=0.7):
    rng = np.random.default_rng(seed)
    C = shape[0] if len(shape) == 1 else shape[1]
    a = (rng.standard_normal(shape) * 2).astype(ref_dtype or dtype)
    b = (a.astype(np.float64) + rng.standard_normal(shape) * spread).astype(dtype)
    t = rng.integers(0, C, loss_shape(shape))
    if ignore_every and t.ndim:
        t.reshape(-1)[::ignore_every] = -100
    return b, a, t


def f64(x):
    return np.asarray(x, np.float64)


def check_against_twin(c, r, rtol):
    assert c.count == r.count
    assert c.agree == r.topk and c.agree[1] == r.top1
    assert c.mean_kl == pytest.approx(r.kl_sum / r.count, rel=rtol, abs=1e-6)
    assert c.max_kl == pytest.approx(r.kl_max, rel=rtol, abs=1e-6)
    if r.nll_sum is None:
        assert not c.has_targets and c.nll is None and c.rms_dp is None and c.ppl_ratio is None
        return
    assert c.nll == pytest.approx(r.nll_sum / r.count, rel=rtol)
    assert c.ref_nll == pytest.approx(r.ref_nll_sum / r.count, rel=rtol)
    assert c.delta_nll == pytest.approx((r.nll_sum - r.ref_nll_sum) / r.count, rel=rtol, abs=1e-6)
    assert c.perplexity == pytest.approx(math.exp(r.nll_sum / r.count), rel=rtol)
    assert c.ppl_ratio == pytest.approx(math.exp((r.nll_sum - r.ref_nll_sum) / r.count), rel=rtol)
    assert c.rms_dp == pytest.approx(math.sqrt(r.dp_sq_sum / r.count), rel=max(rtol, 1e-5))


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("shape", [(40, 7), (30, 33), (5, 3000), (17,), (6, 9, 4)], ids=shape_id)
@pytest.mark.parametrize("targets", [False, True])
def test_compare_matches_the_float64_twin(isa, dtype, shape, targets):
    b, a, t = problem(shape, dtype, seed=shape[0])
    c = fastce.compare(b, a, t if targets else None, top_k=(1, 2, 5))
    r = ref.compare(f64(b), f64(a), t if targets else None, top_k=(1, 2, 5))
    check_against_twin(c, r, 1e-5 if dtype == np.float64 else 1e-4)
    if targets and len(shape) > 1:
        assert c.count == np.count_nonzero(t != -100) < t.size


def test_compare_two_dtypes(isa):
    b, a, t = problem((20, 50), np.float16, np.float32, seed=3)
    c = fastce.compare(b, a, t)
    check_against_twin(c, ref.compare(f64(b), f64(a), t), 1e-4)


def test_merge_equals_the_whole_batch():
    b, a, t = problem((300, 40), np.float64, seed=8)
    whole = fastce.compare(b, a, t, top_k=(1, 3))
    cuts = [0, 1, 1, 77, 150, 299, 300]  # an empty part and a one-row part included
    parts = [fastce.compare(b[i:j], a[i:j], t[i:j], top_k=(1, 3)) for i, j in zip(cuts, cuts[1:])]
    acc = fastce.Comparison.empty((1, 3), has_targets=True)
    for p in parts[::-1]:  # any order
        acc += p
    assert acc.count == whole.count and acc.agree == whole.agree
    np.testing.assert_array_equal(acc.kl_hist, whole.kl_hist)
    assert acc.kl_max == whole.kl_max
    for name in ("mean_kl", "nll", "ref_nll", "delta_nll", "rms_dp", "ppl_ratio"):
        assert getattr(acc, name) == pytest.approx(getattr(whole, name), rel=1e-12), name
    assert acc.kl_quantiles == whole.kl_quantiles
    assert parts[1].count == 0 and parts[1].merge(parts[2]).as_dict() == parts[2].as_dict()  # an empty one


def test_quantiles_within_one_bin():
    rng = np.random.default_rng(2)
    b, a, _ = problem((4000, 20), np.float64, seed=2, spread=0.3)
    b[::7] += rng.standard_normal((572, 20)) * 3  # a heavy tail
    c = fastce.compare(b, a)
    kl = np.sort(ref.compare(b, a).kl)
    step = 10 ** (1 / KL_BINS_PER_DECADE)
    for q, v in c.kl_quantiles.items():
        exact = kl[math.ceil(q * len(kl)) - 1]
        assert v / math.sqrt(step) <= exact * (1 + 1e-12) and exact <= v * math.sqrt(step) * (1 + 1e-12), (q, v, exact)
    assert tuple(c.kl_quantiles) == KL_QUANTILES
    assert int(c.kl_hist.sum()) == c.count


def test_histogram_extremes():
    """KL of exactly 0 (equal rows) is in the lowest bin, +inf in the last; quantiles say so."""
    a = np.array([[0.0, 1.0, 2.0]] * 3)
    b = a.copy()
    b[2, 2] = -np.inf  # q = 0 where p > 0
    c = fastce.compare(b, a)
    assert c.kl_hist[0] == 2 and c.kl_hist[-1] == 1 and c.max_kl == math.inf
    assert c.kl_quantiles[0.5] == 0.0 and c.kl_quantiles[0.999] == math.inf
    assert len(c.kl_hist) == len(KL_BIN_EDGES) + 1


def test_ties_follow_argmax_order():
    """Top-1 agreement is argmax equality, with ties broken to the lower index as np.argmax."""
    a = np.array([[0.0, 5.0, 5.0, 1.0], [3.0, 3.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]], np.float32)
    b = np.array([[5.0, 5.0, 5.0, 0.0], [2.0, 2.0, 9.0, 0.0], [4.0, 4.0, 4.0, 4.0]], np.float32)
    c = fastce.compare(b, a, top_k=(1, 2, 3, 4))
    r = ref.compare(f64(b), f64(a), top_k=(1, 2, 3, 4))
    # row 0: a's argmax 1, b ties at 0, 1, 2 -> rank 1; row 1: a's argmax 0, b's 2 -> rank 1;
    # row 2: a's argmax 3, b all equal -> rank 3
    assert c.agree == r.topk == {1: 0, 2: 2, 3: 2, 4: 3}


def test_nan_rows_agree_nowhere():
    b, a, t = problem((6, 5), np.float32, seed=1, ignore_every=0)
    b[2, 1] = np.nan
    c = fastce.compare(b, a, t, top_k=(1, 5))
    assert math.isnan(c.mean_kl) and math.isnan(c.max_kl) and math.isnan(c.nll)
    assert c.agree[5] == 5 and int(c.kl_hist.sum()) == 5 and c.count == 6


def test_compare_linear_matches_compare():
    rng = np.random.default_rng(6)
    N, V = 37, 90
    h, W, bias = rng.standard_normal((N, 16)), rng.standard_normal((V, 16)) * 0.3, rng.standard_normal(V)
    rh, rW = rng.standard_normal((N, 24)), rng.standard_normal((V, 24)) * 0.3  # another hidden size
    t = rng.integers(0, V, N)
    t[::5] = -100
    want = fastce.compare(h @ W.T + bias, rh @ rW.T, t, top_k=(1, 4))
    for chunk in (None, 1, 8, 100):
        got = fastce.compare_linear(h, W, rh, rW, t, linear_bias=bias, top_k=(1, 4), chunk_size=chunk)
        assert got.count == want.count and got.agree == want.agree
        assert got.mean_kl == pytest.approx(want.mean_kl, rel=1e-10)
        assert got.delta_nll == pytest.approx(want.delta_nll, rel=1e-10)
    got = fastce.compare_linear(h.astype(np.float32), W.astype(np.float32), rh, rW, t, linear_bias=bias.astype(np.float32))
    assert got.count == want.count and got.mean_kl == pytest.approx(want.mean_kl, rel=1e-4)
    with pytest.raises(ValueError, match="same vocabulary"):
        fastce.compare_linear(h, W, rh, rW[:-1])
    with pytest.raises(ValueError, match="same rows"):
        fastce.compare_linear(h, W, rh[:-1], rW)


def test_comparison_pickles_and_dicts():
    b, a, t = problem((10, 6), np.float32, seed=4)
    c = fastce.compare(b, a, t, top_k=(1, 2))
    c2 = pickle.loads(pickle.dumps(c))
    assert c2.as_dict() == c.as_dict() and np.array_equal(c2.kl_hist, c.kl_hist)
    d = c.as_dict()
    assert set(d) == {"count", "mean_kl", "max_kl", "kl_quantiles", "top1_agreement", "topk_agreement", "nll",
                      "ref_nll", "delta_nll", "perplexity", "ref_perplexity", "ppl_ratio", "rms_dp"}
    assert set(d["topk_agreement"]) == {"top1", "top2"} and set(d["kl_quantiles"]) == {"p50", "p90", "p99", "p99.9"}
    e = fastce.Comparison.empty()
    assert math.isnan(e.mean_kl) and math.isnan(e.top1_agreement) and e.nll is None


@pytest.mark.parametrize("call,exc,match", [
    (lambda: fastce.compare(np.zeros((2, 3)), np.zeros((3, 3))), ValueError, "same shape"),
    (lambda: fastce.compare(np.zeros((2, 3)), np.zeros((2, 3)), np.array([0, 3])), IndexError, "out of bounds"),
    (lambda: fastce.compare(np.zeros((2, 3)), np.zeros((2, 3)), np.array([0.0, 1.0])), TypeError, "integers"),
    (lambda: fastce.compare(np.zeros((2, 3)), np.zeros((2, 3)), np.array([0, 1, 2])), ValueError, "shape"),
    (lambda: fastce.compare(np.zeros((2, 3)), np.zeros((2, 3)), top_k=4), ValueError, "top_k"),
    (lambda: fastce.compare(np.zeros((2, 3), np.int8), np.zeros((2, 3))), TypeError, "floating"),
    (lambda: fastce.Comparison(top_k=(1, 2)).merge(fastce.Comparison()), ValueError, "top_k"),
    (lambda: fastce.Comparison(has_targets=True).merge(fastce.Comparison()), ValueError, "targets"),
    (lambda: fastce.Comparison() + fastce.Score(), TypeError, "Comparison"),
])
def test_compare_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
