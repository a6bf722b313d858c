"""Every memory layout gives the right answer, for every array a call takes.

Roles (the array that is given in an unusual layout; every other argument is C-contiguous):
  input        the logits: cross_entropy ('none' and 'mean'), cross_entropy_with_grad,
               CrossEntropyLoss.loss_and_grad, nll_loss, log_softmax, softmax, logsumexp
  target       class-index targets (int64, int32, uint8): cross_entropy_with_grad, nll_loss
  prob         class-probability targets: cross_entropy_with_grad
  weight       class weights: cross_entropy_with_grad, nll_loss
  grad_output  per-element grad_output with reduction='none': cross_entropy_with_grad
  out          the gradient's destination: cross_entropy_with_grad(out=view)
  inplace      out=input with the input in that layout

Layouts: contiguous, sliced (an interior window of a padded array), strided (every other
element on every axis), negative (every axis reversed), fortran, transposed (axes 0 and 1
stored swapped), permuted (class axis stored last, K-dim), readonly, memmap (a file in
tmp_path), byteswapped ('>f4', '>f8', '>i8', ...), unaligned (a view one byte into a uint8
buffer), fortran_unaligned (both); shapes include zero-size arrays. Stride-0 (broadcast)
arrays have their own test, and unaligned arrays are also run under every ISA.

Oracle: the float64 reference (src/fastce/reference.py) on the same values. Arguments must
come back byte for byte unchanged (except `out`, and the input when out=input).

`out=` may have any writeable layout (fastce writes it in place when it can, else through one
temporary); a read-only `out=` is refused with ValueError and left unwritten.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastce
from _ce_testutil import (LAYOUTS, applicable, assert_close, check_layout, class_axis, make_case, make_layout,
                          ref, seed_of, shape_id, target_shape_of)

# --------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------

SHAPES = {
    "NC": (6, 37),
    "C": (37,),
    "NCd": (3, 7, 5),
    "NCdd": (2, 5, 3, 4),
    "N0": (0, 7),
    "NC0": (3, 7, 0),
    "smallC": (9, 5),           # C <= 16: the transposed-tile kernel
    "long": (3, 12000),         # few long rows: rows split across threads
}
FLOATS = (np.float32, np.float64)
EPS = 0.1
IGNORE = 1     # the cases' ignore_index: make_case(ignore='cls') with C > 1


def base_case(shape, dtype, tdtype=np.int64):
    """Contiguous arrays for a case, from the shared generator: logits, index target (some ==
    ignore_index 1), probability target (same seed: same logits), weight, grad_output."""
    seed = seed_of("layout", shape, np.dtype(dtype).name)
    c = make_case(None, None, dtype, "index", "cls", weighted=True, reduction="none", seed=seed,
                  shape=shape, int_dtype=tdtype)
    assert c["ignore_index"] == IGNORE
    y = make_case(None, None, dtype, "prob", seed=seed, shape=shape)["target"]
    return dict(x=c["x"], t=c["target"], y=y, w=c["weight"], g=c["grad_output"])


_REF = {}


def reference(key, fn):
    if key not in _REF:
        _REF[key] = fn()
    return _REF[key]


def _ref_float(a):
    """The values of a possibly byte-swapped / memmapped array as a plain native array."""
    a = np.asarray(a)
    return np.array(a, dtype=a.dtype.newbyteorder("="))


def _params(roles, dtypes_of, layouts=LAYOUTS, shapes=SHAPES):
    out = []
    for role in roles:
        for layout in layouts:
            for sk, shape in shapes.items():
                for dt in dtypes_of(role):
                    if not _keep(sk, dt):
                        continue
                    arr_shape = {"input": shape, "prob": shape, "out": shape, "inplace": shape,
                                 "target": target_shape_of(shape), "grad_output": target_shape_of(shape),
                                 "weight": (shape[class_axis(len(shape))],)}[role]
                    if not applicable(layout, arr_shape, dt):
                        continue
                    pid = f"{role}-{layout}-{sk}-{np.dtype(dt).name}"
                    out.append(pytest.param(role, layout, shape, dt, id=pid))
    return out


def _keep(shape_key, dtype):
    """Trim the grid (time): float16, and the narrow target dtypes, on a few shapes; the long
    rows (the slowest, split across threads) in float32 only."""
    dtype = np.dtype(dtype)
    if dtype in (np.float16, np.int32, np.uint8):
        return shape_key in ("NC", "NCd", "N0", "smallC")
    if shape_key == "long":
        return dtype == np.float32
    return True


def _dtypes(role):
    if role == "target":
        return (np.int64, np.int32, np.uint8)
    if role in ("input", "out", "inplace"):
        return FLOATS + (np.float16,)
    return FLOATS


def _snapshot(arrays):
    return [np.asarray(a).tobytes() for a in arrays]


def _assert_unchanged(arrays, before, ctx):
    for i, (a, b) in enumerate(zip(arrays, before)):
        assert np.asarray(a).tobytes() == b, f"argument #{i} was modified [{ctx}]"


# --------------------------------------------------------------------------
# the roles that are read
# --------------------------------------------------------------------------

@pytest.mark.parametrize("role,layout,shape,dtype",
                         _params(("input", "target", "prob", "weight", "grad_output"), _dtypes))
def test_layout_read(request, role, layout, shape, dtype):
    tmp = request.getfixturevalue("tmp_path") if layout == "memmap" else None
    fdt = np.float32 if role == "target" else dtype       # the float dtype of the case
    tdt = dtype if role == "target" else np.int64
    b = base_case(shape, fdt, tdt)
    x, t, y, w, g = b["x"], b["t"], b["y"], b["w"], b["g"]
    src = {"input": x, "target": t, "prob": y, "weight": w, "grad_output": g}[role]
    v = make_layout(src, layout, tmp, name=role)
    check_layout(v, layout, src.shape)
    X = v if role == "input" else x
    Tg = v if role == "target" else t
    Y = v if role == "prob" else y
    Wt = v if role == "weight" else w
    G = v if role == "grad_output" else g
    cax = class_axis(len(shape))
    ctx = f"role={role} layout={layout} shape={shape} dtype={np.dtype(dtype).name} strides={v.strides}"
    kd = np.dtype(fdt)
    args = [X, Tg, Y, Wt, G]
    before = _snapshot(args)
    xr = _ref_float(x)                                    # reference operands
    key = (shape, kd.name, np.dtype(tdt).name)

    index_kw = dict(weight=Wt, ignore_index=IGNORE, label_smoothing=EPS)
    rkw = dict(weight=w, ignore_index=IGNORE, label_smoothing=EPS)
    results = []   # (what, got, expected, kind)

    if role in ("input", "target", "weight", "grad_output"):
        r_none = reference(key + ("idx-none",), lambda: ref.cross_entropy_with_grad(
            xr, t, reduction="none", grad_output=g, **rkw))
        r_mean = reference(key + ("idx-mean",), lambda: ref.cross_entropy_with_grad(
            xr, t, reduction="mean", **rkw))
        loss, grad = fastce.cross_entropy_with_grad(X, Tg, reduction="none", grad_output=G, **index_kw)
        results += [("ceg none loss", loss, r_none[0], "loss"), ("ceg none grad", grad, r_none[1], "grad")]
        if role != "grad_output":
            loss, grad = fastce.cross_entropy_with_grad(X, Tg, reduction="mean", **index_kw)
            results += [("ceg mean loss", loss, r_mean[0], "loss"), ("ceg mean grad", grad, r_mean[1], "grad")]
    if role in ("input", "target", "weight"):
        lp = reference(key + ("lp",), lambda: ref.log_softmax(xr, cax).astype(kd))
        LP = make_layout(lp, layout, tmp, name="lp") if role == "input" else lp
        r_nll = reference(key + ("nll",), lambda: ref.nll_loss(lp, t, weight=w, ignore_index=IGNORE, reduction="none"))
        results.append(("nll none", fastce.nll_loss(LP, Tg, weight=Wt, ignore_index=IGNORE, reduction="none"),
                        r_nll, "loss"))
    if role == "input":
        results.append(("ce none", fastce.cross_entropy(X, t, reduction="none", **rkw), r_none[0], "loss"))
        results.append(("ce mean", fastce.cross_entropy(X, t, reduction="mean", **rkw), r_mean[0], "loss"))
        mloss, mgrad = fastce.CrossEntropyLoss(**rkw).loss_and_grad(X, t)
        results += [("module loss", mloss, r_mean[0], "loss"), ("module grad", mgrad, r_mean[1], "grad")]
        for name, kind in (("log_softmax", "loss"), ("softmax", "grad"), ("logsumexp", "loss")):
            for ax in {cax, 0, -1}:
                r = reference(key + (name, ax), lambda: getattr(ref, name)(xr, ax))
                results.append((f"{name} axis={ax}", getattr(fastce, name)(X, axis=ax), r, kind))
    if role in ("input", "prob"):
        yr = _ref_float(y)
        r_prob = reference(key + ("prob",), lambda: ref.cross_entropy_with_grad(
            xr, yr, weight=w, reduction="mean", label_smoothing=EPS))
        loss, grad = fastce.cross_entropy_with_grad(X, Y, weight=w, reduction="mean", label_smoothing=EPS)
        results += [("prob loss", loss, r_prob[0], "loss"), ("prob grad", grad, r_prob[1], "grad")]

    for what, got, exp, kind in results:
        assert_close(_ref_float(got), exp, kd, what, ctx, kind=kind)
    _assert_unchanged(args, before, ctx)
    # results are native-endian arrays/scalars of the input's dtype, whatever the input's layout
    wrong = [f"{what}: {np.asarray(got).dtype.str}" for what, got, _, _ in results
             if np.asarray(got).dtype != kd]
    assert not wrong, f"result dtypes are not the native {kd}: {wrong} [{ctx}]"


# --------------------------------------------------------------------------
# out= in every layout, and out=input in every layout
# --------------------------------------------------------------------------

@pytest.mark.parametrize("role,layout,shape,dtype", _params(("out", "inplace"), _dtypes))
def test_layout_out(request, role, layout, shape, dtype):
    tmp = request.getfixturevalue("tmp_path") if layout == "memmap" else None
    b = base_case(shape, dtype)
    x, t, w, g = b["x"], b["t"], b["w"], b["g"]
    kw = dict(weight=w, ignore_index=IGNORE, label_smoothing=EPS, reduction="none", grad_output=g)
    r_loss, r_grad = reference((shape, np.dtype(dtype).name, "int64", "idx-none"),
                               lambda: ref.cross_entropy_with_grad(x, t, **kw))
    ctx = f"role={role} layout={layout} shape={shape} dtype={np.dtype(dtype).name}"
    writeable = layout != "readonly"
    if role == "out":
        o = make_layout(np.full(shape, np.nan, dtype), layout, tmp, writeable=writeable, name="out")
        X = x
        before = _snapshot([x, t, w, g])
    else:
        o = X = make_layout(x, layout, tmp, writeable=writeable, name="x")
        before = _snapshot([t, w, g])
    check_layout(o, layout, shape)
    o_before = np.asarray(o).tobytes()
    if not writeable:
        with pytest.raises(ValueError, match="read-only"):
            fastce.cross_entropy_with_grad(X, t, out=o, **kw)
        assert np.asarray(o).tobytes() == o_before, f"read-only out was written [{ctx}]"
        return
    loss, grad = fastce.cross_entropy_with_grad(X, t, out=o, **kw)
    assert grad is o, f"the returned gradient is not the out= array [{ctx}]"
    assert_close(loss, r_loss, dtype, "loss", ctx)
    assert_close(_ref_float(o), r_grad, dtype, "grad written to out", ctx, kind="grad")
    _assert_unchanged([x, t, w, g] if role == "out" else [t, w, g], before, ctx)


# --------------------------------------------------------------------------
# stride 0 (broadcast) arrays: read-only views with repeated values
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(6, 37), (3, 7, 5), (37,), (0, 7)], ids=shape_id)
def test_layout_broadcast(shape, dtype):
    rng = np.random.default_rng(7)
    cax = class_axis(len(shape))
    C = shape[cax]
    ts = target_shape_of(shape)
    row_shape = [1] * len(shape)
    row_shape[cax] = C
    xb = np.broadcast_to(rng.standard_normal(row_shape).astype(dtype), shape)   # stride 0 on N, d
    tb = np.broadcast_to(np.int64(3), ts)
    wb = np.broadcast_to(np.asarray(0.5, dtype), (C,))
    gb = np.broadcast_to(np.asarray(-1.5, dtype), ts)
    yb = np.broadcast_to(np.full(row_shape, 1.0 / C, dtype), shape)
    arrays = [xb, tb, wb, gb, yb]
    before = _snapshot(arrays)
    xc, tc, wc, gc, yc = (np.array(a) for a in arrays)
    ctx = f"broadcast shape={shape} dtype={np.dtype(dtype).name}"
    kw = dict(ignore_index=-100, label_smoothing=EPS)
    r = ref.cross_entropy_with_grad(xc, tc, weight=wc, reduction="none", grad_output=gc, **kw)
    got = fastce.cross_entropy_with_grad(xb, tb, weight=wb, reduction="none", grad_output=gb, **kw)
    assert_close(got[0], r[0], dtype, "loss", ctx)
    assert_close(got[1], r[1], dtype, "grad", ctx, kind="grad")
    rp = ref.cross_entropy_with_grad(xc, yc, weight=wc, reduction="sum", label_smoothing=EPS)
    gp = fastce.cross_entropy_with_grad(xb, yb, weight=wb, reduction="sum", label_smoothing=EPS)
    assert_close(gp[0], rp[0], dtype, "prob loss", ctx)
    assert_close(gp[1], rp[1], dtype, "prob grad", ctx, kind="grad")
    assert_close(fastce.nll_loss(xb, tb, weight=wb, reduction="sum"),
                 ref.nll_loss(xc, tc, weight=wc, reduction="sum"), dtype, "nll", ctx)
    assert_close(fastce.logsumexp(xb, axis=cax), ref.logsumexp(xc, cax), dtype, "logsumexp", ctx)
    with pytest.raises(ValueError):   # a broadcast view is read-only: no out= into it
        fastce.cross_entropy_with_grad(xb, tb, out=xb)
    _assert_unchanged(arrays, before, ctx)


# --------------------------------------------------------------------------
# unaligned data read in place by the kernels, under every ISA
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(9, 5), (6, 37), (3, 7, 5), (3, 12000), (1, 20000), (37,)], ids=shape_id)
def test_unaligned_every_isa(isa, shape, dtype):
    """Native, C-contiguous but unaligned arrays are not copied: the kernels of every ISA read
    (and write, out=) them in place, at every offset within a vector."""
    b = base_case(shape, dtype)
    x, t, y, w, g = b["x"], b["t"], b["y"], b["w"], b["g"]
    kw = dict(ignore_index=IGNORE, label_smoothing=EPS, reduction="none")
    r = reference((shape, np.dtype(dtype).name, "unal"), lambda: ref.cross_entropy_with_grad(
        x, t, weight=w, grad_output=g, **kw))
    rp = reference((shape, np.dtype(dtype).name, "unal-prob"), lambda: ref.cross_entropy_with_grad(
        x, y, weight=w, reduction="sum", label_smoothing=EPS))
    for off in (1, 3, np.dtype(dtype).itemsize + 1):
        X, Tg, Y, Wt, G, O = (make_layout(a, "unaligned", offset=off)
                              for a in (x, t.astype(np.int32), y, w, g, np.full_like(x, np.nan)))
        ctx = f"isa={isa} shape={shape} offset={off}"
        loss, grad = fastce.cross_entropy_with_grad(X, Tg, weight=Wt, grad_output=G, out=O, **kw)
        assert grad is O
        assert_close(loss, r[0], dtype, "loss", ctx)
        assert_close(O, r[1], dtype, "grad", ctx, kind="grad")
        loss, grad = fastce.cross_entropy_with_grad(X, Y, weight=Wt, reduction="sum", label_smoothing=EPS)
        assert_close(loss, rp[0], dtype, "prob loss", ctx)
        assert_close(grad, rp[1], dtype, "prob grad", ctx, kind="grad")
        np.testing.assert_array_equal(X, x)
        loss, grad = fastce.cross_entropy_with_grad(X, Tg, weight=Wt, grad_output=G, out=X, **kw)
        assert grad is X
        assert_close(X, r[1], dtype, "grad in place", ctx, kind="grad")
