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
              reduction="mean", seed=0, shape=None, scale=2.0):
    """Return dict(x, target, weight, ignore_index, grad_output, tshape)."""
    rng = np.random.default_rng(seed)
    shape = shape_for(shape_kind, C) if shape is None else shape
    tshape = target_shape_of(shape)
    x = make_logits(rng, shape, dtype, scale)
    if target_kind == "index":
        target, ignore_index = make_index_target(rng, tshape, C, ignore)
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
# torch oracle
# --------------------------------------------------------------------------

_torch = None


def get_torch():
    global _torch
    if _torch is None:
        torch = pytest.importorskip("torch")
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
