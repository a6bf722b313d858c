"""fastce.score / score_linear / Score against the float64 reference (fastce.reference.score,
itself tested against a brute-force definition in test_reference.py):

    nll_i = logsumexp(x_i) - x_i[t_i]
    rank_i = #{c : x_ic > x_it} + #{c < t_i : x_ic == x_it}     (argmax's tie order)
    correct@k_i = rank_i < k (and the row's loss is not NaN)
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

import fastce
from _ce_testutil import make_layout, ref


def make_logits(rng, N, V, dtype, signal=2.0):
    """Logits whose target is often, but not always, near the top (so top-k counts vary)."""
    x = rng.standard_normal((N, V))
    t = rng.integers(0, V, N)
    x[np.arange(N), t] += signal * rng.random(N) * 2
    return x.astype(dtype), t


def check(s, x, t, rtol, **kw):
    nll, count, correct = ref.score(x, t, **kw)
    assert s.count == s.tokens == count
    assert s.correct == correct, (s.correct, correct)
    np.testing.assert_allclose(s.nll_sum, nll, rtol=rtol, atol=1e-9 * max(count, 1))
    if count:
        assert math.isclose(s.mean_nll, nll / count, rel_tol=rtol * 10)
        assert math.isclose(s.perplexity, math.exp(nll / count), rel_tol=rtol * 100)
        assert s.accuracy == correct[1] / count


RTOL = {np.float16: 1e-6, np.float32: 1e-6, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("V", [1, 2, 7, 16, 17, 33, 1000, 2049, 9000])
def test_matches_reference(isa, V, dtype):
    rng = np.random.default_rng(V)
    N = 64
    x, t = make_logits(rng, N, V, dtype)
    t[::5] = -100
    ks = tuple(k for k in (1, 2, 5, V) if k <= V)
    s = fastce.score(x, t, top_k=ks, num_threads=2)
    # float16 is scored in float32: the reference sees the same float16 values
    check(s, x, t, RTOL[dtype], top_k=ks)
    assert s.correct[V] == s.count  # every target is within the top V


def test_ties_follow_argmax_order(isa):
    V = 40
    x = np.zeros((6, V), np.float32)
    x[0, :] = 1.0                       # all equal: only target 0 is top-1 (argmax picks 0)
    x[1, :] = 1.0
    x[2, [3, 9]] = 5.0                  # tie between 3 and 9 at the top
    x[3, [3, 9]] = 5.0
    x[4, :] = -np.inf
    x[4, 7] = 0.0                        # one finite logit
    x[5, 10:] = 2.0                      # many ties above a lower target
    t = np.array([0, 5, 3, 9, 7, 12])
    s = fastce.score(x, t, top_k=(1, 2, 3, 31))
    check(s, x, t, 1e-6, top_k=(1, 2, 3, 31))
    # row by row: rank 0, 5, 0, 1, 0, 2 -> top1: rows 0, 2, 4; top2: + row 3; top3: + row 5
    assert s.correct == {1: 3, 2: 4, 3: 5, 31: 6}


def test_nonfinite_rows(isa):
    V = 50
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, V))
    t = np.array([1, 2, 3, 4, 5])
    x[0, 1] = np.nan                     # NaN target: NaN loss, incorrect
    x[1, 30] = np.nan                    # NaN elsewhere: NaN loss, incorrect
    x[2, 3] = np.inf                     # +inf target: NaN loss (torch's inf - inf), incorrect
    x[3, 4] = -np.inf                    # -inf target: inf loss, ranked last
    s = fastce.score(x, t, top_k=(1, V))
    nll, count, correct = ref.score(x, t, top_k=(1, V))
    assert s.count == count == 5
    assert math.isnan(s.nll_sum) and math.isnan(nll)
    assert s.correct == correct
    assert s.correct[V] == 2  # the -inf target (rank V-1 < V) and the ordinary row


def test_unbatched_and_layouts(isa):
    rng = np.random.default_rng(3)
    x, t = make_logits(rng, 30, 77, np.float64)
    s_c = fastce.score(x, t, top_k=(1, 3))
    for layout in ("fortran", "strided", "byteswapped"):
        assert fastce.score(make_layout(x, layout), t, top_k=(1, 3)) == s_c, layout
    one = fastce.score(x[4], t[4], top_k=(1, 3))
    check(one, x[4:5], t[4:5], 1e-12, top_k=(1, 3))


def test_softcap(isa):
    rng = np.random.default_rng(4)
    x, t = make_logits(rng, 40, 300, np.float32, signal=20)
    x *= 10
    s = fastce.score(x, t, top_k=(1, 5), softcap=30.0)
    check(s, x, t, 2e-6, top_k=(1, 5), softcap=30.0)
    # the loss agrees with cross_entropy's
    np.testing.assert_allclose(s.nll_sum, fastce.cross_entropy(x, t, reduction="sum", softcap=30.0), rtol=1e-5)


def test_nll_agrees_with_cross_entropy(isa):
    rng = np.random.default_rng(6)
    x, t = make_logits(rng, 200, 3000, np.float32)
    t[:7] = 3
    t[7:11] = -1
    s = fastce.score(x, t, ignore_index=-1)
    ce = fastce.cross_entropy(x.astype(np.float64), t, ignore_index=-1, reduction="sum")
    np.testing.assert_allclose(s.nll_sum, ce, rtol=1e-6)
    assert s.count == 196


def test_streaming_merge_equals_one_batch():
    rng = np.random.default_rng(7)
    x, t = make_logits(rng, 1000, 500, np.float32)
    t[rng.random(1000) < 0.1] = -100
    whole = fastce.score(x, t, top_k=(1, 5, 10))
    acc = fastce.Score.empty(top_k=(5, 10, 1))
    for r0 in range(0, 1000, 137):
        acc += fastce.score(x[r0:r0 + 137], t[r0:r0 + 137], top_k=(1, 5, 10))
    assert acc.count == whole.count and acc.correct == whole.correct
    assert math.isclose(acc.nll_sum, whole.nll_sum, rel_tol=1e-12)
    d = acc.as_dict()
    assert set(d) == {"tokens", "nll_sum", "mean_nll", "perplexity", "accuracy"}
    assert set(d["accuracy"]) == {"top1", "top5", "top10"}


def test_tokens_is_the_scored_row_count():
    """Score.tokens: the number of scored rows, the figure as_dict() and the CLI call "tokens"."""
    rng = np.random.default_rng(10)
    x, t = make_logits(rng, 300, 40, np.float32)
    t[rng.random(300) < 0.3] = -100
    s = fastce.score(x, t, top_k=(1, 5))
    assert s.tokens == s.count == ref.score(x, t).tokens == int(np.count_nonzero(t != -100))
    assert s.as_dict()["tokens"] == s.tokens
    half = fastce.score(x[:150], t[:150], top_k=(1, 5))
    assert (half + fastce.score(x[150:], t[150:], top_k=(1, 5))).tokens == s.tokens
    assert fastce.Score.empty().tokens == 0
    with pytest.raises(AttributeError):
        s.tokens = 1          # read-only: the count is the one field
    assert s.tokens == s.count


def test_empty_and_all_ignored():
    x = np.zeros((3, 4), np.float32)
    s = fastce.score(x, np.full(3, -100))
    assert s.count == 0 and s.nll_sum == 0.0
    assert math.isnan(s.mean_nll) and math.isnan(s.perplexity) and math.isnan(s.accuracy)
    e = fastce.score(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert e.count == 0


def test_score_linear_equals_score_of_logits(isa):
    rng = np.random.default_rng(8)
    N, H, V = 203, 48, 1001
    h = rng.standard_normal((N, H)).astype(np.float32)
    W = (rng.standard_normal((V, H)) * 0.3).astype(np.float32)
    b = rng.standard_normal(V).astype(np.float32)
    t = rng.integers(0, V, N)
    t[::9] = -100
    logits = h @ W.T + b
    direct = fastce.score(logits, t, top_k=(1, 10))
    for chunk in (1, 50, None):
        s = fastce.score_linear(h, W, t, linear_bias=b, top_k=(1, 10), chunk_size=chunk)
        assert s.count == direct.count
        # BLAS blocking may round a logit differently per chunk size: allow a tie or two to move
        for k in (1, 10):
            assert abs(s.correct[k] - direct.correct[k]) <= 2
        np.testing.assert_allclose(s.nll_sum, direct.nll_sum, rtol=1e-5)
    one = fastce.score_linear(h[3], W, t[3], linear_bias=b)
    assert one.count == 1


def test_score_allocates_no_logit_sized_memory():
    rng = np.random.default_rng(9)
    x, t = make_logits(rng, 512, 4096, np.float32)
    fastce.score(x, t)  # warm up
    tracemalloc.start()
    fastce.score(x, t, top_k=(1, 5))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 512 + 100_000, peak  # O(N) per-row results only; the logits are 8 MB


@pytest.mark.parametrize("args,kwargs,exc,msg", [
    ((np.zeros((2, 3, 4)), np.zeros((2, 4), np.int64)), {}, ValueError, r"logits must have shape \(N, V\) or \(V,\)"),
    ((np.zeros((2, 3)), np.zeros((2, 3))), {}, TypeError, "class-index targets"),
    ((np.zeros((2, 3)), np.array([0, 3])), {}, IndexError, "out of bounds"),
    ((np.zeros((2, 3)), np.array([0, 1, 2])), {}, ValueError, "target"),
    ((np.zeros((2, 3)), np.array([0, 1])), {"top_k": 0}, ValueError, "top_k values must be in"),
    ((np.zeros((2, 3)), np.array([0, 1])), {"top_k": (1, 4)}, ValueError, "top_k values must be in"),
    ((np.zeros((2, 3)), np.array([0, 1])), {"top_k": 1.5}, TypeError, "top_k must be an int"),
    ((np.zeros((2, 3)), np.array([0, 1])), {"top_k": ("a",)}, TypeError, "top_k values must be integers"),
    ((np.zeros((2, 3), np.int32), np.array([0, 1])), {}, TypeError, "floating"),
    ((np.zeros((2, 3)), np.array([0, 1])), {"softcap": -1.0}, ValueError, "softcap"),
])
def test_errors(args, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        fastce.score(*args, **kwargs)


def test_merge_errors():
    a = fastce.Score.empty((1, 5))
    with pytest.raises(ValueError, match="different top_k"):
        a + fastce.Score.empty((1,))
    with pytest.raises(TypeError, match="can only merge a Score"):
        a.merge(3)


def test_score_linear_errors():
    h = np.zeros((4, 8), np.float32)
    W = np.zeros((10, 8), np.float32)
    with pytest.raises(ValueError, match="target"):
        fastce.score_linear(h, W, np.zeros(5, np.int64))
    with pytest.raises(ValueError):
        fastce.score_linear(h, np.zeros((10, 9), np.float32), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="top_k"):
        fastce.score_linear(h, W, np.zeros(4, np.int64), top_k=11)
