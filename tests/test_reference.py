"""Validate the oracle itself: fastce.reference (float64) vs torch (float64), and reference.score
vs a brute-force definition (row by row, top-k membership from a sort in argmax order)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from _ce_testutil import (fd_grad, INT_DTYPES, SHAPE_KINDS, assert_close, get_torch, make_case, ref,
                          seed_of, shape_id, torch_ce, torch_tensor)

CLASS_COUNTS = (1, 7, 17, 423)
F64 = np.float64


def _grid():
    for C, shape_kind, tk, ign, w, red, eps in itertools.product(
            CLASS_COUNTS, SHAPE_KINDS, ("index", "prob"), ("none", "neg", "cls"),
            (False, True), ("none", "mean", "sum"), (0.0, 0.1, 1.0)):
        if tk == "prob" and ign != "none":
            continue
        yield pytest.param(C, shape_kind, tk, ign, w, red, eps,
                           id=f"C{C}-{shape_kind}-{tk}-ign_{ign}-w{int(w)}-{red}-ls{eps}")


@pytest.mark.parametrize("C,shape_kind,target_kind,ignore,weighted,reduction,eps", list(_grid()))
def test_reference_vs_torch(C, shape_kind, target_kind, ignore, weighted, reduction, eps):
    get_torch()
    case = make_case(shape_kind, C, F64, target_kind, ignore, weighted, reduction,
                     seed=seed_of(C, shape_kind, target_kind, ignore, weighted, reduction, eps))
    kw = dict(weight=case["weight"], ignore_index=case["ignore_index"], reduction=reduction,
              label_smoothing=eps)
    t_loss, t_grad = torch_ce(case["x"], case["target"], grad_output=case["grad_output"], **kw)
    loss = ref.cross_entropy(case["x"], case["target"], **kw)
    loss2, grad = ref.cross_entropy_with_grad(case["x"], case["target"],
                                              grad_output=case["grad_output"], **kw)
    assert_close(loss, t_loss, F64, "ref loss vs torch")
    assert_close(loss2, t_loss, F64, "ref with_grad loss vs torch")
    assert_close(grad, t_grad, F64, "ref grad vs torch", kind="grad")
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == case["tshape"]
    else:
        assert isinstance(loss, np.float64)
    assert grad.shape == case["x"].shape and grad.dtype == F64
    # default grad_output == 1
    _, t_grad1 = torch_ce(case["x"], case["target"], **kw)
    _, grad1 = ref.cross_entropy_with_grad(case["x"], case["target"], **kw)
    assert_close(grad1, t_grad1, F64, "ref grad (grad_output=None) vs torch", kind="grad")


@pytest.mark.parametrize("int_dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_reference_target_dtypes(int_dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 200))
    vals = [120, 3, 0, 127, 7, 9] if int_dtype == np.int8 else [156, 3, 0, 199, 7, 9]
    t = np.array(vals).astype(int_dtype)  # uint8 156 == (uint8)-100: NOT ignored
    t_loss, t_grad = torch_ce(x, t.astype(np.int64), reduction="none")
    loss, grad = ref.cross_entropy_with_grad(x, t, reduction="none")
    assert_close(loss, t_loss, F64, "loss")
    assert_close(grad, t_grad, F64, "grad", kind="grad")


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_reference_nonfinite_vs_torch(reduction, eps, target_kind):
    inf, nan = np.inf, np.nan
    x = np.array([[1.0, inf, 2.0, 0.5],      # +inf -> NaN row
                  [-inf, -inf, -inf, -inf],  # all -inf -> NaN row
                  [1.0, -inf, 2.0, 0.5],     # -inf at a non-target / target
                  [nan, 1.0, 2.0, 0.5],      # NaN row
                  [0.3, -inf, 2.0, 0.5],
                  [0.1, 0.2, 0.3, 0.4]])
    if target_kind == "index":
        t = np.array([0, 0, 3, 2, 1, 2])      # row 4: -inf at the target -> inf loss
    else:
        t = np.full(x.shape, 0.25)
        t[2] = [0.5, 0.0, 0.5, 0.0]           # 0 * -inf -> NaN in torch
    g = np.linspace(0.5, 1.5, 6) if reduction == "none" else 0.5
    t_loss, t_grad = torch_ce(x, t, reduction=reduction, label_smoothing=eps, grad_output=g)
    loss, grad = ref.cross_entropy_with_grad(x, t, reduction=reduction, label_smoothing=eps,
                                             grad_output=g)
    assert_close(loss, t_loss, F64, "loss")
    assert_close(grad, t_grad, F64, "grad", kind="grad")


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("shape", [(0, 5), (2, 5, 0)])
def test_reference_empty_vs_torch(reduction, target_kind, shape):
    x = np.zeros(shape)
    tshape = (shape[0],) + shape[2:]
    t = np.zeros(tshape, np.int64) if target_kind == "index" else np.zeros(shape)
    t_loss, t_grad = torch_ce(x, t, reduction=reduction)
    loss, grad = ref.cross_entropy_with_grad(x, t, reduction=reduction)
    assert_close(loss, t_loss, F64, "loss")
    assert_close(grad, t_grad, F64, "grad")
    if reduction == "mean":
        assert np.isnan(loss)
    if reduction == "sum":
        assert loss == 0


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_reference_all_ignored_vs_torch(reduction, eps, weighted):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5))
    t = np.full(4, -100)
    w = rng.random(5) if weighted else None
    t_loss, t_grad = torch_ce(x, t, weight=w, reduction=reduction, label_smoothing=eps)
    loss, grad = ref.cross_entropy_with_grad(x, t, weight=w, reduction=reduction,
                                             label_smoothing=eps)
    assert_close(loss, t_loss, F64, "loss")
    assert_close(grad, t_grad, F64, "grad")
    assert np.all(grad == 0)


@pytest.mark.parametrize("shape,axis", [((7,), -1), ((7,), 0), ((4, 9), -1), ((4, 9), 0),
                                        ((3, 5, 6), 1), ((3, 5, 6), -1), ((3, 5, 6), 0)])
def test_reference_softmax_family_vs_torch(shape, axis):
    torch = get_torch()
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape) * 3
    xt = torch_tensor(x)
    assert_close(ref.log_softmax(x, axis), torch.log_softmax(xt, axis).numpy(), F64, "log_softmax")
    assert_close(ref.softmax(x, axis), torch.softmax(xt, axis).numpy(), F64, "softmax")
    assert_close(ref.logsumexp(x, axis), torch.logsumexp(xt, axis).numpy(), F64, "logsumexp")


def test_reference_softmax_family_nonfinite_vs_torch():
    torch = get_torch()
    inf, nan = np.inf, np.nan
    x = np.array([[1.0, inf, 2.0], [-inf, -inf, -inf], [1.0, -inf, 2.0], [nan, 1.0, 2.0],
                  [inf, inf, 0.0], [inf, -inf, 0.0]])
    xt = torch_tensor(x)
    for axis in (0, 1):
        assert_close(ref.log_softmax(x, axis), torch.log_softmax(xt, axis).numpy(), F64, "lsm")
        assert_close(ref.softmax(x, axis), torch.softmax(xt, axis).numpy(), F64, "sm")
        assert_close(ref.logsumexp(x, axis), torch.logsumexp(xt, axis).numpy(), F64, "lse")


@pytest.mark.parametrize("shape_kind", SHAPE_KINDS)
@pytest.mark.parametrize("ignore", ["none", "neg", "cls"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_reference_nll_loss_vs_torch(shape_kind, ignore, weighted, reduction):
    torch = get_torch()
    case = make_case(shape_kind, 6, F64, "index", ignore, weighted, reduction,
                     seed=seed_of("nll", shape_kind, ignore, weighted, reduction))
    lp = ref.log_softmax(case["x"], 0 if shape_kind == "C" else 1)
    w = case["weight"]
    t_out = torch.nn.functional.nll_loss(
        torch_tensor(lp), torch_tensor(case["target"].astype(np.int64)),
        weight=None if w is None else torch_tensor(w), ignore_index=case["ignore_index"],
        reduction=reduction).numpy()
    out = ref.nll_loss(lp, case["target"], weight=w, ignore_index=case["ignore_index"],
                       reduction=reduction)
    assert_close(out, t_out, F64, "nll_loss")


def test_reference_errors():
    x = np.zeros((3, 5))
    with pytest.raises(IndexError, match=r"^Target 7 is out of bounds\.$"):
        ref.cross_entropy(x, np.array([0, 7, 1]))
    with pytest.raises(IndexError, match=r"^Target -1 is out of bounds\.$"):
        ref.cross_entropy(x, np.array([0, -1, 1]))
    with pytest.raises(ValueError):
        ref.cross_entropy(x, np.array([0, 1, 1]), reduction="avg")
    for eps in (-0.1, 1.5):
        with pytest.raises(ValueError):
            ref.cross_entropy(x, np.array([0, 1, 1]), label_smoothing=eps)
    with pytest.raises(TypeError):
        ref.cross_entropy(np.zeros((3, 5), np.int32), np.array([0, 1, 1]))
    with pytest.raises(ValueError):
        ref.cross_entropy(x, np.array([0, 1]))


@pytest.mark.parametrize("shape,target_kind,weighted,ignore,reduction,eps", [
    ((3, 5), "index", False, "none", "mean", 0.0),
    ((3, 5), "index", True, "neg", "mean", 0.3),
    ((5,), "index", True, "none", "sum", 0.2),
    ((2, 4, 3), "index", True, "cls", "none", 0.1),
    ((3, 5), "prob", True, "none", "mean", 0.3),
    ((2, 4, 3), "prob", False, "none", "none", 0.0),
])
def test_reference_grad_finite_differences(shape, target_kind, weighted, ignore, reduction, eps):
    C = shape[0] if len(shape) == 1 else shape[1]
    case = make_case(None, C, F64, target_kind, ignore, weighted, reduction, seed=11, shape=shape)
    kw = dict(weight=case["weight"], ignore_index=case["ignore_index"], reduction=reduction,
              label_smoothing=eps)
    g = np.asarray(case["grad_output"], F64)

    def f(z):
        return float(np.sum(g * ref.cross_entropy(z, case["target"], **kw)))

    _, grad = ref.cross_entropy_with_grad(case["x"], case["target"], grad_output=g, **kw)
    np.testing.assert_allclose(grad, fd_grad(f, case["x"]), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("shape", [(2, 32000), (32000,), (2, 32000, 2)], ids=shape_id)
@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_reference_vs_torch_32000_classes(shape, target_kind, reduction, eps):
    get_torch()
    case = make_case(None, 32000, F64, target_kind, "neg" if len(shape) > 1 else "none", True,
                     reduction, seed=seed_of(shape, target_kind, reduction, eps), shape=shape)
    kw = dict(weight=case["weight"], ignore_index=case["ignore_index"], reduction=reduction,
              label_smoothing=eps)
    t_loss, t_grad = torch_ce(case["x"], case["target"], grad_output=case["grad_output"], **kw)
    loss, grad = ref.cross_entropy_with_grad(case["x"], case["target"],
                                             grad_output=case["grad_output"], **kw)
    assert_close(loss, t_loss, F64, "loss")
    assert_close(grad, t_grad, F64, "grad", kind="grad")


# --------------------------------------------------------------------------
# reference.score against a brute-force definition
# --------------------------------------------------------------------------

def _brute_score(x, t, ignore_index=-100, top_k=(1,), softcap=None):
    """Row by row in Python floats: the NLL from its formula, and the top-k membership from a
    sort of the classes by (logit descending, index ascending), argmax's order."""
    x = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
    t = [int(v) for v in np.asarray(t).reshape(-1)]
    ks = sorted({1, *top_k})
    nll_sum, tokens, correct = 0.0, 0, dict.fromkeys(ks, 0)
    for row, ti in zip(x, t):
        if ti == ignore_index:
            continue
        tokens += 1
        v = [float(a) for a in row]
        if softcap is not None:
            v = [softcap * math.tanh(a / softcap) for a in v]
        if any(math.isnan(a) for a in v):
            nll = math.nan
        else:
            m = max(v)
            lse = m if math.isinf(m) else m + math.log(sum(math.exp(a - m) for a in v))
            nll = lse - v[ti]             # inf - inf (a +inf target, an all -inf row) is NaN
        nll_sum += nll
        if math.isnan(nll):
            continue                       # a NaN-loss row is incorrect for every k
        order = sorted(range(len(v)), key=lambda c: (-v[c], c))
        for k in ks:
            correct[k] += order.index(ti) < k
    return nll_sum, tokens, correct


def _score_case(seed):
    """Small logits with many ties (integers), some -inf / +inf / NaN, some ignored rows."""
    rng = np.random.default_rng(seed)
    N, V = int(rng.integers(1, 9)), int(rng.integers(1, 7))
    x = rng.integers(-2, 3, (N, V)).astype(np.float64)
    if seed % 2:
        x += rng.standard_normal((N, V)) * 0.5 * (rng.random((N, V)) < 0.5)   # some ties broken
    special = rng.random((N, V))
    x[special < 0.12] = -np.inf
    if seed % 3 == 0:
        x[special > 0.97] = np.nan
    if seed % 4 == 0:
        x[(special > 0.93) & (special <= 0.97)] = np.inf
    ignore_index = -100 if seed % 5 else min(2, V - 1)
    t = rng.integers(0, V, N)
    t[rng.random(N) < 0.25] = ignore_index
    ks = tuple(int(k) for k in rng.integers(1, V + 2, 2))
    return x, t, ignore_index, ks


def _assert_score_equal(got, want, what=""):
    nll, tokens, correct = want
    assert got.tokens == tokens, what
    assert got.correct == correct, (what, got.correct, correct)
    if math.isnan(nll):
        assert math.isnan(got.nll_sum), (what, got.nll_sum)
    else:
        assert math.isclose(got.nll_sum, nll, rel_tol=1e-12, abs_tol=1e-12), (what, got.nll_sum, nll)


@pytest.mark.parametrize("seed", range(60))
def test_reference_score_vs_brute_force(seed):
    x, t, ii, ks = _score_case(seed)
    _assert_score_equal(ref.score(x, t, ignore_index=ii, top_k=ks),
                        _brute_score(x, t, ignore_index=ii, top_k=ks), f"seed {seed}")
    _assert_score_equal(ref.score(x, t, ignore_index=ii, top_k=ks, softcap=1.5),
                        _brute_score(x, t, ignore_index=ii, top_k=ks, softcap=1.5), f"seed {seed} softcap")


def test_reference_score_ties_nan_inf_and_ignored_rows():
    """One row of each kind the definition singles out, each with its own expected rank."""
    inf, nan = np.inf, np.nan
    x = np.array([[1.0, 1.0, 1.0, 1.0],       # all tied: the target ranks by its index
                  [1.0, 1.0, 1.0, 1.0],
                  [0.0, 3.0, 3.0, -1.0],      # a tie at the top, target the later one
                  [0.0, 2.0, nan, 5.0],       # NaN elsewhere: NaN loss, incorrect
                  [0.0, -inf, 1.0, 2.0],      # -inf target: infinite loss, ranked last
                  [-inf, -inf, -inf, -inf],   # all -inf: NaN loss, incorrect
                  [inf, 0.0, 1.0, 2.0],       # +inf target: NaN loss (inf - inf), incorrect
                  [9.0, 9.0, 9.0, 9.0]])      # ignored
    t = np.array([0, 3, 2, 3, 1, 0, 0, -100])
    got = ref.score(x, t, top_k=(2, 4))
    _assert_score_equal(got, _brute_score(x, t, top_k=(2, 4)))
    assert got.tokens == 7 and math.isnan(got.nll_sum)
    finite = [0, 1, 2, 4]
    nll_finite = ref.score(x[finite], t[finite], top_k=(2, 4))
    assert nll_finite.nll_sum == np.inf
    # in the top 1: row 0; top 2: + row 2; top 4: + rows 1 and 4 (NaN rows never count)
    assert got.correct == {1: 1, 2: 2, 4: 4}


@pytest.mark.parametrize("ignore_index", [-100, 0, 3])
def test_reference_score_nll_is_cross_entropy_sum(ignore_index):
    rng = np.random.default_rng(ignore_index + 200)
    x = rng.standard_normal((40, 9)) * 3
    t = rng.integers(0, 9, 40)
    t[::4] = ignore_index
    s = ref.score(x, t, ignore_index=ignore_index, top_k=9)
    np.testing.assert_allclose(s.nll_sum, ref.cross_entropy(x, t, ignore_index=ignore_index, reduction="sum"),
                               rtol=1e-12)
    assert s.tokens == int(np.count_nonzero(t != ignore_index))
    assert s.correct[9] == s.tokens          # every target is within the top V
    assert s.correct[1] == int(np.count_nonzero((x.argmax(axis=1) == t) & (t != ignore_index)))


def test_reference_score_unbatched_empty_and_errors():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 6))
    t = np.array([5, 0, 2])
    one = ref.score(x[1], t[1], top_k=(1, 3))
    _assert_score_equal(one, _brute_score(x[1:2], t[1:2], top_k=(1, 3)))
    assert one.tokens == 1
    for xe, te in ((np.zeros((0, 6)), np.zeros(0, np.int64)), (x, np.full(3, -100))):
        e = ref.score(xe, te, top_k=2)
        assert (e.nll_sum, e.tokens, e.correct) == (0.0, 0, {1: 0, 2: 0})
    with pytest.raises(IndexError, match=r"^Target 6 is out of bounds\.$"):
        ref.score(x, np.array([0, 6, 1]))
    with pytest.raises(TypeError):
        ref.score(x, t.astype(np.float64))
    with pytest.raises(TypeError):
        ref.score(x.astype(np.int64), t)
    with pytest.raises(ValueError):
        ref.score(x, t[:2])
    with pytest.raises(ValueError):
        ref.score(x[None], t[None])
    with pytest.raises(ValueError):
        ref.score(x, t, top_k=0)
