/* fastce/dispatch.h: what the Cython layer calls. No Python.h. */
#ifndef FASTCE_DISPATCH_H
#define FASTCE_DISPATCH_H
#include "fastce/common.h"

/* The kernel table of `isa` if it was compiled in, else NULL. */
const ce_isa_table *fastce_isa_table(int isa);
/* 1 if `isa` was compiled in and this CPU can run it. Reads cpuid; no state is cached. */
int fastce_isa_runnable(int isa);
/* The name of ISA code `isa` (its row of build_table.h), compiled in or not; NULL if no row
   has that code. */
const char *fastce_isa_name(int isa);

/* OpenMP, or its absence (dispatch.c). */
int fastce_openmp_enabled(void);
int fastce_omp_max_threads(void);

/* target_check.c: validates n index targets of dtype ttype against [0, C) or ignore_index, and
   totals the target weights of the kept ones (w of dtype `wdouble ? double : float`, or NULL for 1).
   Returns the position of the first bad target, or -1. Runs on up to nthreads threads; the
   totals do not depend on their number. Without weights (and for any dtype but uint64) the
   check is `isa`'s vectorized check_block. */
int64_t fastce_check_targets(int isa, const void *target, int ttype, int64_t n, int64_t C,
                             int64_t ignore_index, const void *weight, int wdouble, int nthreads,
                             double *weight_sum, int64_t *kept);
/* Pairwise sum of n doubles in a fixed order (the reduction of per-row losses; reductions.c). */
double fastce_sum_f64(const double *v, int64_t n);
/* Roofline probes (fastce bench; probes.c): a streaming read of n floats (returns their sum) and a
   read + write pass dst = src, on nthreads threads. */
double fastce_probe_read(const float *x, int64_t n, int nthreads);
void fastce_probe_copy(const float *src, float *dst, int64_t n, int nthreads);
#endif
