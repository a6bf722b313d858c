# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Cython bridge: arrays -> C pointers, the OpenMP loops, the GIL released.

The Python layer (_functional.py) has already validated every argument and produced
C-contiguous, native-endian arrays of the compute dtype; nothing here raises on user input.
Work takes one of five paths (see ce_run):
  * score: the scoring kernel, whole rows, each with its target's rank (score_rows).
  * tiles: S > 1 (K-dimensional input): groups of vector-width positions, class axis strided.
  * split: S == 1 and fewer rows than threads: each row is cut into class segments; the segments'
           partial states (max, sum-exp, target logit, sums) are merged exactly, then pass 2
           runs per segment. This is the same mergeable state a vocab-parallel shard produces.
  * small: S == 1 and C <= FASTCE_SMALL_C: transposed tiles of vector-width rows (small_rows).
  * rows:  S == 1 otherwise: blocks of whole rows per thread, both passes fused per row.

The codes of include/fastce/common.h and build_table.h (ISAs, kinds, out modes, target dtypes)
are exported from here (ISA_NAMES, KIND_*, OUT_*, TARGET_*), so the Python layer never copies
them by hand.
"""
cimport cython
from cython.parallel cimport prange
from libc.math cimport NAN
from libc.stdint cimport int64_t, uint16_t
cimport numpy as cnp
import numpy as np

cnp.import_array()

cdef extern from "fastce/dispatch.h" nogil:
    enum:
        FASTCE_ISA_COUNT
        FASTCE_I8, FASTCE_I16, FASTCE_I32, FASTCE_I64, FASTCE_U8, FASTCE_U16, FASTCE_U32, FASTCE_U64
        FASTCE_KIND_LSE, FASTCE_KIND_INDEX, FASTCE_KIND_PROB
        FASTCE_OUT_NONE, FASTCE_OUT_GRAD, FASTCE_OUT_SOFTMAX, FASTCE_OUT_LOGSOFTMAX
        FASTCE_DT_F32, FASTCE_DT_F64, FASTCE_DT_F16, FASTCE_DT_BF16, FASTCE_DT_COUNT
    ctypedef struct ce_state:
        double m, s, xt, ref, sx, swy, swyx, gt
    ctypedef struct ce_args:
        int64_t N, C, S
        const void *x
        const void *target
        int ttype
        const void *prob
        const void *weight
        double wsum
        int64_t ignore_index
        double eps
        int kind, outmode
        double *row_out
        double *row_lse
        double *row_rank
        double zloss
        void *out
        int stream_out
        const double *gout
        double gscale
        int64_t parts, seg
        ce_state *states
    ctypedef void (*ce_range_fn)(const ce_args *a, int64_t i0, int64_t i1) noexcept nogil
    ctypedef struct kl_args:
        int64_t N, C
        const void *a
        const void *b
        double *kl
        double *lse_a
        double *lse_b
        int64_t *argmax_a
        double *rank_b
        void *out
        const double *gout
        double gscale
    ctypedef void (*kl_range_fn)(const kl_args *a, int64_t i0, int64_t i1) noexcept nogil
    ctypedef struct shard_args:
        int64_t N, C
        const void *x
        void *out
        const double *lse
        const double *A
        const double *B
        const double *fix
        const int64_t *tcol
        const void *weight
    ctypedef void (*shard_range_fn)(const shard_args *a, int64_t i0, int64_t i1) noexcept nogil
    ctypedef struct ce_kernels:
        ce_range_fn rows, seg_stats, merge_rows, seg_out, tiles, small_rows, score_rows
        kl_range_fn kl_rows
        shard_range_fn shard_grad_rows
        int64_t vector_width
        void (*math_array)(const void *x, void *y, int64_t n, int func) noexcept nogil
    ctypedef struct ce_isa_table:
        const char *name
        const ce_kernels *kernels[FASTCE_DT_COUNT]
    const ce_isa_table *fastce_isa_table(int isa)
    int fastce_isa_runnable(int isa)
    const char *fastce_isa_name(int isa)
    int fastce_openmp_enabled()
    int fastce_omp_max_threads()
    int FASTCE_SMALL_C
    int64_t fastce_check_targets(int isa, const void *target, int ttype, int64_t n, int64_t C,
                                 int64_t ignore_index, const void *weight, int wdouble,
                                 int nthreads, double *weight_sum, int64_t *kept)
    double fastce_sum_f64(const double *v, int64_t n)
    double fastce_probe_read(const float *x, int64_t n, int nthreads)
    void fastce_probe_copy(const float *src, float *dst, int64_t n, int nthreads)

# Below this many logits a call runs on one thread: a parallel region costs more than it saves.
cdef int64_t MIN_PARALLEL_WORK = 32768
# A row is split across threads only when each segment keeps at least this many classes.
cdef int64_t MIN_SPLIT_SEGMENT = 4096
# Outputs at least this large (and not written over the input) use non-temporal stores: they
# cannot stay in cache anyway, and streaming saves the read-for-ownership of every line.
cdef int64_t MIN_STREAM_BYTES = 32 * 1024 * 1024

# ---- the codes of include/fastce/common.h and build_table.h, for the Python layer ----
# The rows of the build table, by code (worst to best).
ISA_NAMES = tuple(fastce_isa_name(i).decode("ascii") for i in range(FASTCE_ISA_COUNT))
KIND_LSE, KIND_INDEX, KIND_PROB = FASTCE_KIND_LSE, FASTCE_KIND_INDEX, FASTCE_KIND_PROB
OUT_NONE, OUT_GRAD = FASTCE_OUT_NONE, FASTCE_OUT_GRAD
OUT_SOFTMAX, OUT_LOGSOFTMAX = FASTCE_OUT_SOFTMAX, FASTCE_OUT_LOGSOFTMAX
# Integer target dtypes, read in place by the kernels.
TARGET_DTYPE_CODES = {
    np.dtype(np.int8): FASTCE_I8, np.dtype(np.int16): FASTCE_I16, np.dtype(np.int32): FASTCE_I32,
    np.dtype(np.int64): FASTCE_I64, np.dtype(np.uint8): FASTCE_U8, np.dtype(np.uint16): FASTCE_U16,
    np.dtype(np.uint32): FASTCE_U32, np.dtype(np.uint64): FASTCE_U64,
}

def isa_compiled(int isa):
    return fastce_isa_table(isa) != NULL

def isa_runnable(int isa):
    return bool(fastce_isa_runnable(isa))

def openmp_enabled():
    return bool(fastce_openmp_enabled())

def omp_max_threads():
    return fastce_omp_max_threads()

cdef inline const void *_ptr(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)

def check_targets(int isa, cnp.ndarray target, int ttype, int64_t C, int64_t ignore_index, weight,
                  int nthreads=1):
    """Returns (first bad position or -1, sum of kept targets' weights, number kept), checked
    on up to nthreads threads (the totals do not depend on their number), by `isa`'s kernels."""
    cdef double wsum = 0.0
    cdef int64_t kept = 0, bad
    cdef const void *t = cnp.PyArray_DATA(target)
    cdef const void *w = _ptr(weight)
    cdef int wdouble = weight is not None and weight.dtype.itemsize == 8
    cdef int64_t n = target.size
    with nogil:
        bad = fastce_check_targets(isa, t, ttype, n, C, ignore_index, w, wdouble, nthreads, &wsum, &kept)
    return bad, wsum, kept

def probe_read(cnp.ndarray x not None, int nthreads=1):
    """Roofline probe for fastce bench: one streaming read of a C-contiguous float32 array on
    nthreads threads (GIL released); returns the sum of its values."""
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        raise TypeError("probe_read takes a C-contiguous float32 array")
    cdef const float *p = <const float *>cnp.PyArray_DATA(x)
    cdef int64_t n = x.size
    cdef double r
    with nogil:
        r = fastce_probe_read(p, n, nthreads)
    return r

def probe_copy(cnp.ndarray src not None, cnp.ndarray dst not None, int nthreads=1):
    """Roofline probe for fastce bench: dst[...] = src, ordinary loads and stores, nthreads
    threads (GIL released); both C-contiguous float32 of one size."""
    if (src.dtype != np.float32 or dst.dtype != np.float32 or not src.flags.c_contiguous
            or not dst.flags.c_contiguous or src.size != dst.size or not dst.flags.writeable):
        raise TypeError("probe_copy takes two C-contiguous float32 arrays of one size")
    cdef const float *s = <const float *>cnp.PyArray_DATA(src)
    cdef float *d = <float *>cnp.PyArray_DATA(dst)
    cdef int64_t n = src.size
    with nogil:
        fastce_probe_copy(s, d, n, nthreads)

cdef extern from "fastce/half.h" nogil:
    uint16_t fastce_f32_to_f16(float f)
    uint16_t fastce_f32_to_bf16(float f)

def narrow(cnp.ndarray src not None, cnp.ndarray dst not None):
    """dst[...] = src, float32 to float16 or bfloat16, rounding to nearest even (NaN kept, no
    slow path for subnormals). Both C-contiguous, one size."""
    cdef int code = storage_code(dst.dtype)
    if (src.dtype != np.float32 or not src.flags.c_contiguous or not dst.flags.c_contiguous
            or src.size != dst.size or code not in (FASTCE_DT_F16, FASTCE_DT_BF16)):
        raise TypeError("narrow takes a C-contiguous float32 array and a float16 / bfloat16 one of its size")
    cdef const float *s = <const float *>cnp.PyArray_DATA(src)
    cdef uint16_t *d = <uint16_t *>cnp.PyArray_DATA(dst)
    cdef int64_t i, n = src.size
    with nogil:
        if code == FASTCE_DT_F16:
            for i in range(n):
                d[i] = fastce_f32_to_f16(s[i])
        else:
            for i in range(n):
                d[i] = fastce_f32_to_bf16(s[i])

def sum_f64(a):
    """The sum of a float64 array's values, pairwise and in a fixed order: the one reduction
    of per-row losses (the general path and the small-call path give the same bits)."""
    cdef cnp.ndarray arr = np.ascontiguousarray(a, dtype=np.float64)
    return fastce_sum_f64(<const double *>cnp.PyArray_DATA(arr), arr.size)

ctypedef fused kernel_args:  # the argument structs of the kernels' range functions
    ce_args
    kl_args
    shard_args


cdef void _parallel(void (*fn)(const kernel_args *, int64_t, int64_t) noexcept nogil,
                    const kernel_args *a, int64_t items, int64_t per_block,
                    int nthreads) noexcept nogil:
    """fn over [0, items) in blocks of per_block items, on nthreads threads: the one thread
    team of every kernel call."""
    cdef int64_t nblocks = (items + per_block - 1) // per_block
    cdef int64_t b, i0, i1
    if nthreads > nblocks:  # never start threads that would have no block to run
        nthreads = <int>nblocks
    if nthreads <= 1 or nblocks <= 1:
        fn(a, 0, items)
        return
    for b in prange(nblocks, num_threads=nthreads, schedule="dynamic", chunksize=1):
        i0 = b * per_block
        i1 = i0 + per_block
        if i1 > items:
            i1 = items
        fn(a, i0, i1)

cdef int64_t _per_block(int64_t items, int nthreads) noexcept nogil:
    # Several blocks per thread so a slow core (a noisy neighbour) does not hold the others up.
    cdef int64_t want = 8 * nthreads
    return max(<int64_t>1, (items + want - 1) // want)

def ce_run(int isa, cnp.ndarray x, int64_t N, int64_t C, int64_t S, int kind, int outmode, *,
           target=None, int ttype=0, prob=None, weight=None, double wsum=0.0,
           int64_t ignore_index=-100, double eps=0.0, row_out=None, out=None, gout=None,
           double gscale=1.0, double zloss=0.0, row_lse=None, row_rank=None, int nthreads=1):
    """Runs the kernels of `isa` on x viewed as (N, C, S). See common.h for the fields.
    With row_rank (index targets, S == 1, no weight/smoothing/gradient), the scoring kernel runs."""
    cdef ce_args a
    a.N = N; a.C = C; a.S = S
    a.x = cnp.PyArray_DATA(x)
    a.target = _ptr(target); a.ttype = ttype
    a.prob = _ptr(prob)
    a.weight = _ptr(weight); a.wsum = wsum
    a.ignore_index = ignore_index; a.eps = eps
    a.kind = kind; a.outmode = outmode
    a.row_out = <double *>_ptr(row_out)
    a.row_lse = <double *>_ptr(row_lse)
    a.row_rank = <double *>_ptr(row_rank)
    a.zloss = zloss
    a.out = <void *>_ptr(out)
    a.stream_out = out is not None and a.out != a.x and out.nbytes >= MIN_STREAM_BYTES
    a.gout = <const double *>_ptr(gout)
    a.gscale = gscale
    a.parts = 1; a.seg = C; a.states = NULL
    _run(fastce_isa_table(isa), &a, storage_code(x.dtype), nthreads)


def kl_run(int isa, cnp.ndarray a, cnp.ndarray b, cnp.ndarray kl, *, lse_a=None, lse_b=None,
           argmax_a=None, rank_b=None, out=None, gout=None, double gscale=1.0,
           int nthreads=1):
    """kl_rows of `isa` over the row pairs of a (reference) and b (model), both C-contiguous
    (N, C) arrays of one storage dtype; per-row float64 results (int64 for a's argmax) into the
    arrays given, the gradient with respect to b into `out` (b's shape and dtype). See kl_impl.h."""
    cdef kl_args k
    k.N = a.shape[0]; k.C = a.shape[1]
    k.a = cnp.PyArray_DATA(a); k.b = cnp.PyArray_DATA(b)
    k.kl = <double *>cnp.PyArray_DATA(kl)
    k.lse_a = <double *>_ptr(lse_a); k.lse_b = <double *>_ptr(lse_b)
    k.argmax_a = <int64_t *>_ptr(argmax_a)
    k.rank_b = <double *>_ptr(rank_b)
    k.out = <void *>_ptr(out)
    k.gout = <const double *>_ptr(gout); k.gscale = gscale
    _rows_parallel(fastce_isa_table(isa).kernels[storage_code(a.dtype)].kl_rows, &k, k.N, k.C, nthreads)


cdef void _rows_parallel(void (*fn)(const kernel_args *, int64_t, int64_t) noexcept nogil,
                         const kernel_args *k, int64_t N, int64_t C, int nthreads) noexcept:
    """fn over rows [0, N) in blocks, as the one-stream kernels (one thread for small work;
    several blocks per thread), with the GIL released."""
    if N == 0:
        return
    if N * C < MIN_PARALLEL_WORK:
        nthreads = 1
    with nogil:
        _parallel(fn, k, N, _per_block(N, nthreads), nthreads)


def shard_grad_run(int isa, cnp.ndarray x, cnp.ndarray out, lse, A, B, fix, tcol, weight=None, int nthreads=1):
    """shard_grad_rows of `isa` over the (N, C) shard x (C-contiguous, a storage dtype) into out
    (x's shape and dtype, C-contiguous, may be x); per-row float64 lse, A, B, fix and int64 tcol;
    weight (C,) in the compute dtype or None. See shard_impl.h."""
    cdef shard_args k
    k.N = x.shape[0]; k.C = x.shape[1]
    k.x = cnp.PyArray_DATA(x); k.out = cnp.PyArray_DATA(out)
    k.lse = <const double *>_ptr(lse); k.A = <const double *>_ptr(A); k.B = <const double *>_ptr(B)
    k.fix = <const double *>_ptr(fix); k.tcol = <const int64_t *>_ptr(tcol)
    k.weight = _ptr(weight)
    _rows_parallel(fastce_isa_table(isa).kernels[storage_code(x.dtype)].shard_grad_rows, &k, k.N, k.C, nthreads)


def storage_code(dtype):
    """The kernels' code (FASTCE_DT_*) of logits stored as `dtype`: float32, float64, float16 or
    bfloat16 (ml_dtypes', recognized by name and size without importing ml_dtypes)."""
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        return {4: FASTCE_DT_F32, 8: FASTCE_DT_F64, 2: FASTCE_DT_F16}[dtype.itemsize]
    if dtype.itemsize == 2 and dtype.name == "bfloat16":
        return FASTCE_DT_BF16
    raise TypeError(f"the kernels do not read dtype {dtype}")


cdef int _run(const ce_isa_table *table, ce_args *a, int dt, int nthreads) except -1:
    """The kernels of storage dtype dt (FASTCE_DT_*) over a->(N, C, S) on up to nthreads threads
    (fewer for small work), by one of the five paths of the module docstring."""
    cdef const ce_kernels *k = table.kernels[dt]
    cdef cnp.ndarray states_buf
    cdef int64_t N = a.N, C = a.C, S = a.S
    cdef int64_t parts = 1, seg = C, items, per_block
    if N * S == 0:  # no rows (an empty batch or an empty spatial dimension): nothing to do
        return 0
    if N * C * S < MIN_PARALLEL_WORK:
        nthreads = 1

    if a.row_rank != NULL:  # scoring: whole rows, each with its target's rank
        with nogil:
            _parallel(k.score_rows, a, N, _per_block(N, nthreads), nthreads)
        return 0

    if S > 1:
        items = N * ((S + k.vector_width - 1) // k.vector_width)
        with nogil:
            _parallel(k.tiles, a, items, _per_block(items, nthreads), nthreads)
        return 0

    if nthreads > 1 and N < 4 * nthreads and C >= 2 * MIN_SPLIT_SEGMENT:
        # Few long rows (fewer than 4 per thread, so whole rows would leave cores idle or
        # unbalanced): split each row into `parts` segments of `seg` classes (a multiple of 64,
        # so segments start on cache-line boundaries), at least MIN_SPLIT_SEGMENT long.
        parts = min((4 * nthreads + N - 1) // N, C // MIN_SPLIT_SEGMENT)
        seg = ((C + parts - 1) // parts + 63) // 64 * 64
        parts = (C + seg - 1) // seg
    if parts == 1 and C <= FASTCE_SMALL_C:
        # Short rows: transposed tiles of vector_width rows; blocks hold whole tiles.
        per_block = _per_block(N, nthreads)
        per_block = (per_block + k.vector_width - 1) // k.vector_width * k.vector_width
        with nogil:
            _parallel(k.small_rows, a, N, per_block, nthreads)
        return 0
    if parts == 1:
        with nogil:
            _parallel(k.rows, a, N, _per_block(N, nthreads), nthreads)
        return 0

    states_buf = np.zeros(N * parts * (sizeof(ce_state) // sizeof(double)), dtype=np.float64)
    a.parts = parts; a.seg = seg
    a.states = <ce_state *>cnp.PyArray_DATA(states_buf)
    with nogil:
        _parallel(k.seg_stats, a, N * parts, 1, nthreads)
        k.merge_rows(a, 0, N)
        if a.outmode != 0:
            _parallel(k.seg_out, a, N * parts, 1, nthreads)
    return 0


#: vector_math's functions, by their FASTCE_MATH_* number (common.h)
MATH_FUNCS = ("exp", "log", "exp_flush", "exp_flush_bounded", "exp_floored", "exp_floored_add")


def vector_math(int isa, str func, cnp.ndarray x not None):
    """A function of MATH_FUNCS over a contiguous float32/float64 array through `isa`'s vector
    math (the code the kernels inline): exp, log, exp_flush (the kernels' exp: +0 where exp is
    below ~FLT_MIN / DBL_MIN), exp_flush_bounded (exp_flush's bits for x <= 88, any value
    above) or exp_floored (the sums' exp: as exp_flush_bounded, within |x| 2.75e-9 relative of
    it on AVX2, and +0 or its value at the flush threshold below it) or exp_floored_add
    (1 + exp_floored(x), as the sums' step adds a term to a sum that holds 1). For the accuracy
    tests and fastce bench; not part of the public API."""
    cdef const ce_isa_table *table = fastce_isa_table(isa)
    cdef const ce_kernels *k = table.kernels[FASTCE_DT_F64 if x.dtype.itemsize == 8 else FASTCE_DT_F32]
    cdef cnp.ndarray y
    cdef const void *px
    cdef void *py
    cdef int64_t n = x.size
    cdef int which
    if func not in MATH_FUNCS:
        raise ValueError(f"func must be one of {MATH_FUNCS}, got {func!r}")
    which = MATH_FUNCS.index(func)
    if not x.flags.c_contiguous or x.dtype.kind != "f" or x.dtype.itemsize not in (4, 8) or not x.dtype.isnative:
        raise TypeError("x must be a C-contiguous native float32 or float64 array")
    y = np.empty_like(x)
    px = cnp.PyArray_DATA(x)
    py = cnp.PyArray_DATA(y)
    with nogil:
        k.math_array(px, py, n, which)
    return y


# ---- the cache of large output buffers (include/fastce/buffer_cache.h) ----
# fastce's large outputs are allocated with NumPy's allocator hooks pointed, for that one
# allocation, at the C cache: the arrays are ordinary ndarrays owning their data, and NumPy
# hands their memory back to the cache when they are released.
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport strncpy
from cpython.pycapsule cimport PyCapsule_New

cdef extern from "fastce/buffer_cache.h" nogil:
    ctypedef struct fastce_cache_stats:
        size_t limit, cached_bytes, cached_blocks
        uint64_t hits, misses
    void *fastce_cache_malloc(void *ctx, size_t size)
    void *fastce_cache_calloc(void *ctx, size_t nelem, size_t elsize)
    void *fastce_cache_realloc(void *ctx, void *ptr, size_t new_size)
    void fastce_cache_free(void *ctx, void *ptr, size_t size)
    void fastce_cache_set_limit(size_t nbytes)
    size_t fastce_cache_release()
    fastce_cache_stats fastce_cache_get_stats()
    size_t FASTCE_CACHE_MIN_BYTES
    int FASTCE_CACHE_SLOTS

cdef extern from "numpy/arrayobject.h":
    ctypedef struct PyDataMemAllocator:
        void *ctx
        void *(*malloc)(void *ctx, size_t size) noexcept nogil
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize) noexcept nogil
        void *(*realloc)(void *ctx, void *ptr, size_t new_size) noexcept nogil
        void (*free)(void *ctx, void *ptr, size_t size) noexcept nogil
    ctypedef struct PyDataMem_Handler:
        char name[127]
        uint8_t version
        PyDataMemAllocator allocator
    object PyDataMem_SetHandler(object handler)

cdef PyDataMem_Handler _cache_handler
strncpy(_cache_handler.name, b"fastce_buffer_cache", 126)
_cache_handler.version = 1
_cache_handler.allocator.ctx = NULL
_cache_handler.allocator.malloc = fastce_cache_malloc
_cache_handler.allocator.calloc = fastce_cache_calloc
_cache_handler.allocator.realloc = fastce_cache_realloc
_cache_handler.allocator.free = fastce_cache_free
_cache_capsule = PyCapsule_New(&_cache_handler, "mem_handler", NULL)

CACHE_MIN_BYTES = FASTCE_CACHE_MIN_BYTES
CACHE_SLOTS = FASTCE_CACHE_SLOTS

def allocate_cached(fn, *args, **kwargs):
    """fn(*args, **kwargs) (an allocating NumPy call) with NumPy's allocator set to the buffer
    cache for the duration of the call (a context variable: other threads are not affected)."""
    old = PyDataMem_SetHandler(_cache_capsule)
    try:
        return fn(*args, **kwargs)
    finally:
        PyDataMem_SetHandler(old)

def cache_set_limit(size_t nbytes):
    fastce_cache_set_limit(nbytes)

def cache_release():
    return fastce_cache_release()

def cache_stats():
    cdef fastce_cache_stats s = fastce_cache_get_stats()
    return dict(limit=s.limit, cached_bytes=s.cached_bytes, cached_blocks=s.cached_blocks,
                hits=s.hits, misses=s.misses)


include "_small_calls.pxi"
