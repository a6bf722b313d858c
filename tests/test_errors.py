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



@pytest.mark.parametrize("tdtype", [np.int64, np.int32, np.uint8, np.uint64])
def test_target_check_across_blocks_and_threads(tdtype):
    """The target check runs in fixed blocks of 65536 targets, on up to num_threads threads:
    the first bad target in order is reported, whichever block a thread reached first, and the
    weighted mean's denominator (summed block by block) is the same on 1 and 2 threads."""
    rng = np.random.default_rng(7)
    N, C = 5 * 65536 + 123, 7
    x = rng.standard_normal((N, C)).astype(np.float32)
    t = rng.integers(0, C, N).astype(tdtype)
    w = rng.uniform(0.1, 3.0, C).astype(np.float32)
    means = [fastce.cross_entropy(x, t, weight=w, num_threads=nt) for nt in (1, 2)]
    assert means[0] == means[1], means
    w_t = w.astype(np.float64)[t.astype(np.int64)]
    per_row = fastce.cross_entropy(x, t, weight=w, reduction="none")
    np.testing.assert_allclose(means[0], per_row.astype(np.float64).sum() / w_t.sum(), rtol=1e-5)
    bad = t.copy()
    bad[4 * 65536 + 5] = 9    # a later block
    bad[65536 + 17] = 8       # the first bad target in order
    for nt in (1, 2):
        with pytest.raises(IndexError, match=r"^Target 8 is out of bounds\.$"):
            fastce.cross_entropy(x, bad, num_threads=nt)

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
