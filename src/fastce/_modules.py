"""CrossEntropyLoss: torch's nn.CrossEntropyLoss as a reusable, validated configuration."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from . import _functional, _runtime
from ._typing import ArrayLike, NDArray, NumThreads, Reduction, Scalar
from ._validate import check_ignore_index, check_label_smoothing, check_reduction

__all__ = ["CrossEntropyLoss"]


class CrossEntropyLoss:
    """Softmax cross-entropy with fixed options, as ``torch.nn.CrossEntropyLoss``.

    Options are validated here, once; see `cross_entropy` for their meaning.

    Parameters
    ----------
    weight : array_like of shape (C,), optional
        Per-class rescaling weights (copied).
    ignore_index : int, default -100
        Index targets equal to this contribute 0 and leave the mean's denominator.
    reduction : {'mean', 'none', 'sum'}, default 'mean'
        How the per-element losses are reduced.
    label_smoothing : float in [0, 1], default 0.0
        Mixes the target with the uniform distribution.
    num_threads : int, optional
        None uses every core; a positive int uses exactly that many.

    Attributes
    ----------
    weight : numpy.ndarray or None
        A copy of `weight`.
    ignore_index : int
        The validated `ignore_index`.
    reduction : str
        The validated `reduction`.
    label_smoothing : float
        The validated `label_smoothing`.
    num_threads : int or None
        As given (checked).

    Raises
    ------
    TypeError, ValueError
        For an option of the wrong type or out of its range.

    See Also
    --------
    cross_entropy, cross_entropy_with_grad

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> loss_fn = fastce.CrossEntropyLoss(reduction="sum")
    >>> x = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
    >>> t = np.array([0, 1])
    >>> round(float(loss_fn(x, t)), 4)
    0.6371
    >>> loss, grad = loss_fn.loss_and_grad(x, t)
    >>> grad.shape
    (2, 3)
    >>> loss_fn
    CrossEntropyLoss(weight=None, ignore_index=-100, reduction='sum', label_smoothing=0.0)
    """

    weight: Optional[NDArray]
    ignore_index: int
    reduction: Reduction
    label_smoothing: float
    num_threads: NumThreads

    def __init__(self, weight: Optional[ArrayLike] = None, ignore_index: int = -100,
                 reduction: Reduction = "mean", label_smoothing: float = 0.0, *,
                 num_threads: NumThreads = None) -> None:
        self.weight = None if weight is None else np.array(weight, copy=True)
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)
        self.label_smoothing = check_label_smoothing(label_smoothing)
        _runtime.resolve_threads(num_threads)
        self.num_threads = num_threads

    def _options(self) -> Dict[str, Any]:
        return dict(weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction,
                    label_smoothing=self.label_smoothing, num_threads=self.num_threads)

    def __call__(self, input: ArrayLike, target: ArrayLike) -> Scalar:
        """The loss of `input` against `target`: ``cross_entropy(input, target, **options)``.

        Parameters
        ----------
        input : array_like
            Logits, as in `cross_entropy`.
        target : array_like
            Class indices or class probabilities, as in `cross_entropy`.

        Returns
        -------
        numpy scalar or numpy.ndarray
            The loss, as `cross_entropy` returns it.
        """
        return _functional.cross_entropy(input, target, **self._options())

    def forward(self, input: ArrayLike, target: ArrayLike) -> Scalar:
        """The same as calling the loss (torch's name).

        Parameters
        ----------
        input : array_like
            Logits, as in `cross_entropy`.
        target : array_like
            Class indices or class probabilities, as in `cross_entropy`.

        Returns
        -------
        numpy scalar or numpy.ndarray
            The loss, as `cross_entropy` returns it.
        """
        return self(input, target)

    def loss_and_grad(self, input: ArrayLike, target: ArrayLike, *, grad_output: Optional[ArrayLike] = None,
                      out: Optional[NDArray] = None) -> Tuple[Scalar, NDArray]:
        """The loss and d(sum(grad_output * loss))/d(input) in one fused pass.

        Parameters
        ----------
        input : array_like
            Logits, as in `cross_entropy`.
        target : array_like
            Class indices or class probabilities, as in `cross_entropy`.
        grad_output : array_like, optional
            As in `cross_entropy_with_grad`; defaults to 1.
        out : numpy.ndarray, optional
            Where to write the gradient, as in `cross_entropy_with_grad` (may be `input`).

        Returns
        -------
        loss : numpy scalar or numpy.ndarray
            As `cross_entropy` returns it.
        grad : numpy.ndarray
            The gradient, of input's shape and dtype.
        """
        return _functional.cross_entropy_with_grad(input, target, grad_output=grad_output, out=out,
                                                   **self._options())

    def __repr__(self) -> str:
        w = "None" if self.weight is None else f"array(shape={self.weight.shape})"
        return (f"CrossEntropyLoss(weight={w}, ignore_index={self.ignore_index}, "
                f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing})")
