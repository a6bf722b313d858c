"""Slow, obviously-correct float64 NumPy reference for fastce.

This module is the test oracle.  It is written directly from the formulas of
``torch.nn.functional.cross_entropy`` (torch 2.13) and never calls the fastce
kernels; it only depends on NumPy.  Every computation is done in float64 and
every result is float64, whatever the input dtype (float16/float32 inputs are
first converted exactly to float64).

Notation
--------
``x`` are the logits, ``C`` the number of classes.  The class axis is axis 1
for inputs with ``ndim >= 2`` (shapes ``(N, C)`` and ``(N, C, d1, ..., dk)``)
and axis 0 for an unbatched ``(C,)`` input (whose index target is 0-d).  An
"element" ``i`` is one position of the target shape ``(N, d1, ..., dk)`` (or
the single position of an unbatched input).

    log p_ic = x_ic - m_i - log(sum_k exp(x_ik - m_i)),    m_i = max_k x_ik
    p_ic     = exp(x_ic - m_i) / sum_k exp(x_ik - m_i)

``w`` is the class weight vector (all ones when not given), ``W = sum_c w_c``,
``eps`` the label smoothing, ``g`` the grad_output and ``D`` the "mean"
denominator (``D = 1`` for reduction "sum" and "none").

Index targets ``t_i`` (any integer dtype; ``t_i == ignore_index`` is ignored)::

    nll_i    = -w[t_i] * log p_i[t_i]                (0 when ignored)
    smooth_i = -sum_c w_c log p_ic                   (0 when ignored)
    loss_i   = (1 - eps) * nll_i + (eps / C) * smooth_i      (eps > 0)
    loss_i   = nll_i                                          (eps == 0)
    mean:  D = sum_{i not ignored} w[t_i];
           loss = (1 - eps) * (sum_i nll_i) / D + (eps / C) * (sum_i smooth_i) / D
           (NaN when every target is ignored or the batch is empty; sum gives 0)
    dL/dx_ic = g_i / D * [(1 - eps) * w[t_i] * (p_ic - [c == t_i])
                          + (eps / C) * (W * p_ic - w_c)]
    (a row of zeros for ignored elements)

Probability targets ``y`` (floating, same shape as the input)::

    y'_ic  = (1 - eps) * y_ic + eps / C
    loss_i = -sum_c w_c * y'_ic * log p_ic
    mean:  D = number of elements = N * d1 * ... * dk   (NaN when empty)
    dL/dx_ic = g_i * (p_ic * sum_k w_k y'_ik - w_c y'_ic) / D

Reductions: "none" returns the per-element array (target shape, 0-d for an
unbatched input), "sum" returns ``sum_i loss_i`` and "mean" the mean described
above; both as ``numpy.float64`` scalars.

Two models (:func:`kl_div`, :func:`compare`): ``b`` the model's logits, ``a`` the reference's,
same shape, classes on the class axis; per element i, p = softmax(a_i), q = softmax(b_i)::

    kl_i      = sum_c p_ic (log p_ic - log q_ic)     (a class with p_ic = 0 contributes 0)
    mean      = sum_i kl_i / (number of elements)    (torch's 'batchmean'; NaN when empty)
    d(sum_i g_i kl_i)/db_ic = g_i (q_ic - p_ic)

Scoring (:func:`score`, the oracle of ``fastce.score``): logits ``(N, V)`` or
``(V,)``, index targets; rows with ``t_i == ignore_index`` are not scored::

    nll_i     = logsumexp(x_i) - x_i[t_i]
    above_i   = #{c : x_ic > x_it} + #{c < t_i : x_ic == x_it}   (argmax's tie order)
    correct@k = #{i scored : above_i < k and nll_i is not NaN}
"""

from __future__ import annotations

import numbers
from collections import namedtuple
from typing import Any, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

_Array = npt.NDArray[np.float64]
_Loss = Union[np.float64, _Array]

__all__ = [
    "logsumexp",
    "log_softmax",
    "softmax",
    "nll_loss",
    "cross_entropy",
    "cross_entropy_with_grad",
    "score",
    "ScoreSums",
    "kl_div",
    "kl_div_with_grad",
    "compare",
    "CompareSums",
]

_REDUCTIONS = ("none", "mean", "sum")


# --------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------

def _as_float64_input(x, name="input"):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}")
    return x.astype(np.float64)


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _class_axis(ndim):
    if ndim == 0:
        raise ValueError("input must have at least 1 dimension")
    return 0 if ndim == 1 else 1


def _weight_vector(weight, C):
    if weight is None:
        return np.ones(C, dtype=np.float64)
    w = np.asarray(weight)
    if not np.issubdtype(w.dtype, np.floating):
        raise TypeError(f"weight must be floating, got dtype {w.dtype}")
    w = w.astype(np.float64)
    if w.shape != (C,):
        raise ValueError(f"weight must have shape ({C},), got {w.shape}")
    return w


def _index_target_int64(target, C, ignore_index):
    """Return (t as int64 with ignored entries replaced by 0, valid mask).

    Comparisons with ignore_index and the bound check use the exact integer
    values of the target (so uint8 value 156 is class 156, never -100).
    """
    t = np.asarray(target)
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"index target must have an integer dtype, got {t.dtype}")
    if t.dtype == np.uint64 and t.size and int(t.max()) > np.iinfo(np.int64).max:
        raise IndexError(f"Target {int(t.max())} is out of bounds.")
    t64 = t.astype(np.int64)
    valid = t64 != ignore_index
    bad = valid & ((t64 < 0) | (t64 >= C))
    if bad.any():
        raise IndexError(f"Target {int(t64[bad].flat[0])} is out of bounds.")
    return np.where(valid, t64, 0), valid


def _to_last(x, class_axis):
    """Move the class axis to the end: (..., C) with ... = target shape."""
    return np.moveaxis(x, class_axis, -1)


def _from_last(x, class_axis):
    return np.moveaxis(x, -1, class_axis)


# --------------------------------------------------------------------------
# softmax family
# --------------------------------------------------------------------------

def logsumexp(x: npt.ArrayLike, axis: int = -1) -> _Array:
    """log(sum_k exp(x_k)) along ``axis`` (which is reduced away), float64.

    torch.logsumexp semantics: with m = max_k x_k (replaced by 0 when it is
    +-inf), lse = m + log(sum_k exp(x_k - m)).  So a row containing +inf gives
    +inf, an all -inf row gives -inf, any NaN gives NaN, an empty axis gives
    -inf.
    """
    xf = _as_float64_input(x, "x")
    if not -xf.ndim <= axis < xf.ndim:
        raise ValueError(f"axis {axis} is out of bounds for an array of dimension {xf.ndim}")
    axis %= xf.ndim
    if xf.shape[axis] == 0:
        return np.full(xf.shape[:axis] + xf.shape[axis + 1:], -np.inf)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.max(xf, axis=axis, keepdims=True)
        m = np.where(np.isinf(m), 0.0, m)
        s = np.sum(np.exp(xf - m), axis=axis, keepdims=True)
        out = np.log(s) + m
    return np.squeeze(out, axis=axis)


def log_softmax(x: npt.ArrayLike, axis: int = -1) -> _Array:
    """log p_k = (x_k - m) - log(sum_j exp(x_j - m)), m = max_j x_j, float64.

    torch.log_softmax semantics for non-finite values: a row containing +inf
    or NaN, or a row that is entirely -inf, is all NaN; a -inf entry in an
    otherwise finite row gives -inf.
    """
    xf = _as_float64_input(x, "x")
    if xf.size == 0:
        return xf.copy()
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.max(xf, axis=axis, keepdims=True)
        s = xf - m
        return s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))


def softmax(x: npt.ArrayLike, axis: int = -1) -> _Array:
    """p_k = exp(x_k - m) / sum_j exp(x_j - m), m = max_j x_j, float64.

    Same non-finite behaviour as :func:`log_softmax` (NaN rows; -inf -> 0).
    """
    xf = _as_float64_input(x, "x")
    if xf.size == 0:
        return xf.copy()
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.max(xf, axis=axis, keepdims=True)
        e = np.exp(xf - m)
        return e / np.sum(e, axis=axis, keepdims=True)


# --------------------------------------------------------------------------
# nll_loss
# --------------------------------------------------------------------------

def nll_loss(log_probs: npt.ArrayLike, target: npt.ArrayLike, weight: Optional[npt.ArrayLike] = None,
             ignore_index: int = -100, reduction: str = "mean") -> _Loss:
    """torch.nn.functional.nll_loss on float64.

    loss_i = -w[t_i] * log_probs_i[t_i]  (0 for ignored elements);
    mean = sum_i loss_i / sum_{i not ignored} w[t_i]  (NaN if nothing counts);
    sum = sum_i loss_i.  Class axis 1 (or 0 for an unbatched (C,) input).
    """
    _check_reduction(reduction)
    lp = _as_float64_input(log_probs, "log_probs")
    cax = _class_axis(lp.ndim)
    C = lp.shape[cax]
    w = _weight_vector(weight, C)
    lp_last = _to_last(lp, cax)
    target = np.asarray(target)
    if target.shape != lp_last.shape[:-1]:
        raise ValueError(f"target shape {target.shape} does not match input shape {lp.shape}")
    t, valid = _index_target_int64(target, C, ignore_index)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if C:
            lp_t = np.take_along_axis(lp_last, t[..., None], axis=-1)[..., 0]
            w_t = w[t]
        else:
            lp_t = w_t = np.zeros(t.shape)
        per = np.where(valid, -(w_t * lp_t), 0.0)
        if reduction == "none":
            return np.asarray(per, dtype=np.float64)
        total = np.sum(per, dtype=np.float64)
        if reduction == "sum":
            return np.float64(total)
        denom = np.sum(np.where(valid, w_t, 0.0), dtype=np.float64)
        return np.float64(np.float64(total) / denom)


# --------------------------------------------------------------------------
# cross_entropy
# --------------------------------------------------------------------------

def _prepare(input, target, weight, reduction, label_smoothing):
    _check_reduction(reduction)
    eps = float(label_smoothing)
    if not (0.0 <= eps <= 1.0):
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    x = _as_float64_input(input, "input")
    cax = _class_axis(x.ndim)
    C = x.shape[cax]
    w = _weight_vector(weight, C)
    target = np.asarray(target)
    prob = target.shape == x.shape and np.issubdtype(target.dtype, np.floating)
    if not prob:
        if np.issubdtype(target.dtype, np.floating):
            raise ValueError(
                f"probability target must have the input's shape {x.shape}, got {target.shape}")
        expect = x.shape[:cax] + x.shape[cax + 1:]
        if target.shape != expect:
            raise ValueError(f"index target must have shape {expect}, got {target.shape}")
    return x, cax, C, w, target, prob, eps


def _forward_backward(input, target, weight, ignore_index, reduction, label_smoothing,
                      grad_output, need_grad, z_loss=0.0, softcap=None):
    x, cax, C, w, target, prob, eps = _prepare(input, target, weight, reduction, label_smoothing)
    xl = _to_last(x, cax)                      # (..., C)
    S = xl.shape[:-1]                          # element (target) shape
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if softcap is not None:                # x' = cap tanh(x / cap); dx'/dx = 1 - tanh^2
            th = np.tanh(xl / softcap)
            xl = softcap * th
        lse = logsumexp(xl, axis=-1)           # per row, of the target shape S
        lp = log_softmax(xl, axis=-1)
        p = softmax(xl, axis=-1)

        if prob:
            y = _to_last(target.astype(np.float64), cax)
            if eps > 0.0:
                y = y * (1.0 - eps) + eps / C
            per = -np.sum(lp * y * w, axis=-1)             # loss_i
            w_row = np.ones(S)                             # z-loss weight of each row
            if z_loss:
                per = per + z_loss * lse ** 2
            n_el = int(np.prod(S, dtype=np.int64))
            if reduction == "mean":
                D = np.float64(n_el) if n_el else np.float64(np.nan)
                loss = np.float64(np.sum(per, dtype=np.float64) / D) if n_el else np.float64(np.nan)
            elif reduction == "sum":
                D = np.float64(1.0)
                loss = np.float64(np.sum(per, dtype=np.float64))
            else:
                D = np.float64(1.0)
                loss = np.asarray(per, dtype=np.float64)
        else:
            t, valid = _index_target_int64(target, C, ignore_index)
            lp_t = np.take_along_axis(lp, t[..., None], axis=-1)[..., 0]
            w_t = w[t]
            nll = np.where(valid, -(w_t * lp_t), 0.0)
            w_row = np.where(valid, w_t, 0.0)              # z-loss weight of each row
            zterm = np.where(valid, w_t * z_loss * lse ** 2, 0.0)
            if eps > 0.0:
                smooth = np.where(valid, -np.sum(lp * w, axis=-1), 0.0)
            if reduction == "mean":
                D = np.sum(np.where(valid, w_t, 0.0), dtype=np.float64)
                loss = np.sum(nll, dtype=np.float64) / D
                if eps > 0.0:
                    loss = (1.0 - eps) * loss + (np.sum(smooth, dtype=np.float64) / D) * (eps / C)
                if z_loss:
                    loss = loss + np.sum(zterm, dtype=np.float64) / D
                loss = np.float64(loss)
            else:
                D = np.float64(1.0)
                per = nll if eps == 0.0 else (1.0 - eps) * nll + (eps / C) * smooth
                if z_loss:
                    per = per + zterm
                if reduction == "sum":
                    loss = np.float64(np.sum(per, dtype=np.float64))
                else:
                    loss = np.asarray(per, dtype=np.float64)

        if not need_grad:
            return loss, None, lse

        # grad_output: array of the loss's shape for "none", a scalar otherwise
        if grad_output is None:
            g = np.ones(S) if reduction == "none" else np.float64(1.0)
        else:
            g = np.asarray(grad_output, dtype=np.float64)
            if reduction == "none":
                g = np.broadcast_to(g, S)
            elif g.size != 1:
                raise ValueError("grad_output must be a scalar for reduction 'mean'/'sum'")
            else:
                g = g.reshape(())
        coef = np.broadcast_to(g / D, S)[..., None]           # g_i / D

        if prob:
            wy = w * y
            grad = coef * (p * np.sum(wy, axis=-1, keepdims=True) - wy)
        else:
            onehot = np.zeros_like(p)
            np.put_along_axis(onehot, t[..., None], 1.0, axis=-1)
            term = w_t[..., None] * (p - onehot)
            if eps > 0.0:
                term = (1.0 - eps) * term + (eps / C) * (w.sum() * p - w)
            grad = np.where(valid[..., None], coef * term, 0.0)
        if z_loss:                             # d(w_row z lse^2)/dx_c = w_row 2 z lse p_c
            zgrad = coef * (w_row * 2.0 * z_loss * lse)[..., None] * p
            grad = grad + (zgrad if prob else np.where(valid[..., None], zgrad, 0.0))
        if softcap is not None:
            grad = grad * (1.0 - th ** 2)
        grad = np.ascontiguousarray(_from_last(grad, cax), dtype=np.float64)
    return loss, grad, lse


def cross_entropy(input: npt.ArrayLike, target: npt.ArrayLike, weight: Optional[npt.ArrayLike] = None,
                  ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                  z_loss: float = 0.0, softcap: Optional[float] = None,
                  return_lse: bool = False) -> Union[_Loss, Tuple[_Loss, _Array]]:
    """Softmax cross-entropy with torch 2.13 semantics; float64 result.

    See the module docstring for the formulas.  ``target`` is either an
    integer index array of the input's shape without the class axis (0-d for
    an unbatched ``(C,)`` input) or a floating probability array of the
    input's shape.  Returns a float64 array of the target shape for
    reduction "none", else a ``numpy.float64`` scalar.

    Beyond torch: z_loss adds w_row z lse^2 per row (w_row = weight[t] for index targets, 1 for
    probabilities, 0 if ignored; 'mean' divides by the same D); softcap replaces x by
    cap tanh(x / cap) first; return_lse also returns the per-row logsumexp (target shape).
    """
    loss, _, lse = _forward_backward(input, target, weight, ignore_index, reduction,
                                     label_smoothing, None, False, z_loss, softcap)
    return (loss, lse) if return_lse else loss


def cross_entropy_with_grad(input: npt.ArrayLike, target: npt.ArrayLike, weight: Optional[npt.ArrayLike] = None,
                            ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                            grad_output: Optional[npt.ArrayLike] = None, z_loss: float = 0.0,
                            softcap: Optional[float] = None, return_lse: bool = False
                            ) -> Union[Tuple[_Loss, _Array], Tuple[_Loss, _Array, _Array]]:
    """(loss, grad) with grad = d(sum(grad_output * loss)) / d(input), float64.

    Analytic gradient (see the module docstring)::

      index targets: g_i / D * [(1-eps) w[t_i] (p_ic - [c==t_i]) + (eps/C)(W p_ic - w_c)],
                     zero rows for ignored elements;
      probability targets: g_i * (p_ic * sum_k w_k y'_ik - w_c y'_ic) / D.

    ``grad_output`` defaults to 1 (a scalar for "mean"/"sum", an array of the
    loss's shape for "none"). z_loss, softcap, return_lse: see cross_entropy.
    """
    loss, grad, lse = _forward_backward(input, target, weight, ignore_index, reduction,
                                        label_smoothing, grad_output, True, z_loss, softcap)
    return (loss, grad, lse) if return_lse else (loss, grad)


# --------------------------------------------------------------------------
# score
# --------------------------------------------------------------------------

ScoreSums = namedtuple("ScoreSums", "nll_sum tokens correct")
ScoreSums.__doc__ = """score's result: nll_sum (float), tokens (int: scored rows), correct ({k: int})."""


def score(logits: npt.ArrayLike, target: npt.ArrayLike, *, ignore_index: int = -100,
          top_k: Any = (1,), softcap: Optional[float] = None) -> Any:
    """Scoring sums of class-index targets, from the definitions, in float64.

    ``logits`` (N, V) with ``target`` (N,), or one unbatched row (V,) with a 0-d target.
    Rows whose target equals ``ignore_index`` are not scored (their logits are not read).
    With ``softcap`` the logits are first replaced by ``cap * tanh(logits / cap)`` (for the
    NLL and for the ranking). For each scored row i::

        nll_i     = logsumexp(x_i) - x_i[t_i]
        above_i   = #{c : x_ic > x_it} + #{c < t_i : x_ic == x_it}
        correct@k = #{i : above_i < k and nll_i is not NaN}

    ``above_i`` counts the classes that argmax-style tie breaking (the lower index first) puts
    above the target, so the target is in the top k exactly when above_i < k. A NaN logit makes
    the row's loss NaN, and such a row counts as incorrect for every k.

    Returns ``ScoreSums(nll_sum, tokens, correct)``: the float64 sum of nll_i over the scored
    rows (0.0 with none), the number of scored rows, and ``{k: correct@k}`` for every k of
    ``top_k`` (an int or a sequence of ints >= 1) and k = 1, which is always included (as in
    ``fastce.Score``).
    """
    x = _as_float64_input(logits, "logits")
    if x.ndim not in (1, 2):
        raise ValueError(f"logits must have shape (N, V) or (V,), got shape {x.shape}")
    target = np.asarray(target)
    if target.shape != x.shape[:-1]:
        raise ValueError(f"target must have shape {x.shape[:-1]}, got {target.shape}")
    ks: Any = (top_k,) if isinstance(top_k, numbers.Integral) else tuple(top_k)
    if any(isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1 for k in ks):
        raise ValueError(f"top_k values must be integers >= 1, got {top_k!r}")
    ks = sorted({1, *(int(k) for k in ks)})
    V = x.shape[-1]
    x = x.reshape(x.shape[0] if x.ndim == 2 else 1, V)
    t, kept = _index_target_int64(target.reshape(-1), V, ignore_index)
    x, t = x[kept], t[kept]
    rows = np.arange(len(t))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if softcap is not None:
            x = softcap * np.tanh(x / softcap)
        x_t = x[rows, t]
        nll = logsumexp(x, axis=1) - x_t
        cls = np.arange(V)
        above = np.count_nonzero((x > x_t[:, None]) | ((x == x_t[:, None]) & (cls < t[:, None])), axis=1)
    counted = ~np.isnan(nll)
    correct = {k: int(np.count_nonzero(counted & (above < k))) for k in ks}
    return ScoreSums(float(np.sum(nll, dtype=np.float64)), int(len(t)), correct)


# --------------------------------------------------------------------------
# two models: KL divergence and comparison figures
# --------------------------------------------------------------------------

def _pair_last(logits, ref_logits):
    """(b, a): float64 copies of the model's and the reference's logits, classes last, with the
    target shape in front."""
    b = _as_float64_input(logits, "logits")
    a = _as_float64_input(ref_logits, "ref_logits")
    if a.shape != b.shape:
        raise ValueError(f"logits and ref_logits must have the same shape, got {b.shape} and {a.shape}")
    ax = _class_axis(b.ndim)
    return _to_last(b, ax), _to_last(a, ax)


def _kl_rows(b, a):
    """Per element KL(softmax(a) || softmax(b)) over the last axis; p = 0 classes contribute 0."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        la = log_softmax(a, axis=-1)
        lb = log_softmax(b, axis=-1)
        p = np.exp(la)
        terms = np.where(p > 0, p * (la - lb), 0.0)
        # NaN in a row (or a row of -inf, whose softmax is NaN) stays NaN
        terms = np.where(np.isnan(la) | np.isnan(lb), np.nan, terms)
    return terms.sum(axis=-1), p, np.exp(lb)


def kl_div(logits: npt.ArrayLike, ref_logits: npt.ArrayLike, reduction: str = "mean") -> _Loss:
    """KL(softmax(ref_logits) || softmax(logits)) per element, reduced; float64."""
    return kl_div_with_grad(logits, ref_logits, reduction)[0]


def kl_div_with_grad(logits: npt.ArrayLike, ref_logits: npt.ArrayLike, reduction: str = "mean",
                     grad_output: Optional[npt.ArrayLike] = None) -> Tuple[_Loss, _Array]:
    """(kl_div, d(sum g * kl)/d(logits)) in float64, g = grad_output (1 by default; per element
    for 'none'), divided by the number of elements for 'mean'."""
    _check_reduction(reduction)
    b, a = _pair_last(logits, ref_logits)
    kl, p, q = _kl_rows(b, a)
    n = kl.size
    g = np.ones(kl.shape) if grad_output is None else np.broadcast_to(np.asarray(grad_output, np.float64), kl.shape)
    if reduction == "none":
        loss = kl
    elif reduction == "sum":
        loss = np.float64(kl.sum())
    else:
        loss = np.float64(kl.sum() / n) if n else np.float64(np.nan)
        g = g / n if n else g
    grad = _from_last((q - p) * g[..., None], _class_axis(np.ndim(logits)))
    return loss, grad


CompareSums = namedtuple("CompareSums", "count kl kl_sum kl_max top1 topk nll_sum ref_nll_sum dp_sq_sum")


def compare(logits: npt.ArrayLike, ref_logits: npt.ArrayLike, target: Optional[npt.ArrayLike] = None, *,
            ignore_index: int = -100, top_k: Any = (1,)) -> Any:
    """The figures of ``fastce.compare`` from the definitions, in float64.

    Over the kept elements (all of them without targets; those whose target is not
    ignore_index with targets)::

        kl        the per-element KL values (an array), kl_sum their sum, kl_max their max
        top1      #{i : argmax b_i == argmax a_i}    (first index of the max, as np.argmax)
        topk      {k: #{i : rank_i < k}}, rank_i = #{c : b_ic > b_it} + #{c < t : b_ic == b_it},
                  t = argmax a_i; a row whose KL is NaN agrees nowhere
        nll_sum, ref_nll_sum   sums of -log q_i[t_i] and -log p_i[t_i] (targets only)
        dp_sq_sum              sum of (q_i[t_i] - p_i[t_i])^2 (targets only)
    """
    b, a = _pair_last(logits, ref_logits)
    C = b.shape[-1]
    b, a = b.reshape(-1, C), a.reshape(-1, C)
    ks = sorted({1, *((top_k,) if isinstance(top_k, numbers.Integral) else tuple(top_k))})
    kept = np.ones(b.shape[0], bool)
    t = None
    if target is not None:
        t, kept = _index_target_int64(np.asarray(target).reshape(-1), C, ignore_index)
        t = t[kept]
    b, a = b[kept], a[kept]
    kl, p, q = _kl_rows(b, a)
    ok = ~np.isnan(kl)
    am_a = np.argmax(a, axis=-1) if a.size else np.zeros(0, np.int64)
    am_b = np.argmax(b, axis=-1) if b.size else np.zeros(0, np.int64)
    rows = np.arange(b.shape[0])
    bt = b[rows, am_a][:, None]
    cls = np.arange(C)
    rank = np.count_nonzero((b > bt) | ((b == bt) & (cls < am_a[:, None])), axis=-1)
    sums = dict(count=int(b.shape[0]), kl=kl, kl_sum=float(kl.sum()), kl_max=float(kl.max()) if kl.size else np.nan,
                top1=int(np.count_nonzero(ok & (am_a == am_b))),
                topk={k: int(np.count_nonzero(ok & (rank < k))) for k in ks},
                nll_sum=None, ref_nll_sum=None, dp_sq_sum=None)
    if t is not None:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            nll, ref_nll = -log_softmax(b, axis=-1)[rows, t], -log_softmax(a, axis=-1)[rows, t]
            sums.update(nll_sum=float(nll.sum()), ref_nll_sum=float(ref_nll.sum()),
                        dp_sq_sum=float(((np.exp(-nll) - np.exp(-ref_nll)) ** 2).sum()))
    return CompareSums(**sums)
