"""The targets of a loss call, validated once, and the rules that follow from them.

One place for each of these rules, shared by cross_entropy, cross_entropy_with_grad, nll_loss,
score and the linear (LM head) variants:

* the target kind: a target of the input's shape holds class probabilities (floating), any other
  holds class indices (integers), as in torch;
* the index check: dtype, shape, range (IndexError "Target 7 is out of bounds.", the first bad
  one), done by the C pass `fastce_check_targets` that also totals the kept targets' weights;
* the denominator of 'mean': the sum of the kept targets' weights (their count without
  weights) for index targets, the number of elements N*d1*...*dk for probability targets;
* the reduction of per-row losses ('none', 'sum', 'mean'; an empty or all-ignored 'mean' is
  NaN = 0/0, 'sum' is 0);
* grad_output: a real scalar for 'mean' and 'sum' (scaled by 1/D for 'mean'), an array
  broadcastable to the loss's shape for 'none'.
"""
import numpy as np

from . import _kernels, _runtime
from ._validate import check_ignore_index, check_index_target, check_reduction, check_weight, target_kind

__all__ = ["LossTargets", "Reduction"]


class Reduction:
    """The reduction rules of per-row losses whose 'mean' divides by `denominator` (for
    LossTargets, and for merged vocab-shard statistics, whose kept targets' weights are known
    only once every shard is in): reduce, reduce_total, grad_scale."""

    def __init__(self, layout, reduction, denominator):
        self.layout = layout
        self.reduction = check_reduction(reduction)
        self.denominator = denominator

    def reduce(self, row_loss, dtype):
        """The loss of float64 per-row losses (layout.rows of them) in `dtype`: an array of the
        target's shape for 'none', else a NumPy scalar."""
        if self.reduction == "none":
            return row_loss.reshape(self.layout.target_shape).astype(dtype)
        return self.reduce_total(_kernels.sum_f64(row_loss), dtype)

    def reduce_total(self, total, dtype):
        """'sum' or 'mean' of losses whose float64 sum is `total` (summed in parts, e.g. chunks)."""
        if self.reduction == "sum":
            return dtype.type(total)
        # mean: an empty batch, or every target ignored, gives NaN (0/0), as in torch.
        return dtype.type(total / self.denominator if self.denominator != 0 else np.nan)

    def grad_scale(self, grad_output):
        """(per-row float64 grad_output, flat, or None; scalar factor): the kernels' row
        coefficient is gout[row] * scale. 'mean' folds 1/D into the scale (inf or NaN when D = 0,
        as torch, whose ignored rows still get 0)."""
        if self.reduction == "none":
            if grad_output is None:
                return None, 1.0
            g = np.asarray(grad_output)
            if g.dtype.kind not in "iuf":
                raise TypeError(f"grad_output must be a real array, got dtype {g.dtype}")
            try:
                g = np.broadcast_to(g, self.layout.target_shape)
            except ValueError:
                raise ValueError(
                    f"grad_output must have the loss's shape {self.layout.target_shape}, got {g.shape}"
                ) from None
            return np.require(g, dtype=np.float64, requirements=["C", "A"]).reshape(-1), 1.0
        g = 1.0 if grad_output is None else grad_output
        if np.ndim(g) != 0:
            raise ValueError(f"grad_output must be a scalar for reduction='{self.reduction}', got shape {np.shape(g)}")
        if np.asarray(g).dtype.kind not in "iuf":
            raise TypeError(f"grad_output must be a real number, got {type(g).__name__}")
        g = float(g)
        if self.reduction == "sum":
            return None, g
        with np.errstate(divide="ignore", invalid="ignore"):
            return None, float(np.float64(g) / np.float64(self.denominator))


class LossTargets(Reduction):
    """Validated targets (and weights, ignore_index, reduction) for logits of `layout`.

    kind         'index' or 'prob'
    target, ttype   index targets as the kernels read them (C-contiguous, native) and their
                 dtype code; None / 0 for probability targets
    prob         probability targets as given (np.asarray), or None
    weight, wsum class weights in the compute dtype (or None) and their float64 sum (C without)
    denominator  the 'mean' denominator, float
    """

    def __init__(self, target, layout, *, weight, ignore_index, reduction, cdtype, nthreads=1,
                 index_only=False):
        self.layout = layout
        self.reduction = check_reduction(reduction)
        self.ignore_index = check_ignore_index(ignore_index)
        self.weight = check_weight(weight, layout.C, cdtype)
        self.wsum = float(self.weight.sum(dtype=np.float64)) if self.weight is not None else float(layout.C)
        self.kind = "index" if index_only else target_kind(target, layout)
        self.target = self.prob = None
        self.ttype = 0
        if self.kind == "index":
            self.target, self.ttype = check_index_target(target, layout)
            bad, kept_weight, _ = _kernels.check_targets(_runtime.isa_id(), self.target, self.ttype, layout.C,
                                                         self.ignore_index, self.weight, nthreads)
            if bad >= 0:
                raise IndexError(f"Target {self.target.reshape(-1)[bad]} is out of bounds.")
            self.denominator = kept_weight  # torch: a weighted mean divides by the kept targets' weights
        else:
            if self.ignore_index >= 0:
                raise ValueError("ignore_index is not supported for floating point target (class probabilities)")
            self.prob = np.asarray(target)
            self.denominator = float(layout.rows)  # torch: the number of elements, whatever the weights
