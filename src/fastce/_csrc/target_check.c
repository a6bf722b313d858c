/* Target validation: fastce_check_targets (dispatch.h), the index rule checked over every
 * target before a kernel runs, in fixed blocks on up to nthreads threads, with each ISA's
 * vectorized check_block (kernel_impl.h) where it applies.
 */
#include "fastce/dispatch.h"
#include "fastce/row_math.h"
#include <stdlib.h>

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
