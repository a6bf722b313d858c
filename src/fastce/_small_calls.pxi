# The small-call path of cross_entropy / cross_entropy_with_grad (included by _kernels.pyx).
#
# A NumPy training loop calls the loss thousands of times on small batches, where the general
# path's Python validation (about 40 calls) costs several times the kernel (measured:
# docs/performance/notes_kernels.md). This path serves the
# common case with a handful of C-level checks, and declines (returns None) on anything else,
# so that the general path (_functional.py) validates, raises its errors and computes:
#   x       an exact ndarray (N, C), N >= 1, C >= 1, float32 or float64, C-contiguous, aligned,
#           native byte order, smaller than the buffer cache's threshold (16 MiB)
#   target  an exact ndarray (N,) of any integer dtype, C-contiguous, aligned, native, and every
#           value in [0, C) or == ignore_index (else the general path raises IndexError)
#   options reduction 'none' | 'mean' | 'sum', ignore_index an int, num_threads None or an int
#           in [1, 1024]; the caller has checked that every other option is its default
# The kernels, the target check and the reduction (fastce_sum_f64) are the general path's, so
# the results are the same bits.

cdef object _thread_resolver = None


def set_thread_resolver(resolver):
    """The function (num_threads -> threads) the small-call path asks when the work is large
    enough for threads (fastce._runtime.resolve_threads)."""
    global _thread_resolver
    _thread_resolver = resolver


cdef inline int _reduction_code(object reduction):
    if reduction == "mean":
        return 1
    if reduction == "sum":
        return 2
    if reduction == "none":
        return 0
    return -1


@cython.cdivision(True)  # 1 / 0 is inf and 0 / 0 NaN, as in the general path
def small_call(int isa, x, target, reduction, ignore_index, bint with_grad, num_threads):
    """loss, or (loss, grad) with with_grad, for the common case above; None when it does not apply."""
    cdef cnp.ndarray xa, ta, row_out, out = None, loss_rows
    cdef int xtype, red, itemsize, ttype, nthreads = 1
    cdef int64_t N, C, ii, bad, kept, i
    cdef double wsum, total, D
    cdef cnp.npy_intp dims[2]
    cdef ce_args a
    if type(x) is not cnp.ndarray or type(target) is not cnp.ndarray or type(ignore_index) is not int:
        return None
    xa = <cnp.ndarray>x
    ta = <cnp.ndarray>target
    xtype = cnp.PyArray_TYPE(xa)
    if (cnp.PyArray_NDIM(xa) != 2 or cnp.PyArray_NDIM(ta) != 1
            or (xtype != cnp.NPY_FLOAT and xtype != cnp.NPY_DOUBLE)
            or not cnp.PyArray_ISCARRAY_RO(xa) or not cnp.PyArray_ISNOTSWAPPED(xa)
            or not cnp.PyArray_ISINTEGER(ta) or not cnp.PyArray_ISCARRAY_RO(ta)
            or not cnp.PyArray_ISNOTSWAPPED(ta)):
        return None
    N = cnp.PyArray_DIM(xa, 0)
    C = cnp.PyArray_DIM(xa, 1)
    itemsize = cnp.PyArray_ITEMSIZE(xa)
    if N == 0 or C == 0 or cnp.PyArray_DIM(ta, 0) != N or N * C * itemsize >= FASTCE_CACHE_MIN_BYTES:
        return None
    red = _reduction_code(reduction)
    if red < 0 or not -(2**63) <= ignore_index < 2**63:
        return None
    ii = ignore_index
    if N * C >= MIN_PARALLEL_WORK:
        if _thread_resolver is None:
            return None
        nthreads = _thread_resolver(num_threads)  # validates num_threads (raises as the general path)
    elif num_threads is not None and not (type(num_threads) is int and 1 <= num_threads <= 1024):
        return None
    ttype = TARGET_DTYPE_CODES[ta.dtype]  # native integer dtype: always there

    bad = fastce_check_targets(isa, cnp.PyArray_DATA(ta), ttype, N, C, ii, NULL, 0, 1, &wsum, &kept)
    if bad >= 0:
        return None
    row_out = cnp.PyArray_EMPTY(1, &N, cnp.NPY_DOUBLE, 0)
    if with_grad:
        dims[0] = N
        dims[1] = C
        out = cnp.PyArray_EMPTY(2, dims, xtype, 0)
    D = wsum  # the kept targets' count: the mean's denominator without weights
    a.N = N; a.C = C; a.S = 1
    a.x = cnp.PyArray_DATA(xa)
    a.target = cnp.PyArray_DATA(ta); a.ttype = ttype
    a.prob = NULL; a.weight = NULL; a.wsum = <double>C
    a.ignore_index = ii; a.eps = 0.0
    a.kind = FASTCE_KIND_INDEX
    a.outmode = FASTCE_OUT_GRAD if with_grad else FASTCE_OUT_NONE
    a.row_out = <double *>cnp.PyArray_DATA(row_out)
    a.row_lse = NULL; a.row_rank = NULL; a.zloss = 0.0
    a.out = cnp.PyArray_DATA(out) if with_grad else NULL
    a.stream_out = 0
    a.gout = NULL
    a.gscale = 1.0 / D if red == 1 else 1.0  # 'mean' of nothing: inf, as the general path
    a.parts = 1; a.seg = C; a.states = NULL
    _run(fastce_isa_table(isa), &a, FASTCE_DT_F64 if xtype == cnp.NPY_DOUBLE else FASTCE_DT_F32, nthreads)

    if red == 0:
        loss = row_out.astype(xa.dtype) if xtype == cnp.NPY_FLOAT else row_out
    else:
        total = fastce_sum_f64(<double *>cnp.PyArray_DATA(row_out), N)
        if red == 1:
            total = total / D if D != 0 else NAN
        loss = (_scalar_f64 if xtype == cnp.NPY_DOUBLE else _scalar_f32)(total)
    return (loss, out) if with_grad else loss


_scalar_f32 = np.float32
_scalar_f64 = np.float64
