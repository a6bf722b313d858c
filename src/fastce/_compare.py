"""Comparing a model with a reference, token by token: KL, agreement, and their NLLs on targets.

`compare(logits, ref_logits, target)` reads both logit arrays once (the two-stream kernel
kl_rows, include/fastce/kl_impl.h) and returns a `Comparison`: sums and counts only, so the
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

import math
from dataclasses import dataclass, field

import numpy as np

from ._kl import _Pair
from ._score import _check_top_k
from ._targets import LossTargets

__all__ = ["Comparison", "compare", "compare_linear", "KL_QUANTILES"]

KL_BINS_PER_DECADE = 16
KL_HIST_LOW, KL_HIST_HIGH = 1e-12, 1e6
#: bin edges: values in [edges[j-1], edges[j]) go to bin j; bin 0 holds values below edges[0]
#: (and zero), bin len(edges) - 1 finite values >= 1e6, the last bin +inf
_DECADES = round(math.log10(KL_HIST_HIGH / KL_HIST_LOW))
KL_BIN_EDGES = np.append(10.0 ** (math.log10(KL_HIST_LOW) + np.arange(_DECADES * KL_BINS_PER_DECADE + 1)
                                  / KL_BINS_PER_DECADE), np.inf)
KL_NBINS = len(KL_BIN_EDGES) + 1
#: the quantiles that `Comparison.kl_quantiles` (and the CLI) report
KL_QUANTILES = (0.5, 0.9, 0.99, 0.999)


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
    """Mergeable figures of a model's next-token distributions against a reference's.

    Stored sums and counts (merge adds them):
      count          rows compared (padding rows, target == ignore_index, left out)
      kl_sum, kl_max sum and max of the per-row KL(p_ref || q_model), nats (NaN rows make both NaN)
      kl_hist        counts of the per-row KL in log-spaced bins (KL_BIN_EDGES; NaN rows in none)
      top_k, agree   k -> rows whose reference argmax is within the model's top k (argmax's tie
                     order: k = 1 is "the two argmaxes are equal"); rows with NaN KL agree nowhere
      has_targets    whether targets were given; then nll_sum, ref_nll_sum (sums of -log q[t],
                     -log p[t]) and dp_sq_sum (sum of (q[t] - p[t])^2)

    Figures (also the keys of as_dict() and of `fastce compare --json`): count, mean_kl, max_kl,
    kl_quantiles, top1_agreement, topk_agreement, nll, ref_nll, delta_nll, perplexity,
    ref_perplexity, ppl_ratio, rms_dp. The target figures are None without targets, and every
    mean is NaN over no rows.
    """

    count: int = 0
    kl_sum: float = 0.0
    kl_max: float = -math.inf
    kl_hist: np.ndarray = None
    top_k: tuple = (1,)
    agree: dict = field(default_factory=dict)
    has_targets: bool = False
    nll_sum: float = 0.0
    ref_nll_sum: float = 0.0
    dp_sq_sum: float = 0.0

    def __post_init__(self):
        self.top_k = _check_top_k(self.top_k)
        self.agree = {k: int(self.agree.get(k, 0)) for k in self.top_k}
        hist = np.zeros(KL_NBINS, np.int64) if self.kl_hist is None else np.asarray(self.kl_hist, np.int64)
        if hist.shape != (KL_NBINS,):
            raise ValueError(f"kl_hist must have {KL_NBINS} bins, got shape {hist.shape}")
        self.kl_hist = hist

    @classmethod
    def empty(cls, top_k=(1,), has_targets=False):
        """A comparison of no rows, to accumulate into."""
        return cls(top_k=top_k, has_targets=has_targets)

    def merge(self, other):
        """The comparison of both row sets (a new Comparison; neither operand changes)."""
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

    def _mean(self, total):
        return total / self.count if self.count else math.nan

    @property
    def mean_kl(self):
        return self._mean(self.kl_sum)

    @property
    def max_kl(self):
        return self.kl_max if self.count else math.nan

    @property
    def kl_quantiles(self):
        """{q: approximate q-quantile of the per-row KL} for q in KL_QUANTILES, from the
        histogram (within a factor 10**(1/16) for values in [1e-12, 1e6]); NaN without rows."""
        n = int(self.kl_hist.sum())
        if n == 0:
            return {q: math.nan for q in KL_QUANTILES}
        cum = np.cumsum(self.kl_hist)
        return {q: _bin_value(int(np.searchsorted(cum, max(1, math.ceil(q * n))))) for q in KL_QUANTILES}

    @property
    def top1_agreement(self):
        return self._mean(self.agree[1])

    @property
    def topk_agreement(self):
        """{k: fraction of rows whose reference argmax is within the model's top k}."""
        return {k: self._mean(c) for k, c in self.agree.items()}

    def _with_targets(self, value):
        return value if self.has_targets else None

    @property
    def nll(self):
        """The model's mean NLL of the targets (nats)."""
        return self._with_targets(self._mean(self.nll_sum))

    @property
    def ref_nll(self):
        return self._with_targets(self._mean(self.ref_nll_sum))

    @property
    def delta_nll(self):
        """nll - ref_nll: the model's extra NLL per token."""
        return self._with_targets(self._mean(self.nll_sum - self.ref_nll_sum))

    @property
    def perplexity(self):
        return self._with_targets(_exp(self._mean(self.nll_sum)))

    @property
    def ref_perplexity(self):
        return self._with_targets(_exp(self._mean(self.ref_nll_sum)))

    @property
    def ppl_ratio(self):
        """perplexity / ref_perplexity = exp(delta_nll)."""
        return self._with_targets(_exp(self._mean(self.nll_sum - self.ref_nll_sum)))

    @property
    def rms_dp(self):
        """The root mean square of q[t] - p[t], the change of the target's probability."""
        return self._with_targets(math.sqrt(self._mean(self.dp_sq_sum)))

    def as_dict(self):
        """The figures, JSON-ready except for NaN and inf (the CLI writes those as null)."""
        return {
            "count": self.count, "mean_kl": self.mean_kl, "max_kl": self.max_kl,
            "kl_quantiles": {f"p{100 * q:g}": v for q, v in self.kl_quantiles.items()},
            "top1_agreement": self.top1_agreement,
            "topk_agreement": {f"top{k}": v for k, v in self.topk_agreement.items()},
            "nll": self.nll, "ref_nll": self.ref_nll, "delta_nll": self.delta_nll,
            "perplexity": self.perplexity, "ref_perplexity": self.ref_perplexity,
            "ppl_ratio": self.ppl_ratio, "rms_dp": self.rms_dp,
        }


def _exp(x):
    return math.exp(x) if x < 709.0 else (math.inf if x == x else math.nan)


def _gather(x, t, layout):
    """x[i, t_i] along the class axis for every row, as float64 (t: ignored rows set to 0)."""
    if layout.unbatched:
        return np.asarray(x[int(t)], dtype=np.float64).reshape(1)
    idx = np.expand_dims(t, 1)
    return np.take_along_axis(x, idx, axis=1).astype(np.float64).reshape(-1)


def compare(logits, ref_logits, target=None, *, ignore_index=-100, top_k=(1,), num_threads=None):
    """Compares the model's logits with the reference's, row by row, in one pass over both.

    Parameters
    ----------
    logits : array (N, V), (V,) or (N, V, d1, ..., dk): the model's logits (float16, bfloat16,
        float32 or float64; classes on axis 1, or 0 when unbatched)
    ref_logits : array of the same shape: the reference model's logits, of any of those dtypes
    target : integer array of the loss's shape (N,) / () / (N, d1..dk), optional
        The tokens that followed; gives both models' NLL, perplexity, delta NLL and RMS delta-p.
        Rows whose target equals ignore_index are left out of every figure.
    top_k : int or sequence of ints in [1, V]
        The k of topk_agreement (the reference's argmax within the model's top k); 1 is always
        included.
    num_threads : int, optional
        As for cross_entropy.

    Returns
    -------
    Comparison: mergeable (``+``, merge) across batches; see its figures.
    """
    p = _Pair(logits, ref_logits, num_threads)
    lay = p.layout
    ks = _check_top_k(top_k, lay.C)
    p.run(lse=target is not None, rank=True)
    kept = slice(None)
    if target is not None:
        tg = LossTargets(target, lay, weight=None, ignore_index=ignore_index, reduction="sum",
                         cdtype=p.cdtype, nthreads=p.nthreads, index_only=True)
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
        with np.errstate(invalid="ignore", over="ignore"):
            nll = p.lse[kept] - _gather(p.b_user, t, lay)[kept]
            ref_nll = p.ref_lse[kept] - _gather(p.a_user, t, lay)[kept]
            dp = np.exp(-nll) - np.exp(-ref_nll)
        res.nll_sum, res.ref_nll_sum = float(nll.sum()), float(ref_nll.sum())
        res.dp_sq_sum = float(np.dot(dp, dp))
    return res


def compare_linear(hidden, linear_weight, ref_hidden, ref_linear_weight, target=None, *, linear_bias=None,
                   ref_linear_bias=None, ignore_index=-100, top_k=(1,), chunk_size=None, num_threads=None):
    """`compare` of two LM heads, hidden @ linear_weight.T (+ bias) against ref_hidden @
    ref_linear_weight.T (+ ref bias), computed chunk by chunk of rows (see iter_logit_chunks):
    neither model's (N, V) logits are ever stored, only one chunk of each.

    hidden (N, H) or (H,), linear_weight (V, H); ref_hidden (N, H') or (H',), ref_linear_weight
    (V, H'): the two models may differ in hidden size, not in vocabulary or rows.
    chunk_size : rows per chunk (default: buffers of about 32 MiB each). Other parameters as `compare`.
    """
    from ._linear import _check_chunk_size, default_chunk_rows, iter_logit_chunks

    h, rh = np.asarray(hidden), np.asarray(ref_hidden)
    if h.ndim not in (1, 2) or rh.ndim != h.ndim or np.ndim(linear_weight) != 2 or np.ndim(ref_linear_weight) != 2:
        raise ValueError(f"compare_linear takes hidden (N, H) or (H,) and linear_weight (V, H) for each model, got "
                         f"shapes {h.shape}, {np.shape(linear_weight)}, {rh.shape}, {np.shape(ref_linear_weight)}")
    if h.shape[:-1] != rh.shape[:-1]:
        raise ValueError(f"hidden and ref_hidden must have the same rows, got shapes {h.shape} and {rh.shape}")
    V = np.shape(linear_weight)[0]
    if np.shape(ref_linear_weight)[0] != V:
        raise ValueError(f"linear_weight and ref_linear_weight must have the same vocabulary, got {V} and "
                         f"{np.shape(ref_linear_weight)[0]}")
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
    rows = _check_chunk_size(chunk_size) or default_chunk_rows(
        n, V, max(np.dtype(np.asarray(w).dtype).itemsize for w in (linear_weight, ref_linear_weight)))
    chunks = zip(iter_logit_chunks(hidden, linear_weight, linear_bias, rows),
                 iter_logit_chunks(ref_hidden, ref_linear_weight, ref_linear_bias, rows))
    for (r0, r1, z), (_, _, rz) in chunks:
        total = total.merge(compare(z, rz, None if t is None else t[r0:r1], ignore_index=ignore_index,
                                    top_k=ks, num_threads=num_threads))
    return total
