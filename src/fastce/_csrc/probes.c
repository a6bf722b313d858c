/* Roofline probes (fastce bench): what the memory system gives a plain loop. */
#include "fastce/dispatch.h"
#ifdef _OPENMP
#include <omp.h>
#endif

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
