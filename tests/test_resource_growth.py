"""No growth of resources over many calls: 10^4 repeated calls of every entry point (small
arrays, and the error paths) leave resident memory where it was (within a tolerant bound)
and leak no reference to the arrays they were given.

Resident memory: psutil where installed, else /proc/self/statm. Per call the arrays involved
are about 4 KiB, so a leak of one array per call would grow memory by about 40 MiB over 10^4
calls: the bound (8 MiB) catches that and tolerates allocator noise.
"""

from __future__ import annotations

import gc
import os
import sys

import numpy as np
import pytest

import fastce

CALLS = 10_000
WARMUP = 300
BOUND = 8 * 2**20


try:
    import psutil
    _PROC = psutil.Process()
except ImportError:  # pragma: no cover
    _PROC = None


def rss():
    if _PROC is not None:
        return _PROC.memory_info().rss
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


N, C = 16, 64
_rng = np.random.default_rng(0)
X = _rng.standard_normal((N, C)).astype(np.float32)
XD = _rng.standard_normal((4, C, 4))
X16 = X.astype(np.float16)
XF = np.asfortranarray(X)
XS = _rng.standard_normal((N, 2 * C)).astype(np.float32)[:, ::2]   # strided: copied per call
T = _rng.integers(0, C, N)
TD = _rng.integers(0, C, (4, 4)).astype(np.uint8)
Y = np.full((N, C), 1.0 / C, np.float32)
W = (_rng.random(C) + 0.5).astype(np.float32)
G = _rng.standard_normal(N).astype(np.float32)
OUT = np.empty_like(X)
OUTF = np.empty((C, N), np.float32).T                                  # non-contiguous out=
TBAD = T.copy()
TBAD[3] = C + 7
MOD = fastce.CrossEntropyLoss(weight=W, label_smoothing=0.1)


def _raises(fn, exc):
    def call():
        try:
            fn()
        except exc:
            return
        raise AssertionError("did not raise")
    return call


ENTRY_POINTS = {
    "cross_entropy": lambda: fastce.cross_entropy(X, T),
    "cross_entropy-none-weight-smooth": lambda: fastce.cross_entropy(X, T, W, reduction="none", label_smoothing=0.1),
    "cross_entropy-prob": lambda: fastce.cross_entropy(X, Y),
    "cross_entropy-kdim-uint8": lambda: fastce.cross_entropy(XD, TD, reduction="sum"),
    "cross_entropy-float16": lambda: fastce.cross_entropy(X16, T),
    "cross_entropy-strided": lambda: fastce.cross_entropy(XS, T),
    "cross_entropy-2threads": lambda: fastce.cross_entropy(X, T, num_threads=2),
    "cross_entropy_with_grad": lambda: fastce.cross_entropy_with_grad(X, T),
    "cross_entropy_with_grad-none-gout": lambda: fastce.cross_entropy_with_grad(X, T, reduction="none", grad_output=G),
    "cross_entropy_with_grad-out": lambda: fastce.cross_entropy_with_grad(X, T, out=OUT),
    "cross_entropy_with_grad-out-noncontig": lambda: fastce.cross_entropy_with_grad(X, T, out=OUTF),
    "cross_entropy_with_grad-fortran": lambda: fastce.cross_entropy_with_grad(XF, T),
    "cross_entropy_with_grad-float16": lambda: fastce.cross_entropy_with_grad(X16, T),
    "cross_entropy_with_grad-prob": lambda: fastce.cross_entropy_with_grad(X, Y, label_smoothing=0.2),
    "CrossEntropyLoss": lambda: MOD(X, T),
    "CrossEntropyLoss.loss_and_grad": lambda: MOD.loss_and_grad(X, T),
    "CrossEntropyLoss-construct": lambda: fastce.CrossEntropyLoss(weight=W, reduction="sum"),
    "nll_loss": lambda: fastce.nll_loss(X, T, W, reduction="none"),
    "log_softmax": lambda: fastce.log_softmax(X),
    "softmax": lambda: fastce.softmax(XD, axis=1),
    "logsumexp": lambda: fastce.logsumexp(X, axis=0),
    "get_config": fastce.get_config,
    "set_isa": lambda: fastce.set_isa(fastce.get_isa()),
    "error-target-oob": _raises(lambda: fastce.cross_entropy(X, TBAD), IndexError),
    "error-target-oob-with_grad": _raises(lambda: fastce.cross_entropy_with_grad(X, TBAD, out=OUT), IndexError),
    "error-nll-target-oob": _raises(lambda: fastce.nll_loss(X, TBAD), IndexError),
    "error-bad-weight": _raises(lambda: fastce.cross_entropy(X, T, weight=W[:3]), ValueError),
    "error-bad-reduction": _raises(lambda: fastce.cross_entropy(X, T, reduction="avg"), ValueError),
    "error-out-overlap": _raises(lambda: fastce.cross_entropy_with_grad(X, T, out=X[::-1]), ValueError),
    "error-num_threads": _raises(lambda: fastce.softmax(X, num_threads=0), ValueError),
}

ARRAYS = [X, XD, X16, XF, XS, T, TD, Y, W, G, OUT, OUTF, TBAD]


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_no_growth(name):
    fn = ENTRY_POINTS[name]
    for _ in range(WARMUP):
        fn()
    gc.collect()
    rss()
    refs = [sys.getrefcount(a) for a in ARRAYS]
    objects = len(gc.get_objects())
    before = rss()
    for _ in range(CALLS):
        fn()
    gc.collect()
    grown = rss() - before
    assert [sys.getrefcount(a) for a in ARRAYS] == refs, f"{name}: leaks references to its arguments"
    assert len(gc.get_objects()) - objects < 100, f"{name}: {len(gc.get_objects()) - objects} more live objects"
    assert grown < BOUND, f"{name}: resident memory grew by {grown / 2**20:.1f} MiB over {CALLS} calls"
