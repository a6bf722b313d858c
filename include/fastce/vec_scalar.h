/* fastce/vec_scalar.h: the portable path. A "vector" is one element; exp and log are libm's (< 1 ulp).
 * Same API as vec_avx2.h / vec_avx512.h, so kernel_impl.h compiles unchanged for every ISA. */
#ifndef FASTCE_VEC_SCALAR_H
#define FASTCE_VEC_SCALAR_H
#include <math.h>
#include <stdint.h>
#include "fastce/math_consts.h"

#define FASTCE_VEC_DEFINE_SCALAR(P, T, EXPF, LOGF, FLUSH)                                                      \
    typedef T P##_t;                                                                              \
    static inline P##_t P##_load(const T *p) { return *p; }                                      \
    static inline void P##_store(T *p, P##_t v) { *p = v; }                                      \
    static inline P##_t P##_load_tail(const T *p, int64_t n, T fill) { return n > 0 ? *p : fill; } \
    static inline void P##_store_tail(T *p, P##_t v, int64_t n) { if (n > 0) *p = v; }           \
    static inline P##_t P##_set1(T a) { return a; }                                              \
    static inline void P##_stream(T *p, P##_t v) { *p = v; }                                     \
    static inline P##_t P##_add(P##_t a, P##_t b) { return a + b; }                              \
    static inline P##_t P##_sub(P##_t a, P##_t b) { return a - b; }                              \
    static inline P##_t P##_mul(P##_t a, P##_t b) { return a * b; }                              \
    static inline P##_t P##_fmadd(P##_t a, P##_t b, P##_t c) { return a * b + c; }               \
    static inline P##_t P##_max(P##_t a, P##_t b) { return a > b ? a : b; }                      \
    static inline P##_t P##_shift(P##_t m) { return m == -INFINITY ? (T)0 : m; }                 \
    static inline P##_t P##_finite_or_zero(P##_t x) { return isfinite(x) ? x : (T)0; }          \
    static inline P##_t P##_count_gt(P##_t acc, P##_t x, P##_t t) { return x > t ? acc + 1 : acc; } \
    static inline P##_t P##_mul_nz(P##_t e, P##_t d) { return e != 0 ? e * d : (T)0; }           \
    static inline int P##_any_gt(P##_t a, P##_t b) { return a > b; }                             \
    static inline int P##_all_finite(P##_t x) { return isfinite(x) != 0; }                       \
    static inline double P##_hmax(P##_t v) { return v; }                                         \
    static inline double P##_hsum(P##_t v) { return v; }                                         \
    static inline P##_t P##_exp(P##_t x) { return EXPF(x); }                                    \
    static inline P##_t P##_exp_flush(P##_t x) { return x < FLUSH ? (T)0 : EXPF(x); }           \
    static inline P##_t P##_exp_flush_bounded(P##_t x) { return P##_exp_flush(x); }                 \
    static inline P##_t P##_exp_floored(P##_t x) { return P##_exp_flush(x); }                      \
    static inline P##_t P##_exp_floored_add(P##_t x, P##_t acc) { return acc + P##_exp_floored(x); } \
    static inline P##_t P##_log(P##_t x) { return LOGF(x); }

FASTCE_VEC_DEFINE_SCALAR(vf, float, expf, logf, FASTCE_EXP_FLUSH_F)
FASTCE_VEC_DEFINE_SCALAR(vd, double, exp, log, FASTCE_EXP_FLUSH_D)
#define VF_W 1
static inline void fastce_store_fence(void) {}
#define VD_W 1

/* float16 (vh_) and bfloat16 (vb_) storage, widened to float on load, narrowed (nearest even)
   on store: one element, through fastce/half.h. */
#include "fastce/half.h"
#define FASTCE_VEC_DEFINE_HALF_SCALAR(P, TO_F32, FROM_F32)                                        \
    static inline vf_t P##_load(const uint16_t *p) { return TO_F32(*p); }                         \
    static inline vf_t P##_load_tail(const uint16_t *p, int64_t n, float fill) { return n > 0 ? TO_F32(*p) : fill; } \
    static inline void P##_store(uint16_t *p, vf_t v) { *p = FROM_F32(v); }                       \
    static inline void P##_store_tail(uint16_t *p, vf_t v, int64_t n) { if (n > 0) *p = FROM_F32(v); } \
    static inline void P##_stream(uint16_t *p, vf_t v) { *p = FROM_F32(v); }
FASTCE_VEC_DEFINE_HALF_SCALAR(vh, fastce_f16_to_f32, fastce_f32_to_f16)
FASTCE_VEC_DEFINE_HALF_SCALAR(vb, fastce_bf16_to_f32, fastce_f32_to_bf16)

#endif
