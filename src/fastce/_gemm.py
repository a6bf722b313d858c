"""One in-place GEMM, ``c = a @ b + beta * c``, for the fused linear + cross-entropy.

The LM-head gradient pass needs three products per chunk of rows (logits, G @ W, and
grad_W += G.T @ x) with ``beta = 1`` for the last, written into existing arrays with no temporary.
``np.matmul(out=)`` has no beta, so a BLAS ?gemm is called directly:

1. NumPy's own BLAS through its CBLAS interface (ctypes), when it can be found: the library
   ``np.matmul`` itself runs on, so the forward's matmuls and the gradient pass share one
   library and one thread pool. (NumPy and SciPy wheels each bundle their own OpenBLAS, with
   their own thread pools whose idle workers spin after every call: alternating the two was up to
   100x slower on small chunks, 2 cores.) NumPy's is also the faster one here: G @ W for
   (256, 32000) @ (32000, 512) float32, 2 threads, took 25.7 ms through it (OpenBLAS 0.3.31)
   against 31-34 ms through SciPy's (0.3.30).
2. Otherwise SciPy's ?gemm on Fortran-order views (a C-contiguous (m, n) array is, unchanged, an
   F-contiguous (n, m) one), so that SciPy copies nothing and c is written in place.

Operands: a and b 2-D, C- or F-contiguous, aligned, of c's dtype (float32 or float64); c
C-contiguous. Shapes are the caller's to check (the linear head's are checked before the first
product).
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

__all__ = ["gemm", "backend"]

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # CBLAS enum values


def _numpy_blas_path():
    """Path of the shared BLAS library bundled with (and loaded by) NumPy, or None.

    Looked up in /proc/self/maps (Linux), restricted to NumPy's own directories, so that a
    system BLAS that NumPy does not use is never picked."""
    roots = [os.path.dirname(np.__file__)]
    roots.append(roots[0].rstrip(os.sep) + ".libs")  # wheels: site-packages/numpy.libs
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split(None, 5)[-1].strip() for line in f if "blas" in line.lower()}
    except OSError:
        return None
    for p in sorted(paths):
        if p.startswith(tuple(roots)) and os.path.basename(p).startswith(("libscipy_openblas", "libopenblas")):
            return p
    return None


def numpy_blas_library():
    """ctypes handle of the BLAS library NumPy loaded (see `_numpy_blas_path`), or None."""
    path = _numpy_blas_path()
    if path is None:
        return None
    try:
        return ctypes.CDLL(path)  # already loaded: no second copy; CDLL calls release the GIL
    except OSError:
        return None


def _load_cblas():
    """{dtype: (function, int type, scalar type)} for NumPy's cblas_?gemm, or None."""
    lib = numpy_blas_library()
    if lib is None:
        return None
    found = {}
    for dtype, letter, scalar in ((np.float32, "s", ctypes.c_float), (np.float64, "d", ctypes.c_double)):
        # ILP64 builds (NumPy's wheels) suffix their symbols with 64_ and take 64-bit ints.
        for name, itype in ((f"scipy_cblas_{letter}gemm64_", ctypes.c_int64), (f"cblas_{letter}gemm64_", ctypes.c_int64),
                            (f"scipy_cblas_{letter}gemm", ctypes.c_int), (f"cblas_{letter}gemm", ctypes.c_int)):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = None
                found[np.dtype(dtype)] = (fn, itype, scalar)
                break
    return found if len(found) == 2 else None


_CBLAS = _load_cblas() if os.environ.get("FASTCE_GEMM", "").lower() != "scipy" else None


def backend():
    """'numpy-cblas' or 'scipy': which BLAS `gemm` calls (FASTCE_GEMM=scipy forces the second)."""
    return "numpy-cblas" if _CBLAS is not None else "scipy"


def _row_major(a):
    """(transpose flag, leading dimension) of a C- or F-contiguous 2-D array read row-major."""
    if a.flags.c_contiguous:
        return _NO_TRANS, max(1, a.shape[1])
    return _TRANS, max(1, a.shape[0])  # F-contiguous: the transpose of a C-contiguous array


def _cblas_gemm(a, b, c, beta):
    fn, itype, scalar = _CBLAS[c.dtype]
    (m, k), n = a.shape, b.shape[1]
    ta, lda = _row_major(a)
    tb, ldb = _row_major(b)
    fn(_ROW_MAJOR, ta, tb, itype(m), itype(n), itype(k), scalar(1.0),
       ctypes.c_void_p(a.ctypes.data), itype(lda), ctypes.c_void_p(b.ctypes.data), itype(ldb),
       scalar(beta), ctypes.c_void_p(c.ctypes.data), itype(max(1, n)))


def _scipy_gemm(a, b, c, beta):
    # c.T = b.T @ a.T, every operand an F-order view: a C-contiguous x is x.T F-contiguous with no
    # transpose; an F-contiguous x is passed as itself with trans = 1.
    from scipy.linalg import blas

    f = blas.dgemm if c.dtype == np.float64 else blas.sgemm
    (bt, tb), (at, ta) = ((x.T, 0) if x.flags.c_contiguous else (x, 1) for x in (b, a))
    r = f(1.0, bt, at, beta=beta, c=c.T, trans_a=tb, trans_b=ta, overwrite_c=1)
    if r is not c.T and not np.may_share_memory(r, c):  # pragma: no cover - SciPy copied c
        c[...] = r.T


def gemm(a, b, c, beta=0.0):
    """c[...] = a @ b + beta * c, in place (c: C-contiguous; a, b: C- or F-contiguous)."""
    if c.size == 0:
        return
    if a.shape[1] == 0:  # an empty inner dimension: a product of nothing
        if beta == 0.0:
            c[...] = 0
        else:
            c *= beta
        return
    (_cblas_gemm if _CBLAS is not None else _scipy_gemm)(a, b, c, float(beta))
