"""Finite-difference (central, float64) checks of fastce's analytic gradients."""

from __future__ import annotations

import numpy as np
import pytest

import fastce
from _ce_testutil import fd_grad, make_case


FD_CASES = [
    # shape, target_kind, weighted, ignore, reduction, label_smoothing
    ((3, 5), "index", False, "none", "mean", 0.0),
    ((3, 5), "index", True, "neg", "mean", 0.3),
    ((3, 5), "index", True, "cls", "sum", 1.0),
    ((6,), "index", True, "none", "sum", 0.2),
    ((6,), "index", False, "cls", "mean", 0.0),
    ((2, 4, 3), "index", True, "neg", "none", 0.1),
    ((2, 3, 2, 2), "index", True, "cls", "mean", 0.5),
    ((3, 5), "prob", True, "none", "mean", 0.3),
    ((5,), "prob", False, "none", "sum", 0.0),
    ((2, 4, 3), "prob", False, "none", "none", 0.0),
    ((2, 3, 2, 2), "prob", True, "none", "mean", 1.0),
    ((4, 1), "index", True, "none", "mean", 0.4),
    ((2, 40), "index", True, "neg", "none", 0.1),
]


@pytest.mark.parametrize("shape,target_kind,weighted,ignore,reduction,eps", FD_CASES,
                         ids=[f"{c[0]}-{c[1]}-w{int(c[2])}-{c[3]}-{c[4]}-ls{c[5]}"
                              for c in FD_CASES])
def test_grad_matches_finite_differences(isa, shape, target_kind, weighted, ignore, reduction,
                                         eps):
    C = shape[0] if len(shape) == 1 else shape[1]
    case = make_case(None, C, np.float64, target_kind, ignore, weighted, reduction, seed=17,
                     shape=shape)
    kw = dict(weight=case["weight"], ignore_index=case["ignore_index"], reduction=reduction,
              label_smoothing=eps)
    g = np.asarray(case["grad_output"], np.float64)

    def f(z):
        return float(np.sum(g * fastce.cross_entropy(z, case["target"], **kw)))

    _, grad = fastce.cross_entropy_with_grad(case["x"], case["target"], grad_output=g, **kw)
    fd = fd_grad(f, case["x"])
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8,
                               err_msg=f"isa={isa} shape={shape} {target_kind} w={weighted} "
                                       f"ignore={ignore} {reduction} eps={eps}")
    # the gradient of each row sums to zero over the classes (softmax invariance)
    cax = 0 if len(shape) == 1 else 1
    np.testing.assert_allclose(grad.sum(axis=cax), 0.0, atol=1e-12)


def test_log_softmax_and_logsumexp_derivatives(isa):
    """d logsumexp / dx == softmax, checked by finite differences."""
    x = np.random.default_rng(2).standard_normal((3, 7))
    fd = fd_grad(lambda z: float(np.sum(fastce.logsumexp(z, axis=1))), x)
    np.testing.assert_allclose(fastce.softmax(x, axis=1), fd, rtol=1e-6, atol=1e-9)
