"""fastce.linear_cross_entropy / linear_cross_entropy_with_grad / iter_logit_chunks.

Oracle: torch.nn.functional.linear_cross_entropy (options=None, i.e. logits = linear(x, W, b)
then cross_entropy) and torch autograd for the gradients. Shapes are small and odd (V = 37,
not a multiple of 16; N = 23 with chunks of 1, 5 (not dividing N) and the default), so the
suite runs in a few seconds. Memory tests use tracemalloc, which sees NumPy's allocations.

torch is imported by the oracle only (get_torch): without torch installed the parity tests skip
and the rest (errors, chunking, memory, the options passed through) still run; CI installs
torch, so there they run.
"""

from __future__ import annotations

import inspect
import itertools
import tracemalloc

import numpy as np
import pytest

import fastce
from _ce_testutil import get_torch, make_layout, torch_tensor
from fastce import _linear

N, H, V = 23, 8, 37
CHUNKS = [1, 5, None]
DTYPES = [np.float32, np.float64]
dtype_ids = lambda d: np.dtype(d).name  # noqa: E731


def tols(dtype, scale=1.0):
    # float32: torch's matmul (MKL/oneDNN) and NumPy's BLAS round the logits differently.
    t = dict(rtol=1e-10, atol=1e-12) if np.dtype(dtype) == np.float64 else dict(rtol=2e-4, atol=2e-5)
    return {k: v * scale for k, v in t.items()}


def close(a, e, dtype, what, scale=1.0):
    a, e = np.asarray(a, dtype=np.float64), np.asarray(e, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    np.testing.assert_allclose(a, e, equal_nan=True, err_msg=what, **tols(dtype, scale))


def make(dtype, n=N, h=H, v=V, bias=True, seed=0, kdim=()):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h)).astype(dtype)
    W = (rng.standard_normal((v, *kdim, h)) / np.sqrt(h) * 2).astype(dtype)
    b = rng.standard_normal((v, *kdim)).astype(dtype) if bias else None
    return rng, x, W, b


def index_target(rng, shape, v, ignore_every=0):
    t = rng.integers(0, v, size=shape)
    if ignore_every:
        t.reshape(-1)[::ignore_every] = -100
    return t


def prob_target(rng, shape, dtype):
    p = rng.random(shape) + 0.05
    return (p / p.sum(axis=1, keepdims=True)).astype(dtype)


def torch_lce(x, W, t, b=None, weight=None, reduction="mean", ignore_index=-100, label_smoothing=0.0,
              grad_output=None):
    """torch's loss and autograd gradients (input, weight, bias), as NumPy (skips the test where
    torch is not installed)."""
    torch = get_torch()

    def T(a):
        return None if a is None else torch_tensor(a)

    xt, Wt = T(x).requires_grad_(True), T(W).requires_grad_(True)
    bt = None if b is None else T(b).requires_grad_(True)
    prob = np.asarray(t).dtype.kind == "f"
    tt = T(t) if prob else T(np.asarray(t, dtype=np.int64))  # torch takes int64 class indices
    loss = torch.nn.functional.linear_cross_entropy(
        xt, Wt, tt, linear_bias=bt, weight=T(weight), reduction=reduction,
        ignore_index=None if prob else ignore_index, label_smoothing=label_smoothing)
    go = torch.ones_like(loss) if grad_output is None else torch.as_tensor(
        np.broadcast_to(grad_output, loss.shape).copy(), dtype=loss.dtype)
    loss.backward(go)
    return (loss.detach().numpy(), xt.grad.numpy(), Wt.grad.numpy(),
            None if b is None else bt.grad.numpy())


def check_all(dtype, x, W, t, b=None, grad_output=None, scale=1.0, **kw):
    """fastce forward and forward+grad against torch, for every chunk size in CHUNKS."""
    want = torch_lce(x, W, t, b, grad_output=grad_output, **kw)
    for cs in CHUNKS:
        ctx = f"chunk_size={cs} {kw}"
        loss = fastce.linear_cross_entropy(x, W, t, linear_bias=b, chunk_size=cs, **kw)
        got = fastce.linear_cross_entropy_with_grad(x, W, t, linear_bias=b, chunk_size=cs,
                                                    grad_output=grad_output, **kw)
        assert len(got) == 4
        close(loss, want[0], dtype, "loss " + ctx, scale)
        close(got[0], want[0], dtype, "with_grad loss " + ctx, scale)
        for name, g, e in zip(("grad_input", "grad_linear_weight", "grad_linear_bias"), got[1:], want[1:]):
            if e is None:
                assert g is None
                continue
            assert g.dtype == np.dtype(dtype) and g.shape == e.shape, name
            close(g, e, dtype, f"{name} {ctx}", scale)
        if kw.get("reduction", "mean") != "none":
            assert isinstance(loss, np.generic) and loss.dtype == np.dtype(dtype)
        else:
            assert loss.dtype == np.dtype(dtype)


# --------------------------------------------------------------------------
# parity with torch: loss and gradients
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_index_targets_vs_torch(dtype, reduction, bias, weighted, eps):
    rng, x, W, b = make(dtype, bias=bias, seed=1)
    t = index_target(rng, N, V, ignore_every=4)  # some rows ignored
    w = rng.uniform(0.5, 1.5, V).astype(dtype) if weighted else None
    check_all(dtype, x, W, t, b, weight=w, reduction=reduction, label_smoothing=eps)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_prob_targets_vs_torch(dtype, reduction, weighted, eps):
    rng, x, W, b = make(dtype, seed=2)
    p = prob_target(rng, (N, V), dtype)
    w = rng.uniform(0.5, 1.5, V).astype(dtype) if weighted else None
    check_all(dtype, x, W, p, b, weight=w, reduction=reduction, label_smoothing=eps)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ignore_index_custom_and_int_dtypes(dtype, reduction):
    rng, x, W, b = make(dtype, seed=3)
    t = index_target(rng, N, V).astype(np.int32)
    t[[0, 7, 8, 22]] = 5
    check_all(dtype, x, W, t, b, ignore_index=5, reduction=reduction, label_smoothing=0.1)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kind", ["index", "prob"])
def test_unbatched_vs_torch(dtype, reduction, kind):
    rng, x, W, b = make(dtype, seed=4)
    x1 = x[3]
    t = np.int64(11) if kind == "index" else prob_target(rng, (1, V), dtype)[0]
    want = torch_lce(x1, W, np.asarray(t), b, reduction=reduction, label_smoothing=0.1)
    loss = fastce.linear_cross_entropy(x1, W, t, linear_bias=b, reduction=reduction, label_smoothing=0.1)
    got = fastce.linear_cross_entropy_with_grad(x1, W, t, linear_bias=b, reduction=reduction,
                                                label_smoothing=0.1)
    assert np.shape(loss) == () and got[1].shape == (H,)
    close(loss, want[0], dtype, "loss")
    for g, e in zip(got[1:], want[1:]):
        close(g, e, dtype, "grad")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kind", ["index", "prob"])
def test_kdim_weight_vs_torch(dtype, reduction, kind):
    """torch's K-dim form: linear_weight (V, d1, H) gives logits (N, V, d1)."""
    rng, x, W, b = make(dtype, v=11, seed=5, kdim=(3,))
    if kind == "index":
        t = index_target(rng, (N, 3), 11, ignore_every=5)
    else:
        t = prob_target(rng, (N, 11, 3), dtype)
    check_all(dtype, x, W, t, b, reduction=reduction, label_smoothing=0.1)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_other_shapes_vs_torch(dtype):
    for n, h, v in [(1, 1, 1), (2, 3, 1), (17, 5, 16), (33, 7, 100), (9, 64, 3), (4, 0, 5)]:
        rng, x, W, b = make(dtype, n, h, v, seed=n + v)
        t = index_target(rng, n, v)
        check_all(dtype, x, W, t, b, reduction="mean")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_noncontiguous_and_fortran_operands(dtype):
    rng, x, W, b = make(dtype, h=16, seed=6)
    t = index_target(rng, N, V, ignore_every=6)
    want = torch_lce(x, W, t, b)
    L = make_layout
    variants = {
        "x fortran": (L(x, "fortran"), W, b),
        "x strided": (L(x, "strided"), W, b),
        "W fortran": (x, L(W, "fortran"), b),
        "W strided": (x, L(W, "strided"), b),
        "W transposed view": (x, L(W, "transposed"), b),
        "b strided": (x, W, L(b, "strided")),
        "byteswapped": (L(x, "byteswapped"), L(W, "byteswapped"), b),
    }
    for name, (xv, Wv, bv) in variants.items():
        for cs in (1, 5):
            got = fastce.linear_cross_entropy_with_grad(xv, Wv, t, linear_bias=bv, chunk_size=cs)
            for g, e, what in zip(got, want, ("loss", "gx", "gW", "gb")):
                close(g, e, dtype, f"{name} {what} chunk_size={cs}")


# --------------------------------------------------------------------------
# grad_output, all ignored, empty
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_grad_output_forms(dtype):
    rng, x, W, b = make(dtype, seed=7)
    t = index_target(rng, N, V, ignore_every=3)
    for reduction, go in [("mean", -1.75), ("mean", np.array(2.5, dtype)), ("sum", np.float32(0.5)),
                          ("none", rng.standard_normal(N)), ("none", np.float64(3.0)),
                          ("none", rng.integers(-3, 3, N))]:
        check_all(dtype, x, W, t, b, reduction=reduction, grad_output=go)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_ignored(dtype, reduction):
    rng, x, W, b = make(dtype, seed=8)
    t = np.full(N, -100)
    check_all(dtype, x, W, t, b, reduction=reduction)
    loss, gx, gW, gb = fastce.linear_cross_entropy_with_grad(x, W, t, linear_bias=b, reduction=reduction)
    if reduction == "mean":
        assert np.isnan(loss)
    assert not gx.any() and not gW.any() and not gb.any()


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch(dtype, reduction):
    rng, x, W, b = make(dtype, n=0, seed=9)
    t = np.zeros(0, np.int64)
    want = torch_lce(x, W, t, b, reduction=reduction)
    loss = fastce.linear_cross_entropy(x, W, t, linear_bias=b, reduction=reduction)
    got = fastce.linear_cross_entropy_with_grad(x, W, t, linear_bias=b, reduction=reduction)
    close(loss, want[0], dtype, "loss")
    for g, e in zip(got, want):
        close(g, e, dtype, "empty")


def test_zero_weights_mean_is_nan_like_torch():
    rng, x, W, b = make(np.float64, seed=10)
    t = index_target(rng, N, V)
    check_all(np.float64, x, W, t, b, weight=np.zeros(V), label_smoothing=0.1)


def test_num_threads_and_ignore_index_none():
    rng, x, W, b = make(np.float64, seed=11)
    t = index_target(rng, N, V, ignore_every=3)
    ref = fastce.linear_cross_entropy_with_grad(x, W, t, linear_bias=b)
    for kw in (dict(num_threads=1), dict(num_threads=2), dict(ignore_index=None)):
        got = fastce.linear_cross_entropy_with_grad(x, W, t, linear_bias=b, chunk_size=4, **kw)
        for g, e in zip(got, ref):
            close(g, e, np.float64, str(kw))


# --------------------------------------------------------------------------
# z_loss / softcap / return_lse: passed through to fastce.cross_entropy per chunk
# --------------------------------------------------------------------------

def _has(fn, name):
    return name in inspect.signature(fn).parameters


LANDED = all(_has(f, n) for f in (fastce.cross_entropy, fastce.cross_entropy_with_grad)
             for n in ("z_loss", "softcap", "return_lse"))


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_zloss_softcap_lse_pass_through(dtype, reduction):
    """Chunked == fastce.cross_entropy(_with_grad) on the full logits with the same options
    (whose own tests check them against their formulas); without them in this build, TypeError."""
    rng, x, W, b = make(dtype, seed=12)
    t = index_target(rng, N, V, ignore_every=4)
    opts = dict(z_loss=1e-2, softcap=3.0, return_lse=True)
    if not LANDED:
        for k, v in opts.items():
            with pytest.raises(TypeError, match=k):
                fastce.linear_cross_entropy(x, W, t, **{k: v})
            with pytest.raises(TypeError, match=k):
                fastce.linear_cross_entropy_with_grad(x, W, t, **{k: v})
        return
    logits = x @ W.T + b
    kw = dict(reduction=reduction, label_smoothing=0.1, **opts)
    e_loss, e_lse = fastce.cross_entropy(logits, t, **kw)
    e_loss2, G, e_lse2 = fastce.cross_entropy_with_grad(logits, t, **kw)
    for cs in CHUNKS:
        loss, lse = fastce.linear_cross_entropy(x, W, t, linear_bias=b, chunk_size=cs, **kw)
        close(loss, e_loss, dtype, "loss")
        close(lse, e_lse, dtype, "lse")
        got = fastce.linear_cross_entropy_with_grad(x, W, t, linear_bias=b, chunk_size=cs, **kw)
        assert len(got) == 5
        close(got[0], e_loss2, dtype, "loss")
        close(got[1], G @ W, dtype, "grad_input", 10)
        close(got[2], G.T @ x, dtype, "grad_weight", 10)
        close(got[3], G.sum(0), dtype, "grad_bias", 10)
        close(got[4], e_lse2, dtype, "lse")


@pytest.mark.skipif(not LANDED, reason="z_loss/softcap/return_lse not in this build's cross_entropy")
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_lse_shapes_unbatched_and_kdim(reduction):
    rng, x, W, b = make(np.float64, seed=20)
    kw = dict(reduction=reduction, z_loss=1e-3, softcap=5.0, return_lse=True)
    loss, lse = fastce.linear_cross_entropy(x[2], W, np.int64(4), linear_bias=b, **kw)
    e_loss, e_lse = fastce.cross_entropy(x[2] @ W.T + b, np.int64(4), **kw)
    assert lse.shape == () and np.shape(loss) == ()
    close(loss, e_loss, np.float64, "unbatched loss")
    close(lse, e_lse, np.float64, "unbatched lse")
    *_, lse2 = fastce.linear_cross_entropy_with_grad(x[2], W, np.int64(4), linear_bias=b, **kw)
    close(lse2, e_lse, np.float64, "unbatched lse (with_grad)")
    rng, x3, W3, b3 = make(np.float64, v=7, seed=21, kdim=(2,))
    t3 = index_target(rng, (N, 2), 7, ignore_every=3)
    logits = np.einsum("nh,vdh->nvd", x3, W3) + b3
    e_loss, e_lse = fastce.cross_entropy(logits, t3, **kw)
    for cs in (1, 5, None):
        loss, lse = fastce.linear_cross_entropy(x3, W3, t3, linear_bias=b3, chunk_size=cs, **kw)
        assert lse.shape == (N, 2)
        close(loss, e_loss, np.float64, "kdim loss")
        close(lse, e_lse, np.float64, "kdim lse")


# --------------------------------------------------------------------------
# errors, inputs unchanged
# --------------------------------------------------------------------------

def _error_cases():
    x = np.zeros((4, 3), np.float32)
    W = np.zeros((5, 3), np.float32)
    t = np.array([0, 1, 2, 3])
    return [
        (dict(input=np.zeros((2, 4, 3), np.float32)), ValueError, "dimensionality 1 or 2"),
        (dict(input=np.float32(1.0)), ValueError, "dimensionality 1 or 2"),
        (dict(linear_weight=np.zeros(3, np.float32)), ValueError, "at least 2"),
        (dict(linear_weight=np.zeros((5, 4), np.float32)), ValueError, "in_features"),
        (dict(linear_weight=np.zeros((0, 3), np.float32)), ValueError, "no classes"),
        (dict(linear_weight=np.zeros((5, 3))), TypeError, "same dtype"),
        (dict(input=x.astype(np.float16), linear_weight=W.astype(np.float16)), TypeError, "float16"),
        (dict(input=x.astype(np.int64)), TypeError, "floating-point"),
        (dict(linear_bias=np.zeros(4, np.float32)), ValueError, "linear_bias shape"),
        (dict(linear_bias=np.zeros((5, 1), np.float32)), ValueError, "linear_bias shape"),
        (dict(linear_bias=np.zeros(5)), TypeError, "linear_bias"),
        (dict(target=np.array([0, 1, 2])), ValueError, "target of shape"),
        (dict(target=np.array([0, 1, 2, 5])), IndexError, "Target 5 is out of bounds"),
        (dict(target=np.array([0, 1, 2, -1])), IndexError, "Target -1 is out of bounds"),
        (dict(target=np.zeros(4, np.float32)), TypeError, "integers"),
        (dict(target=np.zeros((4, 5), np.int64)), TypeError, "floating point"),
        (dict(target=np.full((4, 5), 0.2, np.float32), ignore_index=1), ValueError, "ignore_index"),
        (dict(weight=np.ones(4, np.float32)), ValueError, "length C = 5"),
        (dict(reduction="avg"), ValueError, "reduction"),
        (dict(label_smoothing=1.5), ValueError, "label_smoothing"),
        (dict(ignore_index=1.5), TypeError, "ignore_index"),
        (dict(chunk_size=0), ValueError, "chunk_size"),
        (dict(chunk_size=-3), ValueError, "chunk_size"),
        (dict(chunk_size=2.0), TypeError, "chunk_size"),
        (dict(chunk_size=True), TypeError, "chunk_size"),
        (dict(num_threads=0), ValueError, "num_threads"),
        (dict(input=np.zeros(3, np.float32), linear_weight=np.zeros((5, 2, 3), np.float32),
              target=np.array(1)), ValueError, "batched"),
    ], dict(input=x, linear_weight=W, target=t)


@pytest.mark.parametrize("fn", ["linear_cross_entropy", "linear_cross_entropy_with_grad"])
def test_errors(fn):
    cases, base = _error_cases()
    f = getattr(fastce, fn)
    for change, exc, match in cases:
        kw = {**base, **change}
        with pytest.raises(exc, match=match):
            f(kw.pop("input"), kw.pop("linear_weight"), kw.pop("target"), **kw)


def test_grad_output_errors():
    x, W, t = np.zeros((4, 3)), np.zeros((5, 3)), np.array([0, 1, 2, 3])
    f = fastce.linear_cross_entropy_with_grad
    with pytest.raises(ValueError, match="scalar"):
        f(x, W, t, grad_output=np.ones(4))
    with pytest.raises(ValueError, match="loss's shape"):
        f(x, W, t, reduction="none", grad_output=np.ones(3))
    with pytest.raises(TypeError, match="real"):
        f(x, W, t, reduction="none", grad_output=np.array(["a"] * 4))
    with pytest.raises(TypeError, match="real"):
        f(x, W, t, grad_output=1j)


@pytest.mark.parametrize("kind", ["index", "prob"])
def test_inputs_unchanged(kind):
    rng, x, W, b = make(np.float32, seed=13)
    t = index_target(rng, N, V, ignore_every=3) if kind == "index" else prob_target(rng, (N, V), np.float32)
    w = rng.uniform(0.5, 1.5, V).astype(np.float32)
    go = rng.standard_normal(N)
    args = [x, W, t, b, w, go]
    for a in args:
        a.flags.writeable = False  # any write raises
    copies = [a.copy() for a in args]
    for cs in (1, 5, None):
        fastce.linear_cross_entropy(x, W, t, linear_bias=b, weight=w, chunk_size=cs, reduction="none")
        fastce.linear_cross_entropy_with_grad(x, W, t, linear_bias=b, weight=w, chunk_size=cs,
                                              reduction="none", grad_output=go)
    for a, c in zip(args, copies):
        np.testing.assert_array_equal(a, c)


# --------------------------------------------------------------------------
# chunking: iter_logit_chunks, default chunk size
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_iter_logit_chunks(dtype):
    rng, x, W, b = make(dtype, seed=14)
    full = x @ W.T + b
    for rows in (1, 4, 5, N, 100, None):
        seen, addrs = [], set()
        for r0, r1, z in fastce.iter_logit_chunks(x, W, b, rows):
            assert z.shape == (r1 - r0, V) and z.flags.c_contiguous and z.dtype == np.dtype(dtype)
            assert r0 == (seen[-1][1] if seen else 0)
            close(z, full[r0:r1], dtype, f"rows={rows} [{r0}:{r1}]", 5)
            addrs.add(z.__array_interface__["data"][0])
            seen.append((r0, r1))
        assert seen[-1][1] == N
        assert len(addrs) == 1  # one buffer, reused
    # unbatched: one row; K-dim: rows of V*D logits
    (r0, r1, z), = fastce.iter_logit_chunks(x[0], W)
    close(z[0], x[0] @ W.T, dtype, "unbatched", 5)
    rng, x3, W3, b3 = make(dtype, v=4, seed=15, kdim=(2, 3))
    zs = [z.copy() for _, _, z in fastce.iter_logit_chunks(x3, W3, b3, chunk_rows=6)]
    full3 = np.einsum("nh,vdeh->nvde", x3, W3) + b3
    close(np.concatenate(zs).reshape(full3.shape), full3, dtype, "kdim", 5)
    assert list(fastce.iter_logit_chunks(x[:0], W)) == []


def test_default_chunk_rows():
    f = _linear.default_chunk_rows
    assert f(0, 10, 4) == 1 and f(5, 10, 4) == 5
    assert f(10, 10**9, 8) == 1  # one row more than the budget: still one row
    # The LM-head target: N=4096, V=32000 float32 -> buffer <= 10% of the 524 MB logits.
    rows = f(4096, 32000, 4)
    assert rows * 32000 * 4 <= 0.10 * 4096 * 32000 * 4 and 4096 % rows == 0
    rows = f(4097, 1000, 4, chunk_bytes=4000 * 100)  # balanced: no 1-row remainder chunk
    assert -(-4097 // rows) == -(-4097 // 100) and rows <= 100


# --------------------------------------------------------------------------
# memory (tracemalloc traces NumPy's data allocations)
# --------------------------------------------------------------------------

# Constant slack: NumPy's ufunc iterator allocates 8192-element buffers for `z += bias`
# (64 KiB in float64) whatever the sizes; plus small Python-side objects.
SLACK = 96 << 10


def _peak(fn):
    fn()  # warm-up: imports (SciPy BLAS) and caches are not the call's memory
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_forward_memory_is_one_chunk(dtype, reduction):
    n, h, v, cs = 1024, 64, 2000, 16
    rng, x, W, b = make(dtype, n, h, v, seed=16)
    t = index_target(rng, n, v)
    isz = np.dtype(dtype).itemsize
    peak = _peak(lambda: fastce.linear_cross_entropy(x, W, t, linear_bias=b, chunk_size=cs,
                                                     reduction=reduction, label_smoothing=0.1))
    buf, full = cs * v * isz, n * v * isz
    bound = buf + 48 * n + 16 * v + SLACK  # the buffer + O(N) per-row values + O(V) + slack
    assert peak <= bound, (peak, bound)
    assert peak < full / 10


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_grad_memory_no_vh_temporary(dtype):
    n, h, v, cs = 1024, 64, 2000, 16
    rng, x, W, b = make(dtype, n, h, v, seed=17)
    t = index_target(rng, n, v)
    isz = np.dtype(dtype).itemsize
    results = (n * h + v * h + v) * isz  # grad_input, grad_linear_weight, grad_linear_bias
    peak = _peak(lambda: fastce.linear_cross_entropy_with_grad(x, W, t, linear_bias=b, chunk_size=cs))
    extra = peak - results
    buf = cs * v * isz
    assert extra <= buf + 48 * n + 16 * v + SLACK, (extra, buf)
    assert extra < v * h * isz  # no V x H temporary (e.g. a copy made by SciPy's gemm or G.T @ x)
    assert extra < n * v * isz / 10  # nowhere near the full logits


def test_fuzz_small_shapes_vs_torch():
    """A few dozen random small problems, every option mixed, float64 (tight tolerances)."""
    rng = np.random.default_rng(19)
    for i in range(24):
        n, h, v = int(rng.integers(1, 12)), int(rng.integers(1, 9)), int(rng.integers(1, 40))
        _, x, W, b = make(np.float64, n, h, v, bias=bool(i % 2), seed=100 + i)
        if i % 3 == 0:
            t = prob_target(rng, (n, v), np.float64)
        else:
            t = index_target(rng, n, v, ignore_every=int(rng.integers(0, 4)))
        kw = dict(reduction=["mean", "sum", "none"][i % 3], label_smoothing=float(rng.choice([0, 0.05])),
                  weight=rng.uniform(0.1, 2, v) if i % 4 == 1 else None)
        want = torch_lce(x, W, t, b, **kw)
        cs = int(rng.integers(1, n + 2))
        got = fastce.linear_cross_entropy_with_grad(x, W, t, linear_bias=b, chunk_size=cs, **kw)
        for g, e, what in itertools.zip_longest(got, want, ("loss", "gx", "gW", "gb")):
            if e is None:
                assert g is None
            else:
                close(g, e, np.float64, f"case {i} {what} n={n} h={h} v={v} cs={cs} {kw}")


def test_options_beyond_torch_accept_0d_arrays_like_cross_entropy():
    """z_loss and softcap given as 0-d arrays (as cross_entropy takes them) work in the linear
    variants too, and give the same loss as plain floats; a non-real grad_output is refused."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, H)).astype(np.float64)
    W = rng.standard_normal((V, H)).astype(np.float64)
    t = rng.integers(0, V, N)
    plain = fastce.linear_cross_entropy(x, W, t, z_loss=0.1, softcap=5.0)
    arrays = fastce.linear_cross_entropy(x, W, t, z_loss=np.array(0.1), softcap=np.array(5.0))
    assert plain == arrays
    g_plain = fastce.linear_cross_entropy_with_grad(x, W, t, z_loss=0.1)
    g_arrays = fastce.linear_cross_entropy_with_grad(x, W, t, z_loss=np.array(0.1))
    for a, b in zip(g_plain, g_arrays):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="grad_output"):
        fastce.linear_cross_entropy_with_grad(x, W, t, grad_output="2")


# The plain forward's options, for the tests of its vocabulary-chunked and pipelined paths.
FORWARD_OPTS = [dict(), dict(reduction="sum", use_bias=True), dict(reduction="none", weighted=True),
                dict(z_loss=1e-2, weighted=True, use_bias=True)]
FORWARD_OPT_IDS = ["mean", "sum-bias", "none-weight", "zloss-weight-bias"]


def _forward_case(dtype, opts, seed):
    """x, W, t (every 4th ignored) and the keyword options of a small plain-forward case."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, H)).astype(dtype)
    W = rng.standard_normal((V, H)).astype(dtype)
    t = rng.integers(0, V, N)
    t[::4] = -100
    kw = dict(reduction=opts.get("reduction", "mean"), z_loss=opts.get("z_loss", 0.0))
    if opts.get("use_bias"):
        kw["linear_bias"] = rng.standard_normal(V).astype(dtype)
    if opts.get("weighted"):
        kw["weight"] = rng.uniform(0.5, 1.5, V).astype(dtype)
    return x, W, t, kw


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("opts", FORWARD_OPTS, ids=FORWARD_OPT_IDS)
def test_vocab_chunked_forward_matches_row_chunks(monkeypatch, dtype, opts):
    """The forward over column chunks of the vocabulary (W read once; each row's lse merged with
    logaddexp) gives the row-chunked forward's loss, to rounding; forced here on a small head by
    shrinking the chunk budget (4 column chunks of 10, 10, 10 and 7 classes)."""
    x, W, t, kw = _forward_case(dtype, opts, seed=21)
    expected = fastce.linear_cross_entropy(x, W, t, chunk_size=5, **kw)  # row chunks
    calls = []
    real = _linear._vocab_chunked_row_losses
    monkeypatch.setattr(_linear, "LOSS_CHUNK_BYTES", N * np.dtype(dtype).itemsize * 10)
    monkeypatch.setattr(_linear, "MIN_VOCAB_CHUNK", 1)
    monkeypatch.setattr(_linear, "default_chunk_rows", lambda *a, **k: 10)
    monkeypatch.setattr(_linear, "_vocab_chunked_row_losses", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = fastce.linear_cross_entropy(x, W, t, **kw)
    assert calls, "the vocabulary-chunked path did not run"
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(expected, np.float64), rtol=rtol, atol=1e-12)
    assert np.asarray(got).dtype == np.dtype(dtype)
    # the paths it must leave to the row chunks: smoothing, softcap, return_lse, chunk_size
    for extra in (dict(label_smoothing=0.1), dict(softcap=3.0), dict(return_lse=True), dict(chunk_size=7)):
        calls.clear()
        fastce.linear_cross_entropy(x, W, t, **kw, **extra)
        assert not calls, extra


def _force_pipelines(monkeypatch, n, cols):
    """Make the pipelined forward run on the small test head: n pipelines (whatever NumPy's BLAS
    has), chunks of `cols` classes; returns the list its calls are recorded in."""
    from fastce import _blas_threads

    calls = []
    real = _linear._pipelined_row_losses
    monkeypatch.setattr(_linear, "MIN_PIPELINE_ROWS", 1)
    monkeypatch.setattr(_linear, "MIN_VOCAB_CHUNK", 1)
    monkeypatch.setattr(_linear, "LOSS_CHUNK_BYTES", n * N * 8 * cols)  # float64 width; float32 gets 2x
    monkeypatch.setattr(_blas_threads, "blas_threads", lambda: n)
    monkeypatch.setattr(_linear, "_pipelined_row_losses", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    return calls


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("opts", FORWARD_OPTS, ids=FORWARD_OPT_IDS)
def test_pipelined_forward_matches_row_chunks(monkeypatch, dtype, n, opts):
    """The pipelined forward (n threads, each over its own vocabulary columns in chunks, their
    statistics merged) gives the row-chunked forward's loss to rounding, for every option it
    serves; forced on a small head (V = 37: ranges of 12-13 or 18-19 classes, 5-class chunks)."""
    from fastce import _blas_threads

    x, W, t, kw = _forward_case(dtype, opts, seed=22)
    expected = fastce.linear_cross_entropy(x, W, t, chunk_size=5, **kw)  # row chunks
    before = _blas_threads.blas_threads()
    calls = _force_pipelines(monkeypatch, n, cols=5)
    got = fastce.linear_cross_entropy(x, W, t, **kw)
    assert calls == [n], "the pipelined path did not run"
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(expected, np.float64), rtol=rtol, atol=1e-12)
    assert np.asarray(got).dtype == np.dtype(dtype)
    monkeypatch.undo()
    assert _blas_threads.blas_threads() == before  # the one-thread section ended


def test_pipelined_forward_only_where_it_serves(monkeypatch):
    """The paths the pipelines leave alone: options whose per-row sums need whole rows, an
    explicit chunk_size or num_threads, fewer rows than MIN_PIPELINE_ROWS, so many rows that a
    pipeline's chunk would be narrower than MIN_VOCAB_CHUNK, a one-thread BLAS, a K-dim head."""
    from fastce import _blas_threads

    x, W, t, kw = _forward_case(np.float64, {}, seed=23)
    calls = _force_pipelines(monkeypatch, 2, cols=5)
    for extra in (dict(label_smoothing=0.1), dict(softcap=3.0), dict(return_lse=True), dict(chunk_size=7),
                  dict(num_threads=1), dict(num_threads=2)):
        fastce.linear_cross_entropy(x, W, t, **kw, **extra)
        assert not calls, extra
    monkeypatch.setattr(_linear, "MIN_PIPELINE_ROWS", N + 1)
    fastce.linear_cross_entropy(x, W, t, **kw)
    monkeypatch.setattr(_linear, "MIN_PIPELINE_ROWS", 1)
    monkeypatch.setattr(_linear, "MIN_VOCAB_CHUNK", 6)  # each pipeline's 5-column chunk: too narrow
    fastce.linear_cross_entropy(x, W, t, **kw)
    monkeypatch.setattr(_linear, "MIN_VOCAB_CHUNK", 1)
    monkeypatch.setattr(_blas_threads, "blas_threads", lambda: 1)
    fastce.linear_cross_entropy(x, W, t, **kw)
    assert not calls
    fastce.linear_cross_entropy(x, W[:, None, :].repeat(2, axis=1), np.zeros((N, 2), np.int64))  # K-dim head
    assert not calls


def test_pipelined_forward_error_in_a_pipeline(monkeypatch):
    """An error in any pipeline reaches the caller, after every pipeline has stopped, and the
    BLAS's thread count is restored."""
    from fastce import _blas_threads

    x, W, t, kw = _forward_case(np.float64, {}, seed=24)
    before = _blas_threads.blas_threads()
    _force_pipelines(monkeypatch, 3, cols=5)
    real = _linear._vocab_range_stats

    def failing(head, tg, z_loss, v_lo, v_hi, buf, nthreads):
        if v_lo > 0:
            raise MemoryError(f"pipeline at {v_lo}")
        return real(head, tg, z_loss, v_lo, v_hi, buf, nthreads)

    monkeypatch.setattr(_linear, "_vocab_range_stats", failing)
    with pytest.raises(MemoryError, match="pipeline at"):
        fastce.linear_cross_entropy(x, W, t, **kw)
    monkeypatch.undo()
    assert _blas_threads.blas_threads() == before


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
@pytest.mark.parametrize("n", [1, 2, 3, 16])
def test_column_chunks_are_an_odd_number_of_whole_lines(dtype, n):
    """The column chunks' width: within the n buffers' LOSS_CHUNK_BYTES, whole 64-byte lines per
    row and an odd number of them (rows 4 KiB apart share cache sets), at most 64 columns and a
    line short of the budget."""
    itemsize = np.dtype(dtype).itemsize
    for N in (1, 1000, 1024, 4096, 5000, 29127, 65536, 200_000):
        head = _linear._Head(np.zeros((N, 4), dtype), np.zeros((8, 4), dtype), None)
        cols = _linear._chunk_cols(head, n)
        assert n * N * cols * itemsize <= _linear.LOSS_CHUNK_BYTES
        if cols >= 64:
            lines, rest = divmod(cols * itemsize, 64)
            assert rest == 0 and lines % 2 == 1, (N, cols)
            assert n * N * (cols + 64 + 64 // itemsize) * itemsize > _linear.LOSS_CHUNK_BYTES, (N, cols)
