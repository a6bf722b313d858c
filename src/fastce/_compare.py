"""Comparing a model with a reference, token by token: KL, agreement, and their NLLs on targets.

`compare(logits, ref_logits, target)` reads both logit arrays once (the two-stream kernel
kl_rows, src/fastce/_csrc/kl_impl.h) and returns a `Comparison`: sums and counts only, so the
comparisons of separate batches merge exactly (the figures of one big batch, up to the order of
floating-point summation), and a stream of batches of any length costs O(1) memory. These are
the figures llama.cpp's `perplexity --kl-divergence` reports for a quantized model against its
base, here with no stored base logits: both models' logits can come batch by batch (or from two
.npy files, `fastce compare`, or from two LM heads, `compare_linear`).

Rows. Without targets every row (position) counts. With targets, a row whose target equals
ignore_index is padding and is left out of every figure.

The per-row KL is kept as a histogram of log-spaced bins (KL_BINS_PER_DECADE per decade from
KL_HIST_LOW to KL_HIST_HIGH, one bin below for values under KL_HIST_LOW, zero and the rare
rounding below zero included, one above for larger finite values, and one for +inf), which
merges by addition and gives quantiles to within a factor 10**(1/KL_BINS_PER_DECADE).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np
import numpy.typing as npt

from ._kl import _Pair
from ._linear import default_chunk_rows, iter_logit_chunks
from ._score import _check_top_k, _shape
from ._targets import LossTargets
from ._typing import ArrayLike, NumThreads, TopK
from ._validate import check_positive_int

__all__ = ["Comparison", "compare", "compare_linear", "KL_QUANTILES"]

#: Histogram bins per decade of the per-row KL.
KL_BINS_PER_DECADE = 16
#: The range of the log-spaced bins: KL values below KL_HIST_LOW share the lowest bin, finite
#: values from KL_HIST_HIGH up one bin above.
KL_HIST_LOW, KL_HIST_HIGH = 1e-12, 1e6
_DECADES = round(math.log10(KL_HIST_HIGH / KL_HIST_LOW))
#: bin edges: values in [edges[j-1], edges[j]) go to bin j; bin 0 holds values below edges[0]
#: (and zero), bin len(edges) - 1 finite values >= 1e6, the last bin +inf
KL_BIN_EDGES: npt.NDArray[np.float64] = np.append(
    10.0 ** (math.log10(KL_HIST_LOW) + np.arange(_DECADES * KL_BINS_PER_DECADE + 1) / KL_BINS_PER_DECADE), np.inf)
#: The number of bins of `Comparison.kl_hist`.
KL_NBINS = len(KL_BIN_EDGES) + 1
#: the quantiles that `Comparison.kl_quantiles` (and the CLI) report
KL_QUANTILES: Tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)


def _kl_histogram(kl):
    """Counts of the non-NaN per-row KL values in the bins of KL_BIN_EDGES."""
    kl = kl[~np.isnan(kl)]
    return np.bincount(np.searchsorted(KL_BIN_EDGES, kl, side="right"), minlength=KL_NBINS).astype(np.int64)


def _bin_value(j):
    """A representative KL of bin j: the geometric middle of its edges; 0 for the lowest bin
    (values below 1e-12), the lower edge for finite values >= 1e6, inf for the +inf bin."""
    if j == 0:
        return 0.0
    if j >= KL_NBINS - 2:
        return float(KL_BIN_EDGES[j - 1])
    return float(math.sqrt(KL_BIN_EDGES[j - 1] * KL_BIN_EDGES[j]))


def _nan_max(a, b):
    """max that a NaN on either side makes NaN (as np.max), whatever the order."""
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


@dataclass
class Comparison:
    r"""Mergeable figures of a model's next-token distributions against a reference's.

    A `Comparison` stores sums and counts only (merging adds them), so the comparisons of
    separate batches merge exactly: ``a.merge(b)``, ``a + b`` or ``acc += c``;
    `Comparison.empty` starts an accumulator. `compare` and `compare_linear` make one.

    Parameters
    ----------
    count : int, default 0
        Rows compared (padding rows, target == ignore_index, left out).
    kl_sum : float, default 0.0
        Sum of the per-row KL(p_ref || q_model), in nats (a NaN row makes it NaN).
    kl_max : float, default -inf
        Max of the per-row KL (a NaN row makes it NaN).
    kl_hist : ndarray of int64, shape (KL_NBINS,), optional
        Counts of the per-row KL in log-spaced bins (`KL_BIN_EDGES`; NaN rows in none);
        all zero by default.
    top_k : tuple of int, default (1,)
        The k of `agree`, each >= 1; stored sorted, without repeats, with 1 added.
    agree : dict of int to int, optional
        For each k, the rows whose reference argmax is within the model's top k (argmax's tie order: k = 1
        is "the two argmaxes are equal"); rows with NaN KL agree nowhere. A k of `top_k` missing
        here counts 0.
    has_targets : bool, default False
        Whether targets were given; then `nll_sum`, `ref_nll_sum` and `dp_sq_sum` hold sums.
    nll_sum : float, default 0.0
        Sum over the rows of -log q[t], the model's NLL of the target.
    ref_nll_sum : float, default 0.0
        Sum over the rows of -log p[t], the reference's NLL of the target.
    dp_sq_sum : float, default 0.0
        Sum over the rows of (q[t] - p[t])^2.

    Attributes
    ----------
    mean_kl, max_kl : float
        Mean and max of the per-row KL.
    kl_quantiles : dict of float to float
        Approximate quantiles of the per-row KL, from the histogram.
    top1_agreement : float
        Fraction of rows whose two argmaxes are equal.
    topk_agreement : dict of int to float
        k -> fraction of rows whose reference argmax is within the model's top k.
    nll, ref_nll, delta_nll, perplexity, ref_perplexity, ppl_ratio, rms_dp : float or None
        The target figures, None without targets.

    Raises
    ------
    ValueError
        If `kl_hist` does not have KL_NBINS bins, or a value of `top_k` is below 1.
    TypeError
        If `top_k` is not made of integers.

    See Also
    --------
    compare : The Comparison of two batches of logits.
    compare_linear : The Comparison of two LM heads, their logits computed chunk by chunk.

    Notes
    -----
    With p the reference's and q the model's next-token distribution of a row, and t its target,

    .. math::

        \mathrm{KL}(p \,\|\, q) = \sum_c p_c (\log p_c - \log q_c), \qquad
        \text{delta\_nll} = \overline{-\log q_t} - \overline{-\log p_t}, \qquad
        \text{rms\_dp} = \sqrt{\overline{(q_t - p_t)^2}},

    the bars being means over the compared rows, and ``ppl_ratio = exp(delta_nll)``. The
    figures, also the keys of `as_dict` and of ``fastce compare --json``, are NaN over no rows.

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> ref = np.array([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 3.0]])
    >>> model = np.array([[1.5, 1.0, 0.5], [0.0, 1.0, 2.0], [1.0, 0.0, 3.0]])
    >>> acc = fastce.Comparison.empty(top_k=2, has_targets=True)
    >>> for rows in (slice(0, 2), slice(2, 3)):
    ...     acc += fastce.compare(model[rows], ref[rows], np.array([0, 1, -100])[rows], top_k=2)
    >>> acc.count, acc.top1_agreement, acc.topk_agreement
    (2, 0.5, {1: 0.5, 2: 1.0})
    >>> round(acc.mean_kl, 4), round(acc.delta_nll, 4), round(acc.ppl_ratio, 4)
    (0.2404, 0.6363, 1.8895)
    """

    count: int = 0
    kl_sum: float = 0.0
    kl_max: float = -math.inf
    kl_hist: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(KL_NBINS, np.int64))
    top_k: Tuple[int, ...] = (1,)
    agree: Dict[int, int] = field(default_factory=dict)
    has_targets: bool = False
    nll_sum: float = 0.0
    ref_nll_sum: float = 0.0
    dp_sq_sum: float = 0.0

    def __post_init__(self) -> None:
        self.top_k = _check_top_k(self.top_k)
        self.agree = {k: int(self.agree.get(k, 0)) for k in self.top_k}
        hist = np.zeros(KL_NBINS, np.int64) if self.kl_hist is None else np.asarray(self.kl_hist, np.int64)
        if hist.shape != (KL_NBINS,):
            raise ValueError(f"kl_hist must have {KL_NBINS} bins, got shape {hist.shape}")
        self.kl_hist = hist

    @classmethod
    def empty(cls, top_k: TopK = (1,), has_targets: bool = False) -> Comparison:
        """A comparison of no rows, to accumulate into.

        Merging a batch's comparison into it gives that comparison.

        Parameters
        ----------
        top_k : int or sequence of int, default (1,)
            The k of the agreements (1 is always included).
        has_targets : bool, default False
            Whether the comparisons to merge in have targets (both kinds do not merge).

        Returns
        -------
        Comparison
            A comparison with every count and sum 0 and kl_max -inf.

        Raises
        ------
        TypeError
            If `top_k` is not an int or a sequence of ints.
        ValueError
            If a value of `top_k` is below 1.

        See Also
        --------
        Comparison.merge : Adds a batch's comparison.

        Examples
        --------
        >>> import fastce
        >>> c = fastce.Comparison.empty(top_k=5)
        >>> c.count, c.top_k, c.agree, c.nll
        (0, (1, 5), {1: 0, 5: 0}, None)
        """
        return cls(top_k=_check_top_k(top_k), has_targets=has_targets)

    def merge(self, other: Comparison) -> Comparison:
        """The comparison of both row sets (a new Comparison; neither operand changes).

        ``a + b`` is the same; ``acc += c`` rebinds ``acc`` to the merged comparison.

        Parameters
        ----------
        other : Comparison
            The comparison of other rows, with the same `top_k` and `has_targets`.

        Returns
        -------
        Comparison
            Counts, sums and histograms added; kl_max the larger (NaN if either is).

        Raises
        ------
        TypeError
            If `other` is not a Comparison.
        ValueError
            If the two differ in `top_k` or in `has_targets`.

        See Also
        --------
        Comparison.empty : An accumulator to merge into.

        Examples
        --------
        >>> import numpy as np
        >>> import fastce
        >>> ref = np.array([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
        >>> model = np.array([[1.5, 1.0, 0.5], [0.0, 1.0, 2.0]])
        >>> a = fastce.compare(model[:1], ref[:1])
        >>> b = fastce.compare(model[1:], ref[1:])
        >>> both = a.merge(b)
        >>> both.count, both.top1_agreement, round(both.max_kl, 4)
        (2, 0.5, 0.4205)
        """
        if not isinstance(other, Comparison):
            raise TypeError(f"can only merge a Comparison, got {type(other).__name__}")
        if other.top_k != self.top_k:
            raise ValueError(f"cannot merge comparisons with different top_k: {self.top_k} and {other.top_k}")
        if other.has_targets != self.has_targets:
            raise ValueError("cannot merge a comparison with targets and one without")
        return Comparison(self.count + other.count, self.kl_sum + other.kl_sum, _nan_max(self.kl_max, other.kl_max),
                          self.kl_hist + other.kl_hist, self.top_k,
                          {k: self.agree[k] + other.agree[k] for k in self.top_k}, self.has_targets,
                          self.nll_sum + other.nll_sum, self.ref_nll_sum + other.ref_nll_sum,
                          self.dp_sq_sum + other.dp_sq_sum)

    __add__ = merge

    def _mean(self, total: float) -> float:
        return total / self.count if self.count else math.nan

    @property
    def mean_kl(self) -> float:
        """The mean per-row KL(p_ref || q_model), in nats (NaN without rows).

        Returns
        -------
        float
            ``kl_sum / count``.
        """
        return self._mean(self.kl_sum)

    @property
    def max_kl(self) -> float:
        """The largest per-row KL, in nats (NaN without rows, or if a row's KL is NaN).

        Returns
        -------
        float
            ``kl_max``, or NaN without rows.
        """
        return self.kl_max if self.count else math.nan

    @property
    def kl_quantiles(self) -> Dict[float, float]:
        """Approximate quantiles of the per-row KL, from the histogram.

        Each is the geometric middle of its histogram bin: within a factor 10**(1/16) for
        values in [1e-12, 1e6]; 0 below 1e-12.

        Returns
        -------
        dict of float to float
            {q: approximate q-quantile} for q in `KL_QUANTILES`; NaN without rows.
        """
        n = int(self.kl_hist.sum())
        if n == 0:
            return {q: math.nan for q in KL_QUANTILES}
        cum = np.cumsum(self.kl_hist)
        return {q: _bin_value(int(np.searchsorted(cum, max(1, math.ceil(q * n))))) for q in KL_QUANTILES}

    @property
    def top1_agreement(self) -> float:
        """The fraction of rows whose model argmax equals the reference's (NaN without rows).

        Returns
        -------
        float
            ``agree[1] / count``.
        """
        return self._mean(self.agree[1])

    @property
    def topk_agreement(self) -> Dict[int, float]:
        """For each k, the fraction of rows whose reference argmax is within the model's top k.

        Returns
        -------
        dict of int to float
            ``agree[k] / count`` for each k of `top_k` (NaN without rows).
        """
        return {k: self._mean(c) for k, c in self.agree.items()}

    def _with_targets(self, value: float) -> Optional[float]:
        return value if self.has_targets else None

    @property
    def nll(self) -> Optional[float]:
        """The model's mean NLL of the targets (nats).

        Returns
        -------
        float or None
            ``nll_sum / count``; None without targets.
        """
        return self._with_targets(self._mean(self.nll_sum))

    @property
    def ref_nll(self) -> Optional[float]:
        """The reference's mean NLL of the targets (nats).

        Returns
        -------
        float or None
            ``ref_nll_sum / count``; None without targets.
        """
        return self._with_targets(self._mean(self.ref_nll_sum))

    @property
    def delta_nll(self) -> Optional[float]:
        """The model's extra NLL per token, nll - ref_nll.

        Returns
        -------
        float or None
            None without targets.
        """
        return self._with_targets(self._mean(self.nll_sum - self.ref_nll_sum))

    @property
    def perplexity(self) -> Optional[float]:
        """The model's perplexity of the targets, exp(nll).

        Returns
        -------
        float or None
            None without targets; inf where exp overflows.
        """
        return self._with_targets(_exp(self._mean(self.nll_sum)))

    @property
    def ref_perplexity(self) -> Optional[float]:
        """The reference's perplexity of the targets, exp(ref_nll).

        Returns
        -------
        float or None
            None without targets; inf where exp overflows.
        """
        return self._with_targets(_exp(self._mean(self.ref_nll_sum)))

    @property
    def ppl_ratio(self) -> Optional[float]:
        """The ratio of the perplexities, perplexity / ref_perplexity = exp(delta_nll).

        Returns
        -------
        float or None
            None without targets.
        """
        return self._with_targets(_exp(self._mean(self.nll_sum - self.ref_nll_sum)))

    @property
    def rms_dp(self) -> Optional[float]:
        """The root mean square of q[t] - p[t], the change of the target's probability.

        Returns
        -------
        float or None
            ``sqrt(dp_sq_sum / count)``; None without targets.
        """
        return self._with_targets(math.sqrt(self._mean(self.dp_sq_sum)))

    def as_dict(self) -> Dict[str, Any]:
        """The figures, JSON-ready except for NaN and inf (the CLI writes those as null).

        ``fastce compare --json`` prints these keys, among others.

        Returns
        -------
        dict
            ``count`` (int); ``mean_kl``, ``max_kl``, ``top1_agreement`` (floats);
            ``kl_quantiles`` ({"p50": float, ...}); ``topk_agreement`` ({"top<k>": float});
            ``nll``, ``ref_nll``, ``delta_nll``, ``perplexity``, ``ref_perplexity``,
            ``ppl_ratio``, ``rms_dp`` (floats, None without targets).

        See Also
        --------
        Comparison.merge : Combine comparisons before summarizing.

        Examples
        --------
        >>> import numpy as np
        >>> import fastce
        >>> x = np.array([[1.5, 1.0, 0.5], [0.0, 1.0, 2.0]])
        >>> d = fastce.compare(x, x + np.array([0.5, 0.0, -0.5])).as_dict()
        >>> sorted(d)  # doctest: +NORMALIZE_WHITESPACE
        ['count', 'delta_nll', 'kl_quantiles', 'max_kl', 'mean_kl', 'nll', 'perplexity', 'ppl_ratio',
         'ref_nll', 'ref_perplexity', 'rms_dp', 'top1_agreement', 'topk_agreement']
        >>> d["count"], d["top1_agreement"], d["nll"], sorted(d["kl_quantiles"])
        (2, 1.0, None, ['p50', 'p90', 'p99', 'p99.9'])
        """
        return {
            "count": self.count, "mean_kl": self.mean_kl, "max_kl": self.max_kl,
            "kl_quantiles": {f"p{100 * q:g}": v for q, v in self.kl_quantiles.items()},
            "top1_agreement": self.top1_agreement,
            "topk_agreement": {f"top{k}": v for k, v in self.topk_agreement.items()},
            "nll": self.nll, "ref_nll": self.ref_nll, "delta_nll": self.delta_nll,
            "perplexity": self.perplexity, "ref_perplexity": self.ref_perplexity,
            "ppl_ratio": self.ppl_ratio, "rms_dp": self.rms_dp,
        }


def _exp(x: float) -> float:
    return math.exp(x) if x < 709.0 else (math.inf if x == x else math.nan)


def _gather(x, t, layout):
    """x[i, t_i] along the class axis for every row, as float64 (t: ignored rows set to 0)."""
    if layout.unbatched:
        return np.asarray(x[int(t)], dtype=np.float64).reshape(1)
    idx = np.expand_dims(t, 1)
    return np.take_along_axis(x, idx, axis=1).astype(np.float64).reshape(-1)


def compare(logits: ArrayLike, ref_logits: ArrayLike, target: Optional[ArrayLike] = None, *,
            ignore_index: int = -100, top_k: TopK = (1,), num_threads: NumThreads = None) -> Comparison:
    r"""Compare the model's logits with the reference's, row by row, in one pass over both.

    Both arrays are read once, together (the two-stream kernel kl_rows): per row the KL of the
    model's distribution from the reference's, the rank of the reference's argmax among the
    model's logits, and with targets both log-sum-exps.

    Parameters
    ----------
    logits : array_like, shape (N, V), (V,) or (N, V, d1, ..., dk)
        The model's logits: float16, bfloat16, float32 or float64; classes on axis 1, or 0 when
        unbatched.
    ref_logits : array_like, of `logits`' shape
        The reference model's logits, of any of those dtypes.
    target : array_like of int, shape (N,), () or (N, d1, ..., dk), optional
        The tokens that followed; gives both models' NLL, perplexity, delta NLL and RMS delta-p.
        Rows whose target equals `ignore_index` are left out of every figure.
    ignore_index : int, default -100
        The target value of padding rows.
    top_k : int or sequence of int, default (1,)
        The k of `Comparison.topk_agreement` (the reference's argmax within the model's top k),
        each in [1, V]; 1 is always included.
    num_threads : int, optional
        As for `cross_entropy`: None uses every core.

    Returns
    -------
    Comparison
        Mergeable (``+``, `Comparison.merge`) across batches; see its figures.

    Raises
    ------
    ValueError
        If the two shapes differ, `target`'s shape does not fit, or a k of `top_k` is outside
        [1, V].
    TypeError
        If the logits are not floating-point or `target` is not made of integers.
    IndexError
        If a target is outside [0, V) and not `ignore_index`.

    See Also
    --------
    compare_linear : The same for two LM heads, their logits never stored.
    kl_div : The KL alone, reduced like a loss, with its gradient in `kl_div_with_grad`.
    score : One model's NLL and accuracy against targets.

    Notes
    -----
    With :math:`p = \mathrm{softmax}(\text{ref\_logits})` and
    :math:`q = \mathrm{softmax}(\text{logits})` per row, the row's KL is
    :math:`\sum_c p_c (\log p_c - \log q_c)`, and the reference's argmax :math:`a` is within
    the model's top k when :math:`\#\{c : x_c > x_a\} + \#\{c < a : x_c = x_a\} < k`.

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> ref = np.array([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 3.0]])
    >>> model = np.array([[1.5, 1.0, 0.5], [0.0, 1.0, 2.0], [1.0, 0.0, 3.0]])
    >>> c = fastce.compare(model, ref, np.array([0, 1, -100]), top_k=2)
    >>> c.count, c.top1_agreement, c.topk_agreement
    (2, 0.5, {1: 0.5, 2: 1.0})
    >>> round(c.mean_kl, 4), round(c.nll, 4), round(c.ref_nll, 4), round(c.rms_dp, 4)
    (0.2404, 1.0439, 0.4076, 0.3178)
    >>> fastce.compare(model, ref).nll is None
    True
    """
    p = _Pair(logits, ref_logits, num_threads)
    lay = p.layout
    ks = _check_top_k(top_k, lay.C)
    p.run(lse=target is not None, rank=True)
    assert p.kl is not None and p.rank is not None
    kept: Any = slice(None)
    if target is not None:
        tg = LossTargets(target, lay, weight=None, ignore_index=ignore_index, reduction="sum",
                         cdtype=p.cdtype, nthreads=p.nthreads, index_only=True)
        assert tg.target is not None  # index_only: class indices
        t = tg.target.reshape(lay.target_shape).astype(np.int64)
        keep = (t != tg.ignore_index).reshape(-1)
        t = np.where(t == tg.ignore_index, 0, t)
        kept = np.flatnonzero(keep)
    kl = p.kl[kept]
    valid = ~np.isnan(kl)
    rank = p.rank[kept]
    res = Comparison(count=int(kl.size), kl_sum=float(kl.sum()), kl_max=float(kl.max()) if kl.size else -math.inf,
                     kl_hist=_kl_histogram(kl), top_k=ks,
                     agree={k: int(np.count_nonzero(valid & (rank < k))) for k in ks},
                     has_targets=target is not None)
    if target is not None:
        assert p.lse is not None and p.ref_lse is not None
        with np.errstate(invalid="ignore", over="ignore"):
            nll = p.lse[kept] - _gather(p.b_user, t, lay)[kept]
            ref_nll = p.ref_lse[kept] - _gather(p.a_user, t, lay)[kept]
            dp = np.exp(-nll) - np.exp(-ref_nll)
        res.nll_sum, res.ref_nll_sum = float(nll.sum()), float(ref_nll.sum())
        res.dp_sq_sum = float(np.dot(dp, dp))
    return res


def compare_linear(hidden: ArrayLike, linear_weight: ArrayLike, ref_hidden: ArrayLike,
                   ref_linear_weight: ArrayLike, target: Optional[ArrayLike] = None, *,
                   linear_bias: Optional[ArrayLike] = None, ref_linear_bias: Optional[ArrayLike] = None,
                   ignore_index: int = -100, top_k: TopK = (1,), chunk_size: Optional[int] = None,
                   num_threads: NumThreads = None) -> Comparison:
    """`compare` of two LM heads, their logits computed chunk by chunk and never stored.

    The logits ``hidden @ linear_weight.T (+ linear_bias)`` are compared with
    ``ref_hidden @ ref_linear_weight.T (+ ref_linear_bias)`` a chunk of rows at a time (see
    `iter_logit_chunks`): neither model's (N, V) logits are ever stored, only one chunk of each.
    The two models may differ in hidden size, not in vocabulary or rows.

    Parameters
    ----------
    hidden : array_like, shape (N, H) or (H,)
        The model's hidden states, float32 or float64.
    linear_weight : array_like, shape (V, H)
        The model's LM head, of `hidden`'s dtype.
    ref_hidden : array_like, shape (N, H') or (H',)
        The reference's hidden states (the same rows as `hidden`).
    ref_linear_weight : array_like, shape (V, H')
        The reference's LM head.
    target : array_like of int, shape (N,) or (), optional
        As for `compare`.
    linear_bias, ref_linear_bias : array_like, shape (V,), optional
        The two heads' biases.
    ignore_index : int, default -100
        As for `compare`.
    top_k : int or sequence of int, default (1,)
        As for `compare`.
    chunk_size : int, optional
        Rows per chunk, the same for both heads (default: buffers of about 32 MiB each).
    num_threads : int, optional
        As for `compare`.

    Returns
    -------
    Comparison
        The comparison of the full logits (up to the order of floating-point summation).

    Raises
    ------
    ValueError
        If the shapes do not fit together (rows, vocabulary, target), a k of `top_k` is outside
        [1, V] or `chunk_size` is not positive.
    TypeError
        If `target` is not made of integers or `chunk_size` is not an integer.

    See Also
    --------
    compare : The same for given logits.
    score_linear : One LM head's score against targets.

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> hidden = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> weight = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    >>> ref_hidden = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    >>> ref_weight = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, -1.0, 0.5]])
    >>> c = fastce.compare_linear(hidden, weight, ref_hidden, ref_weight, np.array([0, 1, 2]),
    ...                           chunk_size=2)
    >>> c.count, c.top1_agreement, round(c.mean_kl, 4), round(c.delta_nll, 4)
    (3, 1.0, 0.0173, 0.1606)
    """
    h, rh = np.asarray(hidden), np.asarray(ref_hidden)
    w_shape, rw_shape = _shape(linear_weight), _shape(ref_linear_weight)
    if h.ndim not in (1, 2) or rh.ndim != h.ndim or len(w_shape) != 2 or len(rw_shape) != 2:
        raise ValueError(f"compare_linear takes hidden (N, H) or (H,) and linear_weight (V, H) for each model, got "
                         f"shapes {h.shape}, {w_shape}, {rh.shape}, {rw_shape}")
    if h.shape[:-1] != rh.shape[:-1]:
        raise ValueError(f"hidden and ref_hidden must have the same rows, got shapes {h.shape} and {rh.shape}")
    V = w_shape[0]
    if rw_shape[0] != V:
        raise ValueError(f"linear_weight and ref_linear_weight must have the same vocabulary, got {V} and "
                         f"{rw_shape[0]}")
    ks = _check_top_k(top_k, V or None)
    t = None
    if target is not None:
        t = np.asarray(target)
        if t.shape != h.shape[:-1]:
            raise ValueError(f"Expected target of shape {h.shape[:-1]} for hidden of shape {h.shape}, got {t.shape}")
        t = t.reshape(-1)
    total = Comparison.empty(ks, has_targets=t is not None)
    # one row count for both heads (the default depends on the dtype), so the chunks pair up
    n = h.shape[0] if h.ndim == 2 else 1
    rows = check_positive_int(chunk_size, "chunk_size") or default_chunk_rows(
        n, V, max(np.dtype(np.asarray(w).dtype).itemsize for w in (linear_weight, ref_linear_weight)))
    chunks = zip(iter_logit_chunks(hidden, linear_weight, linear_bias, rows),
                 iter_logit_chunks(ref_hidden, ref_linear_weight, ref_linear_bias, rows))
    for (r0, r1, z), (_, _, rz) in chunks:
        total = total.merge(compare(z, rz, None if t is None else t[r0:r1], ignore_index=ignore_index,
                                    top_k=ks, num_threads=num_threads))
    return total
