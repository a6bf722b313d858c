"""Dask arrays through fastce: cross-entropy, its gradient, scoring and comparison of logits.

The logits may be chunked in any way, on one machine or a `distributed` cluster, with the same
code::

    import dask.array as da, fastce.dask as fd
    x = da.from_zarr(...)                     # (N, C) or (N, C, d1..dk) logits, any chunks
    loss = fd.cross_entropy(x, target, label_smoothing=0.1)     # lazy 0-d dask array
    loss.compute()                            # or with a distributed.Client active

`import fastce` never imports dask; this module does (import it only where dask is installed).

How it runs. Every block of x (rows i, classes j, positions k) becomes a task computing
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
from typing import TYPE_CHECKING, Any, Literal, Optional, Tuple, Union, cast, overload

import dask.array as da
import numpy as np
from dask.delayed import delayed

from ._compare import Comparison
from ._compare import compare as _compare
from ._score import Score, _check_top_k
from ._shards import shard_grad, shard_stats
from ._typing import ArrayLike, NumThreads, Reduction, TopK
from ._validate import check_reduction

if TYPE_CHECKING:
    from dask.delayed import Delayed

#: A dask array, or an array that ``da.asarray`` / ``da.from_array`` turns into one.
DaskArrayLike = Union[da.Array, ArrayLike]

__all__ = ["cross_entropy", "cross_entropy_with_grad", "score", "compare"]


def _tree(items, combine):
    """A binary tree of delayed `combine` over a list of delayed items (one item: itself)."""
    items = list(items)
    while len(items) > 1:
        pairs = [delayed(combine)(a, b) for a, b in zip(items[::2], items[1::2])]
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
        parts = [delayed(shard_stats)(self.block(r, j), self.t[r], class_start=int(self.offsets[j]),
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
    return {r: delayed(_row_part)(s, reduction, dtype) for r, s in stats.items()}


def _loss(plan, parts, reduction, dtype):
    if reduction == "none":
        return plan.assemble(parts, dtype, False)
    return da.from_delayed(delayed(_total)(list(parts.values()), reduction, dtype), shape=(), dtype=dtype)


def cross_entropy(input: DaskArrayLike, target: DaskArrayLike, weight: Optional[ArrayLike] = None,
                  ignore_index: int = -100, reduction: Reduction = "mean", label_smoothing: float = 0.0, *,
                  z_loss: float = 0.0, num_threads: NumThreads = 1) -> da.Array:
    """`fastce.cross_entropy` of a dask array chunked in any way (rows, classes, positions).

    Lazy: builds a graph of `fastce.shard_stats` tasks, one per block, merged per row block by a
    tree of `ShardStats.merge` tasks; no logits cross between tasks, only O(rows) statistics.

    Parameters
    ----------
    input : dask.array.Array, shape (N, C) or (N, C, d1, ..., dk)
        The logits, floating-point, any chunks (a NumPy array is wrapped in one chunk).
    target : dask.array.Array or array_like of int, shape (N,) or (N, d1, ..., dk)
        Class indices in [0, C), or `ignore_index`; rechunked to `input`'s rows.
    weight : array_like, shape (C,), optional
        A NumPy array of class weights.
    ignore_index : int, default -100
        As for `fastce.cross_entropy`.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        As for `fastce.cross_entropy`.
    label_smoothing : float, default 0.0
        As for `fastce.cross_entropy`.
    z_loss : float, default 0.0
        As for `fastce.cross_entropy`.
    num_threads : int, optional, default 1
        Threads per task (None: every core); the parallelism comes from the tasks.

    Returns
    -------
    dask.array.Array
        The lazy loss, of `input`'s dtype: 0-d for 'mean' and 'sum', the target's shape for
        'none'.

    Raises
    ------
    ValueError
        If `input` is not batched (2-D or more), has unknown chunk sizes, or a shape or
        `reduction` does not fit.
    TypeError
        If `input` is not floating-point or `target` is not made of integers.

    See Also
    --------
    cross_entropy_with_grad : The loss and its gradient, both lazy.
    fastce.shard_stats : What each block's task computes.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> import fastce.dask as fd
    >>> x = np.array([[2.0, 1.0, 0.1, -1.0], [0.5, 2.5, 0.2, 0.0], [0.3, 0.2, 3.0, 1.0]])
    >>> target = np.array([0, 3, 2])
    >>> loss = fd.cross_entropy(da.from_array(x, chunks=(2, 2)), target)
    >>> loss.shape
    ()
    >>> round(float(loss.compute()), 4)
    1.153
    >>> fd.cross_entropy(da.from_array(x, chunks=(2, 2)), target, reduction="none").compute().round(4)
    array([0.4493, 2.7759, 0.2338])
    """
    check_reduction(reduction)
    plan = _Plan(input, target, weight)
    opts = _options(ignore_index, label_smoothing, z_loss)
    stats = {r: plan.stats(r, opts, num_threads) for r in plan.row_blocks()}
    loss: da.Array = _loss(plan, _row_parts(stats, reduction, plan.x.dtype), reduction, plan.x.dtype)
    return loss


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


def cross_entropy_with_grad(input: DaskArrayLike, target: DaskArrayLike, weight: Optional[ArrayLike] = None,
                            ignore_index: int = -100, reduction: Reduction = "mean", label_smoothing: float = 0.0,
                            *, grad_output: Optional[DaskArrayLike] = None, z_loss: float = 0.0,
                            num_threads: NumThreads = 1) -> Tuple[da.Array, da.Array]:
    """(loss, grad) of `cross_entropy`, both lazy; grad is chunked like input.

    The merged statistics of the loss feed every block's gradient (`fastce.shard_grad`), so each
    logit block is read once for the statistics and once for its gradient, and no logits cross
    the network.

    Parameters
    ----------
    input : dask.array.Array, shape (N, C) or (N, C, d1, ..., dk)
        As for `cross_entropy`.
    target : dask.array.Array or array_like of int
        As for `cross_entropy`.
    weight : array_like, shape (C,), optional
        As for `cross_entropy`.
    ignore_index : int, default -100
        As for `cross_entropy`.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        As for `cross_entropy`.
    label_smoothing : float, default 0.0
        As for `cross_entropy`.
    grad_output : float or array_like or dask.array.Array, optional
        A scalar for 'mean' and 'sum'; for 'none' an array (NumPy or dask) of the loss's shape.
        Defaults to 1.
    z_loss : float, default 0.0
        As for `cross_entropy`.
    num_threads : int, optional, default 1
        As for `cross_entropy`.

    Returns
    -------
    loss : dask.array.Array
        As `cross_entropy` returns it.
    grad : dask.array.Array
        The gradient with respect to `input`: its shape, dtype and chunks.

    Raises
    ------
    ValueError
        As for `cross_entropy`; also if `grad_output` is not a scalar for 'mean' or 'sum'.
    TypeError
        As for `cross_entropy`.

    See Also
    --------
    cross_entropy : The loss alone.
    fastce.shard_grad : What each block's gradient task computes.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> import fastce
    >>> import fastce.dask as fd
    >>> x = np.array([[2.0, 1.0, 0.1, -1.0], [0.5, 2.5, 0.2, 0.0], [0.3, 0.2, 3.0, 1.0]])
    >>> target = np.array([0, 3, 2])
    >>> loss, grad = fd.cross_entropy_with_grad(da.from_array(x, chunks=(2, 2)), target, label_smoothing=0.1)
    >>> grad.chunks
    ((2, 1), (2, 2))
    >>> round(float(loss.compute()), 4)
    1.238
    >>> want = fastce.cross_entropy_with_grad(x, target, label_smoothing=0.1)[1]
    >>> bool(np.allclose(grad.compute(), want))
    True
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
        if grad_output is not None and np.ndim(cast(Any, grad_output)) != 0:
            raise ValueError(f"grad_output must be a scalar for reduction='{reduction}', got shape "
                             f"{np.shape(cast(Any, grad_output))}")
        scale = delayed(_scale)(list(parts.values()), reduction, grad_output)
    pieces = {(r, j): delayed(_grad_block)(plan.block(r, j), plan.t[r], stats[r], int(plan.offsets[j]),
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


@overload
def score(input: DaskArrayLike, target: DaskArrayLike, top_k: TopK = ..., ignore_index: int = ...,
          compute: Literal[True] = ..., num_threads: NumThreads = ...) -> Score: ...
@overload
def score(input: DaskArrayLike, target: DaskArrayLike, top_k: TopK = ..., ignore_index: int = ..., *,
          compute: Literal[False], num_threads: NumThreads = ...) -> Delayed: ...
@overload
def score(input: DaskArrayLike, target: DaskArrayLike, top_k: TopK = ..., ignore_index: int = ...,
          compute: bool = ..., num_threads: NumThreads = ...) -> Union[Score, Delayed]: ...


def score(input: DaskArrayLike, target: DaskArrayLike, top_k: TopK = (1,), ignore_index: int = -100,
          compute: bool = True, num_threads: NumThreads = 1) -> Union[Score, Delayed]:
    """`fastce.score` of dask logits (N, V), chunked along rows and classes.

    A row split across class chunks is scored exactly: its log-sum-exp and target logit come from
    the merged statistics of its chunks, and the classes ranking above the target (argmax's tie
    order) are counted per chunk and added.

    Parameters
    ----------
    input : dask.array.Array, shape (N, V)
        The logits, floating-point, any chunks.
    target : dask.array.Array or array_like of int, shape (N,)
        Class indices in [0, V), or `ignore_index`.
    top_k : int or sequence of int, default (1,)
        As for `fastce.score`.
    ignore_index : int, default -100
        As for `fastce.score`.
    compute : bool, default True
        Compute the result (with the current scheduler), or return it as a dask Delayed.
    num_threads : int, optional, default 1
        Threads per task (None: every core).

    Returns
    -------
    Score or dask.delayed.Delayed
        The `Score` (NLL, tokens, perplexity, top-k accuracy); a Delayed of it with
        ``compute=False``.

    Raises
    ------
    ValueError
        If `input` is not 2-D, a shape does not fit, or a k of `top_k` is outside [1, V].
    TypeError
        If `input` is not floating-point or `target` is not made of integers.

    See Also
    --------
    fastce.score : The same for a NumPy array.
    compare : Two models' logits, row block by row block.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> import fastce.dask as fd
    >>> x = np.array([[2.0, 1.0, 0.1, -1.0], [0.5, 2.5, 0.2, 0.0], [0.3, 0.2, 3.0, 1.0]])
    >>> s = fd.score(da.from_array(x, chunks=(2, 2)), np.array([0, 3, 2]), top_k=2)
    >>> s.count, s.correct, round(s.perplexity, 4)
    (3, {1: 2, 2: 2}, 3.1676)
    >>> lazy = fd.score(da.from_array(x, chunks=(2, 2)), np.array([0, 3, 2]), compute=False)
    >>> lazy.compute().accuracy
    0.6666666666666666
    """
    plan = _Plan(input, target)
    if plan.x.ndim != 2:
        raise ValueError(f"score takes logits of shape (N, V), got {plan.x.shape}")
    ks = _check_top_k(top_k, plan.C)
    opts = _options(ignore_index, 0.0, 0.0)
    scores = []
    for r in plan.row_blocks():
        st = plan.stats(r, opts, num_threads)
        ranks = [delayed(_rank_block)(plan.block(r, j), plan.t[r], st, int(plan.offsets[j]), ignore_index)
                 for j in range(len(plan.offsets) - 1)]
        scores.append(delayed(_score_rows)(st, ranks, ks, ignore_index))
    total = _tree(scores, operator.add) if scores else delayed(Score.empty)(ks)
    result: Union[Score, Delayed] = total.compute() if compute else total
    return result


@overload
def compare(input: DaskArrayLike, ref_input: DaskArrayLike, target: Optional[DaskArrayLike] = ..., *,
            ignore_index: int = ..., top_k: TopK = ..., compute: Literal[True] = ...,
            num_threads: NumThreads = ...) -> Comparison: ...
@overload
def compare(input: DaskArrayLike, ref_input: DaskArrayLike, target: Optional[DaskArrayLike] = ..., *,
            ignore_index: int = ..., top_k: TopK = ..., compute: Literal[False],
            num_threads: NumThreads = ...) -> Delayed: ...
@overload
def compare(input: DaskArrayLike, ref_input: DaskArrayLike, target: Optional[DaskArrayLike] = ..., *,
            ignore_index: int = ..., top_k: TopK = ..., compute: bool = ...,
            num_threads: NumThreads = ...) -> Union[Comparison, Delayed]: ...


def compare(input: DaskArrayLike, ref_input: DaskArrayLike, target: Optional[DaskArrayLike] = None, *,
            ignore_index: int = -100, top_k: TopK = (1,), compute: bool = True,
            num_threads: NumThreads = 1) -> Union[Comparison, Delayed]:
    """`fastce.compare` of two dask logit arrays of one shape (N, V), chunked along rows.

    Each row block is compared in one task (the class axis is brought into one chunk if it is
    not: KL, argmaxes and ranks need whole rows), and the row blocks' Comparisons are merged by
    a tree.

    Parameters
    ----------
    input : dask.array.Array, shape (N, V)
        The model's logits.
    ref_input : dask.array.Array, shape (N, V)
        The reference's logits (rechunked to `input`'s rows).
    target : dask.array.Array or array_like of int, shape (N,), optional
        As for `fastce.compare`.
    ignore_index : int, default -100
        As for `fastce.compare`.
    top_k : int or sequence of int, default (1,)
        As for `fastce.compare`.
    compute : bool, default True
        Compute the result (with the current scheduler), or return it as a dask Delayed.
    num_threads : int, optional, default 1
        Threads per task (None: every core).

    Returns
    -------
    Comparison or dask.delayed.Delayed
        The `Comparison`; a Delayed of it with ``compute=False``.

    Raises
    ------
    ValueError
        If the two shapes differ or are not 2-D, `target`'s shape does not fit, or a k of
        `top_k` is outside [1, V].
    TypeError
        If the logits are not floating-point or `target` is not made of integers.

    See Also
    --------
    fastce.compare : The same for NumPy arrays.
    score : One model's logits against targets.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> import fastce.dask as fd
    >>> x = np.array([[2.0, 1.0, 0.1, -1.0], [0.5, 2.5, 0.2, 0.0], [0.3, 0.2, 3.0, 1.0]])
    >>> ref = x + np.array([0.5, 0.0, -0.5, 0.0])
    >>> c = fd.compare(da.from_array(x, chunks=(2, 2)), da.from_array(ref, chunks=(1, 4)), np.array([0, 3, 2]))
    >>> c.count, c.top1_agreement, round(c.mean_kl, 4), round(c.delta_nll, 4)
    (3, 1.0, 0.0393, -0.0104)
    """
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
    parts = [delayed(_compare)(a, b, c, ignore_index=ignore_index, top_k=ks, num_threads=num_threads)
             for a, b, c in zip(xb, yb, tb)]
    total = _tree(parts, operator.add) if parts else delayed(Comparison.empty)(ks, target is not None)
    result: Union[Comparison, Delayed] = total.compute() if compute else total
    return result
