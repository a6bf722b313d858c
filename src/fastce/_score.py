"""Scoring a language model: summed NLL, token count, perplexity and top-k accuracy.

`score` reads the logits once. The scoring kernel (src/fastce/_csrc/kernel_impl.h, rows_core with
rank) gathers, beside each row's max and sum of exponentials, the target's rank

    gt = #{c : x_c > x_t} + #{c < t : x_c == x_t}

(the classes that argmax-style tie breaking puts above the target), so that the target is in the
top k exactly when gt < k, for every k at once, without sorting and without a second read.

A `Score` holds only sums (NLL, token count, correct counts per k), so scores of separate batches
merge exactly: a running accumulator over a stream of batches gives the figures of one big batch,
up to the order of the floating-point NLL summation.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, cast

import numpy as np

from ._functional import _CrossEntropyCall
from ._linear import iter_logit_chunks
from ._typing import ArrayLike, NumThreads, TopK

__all__ = ["Score", "score", "score_linear"]


def _check_top_k(top_k: TopK, V: Optional[int] = None) -> Tuple[int, ...]:
    """top_k as a sorted tuple of distinct ints >= 1 that always includes 1 (and <= V if known)."""
    ks: Any = (top_k,) if isinstance(top_k, numbers.Integral) else top_k
    try:
        ks = tuple(ks)
    except TypeError:
        raise TypeError(f"top_k must be an int or a sequence of ints, got {type(top_k).__name__}") from None
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise TypeError(f"top_k values must be integers, got {k!r}")
        if int(k) < 1 or (V is not None and int(k) > V):
            bound = f"[1, {V}] (the number of classes)" if V is not None else ">= 1"
            raise ValueError(f"top_k values must be in {bound}, got {k}")
    return tuple(sorted({1, *(int(k) for k in ks)}))


def _shape(a: ArrayLike) -> Tuple[int, ...]:
    """np.shape of an array argument (an object with only __dlpack__ goes through np.asarray, as
    np.shape does with any argument)."""
    return tuple(np.shape(cast(Any, a)))


@dataclass
class Score:
    r"""Mergeable scoring sums over a set of tokens.

    A `Score` holds sums and counts only, so the scores of separate batches merge exactly (up to
    the order of the floating-point NLL summation): merge with ``a.merge(b)``, ``a + b`` or
    ``acc += s``; `Score.empty` starts an accumulator. `score` and `score_linear` make one.

    Parameters
    ----------
    nll_sum : float, default 0.0
        Sum over the scored tokens of -log p(target), accumulated in float64.
    count : int, default 0
        Scored tokens (targets equal to ignore_index are left out); also readable as `tokens`,
        the name that `as_dict` and the CLI use.
    top_k : tuple of int, default (1,)
        The k of the accuracies, each >= 1; stored sorted, without repeats, with 1 added
        (`Score.empty` also takes a single int).
    correct : dict of int to int, optional
        For each k, the number of scored tokens whose target ranks within the top k (ties broken towards
        the lower class index, as argmax); rows whose loss is NaN count as incorrect. A k of
        `top_k` missing here counts 0.

    Attributes
    ----------
    tokens : int
        The same number as `count`.
    mean_nll : float
        Mean negative log-likelihood per scored token, in nats.
    perplexity : float
        exp(mean_nll).
    accuracy : float
        Top-1 accuracy.
    top_k_accuracy : dict of int to float
        k -> top-k accuracy.

    Raises
    ------
    TypeError
        If `top_k` is not an int or a sequence of ints.
    ValueError
        If a value of `top_k` is below 1.

    See Also
    --------
    score : The Score of a batch of logits.
    score_linear : The Score of an LM head's logits, computed chunk by chunk.

    Notes
    -----
    With :math:`T` the scored tokens, :math:`t_i` their targets and :math:`r_i` the target's
    rank (the number of classes that argmax's tie order puts above it),

    .. math::

        \text{mean\_nll} = \frac{1}{|T|} \sum_{i \in T} -\log p_i(t_i), \qquad
        \text{perplexity} = e^{\text{mean\_nll}}, \qquad
        \text{acc}_k = \frac{\#\{i \in T : r_i < k\}}{|T|}.

    Every mean is NaN over no tokens.

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.2], [0.3, 0.2, 3.0]])
    >>> acc = fastce.Score.empty(top_k=2)
    >>> for rows in (slice(0, 1), slice(1, 3)):
    ...     acc += fastce.score(logits[rows], np.array([0, 0, -100])[rows], top_k=2)
    >>> acc.count, acc.correct
    (2, {1: 1, 2: 2})
    >>> round(acc.perplexity, 4), acc.top_k_accuracy
    (3.7221, {1: 0.5, 2: 1.0})
    """

    nll_sum: float = 0.0
    count: int = 0
    top_k: Tuple[int, ...] = (1,)
    correct: Dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.top_k = _check_top_k(self.top_k)
        self.correct = {k: int(self.correct.get(k, 0)) for k in self.top_k}

    @classmethod
    def empty(cls, top_k: TopK = (1,)) -> Score:
        """A score of no tokens, to accumulate into.

        Merging a batch's score into it gives that score.

        Parameters
        ----------
        top_k : int or sequence of int, default (1,)
            The k of the accuracies (1 is always included).

        Returns
        -------
        Score
            A score with nll_sum 0.0, count 0 and every correct count 0.

        Raises
        ------
        TypeError
            If `top_k` is not an int or a sequence of ints.
        ValueError
            If a value of `top_k` is below 1.

        See Also
        --------
        Score.merge : Adds a batch's score.

        Examples
        --------
        >>> import fastce
        >>> fastce.Score.empty(top_k=(5, 2))
        Score(nll_sum=0.0, count=0, top_k=(1, 2, 5), correct={1: 0, 2: 0, 5: 0})
        """
        return cls(0.0, 0, _check_top_k(top_k))

    def merge(self, other: Score) -> Score:
        """The score of both token sets (a new Score; neither operand changes).

        ``a + b`` is the same; ``acc += s`` rebinds ``acc`` to the merged score.

        Parameters
        ----------
        other : Score
            The score of other tokens, with the same `top_k`.

        Returns
        -------
        Score
            The sums and counts of both, added.

        Raises
        ------
        TypeError
            If `other` is not a Score.
        ValueError
            If the two scores have different `top_k`.

        See Also
        --------
        Score.empty : An accumulator to merge into.

        Examples
        --------
        >>> import fastce
        >>> a = fastce.Score(nll_sum=1.5, count=2, correct={1: 1})
        >>> b = fastce.Score(nll_sum=0.5, count=1, correct={1: 1})
        >>> a.merge(b)
        Score(nll_sum=2.0, count=3, top_k=(1,), correct={1: 2})
        >>> (a + b).accuracy == a.merge(b).accuracy
        True
        """
        if not isinstance(other, Score):
            raise TypeError(f"can only merge a Score, got {type(other).__name__}")
        if other.top_k != self.top_k:
            raise ValueError(f"cannot merge scores with different top_k: {self.top_k} and {other.top_k}")
        return Score(self.nll_sum + other.nll_sum, self.count + other.count, self.top_k,
                     {k: self.correct[k] + other.correct[k] for k in self.top_k})

    __add__ = merge

    @property
    def tokens(self) -> int:
        """Scored tokens (targets equal to ignore_index left out); read-only.

        The same number as `count`, under the name that `as_dict` and the CLI print.

        Returns
        -------
        int
            The number of scored tokens.
        """
        return self.count

    @property
    def mean_nll(self) -> float:
        """Mean negative log-likelihood per scored token, in nats (NaN with no tokens).

        Returns
        -------
        float
            ``nll_sum / count``.
        """
        return self.nll_sum / self.count if self.count else math.nan

    @property
    def perplexity(self) -> float:
        """The perplexity, exp(mean NLL) (NaN with no tokens).

        Returns
        -------
        float
            ``exp(mean_nll)``; inf where that overflows.
        """
        m = self.mean_nll
        return math.exp(m) if m < 709.0 else (math.inf if m == m else math.nan)

    @property
    def top_k_accuracy(self) -> Dict[int, float]:
        """For each k, the fraction of scored tokens whose target is within the top k.

        Returns
        -------
        dict of int to float
            ``correct[k] / count`` for each k of `top_k` (NaN with no tokens).
        """
        return {k: (c / self.count if self.count else math.nan) for k, c in self.correct.items()}

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy (the argmax equals the target), NaN with no tokens.

        Returns
        -------
        float
            ``top_k_accuracy[1]``.
        """
        return self.top_k_accuracy[1]

    def as_dict(self) -> Dict[str, Any]:
        """A JSON-serializable summary.

        ``fastce score --json`` prints these keys, among others.

        Returns
        -------
        dict
            ``tokens`` (int), ``nll_sum``, ``mean_nll``, ``perplexity`` (floats) and ``accuracy``:
            ``{"top<k>": float}`` for each k of `top_k`. NaN and inf stay floats.

        See Also
        --------
        Score.merge : Combine scores before summarizing.

        Examples
        --------
        >>> import fastce
        >>> fastce.Score(nll_sum=3.0, count=2, top_k=(1, 2), correct={1: 1, 2: 2}).as_dict()
        ... # doctest: +NORMALIZE_WHITESPACE
        {'tokens': 2, 'nll_sum': 3.0, 'mean_nll': 1.5, 'perplexity': 4.4816890703380645,
         'accuracy': {'top1': 0.5, 'top2': 1.0}}
        """
        return {
            "tokens": self.count,
            "nll_sum": self.nll_sum,
            "mean_nll": self.mean_nll,
            "perplexity": self.perplexity,
            "accuracy": {f"top{k}": a for k, a in self.top_k_accuracy.items()},
        }


def _score_problem(p: _CrossEntropyCall, top_k: Tuple[int, ...]) -> Score:
    """The Score of a _CrossEntropyCall run with need_rank (rank -1 marks ignored rows)."""
    p.run()
    assert p.row_rank is not None
    kept = p.row_rank >= 0
    loss = p.row_loss[kept]
    rank = p.row_rank[kept]
    valid = ~np.isnan(loss)
    correct = {k: int(np.count_nonzero(valid & (rank < k))) for k in top_k}
    return Score(float(loss.sum()), int(np.count_nonzero(kept)), top_k, correct)


def score(logits: ArrayLike, target: ArrayLike, *, ignore_index: int = -100, top_k: TopK = (1,),
          softcap: Optional[float] = None, num_threads: NumThreads = None) -> Score:
    """Score logits against class-index targets in one pass: NLL, perplexity, top-k accuracy.

    The logits are read once: the kernel gathers each row's log-sum-exp and the target's rank
    together, so every k of `top_k` costs the same single pass.

    Parameters
    ----------
    logits : array_like, shape (N, V) or (V,)
        The logits: float16, bfloat16, float32 or float64, any layout.
    target : array_like of int, shape (N,) or ()
        Class indices in [0, V), or equal to `ignore_index`.
    ignore_index : int, default -100
        Targets equal to this are not scored (padding).
    top_k : int or sequence of int, default (1,)
        The k of the top-k accuracies, each in [1, V]; top-1 is always included.
    softcap : float, optional
        A cap > 0: score the capped logits ``cap * tanh(logits / cap)`` (Gemma 2).
    num_threads : int, optional
        As for `cross_entropy`: None uses every core.

    Returns
    -------
    Score
        The sums behind nll_sum, count, mean_nll, perplexity, accuracy, top_k_accuracy;
        mergeable across batches.

    Raises
    ------
    ValueError
        If `logits` is not 1-D or 2-D, or a k of `top_k` is outside [1, V].
    TypeError
        If `target` holds class probabilities rather than class indices, or `top_k` is not
        made of integers.
    IndexError
        If a target is outside [0, V) and not `ignore_index`.

    See Also
    --------
    score_linear : The same for the logits of an LM head, never stored.
    Score : The result, and how scores merge.
    compare : A model's logits against a reference model's.

    Notes
    -----
    A target's rank is :math:`r = \\#\\{c : x_c > x_t\\} + \\#\\{c < t : x_c = x_t\\}` (argmax's
    tie order: the lower class index first), and the target is within the top k exactly when
    :math:`r < k`. Rows whose loss is NaN are counted as incorrect.

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.2], [0.3, 0.2, 3.0]])
    >>> s = fastce.score(logits, np.array([0, 0, -100]), top_k=2)
    >>> s.tokens, s.correct
    (2, {1: 1, 2: 2})
    >>> round(s.mean_nll, 4), round(s.perplexity, 4), s.accuracy
    (1.3143, 3.7221, 0.5)
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


def score_linear(hidden: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
                 linear_bias: Optional[ArrayLike] = None, ignore_index: int = -100, top_k: TopK = (1,),
                 softcap: Optional[float] = None, chunk_size: Optional[int] = None,
                 num_threads: NumThreads = None) -> Score:
    """`score` of the logits of an LM head, computed chunk by chunk and never stored.

    The logits ``hidden @ linear_weight.T (+ linear_bias)`` are computed a chunk of rows at a
    time through BLAS (see `linear_cross_entropy`), scored, and the chunks' scores merged: the
    (N, V) logits are never materialized.

    Parameters
    ----------
    hidden : array_like, shape (N, H) or (H,)
        The hidden states, float32 or float64.
    linear_weight : array_like, shape (V, H)
        The LM head's weight, of `hidden`'s dtype.
    target : array_like of int, shape (N,) or ()
        Class indices in [0, V), or equal to `ignore_index`.
    linear_bias : array_like, shape (V,), optional
        Added to every row of logits.
    ignore_index : int, default -100
        As for `score`.
    top_k : int or sequence of int, default (1,)
        As for `score`.
    softcap : float, optional
        As for `score`.
    chunk_size : int, optional
        Rows per chunk (default: a buffer of about 32 MiB).
    num_threads : int, optional
        As for `score`.

    Returns
    -------
    Score
        The score of the full (N, V) logits (up to the order of the NLL summation).

    Raises
    ------
    ValueError
        If the shapes do not fit together, a k of `top_k` is outside [1, V] or `chunk_size` is
        not positive.
    TypeError
        If `target` is not made of integers, or `chunk_size` is not an integer.

    See Also
    --------
    score : The same for given logits.
    iter_logit_chunks : The chunks of logits, as this function computes them.

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> hidden = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> weight = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    >>> s = fastce.score_linear(hidden, weight, np.array([0, 1, 2]), chunk_size=2)
    >>> s.count, s.correct, round(s.perplexity, 4)
    (3, {1: 2}, 2.9279)
    >>> import math
    >>> math.isclose(s.nll_sum, fastce.score(hidden @ weight.T, np.array([0, 1, 2])).nll_sum)
    True
    """
    h, t = np.asarray(hidden), np.asarray(target)
    w_shape = _shape(linear_weight)
    if h.ndim not in (1, 2) or len(w_shape) != 2:
        raise ValueError(f"score_linear takes hidden (N, H) or (H,) and linear_weight (V, H), got shapes "
                         f"{h.shape} and {w_shape}")
    rows_expected = (h.shape[0],) if h.ndim == 2 else ()
    if t.shape != rows_expected:
        raise ValueError(f"Expected target of shape {rows_expected} for hidden of shape {h.shape}, got {t.shape}")
    ks = _check_top_k(top_k, w_shape[0] or None)
    t = t.reshape(-1)
    total = Score.empty(ks)
    for r0, r1, logits in iter_logit_chunks(hidden, linear_weight, linear_bias, chunk_size):
        p = _CrossEntropyCall(logits, t[r0:r1], None, ignore_index, "sum", 0.0, num_threads, softcap=softcap,
                     need_rank=True)
        if p.kind != "index":
            raise TypeError(f"score_linear takes class-index targets (integers), got dtype {t.dtype}")
        total = total.merge(_score_problem(p, ks))
    return total
