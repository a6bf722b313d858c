"""Argument checking and conversion for the public functions.

Everything a user can get wrong is caught here, before any kernel runs, with a Python
exception worded like torch's. What comes out is what the kernels need: C-contiguous,
native-endian arrays of the compute dtype. Conversions copy only when the input's layout or
dtype requires it (see `as_compute`); they never modify what the caller passed.
"""
from __future__ import annotations

import numbers
import operator
from math import prod
from typing import Any, Iterable, Optional, Sequence, Tuple, cast

import numpy as np

from ._kernels import TARGET_DTYPE_CODES
from ._typing import NDArray, Reduction

#: The values ``reduction=`` accepts (``_typing.Reduction`` lists the same).
REDUCTIONS = ("none", "mean", "sum")


def check_int(value: object, name: str, expected: str = "an integer") -> int:
    """`value` as a Python int (anything with ``__index__``: int, NumPy integers, 0-d integer
    arrays), bool refused. TypeError ``"{name} must be {expected}, got {type}"`` otherwise."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be {expected}, got bool")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}") from None


def check_positive_int(value: object, name: str) -> Optional[int]:
    """None, or `value` as a positive Python int: the one check of the options that take
    ``None or a positive integer`` (chunk_size, num_threads). TypeError for a non-integer
    (bool included), ValueError for n <= 0, both worded
    ``"{name} must be None or a positive integer, got ..."``."""
    if value is None:
        return None
    expected = "None or a positive integer"
    n = check_int(value, name, expected)
    if n <= 0:
        raise ValueError(f"{name} must be {expected}, got {n}")
    return n


def is_bfloat16(dtype: np.dtype[Any]) -> bool:
    """ml_dtypes' bfloat16, recognized without importing ml_dtypes (its dtype has kind 'V')."""
    return dtype.itemsize == 2 and dtype.name == "bfloat16"


def is_half(dtype: np.dtype[Any]) -> bool:
    """float16 or bfloat16: stored in 2 bytes, computed in float32."""
    return dtype.itemsize == 2 and (dtype.kind == "f" or is_bfloat16(dtype))


def as_array(a: object, name: str) -> NDArray:
    """`a` as an ndarray, reading any CPU array that exports DLPack (torch tensors without grad,
    JAX arrays, CuPy-free CPU buffers) in place through np.from_dlpack. A bfloat16 torch tensor,
    which NumPy's DLPack does not take, is viewed as int16 and then as ml_dtypes' bfloat16 (no
    copy). An array on another device, or a tensor that requires grad, raises TypeError."""
    if isinstance(a, np.ndarray) or not hasattr(a, "__dlpack__"):
        return np.asarray(a)
    try:
        return np.from_dlpack(a)
    except BufferError as exc:  # a tensor that requires grad, or memory not on the CPU
        raise TypeError(f"{name} cannot be read in place ({exc}); fastce takes CPU arrays "
                        "(use .detach() / move it to the CPU)") from None
    except (RuntimeError, TypeError, ValueError):  # a dtype NumPy's DLPack does not know
        if str(getattr(a, "dtype", "")) == "torch.bfloat16":
            return _torch_bfloat16_view(a, name)
        return np.asarray(a)


def _torch_bfloat16_view(tensor: Any, name: str) -> NDArray:
    import sys

    try:
        import ml_dtypes
    except ImportError:
        raise TypeError(f"{name} is a bfloat16 tensor: reading it needs ml_dtypes (pip install ml_dtypes)") from None
    torch = sys.modules["torch"]  # the caller's torch, already imported
    return np.from_dlpack(tensor.view(torch.int16)).view(ml_dtypes.bfloat16)


def as_floating(a: object, name: str) -> NDArray:
    """`a` as an ndarray of float16, bfloat16, float32 or float64; TypeError for anything else."""
    arr = as_array(a, name)
    if not ((arr.dtype.kind == "f" and arr.dtype.itemsize in (2, 4, 8)) or is_bfloat16(arr.dtype)):
        raise TypeError(
            f"{name} must be a floating-point array (float16, bfloat16, float32 or float64), got dtype {arr.dtype}"
        )
    return arr


def compute_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """float16 and bfloat16 are computed in float32 (as torch does on the CPU); float32 and float64
    natively."""
    return np.dtype(np.float64) if dtype.itemsize == 8 else np.dtype(np.float32)


def as_compute(arr: NDArray, dtype: Any) -> NDArray:
    """C-contiguous, aligned, native-endian `arr` of `dtype`. Copies only if arr is not that
    already (non-contiguous, unaligned, byte-swapped, or another dtype, e.g. float16 -> float32)."""
    return np.require(arr, dtype=np.dtype(dtype).newbyteorder("="), requirements=["C", "A"])


def check_reduction(reduction: object) -> Reduction:
    """`reduction` if it is one of REDUCTIONS, else ValueError."""
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"{reduction!r} is not a valid value for reduction; expected 'none', 'mean' or 'sum'")
    return cast(Reduction, reduction)


def _real_option(value: object, name: str) -> float:
    """A real-number option as a float: 0-d arrays are unwrapped; str, None, arrays are refused."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    return float(value)


def check_label_smoothing(label_smoothing: object) -> float:
    eps = _real_option(label_smoothing, "label_smoothing")
    if not 0.0 <= eps <= 1.0:  # also rejects NaN
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    return eps


def check_z_loss(z_loss: object) -> float:
    """z of the z-loss term z * lse^2: a finite number >= 0 (0 turns it off)."""
    z = _real_option(z_loss, "z_loss")
    if not (np.isfinite(z) and z >= 0.0):
        raise ValueError(f"z_loss must be a finite number >= 0. Got: {z_loss}")
    return z


def check_softcap(softcap: object) -> Optional[float]:
    """The cap of cap * tanh(x / cap): None (off) or a finite number > 0."""
    if softcap is None:
        return None
    cap = _real_option(softcap, "softcap")
    if not (np.isfinite(cap) and cap > 0.0):
        raise ValueError(f"softcap must be None or a finite number > 0. Got: {softcap}")
    return cap


def check_ignore_index(ignore_index: object) -> int:
    """Any integer that fits in int64 (it need not be negative, nor a class)."""
    value = check_int(ignore_index, "ignore_index")
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"ignore_index must fit in a 64-bit integer, got {value}")
    return value


class Layout:
    """How an input of shape (N, C, d1..dk), or (C,) unbatched, maps to the kernels' (N, C, S)."""

    def __init__(self, shape: Sequence[int], class_axis_name: str = "input") -> None:
        if len(shape) == 0:
            raise ValueError(f"{class_axis_name} must have at least 1 dimension, got a 0-d array")
        self.shape = tuple(shape)
        self.unbatched = len(shape) == 1
        self.C = shape[0] if self.unbatched else shape[1]
        self.N = 1 if self.unbatched else shape[0]
        spatial = () if self.unbatched else tuple(shape[2:])
        self.S = prod(spatial)
        # Shape of index targets and of the per-element loss.
        self.target_shape = () if self.unbatched else (self.N,) + spatial
        if self.C == 0:
            raise ValueError(f"{class_axis_name} has no classes: expected C > 0 in shape {self.shape}")

    @property
    def rows(self) -> int:
        return self.N * self.S


def check_index_target(target: object, layout: Layout) -> Tuple[NDArray, int]:
    """Validates class-index targets' dtype and shape; returns a native-endian C-contiguous view
    (no copy for a contiguous native array of any integer dtype) and its dtype code."""
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"class-index targets must be integers, got dtype {t.dtype}")
    if t.shape != layout.target_shape:
        raise ValueError(
            f"Expected target of shape {layout.target_shape} for input of shape {layout.shape}, got {t.shape}"
        )
    t = np.require(t, dtype=t.dtype.newbyteorder("="), requirements=["C", "A"])
    return t, TARGET_DTYPE_CODES[t.dtype]


def target_kind(target: object, layout: Layout) -> str:
    """'index' or 'prob', following torch: a target of input's shape holds class probabilities
    (and must be floating); otherwise it holds class indices (and must be integer)."""
    t = np.asarray(target)
    if is_bfloat16(t.dtype):  # class probabilities in bfloat16 (kind 'V')
        if t.shape == layout.shape:
            return "prob"
        raise TypeError(f"class-index targets must be integers, got dtype {t.dtype}")
    if t.dtype == np.bool_ or t.dtype.kind not in "iuf":
        raise TypeError(
            "target must be an integer array of class indices or a floating-point array of class "
            f"probabilities, got dtype {t.dtype}"
        )
    if t.shape == layout.shape:
        if t.dtype.kind != "f":
            raise TypeError(f"Expected floating point type for target with class probabilities, got {t.dtype}")
        return "prob"
    if t.dtype.kind == "f":
        if t.shape == layout.target_shape:
            raise TypeError(f"class-index targets must be integers, got dtype {t.dtype}")
        raise ValueError(
            f"Expected target of shape {layout.shape} (class probabilities) or {layout.target_shape} "
            f"(class indices) for input of shape {layout.shape}, got {t.shape}"
        )
    return "index"


def check_weight(weight: object, C: int, dtype: Any) -> Optional[NDArray]:
    if weight is None:
        return None
    w = as_array(weight, "weight")
    if w.dtype.kind != "f" and not is_bfloat16(w.dtype):
        raise TypeError(f"weight must be a floating-point array, got dtype {w.dtype}")
    if w.shape != (C,):
        raise ValueError(f"weight must be a 1-D array of length C = {C} (one weight per class), got shape {w.shape}")
    return as_compute(w, dtype)


def check_out(out: object, shape: Sequence[int], dtype: np.dtype[Any], input_arr: NDArray,
              others: Iterable[Tuple[str, object]], wider: Optional[np.dtype[Any]] = None) -> bool:
    """Validates a user `out=` buffer. It may be `input` itself (in-place), but must not overlap
    `input` partially, nor any array in `others` (targets, weights). Its dtype is `dtype`, or
    `wider` where the caller accepts that too (float32 gradients of 2-byte logits)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"out must have the input's shape {tuple(shape)}, got {out.shape}")
    allowed = [dtype.newbyteorder("=")] + ([wider] if wider is not None else [])  # (np.dtype(None) is float64)
    if not any(out.dtype.newbyteorder("=") == d for d in allowed):
        also = f" (or {wider})" if wider is not None else ""
        raise TypeError(f"out must have the input's dtype {dtype}{also}, got {out.dtype}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    for name, arr in others:
        if isinstance(arr, np.ndarray) and np.shares_memory(out, arr):
            raise ValueError(f"out overlaps {name}")
    in_place = _same_memory(out, input_arr)
    if not in_place and np.shares_memory(out, input_arr):
        raise ValueError("out overlaps input without being input itself; use out=input for in-place")
    return in_place


def _same_memory(a: NDArray, b: object) -> bool:
    return (
        isinstance(b, np.ndarray)
        and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.strides == b.strides
        and a.shape == b.shape
        and a.dtype == b.dtype
    )


def normalize_axis(axis: object, ndim: int) -> int:
    try:
        ax = operator.index(axis)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}") from None
    if not -ndim <= ax < ndim:
        raise np.exceptions.AxisError(ax, ndim) if hasattr(np, "exceptions") else IndexError(
            f"axis {ax} is out of bounds for array of dimension {ndim}")
    return ax % ndim
