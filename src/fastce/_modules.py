"""CrossEntropyLoss: torch's nn.CrossEntropyLoss as a reusable, validated configuration."""
import numpy as np

from . import _functional, _runtime
from ._validate import check_ignore_index, check_label_smoothing, check_reduction

__all__ = ["CrossEntropyLoss"]


class CrossEntropyLoss:
    """Softmax cross-entropy with fixed options, as torch.nn.CrossEntropyLoss.

    loss_fn = CrossEntropyLoss(weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0)
    loss = loss_fn(input, target)
    loss, grad = loss_fn.loss_and_grad(input, target)   # for NumPy training loops

    Options are validated here, once; see fastce.cross_entropy for their meaning.
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, *,
                 num_threads=None):
        self.weight = None if weight is None else np.array(weight, copy=True)
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)
        self.label_smoothing = check_label_smoothing(label_smoothing)
        _runtime.resolve_threads(num_threads)
        self.num_threads = num_threads

    def _options(self):
        return dict(weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction,
                    label_smoothing=self.label_smoothing, num_threads=self.num_threads)

    def __call__(self, input, target):
        return _functional.cross_entropy(input, target, **self._options())

    forward = __call__

    def loss_and_grad(self, input, target, *, grad_output=None, out=None):
        """(loss, d(sum(grad_output * loss))/d(input)) in one fused pass; see cross_entropy_with_grad."""
        return _functional.cross_entropy_with_grad(input, target, grad_output=grad_output, out=out,
                                                   **self._options())

    def __repr__(self):
        w = "None" if self.weight is None else f"array(shape={self.weight.shape})"
        return (f"CrossEntropyLoss(weight={w}, ignore_index={self.ignore_index}, "
                f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing})")
