"""K-dimensional inputs for the row kernels that want the classes last: blocks of whole outer
rows of (N, C, S) arrays, copied into C-contiguous (rows * S, C) arrays of a compute dtype, and
the per-element results written back with the classes on axis 1.

Used where a kernel has no strided-class (tile) form (kl_rows, shard_grad_rows), and where two
inputs of different dtypes must meet in one compute dtype. Memory: one block per array.
"""

import numpy as np

from . import _kernels
from ._validate import is_half


def class_last_blocks(arrays, N, C, S, dtype, block_logits):
    """Yields (n0, n1, blocks): for each block of outer rows [n0, n1), every (N, C, S) array of
    `arrays` as a C-contiguous ((n1 - n0) * S, C) array of `dtype` (a copy, except where the
    array already is that: S == 1, C-contiguous, of `dtype`)."""
    step = max(1, block_logits // max(C * S, 1))
    for n0 in range(0, N, step):
        n1 = min(N, n0 + step)
        yield n0, n1, [np.ascontiguousarray(np.moveaxis(a[n0:n1], 1, 2), dtype=dtype).reshape(-1, C)
                       for a in arrays]


def write_class_first(out3, n0, n1, block, S):
    """out3[n0:n1] = block, a ((n1 - n0) * S, C) result with the classes last, moved back to axis
    1 (2-byte outputs rounded by the kernels' rounding: NumPy's float32 -> float16 cast is slow
    on tiny, subnormal, values)."""
    C = block.shape[1]
    g = np.moveaxis(block.reshape(n1 - n0, S, C), 2, 1)
    if is_half(out3.dtype):
        narrowed = np.empty(g.shape, dtype=out3.dtype.newbyteorder("="))
        _kernels.narrow(np.ascontiguousarray(g), narrowed)
        g = narrowed
    out3[n0:n1] = g


def writable_c_view(out):
    """(array to write, array to copy it into afterwards or None): `out` itself if it is
    C-contiguous (its reshapes are views), else a C-contiguous temporary."""
    if out is None or out.flags.c_contiguous:
        return out, None
    return np.empty(out.shape, out.dtype), out
