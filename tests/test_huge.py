"""Extreme sizes: more than 2**31 elements.

slow (run with `-m slow` or FASTCE_RUN_SLOW=1, else skipped; skipped below ~12 GB of available
memory):
  * an (N, C) float32 input of more than 2**31 elements (8.6 GB): every element offset past
    2**31 must be computed right (no 32-bit index arithmetic anywhere), loss and in-place
    gradient;
  * the same for a K-dimensional (N, C, S) input, where the strided-class kernels index
    n*C*S + c*S + s.

The fast extreme-value tests live beside the other numerics: huge magnitudes, rows that are -inf
but for one place and float32's relative accuracy in test_api.py, C = 262144 in
test_cross_entropy_grid.py.
"""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

import fastce
from _ce_testutil import close, close_loss, ref
from fastce.bench import available_memory

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
