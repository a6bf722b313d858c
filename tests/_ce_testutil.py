"""Shared helpers for the fastce test-suite (imported by the test modules).

conftest.py puts this directory on sys.path, so ``from _ce_testutil import ...``
works whatever pytest import mode is used.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import zlib

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REF_PATH = os.path.normpath(os.path.join(HERE, os.pardir, "src", "fastce", "reference.py"))


def _load_reference():
    """Load src/fastce/reference.py by path (pure NumPy, no fastce import).

    Loading by path means the oracle under test is always the file in this
    checkout, and the reference tests run even when the compiled part of
    fastce is not built.
    """
    name = "_fastce_reference_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REF_PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


ref = _load_reference()

DTYPES = (np.float32, np.float64)
SHAPE_KINDS = ("NC", "C", "NCd", "NCdd")
INT_DTYPES = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)


# --------------------------------------------------------------------------
# tolerances
# --------------------------------------------------------------------------

def tol(dtype, kind="loss"):
    """assert_allclose tolerances for a result of ``dtype``.

    float64: rtol 1e-10 / atol 1e-12; float32: rtol 2e-5 / atol 1e-6;
    float16 (computed in float32, rounded to float16): rtol 2e-3 / atol 1e-3
    for losses and 2e-4 for gradients.
    """
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return dict(rtol=1e-10, atol=1e-12)
    if dtype == np.float32:
        return dict(rtol=2e-5, atol=1e-6)
    if dtype == np.float16:
        return dict(rtol=2e-3, atol=1e-3 if kind == "loss" else 2e-4)
    raise AssertionError(dtype)


def fd_grad(f, x, h=1e-6):
    """Central finite differences of the scalar function f at x (float64), element by element."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (f(xp) - f(xm)) / (2 * h)
    return g


def assert_close(actual, expected, dtype, what, ctx="", kind="loss", scale=1.0):
    t = tol(dtype, kind)
    t = {k: v * scale for k, v in t.items()}
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != expected {e.shape}  [{ctx}]"
    np.testing.assert_allclose(a, e, equal_nan=True, err_msg=f"{what}  [{ctx}]", **t)


def close(actual, expected, rtol, atol=0.0, what=""):
    """assert_allclose in float64 with explicit tolerances (NaN == NaN)."""
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def close_loss(loss, r, xmax, what=""):
    """Per-element float32 losses: relative 1e-6, plus one float32 ulp of the largest logit
    involved (`xmax`, broadcast against the losses), since a loss near 0 is a difference of
    logits and float32 cannot do better (torch's own float32 error there is of that size or
    larger)."""
    loss = np.asarray(loss, np.float64)
    r = np.asarray(r, np.float64)
    err = np.abs(loss - r)
    bound = 1e-6 * np.abs(r) + np.asarray(xmax, np.float64) * 2.0**-23
    if not np.all(err <= bound):
        excess = np.broadcast_to(err - bound, err.shape)
        i = np.unravel_index(np.argmax(excess), err.shape)
        raise AssertionError(f"{what}: {np.count_nonzero(excess > 0)} losses off; worst at {i}: "
                             f"{loss[i]} vs reference {r[i]}, error {err[i]:.3g} > bound {np.broadcast_to(bound, err.shape)[i]:.3g}")


def check_loss_type(loss, dtype, reduction, target_shape, ctx=""):
    """Spec: loss dtype == input dtype; mean/sum -> NumPy scalar; none -> target shape."""
    dtype = np.dtype(dtype)
    if reduction == "none":
        assert isinstance(loss, (np.ndarray, np.generic)), f"type {type(loss)} [{ctx}]"
        assert np.shape(loss) == tuple(target_shape), f"shape {np.shape(loss)} [{ctx}]"
        if len(target_shape):
            assert isinstance(loss, np.ndarray), f"type {type(loss)} [{ctx}]"
    else:
        assert isinstance(loss, np.generic), \
            f"reduction={reduction!r} must return a NumPy scalar, got {type(loss)} [{ctx}]"
    assert loss.dtype == dtype, f"loss dtype {loss.dtype} != {dtype} [{ctx}]"


# --------------------------------------------------------------------------
# case generation
# --------------------------------------------------------------------------

def shape_id(shape):
    """Test id for a shape: (2, 5, 0) -> '2x5x0' (no spaces, usable with -k / --deselect)."""
    return "x".join(map(str, shape))


def seed_of(*parts):
    return zlib.crc32(repr(parts).encode())


def shape_for(shape_kind, C, small=False):
    n = 2 if (small or C >= 10000) else 5
    if shape_kind == "NC":
        return (n, C)
    if shape_kind == "C":
        return (C,)
    if shape_kind == "NCd":
        return (3, C, 2 if C >= 10000 else 4)
    if shape_kind == "NCdd":
        return (2, C, 3, 2) if C < 10000 else (1, C, 2, 2)
    raise AssertionError(shape_kind)


def class_axis(ndim):
    return 0 if ndim == 1 else 1


def target_shape_of(shape):
    cax = class_axis(len(shape))
    return shape[:cax] + shape[cax + 1:]


def make_logits(rng, shape, dtype, scale=2.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def make_prob_target(rng, shape, dtype):
    cax = class_axis(len(shape))
    y = rng.random(shape) ** 2
    y = y / y.sum(axis=cax, keepdims=True)
    return y.astype(dtype)


def make_index_target(rng, tshape, C, ignore, int_dtype=np.int64):
    """Index targets; ``ignore`` in ("none", "neg", "cls") -> (target, ignore_index).

    "none": default ignore_index=-100, nothing ignored.
    "neg":  ignore_index=-100 and about a third of the targets are -100
            (an unbatched 0-d target is ignored).
    "cls":  ignore_index is an in-range class (1, or 0 when C == 1) and some
            targets equal it (an unbatched target is *not* ignored, when C > 1).
    """
    t = rng.integers(0, C, size=tshape).astype(np.int64)
    ignore_index = -100
    if ignore == "neg":
        mask = rng.random(tshape) < 0.35
        if t.ndim == 0:
            mask = np.array(True)
        elif t.size:
            mask.flat[0] = True
            if t.size > 1:
                mask.flat[-1] = False
        t = np.where(mask, -100, t)
    elif ignore == "cls":
        ignore_index = 1 if C > 1 else 0
        if t.ndim == 0:
            t = np.array(2 % C if C > 2 else 0)
            if C == 2:
                t = np.array(0)
        elif t.size:
            mask = rng.random(tshape) < 0.35
            mask.flat[0] = True
            t = np.where(mask, ignore_index, t)
    elif ignore != "none":
        raise AssertionError(ignore)
    return np.asarray(t).astype(int_dtype), ignore_index


def make_case(shape_kind, C, dtype, target_kind, ignore="none", weighted=False,
              reduction="mean", seed=0, shape=None, scale=2.0, int_dtype=np.int64):
    """The test inputs of one case: dict(x, target, weight, ignore_index, grad_output, tshape).

    This is the one generator of test inputs (with make_layout for memory layouts): the logits
    (standard normal * scale), then the target (make_index_target or make_prob_target), then the
    weight (uniform in [0.25, 1.75), when `weighted`), then grad_output (standard normal of the
    target's shape for reduction 'none', else 0.75), all drawn in that order from one rng of
    `seed`: two cases of the same seed and shape have the same logits whatever their targets.
    `shape` overrides shape_for(shape_kind, C); C may then be None (read from the shape).
    """
    rng = np.random.default_rng(seed)
    shape = shape_for(shape_kind, C) if shape is None else tuple(shape)
    if C is None:
        C = shape[class_axis(len(shape))]
    tshape = target_shape_of(shape)
    x = make_logits(rng, shape, dtype, scale)
    if target_kind == "index":
        target, ignore_index = make_index_target(rng, tshape, C, ignore, int_dtype)
    else:
        target, ignore_index = make_prob_target(rng, shape, dtype), -100
    weight = (rng.random(C) * 1.5 + 0.25).astype(dtype) if weighted else None
    if reduction == "none":
        grad_output = (rng.standard_normal(tshape)).astype(dtype)
        grad_output = np.asarray(grad_output)
    else:
        grad_output = 0.75
    return dict(x=x, target=target, weight=weight, ignore_index=ignore_index,
                grad_output=grad_output, tshape=tshape)


# --------------------------------------------------------------------------
# memory layouts
# --------------------------------------------------------------------------

LAYOUTS = ("contiguous", "sliced", "strided", "negative", "fortran", "fortran_unaligned",
           "transposed", "permuted", "readonly", "memmap", "byteswapped", "unaligned")


def _poison(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.nan
    return np.iinfo(dtype).max          # an out-of-range class: reading it would raise


def applicable(layout, shape, dtype):
    """False where the layout is meaningless (it would just repeat 'contiguous')."""
    ndim = len(shape)
    size = int(np.prod(shape, dtype=np.int64))
    itemsize = np.dtype(dtype).itemsize
    if layout in ("sliced", "strided", "negative") and ndim == 0:
        return False
    if layout in ("fortran", "fortran_unaligned", "transposed") and ndim < 2:
        return False
    if layout == "permuted" and ndim < 3:
        return False
    if layout == "memmap" and size == 0:     # a zero-length file cannot be mapped
        return False
    if layout in ("byteswapped", "unaligned", "fortran_unaligned") and itemsize == 1:
        return False
    if layout in ("unaligned", "fortran_unaligned") and size == 0:  # NumPy calls every empty array aligned
        return False
    return True


def make_layout(a, layout, tmp_path=None, writeable=False, name="a", offset=1):
    """A view with a's shape, dtype (up to byte order) and values, in `layout` (see LAYOUTS).

    sliced: an interior window of a padded array; strided: every other element on every axis;
    negative: every axis reversed; transposed: axes 0 and 1 stored swapped; permuted: the class
    axis stored last; memmap: a file in tmp_path (writeable or read-only); byteswapped: the
    non-native byte order; unaligned / fortran_unaligned: `offset` bytes into a uint8 buffer.
    Padding holds NaN (floats) or an out-of-range class (integers), so a read outside the view
    shows.
    """
    a = np.asarray(a)
    if layout == "contiguous":
        return a.copy()
    if layout == "sliced":
        lo, hi = 1, 2
        big = np.full(tuple(s + lo + hi for s in a.shape), _poison(a.dtype), a.dtype)
        window = tuple(slice(lo, lo + s) for s in a.shape)
        big[window] = a
        return big[window]
    if layout == "strided":
        big = np.full(tuple(2 * s + 1 for s in a.shape), _poison(a.dtype), a.dtype)
        window = tuple(slice(1, 1 + 2 * s, 2) for s in a.shape)
        big[window] = a
        return big[window]
    if layout == "negative":
        return np.flip(np.flip(a).copy())
    if layout == "fortran":
        return np.asfortranarray(a.copy())
    if layout in ("unaligned", "fortran_unaligned"):
        buf = np.empty(a.nbytes + offset, np.uint8)
        v = np.ndarray(a.shape, a.dtype, buf, offset=offset, order="F" if layout == "fortran_unaligned" else "C")
        v[...] = a
        return v
    if layout == "transposed":
        return np.swapaxes(np.ascontiguousarray(np.swapaxes(a, 0, 1)), 0, 1)
    if layout == "permuted":
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 1, -1)), -1, 1)
    if layout == "readonly":
        c = a.copy()
        c.flags.writeable = False
        return c
    if layout == "memmap":
        fn = tmp_path / f"{name}.dat"
        m = np.memmap(fn, dtype=a.dtype, mode="w+", shape=a.shape)
        m[...] = a
        m.flush()
        del m
        return np.memmap(fn, dtype=a.dtype, mode="r+" if writeable else "r", shape=a.shape)
    if layout == "byteswapped":
        return a.astype(a.dtype.newbyteorder(">" if a.dtype.byteorder != ">" and np.little_endian else "<"))
    raise AssertionError(layout)


def check_layout(v, layout, shape):
    """The view really is in the layout it claims (so a layout cannot silently degrade)."""
    assert v.shape == tuple(shape)
    size = v.size
    if layout in ("sliced", "strided", "negative", "transposed", "permuted", "fortran",
                  "fortran_unaligned") and size > 1:
        nontrivial = sum(d > 1 for d in v.shape)
        if nontrivial > 1 or layout in ("strided", "negative"):
            assert not v.flags.c_contiguous, (layout, v.strides)
    if layout == "negative" and size > 1:
        assert any(s < 0 for s, d in zip(v.strides, v.shape) if d > 1)
    if layout == "readonly":
        assert not v.flags.writeable
    if layout == "memmap":
        assert isinstance(v, np.memmap)
    if layout == "byteswapped":
        assert not v.dtype.isnative
    if layout in ("unaligned", "fortran_unaligned"):
        assert not v.flags.aligned
    if layout in ("fortran", "fortran_unaligned"):
        assert v.flags.f_contiguous


# --------------------------------------------------------------------------
# torch oracle
# --------------------------------------------------------------------------

_torch = None


def get_torch():
    """torch (one thread), for the tests whose oracle it is.

    Where torch is not installed at all the test is skipped (set FASTCE_REQUIRE_TORCH=1 to make
    that a failure instead, as a CI that installs torch may); a torch that is installed but
    fails to import is an error, never a skip.
    """
    global _torch
    if _torch is None:
        if importlib.util.find_spec("torch") is None:
            if os.environ.get("FASTCE_REQUIRE_TORCH"):
                pytest.fail("torch is not installed (FASTCE_REQUIRE_TORCH is set)")
            pytest.skip("torch is not installed")
        import torch

        torch.set_num_threads(1)
        _torch = torch
    return _torch


def maybe_torch():
    """torch, or None where it is not installed (for tests whose main oracle is the reference)."""
    try:
        return get_torch()
    except pytest.skip.Exception:
        return None


def torch_tensor(a):
    torch = get_torch()
    return torch.from_numpy(np.array(a, copy=True, order="C"))


def torch_ce(x, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0,
             grad_output=None, compute_dtype=None):
    """torch.nn.functional.cross_entropy loss and autograd gradient, as NumPy.

    ``compute_dtype`` (e.g. np.float32 for float16 data) evaluates torch in that
    dtype; the results are then returned in that dtype too.
    """
    torch = get_torch()
    F = torch.nn.functional
    x = np.asarray(x)
    cd = np.dtype(compute_dtype) if compute_dtype is not None else x.dtype
    xt = torch_tensor(x.astype(cd)).requires_grad_(True)
    target = np.asarray(target)
    if np.issubdtype(target.dtype, np.integer):
        tt = torch_tensor(target.astype(np.int64))
    else:
        tt = torch_tensor(target.astype(cd))
    wt = None if weight is None else torch_tensor(np.asarray(weight).astype(cd))
    loss = F.cross_entropy(xt, tt, weight=wt, ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)
    if grad_output is None:
        go = torch.ones_like(loss)
    else:
        go = torch_tensor(np.asarray(grad_output, dtype=cd).reshape(loss.shape))
    loss.backward(go)
    return loss.detach().numpy().copy(), xt.grad.numpy().copy()


class Cache(dict):
    """Memo for oracle results shared by the ISA-parametrized copies of a test."""

    def get_or(self, key, fn):
        if key not in self:
            self[key] = fn()
        return self[key]
