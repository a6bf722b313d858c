"""z_loss, softcap and return_lse (options beyond torch), on every ISA and kernel path.

Oracles: the float64 reference (src/fastce/reference.py, written from the formulas), central
finite differences of fastce's own loss (float64), and, for softcap, torch autograd through
cap * tanh(x / cap).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastce
from _ce_testutil import assert_close, fd_grad, get_torch, make_case
from _ce_testutil import ref as REF

Z = 1e-2
CAP = 3.0

# (shape, target kind, weighted, ignore, label smoothing): every kernel path —
# rows (C > 16), small rows (C <= 16), split rows (few rows, C >= 8192, several threads),
# K-dimensional tiles (S > 1), unbatched.
CASES = [
    ((37, 101), "index", False, "cls", 0.0),
    ((37, 101), "index", True, "neg", 0.2),
    ((40, 7), "index", True, "cls", 0.1),
    ((2, 20000), "index", True, "cls", 0.0),
    ((3, 9, 5, 4), "index", True, "neg", 0.1),
    ((11,), "index", False, "none", 0.0),
    ((37, 101), "prob", True, "none", 0.3),
    ((4, 6, 10), "prob", False, "none", 0.0),
]


def _case(shape, kind, weighted, ignore, reduction, dtype, seed=3):
    c = make_case(None, shape[0] if len(shape) == 1 else shape[1], dtype, kind, ignore=ignore,
                  weighted=weighted, reduction=reduction, seed=seed, shape=shape, scale=4.0)
    return c


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape,kind,weighted,ignore,eps", CASES)
@pytest.mark.parametrize("opts", [dict(z_loss=Z), dict(softcap=CAP), dict(z_loss=Z, softcap=CAP)],
                         ids=["z", "cap", "z+cap"])
def test_matches_reference(isa, opts, shape, kind, weighted, ignore, eps, reduction, dtype):
    c = _case(shape, kind, weighted, ignore, reduction, dtype)
    kw = dict(weight=c["weight"], ignore_index=c["ignore_index"], reduction=reduction, label_smoothing=eps)
    x_before = c["x"].copy()
    loss, grad, lse = fastce.cross_entropy_with_grad(c["x"], c["target"], grad_output=c["grad_output"],
                                                     return_lse=True, num_threads=2, **kw, **opts)
    rl, rg, rlse = REF.cross_entropy_with_grad(c["x"], c["target"], grad_output=c["grad_output"],
                                               return_lse=True, **kw, **opts)
    ctx = f"{isa} {shape} {kind} {opts}"
    assert_close(loss, rl, dtype, "loss", ctx, scale=5)
    assert_close(grad, rg, dtype, "grad", ctx, kind="grad", scale=5)
    assert_close(lse, rlse, dtype, "lse", ctx, scale=5)
    assert grad.dtype == dtype and lse.dtype == dtype and lse.shape == c["tshape"]
    np.testing.assert_array_equal(c["x"], x_before)
    # the forward alone gives the same loss and lse
    l2, lse2 = fastce.cross_entropy(c["x"], c["target"], return_lse=True, num_threads=2, **kw, **opts)
    assert_close(l2, rl, dtype, "forward loss", ctx, scale=5)
    assert_close(lse2, rlse, dtype, "forward lse", ctx, scale=5)


@pytest.mark.parametrize("shape,kind,weighted,ignore,eps", CASES[:1] + CASES[4:6] + CASES[6:7])
def test_off_values_change_nothing(isa, shape, kind, weighted, ignore, eps):
    """z_loss=0 and softcap=None are bit-identical to not passing them."""
    c = _case(shape, kind, weighted, ignore, "none", np.float32)
    kw = dict(weight=c["weight"], ignore_index=c["ignore_index"], reduction="none", label_smoothing=eps)
    a = fastce.cross_entropy_with_grad(c["x"], c["target"], **kw)
    b = fastce.cross_entropy_with_grad(c["x"], c["target"], z_loss=0.0, softcap=None, **kw)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_lse_of_ignored_rows_is_computed(isa):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 300))
    t = rng.integers(0, 300, 20)
    t[::3] = -100
    for shape_x, tt in [(x, t), (x.reshape(20, 300, 1).repeat(3, 2), np.repeat(t[:, None], 3, 1))]:
        _, lse = fastce.cross_entropy(shape_x, tt, reduction="none", return_lse=True)
        ref = REF.logsumexp(shape_x, axis=1)
        np.testing.assert_allclose(lse, ref, rtol=1e-12)
    # the class-split path (2 rows of 20000 classes on 2 threads), one row ignored
    x2 = rng.standard_normal((2, 20000))
    _, lse = fastce.cross_entropy(x2, np.array([5, -100]), return_lse=True, num_threads=2)
    np.testing.assert_allclose(lse, REF.logsumexp(x2, axis=1), rtol=1e-12)


@pytest.mark.parametrize("shape,kind,weighted,ignore,eps", [
    ((3, 5), "index", True, "cls", 0.2),
    ((2, 4, 3), "index", True, "neg", 0.1),
    ((3, 5), "prob", True, "none", 0.3),
    ((6,), "index", False, "none", 0.0),
])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_grad_matches_finite_differences(isa, shape, kind, weighted, ignore, eps, reduction):
    c = _case(shape, kind, weighted, ignore, reduction, np.float64, seed=11)
    opts = dict(weight=c["weight"], ignore_index=c["ignore_index"], reduction=reduction,
                label_smoothing=eps, z_loss=0.05, softcap=2.5)
    go = c["grad_output"]

    def f(x):
        loss = fastce.cross_entropy(x, c["target"], **opts)
        return float(np.sum(np.asarray(loss) * go))

    _, g = fastce.cross_entropy_with_grad(c["x"], c["target"], grad_output=go, **opts)
    np.testing.assert_allclose(g, fd_grad(f, c["x"]), rtol=1e-6, atol=1e-8)


def test_softcap_matches_torch_autograd(isa):
    torch = get_torch()   # skips only where torch is not installed
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((64, 333)) * 20).astype(np.float32)
    t = rng.integers(0, 333, 64)
    w = rng.random(333).astype(np.float32) + 0.5
    xt = torch.tensor(x, requires_grad=True)
    capped = 30.0 * torch.tanh(xt / 30.0)
    ref = torch.nn.functional.cross_entropy(capped, torch.tensor(t), weight=torch.tensor(w), label_smoothing=0.1)
    ref.backward()
    loss, g = fastce.cross_entropy_with_grad(x, t, weight=w, label_smoothing=0.1, softcap=30.0)
    np.testing.assert_allclose(loss, ref.item(), rtol=1e-5)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-4, atol=1e-8)


def test_softcap_float16_and_any_layout(isa):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((30, 50)) * 8).astype(np.float16)
    t = rng.integers(0, 50, 30)
    rl, rg = REF.cross_entropy_with_grad(x.astype(np.float32), t, softcap=4.0)
    loss, g = fastce.cross_entropy_with_grad(x, t, softcap=4.0)
    assert g.dtype == np.float16
    np.testing.assert_allclose(float(loss), rl, rtol=2e-3)
    np.testing.assert_allclose(g.astype(np.float64), rg, atol=2e-4)
    xf = np.asfortranarray(x.astype(np.float64))
    before = xf.copy()
    loss, g = fastce.cross_entropy_with_grad(xf, t, softcap=4.0, out=np.empty_like(xf))
    np.testing.assert_array_equal(xf, before)  # capping happens on a copy, never on the input
    rl, rg = REF.cross_entropy_with_grad(xf, t, softcap=4.0)
    np.testing.assert_allclose(loss, rl, rtol=1e-12)
    np.testing.assert_allclose(g, rg, rtol=1e-10, atol=1e-14)


def test_softcap_in_place_gradient():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 5000)).astype(np.float32) * 10  # several conversion blocks
    t = rng.integers(0, 5000, 300)
    rl, rg = REF.cross_entropy_with_grad(x, t, softcap=15.0, z_loss=1e-3)
    loss, g = fastce.cross_entropy_with_grad(x, t, softcap=15.0, z_loss=1e-3, out=x)
    assert g is x
    np.testing.assert_allclose(loss, rl, rtol=1e-5)
    np.testing.assert_allclose(x, rg, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("name,value,exc,msg", [
    ("z_loss", -1.0, ValueError, "z_loss must be a finite number >= 0"),
    ("z_loss", float("nan"), ValueError, "z_loss must be a finite number >= 0"),
    ("z_loss", float("inf"), ValueError, "z_loss must be a finite number >= 0"),
    ("z_loss", "0.1", TypeError, "z_loss must be a float"),
    ("z_loss", None, TypeError, "z_loss must be a float"),
    ("softcap", 0.0, ValueError, "softcap must be None or a finite number > 0"),
    ("softcap", -3.0, ValueError, "softcap must be None or a finite number > 0"),
    ("softcap", float("inf"), ValueError, "softcap must be None or a finite number > 0"),
    ("softcap", "30", TypeError, "softcap must be a float"),
    ("softcap", np.array([1.0, 2.0]), TypeError, "softcap must be a float"),
])
@pytest.mark.parametrize("fn", ["cross_entropy", "cross_entropy_with_grad"])
def test_bad_option_values(fn, name, value, exc, msg):
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(exc, match=msg):
        getattr(fastce, fn)(x, np.array([0, 1]), **{name: value})
