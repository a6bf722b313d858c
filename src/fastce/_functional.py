"""The public functions: validate, allocate, call the kernels, reduce.

Memory: the loss alone allocates O(N) (one float64 per row, plus O(C) for weights); nothing of
size N x C. The gradient allocates only itself, or nothing with out=input. A copy of the input
is made only where its layout forces one (non-contiguous, byte-swapped; see _validate.as_compute).
float16 and bfloat16 are read and written by the kernels as they are (computed in float32). softcap
(and probability targets of 2-byte logits) convert the logits to float32 block by block
(BLOCK_LOGITS logits at a time), so they too allocate no N x C temporary.

Options beyond torch (z_loss, softcap, return_lse) are defined in cross_entropy's docstring.
"""
from __future__ import annotations

from typing import Any, List, Literal, Optional, Tuple, Union, overload

import numpy as np

from . import _buffer_cache, _kernels, _runtime
from ._kernels import KIND_INDEX, KIND_LSE, KIND_PROB, OUT_GRAD, OUT_LOGSOFTMAX, OUT_NONE, OUT_SOFTMAX
from ._targets import LossTargets
from ._validate import (
    Layout,
    as_compute,
    as_floating,
    is_half,
    check_label_smoothing,
    check_out,
    check_softcap,
    check_z_loss,
    compute_dtype,
    normalize_axis,
)
from ._typing import ArrayLike, NDArray, NumThreads, Reduction, Scalar

# Input that needs converting before the kernels (softcap's cap * tanh(x / cap), or 2-byte logits
# with probability targets) is converted this many logits at a time (whole outer rows).
BLOCK_LOGITS = 1 << 20

__all__ = [
    "cross_entropy",
    "cross_entropy_with_grad",
    "nll_loss",
    "log_softmax",
    "softmax",
    "logsumexp",
]


class _CrossEntropyCall:
    """One validated cross-entropy call: options, targets (a LossTargets) and the kernels' view
    of the logits; run() calls the kernels and reduces.

    need_rank: also count each row's target rank (the scoring kernel; index targets, S == 1).
    After run(), row_loss (and row_lse / row_rank where asked for) hold the per-row results."""

    def __init__(self, input, target, weight, ignore_index, reduction, label_smoothing, num_threads,
                 *, z_loss=0.0, softcap=None, need_lse=False, need_rank=False):
        self.x_user = as_floating(input, "input")
        self.eps = check_label_smoothing(label_smoothing)
        self.z_loss = check_z_loss(z_loss)
        self.softcap = check_softcap(softcap)
        self.need_lse = bool(need_lse)
        self.need_rank = bool(need_rank)
        self.nthreads = _runtime.resolve_threads(num_threads)
        self.layout = lay = Layout(self.x_user.shape)
        self.dtype = self.x_user.dtype.newbyteorder("=")  # results are native-endian
        self.cdtype = compute_dtype(self.dtype)
        self.targets = tg = LossTargets(target, lay, weight=weight, ignore_index=ignore_index,
                                        reduction=reduction, cdtype=self.cdtype, nthreads=self.nthreads)
        self.kind, self.weight, self.wsum = tg.kind, tg.weight, tg.wsum
        self.target, self.ttype, self.ignore_index = tg.target, tg.ttype, tg.ignore_index
        self._kernel_layout(tg.prob)

    def _kernel_layout(self, prob):
        """The kernels take C-contiguous (kN, C, kS) arrays of the compute dtype. Usually that is
        (N, C, S) itself, copied once if the input is not already so. A Fortran-ordered (N, C)
        input is, unchanged, a C-ordered (C, N): the kernels take it as kN = 1, kS = N, each row
        a position of the strided-class (tile) path, with no copy at all."""
        x, lay = self.x_user, self.layout
        # The kernels read float16 / bfloat16 logits as they are (widening in the load) and write
        # the gradient in the same dtype. softcap, and probability targets of 2-byte logits,
        # convert the logits to float32 block by block instead (_run_blocks), from any layout.
        half = is_half(self.dtype)
        self.kdtype = self.cdtype if not half or self.softcap is not None or prob is not None else self.dtype
        self.blockwise = self.softcap is not None or (half and prob is not None)
        self.fortran = (
            x.ndim == 2 and not x.flags.c_contiguous and x.flags.f_contiguous and x.flags.aligned
            and x.dtype == self.kdtype and x.dtype.isnative and lay.N > 1
            and not self.blockwise and not self.need_rank  # the rank is counted by whole rows only
        )
        if self.fortran:
            self.kN, self.kS = 1, lay.N
            self.xk = x.T
            self.prob = None if prob is None else as_compute(prob.T, self.cdtype)
        else:
            self.kN, self.kS = lay.N, lay.S
            # Blockwise input stays as it is here; _run_blocks converts it block by block.
            self.xk = x if self.blockwise else as_compute(x, self.kdtype)
            self.prob = None if prob is None else as_compute(prob, self.cdtype)

    def _direct_out(self, out):
        """`out` (input's shape) as the kernels' output array if they can write it in place, else None."""
        cand = out.T if self.fortran else out
        ok = cand.flags.c_contiguous and cand.flags.aligned and cand.dtype == self.kdtype and cand.dtype.isnative
        return cand if ok else None

    def run(self, outmode=OUT_NONE, out=None, gout=None, gscale=1.0):
        """Runs the kernels; the gradient (outmode OUT_GRAD) goes to `out`, which has the input's
        shape and dtype and any layout. Returns the reduced loss."""
        lay = self.layout
        self.row_loss = row_loss = np.empty(lay.rows, dtype=np.float64)
        self.row_lse = np.empty(lay.rows, dtype=np.float64) if self.need_lse else None
        self.row_rank = np.empty(lay.rows, dtype=np.float64) if self.need_rank else None
        # A float32 `out` for 2-byte logits (check_out allows it): the kernels write their own
        # dtype, so the blockwise path widens the logits and copies each float32 block into it.
        if self.blockwise or (out is not None and out.dtype.itemsize == 4 and is_half(self.dtype)):
            self._run_blocks(outmode, out, row_loss, gout, gscale)
            return self.reduce(row_loss)
        kout = None if out is None else self._direct_out(out)
        via_temporary = out is not None and kout is None
        if via_temporary:  # out's layout or dtype is not the kernels': one temporary, copied back
            kout = np.empty(self.xk.shape, dtype=self.kdtype)
        self._run_block(0, self.kN, self.xk, outmode, kout, row_loss, gout, gscale)
        if via_temporary:
            out[...] = kout.T if self.fortran else kout.reshape(out.shape)
        return self.reduce(row_loss)

    def _run_blocks(self, outmode, out, row_loss, gout, gscale):
        """Whole outer rows (n) at a time, each block copied into float32 (from float16 /
        bfloat16) or the compute dtype and, with softcap, capped in place: x' = cap * tanh(x / cap). The gradient
        then follows the chain rule, dL/dx = dL/dx' * (1 - tanh^2) = dL/dx' * (1 - (x'/cap)^2)."""
        lay, cap = self.layout, self.softcap
        x_b = self.xk if not lay.unbatched else self.xk[None]
        out_b = out if (out is None or not lay.unbatched) else out[None]
        step = max(1, BLOCK_LOGITS // max(lay.C * lay.S, 1))
        for n0 in range(0, lay.N, step):
            n1 = min(lay.N, n0 + step)
            # A fresh copy always (np.array copies), so capping in place never touches the input.
            xb = np.array(x_b[n0:n1], dtype=self.cdtype, order="C")
            if cap is not None:
                np.divide(xb, cap, out=xb)
                np.tanh(xb, out=xb)
                np.multiply(xb, cap, out=xb)
            block_out = np.empty_like(xb) if out is not None else None
            self._run_block(n0, n1, xb, outmode, block_out, row_loss, gout, gscale)
            if out is None:
                continue
            if cap is not None and outmode == OUT_GRAD:
                np.divide(xb, cap, out=xb)  # tanh(x / cap)
                np.square(xb, out=xb)
                np.subtract(1.0, xb, out=xb)
                np.multiply(block_out, xb, out=block_out)
            if is_half(out_b.dtype):  # NumPy's float32 -> float16 is slow on tiny (subnormal) values
                narrowed = np.empty(block_out.shape, dtype=out_b.dtype.newbyteorder("="))
                _kernels.narrow(block_out, narrowed)
                block_out = narrowed
            out_b[n0:n1] = block_out

    def _run_block(self, n0, n1, x, outmode, out, row_loss, gout, gscale):
        """The kernels over the kernel layout's outer rows [n0, n1); x and out hold just those."""
        C, kS = self.layout.C, self.kS
        rows = slice(n0 * kS, n1 * kS)
        t = self.target.reshape(-1)[rows] if self.target is not None else None
        prob = self.prob.reshape(self.kN, C * kS)[n0:n1] if self.prob is not None else None
        _kernels.ce_run(
            _runtime.isa_id(), x, n1 - n0, C, kS,
            KIND_INDEX if self.kind == "index" else KIND_PROB, outmode,
            target=t, ttype=self.ttype, prob=prob, weight=self.weight, wsum=self.wsum,
            ignore_index=self.ignore_index, eps=self.eps, row_out=row_loss[rows], out=out,
            gout=gout[rows] if gout is not None else None, gscale=gscale, zloss=self.z_loss,
            row_lse=self.row_lse[rows] if self.row_lse is not None else None,
            row_rank=self.row_rank[rows] if self.row_rank is not None else None,
            nthreads=self.nthreads,
        )

    def lse(self):
        """The per-row log-sum-exp of the last run, in the loss's shape and the input's dtype.
        As torch.logsumexp: a row holding +inf (and no NaN) gives +inf, where the kernels give NaN."""
        lay = self.layout
        if np.isnan(self.row_lse).any():  # rare: the reshape may copy a non-contiguous input
            _logsumexp_infinite_rows(self.x_user.reshape(lay.N, lay.C, lay.S),
                                     self.row_lse.reshape(lay.N, lay.S))
        return self.row_lse.reshape(lay.target_shape).astype(self.dtype)

    def reduce(self, row_loss):
        return self.targets.reduce(row_loss, self.dtype)

    def grad_scale(self, grad_output):
        return self.targets.grad_scale(grad_output)


def _is_zero(option):
    """True for an option left at its default 0 (a plain int or float)."""
    return (type(option) is float or type(option) is int) and option == 0


def _plain_options(weight, label_smoothing, z_loss, softcap, return_lse):
    """Whether the options are the defaults the small-call path serves (_kernels.small_call
    declines, and the general path takes, anything else it does not serve)."""
    return (weight is None and softcap is None and return_lse is False and _is_zero(label_smoothing)
            and _is_zero(z_loss))


@overload
def cross_entropy(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = ...,
                  ignore_index: int = ..., reduction: Reduction = ..., label_smoothing: float = ..., *,
                  z_loss: float = ..., softcap: Optional[float] = ..., return_lse: Literal[False] = ...,
                  num_threads: NumThreads = ...) -> Scalar: ...
@overload
def cross_entropy(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = ...,
                  ignore_index: int = ..., reduction: Reduction = ..., label_smoothing: float = ..., *,
                  z_loss: float = ..., softcap: Optional[float] = ..., return_lse: Literal[True],
                  num_threads: NumThreads = ...) -> Tuple[Scalar, NDArray]: ...
@overload
def cross_entropy(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = ...,
                  ignore_index: int = ..., reduction: Reduction = ..., label_smoothing: float = ..., *,
                  z_loss: float = ..., softcap: Optional[float] = ..., return_lse: bool = ...,
                  num_threads: NumThreads = ...) -> Union[Scalar, Tuple[Scalar, NDArray]]: ...
def cross_entropy(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = None,
                  ignore_index: int = -100, reduction: Reduction = "mean", label_smoothing: float = 0.0, *,
                  z_loss: float = 0.0, softcap: Optional[float] = None, return_lse: bool = False,
                  num_threads: NumThreads = None) -> Union[Scalar, Tuple[Scalar, NDArray]]:
    r"""Softmax cross-entropy between logits and targets, as ``torch.nn.functional.cross_entropy``.

    Parameters
    ----------
    input : array_like of float16, bfloat16, float32 or float64
        Logits of shape (N, C), (C,) unbatched, or (N, C, d1, ..., dk) with classes on axis 1.
        Any object NumPy reads, or that exports DLPack (a CPU torch tensor, a JAX array), is
        read in place where its layout allows.
    target : array_like
        Class indices of shape (N,), () or (N, d1, ..., dk), of any integer dtype, in [0, C)
        or equal to `ignore_index`; or class probabilities of `input`'s shape (floating).
    weight : array_like of shape (C,), optional
        Per-class rescaling weights.
    ignore_index : int, default -100
        Index targets equal to this contribute 0 and are left out of the mean's denominator.
        Not supported (must be negative) with probability targets.
    reduction : {'mean', 'none', 'sum'}, default 'mean'
        'mean' divides by the sum of the kept targets' weights (index targets) or by the number
        of elements N*d1*...*dk (probability targets), as torch does.
    label_smoothing : float in [0, 1], default 0.0
        Mixes the target with the uniform distribution: y' = (1 - eps) y + eps / C.
    z_loss : float >= 0, default 0.0
        Beyond torch. Adds z * lse^2 to each row's loss (PaLM's z-loss), lse = logsumexp of the
        row's logits. The term is weighted like the row's loss: by weight[target] for index
        targets (so a 'mean' divides it by the same denominator), by 1 for probability targets;
        ignored rows get none. 0 turns it off.
    softcap : float > 0, optional
        Beyond torch. The logits become cap * tanh(logits / cap) before the softmax (Gemma 2's
        logit soft-capping); the loss, lse and gradient are those of the capped logits (the
        gradient through the chain rule). The capped logits are formed `BLOCK_LOGITS` at a time,
        never N x C.
    return_lse : bool, default False
        Beyond torch. Also return the per-row log-sum-exp (of the capped logits with softcap),
        shape of the 'none' loss, input's dtype; ignored rows get theirs too.
    num_threads : int, optional
        None uses every core (``OMP_NUM_THREADS`` is respected); a positive int uses exactly
        that many.

    Returns
    -------
    loss : numpy scalar or numpy.ndarray
        A NumPy scalar of input's dtype for 'mean' and 'sum'; an array of the target shape for
        'none'.
    lse : numpy.ndarray
        Only with ``return_lse=True``, which returns the tuple ``(loss, lse)``.

    Raises
    ------
    TypeError
        For a non-floating `input`, targets of the wrong kind (floating index targets, integer
        probabilities), or an option of the wrong type.
    ValueError
        For a shape mismatch, an unknown `reduction`, or an option out of its range.
    IndexError
        For an index target outside [0, C) that is not `ignore_index`.

    See Also
    --------
    cross_entropy_with_grad : The loss and its gradient in one pass.
    CrossEntropyLoss : The same with fixed options.
    linear_cross_entropy : The loss of ``input @ W.T + b`` without materializing the logits.

    Notes
    -----
    With lse_i = log(sum_c exp(x_ic)) over the classes of element i, p_i = softmax(x_i),
    w the class weights (1 without `weight`), eps the label smoothing and z the z-loss, an index
    target t_i gives

    .. math::

        \ell_i = (1 - \epsilon)\, w_{t_i} (\mathrm{lse}_i - x_{i t_i})
                 + \frac{\epsilon}{C} \sum_c w_c (\mathrm{lse}_i - x_{ic})
                 + z\, w_{t_i} \mathrm{lse}_i^2

    (0 for an ignored element) and a probability target y_i gives
    :math:`\ell_i = -\sum_c w_c y'_{ic} \log p_{ic} + z\,\mathrm{lse}_i^2` with
    :math:`y' = (1 - \epsilon) y + \epsilon / C`.

    The loss is computed in one streaming pass over the logits; besides O(N) it allocates
    nothing.

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> x = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
    >>> t = np.array([0, 1])
    >>> round(float(fastce.cross_entropy(x, t)), 4)
    0.3185
    >>> fastce.cross_entropy(x, t, reduction="none").round(4)
    array([0.417, 0.22 ])
    >>> fastce.cross_entropy(x, np.array([0, -100]), reduction="none").round(4)
    array([0.417, 0.   ])
    >>> loss, lse = fastce.cross_entropy(x, t, return_lse=True)
    >>> lse.round(4)
    array([2.417, 2.72 ])

    Class probabilities as targets:

    >>> p = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]])
    >>> round(float(fastce.cross_entropy(x, p)), 4)
    0.6785
    """
    if _plain_options(weight, label_smoothing, z_loss, softcap, return_lse):
        loss = _kernels.small_call(_runtime.isa_id(), input, target, reduction, ignore_index, False, num_threads)
        if loss is not None:
            return loss
    p = _CrossEntropyCall(input, target, weight, ignore_index, reduction, label_smoothing, num_threads,
                          z_loss=z_loss, softcap=softcap, need_lse=return_lse)
    loss = p.run()
    return (loss, p.lse()) if return_lse else loss


@overload
def cross_entropy_with_grad(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = ...,
                            ignore_index: int = ..., reduction: Reduction = ..., label_smoothing: float = ...,
                            *, grad_output: Optional[ArrayLike] = ..., out: Optional[NDArray] = ...,
                            z_loss: float = ..., softcap: Optional[float] = ..., return_lse: Literal[False] = ...,
                            num_threads: NumThreads = ...) -> Tuple[Scalar, NDArray]: ...
@overload
def cross_entropy_with_grad(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = ...,
                            ignore_index: int = ..., reduction: Reduction = ..., label_smoothing: float = ...,
                            *, grad_output: Optional[ArrayLike] = ..., out: Optional[NDArray] = ...,
                            z_loss: float = ..., softcap: Optional[float] = ..., return_lse: Literal[True],
                            num_threads: NumThreads = ...) -> Tuple[Scalar, NDArray, NDArray]: ...
@overload
def cross_entropy_with_grad(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = ...,
                            ignore_index: int = ..., reduction: Reduction = ..., label_smoothing: float = ...,
                            *, grad_output: Optional[ArrayLike] = ..., out: Optional[NDArray] = ...,
                            z_loss: float = ..., softcap: Optional[float] = ..., return_lse: bool = ...,
                            num_threads: NumThreads = ...
                            ) -> Union[Tuple[Scalar, NDArray], Tuple[Scalar, NDArray, NDArray]]: ...
def cross_entropy_with_grad(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = None,
                            ignore_index: int = -100, reduction: Reduction = "mean", label_smoothing: float = 0.0,
                            *, grad_output: Optional[ArrayLike] = None, out: Optional[NDArray] = None,
                            z_loss: float = 0.0, softcap: Optional[float] = None, return_lse: bool = False,
                            num_threads: NumThreads = None
                            ) -> Union[Tuple[Scalar, NDArray], Tuple[Scalar, NDArray, NDArray]]:
    """The loss of `cross_entropy` and its gradient with respect to `input`, in one fused pass.

    grad = d(sum(grad_output * loss)) / d(input), of input's shape and dtype.

    Parameters
    ----------
    input, target, weight, ignore_index, reduction, label_smoothing : see cross_entropy
        As in `cross_entropy`.
    grad_output : array_like, optional
        A scalar (for 'mean' and 'sum') or an array broadcastable to the loss's shape (for
        'none'); defaults to 1.
    out : numpy.ndarray, optional
        Where to write the gradient: input's shape and dtype, writeable, any layout (the kernels
        write a C-contiguous one, or one matching a Fortran-ordered input, directly; any other
        through one temporary copied into it). It may be `input` itself, which overwrites the
        logits with their gradient and allocates no N x C memory at all. For float16 or bfloat16
        input, `out` may also be float32: the gradient as computed, before its rounding to the
        input's dtype (the logits are widened block by block; no N x C temporary).
    z_loss, softcap, return_lse, num_threads : see cross_entropy
        As in `cross_entropy`; z_loss and softcap enter the gradient too.

    Returns
    -------
    loss : numpy scalar or numpy.ndarray
        As `cross_entropy` returns it.
    grad : numpy.ndarray
        The gradient, of input's shape and dtype (`out` where given).
    lse : numpy.ndarray
        Only with ``return_lse=True``: ``(loss, grad, lse)``.

    Raises
    ------
    TypeError, ValueError, IndexError
        As `cross_entropy`; also for an `out` of the wrong shape, dtype or type, a read-only
        `out`, or one that overlaps `input` (other than being `input`), `target` or `weight`.

    See Also
    --------
    cross_entropy, CrossEntropyLoss.loss_and_grad

    Notes
    -----
    For an index target t and p = softmax(x), without options,
    d loss / dx_c = g (p_c - [c = t]) w_t / D, where g is grad_output and D the mean's
    denominator (1 for 'sum' and 'none'). With a new gradient (no `out`) of at least 16 MiB,
    its memory comes from fastce's buffer cache (`cache_info`).

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> x = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
    >>> t = np.array([0, 1])
    >>> loss, grad = fastce.cross_entropy_with_grad(x, t)
    >>> round(float(loss), 4)
    0.3185
    >>> grad.round(4)
    array([[-0.1705,  0.1212,  0.0493],
           [ 0.0543, -0.0988,  0.0445]])

    In place, overwriting the logits with their gradient:

    >>> loss, grad = fastce.cross_entropy_with_grad(x, t, out=x)
    >>> grad is x
    True
    """
    if out is None and grad_output is None and _plain_options(weight, label_smoothing, z_loss, softcap, return_lse):
        res = _kernels.small_call(_runtime.isa_id(), input, target, reduction, ignore_index, True, num_threads)
        if res is not None:
            return res
    p = _CrossEntropyCall(input, target, weight, ignore_index, reduction, label_smoothing, num_threads,
                          z_loss=z_loss, softcap=softcap, need_lse=return_lse)
    gout, gscale = p.grad_scale(grad_output)
    if out is None:
        # the input's memory order (Fortran stays Fortran); memory from the buffer cache
        out = _buffer_cache.empty_like(p.x_user, p.dtype)
    else:
        # out=input is safe: the kernels read each logit before writing its gradient.
        check_out(out, p.layout.shape, p.dtype, p.x_user,
                  [("target", target), ("weight", weight), ("grad_output", grad_output)],
                  wider=np.dtype(np.float32) if is_half(p.dtype) else None)
    loss = p.run(OUT_GRAD, out=out, gout=gout, gscale=gscale)
    return (loss, out, p.lse()) if return_lse else (loss, out)


def nll_loss(log_probs: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = None,
             ignore_index: int = -100, reduction: Reduction = "mean", *,
             num_threads: NumThreads = None) -> Scalar:
    """Negative log-likelihood of class-index targets, as ``torch.nn.functional.nll_loss``.

    Parameters
    ----------
    log_probs : array_like of float16, bfloat16, float32 or float64
        Log-probabilities, in the layout of `cross_entropy`'s input: (N, C), (C,) or
        (N, C, d1, ..., dk).
    target : array_like of integers
        Class indices, as `cross_entropy`'s index targets (probabilities are refused).
    weight : array_like of shape (C,), optional
        Per-class rescaling weights.
    ignore_index : int, default -100
        Targets equal to this contribute 0 and leave the mean's denominator.
    reduction : {'mean', 'none', 'sum'}, default 'mean'
        'mean' divides by the sum of the kept targets' weights.
    num_threads : int, optional
        Bounds the threads of the target check.

    Returns
    -------
    numpy scalar or numpy.ndarray
        Of log_probs' dtype: a scalar for 'mean' and 'sum', an array of the target shape for
        'none'.

    Raises
    ------
    TypeError, ValueError, IndexError
        As `cross_entropy` for index targets.

    See Also
    --------
    cross_entropy : ``nll_loss(log_softmax(x, axis=1), t)`` in one pass.

    Notes
    -----
    loss_i = -weight[t_i] * log_probs[i, t_i] (0 where t_i == ignore_index). Targets are
    validated by the same pass as cross_entropy's; the gather is one O(N) NumPy indexing step
    (there is no row to stream).

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> x = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
    >>> t = np.array([0, 1])
    >>> round(float(fastce.nll_loss(fastce.log_softmax(x), t)), 4)
    0.3185
    """
    lp = as_floating(log_probs, "log_probs")
    dtype = lp.dtype.newbyteorder("=")  # results are native-endian
    lay = Layout(lp.shape, "log_probs")
    tg = LossTargets(target, lay, weight=weight, ignore_index=ignore_index, reduction=reduction,
                     cdtype=compute_dtype(lp.dtype), nthreads=_runtime.resolve_threads(num_threads),
                     index_only=True)
    t2 = tg.target.reshape(lay.N, lay.S)
    kept = t2 != tg.ignore_index
    safe_t = np.where(kept, t2, 0).astype(np.intp)
    lp3 = lp.reshape(lay.N, lay.C, lay.S)
    picked = np.take_along_axis(lp3, safe_t[:, None, :], axis=1)[:, 0, :].astype(np.float64)
    w_t = tg.weight[safe_t].astype(np.float64) if tg.weight is not None else 1.0
    row_loss = np.where(kept, -w_t * picked, 0.0)
    return tg.reduce(row_loss.reshape(-1), dtype)


def _view_around(arr, axis):
    """(N, C, S, reduced shape) of `arr` viewed as (N, C, S) around `axis` (no transpose)."""
    shape = arr.shape if arr.ndim else (1,)
    ax = normalize_axis(axis, len(shape))
    N = int(np.prod(shape[:ax], dtype=np.int64))
    S = int(np.prod(shape[ax + 1:], dtype=np.int64))
    return N, shape[ax], S, (arr.shape[:ax] + arr.shape[ax + 1:] if arr.ndim else ())


def _row_lse(arr, axis, nthreads):
    """float64 log-sum-exp of a validated floating array over `axis` (reduced away), by the
    kernels in one pass: -inf over no classes; NaN where a row holds NaN or +inf (as
    cross_entropy; logsumexp then gives +inf for the latter)."""
    N, C, S, reduced_shape = _view_around(arr, axis)
    if C == 0:
        return np.full(reduced_shape, -np.inf)
    xc = as_compute(arr, arr.dtype.newbyteorder("="))  # the kernels read every float dtype as it is
    row_out = np.empty(N * S, dtype=np.float64)
    _kernels.ce_run(_runtime.isa_id(), xc, N, C, S, KIND_LSE, OUT_NONE, row_out=row_out, nthreads=nthreads)
    return row_out.reshape(reduced_shape)


def _softmax_family(x, axis, outmode, num_threads):
    """softmax / log_softmax (outmode) or logsumexp (OUT_NONE) over `axis`, via the CE kernels
    with no target: the array is viewed as (N, C, S) around `axis`, so no transpose is made."""
    arr = as_floating(x, "x")
    dtype = arr.dtype.newbyteorder("=")  # results are native-endian
    nthreads = _runtime.resolve_threads(num_threads)
    N, C, S, _ = _view_around(arr, axis)
    if outmode == OUT_NONE:
        lse = _row_lse(arr, axis, nthreads)
        if C and np.isnan(lse).any():  # rare: the reshape may copy a non-contiguous input
            _logsumexp_infinite_rows(arr.reshape(N, C, S), lse.reshape(N, S))
        return lse.astype(dtype)
    if C == 0:  # softmax of nothing is empty
        return np.empty(arr.shape, dtype=dtype)
    xc = as_compute(arr, dtype)  # the kernels read and write every float dtype as it is
    out = _buffer_cache.empty(arr.shape, dtype)
    _kernels.ce_run(_runtime.isa_id(), xc, N, C, S, KIND_LSE, outmode, out=out, nthreads=nthreads)
    return out


def _logsumexp_infinite_rows(x3, lse2):
    """torch.logsumexp treats an infinite max as 0 (so a row holding +inf, and no NaN, gives
    +inf), whereas log_softmax and cross_entropy give NaN there, which the kernels follow.
    Such rows (NaN from the kernels) are rare: fix them here, O(their size)."""
    bad_n, bad_s = np.nonzero(np.isnan(lse2))
    if bad_n.size:
        rows = x3[bad_n, :, bad_s]  # (bad rows, C)
        plus_inf = np.isposinf(rows).any(axis=1) & ~np.isnan(rows).any(axis=1)
        lse2[bad_n[plus_inf], bad_s[plus_inf]] = np.inf


def log_softmax(x: ArrayLike, axis: int = -1, *, num_threads: NumThreads = None) -> NDArray:
    """Logarithm of the softmax along `axis`, computed as x - logsumexp(x) (stable for any magnitude).

    Parameters
    ----------
    x : array_like of float16, bfloat16, float32 or float64
        Any shape with at least one dimension (a 0-d array is one class).
    axis : int, default -1
        The axis of the classes.
    num_threads : int, optional
        None uses every core; a positive int uses exactly that many.

    Returns
    -------
    numpy.ndarray
        Of x's shape and dtype (native byte order).

    Raises
    ------
    TypeError
        For a non-floating `x` or a non-integer `axis`.
    numpy.exceptions.AxisError
        For an axis out of range.

    See Also
    --------
    softmax, logsumexp

    Notes
    -----
    As ``torch.log_softmax``: a row that holds +inf or NaN, or is all -inf, is all NaN; a -inf
    logit in an otherwise finite row gives -inf.

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> fastce.log_softmax(np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])).round(4)
    array([[-0.417, -1.417, -2.317],
           [-2.22 , -0.22 , -2.42 ]])
    """
    return _softmax_family(x, axis, OUT_LOGSOFTMAX, num_threads)


def softmax(x: ArrayLike, axis: int = -1, *, num_threads: NumThreads = None) -> NDArray:
    """Softmax along `axis`: exp(x - logsumexp(x)).

    Parameters
    ----------
    x : array_like of float16, bfloat16, float32 or float64
        Any shape with at least one dimension (a 0-d array is one class).
    axis : int, default -1
        The axis of the classes.
    num_threads : int, optional
        None uses every core; a positive int uses exactly that many.

    Returns
    -------
    numpy.ndarray
        Of x's shape and dtype (native byte order); its memory comes from fastce's buffer cache
        when it is large (`cache_info`).

    Raises
    ------
    TypeError
        For a non-floating `x` or a non-integer `axis`.
    numpy.exceptions.AxisError
        For an axis out of range.

    See Also
    --------
    log_softmax, logsumexp

    Notes
    -----
    Non-finite values as `log_softmax`: NaN rows where log_softmax has them, 0 for a -inf
    logit in an otherwise finite row.

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> fastce.softmax(np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])).round(4)
    array([[0.659 , 0.2424, 0.0986],
           [0.1086, 0.8025, 0.0889]])
    """
    return _softmax_family(x, axis, OUT_SOFTMAX, num_threads)


def logsumexp(x: ArrayLike, axis: int = -1, *, num_threads: NumThreads = None) -> NDArray:
    """Log-sum-exp, log(sum(exp(x))), along `axis`, which is reduced away; one streaming pass.

    Parameters
    ----------
    x : array_like of float16, bfloat16, float32 or float64
        Any shape with at least one dimension.
    axis : int, default -1
        The axis to reduce.
    num_threads : int, optional
        None uses every core; a positive int uses exactly that many.

    Returns
    -------
    numpy.ndarray
        Of x's shape without `axis` and x's dtype (0-d for a 1-d `x`).

    Raises
    ------
    TypeError
        For a non-floating `x` or a non-integer `axis`.
    numpy.exceptions.AxisError
        For an axis out of range.

    See Also
    --------
    log_softmax, softmax

    Notes
    -----
    As ``torch.logsumexp``: with m = max_k x_k, lse = m + log(sum_k exp(x_k - m)); a row
    holding +inf (and no NaN) gives +inf, an all -inf row -inf, any NaN gives NaN, and an
    empty axis -inf.

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> fastce.logsumexp(np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])).round(4)
    array([2.417, 2.72 ])
    """
    return _softmax_family(x, axis, OUT_NONE, num_threads)
