"""Extreme sizes and magnitudes.

slow (run with `-m slow`, else skipped; skipped below ~12 GB of available memory):
  * an (N, C) float32 input of more than 2**31 elements (8.6 GB): every element offset past
    2**31 must be computed right (no 32-bit index arithmetic anywhere), loss and in-place
    gradient;
  * the same for a K-dimensional (N, C, S) input, where the strided-class kernels index
    n*C*S + c*S + s.

fast, under every ISA:
  * float32 logits of magnitude 1e30 and float64 of 1e300 (no overflow, exact shift
    invariance), with ties at the maximum;
  * rows that are -inf everywhere but one place (at every SIMD lane position), against torch;
  * C = 262144 (few long rows, split across threads);
  * on finite input the loss is within relative 1e-6 (float32) of the float64 reference.
"""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

import fastce
from _ce_testutil import maybe_torch, ref, torch_ce
from fastce._bench import available_memory

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


@pytest.fixture
def slow_selected(request):
    """The slow tests run only when asked for (`-m slow`, as pyproject.toml's marker says, or
    FASTCE_RUN_SLOW=1): a plain `pytest tests` must not allocate 8.6 GB."""
    if "slow" not in (request.config.getoption("markexpr", "") or "") and not os.environ.get("FASTCE_RUN_SLOW"):
        pytest.skip("slow: run with -m slow")


def need_memory(gib):
    have = available_memory() or 0
    if have < gib * 2**30:
        pytest.skip(f"needs about {gib} GiB of available memory, {have / 2**30:.1f} GiB available")


def close(actual, expected, rtol, atol=0.0, what=""):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def close_loss(loss, r, xmax, what=""):
    """Per-element losses: relative 1e-6, plus one float32 ulp of the largest logit involved
    (`xmax`, broadcast against the losses), since a loss near 0 is a difference of logits and
    float32 cannot do better (torch's own float32 error there is of that size or larger)."""
    loss = np.asarray(loss, np.float64)
    r = np.asarray(r, np.float64)
    err = np.abs(loss - r)
    bound = 1e-6 * np.abs(r) + np.asarray(xmax, np.float64) * 2.0**-23
    if not np.all(err <= bound):
        excess = np.broadcast_to(err - bound, err.shape)
        i = np.unravel_index(np.argmax(excess), err.shape)
        raise AssertionError(f"{what}: {np.count_nonzero(excess > 0)} losses off; worst at {i}: "
                             f"{loss[i]} vs reference {r[i]}, error {err[i]:.3g} > bound {np.broadcast_to(bound, err.shape)[i]:.3g}")


LOSS_RTOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}

# --------------------------------------------------------------------------
# more than 2**31 elements (slow)
# --------------------------------------------------------------------------

PERIOD = 4099   # rows of the repeating pattern; prime, so it lines up with no power of two


@pytest.mark.slow
def test_huge_rows_more_than_2p31_elements(slow_selected):
    need_memory(12)
    C = 1000
    N = 2**31 // C + 8                      # 2_147_491_000 elements, 8.6 GB of float32
    assert N * C > 2**31
    rng = np.random.default_rng(31)
    tile = (rng.standard_normal((PERIOD, C)) * 3).astype(np.float32)
    t_tile = rng.integers(0, C, PERIOD)
    x = np.empty((N, C), np.float32)
    for r0 in range(0, N, PERIOD):
        r1 = min(N, r0 + PERIOD)
        x[r0:r1] = tile[: r1 - r0]
    t = np.resize(t_tile, N)
    straddle = 2**31 // C                   # the row whose elements cross offset 2**31
    rows = np.array(sorted({0, 1, PERIOD - 1, PERIOD, N // 2, straddle - 1, straddle, straddle + 1,
                            N - PERIOD, N - 2, N - 1}))
    saved = x[rows].copy()
    try:
        r_loss, r_grad = ref.cross_entropy_with_grad(saved, t[rows], reduction="none")
        r_tile = ref.cross_entropy(tile, t_tile, reduction="none")

        loss = fastce.cross_entropy(x, t, reduction="none")
        assert loss.shape == (N,) and loss.dtype == np.float32
        tmax = np.abs(tile).max(axis=1)
        close_loss(loss[rows], r_loss, tmax[rows % PERIOD], what="per-row loss at rows around 2**31 elements")
        # every row, through the pattern: row i holds tile row i % PERIOD
        full = (N // PERIOD) * PERIOD
        close_loss(loss[:full].reshape(-1, PERIOD), r_tile, tmax, what="per-row loss, all rows")
        close_loss(loss[full:], r_tile[: N - full], tmax[: N - full], what="per-row loss, last rows")
        counts = np.bincount(np.arange(N) % PERIOD, minlength=PERIOD)
        r_mean = float((r_tile * counts).sum() / N)
        close(fastce.cross_entropy(x, t), r_mean, 1e-6, what="mean over all rows")
        del loss
        gc.collect()

        # gradient over the logits (out=input: no second 8.6 GB array)
        loss_sum, grad = fastce.cross_entropy_with_grad(x, t, reduction="sum", out=x)
        assert grad is x
        close(loss_sum, float((r_tile * counts).sum()), 1e-6, what="sum over all rows")
        close(x[rows], r_grad, 1e-5, 1e-7, what="gradient rows around 2**31 elements")
        # every row was written: a gradient row sums to 0 (softmax - onehot)
        sums = x.sum(axis=1, dtype=np.float32)
        bad = np.flatnonzero(np.abs(sums) > 1e-4)
        assert bad.size == 0, f"{bad.size} gradient rows do not sum to 0, e.g. rows {bad[:10]}"
    finally:
        del x
        gc.collect()


@pytest.mark.slow
def test_huge_kdim_more_than_2p31_elements(slow_selected):
    need_memory(12)
    Nn, C = 2, 64
    S = 2**31 // (Nn * C) + 8                # (2, 64, 16_777_224): 2_147_484_672 elements
    assert Nn * C * S > 2**31
    rng = np.random.default_rng(32)
    tile = (rng.standard_normal((Nn, C, PERIOD)) * 3).astype(np.float32)
    t_tile = rng.integers(0, C, (Nn, PERIOD)).astype(np.uint8)
    x = np.empty((Nn, C, S), np.float32)
    for s0 in range(0, S, PERIOD):
        s1 = min(S, s0 + PERIOD)
        x[:, :, s0:s1] = tile[:, :, : s1 - s0]
    t = np.stack([np.resize(t_tile[n], S) for n in range(Nn)])
    pos = [(0, 0), (0, S - 1), (1, 0), (1, 12345), (1, S // 2), (1, S - PERIOD), (1, S - 2), (1, S - 1)]
    saved = np.stack([x[n, :, s] for n, s in pos])              # (k, C)
    ts = np.array([t[n, s] for n, s in pos])
    try:
        r_loss, r_grad = ref.cross_entropy_with_grad(saved, ts, reduction="none")
        r_tile = ref.cross_entropy(tile, t_tile, reduction="none")  # (Nn, PERIOD)

        loss = fastce.cross_entropy(x, t, reduction="none")
        assert loss.shape == (Nn, S)
        tmax = np.abs(tile).max(axis=1)                          # (Nn, PERIOD)
        close_loss([loss[n, s] for n, s in pos], r_loss, [tmax[n, s % PERIOD] for n, s in pos],
                   what="loss at positions past 2**31 elements")
        full = (S // PERIOD) * PERIOD
        for n in range(Nn):
            close_loss(loss[n, :full].reshape(-1, PERIOD), r_tile[n], tmax[n],
                       what=f"loss, all positions of n={n}")
            close_loss(loss[n, full:], r_tile[n, : S - full], tmax[n, : S - full],
                       what=f"loss, last positions of n={n}")
        del loss
        gc.collect()

        _, grad = fastce.cross_entropy_with_grad(x, t, reduction="sum", out=x)
        assert grad is x
        close(np.stack([x[n, :, s] for n, s in pos]), r_grad, 1e-5, 1e-7, what="gradient past 2**31 elements")
        for n in range(Nn):
            sums = x[n].sum(axis=0, dtype=np.float32)            # over classes, per position
            bad = np.flatnonzero(np.abs(sums) > 1e-4)
            assert bad.size == 0, f"n={n}: {bad.size} positions' gradients do not sum to 0, e.g. {bad[:10]}"
    finally:
        del x
        gc.collect()


# --------------------------------------------------------------------------
# huge magnitudes
# --------------------------------------------------------------------------

MAGNITUDES = [(np.float32, 1e30), (np.float64, 1e300)]


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
