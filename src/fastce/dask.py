"""fastce on dask arrays: cross-entropy, its gradient, scoring and comparison of logits that are
chunked in any way, on one machine or a `distributed` cluster, with the same code.

    import dask.array as da, fastce.dask as fd
    x = da.from_zarr(...)                     # (N, C) or (N, C, d1..dk) logits, any chunks
    loss = fd.cross_entropy(x, target, label_smoothing=0.1)     # lazy 0-d dask array
    loss.compute()                            # or with a distributed.Client active

`import fastce` never imports dask; this module does (import it only where dask is installed).

How it runs
-----------
Every block of x (rows i, classes j, positions k) becomes a task computing
``fastce.shard_stats(block, target_block, class_start=offset_j, ...)``: per-row statistics of
that block's classes (max-shifted log-sum-exp, the target's logit if the target falls in the
block, the smoothing sums). For each row block, the statistics of its class blocks are merged
by a binary tree of `ShardStats.merge` tasks (exact, associative), and the merged statistics
give the row block's losses; the row blocks' sums (and kept-weight denominators) are added at
the root. What crosses the network: O(rows) statistics per class block, never logits. The
gradient reuses the merged statistics: each block's gradient is `fastce.shard_grad` of that
block alone, chunked like x. Scoring adds a second pass: each block counts, per row, the
classes that rank above the target (the target's logit comes from the merged statistics), and
the counts add up across class blocks.

The graph is built from the blocks' dask.delayed objects (x.to_delayed()), so dask never
calls a kernel on an empty placeholder array to guess a result's type. Each task runs the
kernels on one thread by default (num_threads=1): the parallelism comes from tasks, as
`distributed` intends (it sets OMP_NUM_THREADS=1 in its workers), and a worker never starts an
OpenMP team per task. The kernels release the GIL, so a threaded worker runs tasks in parallel.
"""

from __future__ import annotations

import itertools
import math
import operator

import dask
import dask.array as da
import numpy as np

from ._compare import Comparison
from ._compare import compare as _compare
from ._score import Score, _check_top_k
from ._shards import shard_grad, shard_stats
from ._validate import check_reduction

__all__ = ["cross_entropy", "cross_entropy_with_grad", "score", "compare"]


def _tree(items, combine):
    """A binary tree of delayed `combine` over a list of delayed items (one item: itself)."""
    items = list(items)
    while len(items) > 1:
        pairs = [dask.delayed(combine)(a, b) for a, b in zip(items[::2], items[1::2])]
        items = pairs + ([items[-1]] if len(items) % 2 else [])
    return items[0]


class _Plan:
    """x (N, C, d1..dk) as a grid of blocks, with the target's blocks aligned to its rows and
    positions, and the class offsets of its class chunks."""

    def __init__(self, x, target, weight=None):
        if not isinstance(x, da.Array):
            x = da.asarray(x)
        if x.ndim < 2:
            raise ValueError(f"fastce.dask takes batched logits (N, C) or (N, C, d1, ..., dk), got shape {x.shape}")
        if not (x.dtype.kind == "f" or x.dtype.name == "bfloat16"):
            raise TypeError(f"input must be a floating-point dask array, got dtype {x.dtype}")
        if any(math.isnan(n) for n in x.shape):
            raise ValueError("input has unknown chunk sizes; call x.compute_chunk_sizes() first")
        self.x, self.C = x, x.shape[1]
        row_chunks = (x.chunks[0],) + x.chunks[2:]
        tshape = (x.shape[0],) + x.shape[2:]
        if target is not None:
            t = target if isinstance(target, da.Array) else da.from_array(np.asarray(target), chunks=row_chunks)
            if t.shape != tshape:
                raise ValueError(f"Expected target of shape {tshape} for input of shape {x.shape}, got {t.shape}")
            if t.dtype.kind not in "iu":
                raise TypeError(f"class-index targets must be integers, got dtype {t.dtype}")
            self.t = t.rechunk(row_chunks).to_delayed()
        self.w = None if weight is None else np.asarray(weight)
        if self.w is not None and self.w.shape != (self.C,):
            raise ValueError(f"weight must have shape ({self.C},), got {self.w.shape}")
        self.blocks = x.to_delayed()
        self.offsets = np.concatenate([[0], np.cumsum(x.chunks[1])]).astype(int)
        self.row_grid = [range(len(c)) for c in row_chunks]
        self.row_chunks = row_chunks

    def row_blocks(self):
        """Index tuples (i, k2, ...) of the row blocks (every axis but the class axis)."""
        return itertools.product(*self.row_grid)

    def block(self, r, j):
        return self.blocks[(r[0], j) + tuple(r[1:])]

    def block_shape(self, r, j=None):
        rows = tuple(self.row_chunks[a][r[a]] for a in range(len(r)))
        if j is None:
            return rows
        return (rows[0], self.x.chunks[1][j]) + rows[1:]

    def weight(self, j):
        return None if self.w is None else self.w[self.offsets[j]:self.offsets[j + 1]]

    def stats(self, r, options, num_threads):
        """The merged ShardStats of row block r (delayed)."""
        parts = [dask.delayed(shard_stats)(self.block(r, j), self.t[r], class_start=int(self.offsets[j]),
                                           num_classes=self.C, weight=self.weight(j), num_threads=num_threads,
                                           **options)
                 for j in range(len(self.offsets) - 1)]
        return _tree(parts, operator.add)

    def assemble(self, pieces, dtype, with_classes):
        """A dask array from delayed blocks {row block r (and class block j): delayed ndarray}."""
        def arr(key):
            r, j = key if with_classes else (key, None)
            return da.from_delayed(pieces[key], shape=self.block_shape(r, j), dtype=dtype)

        grid = np.empty([len(g) for g in self.row_grid] + ([len(self.offsets) - 1] if with_classes else []),
                        dtype=object)
        for key in pieces:
            r, j = key if with_classes else (key, None)
            idx = r + ((j,) if with_classes else ())
            grid[idx] = arr(key)
        if with_classes:  # the class axis is axis 1 of the arrays: move it there in the grid
            grid = np.moveaxis(grid, -1, 1)
        return da.block(grid.tolist())


def _options(ignore_index, label_smoothing, z_loss):
    return dict(ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss)


def _row_part(stats, reduction, dtype):
    """A row block's share: its per-row losses (reduction 'none'), or (sum, kept weight)."""
    losses = stats.row_losses()
    if reduction == "none":
        return losses.reshape(stats.row_shape).astype(dtype)
    red = stats.reduction("mean")
    return float(np.sum(losses)), red.denominator


def _total(parts, reduction, dtype):
    """The reduced loss from the row blocks' (sum, kept weight) parts (torch's 'mean' rule)."""
    total = math.fsum(p[0] for p in parts)
    if reduction == "sum":
        return np.asarray(total, dtype=dtype)
    d = math.fsum(p[1] for p in parts)
    return np.asarray(total / d if d != 0 else np.nan, dtype=dtype)


def _row_parts(stats, reduction, dtype):
    """{row block: delayed _row_part}: one task per row block, shared by the loss and the gradient's scale."""
    return {r: dask.delayed(_row_part)(s, reduction, dtype) for r, s in stats.items()}


def _loss(plan, parts, reduction, dtype):
    if reduction == "none":
        return plan.assemble(parts, dtype, False)
    return da.from_delayed(dask.delayed(_total)(list(parts.values()), reduction, dtype), shape=(), dtype=dtype)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, *,
                  z_loss=0.0, num_threads=1):
    """fastce.cross_entropy of a dask array chunked in any way (rows, classes, positions).

    input : dask array (N, C) or (N, C, d1, ..., dk), float; target : integer array (dask or
    NumPy) of shape (N, d1, ..., dk); weight : NumPy array (C,), optional. Options as
    fastce.cross_entropy (index targets). num_threads : threads per task (default 1).

    Returns a lazy dask array: 0-d for 'mean' and 'sum', the target's shape for 'none'.
    """
    check_reduction(reduction)
    plan = _Plan(input, target, weight)
    opts = _options(ignore_index, label_smoothing, z_loss)
    stats = {r: plan.stats(r, opts, num_threads) for r in plan.row_blocks()}
    return _loss(plan, _row_parts(stats, reduction, plan.x.dtype), reduction, plan.x.dtype)


def _grad_block(xb, tb, stats, class_start, weight, scale, gout):
    """One block's gradient: shard_grad with reduction 'sum' and grad_output = scale (* gout)."""
    g = scale if gout is None else gout * scale
    return shard_grad(xb, tb, stats, class_start=class_start, weight=weight,
                      reduction="none" if gout is not None else "sum", grad_output=g)


def _scale(parts, reduction, grad_output):
    """grad_output / D for 'mean' (D = the kept targets' weights of every row block), else grad_output."""
    g = 1.0 if grad_output is None else float(grad_output)
    if reduction == "sum":
        return g
    d = math.fsum(p[1] for p in parts)
    return g / d if d != 0 else math.nan


def cross_entropy_with_grad(input, target, weight=None, ignore_index=-100, reduction="mean",
                            label_smoothing=0.0, *, grad_output=None, z_loss=0.0, num_threads=1):
    """(loss, grad) of `cross_entropy`, both lazy; grad is chunked like input. The merged
    statistics of the loss feed every block's gradient (`shard_grad`), so each logit block is
    read once for the statistics and once for its gradient, and no logits cross the network.

    grad_output : scalar for 'mean' and 'sum'; for 'none' an array (NumPy or dask) of the loss's
        shape. Other parameters: see `cross_entropy`.
    """
    check_reduction(reduction)
    plan = _Plan(input, target, weight)
    opts = _options(ignore_index, label_smoothing, z_loss)
    stats = {r: plan.stats(r, opts, num_threads) for r in plan.row_blocks()}
    parts = _row_parts(stats, reduction, plan.x.dtype)
    loss = _loss(plan, parts, reduction, plan.x.dtype)
    gouts = None
    if reduction == "none":
        scale = 1.0
        if grad_output is not None:
            g = grad_output if isinstance(grad_output, da.Array) else da.from_array(np.asarray(grad_output))
            g = da.broadcast_to(g, (plan.x.shape[0],) + plan.x.shape[2:]).rechunk(plan.row_chunks).to_delayed()
            gouts = g
    else:
        if grad_output is not None and np.ndim(grad_output) != 0:
            raise ValueError(f"grad_output must be a scalar for reduction='{reduction}', got shape "
                             f"{np.shape(grad_output)}")
        scale = dask.delayed(_scale)(list(parts.values()), reduction, grad_output)
    pieces = {(r, j): dask.delayed(_grad_block)(plan.block(r, j), plan.t[r], stats[r], int(plan.offsets[j]),
                                               plan.weight(j), scale, None if gouts is None else gouts[r])
              for r in plan.row_blocks() for j in range(len(plan.offsets) - 1)}
    return loss, plan.assemble(pieces, plan.x.dtype, True)


def _rank_block(xb, tb, stats, class_start, ignore_index):
    """Per row of one 2-D block: #{c in block : x_c > x_t} + #{c in block, c < t : x_c == x_t}."""
    xt = stats.xt  # the merged target logits
    t = np.asarray(tb).astype(np.int64)
    x = np.asarray(xb)
    cls = class_start + np.arange(x.shape[1])
    with np.errstate(invalid="ignore"):
        above = (x > xt[:, None]) | ((x == xt[:, None]) & (cls[None, :] < t[:, None]))
    return np.count_nonzero(above, axis=1).astype(np.int64)


def _score_rows(stats, ranks, top_k, ignore_index):
    kept = stats.target != ignore_index
    nll = (stats.lse_partial - stats.xt)[kept]
    rank = sum(ranks)[kept] if ranks else np.zeros(int(kept.sum()), np.int64)
    valid = ~np.isnan(nll)
    correct = {k: int(np.count_nonzero(valid & (rank < k))) for k in top_k}
    return Score(float(nll.sum()), int(kept.sum()), top_k, correct)


def score(input, target, top_k=(1,), ignore_index=-100, compute=True, num_threads=1):
    """fastce.score of dask logits (N, V), chunked along rows and classes: a `Score` (NLL, tokens,
    perplexity, top-k accuracy), or a dask Delayed of it with compute=False.

    A row split across class chunks is scored exactly: its log-sum-exp and target logit come from
    the merged statistics of its chunks, and the classes ranking above the target (argmax's tie
    order) are counted per chunk and added."""
    plan = _Plan(input, target)
    if plan.x.ndim != 2:
        raise ValueError(f"score takes logits of shape (N, V), got {plan.x.shape}")
    ks = _check_top_k(top_k, plan.C)
    opts = _options(ignore_index, 0.0, 0.0)
    scores = []
    for r in plan.row_blocks():
        st = plan.stats(r, opts, num_threads)
        ranks = [dask.delayed(_rank_block)(plan.block(r, j), plan.t[r], st, int(plan.offsets[j]), ignore_index)
                 for j in range(len(plan.offsets) - 1)]
        scores.append(dask.delayed(_score_rows)(st, ranks, ks, ignore_index))
    total = _tree(scores, operator.add) if scores else dask.delayed(Score.empty)(ks)
    return total.compute() if compute else total


def compare(input, ref_input, target=None, *, ignore_index=-100, top_k=(1,), compute=True, num_threads=1):
    """fastce.compare of two dask logit arrays of one shape (N, V), chunked along rows: a
    `Comparison`, or a dask Delayed of it with compute=False. Each row block is compared in one
    task (the class axis is brought into one chunk if it is not: KL, argmaxes and ranks need
    whole rows), and the row blocks' Comparisons are merged by a tree."""
    x = input if isinstance(input, da.Array) else da.asarray(input)
    y = ref_input if isinstance(ref_input, da.Array) else da.asarray(ref_input)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"compare takes two dask arrays of one shape (N, V), got {x.shape} and {y.shape}")
    ks = _check_top_k(top_k, x.shape[1])
    x = x.rechunk({1: -1})
    y = y.rechunk({0: x.chunks[0], 1: -1})
    xb, yb = x.to_delayed()[:, 0], y.to_delayed()[:, 0]
    tb = [None] * len(xb)
    if target is not None:
        t = target if isinstance(target, da.Array) else da.from_array(np.asarray(target), chunks=(x.chunks[0],))
        if t.shape != (x.shape[0],):
            raise ValueError(f"Expected target of shape ({x.shape[0]},), got {t.shape}")
        tb = t.rechunk((x.chunks[0],)).to_delayed()
    parts = [dask.delayed(_compare)(a, b, c, ignore_index=ignore_index, top_k=ks, num_threads=num_threads)
             for a, b, c in zip(xb, yb, tb)]
    total = _tree(parts, operator.add) if parts else dask.delayed(Comparison.empty)(ks, target is not None)
    return total.compute() if compute else total
