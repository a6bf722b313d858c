"""The small-call path (fastce._kernels.small_call): the common case of cross_entropy and
cross_entropy_with_grad without the general path's Python validation.

It must give the general path's bits (same kernels, same target check, same reduction), take
every case it claims, and decline everything else so that the general path raises its errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastce
from fastce import _functional, _kernels

INT_DTYPES = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)


def general(x, t, with_grad, **kw):
    """The general path, whatever the small-call path would do."""
    p = _functional._CrossEntropyCall(x, t, None, kw.get("ignore_index", -100), kw.get("reduction", "mean"),
                                      0.0, kw.get("num_threads"))
    if not with_grad:
        return p.run()
    gout, gscale = p.grad_scale(None)
    out = np.empty(x.shape, dtype=x.dtype)
    return p.run(_functional.OUT_GRAD, out=out, gout=gout, gscale=gscale), out


def case(rng, N, C, dtype, tdtype, ignore_some):
    x = (rng.standard_normal((N, C)) * 3).astype(dtype)
    hi = min(C, np.iinfo(tdtype).max + 1)
    t = rng.integers(0, hi, size=N).astype(tdtype)
    if ignore_some and N > 1 and np.iinfo(tdtype).min < 0:
        t[:: 3] = -1
    return x, t


def assert_same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N,C", [(1, 1), (5, 3), (64, 10), (33, 17), (64, 100), (7, 1000), (1024, 100)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_small_call_gives_the_general_paths_bits(isa, dtype, N, C, reduction):
    rng = np.random.default_rng(N * 1000 + C)
    for tdtype in INT_DTYPES:
        x, t = case(rng, N, C, dtype, tdtype, ignore_some=True)
        kw = dict(reduction=reduction, ignore_index=-1)
        assert _kernels.small_call(_kernels.ISA_NAMES.index(isa), x, t, reduction, -1, True, None) is not None
        loss, grad = fastce.cross_entropy_with_grad(x, t, **kw)
        gloss, ggrad = general(x, t, True, **kw)
        assert_same_bits(loss, gloss)
        assert_same_bits(grad, ggrad)
        assert_same_bits(fastce.cross_entropy(x, t, **kw), general(x, t, False, **kw))


def test_all_ignored_mean_is_nan_and_grad_zero():
    x = np.ones((4, 5), np.float32)
    t = np.full(4, -100)
    loss, grad = fastce.cross_entropy_with_grad(x, t)
    gloss, ggrad = general(x, t, True)
    assert np.isnan(loss) and np.isnan(gloss)
    assert_same_bits(grad, ggrad)
    assert fastce.cross_entropy(x, t, reduction="sum") == 0


def test_threaded_work_in_the_small_call_path(monkeypatch):
    """Work large enough for threads (but below the buffer cache's 16 MiB) asks the thread
    resolver, and gives the bits of every thread count's general path."""
    rng = np.random.default_rng(3)
    x, t = case(rng, 2048, 300, np.float32, np.int64, ignore_some=True)
    for n in (1, 2, None):
        loss, grad = fastce.cross_entropy_with_grad(x, t, num_threads=n, ignore_index=-1)
        gloss, ggrad = general(x, t, True, num_threads=n, ignore_index=-1)
        assert_same_bits(loss, gloss)
        assert_same_bits(grad, ggrad)


def _general_path_forbidden(*args, **kwargs):
    raise AssertionError("the general path ran")


def test_common_case_never_reaches_the_general_path(monkeypatch):
    monkeypatch.setattr(_functional, "_CrossEntropyCall", _general_path_forbidden)
    x = np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32)
    t = np.arange(64) % 10
    fastce.cross_entropy(x, t)
    fastce.cross_entropy_with_grad(x, t, reduction="sum", num_threads=1)
    fastce.CrossEntropyLoss().loss_and_grad(x, t.astype(np.uint8))


@pytest.mark.parametrize("variant", [
    "float16", "non-contiguous", "byteswapped", "fortran", "1-d", "3-d", "bool target", "float target",
    "target shape", "weight", "label_smoothing", "z_loss", "softcap", "return_lse", "out", "grad_output",
    "ignore_index float", "num_threads 0", "reduction", "empty", "list input", "bad target",
])
def test_declined_cases_take_the_general_path(monkeypatch, variant):
    """Each variant is declined by the small-call path: the general path (here a stub that
    records the call) runs instead, so its validation and errors apply unchanged."""
    calls = []

    class Stub:
        def __init__(self, *args, **kwargs):
            calls.append(args)
            raise RuntimeError("general path")

    monkeypatch.setattr(_functional, "_CrossEntropyCall", Stub)
    x = np.random.default_rng(1).standard_normal((8, 5)).astype(np.float32)
    t = np.arange(8) % 5
    kw = {}
    if variant == "float16":
        x = x.astype(np.float16)
    elif variant == "non-contiguous":
        x = np.repeat(x, 2, axis=1)[:, ::2]
    elif variant == "byteswapped":
        x = x.astype(">f4")
    elif variant == "fortran":
        x = np.asfortranarray(x)
    elif variant == "1-d":
        x, t = x[0], t[0]
    elif variant == "3-d":
        x, t = x[:, :, None], t[:, None]
    elif variant == "bool target":
        t = t > 2
    elif variant == "float target":
        t = t.astype(np.float32)
    elif variant == "target shape":
        t = t[:4]
    elif variant == "weight":
        kw["weight"] = np.ones(5, np.float32)
    elif variant == "label_smoothing":
        kw["label_smoothing"] = 0.1
    elif variant == "z_loss":
        kw["z_loss"] = np.float64(0.0)  # not a plain float: declined even when zero
    elif variant == "softcap":
        kw["softcap"] = 30.0
    elif variant == "return_lse":
        kw["return_lse"] = True
    elif variant == "ignore_index float":
        kw["ignore_index"] = -1.0
    elif variant == "num_threads 0":
        kw["num_threads"] = 0
    elif variant == "reduction":
        kw["reduction"] = "batchmean"
    elif variant == "empty":
        x, t = x[:0], t[:0]
    elif variant == "list input":
        x = x.tolist()
    elif variant == "bad target":
        t = t.copy()
        t[3] = 7
    with_grad_kw = {}
    if variant == "out":
        with_grad_kw["out"] = np.empty_like(x)
    elif variant == "grad_output":
        with_grad_kw["grad_output"] = 2.0
    if variant not in ("out", "grad_output"):
        with pytest.raises(RuntimeError, match="general path"):
            fastce.cross_entropy(x, t, **kw)
    with pytest.raises(RuntimeError, match="general path"):
        fastce.cross_entropy_with_grad(x, t, **kw, **with_grad_kw)
    assert calls


def test_errors_are_the_general_paths():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(IndexError, match="Target 4 is out of bounds."):
        fastce.cross_entropy_with_grad(x, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match="num_threads"):
        fastce.cross_entropy(x, np.array([0, 1, 2]), num_threads=0)
    with pytest.raises(ValueError, match="reduction"):
        fastce.cross_entropy(x, np.array([0, 1, 2]), reduction="avg")


def test_inputs_are_not_modified_and_results_are_fresh():
    rng = np.random.default_rng(5)
    x, t = case(rng, 16, 7, np.float64, np.int32, ignore_some=False)
    x0, t0 = x.copy(), t.copy()
    loss, grad = fastce.cross_entropy_with_grad(x, t, reduction="none")
    assert_same_bits(x, x0)
    assert_same_bits(t, t0)
    assert not np.shares_memory(grad, x) and not np.shares_memory(loss, x)
    assert grad.flags.c_contiguous and grad.flags.owndata and loss.dtype == np.float64


def test_sum_f64_is_pairwise_and_keeps_infinities():
    rng = np.random.default_rng(7)
    for n in (0, 1, 7, 8, 9, 127, 128, 129, 1000, 100003):
        v = rng.standard_normal(n) * 10 ** rng.uniform(-3, 3, n)
        exact = math.fsum(v)
        # pairwise: error bounded by ~log2(n) ulps of sum|v| (a plain loop's grows with n)
        assert abs(_kernels.sum_f64(v) - exact) <= 4 * max(1, math.log2(max(n, 2))) * np.finfo(float).eps * np.abs(v).sum()
        assert _kernels.sum_f64(v) == _kernels.sum_f64(v.copy())  # a fixed order
    ints = rng.integers(-1000, 1000, 5000).astype(np.float64)
    assert _kernels.sum_f64(ints) == ints.sum()  # exact on integers
    assert _kernels.sum_f64(np.array([1.0, np.inf, 2.0])) == np.inf
    assert np.isnan(_kernels.sum_f64(np.array([np.inf, -np.inf])))
    assert np.isnan(_kernels.sum_f64(np.array([1.0, np.nan] * 100)))
    assert _kernels.sum_f64(np.array([])) == 0.0
