/* Runtime ISA dispatch, OpenMP queries and target validation.
 *
 * Every ISA is compiled into its own translation unit with its own flags (setup.py defines
 * FASTCE_HAVE_AVX2 / FASTCE_HAVE_AVX512 for those the compiler could build). The choice among
 * them is made by the Python layer, once at import (and when the user forces one), from
 * fastce_isa_runnable(); nothing here is lazily initialized, so concurrent callers are safe.
 */
#include "fastce/dispatch.h"
#include "fastce/row_math.h"
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* The kernel objects: one per (ISA, dtype), built from kernels.c. */
#define FASTCE_ISA_KERNELS(tag)                                                                   \
    extern const ce_kernels fastce_kernels_##tag##_f32, fastce_kernels_##tag##_f64,              \
        fastce_kernels_##tag##_f16, fastce_kernels_##tag##_bf16;                                  \
    static const ce_isa_table table_##tag = {#tag, {&fastce_kernels_##tag##_f32, &fastce_kernels_##tag##_f64, \
                                                    &fastce_kernels_##tag##_f16, &fastce_kernels_##tag##_bf16}};
FASTCE_ISA_KERNELS(scalar)
#if FASTCE_HAVE_AVX2
FASTCE_ISA_KERNELS(avx2)
#endif
#if FASTCE_HAVE_AVX512
FASTCE_ISA_KERNELS(avx512)
#endif

const ce_isa_table *fastce_isa_table(int isa) {
    switch (isa) {
    case FASTCE_ISA_SCALAR: return &table_scalar;
#if FASTCE_HAVE_AVX2
    case FASTCE_ISA_AVX2: return &table_avx2;
#endif
#if FASTCE_HAVE_AVX512
    case FASTCE_ISA_AVX512: return &table_avx512;
#endif
    default: return NULL;
    }
}

/* F16C (the float16 conversions the AVX2 kernels use): cpuid leaf 1, ecx bit 29. Every CPU with
   AVX2 and FMA that we know of has it; checked all the same. */
static int fastce_cpu_f16c(void) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    unsigned int eax = 1, ebx, ecx = 0, edx;
    __asm__ volatile("cpuid" : "+a"(eax), "=b"(ebx), "+c"(ecx), "=d"(edx));
    return (ecx >> 29) & 1u;
#else
    return 0;
#endif
}

int fastce_isa_runnable(int isa) {
    if (!fastce_isa_table(isa)) return 0;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    switch (isa) {
    case FASTCE_ISA_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && fastce_cpu_f16c();
    case FASTCE_ISA_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("fma");
    default:
        return 1;
    }
#else
    return isa == FASTCE_ISA_SCALAR;
#endif
}

int fastce_openmp_enabled(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int fastce_omp_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* The check over targets [i0, i1): returns the first bad position or -1, with the kept count
   and weight sum. `ttype` is a literal at every call (check_range), so ce_target_at's switch
   folds away. Without weights the kept weight is the count itself: a serial chain of double
   adds (3-4 cycles each) would otherwise bound the loop. */
static inline __attribute__((always_inline)) int64_t
check_range_t(const void *target, const int ttype, int64_t i0, int64_t i1, int64_t C,
              int64_t ignore_index, const void *weight, int wdouble, double *weight_sum,
              int64_t *kept) {
    double wsum = 0.0;
    int64_t count = 0;
    for (int64_t i = i0; i < i1; i++) {
        const int64_t t = ce_target_at(target, ttype, i);
        if (t == ignore_index && !(ttype == FASTCE_U64 && ((const uint64_t *)target)[i] > (uint64_t)INT64_MAX))
            continue;
        if (!ce_target_in_range(t, C)) return i;
        count++;
        if (weight) wsum += wdouble ? ((const double *)weight)[t] : (double)((const float *)weight)[t];
    }
    *weight_sum = weight ? wsum : (double)count;
    *kept = count;
    return -1;
}

static int64_t check_range(const ce_kernels *k, const void *target, int ttype, int64_t i0, int64_t i1,
                           int64_t C, int64_t ignore_index, const void *weight, int wdouble,
                           double *weight_sum, int64_t *kept) {
    /* Vectorized, the kept weight being the count; a block with a bad target goes through the
       loop below, which stops at the first. */
    if (k->check_block && !weight && ttype != FASTCE_U64
            && !k->check_block(target, ttype, i0, i1, C, ignore_index, kept)) {
        *weight_sum = (double)*kept;
        return -1;
    }
#define CHECK_CASE(T) case T: return check_range_t(target, T, i0, i1, C, ignore_index, weight, wdouble, weight_sum, kept)
    switch (ttype) {
    CHECK_CASE(FASTCE_I8); CHECK_CASE(FASTCE_I16); CHECK_CASE(FASTCE_I32); CHECK_CASE(FASTCE_I64);
    CHECK_CASE(FASTCE_U8); CHECK_CASE(FASTCE_U16); CHECK_CASE(FASTCE_U32);
    default: return check_range_t(target, FASTCE_U64, i0, i1, C, ignore_index, weight, wdouble, weight_sum, kept);
    }
#undef CHECK_CASE
}

/* Fixed blocks of targets, so that the weight total is summed in the same order (and so is
   bit-identical) whatever the number of threads. */
#define CHECK_BLOCK ((int64_t)1 << 16)

int64_t fastce_check_targets(int isa, const void *target, int ttype, int64_t n, int64_t C,
                             int64_t ignore_index, const void *weight, int wdouble, int nthreads,
                             double *weight_sum, int64_t *kept) {
    const ce_isa_table *table = fastce_isa_table(isa);
    const ce_kernels *k = (table ? table : fastce_isa_table(FASTCE_ISA_SCALAR))->kernels[FASTCE_DT_F32];
    const int64_t nb = (n + CHECK_BLOCK - 1) / CHECK_BLOCK;
    int64_t *block_bad = nb > 1 ? malloc((size_t)nb * 2 * sizeof(int64_t)) : NULL;
    double *block_w = nb > 1 ? malloc((size_t)nb * sizeof(double)) : NULL;
    if (!block_bad || !block_w) { /* one block, or no memory for the per-block totals */
        free(block_bad); free(block_w);
        return check_range(k, target, ttype, 0, n, C, ignore_index, weight, wdouble, weight_sum, kept);
    }
    int64_t *block_kept = block_bad + nb;
    if (nthreads > nb) nthreads = (int)nb;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
#endif
    for (int64_t b = 0; b < nb; b++) {
        const int64_t i1 = (b + 1) * CHECK_BLOCK < n ? (b + 1) * CHECK_BLOCK : n;
        block_bad[b] = check_range(k, target, ttype, b * CHECK_BLOCK, i1, C, ignore_index, weight, wdouble,
                                   &block_w[b], &block_kept[b]);
    }
    int64_t bad = -1, count = 0;
    double wsum = 0.0;
    for (int64_t b = 0; b < nb; b++) {
        if (block_bad[b] >= 0) { bad = block_bad[b]; break; }
        wsum += block_w[b];
        count += block_kept[b];
    }
    free(block_bad); free(block_w);
    *weight_sum = wsum;
    *kept = count;
    return bad;
}

/* Sum of n doubles by pairwise summation (NumPy's algorithm: blocks of at most 128 summed in 8
   interleaved accumulators, halves added recursively): an error that grows as log n, a fixed
   order, so every path that reduces per-row losses (the general one and the small-call one)
   gives the same bits, and vectorized by the compiler (an O(N) Neumaier loop cost as much as
   the kernel itself for (262144, 10)). */
double fastce_sum_f64(const double *v, int64_t n) {
    if (n < 8) {
        double s = 0.0;
        for (int64_t i = 0; i < n; i++) s += v[i];
        return s;
    }
    if (n <= 128) {
        double r[8];
        int64_t i;
        for (int k = 0; k < 8; k++) r[k] = v[k];
        for (i = 8; i < n - n % 8; i += 8)
            for (int k = 0; k < 8; k++) r[k] += v[i + k];
        double s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) s += v[i];
        return s;
    }
    int64_t h = n / 2;
    h -= h % 8;
    return fastce_sum_f64(v, h) + fastce_sum_f64(v + h, n - h);
}

/* ---- roofline probes: what the memory system gives a plain loop (fastce bench) ----
   Streaming read: the sum of n floats, 16 independent accumulators (vectorized by the compiler;
   the loop is bound by memory, not by the adds). Read + write: dst = src * 1.0f (a copy that the
   compiler cannot turn into memcpy's non-temporal path; fastce's gradient writes are ordinary
   stores). Both on nthreads threads, static blocks. */
double fastce_probe_read(const float *x, int64_t n, int nthreads) {
    double total = 0.0;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) reduction(+:total) if (nthreads > 1)
#endif
    for (int64_t b = 0; b < n; b += 1 << 16) {
        const int64_t e = b + (1 << 16) < n ? b + (1 << 16) : n;
        float acc[16] = {0};
        int64_t i = b;
        for (; i + 16 <= e; i += 16)
            for (int k = 0; k < 16; k++) acc[k] += x[i + k];
        for (; i < e; i++) acc[0] += x[i];
        for (int k = 0; k < 16; k++) total += acc[k];
    }
    return total;
}

void fastce_probe_copy(const float *src, float *dst, int64_t n, int nthreads) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
#endif
    for (int64_t b = 0; b < n; b += 1 << 16) {
        const int64_t e = b + (1 << 16) < n ? b + (1 << 16) : n;
        for (int64_t i = b; i < e; i++) dst[i] = src[i] * 1.0f;
    }
}
