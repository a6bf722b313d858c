"""Bad-input errors (each under every available ISA)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import fastce


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)


@pytest.mark.parametrize("bad", [7, 5, -1, -99, 1000])
def test_target_out_of_range(isa, x, bad):
    t = np.array([0, bad, 1])
    msg = f"^{re.escape(f'Target {bad} is out of bounds.')}$"
    with pytest.raises(IndexError, match=msg):
        fastce.cross_entropy(x, t)
    with pytest.raises(IndexError, match=msg):
        fastce.cross_entropy_with_grad(x, t)
    with pytest.raises(IndexError, match=msg):
        fastce.cross_entropy(x, t, reduction="none", label_smoothing=0.3)
    with pytest.raises(IndexError, match=msg):
        fastce.CrossEntropyLoss()(x, t)


def test_target_out_of_range_other_shapes(isa):
    x3 = np.zeros((2, 4, 3), np.float64)
    t3 = np.zeros((2, 3), np.int64)
    t3[1, 2] = 4
    with pytest.raises(IndexError, match=r"^Target 4 is out of bounds\.$"):
        fastce.cross_entropy(x3, t3)
    with pytest.raises(IndexError, match=r"^Target 9 is out of bounds\.$"):
        fastce.cross_entropy_with_grad(np.zeros(4), np.array(9))
    with pytest.raises(IndexError, match=r"^Target 200 is out of bounds\.$"):
        fastce.cross_entropy(np.zeros((2, 5)), np.array([1, 200], np.uint8))
    # an ignored target may hold any value; only non-ignored ones are checked
    fastce.cross_entropy(np.zeros((2, 5)), np.array([1, 7]), ignore_index=7)


@pytest.mark.parametrize("reduction", [None, 1])
def test_non_string_reduction(isa, x, reduction):
    with pytest.raises((TypeError, ValueError)):
        fastce.cross_entropy(x, np.array([0, 1, 2]), reduction=reduction)


def test_out_of_range_with_out(isa, x):
    with pytest.raises(IndexError):
        fastce.cross_entropy_with_grad(x, np.array([0, 1, 9]), out=np.empty_like(x))


@pytest.mark.parametrize("reduction", ["avg", "MEAN", "", "elementwise_mean"])
def test_bad_reduction(isa, x, reduction):
    with pytest.raises(ValueError):
        fastce.cross_entropy(x, np.array([0, 1, 2]), reduction=reduction)
    with pytest.raises(ValueError):
        fastce.cross_entropy_with_grad(x, np.array([0, 1, 2]), reduction=reduction)
    with pytest.raises(ValueError):
        fastce.nll_loss(x, np.array([0, 1, 2]), reduction=reduction)


@pytest.mark.parametrize("eps", [-0.1, 1.0001, 2.0, -1e-12])
def test_bad_label_smoothing(isa, x, eps):
    with pytest.raises(ValueError):
        fastce.cross_entropy(x, np.array([0, 1, 2]), label_smoothing=eps)
    with pytest.raises(ValueError):
        fastce.cross_entropy_with_grad(x, np.array([0, 1, 2]), label_smoothing=eps)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_, np.complex128])
def test_non_floating_input(isa, dtype):
    xi = np.zeros((3, 5), dtype)
    t = np.array([0, 1, 2])
    with pytest.raises(TypeError):
        fastce.cross_entropy(xi, t)
    with pytest.raises(TypeError):
        fastce.cross_entropy_with_grad(xi, t)
    with pytest.raises(TypeError):
        fastce.log_softmax(xi)
    with pytest.raises(TypeError):
        fastce.softmax(xi)
    with pytest.raises(TypeError):
        fastce.logsumexp(xi)


def test_bad_shapes(isa, x):
    with pytest.raises(ValueError):       # wrong batch size
        fastce.cross_entropy(x, np.array([0, 1]))
    with pytest.raises(ValueError):       # target with the class axis kept
        fastce.cross_entropy(x, np.zeros((3, 1), np.int64))
    with pytest.raises(ValueError):       # weight of the wrong length
        fastce.cross_entropy(x, np.array([0, 1, 2]), weight=np.ones(4, np.float32))
    with pytest.raises(ValueError):       # unbatched input needs a 0-d target
        fastce.cross_entropy(x[0], np.array([1]))
    with pytest.raises(ValueError):       # probability target of the wrong shape
        fastce.cross_entropy(x, np.ones((3, 4), np.float32))
    with pytest.raises(ValueError):       # grad_output of the wrong shape for "none"
        fastce.cross_entropy_with_grad(x, np.array([0, 1, 2]), reduction="none",
                                       grad_output=np.ones(4, np.float32))
    with pytest.raises((TypeError, ValueError)):   # 0-d input
        fastce.cross_entropy(np.float32(1.0), np.array(0))


def test_float_index_target_rejected(isa, x):
    with pytest.raises((TypeError, ValueError)):
        fastce.cross_entropy(x, np.array([0.0, 1.0, 2.0], np.float32))
