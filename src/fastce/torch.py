"""Torch CPU tensors through fastce: cross-entropy with autograd, as a torch operator.

Usage::

    import fastce.torch as fct
    loss = fct.cross_entropy(logits, target)          # logits: float32/64, float16 or bfloat16
    loss.backward()                                    # logits.grad, from the fused pass

`import fastce` never imports torch; this module does (import it only where torch is installed).

How it runs. The loss and its gradient come from one fused pass
(fastce.cross_entropy_with_grad) over the tensor's own memory: the tensor is detached and viewed
as a NumPy array through DLPack (a bfloat16 tensor as int16, then as ml_dtypes' bfloat16), and
the results are viewed back as tensors, so no float32 copy of 2-byte logits is made. The forward computes the gradient only
when it will be needed (the input requires grad and grad mode is on) and saves it; the backward
scales it by grad_output (per row for reduction='none').

It is registered as the operator `fastce::cross_entropy` (torch.library.custom_op, with
register_fake and register_autograd), so torch.compile(fullgraph=True) captures it and
torch.library.opcheck passes. In eager mode a custom operator costs more per call than the work
of a small batch, so outside torch.compile the same kernels run through a plain
torch.autograd.Function.

Threads: torch.get_num_threads() by default (num_threads= overrides), so fastce uses the cores
torch is told to use.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from ._functional import cross_entropy as _ce
from ._functional import cross_entropy_with_grad as _ce_with_grad
from ._linear import linear_cross_entropy as _lce
from ._linear import linear_cross_entropy_with_grad as _lce_with_grad
from ._typing import NumThreads, Reduction
from ._validate import as_array, check_reduction

__all__ = ["cross_entropy", "CrossEntropyLoss", "linear_cross_entropy"]


# --------------------------------------------------------------------------------------------
# tensors <-> arrays, in place
# --------------------------------------------------------------------------------------------

def _array(t: torch.Tensor, name: str) -> np.ndarray:
    if t.device.type != "cpu":
        raise TypeError(f"{name} is on {t.device}; fastce is a CPU library: move it with .cpu()")
    a: np.ndarray = as_array(t.detach(), name)
    return a


def _tensor(a) -> torch.Tensor:
    """A NumPy result (array or scalar) as a CPU tensor sharing its memory where it can."""
    a = np.asarray(a)
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _kernel_call(input, target, weight, ignore_index, reduction, label_smoothing, z_loss, softcap,
                 need_grad, num_threads):
    """(loss, grad or None) as tensors; grad is d(loss)/d(input) with grad_output 1 (per row for
    reduction='none')."""
    if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("fastce.torch.cross_entropy takes torch tensors (input and target)")
    if target.requires_grad and target.is_floating_point() and target.shape == input.shape:
        raise TypeError("target requires grad: fastce gives the gradient with respect to input only; "
                        "pass target.detach()")
    threads = torch.get_num_threads() if num_threads is None else num_threads
    x = _array(input, "input")
    t = _array(target, "target")
    w = None if weight is None else _array(weight, "weight")
    kw = dict(weight=w, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
              z_loss=z_loss, softcap=softcap, num_threads=threads)
    if not need_grad:
        return _tensor(_ce(x, t, **kw)), None
    loss, grad = _ce_with_grad(x, t, **kw)
    return _tensor(loss), _tensor(grad)


def _scale(grad, grad_output, reduction, eager=False):
    """grad_output * d(loss)/d(input): a scalar for 'mean' / 'sum', per row for 'none' (the
    rows of the loss's shape, broadcast over the class axis, axis 1, or 0 when unbatched).
    In eager mode, loss.backward() passes grad_output 1: the saved gradient is then the answer
    itself, with no second pass over N x C and no second N x C allocation (what that saves:
    docs/performance/notes_scoring.md). Under torch.compile the value of grad_output is not
    known when the graph is traced, so it always multiplies."""
    if reduction != "none":
        if eager and grad_output.numel() == 1 and grad_output.item() == 1.0:
            return grad
        return grad * grad_output.to(grad.dtype)
    g = grad_output.to(grad.dtype)
    if grad.dim() >= 2:
        g = g.unsqueeze(1)
    return grad * g


# --------------------------------------------------------------------------------------------
# the operator (torch.compile) and the eager autograd.Function
# --------------------------------------------------------------------------------------------

@torch.library.custom_op("fastce::cross_entropy", mutates_args=())
def _op(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, ignore_index: int,
        reduction: str, label_smoothing: float, z_loss: float, softcap: float | None,
        need_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    loss, grad = _kernel_call(input, target, weight, ignore_index, reduction, label_smoothing, z_loss,
                              softcap, need_grad, None)
    if grad is None:
        grad = input.new_empty((0,))
    return loss, grad


def _loss_shape(input, target, reduction):
    if reduction != "none":
        return ()
    if target.is_floating_point() and target.shape == input.shape:  # probabilities
        return (input.shape[0],) + tuple(input.shape[2:]) if input.dim() >= 2 else ()
    return tuple(target.shape)


@_op.register_fake
def _(input, target, weight, ignore_index, reduction, label_smoothing, z_loss, softcap, need_grad):
    loss = input.new_empty(_loss_shape(input, target, reduction))
    grad = input.new_empty(input.shape) if need_grad else input.new_empty((0,))
    return loss, grad


def _setup_context(ctx, inputs, output):
    ctx.reduction = inputs[4]
    ctx.save_for_backward(output[1])


def _backward(ctx, grad_loss, grad_grad):
    (grad,) = ctx.saved_tensors
    if grad.numel() == 0 and grad_loss is not None:  # need_grad was False: the caller never asks
        raise RuntimeError("fastce::cross_entropy was called with need_grad=False; its input has no gradient")
    return _scale(grad, grad_loss, ctx.reduction), None, None, None, None, None, None, None, None


_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerCrossEntropy(torch.autograd.Function):
    """The same kernels without the operator machinery (eager mode)."""

    @staticmethod
    def forward(ctx, input, target, weight, ignore_index, reduction, label_smoothing, z_loss, softcap,
                num_threads):
        loss, grad = _kernel_call(input, target, weight, ignore_index, reduction, label_smoothing, z_loss,
                                  softcap, True, num_threads)
        ctx.reduction = reduction
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        (grad,) = ctx.saved_tensors
        return _scale(grad, grad_loss, ctx.reduction, eager=True), None, None, None, None, None, None, None, None


def cross_entropy(input: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None,
                  ignore_index: int = -100, reduction: Reduction = "mean", label_smoothing: float = 0.0, *,
                  z_loss: float = 0.0, softcap: Optional[float] = None,
                  num_threads: NumThreads = None) -> torch.Tensor:
    """`torch.nn.functional.cross_entropy` on CPU tensors, by fastce's fused kernels.

    Differentiable with respect to `input`: the forward computes the gradient in the same pass
    as the loss (when `input` requires grad and grad mode is on) and the backward only scales
    it. Under ``torch.compile`` it is the operator ``fastce::cross_entropy``; in eager mode a
    plain ``torch.autograd.Function`` over the same kernels.

    Parameters
    ----------
    input : torch.Tensor
        The logits, float32, float64, float16 or bfloat16, shape (N, C), (C,) or
        (N, C, d1, ..., dk), any strides, on the CPU.
    target : torch.Tensor
        Class indices of any integer dtype, shape (N,), () or (N, d1, ..., dk); or class
        probabilities of `input`'s shape.
    weight : torch.Tensor, optional
        A manual rescaling weight per class, shape (C,).
    ignore_index : int, default -100
        A target value that is ignored (index targets only).
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        As torch's.
    label_smoothing : float, default 0.0
        As torch's, in [0, 1].
    z_loss : float, default 0.0
        As `fastce.cross_entropy` (beyond torch): adds PaLM's z-loss, ``z_loss * lse**2``, to
        each row's loss (weighted like it), lse being the row's log-sum-exp.
    softcap : float, optional
        As `fastce.cross_entropy` (beyond torch): the loss of ``softcap * tanh(input / softcap)``.
    num_threads : int, optional
        The threads fastce uses; default ``torch.get_num_threads()``. Refused under
        ``torch.compile``.

    Returns
    -------
    torch.Tensor
        The loss, of `input`'s dtype: 0-d for 'mean' and 'sum', the target's rows' shape for
        'none'.

    Raises
    ------
    TypeError
        If `input` or `target` is not a tensor, a tensor is not on the CPU, a floating-point
        `target` of `input`'s shape requires grad, or `num_threads` is given under
        ``torch.compile``.
    ValueError
        If `reduction` or another option is invalid, or the shapes do not fit.
    IndexError
        If a class-index target is outside [0, C) and not `ignore_index`.

    See Also
    --------
    CrossEntropyLoss : The same as a module.
    linear_cross_entropy : The loss of an LM head, its logits never stored.

    Examples
    --------
    >>> import torch
    >>> import fastce.torch as fct
    >>> x = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.2]], requires_grad=True)
    >>> target = torch.tensor([0, 2])
    >>> loss = fct.cross_entropy(x, target)
    >>> round(loss.item(), 4)
    1.4643
    >>> loss.backward()
    >>> x.grad.round(decimals=4)
    tensor([[-0.1705,  0.1212,  0.0493],
            [ 0.0548,  0.4047, -0.4594]])
    >>> fct.cross_entropy(x.detach(), target, reduction="none").round(decimals=4)
    tensor([0.4170, 2.5116])
    """
    check_reduction(reduction)
    need_grad = isinstance(input, torch.Tensor) and input.requires_grad and torch.is_grad_enabled()
    if torch.compiler.is_compiling():
        if num_threads is not None:
            raise TypeError("num_threads is not supported under torch.compile")
        loss: torch.Tensor
        loss, _ = _op(input, target, weight, int(ignore_index), reduction, float(label_smoothing),
                      float(z_loss), None if softcap is None else float(softcap), need_grad)
        return loss
    if not need_grad:
        loss = _kernel_call(input, target, weight, ignore_index, reduction, label_smoothing, z_loss, softcap,
                            False, num_threads)[0]
        return loss
    loss = _EagerCrossEntropy.apply(input, target, weight, ignore_index, reduction, label_smoothing, z_loss,
                                    softcap, num_threads)
    return loss


class CrossEntropyLoss(nn.Module):
    """`torch.nn.CrossEntropyLoss` by fastce's kernels (see `cross_entropy`); the same constructor.

    The module form of `cross_entropy`, with torch's options. The deprecated `size_average` and
    `reduce` are refused; `weight` is registered as a buffer (moves with ``.to()``).

    Parameters
    ----------
    weight : torch.Tensor, optional
        A manual rescaling weight per class, shape (C,).
    size_average : None
        Deprecated in torch; anything but None is refused.
    ignore_index : int, default -100
        A target value that is ignored.
    reduce : None
        Deprecated in torch; anything but None is refused.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        As torch's.
    label_smoothing : float, default 0.0
        As torch's.

    Attributes
    ----------
    weight : torch.Tensor or None
        The class weights (a buffer).
    ignore_index : int
        The ignored target value.
    reduction : {'mean', 'sum', 'none'}
        The reduction.
    label_smoothing : float
        The smoothing.

    Raises
    ------
    TypeError
        If `size_average` or `reduce` is given.
    ValueError
        If `reduction` is not one of the three.

    See Also
    --------
    cross_entropy : The function form.
    fastce.CrossEntropyLoss : The NumPy module.

    Examples
    --------
    >>> import torch
    >>> import fastce.torch as fct
    >>> criterion = fct.CrossEntropyLoss(label_smoothing=0.1)
    >>> x = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.2]])
    >>> round(criterion(x, torch.tensor([0, 2])).item(), 4)
    1.4693
    """

    weight: Optional[torch.Tensor]

    def __init__(self, weight: Optional[torch.Tensor] = None, size_average: None = None, ignore_index: int = -100,
                 reduce: None = None, reduction: Reduction = "mean", label_smoothing: float = 0.0) -> None:
        super().__init__()
        if size_average is not None or reduce is not None:
            raise TypeError("size_average and reduce are deprecated in torch; use reduction=")
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction: Reduction = check_reduction(reduction)
        self.label_smoothing = label_smoothing

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of `input` against `target`, as `cross_entropy` with the module's options.

        Call the module (``criterion(input, target)``) rather than this method, as for any
        torch module.

        Parameters
        ----------
        input : torch.Tensor
            The logits, as for `cross_entropy`.
        target : torch.Tensor
            Class indices or probabilities, as for `cross_entropy`.

        Returns
        -------
        torch.Tensor
            The loss, of `input`'s dtype.

        See Also
        --------
        cross_entropy : What it calls.

        Examples
        --------
        >>> import torch
        >>> import fastce.torch as fct
        >>> x = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.2]])
        >>> fct.CrossEntropyLoss(reduction="sum")(x, torch.tensor([0, 2])).round(decimals=4)
        tensor(2.9286)
        """
        return cross_entropy(input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing)


# --------------------------------------------------------------------------------------------
# fused linear + cross-entropy (LM heads): the logits are never stored
# --------------------------------------------------------------------------------------------

def _linear_call(input, linear_weight, target, linear_bias, weight, ignore_index, reduction, label_smoothing,
                 need_grad, num_threads, grad_output=None):
    """(loss, grad_input, grad_weight, grad_bias) as tensors: the grads of sum(grad_output * loss)
    (grad_output 1 when None; per row for 'none'), or None without need_grad. grad_bias is None
    without a bias."""
    for name, t in (("input", input), ("linear_weight", linear_weight), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"fastce.torch.linear_cross_entropy takes torch tensors ({name})")
    arrays = dict(input=_array(input, "input"), linear_weight=_array(linear_weight, "linear_weight"),
                  target=_array(target, "target"))
    kw = dict(linear_bias=None if linear_bias is None else _array(linear_bias, "linear_bias"),
              weight=None if weight is None else _array(weight, "weight"), ignore_index=ignore_index,
              reduction=reduction, label_smoothing=label_smoothing, num_threads=num_threads)
    if not need_grad:
        return _tensor(_lce(*arrays.values(), **kw)), None, None, None
    if grad_output is not None:
        kw["grad_output"] = _array(grad_output.to(input.dtype).contiguous(), "grad_output")
    loss, gx, gw, gb = _lce_with_grad(*arrays.values(), **kw)
    return _tensor(loss), _tensor(gx), _tensor(gw), None if gb is None else _tensor(gb)


# The operator. For 'mean' and 'sum' the forward computes the gradients (grad_output 1) with the
# loss and the backward scales them. For 'none' a per-row grad_output reaches grad_weight and
# grad_bias through a sum over rows that the saved sums cannot be rescaled into, so the
# forward computes the loss only and the backward is a second operator that runs the fused pass
# again with that grad_output (the logits recomputed chunk by chunk, never stored).

@torch.library.custom_op("fastce::linear_cross_entropy", mutates_args=())
def _linear_op(input: torch.Tensor, linear_weight: torch.Tensor, target: torch.Tensor,
               linear_bias: torch.Tensor | None, weight: torch.Tensor | None, ignore_index: int, reduction: str,
               label_smoothing: float, need_grad: bool
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    loss, gx, gw, gb = _linear_call(input, linear_weight, target, linear_bias, weight, ignore_index, reduction,
                                    label_smoothing, need_grad and reduction != "none", None)
    # (no two returns may alias: a fresh empty tensor for each gradient not computed)
    return loss, *(input.new_empty((0,)) if g is None else g for g in (gx, gw, gb))


@torch.library.custom_op("fastce::linear_cross_entropy_backward", mutates_args=())
def _linear_backward_op(grad_output: torch.Tensor, input: torch.Tensor, linear_weight: torch.Tensor,
                        target: torch.Tensor, linear_bias: torch.Tensor | None, weight: torch.Tensor | None,
                        ignore_index: int, reduction: str, label_smoothing: float
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _, gx, gw, gb = _linear_call(input, linear_weight, target, linear_bias, weight, ignore_index, reduction,
                                 label_smoothing, True, None, grad_output=grad_output)
    return gx, gw, (input.new_empty((0,)) if gb is None else gb)


@_linear_op.register_fake
def _(input, linear_weight, target, linear_bias, weight, ignore_index, reduction, label_smoothing, need_grad):
    loss = input.new_empty(tuple(target.shape) if reduction == "none" else ())
    grads = need_grad and reduction != "none"
    gx = input.new_empty(input.shape) if grads else input.new_empty((0,))
    gw = input.new_empty(linear_weight.shape) if grads else input.new_empty((0,))
    gb = input.new_empty(linear_bias.shape) if grads and linear_bias is not None else input.new_empty((0,))
    return loss, gx, gw, gb


@_linear_backward_op.register_fake
def _(grad_output, input, linear_weight, target, linear_bias, weight, ignore_index, reduction, label_smoothing):
    gb = input.new_empty(linear_bias.shape) if linear_bias is not None else input.new_empty((0,))
    return input.new_empty(input.shape), input.new_empty(linear_weight.shape), gb


def _linear_setup_context(ctx, inputs, output):
    input, linear_weight, target, linear_bias, weight, ignore_index, reduction, label_smoothing, need_grad = inputs
    ctx.options = (ignore_index, reduction, label_smoothing)
    ctx.need_grad = need_grad
    ctx.has_bias = linear_bias is not None
    if reduction == "none":
        ctx.save_for_backward(input, linear_weight, target, linear_bias, weight)
    else:
        ctx.save_for_backward(*output[1:])


def _linear_backward(ctx, grad_loss, *_):
    ignore_index, reduction, label_smoothing = ctx.options
    if not ctx.need_grad:
        raise RuntimeError("fastce::linear_cross_entropy was called with need_grad=False; it has no gradient")
    if reduction == "none":
        input, linear_weight, target, linear_bias, weight = ctx.saved_tensors
        gx, gw, gb = _linear_backward_op(grad_loss, input, linear_weight, target, linear_bias, weight,
                                         ignore_index, reduction, label_smoothing)
    else:
        gx, gw, gb = (t * grad_loss.to(t.dtype) for t in ctx.saved_tensors)
    return gx, gw, None, (gb if ctx.has_bias else None), None, None, None, None, None


_linear_op.register_autograd(_linear_backward, setup_context=_linear_setup_context)


class _EagerLinearCrossEntropy(torch.autograd.Function):
    """The same as the operator without its machinery (eager mode). For 'none' the forward also
    computes the gradients for grad_output 1, which the usual loss.sum() / loss.mean() backward
    (one value for all rows) only scales; any other grad_output runs the fused pass again."""

    @staticmethod
    def forward(ctx, input, linear_weight, target, linear_bias, weight, ignore_index, reduction, label_smoothing,
                num_threads):
        loss, gx, gw, gb = _linear_call(input, linear_weight, target, linear_bias, weight, ignore_index, reduction,
                                        label_smoothing, True, num_threads)
        ctx.call = (input, linear_weight, target, linear_bias, weight, ignore_index, reduction, label_smoothing,
                    num_threads)
        ctx.reduction = reduction
        ctx.has_bias = gb is not None
        ctx.save_for_backward(gx, gw, *((gb,) if gb is not None else ()))
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        if ctx.reduction == "none" and grad_loss.dim() > 0 and not torch.all(grad_loss == grad_loss.reshape(-1)[0]):
            (input, linear_weight, target, linear_bias, weight, ignore_index, reduction, label_smoothing,
             num_threads) = ctx.call
            _, *grads = _linear_call(input, linear_weight, target, linear_bias, weight, ignore_index, reduction,
                                     label_smoothing, True, num_threads, grad_output=grad_loss)
        else:
            g = grad_loss.reshape(-1)[0] if grad_loss.dim() > 0 else grad_loss
            grads = [_scale(t, g, "mean", True) for t in ctx.saved_tensors]
        gb = grads[2] if ctx.has_bias else None
        return grads[0], grads[1], None, gb, None, None, None, None, None


def linear_cross_entropy(input: torch.Tensor, linear_weight: torch.Tensor, target: torch.Tensor, *,
                         linear_bias: Optional[torch.Tensor] = None, weight: Optional[torch.Tensor] = None,
                         reduction: Reduction = "mean", ignore_index: Optional[int] = -100,
                         label_smoothing: float = 0.0, num_threads: NumThreads = None) -> torch.Tensor:
    """`torch.nn.functional.linear_cross_entropy` on CPU tensors, by fastce's chunked kernels.

    The same signature as torch's: the loss of the logits ``input @ linear_weight.T
    (+ linear_bias)``, computed chunk by chunk, so the (N, V) logits are never stored.
    Differentiable with respect to `input`, `linear_weight` and `linear_bias`; the gradients
    come from the same pass as the loss (saved: the size of the parameters, never of the
    logits). With reduction='none', a backward with one grad_output value for every row
    (``loss.sum().backward()``, ``loss.mean().backward()``) only scales them; any other
    grad_output runs the fused pass again with it (the logits recomputed, never stored).

    It is the operator ``fastce::linear_cross_entropy`` under ``torch.compile`` (with
    ``fastce::linear_cross_entropy_backward`` for 'none'), a plain ``torch.autograd.Function``
    in eager mode.

    Parameters
    ----------
    input : torch.Tensor
        The hidden states, shape (N, H) or (H,), float32 or float64, on the CPU.
    linear_weight : torch.Tensor
        The LM head's weight, shape (V, H), of `input`'s dtype.
    target : torch.Tensor
        Class indices, shape (N,) or ().
    linear_bias : torch.Tensor, optional
        The head's bias, shape (V,).
    weight : torch.Tensor, optional
        A manual rescaling weight per class, shape (V,).
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        As torch's.
    ignore_index : int or None, default -100
        A target value that is ignored; None means -100.
    label_smoothing : float, default 0.0
        As torch's.
    num_threads : int, optional
        The threads fastce uses (default: every core). Refused under ``torch.compile``.

    Returns
    -------
    torch.Tensor
        The loss, of `input`'s dtype: 0-d for 'mean' and 'sum', the target's shape for 'none'.

    Raises
    ------
    TypeError
        If `input`, `linear_weight` or `target` is not a tensor, a tensor is not on the CPU, or
        `num_threads` is given under ``torch.compile``.
    ValueError
        If `reduction` or another option is invalid, or the shapes do not fit.

    See Also
    --------
    cross_entropy : The loss of given logits.
    fastce.linear_cross_entropy : The NumPy function.

    Examples
    --------
    >>> import torch
    >>> import fastce.torch as fct
    >>> hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> head = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, -1.0]], requires_grad=True)
    >>> loss = fct.linear_cross_entropy(hidden, head, torch.tensor([0, 1, 2]))
    >>> round(loss.item(), 4)
    1.0743
    >>> loss.backward()
    >>> head.grad.round(decimals=4)
    tensor([[ 0.1102,  0.3033],
            [ 0.1116, -0.0300],
            [-0.2217, -0.2733]])
    """
    check_reduction(reduction)
    ignore_index = -100 if ignore_index is None else ignore_index
    need_grad = torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in (input, linear_weight, linear_bias))
    if torch.compiler.is_compiling():
        if num_threads is not None:
            raise TypeError("num_threads is not supported under torch.compile")
        loss: torch.Tensor = _linear_op(input, linear_weight, target, linear_bias, weight, int(ignore_index),
                                        reduction, float(label_smoothing), need_grad)[0]
        return loss
    if not need_grad:
        loss = _linear_call(input, linear_weight, target, linear_bias, weight, ignore_index, reduction,
                            label_smoothing, False, num_threads)[0]
        return loss
    loss = _EagerLinearCrossEntropy.apply(input, linear_weight, target, linear_bias, weight, ignore_index,
                                          reduction, label_smoothing, num_threads)
    return loss
