"""fastce.kl_div and kl_div_with_grad: KL(softmax(ref) || softmax(logits)) per row, one pass.

Against the float64 twin (reference.kl_div*) on every ISA, dtype, reduction and layout (2-D,
unbatched, K-dim; class counts that are not multiples of any vector width), against torch's
kl_div(log_softmax, log_softmax, log_target=True), by finite differences, and on the special
values the math defines (p = 0 -> 0, q = 0 < p -> inf, equal rows -> 0, NaN rows). Bad input
gets clear errors.
"""

import numpy as np
import pytest

import fastce
from _ce_testutil import fd_grad, ref

ml_dtypes = pytest.importorskip("ml_dtypes")  # CI installs it (the test extra)
BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16), BF16]
ids = lambda d: np.dtype(d).name  # noqa: E731
SHAPES = [(1, 1), (6, 7), (5, 33), (3, 1000), (2, 9001), (13,), (4, 5, 3), (2, 17, 3, 2)]
shape_id = lambda s: "x".join(map(str, s))  # noqa: E731


def pair(shape, dtype, ref_dtype=None, seed=0, spread=1.0):
    """(logits, ref_logits): the reference, and the model = reference + noise, both exactly
    representable in their dtypes."""
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal(shape) * 3).astype(ref_dtype or dtype)
    b = (a.astype(np.float64) + rng.standard_normal(shape) * spread).astype(dtype)
    return b, a


def tolerance(dtype, scale):
    """Float32 computes KL as a difference of terms of the logits' size: an absolute error of a
    few float32 ulps of the largest logit; half dtypes add their rounding of the result."""
    if dtype == np.float64:
        return dict(rtol=1e-10, atol=1e-12 * scale)
    rtol = {np.dtype(np.float32): 1e-5, np.dtype(np.float16): 2e-3, BF16: 1e-2}[np.dtype(dtype)]
    return dict(rtol=rtol, atol=4e-7 * scale)


def f64(x):
    return np.asarray(x, dtype=np.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_kl_div_matches_the_float64_twin(isa, dtype, shape, reduction):
    b, a = pair(shape, dtype, seed=len(shape) * 100 + shape[0])
    b0, a0 = b.copy(), a.copy()
    loss = fastce.kl_div(b, a, reduction=reduction)
    expect = ref.kl_div(f64(b), f64(a), reduction)
    assert loss.dtype == dtype and np.shape(loss) == np.shape(expect)
    scale = np.abs(f64(a)).max() + np.abs(f64(b)).max()
    if reduction == "sum":  # a sum of rows adds their errors
        scale *= b.size // (b.shape[1] if b.ndim > 1 else b.shape[0])
    np.testing.assert_allclose(f64(loss), expect, **tolerance(dtype, scale))
    np.testing.assert_array_equal(b, b0)  # inputs untouched
    np.testing.assert_array_equal(a, a0)


@pytest.mark.parametrize("dtype", DTYPES, ids=ids)
@pytest.mark.parametrize("shape", [(6, 7), (3, 1000), (13,), (2, 17, 3, 2)], ids=shape_id)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_kl_div_with_grad(isa, dtype, shape, reduction):
    b, a = pair(shape, dtype, seed=7 + shape[0])
    go = None
    if reduction == "none":
        loss_shape = () if len(shape) == 1 else shape[:1] + shape[2:]
        go = np.linspace(-1.0, 2.0, int(np.prod(loss_shape))).reshape(loss_shape)
    loss, grad = fastce.kl_div_with_grad(b, a, reduction=reduction, grad_output=go)
    assert grad.dtype == dtype and grad.shape == b.shape
    np.testing.assert_array_equal(f64(loss), f64(fastce.kl_div(b, a, reduction=reduction)))
    _, expect = ref.kl_div_with_grad(f64(b), f64(a), reduction, grad_output=go)
    t = {np.dtype(np.float64): dict(rtol=1e-10, atol=1e-14), np.dtype(np.float32): dict(rtol=1e-5, atol=1e-7),
         np.dtype(np.float16): dict(rtol=2e-3, atol=2e-5), BF16: dict(rtol=1e-2, atol=1e-4)}[np.dtype(dtype)]
    np.testing.assert_allclose(f64(grad), expect, **t)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_kl_gradient_by_finite_differences(reduction):
    b, a = pair((3, 6), np.float64, seed=5)
    go = np.array([0.5, -1.0, 2.0]) if reduction == "none" else 1.5

    def f(x):
        v = fastce.kl_div(x, a, reduction=reduction)
        return float(np.sum(v * go)) if reduction == "none" else float(v) * go

    g = fastce.kl_div_with_grad(b, a, reduction=reduction, grad_output=go)[1]
    np.testing.assert_allclose(g, fd_grad(f, b), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("shape", [(6, 7), (3, 1000), (2, 17, 3, 2), (9,)], ids=shape_id)
def test_kl_matches_torch(reduction, shape):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    b, a = pair(shape, np.float32, seed=11)
    ax = 0 if len(shape) == 1 else 1
    bt = torch.from_numpy(b).requires_grad_(True)
    rows = F.kl_div(F.log_softmax(bt, ax), F.log_softmax(torch.from_numpy(a), ax), log_target=True,
                    reduction="none").sum(ax)
    want = {"none": rows, "sum": rows.sum(), "mean": rows.mean()}[reduction]
    want.sum().backward()
    loss, grad = fastce.kl_div_with_grad(b, a, reduction=reduction)
    scale = np.abs(a).max() + np.abs(b).max()
    np.testing.assert_allclose(f64(loss), want.detach().numpy(), rtol=1e-5, atol=2e-6 * scale * rows.numel())
    np.testing.assert_allclose(grad, bt.grad.numpy(), rtol=1e-4, atol=1e-6)
    # torch's float32 error is the larger one: both against the float64 twin
    expect = ref.kl_div(f64(b), f64(a), reduction)
    assert np.max(np.abs(f64(loss) - expect)) <= max(np.max(np.abs(want.detach().numpy() - expect)), 1e-12) * 4


@pytest.mark.parametrize("dtypes", [(np.float16, np.float32), (BF16, np.float32), (np.float32, np.float64),
                                    (np.float64, BF16), (BF16, np.float16)], ids=lambda d: f"{ids(d[0])}-{ids(d[1])}")
@pytest.mark.parametrize("shape", [(5, 33), (4, 5, 3)], ids=shape_id)
def test_kl_two_dtypes(isa, dtypes, shape):
    """A float16 model against a float32 reference (and other pairs): computed in float64 if
    either is float64, else float32; results in that dtype, the gradient in logits' dtype."""
    b, a = pair(shape, dtypes[0], dtypes[1], seed=3)
    loss, grad = fastce.kl_div_with_grad(b, a, reduction="none")
    want_dtype = np.float64 if np.float64 in (np.dtype(dtypes[0]), np.dtype(dtypes[1])) else np.float32
    assert loss.dtype == want_dtype and grad.dtype == np.dtype(dtypes[0])
    np.testing.assert_allclose(loss, ref.kl_div(f64(b), f64(a), "none"), rtol=1e-5, atol=1e-5)
    g = ref.kl_div_with_grad(f64(b), f64(a), "none")[1]
    np.testing.assert_allclose(f64(grad), g, rtol=1e-2, atol=1e-3 if np.dtype(dtypes[0]).itemsize == 2 else 1e-6)


def test_kl_special_values(isa):
    """p_c = 0 contributes 0 (torch: NaN), q_c = 0 < p_c gives +inf, equal rows give exactly 0,
    a NaN or an all -inf row gives NaN; the other rows are unaffected."""
    a = np.array([[0.0, 1.0, -np.inf, 2.0],      # p_2 = 0, q_2 > 0
                  [0.0, 1.0, 2.0, 3.0],          # q_3 = 0 where p_3 > 0
                  [0.5, -1.0, 3.0, 0.25],        # equal to its model row
                  [0.0, np.nan, 1.0, 2.0],       # NaN
                  [-np.inf] * 4,                 # p undefined
                  [1.0, 2.0, 3.0, 4.0]],
                 dtype=np.float32)
    b = np.array([[0.3, 0.1, 5.0, 2.0],
                  [0.0, 1.0, 2.0, -np.inf],
                  [0.5, -1.0, 3.0, 0.25],
                  [0.0, 0.0, 1.0, 2.0],
                  [0.0, 1.0, 2.0, 3.0],
                  [4.0, 3.0, 2.0, 1.0]],
                 dtype=np.float32)
    for x, y in ((b, a), (b.astype(np.float64), a.astype(np.float64)), (b, a.astype(np.float64))):
        kl = fastce.kl_div(x, y, reduction="none")
        mask = a[0] > -np.inf
        la0 = a[0, mask] - np.log(np.exp(a[0, mask].astype(np.float64)).sum())
        lb0 = b[0] - np.log(np.exp(b[0].astype(np.float64)).sum())
        assert kl[0] == pytest.approx(float((np.exp(la0) * (la0 - lb0[mask])).sum()), rel=1e-5)
        assert kl[1] == np.inf
        assert kl[2] == 0.0
        assert np.isnan(kl[3]) and np.isnan(kl[4])
        assert kl[5] == pytest.approx(float(ref.kl_div(f64(b[5:]), f64(a[5:]), "sum")), rel=1e-5)
        grad = fastce.kl_div_with_grad(x, y, reduction="none")[1]
        assert np.all(np.isfinite(grad[[0, 1, 2, 5]])) and np.all(grad[2] == 0)
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    t = F.kl_div(F.log_softmax(torch.from_numpy(b[:1]), 1), F.log_softmax(torch.from_numpy(a[:1]), 1),
                 log_target=True, reduction="none").sum(1)
    assert torch.isnan(t).all()  # where fastce gives the math's value


def test_kl_out_in_place_and_layouts(isa):
    b, a = pair((8, 100), np.float32, seed=9)
    loss, g = fastce.kl_div_with_grad(b, a)
    y = b.copy()
    l2, g2 = fastce.kl_div_with_grad(y, a, out=y)  # the logits overwritten by their gradient
    assert g2 is y and l2 == loss
    np.testing.assert_array_equal(g2, g)
    out = np.empty((100, 8), np.float32).T  # a Fortran-ordered out: written through a temporary
    assert fastce.kl_div_with_grad(b, a, out=out)[1] is out
    np.testing.assert_array_equal(out, g)
    bs = np.repeat(b, 2, axis=1)[:, ::2]  # strided inputs: copied once
    np.testing.assert_array_equal(fastce.kl_div_with_grad(bs, np.asfortranarray(a))[1], g)
    bk, ak = pair((4, 5, 3), np.float16, seed=2)
    out = np.empty((4, 3, 5), np.float16).transpose(0, 2, 1)  # K-dim, non-contiguous out
    np.testing.assert_array_equal(fastce.kl_div_with_grad(bk, ak, out=out)[1],
                                  fastce.kl_div_with_grad(bk, ak)[1])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_kl_threads_give_the_same_bits(threads):
    b, a = pair((64, 3000), np.float32, seed=4)
    l1, g1 = fastce.kl_div_with_grad(b, a, reduction="none", num_threads=1)
    l2, g2 = fastce.kl_div_with_grad(b, a, reduction="none", num_threads=threads)
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(g1, g2)


def test_kl_empty_batch():
    b = np.zeros((0, 5), np.float32)
    assert np.isnan(fastce.kl_div(b, b))
    assert fastce.kl_div(b, b, reduction="sum") == 0.0
    loss, g = fastce.kl_div_with_grad(b, b, reduction="none")
    assert loss.shape == (0,) and g.shape == (0, 5)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: fastce.kl_div(np.zeros((2, 3)), np.zeros((2, 4))), ValueError, "same shape"),
    (lambda: fastce.kl_div(np.zeros((2, 3), np.int64), np.zeros((2, 3))), TypeError, "floating-point"),
    (lambda: fastce.kl_div(np.zeros((2, 3)), np.zeros((2, 3), np.int32)), TypeError, "ref_logits"),
    (lambda: fastce.kl_div(np.zeros((2, 3)), np.zeros((2, 3)), reduction="batchmean"), ValueError, "reduction"),
    (lambda: fastce.kl_div(np.zeros(()), np.zeros(())), ValueError, "at least 1 dimension"),
    (lambda: fastce.kl_div(np.zeros((2, 0)), np.zeros((2, 0))), ValueError, "no classes"),
    (lambda: fastce.kl_div(np.zeros((2, 3)), np.zeros((2, 3)), num_threads=0), ValueError, "num_threads"),
    (lambda: fastce.kl_div_with_grad(np.zeros((2, 3)), np.zeros((2, 3)), reduction="none",
                                     grad_output=np.ones(3)), ValueError, "broadcast"),
    (lambda: fastce.kl_div_with_grad(np.zeros((2, 3)), np.zeros((2, 3)), grad_output=np.ones(2)), ValueError,
     "scalar"),
    (lambda: fastce.kl_div_with_grad(np.zeros((2, 3)), np.zeros((2, 3)), out=np.zeros((2, 3), np.float32)),
     TypeError, "dtype"),
    (lambda: fastce.kl_div_with_grad(np.zeros((2, 3)), np.zeros((2, 3)), out=np.zeros((3, 2))), ValueError, "shape"),
])
def test_kl_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_kl_out_must_not_overlap_the_reference():
    a = np.zeros((2, 3))
    with pytest.raises(ValueError, match="overlaps ref_logits"):
        fastce.kl_div_with_grad(np.ones((2, 3)), a, out=a)
