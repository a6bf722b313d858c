"""NumPy's BLAS thread count, and a section of code in which that BLAS runs on one thread.

Why: the fused linear + cross-entropy forward (`_linear`) is fastest on several cores as one
pipeline per core, each computing the logits of its own vocabulary columns with a ONE-thread
matmul and reducing them at once, rather than multithreaded matmuls with a reduction between
them. Between two multithreaded matmuls the reduction runs while OpenBLAS's idle workers still
spin on the other cores (until its thread timeout, ~0.1 s), so only one core does it.

OpenBLAS's thread count is process-wide: `openblas_set_num_threads_local` is not thread-local
in NumPy's OpenBLAS 0.3.31 (pthreads), measured: after a call from another thread, the main
thread's matmuls ran on one thread too. So a section sets the count to 1 and restores it when
it ends. Sections that overlap (nested, or in several threads) share one count of open
sections under a lock: the first sets 1 and remembers the count before it, the last restores
it. While a section is open, every BLAS call of NumPy in the process runs on one thread.

Only NumPy's own OpenBLAS is known (`_gemm.numpy_blas_library`); with any other BLAS,
`blas_threads()` is 1 and the callers keep their one-pipeline path.
"""
from __future__ import annotations

import contextlib
import ctypes
import threading

from ._gemm import numpy_blas_library

__all__ = ["blas_threads", "single_threaded_blas"]

# (get, set) symbol names: NumPy's wheels (ILP64 scipy-openblas), 32-bit scipy-openblas, a plain
# OpenBLAS.
_SYMBOLS = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
            ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
            ("openblas_get_num_threads", "openblas_set_num_threads"))


def _load():
    lib = numpy_blas_library()
    for get_name, set_name in _SYMBOLS if lib is not None else ():
        get, put = getattr(lib, get_name, None), getattr(lib, set_name, None)
        if get is not None and put is not None:
            get.restype, get.argtypes = ctypes.c_int, []
            put.restype, put.argtypes = None, [ctypes.c_int]
            return get, put
    return None


_FUNCS = _load()
_lock = threading.Lock()
_open = 0        # sections open now
_restore = None  # the thread count before the first of them


def blas_threads():
    """Threads NumPy's matmuls run on now (1 where the BLAS is not NumPy's OpenBLAS)."""
    return max(1, int(_FUNCS[0]())) if _FUNCS is not None else 1


@contextlib.contextmanager
def single_threaded_blas():
    """NumPy's BLAS on one thread inside the block, process-wide (see the module docstring)."""
    global _open, _restore
    if _FUNCS is None:
        yield
        return
    get, put = _FUNCS
    with _lock:
        if _open == 0:
            _restore = int(get())
            put(1)
        _open += 1
    try:
        yield
    finally:
        with _lock:
            _open -= 1
            if _open == 0:
                put(_restore)
