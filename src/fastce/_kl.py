"""Two models' logits, one pass: KL(softmax(ref_logits) || softmax(logits)) and its gradient.

The per-row math is in src/fastce/_csrc/kl_impl.h (kl_rows): both rows are read together, their
maxima first, then S_ref, S and the cross term from cache; no N x C temporary exists. This module
validates the pair, maps it onto the kernel's (rows, C) view, and reduces.

How the pair reaches the kernel (`_Pair`):
* the same storage dtype for both and the classes on the last axis ((N, C) or (C,)): in place
  (a copy only where a layout forces one, as for cross_entropy);
* otherwise (two dtypes, e.g. a float16 model against a float32 reference, or K-dimensional
  input (N, C, d1..dk) with the classes on axis 1): blocks of whole outer rows, about
  PAIR_BLOCK_LOGITS logits each, are converted to the compute dtype (float64 if either input is
  float64, else float32) with the classes moved last. Memory: one block per input.

Row order: row n * S + s is position (n, s) of the (N, d1..dk) loss, as for cross_entropy.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from . import _buffer_cache, _kernels, _runtime
from ._class_blocks import class_last_blocks, writable_c_view, write_class_first
from ._functional import BLOCK_LOGITS
from ._typing import ArrayLike, NDArray, NumThreads, Reduction, Scalar
from ._validate import Layout, as_compute, as_floating, check_out, check_reduction

# Logits per converted block of each input (two dtypes, or K-dim): a quarter of the one-input
# paths' block, since this path holds a converted block of each input (and of the gradient) at
# once; so the temporaries stay a small fraction of a large pair's size (the figures behind the
# choice: docs/performance/notes_scoring.md).
PAIR_BLOCK_LOGITS = BLOCK_LOGITS // 4

__all__ = ["kl_div", "kl_div_with_grad"]


def _pair_dtypes(dtype, ref_dtype):
    """(compute dtype, result dtype): float64 if either is float64, else float32; the results
    keep the inputs' dtype when both have the same one, else the compute dtype's."""
    cdtype = np.dtype(np.float64) if 8 in (dtype.itemsize, ref_dtype.itemsize) else np.dtype(np.float32)
    return cdtype, (dtype if dtype == ref_dtype else cdtype)


class _Pair:
    """Validated (logits, ref_logits) of one shape, and the per-row results of kl_rows over them.

    run() fills, as float64 arrays over the rows: kl, and where asked for lse (the model's) and
    ref_lse, rank (of the model's logit at the reference's argmax t, with ref_argmax (int64):
    #{c : logits_c > logits_t} + #{c < t : logits_c == logits_t}, so rank < k is "t is in the
    model's top k" in argmax's tie order)."""

    kl: NDArray
    lse: Optional[NDArray]
    ref_lse: Optional[NDArray]
    ref_argmax: Optional[NDArray]
    rank: Optional[NDArray]

    def __init__(self, logits, ref_logits, num_threads):
        self.b_user = as_floating(logits, "logits")
        self.a_user = as_floating(ref_logits, "ref_logits")
        if self.b_user.shape != self.a_user.shape:
            raise ValueError(f"logits and ref_logits must have the same shape, got {self.b_user.shape} "
                             f"and {self.a_user.shape}")
        self.layout = Layout(self.b_user.shape, "logits")
        self.nthreads = _runtime.resolve_threads(num_threads)
        self.dtype = self.b_user.dtype.newbyteorder("=")
        self.ref_dtype = self.a_user.dtype.newbyteorder("=")
        self.cdtype, self.result_dtype = _pair_dtypes(self.dtype, self.ref_dtype)
        self.direct = self.dtype == self.ref_dtype and self.layout.S == 1

    def run(self, *, lse=False, rank=False, out=None, gout=None, gscale=1.0):
        rows = self.layout.rows
        f64 = lambda: np.empty(rows, np.float64)  # noqa: E731
        self.kl = f64()
        self.lse = f64() if lse else None
        self.ref_lse = f64() if lse else None
        self.ref_argmax = np.empty(rows, np.int64) if rank else None
        self.rank = f64() if rank else None
        if self.direct:
            lay = self.layout
            a = as_compute(self.a_user, self.dtype).reshape(lay.N, lay.C)
            b = as_compute(self.b_user, self.dtype).reshape(lay.N, lay.C)
            kout = None
            if out is not None:
                ok = out.flags.c_contiguous and out.flags.aligned and out.dtype == self.dtype
                kout = out if ok else np.empty(b.shape, self.dtype)
            self._kernel(a, b, slice(0, rows), kout, gout, gscale)
            if kout is not None and kout is not out:
                out[...] = kout.reshape(out.shape)
        else:
            self._run_blocks(out, gout, gscale)

    def _kernel(self, a, b, rows, out, gout, gscale):
        """kl_rows over the (n, C) pair a, b (one dtype, C-contiguous), results into `rows`."""
        pick = lambda arr: None if arr is None else arr[rows]  # noqa: E731
        _kernels.kl_run(_runtime.isa_id(), a, b, self.kl[rows], lse_a=pick(self.ref_lse), lse_b=pick(self.lse),
                        argmax_a=pick(self.ref_argmax), rank_b=pick(self.rank),
                        out=None if out is None else out.reshape(b.shape), gout=pick(gout), gscale=gscale,
                        nthreads=self.nthreads)

    def _run_blocks(self, out, gout, gscale):
        """Whole outer rows at a time: both converted to the compute dtype, classes last."""
        lay = self.layout
        N, C, S = lay.N, lay.C, lay.S
        out, user_out = writable_c_view(out)
        o3 = None if out is None else out.reshape(N, C, S)
        arrays = (self.a_user.reshape(N, C, S), self.b_user.reshape(N, C, S))  # views where the layout allows
        for n0, n1, (ab, bb) in class_last_blocks(arrays, N, C, S, self.cdtype, PAIR_BLOCK_LOGITS):
            block_out = None if out is None else np.empty_like(bb)
            self._kernel(ab, bb, slice(n0 * S, n1 * S), block_out, gout, gscale)
            if out is not None:
                write_class_first(o3, n0, n1, block_out, S)
        if user_out is not None:
            user_out[...] = out

    def reduce(self, reduction: str) -> Scalar:
        """The per-row KL reduced: 'none' in the loss's shape, 'sum', or 'mean' over the rows
        (torch's 'batchmean' of the class-summed divergence); in the result dtype."""
        lay = self.layout
        if reduction == "none":
            return self.kl.reshape(lay.target_shape).astype(self.result_dtype)
        total = float(_kernels.sum_f64(self.kl))
        if reduction == "mean":
            total = total / lay.rows if lay.rows else math.nan
        result: Scalar = np.asarray(total, dtype=self.result_dtype)[()]
        return result

    def grad_scale(self, reduction, grad_output):
        """(per-row factors or None, scalar factor) of the gradient: grad_output (1 by default;
        per row for 'none', broadcast to the loss's shape), divided by the rows for 'mean'."""
        lay = self.layout
        if reduction == "none":
            if grad_output is None:
                return None, 1.0
            g = np.asarray(grad_output, dtype=np.float64)
            try:
                g = np.broadcast_to(g, lay.target_shape)
            except ValueError:
                raise ValueError(f"grad_output of shape {g.shape} does not broadcast to the loss's shape "
                                 f"{lay.target_shape}") from None
            return np.ascontiguousarray(g).reshape(-1), 1.0
        g0 = 1.0 if grad_output is None else np.asarray(grad_output, dtype=np.float64)
        if np.ndim(g0) != 0:
            raise ValueError(f"grad_output for reduction={reduction!r} must be a scalar, got shape {np.shape(g0)}")
        gs = float(g0)
        return None, (gs / lay.rows if reduction == "mean" and lay.rows else gs)


def kl_div(logits: ArrayLike, ref_logits: ArrayLike, *, reduction: Reduction = "mean",
           num_threads: NumThreads = None) -> Scalar:
    r"""KL(softmax(ref_logits) || softmax(logits)) per row over the class axis, in one pass.

    The divergence of the model's next-token distribution q = softmax(logits) from the
    reference's p = softmax(ref_logits), as torch's
    ``F.kl_div(F.log_softmax(logits, 1), F.log_softmax(ref_logits, 1), log_target=True,
    reduction="none").sum(1)``, without its four N x C temporaries.

    Parameters
    ----------
    logits : array_like, shape (N, C), (C,) or (N, C, d1, ..., dk)
        The model's logits (float16, bfloat16, float32 or float64; classes on axis 1, or 0 when
        unbatched).
    ref_logits : array_like, of `logits`' shape
        The reference's logits, of any of those dtypes.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        'mean' averages over the rows (N * d1 * ... * dk): torch's reduction='batchmean' of the
        per-class divergence (NaN for no rows). 'none' gives one value per row, shape
        (N, d1, ..., dk).
    num_threads : int, optional
        As for `cross_entropy`: None uses every core.

    Returns
    -------
    numpy scalar or ndarray
        The divergence in nats: in the inputs' dtype when both have the same one, else in
        float64 if either is float64, else float32. Computed in float32 (float64 for float64
        inputs). A NumPy scalar for 'mean' and 'sum', an array of the rows' shape for 'none'.

    Raises
    ------
    ValueError
        If the two shapes differ or `reduction` is not one of the three.
    TypeError
        If either input is not floating-point.

    See Also
    --------
    kl_div_with_grad : The same, with the gradient with respect to `logits`.
    compare : The KL with agreement and NLL figures, mergeable across batches.

    Notes
    -----
    Per row, :math:`\mathrm{KL}(p \,\|\, q) = \sum_c p_c (\log p_c - \log q_c)`. A class with
    :math:`p_c = 0` (reference logit -inf) contributes 0, where torch gives NaN
    (:math:`0 \cdot \infty`); :math:`q_c = 0` where :math:`p_c > 0` gives +inf. A row that is
    all -inf, or holds +inf or NaN, gives NaN.

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> ref = np.array([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    >>> model = np.array([[1.5, 1.0, 0.5], [0.0, 1.0, 2.5]])
    >>> print(fastce.kl_div(model, ref, reduction="none").round(4))
    [0.0603 0.6569]
    >>> round(float(fastce.kl_div(model, ref)), 4)
    0.3586
    >>> fastce.kl_div(model.astype(np.float16), ref.astype(np.float32)).dtype
    dtype('float32')
    """
    check_reduction(reduction)
    p = _Pair(logits, ref_logits, num_threads)
    p.run()
    return p.reduce(reduction)


def kl_div_with_grad(logits: ArrayLike, ref_logits: ArrayLike, *, reduction: Reduction = "mean",
                     grad_output: Optional[ArrayLike] = None, out: Optional[NDArray] = None,
                     num_threads: NumThreads = None) -> Tuple[Scalar, NDArray]:
    r"""`kl_div` and its gradient with respect to `logits`, from the same pass.

    The gradient of a distillation loss with respect to the student's logits, computed while
    the divergence is: no second pass over either input.

    Parameters
    ----------
    logits : array_like, shape (N, C), (C,) or (N, C, d1, ..., dk)
        As for `kl_div`.
    ref_logits : array_like, of `logits`' shape
        As for `kl_div`.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        As for `kl_div`.
    grad_output : float or array_like, optional
        The gradient of the objective with respect to the loss: a scalar for 'mean' and 'sum',
        an array broadcastable to the loss's shape for 'none'; defaults to 1.
    out : ndarray, optional
        Where to write the gradient: `logits`' shape and dtype, writeable, any layout; it may be
        `logits` itself (each logit is read before its gradient is written). Must not overlap
        `ref_logits`.
    num_threads : int, optional
        As for `kl_div`.

    Returns
    -------
    loss : numpy scalar or ndarray
        As `kl_div` returns it.
    grad : ndarray
        The gradient, of `logits`' shape and dtype (`out` if given).

    Raises
    ------
    ValueError
        If the shapes differ, `reduction` is not one of the three, `grad_output` does not fit
        the loss's shape, or `out` does not fit.
    TypeError
        If either input is not floating-point.

    See Also
    --------
    kl_div : The divergence alone.

    Notes
    -----
    With :math:`p = \mathrm{softmax}(\text{ref\_logits})` and
    :math:`q = \mathrm{softmax}(\text{logits})`, per row

    .. math::

        \frac{\partial \mathrm{KL}(p \,\|\, q)}{\partial \text{logits}_c} = q_c - p_c,

    times grad_output (per row for 'none'), divided by the number of rows for 'mean'.

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> ref = np.array([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    >>> model = np.array([[1.5, 1.0, 0.5], [0.0, 1.0, 2.5]])
    >>> loss, grad = fastce.kl_div_with_grad(model, ref, reduction="sum")
    >>> round(float(loss), 4)
    0.7172
    >>> print(grad.round(4))
    [[-0.1588  0.0625  0.0963]
     [-0.0271 -0.4943  0.5214]]
    >>> bool(np.allclose(grad.sum(axis=1), 0.0))
    True
    """
    check_reduction(reduction)
    p = _Pair(logits, ref_logits, num_threads)
    gout, gscale = p.grad_scale(reduction, grad_output)
    if out is None:
        out = _buffer_cache.empty_like(p.b_user, p.dtype)
    else:
        check_out(out, p.layout.shape, p.dtype, p.b_user, [("ref_logits", p.a_user), ("grad_output", grad_output)])
    p.run(out=out, gout=gout, gscale=gscale)
    return p.reduce(reduction), out
