/* fastce/vec_avx512.h: AVX-512F/DQ vector math (16 floats, 8 doubles).
 * Compile with -mavx512f -mavx512dq -mfma. Same algorithms and polynomials as vec_avx2.h; the
 * 2^n scaling uses VSCALEF, which rounds subnormal results once and overflows to inf itself.
 * Tails use mask registers: masked-off lanes are neither read nor written. */
#ifndef FASTCE_VEC_AVX512_H
#define FASTCE_VEC_AVX512_H
#if !(defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__FMA__))
#error "fastce/vec_avx512.h needs -mavx512f -mavx512dq -mavx2 -mfma -mf16c (its row of fastce/build_table.h)"
#endif
#include <immintrin.h>
#include <math.h>
#include "fastce/math_consts.h"
#include <stdint.h>

/* ---------------- float ---------------- */
typedef __m512 vf_t;
#define VF_W 16

static inline __mmask16 vf_tail_mask(int64_t n) { return (__mmask16)((1u << n) - 1u); }
static inline vf_t vf_load(const float *p) { return _mm512_loadu_ps(p); }
static inline void vf_store(float *p, vf_t v) { _mm512_storeu_ps(p, v); }
static inline vf_t vf_load_tail(const float *p, int64_t n, float fill) {
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), vf_tail_mask(n), p);
}
static inline void vf_store_tail(float *p, vf_t v, int64_t n) { _mm512_mask_storeu_ps(p, vf_tail_mask(n), v); }
static inline vf_t vf_set1(float a) { return _mm512_set1_ps(a); }
/* Non-temporal store (p 64-byte aligned): bypasses the cache, so no read-for-ownership. */
static inline void vf_stream(float *p, vf_t v) { _mm512_stream_ps(p, v); }
/* Orders streamed stores before anything that follows (another thread's reads included). */
static inline void fastce_store_fence(void) { _mm_sfence(); }
static inline vf_t vf_add(vf_t a, vf_t b) { return _mm512_add_ps(a, b); }
static inline vf_t vf_sub(vf_t a, vf_t b) { return _mm512_sub_ps(a, b); }
static inline vf_t vf_mul(vf_t a, vf_t b) { return _mm512_mul_ps(a, b); }
static inline vf_t vf_fmadd(vf_t a, vf_t b, vf_t c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf_t vf_max(vf_t a, vf_t b) { return _mm512_max_ps(a, b); }
static inline vf_t vf_shift(vf_t m) {
    __mmask16 is_neg_inf = _mm512_cmp_ps_mask(m, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ);
    return _mm512_mask_blend_ps(is_neg_inf, m, _mm512_setzero_ps());
}
/* x where finite, else 0 (x - x is 0 only for finite x). */
static inline vf_t vf_finite_or_zero(vf_t x) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_sub_ps(x, x), _mm512_setzero_ps(), _CMP_EQ_OQ), x);
}
/* acc + 1 in the lanes where x > t (ordered: NaN counts nowhere). */
static inline vf_t vf_count_gt(vf_t acc, vf_t x, vf_t t) {
    return _mm512_mask_add_ps(acc, _mm512_cmp_ps_mask(x, t, _CMP_GT_OQ), acc, _mm512_set1_ps(1.0f));
}
/* e * d in the lanes where e != 0 (NaN included), +0 where e == 0: a probability 0 times an
   infinite log-ratio contributes 0 to the KL sum, never 0 * inf = NaN. */
static inline vf_t vf_mul_nz(vf_t e, vf_t d) {
    return _mm512_maskz_mul_ps(_mm512_cmp_ps_mask(e, _mm512_setzero_ps(), _CMP_NEQ_UQ), e, d);
}
/* Whether a > b in any lane (ordered: NaN never), and whether every lane is finite. */
static inline int vf_any_gt(vf_t a, vf_t b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ) != 0; }
static inline int vf_all_finite(vf_t x) {
    return _mm512_cmp_ps_mask(_mm512_sub_ps(x, x), _mm512_setzero_ps(), _CMP_EQ_OQ) == 0xFFFF;
}
static inline double vf_hmax(vf_t v) { return _mm512_reduce_max_ps(v); }
static inline double vf_hsum(vf_t v) {
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    __m512d hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
    return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}
/* exp of x already clamped to [lo, hi] (NaN kept). */
static inline vf_t vf_exp_clamped_(vf_t x, __mmask16 keep) {
    const __m512 log2e = _mm512_set1_ps((float)FASTCE_LOG2E);
    const __m512 ln2_hi = _mm512_set1_ps(FASTCE_LN2_HI_F), ln2_lo = _mm512_set1_ps(FASTCE_LN2_LO_F);
    /* n = round(x log2 e), rounded once (as vec_avx2.h does, so both give the same bits). */
    const __m512 magic = _mm512_set1_ps(FASTCE_ROUND_MAGIC_F);
    __m512 n = _mm512_sub_ps(_mm512_fmadd_ps(x, log2e, magic), magic);
    __m512 r = _mm512_fnmadd_ps(n, ln2_hi, x);
    r = _mm512_fnmadd_ps(n, ln2_lo, r);
    __m512 y = _mm512_set1_ps(fastce_exp_poly_f[0]); /* 1 + r (1 + r Q(r)) (math_consts.h) */
    for (int k = 1; k < FASTCE_EXP_POLY_F_LEN; k++) y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(fastce_exp_poly_f[k]));
    return _mm512_maskz_scalef_ps(keep, y, n);
}
static inline vf_t vf_exp(vf_t x) {
    x = _mm512_max_ps(_mm512_set1_ps(FASTCE_EXP_LO_F), x);
    x = _mm512_min_ps(_mm512_set1_ps(FASTCE_EXP_HI_F), x);
    return vf_exp_clamped_(x, (__mmask16)0xFFFF);
}
/* The kernels' exp: +0 below FASTCE_EXP_FLUSH_F (math_consts.h), exp's bits elsewhere; no
   subnormal is ever formed, so no microcode assist (a -inf tail fill or masked logit cost one
   per vector). */
static inline vf_t vf_exp_flush(vf_t x) {
    /* No low clamp: the lanes below the threshold (-inf included) are masked off in VSCALEF,
       whatever their arithmetic gave before it (masked lanes raise no exceptions or assists). */
    const __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(FASTCE_EXP_FLUSH_F), _CMP_NLT_UQ); /* NaN kept */
    return vf_exp_clamped_(_mm512_min_ps(_mm512_set1_ps(FASTCE_EXP_HI_F), x), keep);
}
/* exp_flush for x <= FASTCE_EXP_BOUNDED_MAX or NaN (math_consts.h): no high clamp. */
static inline vf_t vf_exp_flush_bounded(vf_t x) {
    return vf_exp_clamped_(x, _mm512_cmp_ps_mask(x, _mm512_set1_ps(FASTCE_EXP_FLUSH_F), _CMP_NLT_UQ));
}
/* The flush costs nothing here (a mask on VSCALEF), so the sums' exp is exp_flush_bounded
   itself (math_consts.h allows +0 or exp(FASTCE_EXP_FLUSH_F) below the threshold). */
static inline vf_t vf_exp_floored(vf_t x) { return vf_exp_flush_bounded(x); }
static inline vf_t vf_exp_floored_add(vf_t x, vf_t acc) { return _mm512_add_ps(acc, vf_exp_floored(x)); }

/* log(x) for the kernels' sums of exponentials (x >= 1, or 0, inf, NaN): x = m 2^e with
 * m in [sqrt(1/2), sqrt(2)), log x = e ln2 + log(1 + f), f = m - 1, by cephes' logf polynomial
 * (measured max error 0.78 ulp over [1.01, 1e30]; tests/test_vector_math.py). 0 -> -inf, +inf -> +inf, NaN or x < 0 -> NaN.
 * Subnormal x is not supported (never produced: a sum of exps that holds exp(0) is >= 1). */
static inline vf_t vf_log(vf_t x) {
    /* getmant/getexp split x = m 2^(e) with m in [0.5, 1). */
    __m512 m = _mm512_getmant_ps(x, _MM_MANT_NORM_p5_1, _MM_MANT_SIGN_src);
    __m512 e = _mm512_add_ps(_mm512_getexp_ps(x), _mm512_set1_ps(1.0f));
    const __mmask16 small = _mm512_cmp_ps_mask(m, _mm512_set1_ps(FASTCE_SQRT_HALF_F), _CMP_LT_OQ);
    e = _mm512_mask_sub_ps(e, small, e, _mm512_set1_ps(1.0f));
    const __m512 f = _mm512_sub_ps(_mm512_mask_add_ps(m, small, m, m), _mm512_set1_ps(1.0f));
    const __m512 z = _mm512_mul_ps(f, f);
    __m512 y = _mm512_set1_ps(fastce_log_poly_f[0]);
    for (int k = 1; k < 9; k++) y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(fastce_log_poly_f[k]));
    y = _mm512_mul_ps(_mm512_mul_ps(y, f), z);
    y = _mm512_fmadd_ps(e, _mm512_set1_ps(FASTCE_LN2_LO_F), y);
    y = _mm512_fnmadd_ps(z, _mm512_set1_ps(0.5f), y);
    __m512 r = _mm512_fmadd_ps(e, _mm512_set1_ps(FASTCE_LN2_HI_F), _mm512_add_ps(f, y));
    r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_EQ_OQ), r, _mm512_set1_ps(-INFINITY));
    r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(INFINITY), _CMP_EQ_OQ), r, x);
    r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_NGE_UQ), r, _mm512_set1_ps(NAN));
    return r;
}

/* ---------------- float16 (vh_) and bfloat16 (vb_) storage ----------------
 * 16 values widened on load (VCVTPH2PS; bfloat16: zero-extend, shift left 16) and narrowed on
 * store, rounding to nearest even (VCVTPS2PH imm 0; bfloat16: the integer rounding of
 * fastce/half.h, NaN kept quiet, then VPMOVDW). Tails through a stack buffer (16-bit masked
 * moves would need AVX512BW). */
#include <string.h>
static inline vf_t vh_load(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
static inline __m256i vh_bits_(vf_t v) { return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT); }
static inline vf_t vb_load(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}
static inline __m256i vb_bits_(vf_t v) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
    const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), quiet);
    return _mm512_cvtepi32_epi16(r);
}
#define FASTCE_VEC_DEFINE_HALF_AVX512(P)                                                          \
    static inline void P##_store(uint16_t *p, vf_t v) { _mm256_storeu_si256((__m256i *)p, P##_bits_(v)); } \
    static inline void P##_stream(uint16_t *p, vf_t v) { _mm256_stream_si256((__m256i *)p, P##_bits_(v)); } \
    static inline vf_t P##_load_tail(const uint16_t *p, int64_t n, float fill) {                  \
        uint16_t b[16] = {0};                                                                     \
        memcpy(b, p, (size_t)n * 2);                                                              \
        return _mm512_mask_blend_ps(vf_tail_mask(n), _mm512_set1_ps(fill), P##_load(b));         \
    }                                                                                             \
    static inline void P##_store_tail(uint16_t *p, vf_t v, int64_t n) {                          \
        uint16_t b[16];                                                                           \
        P##_store(b, v);                                                                          \
        memcpy(p, b, (size_t)n * 2);                                                              \
    }
FASTCE_VEC_DEFINE_HALF_AVX512(vh)
FASTCE_VEC_DEFINE_HALF_AVX512(vb)

/* ---------------- double ---------------- */
typedef __m512d vd_t;
#define VD_W 8

static inline __mmask8 vd_tail_mask(int64_t n) { return (__mmask8)((1u << n) - 1u); }
static inline vd_t vd_load(const double *p) { return _mm512_loadu_pd(p); }
static inline void vd_store(double *p, vd_t v) { _mm512_storeu_pd(p, v); }
static inline vd_t vd_load_tail(const double *p, int64_t n, double fill) {
    return _mm512_mask_loadu_pd(_mm512_set1_pd(fill), vd_tail_mask(n), p);
}
static inline void vd_store_tail(double *p, vd_t v, int64_t n) { _mm512_mask_storeu_pd(p, vd_tail_mask(n), v); }
static inline vd_t vd_set1(double a) { return _mm512_set1_pd(a); }
static inline void vd_stream(double *p, vd_t v) { _mm512_stream_pd(p, v); }
static inline vd_t vd_add(vd_t a, vd_t b) { return _mm512_add_pd(a, b); }
static inline vd_t vd_sub(vd_t a, vd_t b) { return _mm512_sub_pd(a, b); }
static inline vd_t vd_mul(vd_t a, vd_t b) { return _mm512_mul_pd(a, b); }
static inline vd_t vd_fmadd(vd_t a, vd_t b, vd_t c) { return _mm512_fmadd_pd(a, b, c); }
static inline vd_t vd_max(vd_t a, vd_t b) { return _mm512_max_pd(a, b); }
static inline vd_t vd_shift(vd_t m) {
    __mmask8 is_neg_inf = _mm512_cmp_pd_mask(m, _mm512_set1_pd(-INFINITY), _CMP_EQ_OQ);
    return _mm512_mask_blend_pd(is_neg_inf, m, _mm512_setzero_pd());
}
static inline vd_t vd_finite_or_zero(vd_t x) {
    return _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(_mm512_sub_pd(x, x), _mm512_setzero_pd(), _CMP_EQ_OQ), x);
}
static inline vd_t vd_count_gt(vd_t acc, vd_t x, vd_t t) {
    return _mm512_mask_add_pd(acc, _mm512_cmp_pd_mask(x, t, _CMP_GT_OQ), acc, _mm512_set1_pd(1.0));
}
static inline vd_t vd_mul_nz(vd_t e, vd_t d) { /* as vf_mul_nz */
    return _mm512_maskz_mul_pd(_mm512_cmp_pd_mask(e, _mm512_setzero_pd(), _CMP_NEQ_UQ), e, d);
}
static inline int vd_any_gt(vd_t a, vd_t b) { return _mm512_cmp_pd_mask(a, b, _CMP_GT_OQ) != 0; }
static inline int vd_all_finite(vd_t x) {
    return _mm512_cmp_pd_mask(_mm512_sub_pd(x, x), _mm512_setzero_pd(), _CMP_EQ_OQ) == 0xFF;
}
static inline double vd_hmax(vd_t v) { return _mm512_reduce_max_pd(v); }
static inline double vd_hsum(vd_t v) { return _mm512_reduce_add_pd(v); }
static inline vd_t vd_exp_clamped_(vd_t x, __mmask8 keep) {
    const __m512d log2e = _mm512_set1_pd(FASTCE_LOG2E);
    const __m512d ln2_hi = _mm512_set1_pd(FASTCE_LN2_HI_D);
    const __m512d ln2_lo = _mm512_set1_pd(FASTCE_LN2_LO_D);
    __m512d n = _mm512_roundscale_pd(_mm512_mul_pd(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512d r = _mm512_fnmadd_pd(n, ln2_hi, x);
    r = _mm512_fnmadd_pd(n, ln2_lo, r);
    __m512d y = _mm512_set1_pd(fastce_exp_poly_d[0]);
    for (int k = 1; k < 14; k++) y = _mm512_fmadd_pd(y, r, _mm512_set1_pd(fastce_exp_poly_d[k]));
    return _mm512_maskz_scalef_pd(keep, y, n);
}
static inline vd_t vd_exp(vd_t x) {
    x = _mm512_max_pd(_mm512_set1_pd(FASTCE_EXP_LO_D), x);
    x = _mm512_min_pd(_mm512_set1_pd(FASTCE_EXP_HI_D), x);
    return vd_exp_clamped_(x, (__mmask8)0xFF);
}
/* The kernels' exp: +0 below FASTCE_EXP_FLUSH_D, exp's bits elsewhere (see vf_exp_flush). */
static inline vd_t vd_exp_flush(vd_t x) {
    const __mmask8 keep = _mm512_cmp_pd_mask(x, _mm512_set1_pd(FASTCE_EXP_FLUSH_D), _CMP_NLT_UQ);
    return vd_exp_clamped_(_mm512_min_pd(_mm512_set1_pd(FASTCE_EXP_HI_D), x), keep);
}
static inline vd_t vd_exp_flush_bounded(vd_t x) { /* exp_flush for x <= FASTCE_EXP_BOUNDED_MAX or NaN */
    return vd_exp_clamped_(x, _mm512_cmp_pd_mask(x, _mm512_set1_pd(FASTCE_EXP_FLUSH_D), _CMP_NLT_UQ));
}
static inline vd_t vd_exp_floored(vd_t x) { return vd_exp_flush_bounded(x); }
static inline vd_t vd_exp_floored_add(vd_t x, vd_t acc) { return _mm512_add_pd(acc, vd_exp_floored(x)); }

/* double log: lane by lane through libm (used once per row, never per logit). */
static inline vd_t vd_log(vd_t x) {
    double lanes[VD_W];
    vd_store(lanes, x);
    for (int i = 0; i < VD_W; i++) lanes[i] = log(lanes[i]);
    return vd_load(lanes);
}

#endif
