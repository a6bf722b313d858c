"""Hypothesis property tests: fastce vs the float64 reference on random cases.

Example counts come from the "fastce" profile in conftest.py (env
FASTCE_HYPOTHESIS_EXAMPLES, default 80; deadline None; derandomized unless
FASTCE_HYPOTHESIS_RANDOM is set).
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, note  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fastce  # noqa: E402
from _ce_testutil import INT_DTYPES, assert_close, check_loss_type, ref  # noqa: E402

# class counts around SIMD widths (4/8/16 lanes, unrolled x2/x4) plus random ones
CLASS_COUNTS = st.one_of(st.integers(1, 70),
                         st.sampled_from([1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64,
                                          65, 127, 128, 129, 255, 257]))


LAYOUTS = ["C", "fortran", "strided", "negative", "byteswapped"]


def with_layout(a, layout):
    """The same values as `a` in another memory layout (a view where possible)."""
    a = np.asarray(a)
    if a.ndim == 0 or layout == "C":
        return a
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "strided":  # every other element of a buffer twice as long on the last axis
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if layout == "negative":  # negative strides on every axis
        rev = a[(slice(None, None, -1),) * a.ndim].copy()
        return rev[(slice(None, None, -1),) * a.ndim]
    return a.astype(a.dtype.newbyteorder(">" if a.dtype.byteorder != ">" else "<"))


@st.composite
def ce_cases(draw):
    kind = draw(st.sampled_from(["C", "NC", "NCd", "NCdd"]))
    C = draw(CLASS_COUNTS)
    N = draw(st.integers(0, 6) if kind != "C" else st.just(None))
    if kind == "C":
        shape = (C,)
    elif kind == "NC":
        shape = (N, C)
    elif kind == "NCd":
        shape = (N, C, draw(st.integers(1, 5)))
    else:
        shape = (N, C, draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16]))
    target_kind = draw(st.sampled_from(["index", "prob"]))
    int_dtype = draw(st.sampled_from(INT_DTYPES))
    weighted = draw(st.booleans())
    reduction = draw(st.sampled_from(["none", "mean", "sum"]))
    eps = draw(st.one_of(st.sampled_from([0.0, 1.0, 0.1]), st.floats(0.0, 1.0)))
    ignore_frac = draw(st.sampled_from([0.0, 0.3, 1.0]))
    unsigned = np.issubdtype(int_dtype, np.unsignedinteger)
    ignore_index = draw(st.sampled_from([0, 1, 3] if unsigned else [-100, -1, 0, 1, 3]))
    scale = draw(st.sampled_from([0.01, 1.0, 5.0, 30.0]))
    shift = draw(st.sampled_from([0.0, 20.0, -50.0]))
    use_go = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))

    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale + shift).astype(dtype)
    cax = 0 if len(shape) == 1 else 1
    tshape = shape[:cax] + shape[cax + 1:]
    if target_kind == "index":
        if C > 127 and int_dtype in (np.int8, np.uint8):
            int_dtype = np.int16
        t = rng.integers(0, C, tshape)      # valid classes (may equal ignore_index)
        mask = rng.random(tshape) < ignore_frac
        t = np.asarray(np.where(mask, ignore_index, t)).astype(int_dtype)
    else:
        t = rng.random(shape) ** 3
        with np.errstate(invalid="ignore", divide="ignore"):
            t = t / t.sum(axis=cax, keepdims=True) if draw(st.booleans()) else t
        t = t.astype(dtype)
        ignore_index = -100
    w = (rng.random(C) * 2).astype(dtype) if weighted else None
    if use_go:
        go = (rng.standard_normal(tshape).astype(dtype) if reduction == "none"
              else float(rng.standard_normal()))
    else:
        go = None
    x = with_layout(x, draw(st.sampled_from(LAYOUTS)))
    t = with_layout(t, draw(st.sampled_from(LAYOUTS)))
    return dict(x=x, t=t, w=w, ignore_index=ignore_index, reduction=reduction, eps=eps,
                go=go, dtype=dtype, tshape=tshape)


@given(case=ce_cases())
def test_cross_entropy_matches_reference(isa, case):
    dtype = case["dtype"]
    kw = dict(weight=case["w"], ignore_index=case["ignore_index"], reduction=case["reduction"],
              label_smoothing=case["eps"])
    ctx = (f"isa={isa} shape={case['x'].shape} dtype={np.dtype(dtype).name} "
           f"target dtype={case['t'].dtype} {kw | {'weight': case['w'] is not None}}")
    note(ctx)
    r_loss, r_grad = ref.cross_entropy_with_grad(case["x"], case["t"], grad_output=case["go"], **kw)
    loss = fastce.cross_entropy(case["x"], case["t"], **kw)
    loss2, grad = fastce.cross_entropy_with_grad(case["x"], case["t"], grad_output=case["go"], **kw)
    check_loss_type(loss, dtype, case["reduction"], case["tshape"], ctx)
    check_loss_type(loss2, dtype, case["reduction"], case["tshape"], ctx)
    assert grad.shape == case["x"].shape and grad.dtype == np.dtype(dtype), ctx
    # float16 results are float32 results rounded to float16: if the exact value
    # overflows float16 both sides must say inf
    assert_close(loss, r_loss.astype(dtype) if dtype == np.float16 else r_loss, dtype,
                 "loss", ctx)
    assert_close(loss2, r_loss.astype(dtype) if dtype == np.float16 else r_loss, dtype,
                 "with_grad loss", ctx)
    assert_close(grad, r_grad, dtype, "grad", ctx, kind="grad")
    # in place gives the same numbers
    xi = case["x"].copy(order="K")  # same layout, so the same kernel path as out=None
    loss3, grad3 = fastce.cross_entropy_with_grad(xi, case["t"], grad_output=case["go"], out=xi,
                                                  **kw)
    assert grad3 is xi
    assert_close(loss3, loss2, dtype, "in-place loss vs out=None", ctx, scale=0.01)
    assert_close(xi, grad, dtype, "in-place grad vs out=None", ctx, kind="grad", scale=0.01)


@st.composite
def softmax_cases(draw):
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=ndim, max_size=ndim)))
    if draw(st.booleans()):
        shape = shape[:-1] + (draw(CLASS_COUNTS),)
    axis = draw(st.integers(-ndim, ndim - 1))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    scale = draw(st.sampled_from([0.01, 1.0, 10.0, 80.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    x = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)
    return x, axis


@given(case=softmax_cases())
def test_softmax_family_matches_reference(isa, case):
    x, axis = case
    ctx = f"isa={isa} shape={x.shape} axis={axis} dtype={x.dtype}"
    note(ctx)
    assert_close(fastce.log_softmax(x, axis=axis), ref.log_softmax(x, axis), x.dtype,
                 "log_softmax", ctx)
    assert_close(fastce.softmax(x, axis=axis), ref.softmax(x, axis), x.dtype, "softmax", ctx,
                 kind="grad")
    assert_close(fastce.logsumexp(x, axis=axis), ref.logsumexp(x, axis), x.dtype, "logsumexp",
                 ctx)
