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

import numpy as np

from . import _kernels, _runtime
from ._class_blocks import class_last_blocks, writable_c_view, write_class_first
from ._functional import BLOCK_LOGITS, _row_lse
from ._targets import LossTargets, Reduction
from ._validate import Layout, as_compute, as_floating, check_label_smoothing, check_out, check_z_loss, compute_dtype

__all__ = ["ShardStats", "shard_stats", "shard_grad"]


def _check_int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _merge_ranges(ranges):
    """Sorted, adjacent ranges joined; ValueError if two overlap."""
    out = []
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
    """Mergeable per-row statistics of a softmax cross-entropy over some classes (see the module
    docstring for the math). Build with `shard_stats`, combine with `merge` (or `+`); once the
    class ranges cover [0, num_classes), `lse`, `row_losses()` and `loss(reduction)` give the
    full cross-entropy. Picklable (plain arrays and numbers)."""

    def __init__(self, *, num_classes, row_shape, target, ignore_index, label_smoothing, z_loss, weighted,
                 dtype, ranges, lse, xt, wt, found, sx, wsum):
        self.num_classes, self.row_shape, self.target = num_classes, tuple(row_shape), target
        self.ignore_index, self.label_smoothing, self.z_loss = ignore_index, label_smoothing, z_loss
        self.weighted, self.dtype, self.ranges = weighted, np.dtype(dtype), tuple(ranges)
        self.lse_partial, self.xt, self.wt, self.found, self.sx, self.wsum = lse, xt, wt, found, sx, wsum

    def _options(self):
        return (self.num_classes, self.row_shape, self.ignore_index, self.label_smoothing, self.z_loss,
                self.weighted, self.dtype)

    def merge(self, other):
        """The statistics of both shards' classes (a new ShardStats; neither operand changes).
        Refused: another row shape, class count, dtype or option, other targets, or classes
        that overlap."""
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
            sx=None if self.sx is None else self.sx + other.sx, wsum=self.wsum + other.wsum)

    __add__ = merge

    @property
    def complete(self):
        """Whether the merged class ranges cover [0, num_classes)."""
        return self.ranges == ((0, self.num_classes),)

    def _check_complete(self):
        if not self.complete:
            have = ", ".join(f"[{a}, {b})" for a, b in self.ranges) or "none"
            raise ValueError(f"the shards cover classes {have}, not all of [0, {self.num_classes}); merge the "
                             "statistics of every shard first")

    @property
    def lse(self):
        """The per-row global log-sum-exp (the loss's shape, float64)."""
        self._check_complete()
        return self.lse_partial.reshape(self.row_shape)

    @property
    def kept(self):
        return self.target != self.ignore_index

    def row_losses(self):
        """float64 per-row losses (flat), 0 for ignored rows; the formula of the module docstring."""
        self._check_complete()
        kept, lse, C, eps = self.kept, self.lse_partial, float(self.num_classes), self.label_smoothing
        with np.errstate(invalid="ignore", over="ignore"):
            loss = (1.0 - eps) * self.wt * (lse - self.xt)
            if eps > 0.0:
                loss = loss + (eps / C) * (self.wsum * lse - self.sx)
            if self.z_loss:
                loss = loss + self.z_loss * self.wt * lse * lse
        return np.where(kept, loss, 0.0)

    def reduction(self, reduction):
        """The reduction rules, with 'mean' over the kept targets' weights (their count unweighted)."""
        self._check_complete()
        rs = self.row_shape
        layout = Layout((self.num_classes,) if rs == () else (rs[0], self.num_classes, *rs[1:]))
        return Reduction(layout, reduction, float(np.sum(np.where(self.kept, self.wt, 0.0))))

    def loss(self, reduction="mean"):
        """The cross-entropy of the full logits, as F.cross_entropy with the shards' options:
        a NumPy scalar of the logits' dtype, or an array of the targets' shape for 'none'."""
        return self.reduction(reduction).reduce(self.row_losses(), self.dtype)

    def __repr__(self):
        cover = ", ".join(f"[{a}, {b})" for a, b in self.ranges)
        return (f"ShardStats(rows={self.target.size}, num_classes={self.num_classes}, classes {cover}, "
                f"dtype={self.dtype})")


def shard_stats(logits_shard, target, *, class_start, num_classes, weight=None, ignore_index=-100,
                label_smoothing=0.0, z_loss=0.0, num_threads=None):
    """Per-row statistics of one vocabulary shard, to merge into the full cross-entropy.

    Parameters
    ----------
    logits_shard : array (N, width), (width,) or (N, width, d1..dk): columns
        [class_start, class_start + width) of the full logits (classes on axis 1, or 0 unbatched)
    target : integer array of the loss's shape, GLOBAL class ids in [0, num_classes) or
        ignore_index. A target inside this shard contributes its logit and weight; one outside
        contributes nothing here.
    class_start, num_classes : the shard's first class and the full class count
    weight : array (width,), optional: this shard's columns of the class weights
    ignore_index, label_smoothing, z_loss : as cross_entropy (smoothing over num_classes)
    num_threads : as cross_entropy

    Returns
    -------
    ShardStats: merge every shard's (`a + b`, in any order), then `.loss(reduction)`, `.lse`.
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


def shard_grad(logits_shard, target, stats, *, class_start, weight=None, reduction="mean", grad_output=None,
               out=None, num_threads=None):
    """The gradient of the full cross-entropy with respect to one shard's columns, from the
    merged statistics of every shard (no other shard's logits needed).

    logits_shard, target, class_start, weight : as given to `shard_stats` for this shard
    stats : the merged ShardStats of all shards (its options: ignore_index, label_smoothing,
        z_loss, are the loss's)
    reduction, grad_output : as cross_entropy_with_grad (grad_output a scalar for 'mean' / 'sum',
        broadcastable to the loss's shape for 'none')
    out : optional array of the shard's shape and dtype to write the gradient into (it may be
        logits_shard itself)
    num_threads : as cross_entropy

    Returns the gradient, of the shard's shape and dtype: one pass over the shard by the kernel
    shard_grad_rows (include/fastce/shard_impl.h); K-dimensional shards go through blocks with
    the classes moved last.
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
