/* fastce/common.h: types shared by every layer of the C core (no Python.h here).
 *
 * The logits are always seen as a C-contiguous (N, C, S) block: N outer rows, C classes,
 * S inner positions (S = 1 for an (N, C) input, S = d1*...*dk for (N, C, d1..dk)).
 * A "row" is one (n, s) pair: the C values x[n, :, s], with class stride S.
 *
 * Per-row state (ce_state) is explicit and mergeable, so that a row may be split into class
 * segments (threads, and later vocab-parallel shards) whose states combine exactly:
 *   m    = max_c x_c                     (raw max; may be -inf or +inf)
 *   s    = sum_c exp(x_c - shift(m))     shift(m) = m, or 0 when m = -inf (so -inf rows give s = 0)
 *   xt   = x[target]                     (0 for segments that do not hold the target)
 *   ref  = the row's first logit (0 if not finite): the origin of the linear sums below, so
 *          that they hold differences x - ref and do not cancel for large logits. Every
 *          segment of a row uses the same ref, so merging them is a plain sum.
 *   sx   = sum_c w_c (x_c - ref)                       (index targets with label smoothing)
 *   swy  = sum_c w_c y'_c, swyx = sum_c w_c y'_c (x_c - ref)   (probability targets, with
 *          y'_c = (1 - eps) y_c + eps / C formed per element, as torch forms the smoothed target)
 *   gt   = the number of classes that rank above the target: x_c > x_t, or x_c == x_t at c < t
 *          (argmax's tie order), so the target is in the top k exactly when gt < k. Counted
 *          only by the scoring kernel (score_rows); a plain sum across segments.
 */
#ifndef FASTCE_COMMON_H
#define FASTCE_COMMON_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* Rows of at most this many classes take the transposed-tile path (small_rows). */
#define FASTCE_SMALL_C 16

/* The instruction sets (FASTCE_ISA_*) and storage dtypes (FASTCE_DT_*) of the logits, with
   their counts: the rows of the build table. float16 and bfloat16 are computed in float. */
#include "fastce/build_table.h"

/* Integer dtypes of index targets (read in place, never converted). */
enum {
    FASTCE_I8 = 0, FASTCE_I16, FASTCE_I32, FASTCE_I64,
    FASTCE_U8, FASTCE_U16, FASTCE_U32, FASTCE_U64
};

/* What the kernel computes per row. */
enum {
    FASTCE_KIND_LSE = 0,   /* log-sum-exp only (logsumexp, softmax, log_softmax) */
    FASTCE_KIND_INDEX = 1, /* cross-entropy with class-index targets */
    FASTCE_KIND_PROB = 2   /* cross-entropy with class-probability targets */
};

/* What the second pass writes into `out` (same layout as x). */
enum {
    FASTCE_OUT_NONE = 0,
    FASTCE_OUT_GRAD = 1,       /* d(sum g*loss)/dx */
    FASTCE_OUT_SOFTMAX = 2,    /* exp(x - lse) */
    FASTCE_OUT_LOGSOFTMAX = 3  /* x - lse */
};

typedef struct {
    double m, s, xt, ref, sx, swy, swyx, gt;
} ce_state;

typedef struct {
    int64_t N, C, S;          /* logical (N, C, S) view of x, C-contiguous */
    const void *x;            /* logits, of the table's storage dtype (FASTCE_DT_*) */
    const void *target;       /* index targets, N*S integers of type ttype (KIND_INDEX) */
    int ttype;
    const void *prob;         /* probability targets, x's layout, compute dtype (KIND_PROB) */
    const void *weight;       /* class weights (C,), compute dtype (float for f16/bf16), or NULL */
    double wsum;              /* W = sum_c w_c, or C without weights */
    int64_t ignore_index;
    double eps;               /* label smoothing */
    int kind, outmode;
    double *row_out;          /* per row: the loss (CE kinds) or lse (KIND_LSE); may be NULL */
    double *row_lse;          /* per row: lse, ignored rows included (CE kinds); may be NULL */
    double *row_rank;         /* per row: the state's gt (score_rows only; -1 for ignored rows) */
    double zloss;             /* z: adds w_row * z * lse^2 to each row's loss (PaLM's z-loss) */
    void *out;                /* second-pass output, x's layout and storage dtype; may alias x */
    int stream_out;           /* write `out` with non-temporal stores (large, not aliasing x) */
    const double *gout;       /* per-row grad_output (reduction 'none'), or NULL */
    double gscale;            /* grad_output / D for mean and sum; 1 for 'none' */
    /* Class-split mode (S == 1, fewer rows than threads): row r is cut into `parts` segments of
       `seg` classes; states[r*parts + p] holds segment p's state. */
    int64_t parts, seg;
    ce_state *states;
} ce_args;

/* Two streams of logits, one pass per row pair (kl_rows): a = the reference, b = the model,
   both (N, C) C-contiguous in the table's storage dtype. See kl_impl.h for the math. */
typedef struct {
    int64_t N, C;
    const void *a, *b;
    double *kl;              /* per row: KL(softmax(a) || softmax(b)) */
    double *lse_a, *lse_b;   /* per row: log-sum-exp of a and of b; may be NULL */
    int64_t *argmax_a;       /* per row: first index of a's max; may be NULL */
    double *rank_b;          /* per row, t = argmax_a: #{c : b_c > b_t} + #{c < t : b_c == b_t};
                                may be NULL (needs argmax_a) */
    void *out;               /* d(sum g * kl)/db = g (softmax(b) - softmax(a)), b's layout; may be NULL */
    const double *gout;      /* per-row g (reduction 'none'), or NULL */
    double gscale;           /* g for every row (times gout[row] where given) */
} kl_args;
typedef void (*kl_range_fn)(const kl_args *a, int64_t i0, int64_t i1);

/* One vocabulary shard's gradient from merged row statistics (shard_grad_rows, shard_impl.h):
   x and out (N, C) C-contiguous in the table's storage dtype (out may be x). */
typedef struct {
    int64_t N, C;
    const void *x;
    void *out;
    const double *lse, *A, *B, *fix;  /* per row */
    const int64_t *tcol;              /* per row: the target's column in the shard, or -1 */
    const void *weight;               /* (C,) class weights in the compute dtype, or NULL */
} shard_args;
typedef void (*shard_range_fn)(const shard_args *a, int64_t i0, int64_t i1);

/* Work-range kernels: each processes items [i0, i1) and never raises; inputs are validated
   by the caller (targets are in range or ignore_index). */
typedef void (*ce_range_fn)(const ce_args *a, int64_t i0, int64_t i1);

typedef struct {
    ce_range_fn rows;        /* S == 1: item = row; both passes fused while the row is in cache */
    ce_range_fn seg_stats;   /* S == 1, split: item = (row, part); pass 1 into states */
    ce_range_fn merge_rows;  /* S == 1, split: item = row; merge parts, write row_out */
    ce_range_fn seg_out;     /* S == 1, split: item = (row, part); pass 2 */
    ce_range_fn tiles;       /* S > 1: item = (n, group of VW positions), vectorized across positions */
    ce_range_fn small_rows;  /* S == 1, C <= FASTCE_SMALL_C: item = row; VW rows per transposed tile */
    ce_range_fn score_rows;  /* S == 1, index targets, no options: rows with the rank count gt */
    kl_range_fn kl_rows;     /* two streams (KL, compare): item = row pair */
    shard_range_fn shard_grad_rows; /* a vocab shard's gradient from merged statistics: item = row */
    int64_t vector_width;    /* lanes per vector; tiles cover this many positions */
    /* The vector math itself, element-wise over n values (func: FASTCE_MATH_*), for the
       accuracy tests and the bench's exp rate. */
    void (*math_array)(const void *x, void *y, int64_t n, int func);
    /* The unweighted index check of targets [i0, i1) (any dtype but uint64), vectorized with
       this ISA: whether any target is bad, and the count kept (fastce_check_targets). Only
       in the SIMD ISAs' float32 tables (NULL elsewhere). */
    int (*check_block)(const void *target, int ttype, int64_t i0, int64_t i1, int64_t C,
                       int64_t ignore_index, int64_t *kept);
} ce_kernels;
/* math_array's functions: exp, log, and the kernels' three exps (vec_*.h, math_consts.h). */
enum { FASTCE_MATH_EXP = 0, FASTCE_MATH_LOG = 1, FASTCE_MATH_EXP_FLUSH = 2, FASTCE_MATH_EXP_FLUSH_BOUNDED = 3,
       FASTCE_MATH_EXP_FLOORED = 4, FASTCE_MATH_EXP_FLOORED_ADD = 5 };

typedef struct {
    const char *name;
    /* by FASTCE_DT_*, each built in its own translation unit (src/fastce/_csrc/kernels.c) */
    const ce_kernels *kernels[FASTCE_DT_COUNT];
} ce_isa_table;

#endif
