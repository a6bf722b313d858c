"""grad_output / out= / in-place / CrossEntropyLoss / nll_loss / softmax family /
empty, all-ignored and non-finite inputs / extreme magnitudes (1e30, 1e300, rows -inf but for
one place) and float32's relative accuracy; each under every available ISA."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastce
from _ce_testutil import (SHAPE_KINDS, assert_close, check_loss_type, close, close_loss, get_torch,
                          make_case, maybe_torch, ref, seed_of, shape_id, torch_ce, torch_tensor)

DTYPES = [np.float32, np.float64]
dtype_ids = lambda d: np.dtype(d).name  # noqa: E731


def _kw(case, reduction, eps):
    return dict(weight=case["weight"], ignore_index=case["ignore_index"], reduction=reduction,
                label_smoothing=eps)


# --------------------------------------------------------------------------
# grad_output forms
# --------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_grad_output_scalar_forms(isa, reduction, dtype):
    case = make_case("NCd", 9, dtype, "index", "neg", True, reduction, seed=1)
    kw = _kw(case, reduction, 0.1)
    r_loss, r_grad = ref.cross_entropy_with_grad(case["x"], case["target"], grad_output=-1.75,
                                                 **kw)
    for g in (-1.75, np.float32(-1.75), np.float64(-1.75), np.array(-1.75), np.array(-1.75, dtype)):
        loss, grad = fastce.cross_entropy_with_grad(case["x"], case["target"], grad_output=g, **kw)
        ctx = f"isa={isa} grad_output={g!r}"
        assert_close(loss, r_loss, dtype, "loss", ctx)
        assert_close(grad, r_grad, dtype, "grad", ctx, kind="grad")


@pytest.mark.parametrize("shape_kind", SHAPE_KINDS)
@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_grad_output_array_for_none(isa, shape_kind, target_kind, dtype):
    case = make_case(shape_kind, 11, dtype, target_kind, "neg", True, "none", seed=2)
    kw = _kw(case, "none", 0.2)
    g = case["grad_output"]
    r_loss, r_grad = ref.cross_entropy_with_grad(case["x"], case["target"], grad_output=g, **kw)
    loss, grad = fastce.cross_entropy_with_grad(case["x"], case["target"], grad_output=g, **kw)
    ctx = f"isa={isa} shape={case['x'].shape}"
    assert_close(loss, r_loss, dtype, "loss", ctx)
    assert_close(grad, r_grad, dtype, "grad", ctx, kind="grad")
    if shape_kind != "C":   # a float64 grad_output with float32 input is accepted as well
        loss, grad = fastce.cross_entropy_with_grad(case["x"], case["target"],
                                                    grad_output=g.astype(np.float64), **kw)
        assert_close(grad, r_grad, dtype, "grad (float64 grad_output)", ctx, kind="grad")


# --------------------------------------------------------------------------
# out= and in place
# --------------------------------------------------------------------------

OUT_CASES = list(itertools.product(SHAPE_KINDS, ["index", "prob"], ["none", "mean", "sum"]))


@pytest.mark.parametrize("shape_kind,target_kind,reduction", OUT_CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_out_preallocated(isa, shape_kind, target_kind, reduction, dtype):
    case = make_case(shape_kind, 13, dtype, target_kind, "neg", True, reduction,
                     seed=seed_of("out", shape_kind, target_kind, reduction))
    kw = _kw(case, reduction, 0.1)
    out = np.full_like(case["x"], np.nan)
    loss, grad = fastce.cross_entropy_with_grad(case["x"], case["target"],
                                                grad_output=case["grad_output"], out=out, **kw)
    r_loss, r_grad = ref.cross_entropy_with_grad(case["x"], case["target"],
                                                 grad_output=case["grad_output"], **kw)
    ctx = f"isa={isa} shape={case['x'].shape} {target_kind} {reduction}"
    assert grad is out, f"returned grad is not the out= array [{ctx}]"
    assert_close(loss, r_loss, dtype, "loss", ctx)
    assert_close(out, r_grad, dtype, "out", ctx, kind="grad")


@pytest.mark.parametrize("shape_kind,target_kind,reduction", OUT_CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_out_is_input_inplace(isa, shape_kind, target_kind, reduction, dtype):
    case = make_case(shape_kind, 13, dtype, target_kind, "cls", True, reduction,
                     seed=seed_of("inplace", shape_kind, target_kind, reduction))
    kw = _kw(case, reduction, 0.1)
    r_loss, r_grad = ref.cross_entropy_with_grad(case["x"], case["target"],
                                                 grad_output=case["grad_output"], **kw)
    x = case["x"].copy()
    loss, grad = fastce.cross_entropy_with_grad(x, case["target"], grad_output=case["grad_output"],
                                                out=x, **kw)
    ctx = f"isa={isa} shape={x.shape} {target_kind} {reduction}"
    assert grad is x, f"returned grad is not the input array [{ctx}]"
    check_loss_type(loss, dtype, reduction, case["tshape"], ctx)
    assert_close(loss, r_loss, dtype, "loss (computed before the overwrite)", ctx)
    assert_close(x, r_grad, dtype, "gradient written over the logits", ctx, kind="grad")


def test_out_float16_inplace(isa):
    case = make_case("NC", 37, np.float16, "index", "neg", False, "mean", seed=4)
    r_loss, r_grad = ref.cross_entropy_with_grad(case["x"], case["target"],
                                                 ignore_index=case["ignore_index"])
    x = case["x"].copy()
    loss, grad = fastce.cross_entropy_with_grad(x, case["target"], out=x,
                                                ignore_index=case["ignore_index"])
    assert grad is x and loss.dtype == np.float16
    assert_close(loss, r_loss, np.float16, "loss", f"isa={isa}")
    assert_close(x, r_grad, np.float16, "grad", f"isa={isa}", kind="grad")


def test_out_bad_shape_or_dtype(isa):
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    t = np.array([0, 1, 2, 3])
    with pytest.raises(ValueError):
        fastce.cross_entropy_with_grad(x, t, out=np.empty((4, 6), np.float32))
    with pytest.raises((TypeError, ValueError)):
        fastce.cross_entropy_with_grad(x, t, out=np.empty((4, 5), np.float64))


# --------------------------------------------------------------------------
# CrossEntropyLoss
# --------------------------------------------------------------------------

@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_cross_entropy_loss_class(isa, target_kind, reduction, dtype):
    case = make_case("NCd", 10, dtype, target_kind, "neg" if target_kind == "index" else "none",
                     True, reduction, seed=seed_of("cls", target_kind, reduction))
    kw = _kw(case, reduction, 0.15)
    loss_fn = fastce.CrossEntropyLoss(**kw)
    ctx = f"isa={isa} {target_kind} {reduction}"
    r_loss, r_grad = ref.cross_entropy_with_grad(case["x"], case["target"],
                                                 grad_output=case["grad_output"], **kw)
    _, r_grad1 = ref.cross_entropy_with_grad(case["x"], case["target"], **kw)
    loss = loss_fn(case["x"], case["target"])
    check_loss_type(loss, dtype, reduction, case["tshape"], ctx)
    assert_close(loss, r_loss, dtype, "CrossEntropyLoss()(x, t)", ctx)
    loss, grad = loss_fn.loss_and_grad(case["x"], case["target"], grad_output=case["grad_output"])
    assert_close(loss, r_loss, dtype, "loss_and_grad loss", ctx)
    assert_close(grad, r_grad, dtype, "loss_and_grad grad", ctx, kind="grad")
    loss, grad = loss_fn.loss_and_grad(case["x"], case["target"])
    assert_close(grad, r_grad1, dtype, "loss_and_grad grad (grad_output=None)", ctx, kind="grad")
    out = np.empty_like(case["x"])
    loss, grad = loss_fn.loss_and_grad(case["x"], case["target"], grad_output=case["grad_output"],
                                       out=out)
    assert grad is out
    assert_close(out, r_grad, dtype, "loss_and_grad out=", ctx, kind="grad")
    x = case["x"].copy()
    loss, grad = loss_fn.loss_and_grad(x, case["target"], grad_output=case["grad_output"], out=x)
    assert grad is x
    assert_close(loss, r_loss, dtype, "loss_and_grad out=input loss", ctx)
    assert_close(x, r_grad, dtype, "loss_and_grad out=input grad", ctx, kind="grad")
    # the same object can be reused on other shapes
    case2 = make_case("NC", 10, dtype, target_kind, "none", True, reduction, seed=99)
    assert_close(loss_fn(case2["x"], case2["target"]),
                 ref.cross_entropy(case2["x"], case2["target"], **kw), dtype, "reuse", ctx)


def test_cross_entropy_loss_class_defaults(isa):
    case = make_case("NC", 6, np.float64, "index", seed=8)
    loss_fn = fastce.CrossEntropyLoss()
    assert_close(loss_fn(case["x"], case["target"]), ref.cross_entropy(case["x"], case["target"]),
                 np.float64, "default CrossEntropyLoss")
    loss_fn = fastce.CrossEntropyLoss(num_threads=1)
    assert_close(loss_fn(case["x"], case["target"]), ref.cross_entropy(case["x"], case["target"]),
                 np.float64, "CrossEntropyLoss(num_threads=1)")


# --------------------------------------------------------------------------
# nll_loss and the softmax family
# --------------------------------------------------------------------------

@pytest.mark.parametrize("shape_kind", SHAPE_KINDS)
@pytest.mark.parametrize("ignore", ["none", "neg", "cls"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_nll_loss(isa, shape_kind, ignore, weighted, reduction, dtype):
    case = make_case(shape_kind, 8, dtype, "index", ignore, weighted, reduction,
                     seed=seed_of("nll", shape_kind, ignore, weighted, reduction))
    lp = ref.log_softmax(case["x"], 0 if shape_kind == "C" else 1).astype(dtype)
    kw = dict(weight=case["weight"], ignore_index=case["ignore_index"], reduction=reduction)
    out = fastce.nll_loss(lp, case["target"], **kw)
    ctx = f"isa={isa} shape={lp.shape} ignore={ignore} w={weighted} {reduction}"
    check_loss_type(out, dtype, reduction, case["tshape"], ctx)
    assert_close(out, ref.nll_loss(lp, case["target"], **kw), dtype, "nll_loss vs reference", ctx)
    torch = get_torch()
    w = case["weight"]
    t_out = torch.nn.functional.nll_loss(
        torch_tensor(lp), torch_tensor(case["target"].astype(np.int64)),
        weight=None if w is None else torch_tensor(w), ignore_index=case["ignore_index"],
        reduction=reduction).numpy()
    assert_close(out, t_out, dtype, "nll_loss vs torch", ctx)


def test_nll_loss_target_dtypes_and_errors(isa):
    lp = ref.log_softmax(np.random.default_rng(0).standard_normal((4, 6)), 1)
    for dt in (np.int8, np.uint8, np.int32, np.uint64):
        t = np.array([0, 5, 2, 3], dtype=dt)
        assert_close(fastce.nll_loss(lp, t, reduction="none"),
                     ref.nll_loss(lp, t, reduction="none"),
                     np.float64, f"nll_loss target {np.dtype(dt).name}")
    with pytest.raises(IndexError, match=r"Target 6 is out of bounds\."):
        fastce.nll_loss(lp, np.array([0, 6, 2, 3]))
    with pytest.raises(ValueError):
        fastce.nll_loss(lp, np.array([0, 1, 2, 3]), reduction="bad")


SM_SHAPES = [((7,), -1), ((7,), 0), ((4, 9), -1), ((4, 9), 0), ((4, 9), 1), ((3, 5, 6), 1),
             ((3, 5, 6), -1), ((3, 5, 6), 0), ((2, 3, 4, 5), 2), ((3, 1), 1), ((5, 423), 1),
             ((2, 32000), -1)]


@pytest.mark.parametrize("shape,axis", SM_SHAPES, ids=[f"{s}-ax{a}" for s, a in SM_SHAPES])
@pytest.mark.parametrize("dtype", DTYPES + [np.float16], ids=dtype_ids)
def test_softmax_family(isa, shape, axis, dtype):
    rng = np.random.default_rng(seed_of("sm", shape, axis))
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    x0 = x.copy()
    ctx = f"isa={isa} shape={shape} axis={axis} dtype={np.dtype(dtype).name}"
    got = {
        "log_softmax": fastce.log_softmax(x, axis=axis),
        "softmax": fastce.softmax(x, axis=axis),
        "logsumexp": fastce.logsumexp(x, axis=axis),
    }
    np.testing.assert_array_equal(x, x0, err_msg=f"input modified [{ctx}]")
    exp_shape = {"log_softmax": shape, "softmax": shape,
                 "logsumexp": shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]}
    for name, val in got.items():
        val = np.asarray(val)
        assert val.dtype == np.dtype(dtype), f"{name} dtype {val.dtype} [{ctx}]"
        assert val.shape == exp_shape[name], f"{name} shape {val.shape} [{ctx}]"
        assert_close(val, getattr(ref, name)(x, axis), dtype, f"{name} vs reference", ctx,
                     kind="grad" if name == "softmax" else "loss")
    torch = get_torch()
    xt = torch_tensor(x.astype(np.float32) if dtype == np.float16 else x)
    t_vals = {"log_softmax": torch.log_softmax(xt, axis), "softmax": torch.softmax(xt, axis),
              "logsumexp": torch.logsumexp(xt, axis)}
    for name, tv in t_vals.items():
        assert_close(got[name], tv.numpy().astype(dtype), dtype, f"{name} vs torch", ctx,
                     kind="grad" if name == "softmax" else "loss")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_softmax_family_num_threads_kw(isa, dtype):
    x = np.random.default_rng(0).standard_normal((6, 33)).astype(dtype)
    for nt in (None, 1, 2):
        assert_close(fastce.logsumexp(x, num_threads=nt), ref.logsumexp(x), dtype, f"lse nt={nt}")
        assert_close(fastce.softmax(x, 0, num_threads=nt), ref.softmax(x, 0), dtype, "sm",
                     kind="grad")
        assert_close(fastce.log_softmax(x, num_threads=nt), ref.log_softmax(x), dtype, "lsm")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_softmax_family_nonfinite(isa, dtype):
    """Rows with +inf / -inf / NaN: vs the reference, and vs torch where installed."""
    torch = maybe_torch()
    inf, nan = np.inf, np.nan
    x = np.array([[1.0, inf, 2.0, 0.0], [-inf, -inf, -inf, -inf], [1.0, -inf, 2.0, 0.0],
                  [nan, 1.0, 2.0, 0.0], [inf, inf, 0.0, 1.0], [inf, -inf, 0.0, 1.0],
                  [0.5, 0.25, -0.5, 3.0]], dtype=dtype)
    for axis in (0, 1):
        ctx = f"isa={isa} axis={axis} dtype={np.dtype(dtype).name}"
        for name in ("log_softmax", "softmax", "logsumexp"):
            got = getattr(fastce, name)(x, axis)
            assert_close(got, getattr(ref, name)(x, axis), dtype, f"{name} vs reference", ctx)
            if torch is not None:
                want = getattr(torch, name)(torch_tensor(x), axis).numpy()
                assert_close(got, want, dtype, f"{name} vs torch", ctx)


# --------------------------------------------------------------------------
# empty, all-ignored, non-finite, non-contiguous
# --------------------------------------------------------------------------

EMPTY_SHAPES = [(0, 5), (0, 5, 3), (2, 5, 0), (0, 5, 0), (3, 5, 2, 0)]

_EMPTY_PROBE = """
import sys, numpy as np, fastce
shape = tuple(int(v) for v in sys.argv[1].split("x"))
tshape = (shape[0],) + shape[2:]
for isa in fastce.available_isas():
    with fastce.use_isa(isa):
        for dt in (np.float32, np.float64):
            x = np.zeros(shape, dt)
            for t in (np.zeros(tshape, np.int64), np.zeros(shape, dt)):
                for red in ("none", "mean", "sum"):
                    for _ in range(3):
                        fastce.cross_entropy(x, t, reduction=red)
                        fastce.cross_entropy_with_grad(x, t, reduction=red)
                        fastce.cross_entropy_with_grad(x, t, reduction=red, label_smoothing=0.2)
print("ok")
"""


@pytest.fixture(scope="module")
def empty_shape_crash():
    """Run every empty-shape call in a subprocess first, so that a crash (segfault, heap
    corruption) in fastce is reported as a test failure instead of killing the run."""
    import subprocess
    import sys

    results = {}

    def probe(shape):
        if shape not in results:
            res = subprocess.run([sys.executable, "-c", _EMPTY_PROBE, shape_id(shape)],
                                 capture_output=True, text=True, timeout=120)
            results[shape] = None if res.returncode == 0 else (
                f"fastce crashed (exit status {res.returncode}) on an empty input of shape "
                f"{shape} in a subprocess; not run in-process. stderr tail: {res.stderr[-400:]}")
        return results[shape]
    return probe


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("shape", EMPTY_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_empty_batch(isa, reduction, target_kind, shape, dtype, empty_shape_crash):
    crash = empty_shape_crash(shape)
    if crash:
        pytest.fail(crash)
    x = np.zeros(shape, dtype)
    tshape = (shape[0],) + shape[2:]
    t = np.zeros(tshape, np.int64) if target_kind == "index" else np.zeros(shape, dtype)
    ctx = f"isa={isa} shape={shape} {target_kind} {reduction}"
    loss = fastce.cross_entropy(x, t, reduction=reduction)
    loss2, grad = fastce.cross_entropy_with_grad(x, t, reduction=reduction)
    check_loss_type(loss, dtype, reduction, tshape, ctx)
    assert grad.shape == shape and grad.dtype == np.dtype(dtype), ctx
    for l_ in (loss, loss2):
        if reduction == "mean":
            assert np.isnan(l_), f"mean over an empty batch must be NaN, got {l_} [{ctx}]"
        elif reduction == "sum":
            assert l_ == 0, f"sum over an empty batch must be 0, got {l_} [{ctx}]"
        else:
            assert np.shape(l_) == tshape
    if target_kind == "index":
        loss = fastce.cross_entropy(x, t, reduction=reduction, label_smoothing=0.2,
                                    weight=np.ones(5, dtype))
        if reduction == "mean":
            assert np.isnan(loss), ctx
        elif reduction == "sum":
            assert loss == 0, ctx


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_all_ignored(isa, reduction, eps, weighted, dtype):
    rng = np.random.default_rng(0)
    for shape in ((4, 5), (2, 5, 3), (5,)):
        x = rng.standard_normal(shape).astype(dtype)
        t = np.full((shape[0],) + shape[2:] if len(shape) > 1 else (), -100)
        w = rng.random(5).astype(dtype) if weighted else None
        kw = dict(weight=w, reduction=reduction, label_smoothing=eps)
        ctx = f"isa={isa} shape={shape} {reduction} eps={eps} w={weighted}"
        loss = fastce.cross_entropy(x, t, **kw)
        loss2, grad = fastce.cross_entropy_with_grad(x, t, **kw)
        for l_ in (loss, loss2):
            if reduction == "mean":
                assert np.isnan(l_), f"all ignored + mean must be NaN, got {l_} [{ctx}]"
            else:
                assert np.all(np.asarray(l_) == 0), f"got {l_} [{ctx}]"
        assert np.all(grad == 0), f"gradient of all-ignored must be 0 [{ctx}]"
        if maybe_torch() is None:
            continue
        t_loss, t_grad = torch_ce(x, t, **kw)
        assert_close(loss, t_loss, dtype, "loss vs torch", ctx)
        assert_close(grad, t_grad, dtype, "grad vs torch", ctx, kind="grad")


NONFINITE_ROWS = {
    "plus_inf": [1.0, np.inf, 2.0, 0.5, -1.0],
    "all_minus_inf": [-np.inf] * 5,
    "minus_inf_nontarget": [1.0, -np.inf, 2.0, 0.5, -1.0],
    "minus_inf_at_target": [-np.inf, 0.3, 2.0, 0.5, -1.0],
    "nan": [np.nan, 1.0, 2.0, 0.5, -1.0],
    "large": [1e4, -1e4, 3e4, 0.0, 1.0],
    "huge_tied_max": [1e38, 1.0, 0.0, 1e38, 0.5],
}


@pytest.mark.parametrize("row", list(NONFINITE_ROWS))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_nonfinite_logits(isa, row, reduction, eps, target_kind, dtype):
    """vs the reference, and vs torch where installed."""
    torch = maybe_torch()
    rng = np.random.default_rng(seed_of("nf", row))
    x = rng.standard_normal((4, 5))
    x[2] = NONFINITE_ROWS[row]
    x = x.astype(dtype)
    if target_kind == "index":
        t = np.array([1, 3, 0, 4])
    else:
        t = np.full(x.shape, 0.2, dtype)
        t[2] = [0.5, 0.0, 0.5, 0.0, 0.0]
    g = np.linspace(0.5, 1.5, 4).astype(dtype) if reduction == "none" else 0.5
    kw = dict(reduction=reduction, label_smoothing=eps)
    ctx = f"isa={isa} row2={NONFINITE_ROWS[row]} {target_kind} {reduction} eps={eps}"
    loss = fastce.cross_entropy(x, t, **kw)
    loss2, grad = fastce.cross_entropy_with_grad(x, t, grad_output=g, **kw)
    r_loss, r_grad = ref.cross_entropy_with_grad(x, t, grad_output=g, **kw)
    assert_close(loss, r_loss, dtype, "loss vs reference", ctx)
    assert_close(loss2, r_loss, dtype, "with_grad loss vs reference", ctx)
    assert_close(grad, r_grad, dtype, "grad vs reference", ctx, kind="grad")
    if torch is not None:
        t_loss, t_grad = torch_ce(x, t, grad_output=g, **kw)
        assert_close(loss, t_loss, dtype, "loss vs torch", ctx)
        assert_close(loss2, t_loss, dtype, "with_grad loss vs torch", ctx)
        assert_close(grad, t_grad, dtype, "grad vs torch", ctx, kind="grad")


@pytest.mark.parametrize("layout", ["fortran", "strided_classes", "strided_batch", "transposed"])
@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_non_contiguous_inputs(isa, layout, target_kind, dtype):
    rng = np.random.default_rng(seed_of("nc", layout))
    base = rng.standard_normal((12, 30, 3)).astype(dtype)
    if layout == "fortran":
        x = np.asfortranarray(base[:, :, 0])
    elif layout == "strided_classes":
        x = base[:, ::2, 1]
    elif layout == "strided_batch":
        x = base[::3, :, 2]
    else:
        x = base[:, :, 0].T              # (30, 12) transposed, strided view
    N, C = x.shape
    if target_kind == "index":
        t = rng.integers(0, C, (2 * N,))[::2]   # strided target as well
    else:
        t = ref.softmax(rng.standard_normal((N, C)), 1).astype(dtype)
        t = np.asfortranarray(t)
    ctx = f"isa={isa} layout={layout} {target_kind} strides={x.strides}"
    for red in ("none", "mean"):
        r_loss, r_grad = ref.cross_entropy_with_grad(x, t, reduction=red, label_smoothing=0.1)
        loss = fastce.cross_entropy(x, t, reduction=red, label_smoothing=0.1)
        loss2, grad = fastce.cross_entropy_with_grad(x, t, reduction=red, label_smoothing=0.1)
        assert_close(loss, r_loss, dtype, f"loss {red}", ctx)
        assert_close(loss2, r_loss, dtype, f"with_grad loss {red}", ctx)
        assert_close(grad, r_grad, dtype, f"grad {red}", ctx, kind="grad")
        assert grad.shape == x.shape
    lx = fastce.log_softmax(x, axis=1)
    assert_close(lx, ref.log_softmax(x, 1), dtype, "log_softmax", ctx)
    assert_close(fastce.logsumexp(x, axis=0), ref.logsumexp(x, 0), dtype, "logsumexp", ctx)


def test_weight_float64_with_float32_input(isa):
    """A float64 weight with float32 logits is the common NumPy case."""
    case = make_case("NC", 5, np.float32, "index", seed=3)
    w = [0.5, 1.0, 1.5, 2.0, 0.25]
    r = ref.cross_entropy(case["x"], case["target"], weight=w)
    for wv in (np.array(w, np.float64), np.array(w, np.float32)):
        assert_close(fastce.cross_entropy(case["x"], case["target"], weight=wv), r, np.float32,
                     f"weight dtype {wv.dtype}", f"isa={isa}")


@pytest.mark.parametrize("shape", [(200000, 3), (4, 3, 50000), (3000, 257)],
                         ids=shape_id)
@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_float32_reduction_accuracy_many_elements(isa, shape, target_kind, reduction):
    """mean/sum over many elements must not lose float32 accuracy (torch's sums are pairwise)."""
    rng = np.random.default_rng(seed_of("acc", shape))
    x = rng.standard_normal(shape).astype(np.float32)
    tshape = (shape[0],) + shape[2:]
    t = rng.integers(0, shape[1], tshape) if target_kind == "index" else \
        ref.softmax(rng.standard_normal(shape), 1).astype(np.float32)
    kw = dict(reduction=reduction, label_smoothing=0.1)
    ctx = f"isa={isa} shape={shape} {target_kind} {reduction}"
    r = ref.cross_entropy(x, t, **kw)
    assert_close(fastce.cross_entropy(x, t, **kw), r, np.float32, "loss", ctx)
    assert_close(fastce.cross_entropy_with_grad(x, t, **kw)[0], r, np.float32, "with_grad loss",
                 ctx)


@pytest.mark.parametrize("C", [5, 8, 17, 33, 423])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_nonfinite_at_every_simd_position(isa, C, value, dtype):
    """A non-finite logit in the first lane, mid-vector or the masked tail of a row
    (vs the reference, and vs torch where installed)."""
    torch = maybe_torch()
    v = float(value)
    rng = np.random.default_rng(seed_of("simdpos", C))
    positions = sorted({0, 1, C // 2, C - 2, C - 1} - {-1})
    x = rng.standard_normal((len(positions) + 1, C)).astype(dtype)
    for r, pos in enumerate(positions):
        x[r, pos] = v
    t = (np.arange(x.shape[0]) * 3) % C
    ctx = f"isa={isa} C={C} value={value} positions={positions}"
    for red, eps in (("none", 0.0), ("none", 0.2), ("sum", 0.2)):
        kw = dict(reduction=red, label_smoothing=eps)
        loss, grad = fastce.cross_entropy_with_grad(x, t, **kw)
        r_loss, r_grad = ref.cross_entropy_with_grad(x, t, **kw)
        assert_close(loss, r_loss, dtype, f"loss {red} eps={eps} vs reference", ctx)
        assert_close(grad, r_grad, dtype, f"grad {red} eps={eps} vs reference", ctx, kind="grad")
        if torch is not None:
            t_loss, t_grad = torch_ce(x, t, **kw)
            assert_close(loss, t_loss, dtype, f"loss {red} eps={eps} vs torch", ctx)
            assert_close(grad, t_grad, dtype, f"grad {red} eps={eps} vs torch", ctx, kind="grad")
    for name in ("log_softmax", "softmax", "logsumexp"):
        got = getattr(fastce, name)(x, axis=1)
        assert_close(got, getattr(ref, name)(x, 1), dtype, f"{name} vs reference", ctx)
        if torch is not None:
            assert_close(got, getattr(torch, name)(torch_tensor(x), 1).numpy(), dtype,
                         f"{name} vs torch", ctx)


def _extreme_rows(C):
    """Rows of C logits that stress a one-pass max/sum-exp: non-finite values at the first,
    a middle and the last class, logits that rise by more than 64 per class (each one raises
    the running reference), and a -inf first logit before logits far below 0."""
    ramp = np.linspace(0.0, -3.0, C)
    rows = {"rising_by_70": 70.0 * np.arange(C), "falling_by_70": -70.0 * np.arange(C),
            "first_minus_inf_rest_far_below": np.r_[-np.inf, -1000.0 + ramp[1:]],
            "huge_tied_max": np.r_[1e36, ramp[1:-1], 1e36]}
    for name, v in (("nan", np.nan), ("plus_inf", np.inf), ("minus_inf", -np.inf)):
        for pos in sorted({0, C // 2, C - 1}):
            row = ramp.copy()
            row[pos] = v
            rows[f"{name}@{pos}"] = row
    rows["all_minus_inf"] = np.full(C, -np.inf)
    return rows


@pytest.mark.parametrize("C", [5, 21, 40])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_extreme_rows_in_tile_lanes(isa, C, dtype):
    """Extreme rows placed at every lane of the tile kernels: K-dimensional input (one row per
    spatial position, 101 positions = multi-vector tiles, whole vectors and a partial one) and
    short (N, C) rows
    (C <= 16 go through the transposed tile). Every other row is ordinary, so a tile mixes
    ordinary and extreme lanes. vs the reference, and vs torch where installed."""
    torch = maybe_torch()
    rows = _extreme_rows(C)
    S = 101
    rng = np.random.default_rng(seed_of("tile_lanes", C))
    x = rng.standard_normal((len(rows), C, S))
    for i, row in enumerate(rows.values()):
        x[i, :, (5 * i) % S] = row              # row i's extreme lane moves across the tile
        x[i, :, S - 1 - i % 3] = row            # and into the last, partial vector
    x = x.astype(dtype)
    t = (np.arange(x.shape[0])[:, None] + np.arange(S)[None, :]) % C
    x2 = np.moveaxis(x, 1, -1).reshape(-1, C)  # the same rows as (N, C)
    t2 = t.reshape(-1)
    ctx = f"isa={isa} C={C} dtype={np.dtype(dtype).name}"
    with np.errstate(all="ignore"):
        for xi, ti, shape in ((x, t, "NCd"), (x2, t2, "NC")):
            for kw in (dict(reduction="none"), dict(reduction="none", label_smoothing=0.2)):
                loss, grad = fastce.cross_entropy_with_grad(xi, ti, **kw)
                lse = fastce.cross_entropy(xi, ti, return_lse=True, **kw)[1]
                r_loss, r_grad = ref.cross_entropy_with_grad(xi, ti, **kw)
                r_lse = ref.logsumexp(xi, 1)
                c = f"{ctx} {shape} {kw}"
                assert_close(loss, r_loss, dtype, "loss vs reference", c)
                assert_close(grad, r_grad, dtype, "grad vs reference", c, kind="grad")
                assert_close(lse, r_lse, dtype, "lse vs reference", c)
                if torch is not None:
                    t_loss, t_grad = torch_ce(xi, ti, **kw)
                    assert_close(loss, t_loss, dtype, "loss vs torch", c)
                    assert_close(grad, t_grad, dtype, "grad vs torch", c, kind="grad")


@pytest.mark.parametrize("S", [64, 133, 150])
@pytest.mark.parametrize("C", [3, 21])
@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_ids)
def test_wide_spatial_tiles(isa, S, C, target_kind, dtype):
    """K-dimensional input with enough positions for the multi-vector tiles (4 vectors of
    positions per class visit with 64-byte vectors) followed by single vectors and a partial
    one, each option on, on 1 and 2 threads (whose blocks may split a run of vectors).
    Loss per row and gradient (with a grad_output per row) vs the reference."""
    rng = np.random.default_rng(seed_of("wide", S, C, target_kind))
    x = (3 * rng.standard_normal((3, C, S))).astype(dtype)
    weight = rng.uniform(0.5, 2.0, C).astype(dtype)
    if target_kind == "index":
        t = rng.integers(0, C, (3, S))
        t[:, ::7] = -100                     # ignored rows, spread over the lanes
    else:
        t = rng.dirichlet(np.ones(C), (3, S)).transpose(0, 2, 1).astype(dtype)
    g = rng.uniform(0.5, 1.5, (3, S)).astype(dtype)
    for kw in (dict(), dict(weight=weight), dict(label_smoothing=0.2),
               dict(weight=weight, label_smoothing=0.1)):
        r_loss, r_grad = ref.cross_entropy_with_grad(x, t, reduction="none", grad_output=g, **kw)
        for nt in (1, 2):
            ctx = f"isa={isa} C={C} S={S} {target_kind} {kw.keys()} threads={nt}"
            loss, grad = fastce.cross_entropy_with_grad(x, t, reduction="none", grad_output=g,
                                                        num_threads=nt, **kw)
            assert_close(loss, r_loss, dtype, "loss vs reference", ctx)
            assert_close(grad, r_grad, dtype, "grad vs reference", ctx, kind="grad")
            assert_close(fastce.cross_entropy(x, t, reduction="none", num_threads=nt, **kw),
                         r_loss, dtype, "forward loss vs reference", ctx)


def test_out_layout_and_readonly(isa):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    t = np.array([0, 1, 2, 3])
    r_loss, r_grad = ref.cross_entropy_with_grad(x, t)
    # a non-contiguous out= is either rejected with ValueError or filled correctly
    o = np.empty((6, 4), np.float32).T
    try:
        _, g = fastce.cross_entropy_with_grad(x, t, out=o)
    except ValueError:
        pass
    else:
        assert g is o
        assert_close(o, r_grad, np.float32, "non-contiguous out", f"isa={isa}", kind="grad")
    # a read-only input works; writing the gradient into it is refused
    xr = x.copy()
    xr.flags.writeable = False
    assert_close(fastce.cross_entropy(xr, t), r_loss, np.float32, "read-only input", f"isa={isa}")
    with pytest.raises(ValueError):
        fastce.cross_entropy_with_grad(xr, t, out=xr)
    np.testing.assert_array_equal(xr, x)


OFFSETS = [  # dtype, common offset, spread (std of the logits)
    (np.float32, 0.0, 15.0), (np.float32, 30.0, 8.0), (np.float32, 100.0, 2.0),
    (np.float32, -300.0, 2.0), (np.float32, 1e3, 2.0), (np.float32, 1e4, 2.0),
    (np.float64, 0.0, 300.0), (np.float64, 1e6, 2.0), (np.float64, -1e9, 2.0)]


@pytest.mark.parametrize("dtype,offset,spread", OFFSETS,
                         ids=[f"{np.dtype(d).name}-off{o:g}-std{sp:g}" for d, o, sp in OFFSETS])
@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_large_common_offset(isa, dtype, offset, spread, target_kind, eps):
    """softmax is shift invariant; torch computes log p = (x - max) - log(sum exp(x - max)),
    which stays accurate for logits with a large common offset (x - max is exact).
    vs the reference, and vs torch where installed."""
    torch = maybe_torch()
    rng = np.random.default_rng(seed_of("offset", offset))
    x = (rng.standard_normal((8, 50)) * spread + offset).astype(dtype)
    x[0, 3] = x[0, 7] = x[0].max() + 1   # a tied maximum
    t = rng.integers(0, 50, 8) if target_kind == "index" else \
        ref.softmax(rng.standard_normal((8, 50)), 1).astype(dtype)
    ctx = (f"isa={isa} dtype={np.dtype(dtype).name} offset={offset:g} std={spread:g} "
           f"{target_kind} eps={eps}")
    for red in ("none", "mean"):
        kw = dict(reduction=red, label_smoothing=eps)
        loss, grad = fastce.cross_entropy_with_grad(x, t, **kw)
        r_loss, r_grad = ref.cross_entropy_with_grad(x, t, **kw)
        assert_close(loss, r_loss, dtype, f"loss {red} vs reference", ctx)
        assert_close(grad, r_grad, dtype, f"grad {red} vs reference", ctx, kind="grad")
        if torch is not None:
            t_loss, t_grad = torch_ce(x, t, **kw)
            assert_close(loss, t_loss, dtype, f"loss {red} vs torch", ctx)
            assert_close(grad, t_grad, dtype, f"grad {red} vs torch", ctx, kind="grad")
    for name, kind in (("log_softmax", "loss"), ("softmax", "grad")):
        got = getattr(fastce, name)(x, axis=1)
        assert_close(got, getattr(ref, name)(x, 1), dtype, f"{name} vs reference", ctx, kind=kind)
        if torch is not None:
            assert_close(got, getattr(torch, name)(torch_tensor(x), 1).numpy(), dtype,
                         f"{name} vs torch", ctx, kind=kind)


JUMPS = [0.0, 15.5, 16.5, 30.0, 63.5, 64.5, 80.0, 90.0, 200.0, 1e4, 1e30]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(3, 7, 37), (45, 5)], ids=["kdim", "smallC"])
def test_tiles_max_far_above_the_first_logit(isa, dtype, shape):
    """The tiles (K-dim positions, or short rows transposed) sum exp(x - m) against m, the max
    of each lane's first TILE_REF_CLASSES (4) logits, and redo a vector of lanes from cache
    against its max when that max lies more than TILE_MAX_SPREAD (16) above m: here lane by
    lane the max sits `jump` above the first class (within the first four or after them), for
    jumps on both sides of 16 (and of 64, the row kernels' old MAX_JUMP), beyond exp's range (88,
    709) and up to 1e30, mixed across the lanes of one vector. Loss, gradient and log_softmax
    against the reference."""
    rng = np.random.default_rng(seed_of("jump", shape))
    x = rng.standard_normal(shape)
    axis = 1
    lanes = np.moveaxis(x, axis, -1)  # (..., C) view: lane = one row / position
    flat = lanes.reshape(-1, shape[axis])
    for i in range(flat.shape[0]):
        jump = JUMPS[i % len(JUMPS)]
        if np.dtype(dtype) == np.float32 and jump > 1e30:
            jump = 1e30
        c = 1 + i % (shape[axis] - 1)
        flat[i, c] = flat[i, 0] + jump  # the max, `jump` above the first logit
    lanes[...] = flat.reshape(lanes.shape)
    x = x.astype(dtype)
    t = rng.integers(0, shape[axis], shape[:1] + shape[2:])
    ctx = f"isa={isa} dtype={np.dtype(dtype).name} shape={shape}"
    loss, grad = fastce.cross_entropy_with_grad(x, t, reduction="none")
    r_loss, r_grad = ref.cross_entropy_with_grad(x, t, reduction="none")
    # Losses and log-probabilities are differences of logits: relative 1e-6 (1e-12) plus a few
    # ulps of the lane's largest logit, the most float32 (float64) can hold of them.
    ulp, rel = (2.0**-23, 1e-6) if np.dtype(dtype) == np.float32 else (2.0**-52, 1e-12)
    xmax = np.abs(x.astype(np.float64)).max(axis=axis)
    assert np.all(np.isfinite(loss)), ctx
    err = np.abs(loss.astype(np.float64) - r_loss)
    assert np.all(err <= rel * np.abs(r_loss) + 2 * ulp * xmax), (ctx, err.max())
    assert_close(grad, r_grad, dtype, "grad vs reference", ctx, kind="grad")
    lsm = fastce.log_softmax(x, axis=axis).astype(np.float64)
    r_lsm = ref.log_softmax(x, axis)
    err = np.abs(lsm - r_lsm)
    assert np.all(err <= rel * np.abs(r_lsm) + 2 * ulp * np.expand_dims(xmax, axis)), (ctx, err.max())


CHUNK_FLOAT32 = 2048  # the row kernels' chunk (CHUNK_ELEMS: 8 KiB) in float32 logits


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_row_chunks_max_rising_between_chunks(isa, dtype):
    """Long rows sweep their classes in chunks, each chunk's exps taken against the max of the
    chunks before it, kept when the chunk's max exceeds it by at most 16 (FASTCE_SUM_ARG_MAX)
    and redone against the new max otherwise. Here the max rises at each chunk's start by a
    jump on either side of 16 (and of 64, the bound before), beyond exp's range and up to
    1e30, the rows differing in the order of their jumps. Loss, gradient and logsumexp against
    the reference, with the tolerance of test_tiles_max_far_above_the_first_logit."""
    n_chunks = 6
    C = n_chunks * CHUNK_FLOAT32 + 5
    rng = np.random.default_rng(seed_of("row_jumps", C))
    rows = len(JUMPS)
    x = rng.standard_normal((rows, C))
    for i in range(rows):
        level = 0.0
        for k in range(1, n_chunks + 1):
            jump = JUMPS[(i + k) % len(JUMPS)]
            if np.dtype(dtype) == np.float32:
                jump = min(jump, 1e30)
            level += jump
            start = k * CHUNK_FLOAT32 if k < n_chunks else C - 5
            x[i, start + rng.integers(0, 5)] = level  # a new max a little after the chunk's start
    x = x.astype(dtype)
    t = rng.integers(0, C, rows)
    ctx = f"isa={isa} dtype={np.dtype(dtype).name}"
    loss, grad = fastce.cross_entropy_with_grad(x, t, reduction="none")
    r_loss, r_grad = ref.cross_entropy_with_grad(x, t, reduction="none")
    ulp, rel = (2.0**-23, 1e-6) if np.dtype(dtype) == np.float32 else (2.0**-52, 1e-12)
    xmax = np.abs(x.astype(np.float64)).max(axis=1)
    assert np.all(np.isfinite(loss)), ctx
    err = np.abs(loss.astype(np.float64) - r_loss)
    assert np.all(err <= rel * np.abs(r_loss) + 2 * ulp * xmax), (ctx, err.max())
    assert_close(grad, r_grad, dtype, "grad vs reference", ctx, kind="grad")
    lse = fastce.logsumexp(x, axis=1).astype(np.float64)
    r_lse = ref.logsumexp(x, 1)
    err = np.abs(lse - r_lse)
    assert np.all(err <= rel * np.abs(r_lse) + 2 * ulp * xmax), (ctx, err.max())


# --------------------------------------------------------------------------
# huge magnitudes
# --------------------------------------------------------------------------

MAGNITUDES = [(np.float32, 1e30), (np.float64, 1e300)]
LOSS_RTOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}


@pytest.mark.parametrize("dtype,scale", MAGNITUDES, ids=["float32-1e30", "float64-1e300"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_huge_magnitude_logits(isa, dtype, scale, eps):
    rng = np.random.default_rng(30)
    N, C = 40, 301
    x = (rng.standard_normal((N, C)) * scale).astype(dtype)
    t = rng.integers(0, C, N)
    am = x.argmax(axis=1)
    t[::4] = am[::4]                              # target is the maximum: loss 0
    x[1, :] = x[1].max()                          # a whole row tied: loss log(C)
    x[2, 5] = x[2, 6] = np.abs(x[2]).max() * 1.5  # a tie at the maximum: loss log 2 (or large)
    t[2] = 5
    w = (rng.random(C) + 0.5).astype(dtype)
    rt = LOSS_RTOL[np.dtype(dtype)]
    ctx = f"isa={isa} {np.dtype(dtype).name} scale={scale:g} eps={eps}"
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow on fastce's NumPy side
        for kw in (dict(), dict(weight=w)):
            for red in ("none", "sum", "mean"):
                loss, grad = fastce.cross_entropy_with_grad(x, t, reduction=red, label_smoothing=eps, **kw)
                with np.errstate(all="ignore"):
                    r_loss, r_grad = ref.cross_entropy_with_grad(x, t, reduction=red, label_smoothing=eps, **kw)
                assert np.all(np.isfinite(loss)), ctx
                # relative on large losses; the exact zeros and log(2), log(C) at an absolute 1e-6
                close(loss, r_loss, rt, 1e-6, what=f"loss {red} {list(kw)} [{ctx}]")
                close(grad, r_grad, 1e-5, 1e-6, what=f"grad {red} {list(kw)} [{ctx}]")
        assert abs(float(fastce.cross_entropy(x, t, reduction="none")[1]) - np.log(C)) < 1e-5, ctx
        lse = fastce.logsumexp(x, axis=1)
        with np.errstate(all="ignore"):
            close(lse, ref.logsumexp(x, 1), rt, what=f"logsumexp [{ctx}]")
            close(fastce.log_softmax(x, axis=1), ref.log_softmax(x, 1), rt, 1e-6, what=f"log_softmax [{ctx}]")
            close(fastce.softmax(x, axis=1), ref.softmax(x, 1), 1e-6, 1e-7, what=f"softmax [{ctx}]")
        y = ref.softmax(rng.standard_normal((N, C)), 1).astype(dtype)
        loss, grad = fastce.cross_entropy_with_grad(x, y, reduction="none", label_smoothing=eps)
        with np.errstate(all="ignore"):
            r_loss, r_grad = ref.cross_entropy_with_grad(x, y, reduction="none", label_smoothing=eps)
        close(loss, r_loss, rt, what=f"prob loss [{ctx}]")
        close(grad, r_grad, 1e-5, 1e-6, what=f"prob grad [{ctx}]")


# --------------------------------------------------------------------------
# rows that are -inf everywhere but one place
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("C", [1, 7, 37, 300])
@pytest.mark.parametrize("layout", ["NC", "kdim", "fortran"])
def test_rows_minus_inf_but_one(isa, dtype, C, layout):
    """Row i is -inf except at class i % C (value 3 or 1e30 or -1e30). Target at that class:
    loss 0, gradient 0. Target elsewhere: loss +inf, gradient e_k - e_t. With label smoothing,
    loss +inf and a finite gradient. All against torch (the authority) and the reference."""
    torch = maybe_torch()
    n = 2 * C + 2
    x = np.full((n, C), -np.inf, dtype)
    k = np.arange(n) % C
    vals = np.array([3.0, 1e30, -1e30, 0.0])[np.arange(n) % 4]
    x[np.arange(n), k] = vals
    other = (k + 1 + (np.arange(n) // 2) % max(C - 1, 1)) % C      # != k when C > 1
    t = np.where(np.arange(n) % 2 == 0, k, other)
    if layout == "kdim":      # the same rows as positions s of a (1, C, n) input
        xin, tin = np.ascontiguousarray(x.T)[None], t[None]
    elif layout == "fortran":
        xin, tin = np.asfortranarray(x), t
    else:
        xin, tin = x, t
    ctx = f"isa={isa} C={C} layout={layout} {np.dtype(dtype).name}"
    for eps in (0.0, 0.2):
        for red in ("none", "sum"):
            kw = dict(reduction=red, label_smoothing=eps)
            loss, grad = fastce.cross_entropy_with_grad(xin, tin, **kw)
            with np.errstate(all="ignore"):
                r_loss, r_grad = ref.cross_entropy_with_grad(xin, tin, **kw)
            close(loss, r_loss, 1e-6, 1e-7, what=f"loss vs reference {kw} [{ctx}]")
            close(grad, r_grad, 1e-6, 1e-7, what=f"grad vs reference {kw} [{ctx}]")
            if torch is not None:
                t_loss, t_grad = torch_ce(xin, tin, **kw)
                # torch's float32 gradient is itself off by a few ulp here (the reference is exact)
                close(loss, t_loss, 1e-6, 1e-7, what=f"loss vs torch {kw} [{ctx}]")
                close(grad, t_grad, 2e-5, 4e-6, what=f"grad vs torch {kw} [{ctx}]")
    if C > 1:  # the index-target losses, row by row
        loss = fastce.cross_entropy(xin, tin, reduction="none").reshape(-1)
        assert np.all(loss[::2] == 0), ctx
        assert np.all(np.isposinf(loss[1::2])), ctx


# --------------------------------------------------------------------------
# finite input: loss within relative 1e-6 of the float64 reference
# --------------------------------------------------------------------------

ACCURACY_CASES = [  # shape, spread (std of the logits), offset
    ((64, 1000), 1.0, 0.0), ((64, 1000), 20.0, 0.0), ((64, 1000), 2.0, 1e4),
    ((4, 50000), 3.0, -50.0), ((500, 10), 5.0, 0.0), ((16, 33, 8), 4.0, 10.0), ((1000,), 30.0, 0.0),
]


@pytest.mark.parametrize("shape,spread,offset", ACCURACY_CASES,
                         ids=[f"{'x'.join(map(str, s))}-std{sp:g}-off{o:g}" for s, sp, o in ACCURACY_CASES])
@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_float32_loss_relative_1e6(isa, shape, spread, offset, target_kind):
    rng = np.random.default_rng(abs(int(spread * 10 + offset)) + len(shape))
    x = (rng.standard_normal(shape) * spread + offset).astype(np.float32)
    cax = 0 if len(shape) == 1 else 1
    C = shape[cax]
    if target_kind == "index":
        t = rng.integers(0, C, shape[:cax] + shape[cax + 1:])
    else:
        t = ref.softmax(rng.standard_normal(shape) * 2, cax).astype(np.float32)
    for eps in (0.0, 0.1):
        for red in ("none", "sum", "mean"):
            loss = fastce.cross_entropy(x, t, reduction=red, label_smoothing=eps)
            r = ref.cross_entropy(x, t, reduction=red, label_smoothing=eps)
            if red != "none":
                close(loss, r, 1e-6, what=f"isa={isa} {red} eps={eps}")
                continue
            close_loss(loss, r, np.max(np.abs(x), axis=cax), what=f"isa={isa} none eps={eps}")
