"""float16 and bfloat16 logits: read and written by the kernels in their own dtype, computed in
float32.

The oracle is exact: widening is exact, and the kernels then run the float32 code on the same
values, so every float32 result (loss rows, lse, rank) is the float32 path's on
x.astype(float32), and every 2-byte output (gradient, softmax, log_softmax) is the float32
path's output rounded once to nearest even. The float32 path itself is tested against the
float64 reference elsewhere; here the losses are also checked against it directly.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastce
from fastce import _kernels
from _ce_testutil import make_case, ref

ml_dtypes = pytest.importorskip("ml_dtypes")  # CI installs it (the test extra)
HALF = [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]
ids = lambda d: np.dtype(d).name  # noqa: E731


def narrowed(a32, dtype):
    out = np.empty(a32.shape, dtype=dtype)
    _kernels.narrow(np.ascontiguousarray(a32, dtype=np.float32), out)
    return out


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    np.testing.assert_array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


SHAPES = [(1, 1), (7, 5), (33, 17), (64, 100), (5, 1000), (3, 9001), (4, 3, 7), (2, 21, 9, 5), (13,)]


@pytest.mark.parametrize("dtype", HALF, ids=ids)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("opts", [dict(), dict(reduction="sum", label_smoothing=0.1),
                                  dict(reduction="none", weighted=True), dict(z_loss=1e-3, ignore="neg")],
                         ids=["mean", "sum-ls", "none-w", "zloss-ignore"])
def test_half_grad_is_the_float32_grad_rounded_once(isa, dtype, shape, opts):
    opts = dict(opts)
    weighted = opts.pop("weighted", False)
    ignore = opts.pop("ignore", "none")
    c = make_case(None, None, np.float32, "index", ignore=ignore, weighted=weighted,
                  reduction=opts.get("reduction", "mean"), shape=shape, seed=len(shape) * 31 + shape[0])
    x = c["x"].astype(dtype)
    x32 = x.astype(np.float32)
    kw = dict(weight=c["weight"], ignore_index=c["ignore_index"], **opts)
    loss, grad, lse = fastce.cross_entropy_with_grad(x, c["target"], return_lse=True, **kw)
    loss32, grad32, lse32 = fastce.cross_entropy_with_grad(x32, c["target"], return_lse=True, **kw)
    assert grad.dtype == dtype and loss.dtype == dtype
    same_bits(grad, narrowed(grad32, dtype))
    # the per-row float64 results are the float32 path's (rounded to the input's dtype at the end)
    rows = fastce.cross_entropy(x, c["target"], **{**kw, "reduction": "none"})
    rows32 = fastce.cross_entropy(x32, c["target"], **{**kw, "reduction": "none"})
    np.testing.assert_allclose(rows.astype(np.float64), rows32.astype(np.float64), rtol=8e-3, atol=1e-6)
    np.testing.assert_allclose(lse.astype(np.float64), lse32.astype(np.float64), rtol=8e-3, atol=1e-3)
    # and the loss is the float64 reference's of the same (widened) logits, to the dtype's rounding
    r = ref.cross_entropy(x32.astype(np.float64), c["target"], weight=None if c["weight"] is None
                          else c["weight"].astype(np.float64), ignore_index=c["ignore_index"],
                          reduction=opts.get("reduction", "mean"), label_smoothing=opts.get("label_smoothing", 0.0),
                          **({"z_loss": opts["z_loss"]} if "z_loss" in opts else {}))
    rtol = 1e-3 if dtype == np.float16 else 8e-3
    np.testing.assert_allclose(np.asarray(loss, np.float64), np.asarray(r, np.float64), rtol=rtol, atol=1e-5)


@pytest.mark.parametrize("dtype", HALF, ids=ids)
def test_half_in_place_and_non_contiguous(isa, dtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((40, 300)) * 4).astype(dtype)
    t = rng.integers(0, 300, 40)
    _, g = fastce.cross_entropy_with_grad(x, t)
    y = x.copy()
    _, g2 = fastce.cross_entropy_with_grad(y, t, out=y)  # the logits overwritten by their gradient
    assert g2 is y
    same_bits(g2, g)
    xs = np.repeat(x, 2, axis=1)[:, ::2]  # a strided view: copied once, in its own dtype
    same_bits(fastce.cross_entropy_with_grad(xs, t)[1], g)
    # Fortran order is read in place by the strided-class (tile) path: another summation order,
    # so the float32 values may differ by rounding, and the 2-byte ones by one unit at most
    gf = fastce.cross_entropy_with_grad(np.asfortranarray(x), t)[1].astype(np.float32)
    np.testing.assert_allclose(gf, g.astype(np.float32), rtol=2.0 ** -7, atol=1e-7)


@pytest.mark.parametrize("dtype", HALF, ids=ids)
@pytest.mark.parametrize("func", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("shape,axis", [((9, 37), -1), ((4, 21, 5), 1), ((3000,), 0)])
def test_half_softmax_family(isa, dtype, func, shape, axis):
    x = (np.random.default_rng(5).standard_normal(shape) * 3).astype(dtype)
    out = getattr(fastce, func)(x, axis=axis)
    out32 = getattr(fastce, func)(x.astype(np.float32), axis=axis)
    assert out.dtype == dtype
    if func == "logsumexp":  # a float64 row value rounded to the dtype
        np.testing.assert_allclose(out.astype(np.float64), out32.astype(np.float64), rtol=8e-3)
    else:
        same_bits(out, narrowed(out32, dtype))


@pytest.mark.parametrize("dtype", HALF, ids=ids)
def test_half_score_is_the_float32_score(isa, dtype):
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((200, 501)) * 2).astype(dtype)  # 2-byte logits tie often
    t = rng.integers(0, 501, 200)
    t[::7] = -100
    s = fastce.score(x, t, top_k=(1, 5))
    s32 = fastce.score(x.astype(np.float32), t, top_k=(1, 5))
    assert (s.nll_sum, s.tokens, s.correct) == (s32.nll_sum, s32.tokens, s32.correct)
    r = ref.score(x.astype(np.float64), t, top_k=(1, 5))
    assert s.correct == r.correct and s.tokens == r.tokens


@pytest.mark.parametrize("dtype", HALF, ids=ids)
def test_half_non_finite_and_tiny_gradients(isa, dtype):
    x = np.zeros((5, 40), np.float32)
    x[0, 3] = np.nan
    x[1, 7] = np.inf
    x[2, :] = -np.inf
    x[2, 5] = 1.0
    x[3] = np.linspace(-30, 30, 40)  # gradients from ~1e-26 (0 in 2 bytes, or subnormal) to ~1
    x[4, 1] = 60000.0 if dtype == np.float16 else 1e30
    xh = x.astype(dtype)
    t = np.array([0, 1, 5, 39, 1])
    loss, grad = fastce.cross_entropy_with_grad(xh, t, reduction="none")
    loss32, grad32 = fastce.cross_entropy_with_grad(xh.astype(np.float32), t, reduction="none")
    same_bits(grad, narrowed(grad32, dtype))
    assert np.isnan(loss[0]) and np.isnan(loss[1]) and loss[2] == 0 and loss[4] == 0
    assert np.all(np.isnan(grad[0].astype(np.float32)))


@pytest.mark.parametrize("dtype", HALF, ids=ids)
def test_half_prob_targets_and_softcap_take_float32_blocks(isa, dtype):
    rng = np.random.default_rng(13)
    x = (rng.standard_normal((6, 11)) * 3).astype(dtype)
    p = rng.random((6, 11)).astype(dtype)
    for kw in (dict(target=p), dict(target=rng.integers(0, 11, 6), softcap=2.0)):
        loss, grad = fastce.cross_entropy_with_grad(x, **kw)
        kw32 = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == dtype else v) for k, v in kw.items()}
        loss32, grad32 = fastce.cross_entropy_with_grad(x.astype(np.float32), **kw32)
        assert grad.dtype == dtype
        same_bits(grad, narrowed(grad32, dtype))
        np.testing.assert_allclose(float(loss), float(loss32), rtol=8e-3)


@pytest.mark.parametrize("dtype", HALF, ids=ids)
def test_narrow_rounds_to_nearest_even(dtype):
    """_kernels.narrow (and so the scalar path's conversions) against NumPy / ml_dtypes."""
    rng = np.random.default_rng(17)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    f = bits.view(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, 65504.0, 65519.996, 65520.0, 2**-24, 2**-25,
                        2**-25 * 1.0000001, 3 * 2**-26, 6.1e-5, 1.0 + 2**-11, 1.0 + 3 * 2**-11,
                        1.0 + 2**-8, 1.0 + 3 * 2**-8, 3.4e38, 1e-40], np.float32)
    f = np.concatenate([f, special, -special, (rng.standard_normal(10000) * 1e-6).astype(np.float32)])
    mine = narrowed(f, dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        theirs = f.astype(dtype)
    finite = ~np.isnan(f)
    same_bits(mine[finite], theirs[finite])
    assert np.all(np.isnan(mine[~finite].astype(np.float32)))


def test_bfloat16_is_recognized_without_importing_ml_dtypes():
    """By name and size: a 2-byte void dtype that is not bfloat16 is refused clearly."""
    with pytest.raises(TypeError, match="bfloat16"):
        fastce.cross_entropy(np.zeros((2, 3), dtype="V2"), np.array([0, 1]))
    bad = np.zeros((2, 3), np.float16)
    with pytest.raises(TypeError, match="dtype"):
        fastce.cross_entropy_with_grad(bad, np.array([0, 1]), out=np.zeros((2, 3), np.float64))


@pytest.mark.parametrize("dtype", HALF, ids=ids)
@pytest.mark.parametrize("shape,order", [((7, 5), "C"), ((64, 100), "C"), ((64, 100), "F"), ((3, 9001), "C"),
                                         ((3, 9001), "F"), ((2, 21, 9, 5), "C"), ((13,), "C")],
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v)
def test_half_grad_into_float32_out(isa, dtype, shape, order):
    """out= float32 for 2-byte logits: the float32 path's gradient itself (not rounded to the
    input's dtype), the same loss, and the input untouched."""
    c = make_case(None, None, np.float32, "index", ignore="neg", weighted=True, reduction="sum",
                  shape=shape, seed=shape[0] * 7 + 1)
    x = c["x"].astype(dtype)
    x0 = x.copy()
    kw = dict(weight=c["weight"], ignore_index=c["ignore_index"], reduction="sum", label_smoothing=0.05,
              num_threads=1)
    out = np.full(shape, np.nan, dtype=np.float32, order=order)
    loss, g = fastce.cross_entropy_with_grad(x, c["target"], out=out, **kw)
    assert g is out and loss.dtype == dtype
    loss32, g32 = fastce.cross_entropy_with_grad(x.astype(np.float32), c["target"], **kw)
    same_bits(g, g32)
    same_bits(loss, fastce.cross_entropy_with_grad(x, c["target"], **kw)[0])
    same_bits(x, x0)


@pytest.mark.parametrize("dtype", HALF, ids=ids)
def test_half_out_dtype_refused(dtype):
    x = np.zeros((4, 6), dtype=dtype)
    t = np.zeros(4, np.int64)
    with pytest.raises(TypeError, match=rf"out must have the input's dtype {np.dtype(dtype).name} \(or float32\)"):
        fastce.cross_entropy_with_grad(x, t, out=np.empty((4, 6), np.float64))
    with pytest.raises(TypeError, match="out must have the input's dtype float32, got float16"):
        fastce.cross_entropy_with_grad(x.astype(np.float32), t, out=np.empty((4, 6), np.float16))
    with pytest.raises(TypeError, match="out must have the input's dtype float64, got float32"):
        fastce.cross_entropy_with_grad(x.astype(np.float64), t, out=np.empty((4, 6), np.float32))
    with pytest.raises(ValueError, match="out overlaps input"):  # 2 bytes per logit under 4
        buf = np.zeros(48, np.float32)
        fastce.cross_entropy_with_grad(buf[:12].view(dtype).reshape(4, 6), t, out=buf[:24].reshape(4, 6))
