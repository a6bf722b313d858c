/* fastce/row_math.h: the scalar, per-row half of the math, shared by every ISA.
 *
 * The vector kernels reduce a row to a ce_state; everything below turns states into losses and
 * gradient coefficients. It runs once per row, in double, so its cost is O(N), not O(N*C).
 *
 * Notation: shift = max_c x_c, logs = log sum_c exp(x_c - shift), so lse = shift + logs and
 * log p_c = (x_c - shift) - logs, evaluated in that order (as torch does) so that neither large
 * logits nor a large lse lose the small differences that make the answer.
 * Loss (index targets t, weights w, W = sum w, smoothing eps; sx, ref: see common.h):
 *   loss = (1-eps) w_t ((shift - x_t) + logs) + (eps/C) (W (lse - ref) - sx)       [0 if ignored]
 * Loss (probability targets, swy = sum w y', swyx = sum w y' (x - ref)):
 *   loss = (lse - ref) swy - swyx
 * Gradient of coef * loss (coef = grad_output / D), with p_c = exp((x_c - shift) - logs):
 *   grad_c = A p_c - w_c (B1 y_c + B0),  then grad_t -= fix       (index targets only)
 *   index: A = coef ((1-eps) w_t + eps W / C), B1 = 0, B0 = coef eps / C, fix = coef (1-eps) w_t
 *   prob : A = coef swy,                      B1 = coef (1-eps), B0 = coef eps / C, fix = 0
 * z-loss (zloss = z > 0): the row's loss gains w_row z lse^2, with w_row = w_t (index targets;
 *   1 without weights) or 1 (probability targets), so that a 'mean' divides it by the same
 *   denominator as the rest of the loss. d(lse)/dx_c = p_c, so its gradient only adds to A:
 *   A += coef w_row 2 z lse.
 */
#ifndef FASTCE_ROW_MATH_H
#define FASTCE_ROW_MATH_H

#include "fastce/common.h"

#define FASTCE_INLINE static inline __attribute__((always_inline))

/* The subtraction shift of a state's max: -inf rows use 0, so exp(-inf - 0) = 0 rather than NaN. */
FASTCE_INLINE double ce_shift(double m) { return m == -INFINITY ? 0.0 : m; }

FASTCE_INLINE void ce_state_init(ce_state *st, double ref) {
    st->m = -INFINITY; st->s = 0.0; st->xt = 0.0; st->ref = ref; st->sx = 0.0; st->swy = 0.0; st->swyx = 0.0;
    st->gt = 0.0;
}

/* The origin of a row's linear sums: its first logit, or 0 if that is not finite. */
FASTCE_INLINE double ce_ref(double x0) { return isfinite(x0) ? x0 : 0.0; }

/* Rescale factor that moves a sum taken at shift(m_old) to shift(m_new), m_new >= m_old.
   An all -inf prefix has s = 0 (or NaN, kept NaN by 0 * NaN). */
FASTCE_INLINE double ce_rescale(double m_old, double m_new) {
    return m_old == -INFINITY ? 0.0 : exp(ce_shift(m_old) - ce_shift(m_new));
}

/* a <- a (+) b: exact combination of two disjoint class segments of one row (same ref). fmax
   ignores NaN maxima; a NaN logit already made its segment's s NaN, which propagates. */
FASTCE_INLINE void ce_state_merge(ce_state *a, const ce_state *b) {
    double m = fmax(a->m, b->m);
    a->s = a->s * ce_rescale(a->m, m) + b->s * ce_rescale(b->m, m);
    a->m = m;
    a->xt += b->xt; a->sx += b->sx; a->swy += b->swy; a->swyx += b->swyx; a->gt += b->gt;
}


/* Read target i of any integer dtype as int64. uint64 values above INT64_MAX are returned as -1
   (the validation pass reports them as out of bounds before any kernel runs). */
FASTCE_INLINE int64_t ce_target_at(const void *t, int ttype, int64_t i) {
    switch (ttype) {
    case FASTCE_I8:  return ((const int8_t *)t)[i];
    case FASTCE_I16: return ((const int16_t *)t)[i];
    case FASTCE_I32: return ((const int32_t *)t)[i];
    case FASTCE_I64: return ((const int64_t *)t)[i];
    case FASTCE_U8:  return ((const uint8_t *)t)[i];
    case FASTCE_U16: return ((const uint16_t *)t)[i];
    case FASTCE_U32: return ((const uint32_t *)t)[i];
    default: {
        uint64_t v = ((const uint64_t *)t)[i];
        return v > (uint64_t)INT64_MAX ? -1 : (int64_t)v;
    }
    }
}

/* The index rule (torch's), in one place for fastce_check_targets' scalar loop
   (target_check.c) and the SIMD ISAs' check_block (kernel_impl.h): a target equal to
   ignore_index is ignored; any other must lie in [0, C). */
FASTCE_INLINE int ce_target_in_range(int64_t t, int64_t C) { return (uint64_t)t < (uint64_t)C; }

/* Targets [i0, i0 + n) as int64 into out: ce_target_at with the dtype's switch outside the
   loop (a tile's finish reads its lanes' targets at once). Out of line: it has no options,
   and an inlined copy (eight vectorized loops) in every specialization slowed the build. */
static __attribute__((noinline, unused)) void ce_targets_at(const void *t, int ttype, int64_t i0, int64_t n, int64_t *out) {
#define CE_TARGETS_CASE(T) case T: for (int64_t i = 0; i < n; i++) out[i] = ce_target_at(t, T, i0 + i); break
    switch (ttype) {
    CE_TARGETS_CASE(FASTCE_I8); CE_TARGETS_CASE(FASTCE_I16); CE_TARGETS_CASE(FASTCE_I32);
    CE_TARGETS_CASE(FASTCE_I64); CE_TARGETS_CASE(FASTCE_U8); CE_TARGETS_CASE(FASTCE_U16);
    CE_TARGETS_CASE(FASTCE_U32);
    default: for (int64_t i = 0; i < n; i++) out[i] = ce_target_at(t, FASTCE_U64, i0 + i);
    }
#undef CE_TARGETS_CASE
}

typedef struct {
    double lse, loss;
    double shift, logs;      /* lse = shift + logs; pass 2 uses p = exp((x - shift) - logs) */
    double A, B1, B0, fix;   /* gradient coefficients, see the header comment */
} ce_row;

/* Loss and gradient coefficients of one non-ignored row, given logs = log(st->s) (possibly
   computed several rows at a time by a vector log). `w_t` is the target's weight (index kind),
   `coef` = grad_output / D. */
FASTCE_INLINE ce_row ce_finish(const ce_args *a, const ce_state *st, double logs, double w_t, double coef) {
    ce_row r;
    const double eps = a->eps, C = (double)a->C, W = a->wsum;
    r.shift = ce_shift(st->m);
    r.logs = logs;
    r.lse = r.shift + logs;
    const double lse_rel = (r.shift - st->ref) + logs;  /* lse - ref */
    r.B1 = 0.0; r.fix = 0.0;
    r.B0 = coef * eps / C;
    if (a->kind == FASTCE_KIND_INDEX) {
        r.loss = (1.0 - eps) * (w_t * ((r.shift - st->xt) + logs));
        if (eps > 0.0) r.loss += (eps / C) * (W * lse_rel - st->sx);
        r.A = coef * ((1.0 - eps) * w_t + eps * W / C);
        r.fix = coef * (1.0 - eps) * w_t;
    } else if (a->kind == FASTCE_KIND_PROB) {
        r.loss = lse_rel * st->swy - st->swyx;
        r.A = coef * st->swy;
        r.B1 = coef * (1.0 - eps);
    } else {
        r.loss = r.lse;
        r.A = 1.0; r.B0 = 0.0;
        return r;
    }
    if (a->zloss != 0.0) {
        const double w_row = a->kind == FASTCE_KIND_INDEX ? w_t : 1.0;
        r.loss += w_row * a->zloss * r.lse * r.lse;
        r.A += coef * w_row * 2.0 * a->zloss * r.lse;
    }
    return r;
}

/* grad_output / D for row i. */
FASTCE_INLINE double ce_coef(const ce_args *a, int64_t i) {
    return a->gout ? a->gout[i] * a->gscale : a->gscale;
}

#endif
