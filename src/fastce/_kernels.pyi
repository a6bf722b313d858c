"""Types of the Cython module ``fastce._kernels`` (_kernels.pyx and _small_calls.pxi).

Not public API: the Python layer validates every argument before calling these, so the array
parameters are the C-contiguous, native-endian NumPy arrays the .pyx documents. Checked against
the compiled module by ``python -m mypy.stubtest fastce`` (tests/test_typing.py).
"""
from typing import Any, Callable, Dict, Literal, Optional, Tuple, TypeVar, Union, overload

import numpy as np
import numpy.typing as npt

_T = TypeVar("_T")
_Array = npt.NDArray[Any]
_Loss = Union[np.floating[Any], _Array]

# ---- the codes of include/fastce/common.h ----
ISA_NAMES: Tuple[str, ...]
KIND_LSE: int
KIND_INDEX: int
KIND_PROB: int
OUT_NONE: int
OUT_GRAD: int
OUT_SOFTMAX: int
OUT_LOGSOFTMAX: int
TARGET_DTYPE_CODES: Dict[np.dtype[Any], int]
MATH_FUNCS: Tuple[str, ...]

# ---- the buffer cache (include/fastce/buffer_cache.h) ----
CACHE_MIN_BYTES: int
CACHE_SLOTS: int
_cache_capsule: object

__test__: Dict[str, str]  # Cython's doctest table

_scalar_f32: type[np.float32]
_scalar_f64: type[np.float64]

def isa_compiled(isa: int) -> bool: ...
def isa_runnable(isa: int) -> bool: ...
def openmp_enabled() -> bool: ...
def omp_max_threads() -> int: ...
def check_targets(
    isa: int,
    target: _Array,
    ttype: int,
    C: int,
    ignore_index: int,
    weight: Optional[_Array],
    nthreads: int = 1,
) -> Tuple[int, float, int]: ...
def probe_read(x: _Array, nthreads: int = 1) -> float: ...
def probe_copy(src: _Array, dst: _Array, nthreads: int = 1) -> None: ...
def narrow(src: _Array, dst: _Array) -> None: ...
def sum_f64(a: npt.ArrayLike) -> float: ...
def ce_run(
    isa: int,
    x: _Array,
    N: int,
    C: int,
    S: int,
    kind: int,
    outmode: int,
    *,
    target: Optional[_Array] = None,
    ttype: int = 0,
    prob: Optional[_Array] = None,
    weight: Optional[_Array] = None,
    wsum: float = 0.0,
    ignore_index: int = -100,
    eps: float = 0.0,
    row_out: Optional[_Array] = None,
    out: Optional[_Array] = None,
    gout: Optional[_Array] = None,
    gscale: float = 1.0,
    zloss: float = 0.0,
    row_lse: Optional[_Array] = None,
    row_rank: Optional[_Array] = None,
    nthreads: int = 1,
) -> None: ...
def kl_run(
    isa: int,
    a: _Array,
    b: _Array,
    kl: _Array,
    *,
    lse_a: Optional[_Array] = None,
    lse_b: Optional[_Array] = None,
    argmax_a: Optional[_Array] = None,
    rank_b: Optional[_Array] = None,
    out: Optional[_Array] = None,
    gout: Optional[_Array] = None,
    gscale: float = 1.0,
    nthreads: int = 1,
) -> None: ...
def shard_grad_run(
    isa: int,
    x: _Array,
    out: _Array,
    lse: Optional[_Array],
    A: Optional[_Array],
    B: Optional[_Array],
    fix: Optional[_Array],
    tcol: Optional[_Array],
    weight: Optional[_Array] = None,
    nthreads: int = 1,
) -> None: ...
def storage_code(dtype: np.dtype[Any]) -> int: ...
def vector_math(isa: int, func: str, x: _Array) -> _Array: ...
def allocate_cached(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T: ...
def cache_set_limit(nbytes: int) -> None: ...
def cache_release() -> int: ...
def cache_stats() -> Dict[str, int]: ...

# ---- _small_calls.pxi ----
def set_thread_resolver(resolver: Optional[Callable[[Any], int]]) -> None: ...
@overload
def small_call(
    isa: int,
    x: object,
    target: object,
    reduction: object,
    ignore_index: object,
    with_grad: Literal[False],
    num_threads: object,
) -> Optional[_Loss]: ...
@overload
def small_call(
    isa: int,
    x: object,
    target: object,
    reduction: object,
    ignore_index: object,
    with_grad: Literal[True],
    num_threads: object,
) -> Optional[Tuple[_Loss, _Array]]: ...
@overload
def small_call(
    isa: int,
    x: object,
    target: object,
    reduction: object,
    ignore_index: object,
    with_grad: bool,
    num_threads: object,
) -> Union[None, _Loss, Tuple[_Loss, _Array]]: ...
