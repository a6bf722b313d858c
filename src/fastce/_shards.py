"""Exact cross-entropy over a vocabulary split into shards: per-row statistics, merged.

A shard holds the columns [class_start, class_start + width) of the (N, C) logits (or of the
(N, C, d1..dk) ones: the classes on axis 1). Per row it yields (`shard_stats`):

    lse_k = log sum_{c in shard} e^(x_c)          (the kernels' one-pass log-sum-exp)
    x_t   = the target's logit, if the target is in the shard; w_t its class weight
    sx_k  = sum_{c in shard} w_c x_c              (only with label smoothing; w = 1 unweighted)
    W_k   = sum_{c in shard} w_c                  (per shard, not per row)

Merging two shards of disjoint classes (`ShardStats.merge`) is exact: lse = logaddexp(lse_1,
lse_2) (an empty or all -inf shard has lse = -inf, and logaddexp(-inf, y) = y: no NaN), the
target's logit comes from the one shard that holds it, the sums add. Once the merged ranges
cover [0, C), the loss of every option follows from these alone (`row_losses`, torch's
semantics; row_math.h's formula):

    loss = (1 - eps) w_t (lse - x_t) + (eps / C) (W lse - sx) + z w_t lse^2     (0 if ignored)

Smoothing divides by the GLOBAL class count C and uses raw logit sums, never logs of a shard's
probabilities (which underflow); a weighted mean divides by the kept targets' weights; z_loss
uses the global lse. The gradient of a shard's columns needs only the merged statistics
(`shard_grad`): with p_c = e^(x_c - lse),

    dL/dx_c = coef ((1 - eps) w_t + eps W / C + 2 z w_t lse) p_c - coef (eps / C) w_c
              - coef (1 - eps) w_t [c == t],       coef = grad_output / D.
"""
from __future__ import annotations

from typing import Any, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

from . import _kernels, _runtime
from ._class_blocks import class_last_blocks, writable_c_view, write_class_first
from ._functional import BLOCK_LOGITS, _row_lse
from ._targets import LossTargets
from ._targets import Reduction as _ReductionRule
from ._typing import ArrayLike, NDArray, NumThreads, Reduction, Scalar
from ._validate import Layout, as_compute, as_floating, check_label_smoothing, check_out, check_z_loss, compute_dtype

__all__ = ["ShardStats", "shard_stats", "shard_grad"]


def _check_int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _merge_ranges(ranges: Iterable[Tuple[int, int]]) -> Tuple[Tuple[int, int], ...]:
    """Sorted, adjacent ranges joined; ValueError if two overlap."""
    out: List[Tuple[int, int]] = []
    for start, stop in sorted(ranges):
        if out and start < out[-1][1]:
            raise ValueError(f"class ranges overlap: [{out[-1][0]}, {out[-1][1]}) and [{start}, {stop})")
        if out and start == out[-1][1]:
            out[-1] = (out[-1][0], stop)
        else:
            out.append((start, stop))
    return tuple(out)


class _Shard:
    """A validated shard: its logits as (N, width, d..), class range, targets, weights, options."""

    def __init__(self, logits_shard, target, class_start, num_classes, weight, ignore_index, label_smoothing,
                 z_loss=0.0, num_threads=None, grad=False):
        self.x = as_floating(logits_shard, "logits_shard")
        if self.x.ndim == 0:
            raise ValueError("logits_shard must have at least 1 dimension, got a 0-d array")
        self.num_classes = _check_int(num_classes, "num_classes", 1)
        self.class_start = _check_int(class_start, "class_start", 0)
        self.axis = 0 if self.x.ndim == 1 else 1
        self.width = self.x.shape[self.axis]
        if self.class_start + self.width > self.num_classes:
            raise ValueError(f"the shard's classes [{self.class_start}, {self.class_start + self.width}) exceed "
                             f"num_classes {self.num_classes}")
        full_shape = list(self.x.shape)
        full_shape[self.axis] = self.num_classes
        self.layout = Layout(tuple(full_shape), "logits_shard")
        self.nthreads = _runtime.resolve_threads(num_threads)
        self.dtype = self.x.dtype.newbyteorder("=")
        # the targets checked against the GLOBAL class count (IndexError "Target 7 is out of bounds.")
        self.tg = LossTargets(target, self.layout, weight=None, ignore_index=ignore_index, reduction="sum",
                              cdtype=compute_dtype(self.dtype), nthreads=self.nthreads, index_only=True)
        assert self.tg.target is not None  # index_only: class indices
        self.t = self.tg.target.reshape(-1).astype(np.int64)
        self.kept = self.t != self.tg.ignore_index
        self.eps = check_label_smoothing(label_smoothing)
        self.z_loss = check_z_loss(z_loss)
        self.w = None
        if weight is not None:
            w = np.asarray(as_floating(weight, "weight"), dtype=np.float64)
            if w.shape != (self.width,):
                raise ValueError(f"weight must hold the shard's {self.width} classes, shape ({self.width},), "
                                 f"got {w.shape}")
            self.w = w
        local = self.t - self.class_start
        self.here = self.kept & (local >= 0) & (local < self.width)  # rows whose target is in the shard
        self.local = np.where(self.here, local, 0)

    def rows_view(self):
        """The logits as (N, width, S) (a view where the layout allows)."""
        lay = self.layout
        return self.x.reshape(lay.N, self.width, lay.S)

    def target_logits(self):
        """x[i, t_i - class_start] for the rows whose target is here (0 elsewhere), float64."""
        x3 = self.rows_view()
        n, s = np.divmod(np.arange(self.layout.rows), self.layout.S)
        xt = np.zeros(self.layout.rows)
        h = self.here
        xt[h] = x3[n[h], self.local[h], s[h]]
        return xt


class ShardStats:
    r"""Mergeable per-row statistics of a softmax cross-entropy over some classes.

    Build with `shard_stats` (one per vocabulary shard), combine with `merge` (or ``+``, in
    any order); once the class ranges cover [0, num_classes), `lse`, `row_losses` and `loss`
    give the full cross-entropy, and `shard_grad` each shard's gradient. Picklable (plain arrays
    and numbers), so statistics can travel between processes; the constructor is for
    `shard_stats` and `merge`.

    Parameters
    ----------
    num_classes : int
        The full class count C.
    row_shape : tuple of int
        The loss's shape: (N,), () or (N, d1, ..., dk).
    target : ndarray of int64
        The targets, flat (global class ids or `ignore_index`).
    ignore_index : int
        The target value of ignored rows.
    label_smoothing : float
        The loss's label smoothing (over `num_classes`).
    z_loss : float
        The loss's z-loss coefficient.
    weighted : bool
        Whether class weights were given.
    dtype : numpy.dtype or str
        The logits' dtype (that of `loss`).
    ranges : sequence of (int, int)
        The merged class ranges [start, stop) covered, sorted.
    lse : ndarray of float64
        Per row (flat), the log-sum-exp over the covered classes (-inf over none).
    xt : ndarray of float64
        Per row, the target's logit where its class is covered (0 elsewhere).
    wt : ndarray of float64
        Per row, the target's class weight where covered (1 unweighted; 0 elsewhere).
    found : ndarray of bool
        Per row, whether the target's class is covered.
    sx : ndarray of float64 or None
        Per row, the (weighted) sum of the covered logits; only with label smoothing.
    wsum : float
        The sum of the covered classes' weights (their count unweighted).

    Attributes
    ----------
    lse_partial : ndarray of float64
        The `lse` argument: the log-sum-exp over the covered classes, per row (flat).
    complete : bool
        Whether the class ranges cover [0, num_classes).

    See Also
    --------
    shard_stats : The statistics of one shard.
    shard_grad : One shard's gradient from the merged statistics.

    Notes
    -----
    Merging two shards of disjoint classes is exact: lse = logaddexp(lse_1, lse_2) (an empty or
    all -inf shard has lse = -inf, and logaddexp(-inf, y) = y: no NaN), the target's logit
    comes from the one shard that holds it, the sums add. The loss of a kept row is then

    .. math::

        (1 - \varepsilon)\, w_t (\mathrm{lse} - x_t)
        + \frac{\varepsilon}{C} (W\, \mathrm{lse} - s_x) + z\, w_t\, \mathrm{lse}^2,

    torch's semantics with smoothing over the global class count C (see the module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> x = np.array([[2.0, 1.0, 0.1, -1.0], [0.5, 2.5, 0.2, 0.0]])
    >>> t = np.array([0, 3])
    >>> a = fastce.shard_stats(x[:, :2], t, class_start=0, num_classes=4)
    >>> b = fastce.shard_stats(x[:, 2:], t, class_start=2, num_classes=4)
    >>> a
    ShardStats(rows=2, num_classes=4, classes [0, 2), dtype=float64)
    >>> stats = b + a
    >>> stats.complete, stats.lse.round(4)
    (True, array([2.4493, 2.7759]))
    >>> round(float(stats.loss()), 4), round(float(fastce.cross_entropy(x, t)), 4)
    (1.6126, 1.6126)
    """

    def __init__(self, *, num_classes: int, row_shape: Sequence[int], target: NDArray, ignore_index: int,
                 label_smoothing: float, z_loss: float, weighted: bool, dtype: npt.DTypeLike,
                 ranges: Iterable[Tuple[int, int]], lse: NDArray, xt: NDArray, wt: NDArray, found: NDArray,
                 sx: Optional[NDArray], wsum: float) -> None:
        self.num_classes, self.row_shape, self.target = num_classes, tuple(row_shape), target
        self.ignore_index, self.label_smoothing, self.z_loss = ignore_index, label_smoothing, z_loss
        self.weighted, self.dtype, self.ranges = weighted, np.dtype(dtype), tuple(ranges)
        self.lse_partial, self.xt, self.wt, self.found, self.sx, self.wsum = lse, xt, wt, found, sx, wsum

    def _options(self) -> Tuple[Any, ...]:
        return (self.num_classes, self.row_shape, self.ignore_index, self.label_smoothing, self.z_loss,
                self.weighted, self.dtype)

    def merge(self, other: ShardStats) -> ShardStats:
        """The statistics of both shards' classes (a new ShardStats; neither operand changes).

        ``a + b`` is the same. Merging is exact, associative and commutative.

        Parameters
        ----------
        other : ShardStats
            The statistics of other classes of the same rows, targets and options.

        Returns
        -------
        ShardStats
            The statistics of the union of the two class ranges.

        Raises
        ------
        TypeError
            If `other` is not a ShardStats.
        ValueError
            If the two differ in row shape, class count, dtype or an option, in targets, or
            their classes overlap.

        See Also
        --------
        shard_stats : The statistics of one shard.

        Examples
        --------
        >>> import numpy as np
        >>> import fastce
        >>> x = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.2]])
        >>> t = np.array([0, 2])
        >>> parts = [fastce.shard_stats(x[:, j:j + 1], t, class_start=j, num_classes=3) for j in range(3)]
        >>> stats = parts[2].merge(parts[0]).merge(parts[1])
        >>> stats.ranges, round(float(stats.loss("sum")), 4)
        (((0, 3),), 2.9286)
        """
        if not isinstance(other, ShardStats):
            raise TypeError(f"can only merge a ShardStats, got {type(other).__name__}")
        if other._options() != self._options():
            names = ("num_classes", "rows", "ignore_index", "label_smoothing", "z_loss", "weighted", "dtype")
            diff = [f"{n} {a} vs {b}" for n, a, b in zip(names, self._options(), other._options()) if a != b]
            raise ValueError("cannot merge shard statistics of different problems: " + ", ".join(diff))
        if not np.array_equal(self.target, other.target):
            raise ValueError("cannot merge shard statistics of different targets")
        ranges = _merge_ranges(self.ranges + other.ranges)
        return ShardStats(
            num_classes=self.num_classes, row_shape=self.row_shape, target=self.target,
            ignore_index=self.ignore_index, label_smoothing=self.label_smoothing, z_loss=self.z_loss,
            weighted=self.weighted, dtype=self.dtype, ranges=ranges,
            lse=np.logaddexp(self.lse_partial, other.lse_partial),
            xt=np.where(other.found, other.xt, self.xt), wt=np.where(other.found, other.wt, self.wt),
            found=self.found | other.found,
            sx=None if self.sx is None or other.sx is None else self.sx + other.sx, wsum=self.wsum + other.wsum)

    __add__ = merge

    @property
    def complete(self) -> bool:
        """Whether the merged class ranges cover [0, num_classes).

        Returns
        -------
        bool
            True once every shard's statistics are merged in.
        """
        return self.ranges == ((0, self.num_classes),)

    def _check_complete(self) -> None:
        if not self.complete:
            have = ", ".join(f"[{a}, {b})" for a, b in self.ranges) or "none"
            raise ValueError(f"the shards cover classes {have}, not all of [0, {self.num_classes}); merge the "
                             "statistics of every shard first")

    @property
    def lse(self) -> NDArray:
        """The per-row global log-sum-exp (the loss's shape, float64).

        Returns
        -------
        ndarray of float64
            The log-sum-exp of each row's logits over all classes.

        Raises
        ------
        ValueError
            If the statistics do not cover every class yet.
        """
        self._check_complete()
        return self.lse_partial.reshape(self.row_shape)

    @property
    def kept(self) -> NDArray:
        """Per row (flat), whether the target is kept (not `ignore_index`).

        Returns
        -------
        ndarray of bool
            ``target != ignore_index``.
        """
        kept: NDArray = self.target != self.ignore_index
        return kept

    def row_losses(self) -> NDArray:
        """The per-row losses, flat, in float64; 0 for ignored rows.

        The formula of the module docstring, with each row's weight w_t applied; no reduction.

        Returns
        -------
        ndarray of float64
            One loss per row, shape (rows,).

        Raises
        ------
        ValueError
            If the statistics do not cover every class yet.

        See Also
        --------
        ShardStats.loss : The reduced loss.

        Examples
        --------
        >>> import numpy as np
        >>> import fastce
        >>> x = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.2]])
        >>> fastce.shard_stats(x, np.array([0, -100]), class_start=0, num_classes=3).row_losses().round(4)
        array([0.417, 0.   ])
        """
        self._check_complete()
        kept, lse, C, eps = self.kept, self.lse_partial, float(self.num_classes), self.label_smoothing
        with np.errstate(invalid="ignore", over="ignore"):
            loss = (1.0 - eps) * self.wt * (lse - self.xt)
            if eps > 0.0:
                assert self.sx is not None  # kept with label smoothing
                loss = loss + (eps / C) * (self.wsum * lse - self.sx)
            if self.z_loss:
                loss = loss + self.z_loss * self.wt * lse * lse
        losses: NDArray = np.where(kept, loss, 0.0)
        return losses

    def reduction(self, reduction: Reduction) -> _ReductionRule:
        """The reduction rules of the loss, with 'mean' over the kept targets' weights.

        The 'mean' denominator is the sum of the kept targets' class weights (their count
        unweighted), as torch's.

        Parameters
        ----------
        reduction : {'mean', 'sum', 'none'}
            The reduction.

        Returns
        -------
        fastce._targets.Reduction
            The internal reduction object (`reduce`, `grad_scale`, `denominator`) that `loss`
            and `shard_grad` use.

        Raises
        ------
        ValueError
            If the statistics do not cover every class yet, or `reduction` is not one of the three.

        See Also
        --------
        ShardStats.loss : The loss reduced by these rules.

        Examples
        --------
        >>> import numpy as np
        >>> import fastce
        >>> x = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.2]])
        >>> stats = fastce.shard_stats(x, np.array([0, -100]), class_start=0, num_classes=3)
        >>> stats.reduction("mean").denominator
        1.0
        """
        self._check_complete()
        rs = self.row_shape
        layout = Layout((self.num_classes,) if rs == () else (rs[0], self.num_classes, *rs[1:]))
        return _ReductionRule(layout, reduction, float(np.sum(np.where(self.kept, self.wt, 0.0))))

    def loss(self, reduction: Reduction = "mean") -> Scalar:
        """The cross-entropy of the full logits, as F.cross_entropy with the shards' options.

        Parameters
        ----------
        reduction : {'mean', 'sum', 'none'}, default 'mean'
            As torch's: 'mean' divides by the kept targets' weights.

        Returns
        -------
        numpy scalar or ndarray
            A NumPy scalar of the logits' dtype, or an array of the targets' shape for 'none'.

        Raises
        ------
        ValueError
            If the statistics do not cover every class yet, or `reduction` is not one of the three.

        See Also
        --------
        ShardStats.row_losses : The per-row losses in float64.

        Examples
        --------
        >>> import numpy as np
        >>> import fastce
        >>> x = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.2]])
        >>> stats = fastce.shard_stats(x, np.array([0, 2]), class_start=0, num_classes=3)
        >>> print(stats.loss("none").round(4))
        [0.417  2.5116]
        """
        result: Scalar = self.reduction(reduction).reduce(self.row_losses(), self.dtype)
        return result

    def __repr__(self) -> str:
        cover = ", ".join(f"[{a}, {b})" for a, b in self.ranges)
        return (f"ShardStats(rows={self.target.size}, num_classes={self.num_classes}, classes {cover}, "
                f"dtype={self.dtype})")


def shard_stats(logits_shard: ArrayLike, target: ArrayLike, *, class_start: int, num_classes: int,
                weight: Optional[ArrayLike] = None, ignore_index: int = -100, label_smoothing: float = 0.0,
                z_loss: float = 0.0, num_threads: NumThreads = None) -> ShardStats:
    """Per-row statistics of one vocabulary shard, to merge into the full cross-entropy.

    Reads the shard once (the kernels' one-pass log-sum-exp; with label smoothing also the sum
    of its logits). Merge every shard's statistics (``a + b``, in any order), then read
    ``.loss(reduction)`` or ``.lse``; `shard_grad` gives each shard's gradient from them.

    Parameters
    ----------
    logits_shard : array_like, shape (N, width), (width,) or (N, width, d1, ..., dk)
        Columns [class_start, class_start + width) of the full logits (classes on axis 1, or 0
        unbatched): float16, bfloat16, float32 or float64.
    target : array_like of int
        The loss's shape: GLOBAL class ids in [0, num_classes), or `ignore_index`. A target
        inside this shard contributes its logit and weight; one outside contributes nothing here.
    class_start : int
        The shard's first class, >= 0.
    num_classes : int
        The full class count, >= 1.
    weight : array_like, shape (width,), optional
        This shard's columns of the class weights.
    ignore_index : int, default -100
        As for `cross_entropy`.
    label_smoothing : float, default 0.0
        As for `cross_entropy`, smoothing over `num_classes`.
    z_loss : float, default 0.0
        As for `cross_entropy`.
    num_threads : int, optional
        As for `cross_entropy`: None uses every core.

    Returns
    -------
    ShardStats
        The shard's statistics, to merge with the other shards'.

    Raises
    ------
    TypeError
        If `class_start` or `num_classes` is not an integer, the logits are not floating-point,
        or `target` is not made of integers.
    ValueError
        If the shard's classes exceed `num_classes`, or a shape or option is invalid.
    IndexError
        If a target is outside [0, num_classes) and not `ignore_index`.

    See Also
    --------
    ShardStats : The statistics, how they merge and give the loss.
    shard_grad : A shard's gradient from the merged statistics.
    fastce.dask.cross_entropy : The same over the blocks of a dask array.

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> x = np.array([[2.0, 1.0, 0.1, -1.0], [0.5, 2.5, 0.2, 0.0]])
    >>> t = np.array([0, 3])
    >>> shards = [(0, x[:, :3]), (3, x[:, 3:])]
    >>> stats = [fastce.shard_stats(xs, t, class_start=c0, num_classes=4, label_smoothing=0.1)
    ...          for c0, xs in shards]
    >>> total = stats[0] + stats[1]
    >>> round(float(total.loss()), 4)
    1.6463
    >>> round(float(fastce.cross_entropy(x, t, label_smoothing=0.1)), 4)
    1.6463
    """
    sh = _Shard(logits_shard, target, class_start, num_classes, weight, ignore_index, label_smoothing, z_loss,
                num_threads)
    rows = sh.layout.rows
    if sh.width:
        lse = _row_lse(sh.x, sh.axis, sh.nthreads).reshape(-1).astype(np.float64)
    else:
        lse = np.full(rows, -np.inf)
    xt = sh.target_logits()
    wt = np.where(sh.here, 1.0 if sh.w is None or not sh.width else sh.w[sh.local], 0.0)
    sx = None
    if sh.eps > 0.0:
        x3 = sh.rows_view()
        if sh.w is None:
            sx = x3.sum(axis=1, dtype=np.float64).reshape(-1)
        else:
            sx = np.einsum("ncs,c->ns", x3, sh.w, dtype=np.float64).reshape(-1)
    wsum = float(sh.width if sh.w is None else sh.w.sum())
    return ShardStats(num_classes=sh.num_classes, row_shape=sh.layout.target_shape, target=sh.t,
                      ignore_index=sh.tg.ignore_index, label_smoothing=sh.eps, z_loss=sh.z_loss,
                      weighted=sh.w is not None, dtype=sh.dtype,
                      ranges=((sh.class_start, sh.class_start + sh.width),) if sh.width else (),
                      lse=lse, xt=xt, wt=wt, found=sh.here, sx=sx, wsum=wsum)


def shard_grad(logits_shard: ArrayLike, target: ArrayLike, stats: ShardStats, *, class_start: int,
               weight: Optional[ArrayLike] = None, reduction: Reduction = "mean",
               grad_output: Optional[ArrayLike] = None, out: Optional[NDArray] = None,
               num_threads: NumThreads = None) -> NDArray:
    r"""The gradient of the full cross-entropy with respect to one shard's columns.

    Needs only the merged statistics of every shard, no other shard's logits: one pass over the
    shard by the kernel shard_grad_rows (src/fastce/_csrc/shard_impl.h); K-dimensional shards go
    through blocks with the classes moved last.

    Parameters
    ----------
    logits_shard : array_like
        As given to `shard_stats` for this shard.
    target : array_like of int
        As given to `shard_stats`.
    stats : ShardStats
        The merged statistics of all shards; its options (ignore_index, label_smoothing,
        z_loss) are the loss's.
    class_start : int
        As given to `shard_stats` for this shard.
    weight : array_like, shape (width,), optional
        As given to `shard_stats` for this shard (given exactly when it was given there).
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        As for `cross_entropy_with_grad`.
    grad_output : float or array_like, optional
        A scalar for 'mean' and 'sum', an array broadcastable to the loss's shape for 'none';
        defaults to 1.
    out : ndarray, optional
        An array of the shard's shape and dtype to write the gradient into (it may be
        `logits_shard` itself).
    num_threads : int, optional
        As for `cross_entropy`: None uses every core.

    Returns
    -------
    ndarray
        The gradient, of the shard's shape and dtype (`out` if given).

    Raises
    ------
    TypeError
        If `stats` is not a ShardStats.
    ValueError
        If `stats` covers not every class, or is of other rows, targets or weighting than this
        shard; if `reduction`, `grad_output` or `out` does not fit.

    See Also
    --------
    shard_stats : The statistics to merge first.
    cross_entropy_with_grad : The loss and gradient of unsharded logits.

    Notes
    -----
    With :math:`p_c = e^{x_c - \mathrm{lse}}` and :math:`\mathrm{coef}` = grad_output / D (D the
    'mean' denominator, 1 otherwise), for each class c of the shard

    .. math::

        \frac{\partial L}{\partial x_c} = \mathrm{coef} \left( \big((1 - \varepsilon) w_t
        + \varepsilon W / C + 2 z w_t \mathrm{lse}\big) p_c - \frac{\varepsilon}{C} w_c
        - (1 - \varepsilon) w_t [c = t] \right).

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> x = np.array([[2.0, 1.0, 0.1, -1.0], [0.5, 2.5, 0.2, 0.0]])
    >>> t = np.array([0, 3])
    >>> stats = (fastce.shard_stats(x[:, :2], t, class_start=0, num_classes=4)
    ...          + fastce.shard_stats(x[:, 2:], t, class_start=2, num_classes=4))
    >>> g = fastce.shard_grad(x[:, 2:], t, stats, class_start=2)
    >>> full = fastce.cross_entropy_with_grad(x, t)[1]
    >>> bool(np.allclose(g, full[:, 2:]))
    True
    >>> print(g.round(4))
    [[ 0.0477  0.0159]
     [ 0.038  -0.4689]]
    """
    if not isinstance(stats, ShardStats):
        raise TypeError(f"stats must be a ShardStats (from shard_stats), got {type(stats).__name__}")
    sh = _Shard(logits_shard, target, class_start, stats.num_classes, weight, stats.ignore_index,
                stats.label_smoothing, stats.z_loss, num_threads)
    if sh.layout.target_shape != stats.row_shape or not np.array_equal(sh.t, stats.target):
        raise ValueError(f"stats are of other rows or targets (shape {stats.row_shape}) than this shard "
                         f"({sh.layout.target_shape})")
    if stats.weighted != (sh.w is not None):
        raise ValueError("weight must be given to shard_grad exactly when it was given to shard_stats")
    gout, gscale = stats.reduction(reduction).grad_scale(grad_output)
    coef = np.where(stats.kept, gscale * (1.0 if gout is None else gout), 0.0)
    eps, C, z = stats.label_smoothing, float(stats.num_classes), stats.z_loss
    lse = stats.lse_partial
    with np.errstate(invalid="ignore", over="ignore"):
        A = coef * ((1.0 - eps) * stats.wt + eps * stats.wsum / C + 2.0 * z * stats.wt * lse)
    B = coef * (eps / C)
    fix = coef * (1.0 - eps) * stats.wt
    tcol = np.where(sh.here, sh.local, -1).astype(np.int64)
    if out is not None:
        check_out(out, sh.x.shape, sh.dtype, sh.x, [("target", target), ("weight", weight)])
    else:
        out = np.empty(sh.x.shape, sh.dtype)
    lay = sh.layout
    cdtype = compute_dtype(sh.dtype)
    w = None if sh.w is None else np.ascontiguousarray(sh.w, dtype=cdtype)
    if sh.width == 0 or lay.rows == 0:
        return out

    def run(xb, ob, rows):
        _kernels.shard_grad_run(_runtime.isa_id(), xb, ob, lse[rows], A[rows], B[rows], fix[rows], tcol[rows],
                                weight=w, nthreads=sh.nthreads)

    o, user_out = writable_c_view(out)
    if lay.S == 1:  # (N, width) or (width,): in place, one pass
        x2 = as_compute(sh.x, sh.dtype).reshape(lay.N, sh.width)
        run(x2, o.reshape(lay.N, sh.width), slice(None))
    else:  # K-dim: blocks with the classes moved last
        o3 = o.reshape(lay.N, sh.width, lay.S)
        for n0, n1, (xb,) in class_last_blocks((sh.rows_view(),), lay.N, sh.width, lay.S, sh.dtype, BLOCK_LOGITS):
            ob = np.empty_like(xb)
            run(xb, ob, slice(n0 * lay.S, n1 * lay.S))
            write_class_first(o3, n0, n1, ob, lay.S)
    if user_out is not None:
        user_out[...] = o
    return out
