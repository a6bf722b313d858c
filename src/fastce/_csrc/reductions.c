/* Reductions shared by the Cython paths: the pairwise sum of per-row losses. */
#include "fastce/dispatch.h"

/* Sum of n doubles by pairwise summation (NumPy's algorithm: blocks of at most 128 summed in 8
   interleaved accumulators, halves added recursively): an error that grows as log n, a fixed
   order, so every path that reduces per-row losses (the general one and the small-call one)
   gives the same bits, and vectorized by the compiler (a Neumaier loop, also O(N), was
   measured far slower on small rows: docs/performance/notes_kernels.md). */
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
