"""fastce.cross_entropy / cross_entropy_with_grad vs the reference and vs torch.

Option grid: class count × shape kind × target kind × ignore × weight ×
reduction × label_smoothing × dtype, each run under every available ISA; 32000 classes, and
C = 262144 (few long rows, split across threads).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastce
from _ce_testutil import (INT_DTYPES, SHAPE_KINDS, Cache, assert_close, check_loss_type, close,
                          get_torch, make_case, maybe_torch, ref, seed_of, torch_ce)

CLASS_COUNTS = (1, 7, 17, 423)

_CASES = Cache()
_REF = Cache()
_TORCH = Cache()


def _grid(class_counts, shape_kinds, dtypes, epss=(0.0, 0.1, 1.0), ignores=("none", "neg", "cls")):
    for C, shape_kind, tk, ign, w, red, eps, dt in itertools.product(
            class_counts, shape_kinds, ("index", "prob"), ignores, (False, True),
            ("none", "mean", "sum"), epss, dtypes):
        if tk == "prob" and ign != "none":
            continue   # ignore_index does not apply to probability targets
        yield pytest.param(C, shape_kind, tk, ign, w, red, eps, dt,
                           id=f"C{C}-{shape_kind}-{tk}-ign_{ign}-w{int(w)}-{red}-ls{eps}-"
                              f"{np.dtype(dt).name}")


GRID_ARGS = "C,shape_kind,target_kind,ignore,weighted,reduction,eps,dtype"
MAIN_GRID = list(_grid(CLASS_COUNTS, SHAPE_KINDS, (np.float32, np.float64)))
BIG_C_GRID = list(_grid((32000,), ("NC", "C", "NCd"), (np.float32, np.float64), (0.0, 0.1),
                        ("none", "neg")))
F16_GRID = list(_grid((7, 423), ("NC", "C", "NCd"), (np.float16,), (0.0, 0.1), ("none", "neg")))


def _case(key):
    C, shape_kind, target_kind, ignore, weighted, reduction, eps, dtype = key
    return _CASES.get_or(key, lambda: make_case(shape_kind, C, dtype, target_kind, ignore,
                                                weighted, reduction, seed=seed_of(*key)))


def _kw(case, reduction, eps):
    return dict(weight=case["weight"], ignore_index=case["ignore_index"], reduction=reduction,
                label_smoothing=eps)


def _ctx(isa, case, key):
    C, shape_kind, target_kind, ignore, weighted, reduction, eps, dtype = key
    return (f"isa={isa} shape={case['x'].shape} dtype={np.dtype(dtype).name} "
            f"target={target_kind} ignore_index={case['ignore_index']} ({ignore}) "
            f"weight={'yes' if weighted else 'no'} reduction={reduction} label_smoothing={eps}")


def _ref_results(key):
    def compute():
        case = _case(key)
        kw = _kw(case, key[5], key[6])
        loss, grad = ref.cross_entropy_with_grad(case["x"], case["target"],
                                                 grad_output=case["grad_output"], **kw)
        _, grad1 = ref.cross_entropy_with_grad(case["x"], case["target"], **kw)
        return loss, grad, grad1
    return _REF.get_or(key, compute)


def _torch_results(key, compute_dtype=None):
    def compute():
        case = _case(key)
        return torch_ce(case["x"], case["target"], grad_output=case["grad_output"],
                        compute_dtype=compute_dtype, **_kw(case, key[5], key[6]))
    return _TORCH.get_or((key, compute_dtype), compute)


def _run_fastce(isa, key):
    case = _case(key)
    reduction, eps, dtype = key[5], key[6], key[7]
    kw = _kw(case, reduction, eps)
    ctx = _ctx(isa, case, key)
    x0 = case["x"].copy()
    loss = fastce.cross_entropy(case["x"], case["target"], **kw)
    loss_g, grad = fastce.cross_entropy_with_grad(case["x"], case["target"],
                                                  grad_output=case["grad_output"], **kw)
    loss_d, grad_d = fastce.cross_entropy_with_grad(case["x"], case["target"], **kw)
    np.testing.assert_array_equal(case["x"], x0, err_msg=f"input was modified [{ctx}]")
    for l_ in (loss, loss_g, loss_d):
        check_loss_type(l_, dtype, reduction, case["tshape"], ctx)
    for g_ in (grad, grad_d):
        assert isinstance(g_, np.ndarray), ctx
        assert g_.shape == case["x"].shape and g_.dtype == np.dtype(dtype), \
            f"grad {g_.shape}/{g_.dtype} [{ctx}]"
    return case, ctx, loss, loss_g, grad, loss_d, grad_d


def _check_vs_reference(isa, key, scale=1.0):
    case, ctx, loss, loss_g, grad, loss_d, grad_d = _run_fastce(isa, key)
    dtype = key[7]
    r_loss, r_grad, r_grad1 = _ref_results(key)
    assert_close(loss, r_loss, dtype, "cross_entropy loss vs reference", ctx, scale=scale)
    assert_close(loss_g, r_loss, dtype, "cross_entropy_with_grad loss vs reference", ctx,
                 scale=scale)
    assert_close(loss_d, r_loss, dtype, "cross_entropy_with_grad(grad_output=None) loss", ctx,
                 scale=scale)
    assert_close(grad, r_grad, dtype, "grad vs reference", ctx, kind="grad", scale=scale)
    assert_close(grad_d, r_grad1, dtype, "grad (grad_output=None) vs reference", ctx,
                 kind="grad", scale=scale)


def _check_vs_torch(isa, key, compute_dtype=None, scale=1.0):
    case, ctx, loss, loss_g, grad, _, _ = _run_fastce(isa, key)
    dtype = key[7]
    t_loss, t_grad = _torch_results(key, compute_dtype)
    if compute_dtype is not None:   # torch evaluated in float32, rounded like fastce does
        t_loss, t_grad = t_loss.astype(dtype), t_grad.astype(dtype)
    assert_close(loss, t_loss, dtype, "cross_entropy loss vs torch", ctx, scale=scale)
    assert_close(loss_g, t_loss, dtype, "cross_entropy_with_grad loss vs torch", ctx, scale=scale)
    assert_close(grad, t_grad, dtype, "grad vs torch", ctx, kind="grad", scale=scale)


@pytest.mark.parametrize(GRID_ARGS, MAIN_GRID)
def test_vs_reference(isa, C, shape_kind, target_kind, ignore, weighted, reduction, eps, dtype):
    _check_vs_reference(isa, (C, shape_kind, target_kind, ignore, weighted, reduction, eps, dtype))


@pytest.mark.parametrize(GRID_ARGS, MAIN_GRID)
def test_vs_torch(isa, C, shape_kind, target_kind, ignore, weighted, reduction, eps, dtype):
    get_torch()
    _check_vs_torch(isa, (C, shape_kind, target_kind, ignore, weighted, reduction, eps, dtype))


@pytest.mark.parametrize(GRID_ARGS, BIG_C_GRID)
def test_32000_classes_vs_reference(isa, C, shape_kind, target_kind, ignore, weighted,
                                    reduction, eps, dtype):
    _check_vs_reference(isa, (C, shape_kind, target_kind, ignore, weighted, reduction, eps, dtype))


@pytest.mark.parametrize(GRID_ARGS, BIG_C_GRID)
def test_32000_classes_vs_torch(isa, C, shape_kind, target_kind, ignore, weighted,
                                reduction, eps, dtype):
    """torch's own float32 path sums 32000 class terms in float32 (its label-smoothing
    gradient is off by up to ~3e-4 relative), so float32 is checked tightly against
    torch evaluated in float64 and loosely against torch's float32 result."""
    get_torch()
    key = (C, shape_kind, target_kind, ignore, weighted, reduction, eps, dtype)
    if dtype == np.float32:
        _check_vs_torch(isa, key, compute_dtype=np.float64)
        _check_vs_torch(isa, key, scale=50.0)
    else:
        _check_vs_torch(isa, key)


@pytest.mark.parametrize(GRID_ARGS, F16_GRID)
def test_float16_vs_reference(isa, C, shape_kind, target_kind, ignore, weighted,
                              reduction, eps, dtype):
    _check_vs_reference(isa, (C, shape_kind, target_kind, ignore, weighted, reduction, eps, dtype))


@pytest.mark.parametrize(GRID_ARGS, F16_GRID)
def test_float16_vs_torch(isa, C, shape_kind, target_kind, ignore, weighted,
                          reduction, eps, dtype):
    """float16 is computed in float32 and rounded: compare with torch in float32, rounded."""
    get_torch()
    key = (C, shape_kind, target_kind, ignore, weighted, reduction, eps, dtype)
    _check_vs_torch(isa, key, compute_dtype=np.float32)


@pytest.mark.parametrize(GRID_ARGS, F16_GRID[::4])
def test_float16_vs_torch_native_half(isa, C, shape_kind, target_kind, ignore, weighted,
                                      reduction, eps, dtype):
    """torch's own float16 path rounds intermediates to half: loose tolerance."""
    get_torch()
    key = (C, shape_kind, target_kind, ignore, weighted, reduction, eps, dtype)
    _check_vs_torch(isa, key, scale=10.0)


# --------------------------------------------------------------------------
# C = 262144
# --------------------------------------------------------------------------

_C_REF = {}


@pytest.mark.parametrize("shape", [(262144,), (1, 262144), (3, 262144), (8, 262144)],
                         ids=["unbatched", "N1", "N3", "N8"])
@pytest.mark.parametrize("num_threads", [1, 2])
def test_c_262144(isa, shape, num_threads):
    C = 262144
    rng = np.random.default_rng(262144)
    x64 = rng.standard_normal(shape) * 4
    x = x64.astype(np.float32)
    t = rng.integers(0, C, shape[:1]) if len(shape) == 2 else np.array(C - 1)
    w = (rng.random(C) + 0.5).astype(np.float32)
    ctx = f"isa={isa} shape={shape} threads={num_threads}"
    for kw in (dict(), dict(weight=w, label_smoothing=0.1)):
        for red in ("none", "mean"):
            loss, grad = fastce.cross_entropy_with_grad(x, t, reduction=red, num_threads=num_threads, **kw)
            key = (shape, red, len(kw))
            if key not in _C_REF:
                _C_REF[key] = ref.cross_entropy_with_grad(x, t, reduction=red, **kw)
            r_loss, r_grad = _C_REF[key]
            close(loss, r_loss, 1e-6, what=f"loss {red} {list(kw)} [{ctx}]")
            close(grad, r_grad, 1e-5, 1e-10, what=f"grad {red} {list(kw)} [{ctx}]")
    close(fastce.logsumexp(x, num_threads=num_threads), ref.logsumexp(x, -1), 1e-6, what=f"logsumexp [{ctx}]")
    # float64 at float64 accuracy
    loss = fastce.cross_entropy(x64, t, reduction="none", label_smoothing=0.1, num_threads=num_threads)
    close(loss, ref.cross_entropy(x64, t, reduction="none", label_smoothing=0.1), 1e-12, what=f"float64 [{ctx}]")


# --------------------------------------------------------------------------
# index target dtypes
# --------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("int_dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_index_target_dtypes(isa, int_dtype, reduction, dtype):
    rng = np.random.default_rng(seed_of("tdt", int_dtype, reduction))
    C = 200
    x = rng.standard_normal((7, C)).astype(dtype)
    signed = np.issubdtype(int_dtype, np.signedinteger)
    if int_dtype == np.int8:
        vals, ignore_index = [120, 3, 0, 127, -100, 9, -100], -100
    elif signed:
        vals, ignore_index = [156, 3, 0, 199, -100, 9, -100], -100
    else:
        # 156 == (uint8)(-100): must be class 156, never "ignored" by ignore_index=-100
        vals, ignore_index = [156, 3, 0, 199, 5, 9, 5], 5
    t = np.array(vals).astype(int_dtype)
    ctx = f"isa={isa} target dtype={np.dtype(int_dtype).name} ignore_index={ignore_index}"
    for ii in (ignore_index, -100):
        kw = dict(ignore_index=ii, reduction=reduction, label_smoothing=0.1)
        loss, grad = fastce.cross_entropy_with_grad(x, t, **kw)
        loss2 = fastce.cross_entropy(x, t, **kw)
        r_loss, r_grad = ref.cross_entropy_with_grad(x, t, **kw)
        assert_close(loss, r_loss, dtype, "loss", ctx + f" ii={ii}")
        assert_close(loss2, r_loss, dtype, "loss (cross_entropy)", ctx + f" ii={ii}")
        assert_close(grad, r_grad, dtype, "grad", ctx + f" ii={ii}", kind="grad")
        if maybe_torch() is None:
            continue
        t_loss, t_grad = torch_ce(x, t.astype(np.int64), **kw)
        assert_close(loss, t_loss, dtype, "loss vs torch", ctx + f" ii={ii}")
        assert_close(grad, t_grad, dtype, "grad vs torch", ctx + f" ii={ii}", kind="grad")


@pytest.mark.parametrize("int_dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_index_target_dtypes_unbatched_and_spatial(isa, int_dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 6, 2, 2))
    t = rng.integers(0, 6, (3, 2, 2)).astype(int_dtype)
    for red in ("none", "mean"):
        loss, grad = fastce.cross_entropy_with_grad(x, t, reduction=red)
        r_loss, r_grad = ref.cross_entropy_with_grad(x, t, reduction=red)
        assert_close(loss, r_loss, np.float64, f"loss {red}", f"isa={isa} {int_dtype}")
        assert_close(grad, r_grad, np.float64, f"grad {red}", f"isa={isa} {int_dtype}")
        x1 = x[0, :, 0, 0].copy()
        t1 = np.array(4, dtype=int_dtype)
        loss, grad = fastce.cross_entropy_with_grad(x1, t1, reduction=red)
        r_loss, r_grad = ref.cross_entropy_with_grad(x1, t1, reduction=red)
        assert_close(loss, r_loss, np.float64, f"unbatched loss {red}", f"isa={isa} {int_dtype}")
        assert_close(grad, r_grad, np.float64, f"unbatched grad {red}", f"isa={isa} {int_dtype}")
