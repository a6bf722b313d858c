"""Scoring a language model: summed NLL, token count, perplexity and top-k accuracy.

`score` reads the logits once. The scoring kernel (include/fastce/kernel_impl.h, rows_core with
rank) gathers, beside each row's max and sum of exponentials, the target's rank

    gt = #{c : x_c > x_t} + #{c < t : x_c == x_t}

(the classes that argmax-style tie breaking puts above the target), so that the target is in the
top k exactly when gt < k, for every k at once, without sorting and without a second read.

A `Score` holds only sums (NLL, token count, correct counts per k), so scores of separate batches
merge exactly: a running accumulator over a stream of batches gives the figures of one big batch,
up to the order of the floating-point NLL summation.
"""
import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from ._functional import _CrossEntropyCall

__all__ = ["Score", "score", "score_linear"]


def _check_top_k(top_k, V=None):
    """top_k as a sorted tuple of distinct ints >= 1 that always includes 1 (and <= V if known)."""
    ks = (top_k,) if isinstance(top_k, numbers.Integral) else top_k
    try:
        ks = tuple(ks)
    except TypeError:
        raise TypeError(f"top_k must be an int or a sequence of ints, got {type(top_k).__name__}") from None
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise TypeError(f"top_k values must be integers, got {k!r}")
        if k < 1 or (V is not None and k > V):
            bound = f"[1, {V}] (the number of classes)" if V is not None else ">= 1"
            raise ValueError(f"top_k values must be in {bound}, got {k}")
    return tuple(sorted({1, *(int(k) for k in ks)}))


@dataclass
class Score:
    """Mergeable scoring sums over a set of tokens.

    nll_sum : float    sum over scored tokens of -log p(target) (float64 accumulation)
    count   : int      scored tokens (targets equal to ignore_index are left out); also
                       readable as `tokens`, the name as_dict() and the CLI use
    top_k   : tuple    the k of the accuracies, sorted, always including 1
    correct : dict     k -> number of scored tokens whose target ranks within the top k (ties
                       broken towards the lower class index, as argmax); rows whose loss is NaN
                       count as incorrect

    Merge with `a.merge(b)`, `a + b` or `acc += s`; `Score.empty(top_k)` starts an accumulator.
    """

    nll_sum: float = 0.0
    count: int = 0
    top_k: tuple = (1,)
    correct: dict = field(default_factory=dict)

    def __post_init__(self):
        self.top_k = _check_top_k(self.top_k)
        self.correct = {k: int(self.correct.get(k, 0)) for k in self.top_k}

    @classmethod
    def empty(cls, top_k=(1,)):
        """A score of no tokens, to accumulate into."""
        return cls(0.0, 0, top_k)

    def merge(self, other):
        """The score of both token sets (a new Score; neither operand changes)."""
        if not isinstance(other, Score):
            raise TypeError(f"can only merge a Score, got {type(other).__name__}")
        if other.top_k != self.top_k:
            raise ValueError(f"cannot merge scores with different top_k: {self.top_k} and {other.top_k}")
        return Score(self.nll_sum + other.nll_sum, self.count + other.count, self.top_k,
                     {k: self.correct[k] + other.correct[k] for k in self.top_k})

    __add__ = merge

    @property
    def tokens(self):
        """Scored tokens (targets equal to ignore_index left out): the same number as `count`,
        under the name that as_dict() and the CLI print. Read-only."""
        return self.count

    @property
    def mean_nll(self):
        """Mean negative log-likelihood per scored token, in nats (NaN with no tokens)."""
        return self.nll_sum / self.count if self.count else math.nan

    @property
    def perplexity(self):
        """exp(mean NLL) (NaN with no tokens)."""
        m = self.mean_nll
        return math.exp(m) if m < 709.0 else (math.inf if m == m else math.nan)

    @property
    def top_k_accuracy(self):
        """k -> fraction of scored tokens whose target is within the top k (NaN with no tokens)."""
        return {k: (c / self.count if self.count else math.nan) for k, c in self.correct.items()}

    @property
    def accuracy(self):
        """Top-1 accuracy (the argmax equals the target), NaN with no tokens."""
        return self.top_k_accuracy[1]

    def as_dict(self):
        """A JSON-serializable summary."""
        return {
            "tokens": self.count,
            "nll_sum": self.nll_sum,
            "mean_nll": self.mean_nll,
            "perplexity": self.perplexity,
            "accuracy": {f"top{k}": a for k, a in self.top_k_accuracy.items()},
        }


def _score_problem(p, top_k):
    """The Score of a _CrossEntropyCall run with need_rank (rank -1 marks ignored rows)."""
    p.run()
    kept = p.row_rank >= 0
    loss = p.row_loss[kept]
    rank = p.row_rank[kept]
    valid = ~np.isnan(loss)
    correct = {k: int(np.count_nonzero(valid & (rank < k))) for k in top_k}
    return Score(float(loss.sum()), int(np.count_nonzero(kept)), top_k, correct)


def score(logits, target, *, ignore_index=-100, top_k=(1,), softcap=None, num_threads=None):
    """Scores logits against class-index targets in one pass: NLL, perplexity, top-k accuracy.

    Parameters
    ----------
    logits : array (N, V) or (V,), float16, float32 or float64, any layout
    target : integer array (N,) or (), in [0, V) or equal to ignore_index
    ignore_index : int
        Targets equal to this are not scored (padding).
    top_k : int or sequence of ints in [1, V]
        The k of the top-k accuracies; top-1 is always included.
    softcap : float > 0, optional
        Score the capped logits cap * tanh(logits / cap) (Gemma 2).
    num_threads : int, optional
        As for cross_entropy.

    Returns
    -------
    Score: nll_sum, count, mean_nll, perplexity, accuracy, top_k_accuracy; mergeable across batches.
    """
    arr = np.asarray(logits)
    if arr.ndim not in (1, 2):
        raise ValueError(f"logits must have shape (N, V) or (V,), got shape {arr.shape}")
    V = arr.shape[-1]
    ks = _check_top_k(top_k, V if V > 0 else None)
    p = _CrossEntropyCall(logits, target, None, ignore_index, "sum", 0.0, num_threads, softcap=softcap, need_rank=True)
    if p.kind != "index":
        raise TypeError(f"score takes class-index targets (integers), got dtype {np.asarray(target).dtype}")
    return _score_problem(p, ks)


def score_linear(hidden, linear_weight, target, *, linear_bias=None, ignore_index=-100, top_k=(1,),
                 softcap=None, chunk_size=None, num_threads=None):
    """`score` of the logits hidden @ linear_weight.T (+ linear_bias), computed chunk by chunk
    through BLAS (see linear_cross_entropy): the (N, V) logits are never materialized.

    hidden : (N, H) or (H,); linear_weight : (V, H); linear_bias : (V,), optional; target : (N,) or ().
    chunk_size : rows per chunk (default: a buffer of about 32 MiB). Other parameters as `score`.
    """
    from ._linear import iter_logit_chunks

    h, t = np.asarray(hidden), np.asarray(target)
    if h.ndim not in (1, 2) or np.ndim(linear_weight) != 2:
        raise ValueError(f"score_linear takes hidden (N, H) or (H,) and linear_weight (V, H), got shapes "
                         f"{h.shape} and {np.shape(linear_weight)}")
    rows_expected = (h.shape[0],) if h.ndim == 2 else ()
    if t.shape != rows_expected:
        raise ValueError(f"Expected target of shape {rows_expected} for hidden of shape {h.shape}, got {t.shape}")
    ks = _check_top_k(top_k, np.shape(linear_weight)[0] or None)
    t = t.reshape(-1)
    total = Score.empty(ks)
    for r0, r1, logits in iter_logit_chunks(hidden, linear_weight, linear_bias, chunk_size):
        p = _CrossEntropyCall(logits, t[r0:r1], None, ignore_index, "sum", 0.0, num_threads, softcap=softcap,
                     need_rank=True)
        if p.kind != "index":
            raise TypeError(f"score_linear takes class-index targets (integers), got dtype {t.dtype}")
        total = total.merge(_score_problem(p, ks))
    return total
