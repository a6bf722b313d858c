/* Runtime ISA dispatch, OpenMP queries and target validation.
 *
 * Every ISA is compiled into its own translation unit with its own flags (setup.py defines
 * FASTCE_HAVE_AVX2 / FASTCE_HAVE_AVX512 for those the compiler could build). The choice among
 * them is made by the Python layer, once at import (and when the user forces one), from
 * fastce_isa_runnable(); nothing here is lazily initialized, so concurrent callers are safe.
 */
#include "fastce/dispatch.h"
#include "fastce/row_math.h"
#ifdef _OPENMP
#include <omp.h>
#endif

extern const ce_isa_table fastce_table_scalar;
#if FASTCE_HAVE_AVX2
extern const ce_isa_table fastce_table_avx2;
#endif
#if FASTCE_HAVE_AVX512
extern const ce_isa_table fastce_table_avx512;
#endif

const ce_isa_table *fastce_isa_table(int isa) {
    switch (isa) {
    case FASTCE_ISA_SCALAR: return &fastce_table_scalar;
#if FASTCE_HAVE_AVX2
    case FASTCE_ISA_AVX2: return &fastce_table_avx2;
#endif
#if FASTCE_HAVE_AVX512
    case FASTCE_ISA_AVX512: return &fastce_table_avx512;
#endif
    default: return NULL;
    }
}

int fastce_isa_runnable(int isa) {
    if (!fastce_isa_table(isa)) return 0;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    switch (isa) {
    case FASTCE_ISA_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
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

int64_t fastce_check_targets(const void *target, int ttype, int64_t n, int64_t C,
                             int64_t ignore_index, const void *weight, int wdouble,
                             double *weight_sum, int64_t *kept) {
    double wsum = 0.0;
    int64_t count = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t t = ce_target_at(target, ttype, i);
        if (t == ignore_index && !(ttype == FASTCE_U64 && ((const uint64_t *)target)[i] > (uint64_t)INT64_MAX))
            continue;
        if (t < 0 || t >= C) return i;
        count++;
        wsum += !weight ? 1.0 : wdouble ? ((const double *)weight)[t] : (double)((const float *)weight)[t];
    }
    *weight_sum = wsum;
    *kept = count;
    return -1;
}
