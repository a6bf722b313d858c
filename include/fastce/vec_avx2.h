/* fastce/vec_avx2.h: AVX2 + FMA vector math (8 floats, 4 doubles). Compile with -mavx2 -mfma.
 *
 * exp(x), float: n = round(8 x log2 e) (rounded once, by a magic-number FMA), r = x - n ln2/8
 * (Cody-Waite: ln2/8 split in two so n*(ln2/8)_hi is exact), |r| <= ln2/16, and
 * exp(x) = s (1 + P(r)) computed as fma(P, s, s), s = 2^(n >> 3) 2^((n & 7)/8) from a table of
 * eight (vpermps) and the exponent bits, P of degree 4 (math_consts.h; XNNPACK's rr2_lut8_p4
 * shape). Measured max error 0.92 ulp over every float in [-87, 88] against exp in double (the
 * 2^n form with a degree-6 polynomial on |r| <= ln2/2 before it: 0.91 ulp, two FMAs more a
 * vector); tests/test_vector_math.py sweeps it on every ISA and asserts <= 2 ulp. Results in
 * the subnormal range take s as two factors, 2^((n & 7)/8) 2^e1 and then 2^e2, so 2^128
 * overflows to inf as it should; they round twice (< 1 subnormal ulp). float vectors whose
 * results are all normal skip the clamps and the second factor (vf_exp below).
 * exp(x), double: n = round(x log2 e), r = x - n ln2, Taylor series to r^13 (truncation
 *           < 5e-18 relative on |r| <= ln2/2), times 2^n in two factors; measured max error
 *           1.0 ulp over [-745, 64].
 * Inputs are clamped to [lo, hi] with the NaN-propagating operand order (MAXPS/MINPS return the
 * second operand when either is NaN), so -inf -> 0, +inf -> inf, NaN -> NaN.
 * The kernels' hot loops call vf_exp_flush_bounded: exp_flush's bits (so the same 0.92 ulp
 * where the result is normal, +0 below -87) for x <= 88, with no range check; their sums of
 * exponentials call vf_exp_floored, which gives exp(-87) instead of that +0 and reduces x with
 * ln2/8 in one part (one FMA fewer, |x| 2.75e-9 relative more error: math_consts.h).
 */
#ifndef FASTCE_VEC_AVX2_H
#define FASTCE_VEC_AVX2_H
#if !(defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#error "fastce/vec_avx2.h needs -mavx2 -mfma -mf16c (its row of fastce/build_table.h)"
#endif
#include <immintrin.h>
#include <math.h>
#include "fastce/math_consts.h"
#include <stdint.h>

/* ---------------- float ---------------- */
typedef __m256 vf_t;
#define VF_W 8

static inline __m256i vf_tail_mask(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline vf_t vf_load(const float *p) { return _mm256_loadu_ps(p); }
static inline void vf_store(float *p, vf_t v) { _mm256_storeu_ps(p, v); }
/* Lanes [0, n) from p, the rest `fill`; masked lanes are not read (no fault past the end). */
static inline vf_t vf_load_tail(const float *p, int64_t n, float fill) {
    __m256i m = vf_tail_mask(n);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
static inline void vf_store_tail(float *p, vf_t v, int64_t n) { _mm256_maskstore_ps(p, vf_tail_mask(n), v); }
static inline vf_t vf_set1(float a) { return _mm256_set1_ps(a); }
/* Non-temporal store (p 32-byte aligned): bypasses the cache, so no read-for-ownership. */
static inline void vf_stream(float *p, vf_t v) { _mm256_stream_ps(p, v); }
/* Orders streamed stores before anything that follows (another thread's reads included). */
static inline void fastce_store_fence(void) { _mm_sfence(); }
static inline vf_t vf_add(vf_t a, vf_t b) { return _mm256_add_ps(a, b); }
static inline vf_t vf_sub(vf_t a, vf_t b) { return _mm256_sub_ps(a, b); }
static inline vf_t vf_mul(vf_t a, vf_t b) { return _mm256_mul_ps(a, b); }
static inline vf_t vf_fmadd(vf_t a, vf_t b, vf_t c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf_t vf_max(vf_t a, vf_t b) { return _mm256_max_ps(a, b); }
/* m, or 0 where m == -inf (see ce_shift). */
static inline vf_t vf_shift(vf_t m) {
    return _mm256_andnot_ps(_mm256_cmp_ps(m, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ), m);
}
/* x where finite, else 0 (x - x is 0 only for finite x). */
static inline vf_t vf_finite_or_zero(vf_t x) {
    return _mm256_and_ps(_mm256_cmp_ps(_mm256_sub_ps(x, x), _mm256_setzero_ps(), _CMP_EQ_OQ), x);
}
/* acc + 1 in the lanes where x > t (ordered: NaN counts nowhere). */
static inline vf_t vf_count_gt(vf_t acc, vf_t x, vf_t t) {
    return _mm256_add_ps(acc, _mm256_and_ps(_mm256_cmp_ps(x, t, _CMP_GT_OQ), _mm256_set1_ps(1.0f)));
}
/* e * d in the lanes where e != 0 (NaN included), +0 where e == 0: a probability 0 times an
   infinite log-ratio contributes 0 to the KL sum, never 0 * inf = NaN. */
static inline vf_t vf_mul_nz(vf_t e, vf_t d) {
    return _mm256_and_ps(_mm256_mul_ps(e, d), _mm256_cmp_ps(e, _mm256_setzero_ps(), _CMP_NEQ_UQ));
}
/* Whether a > b in any lane (ordered: NaN never), and whether every lane is finite. */
static inline int vf_any_gt(vf_t a, vf_t b) { return _mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_GT_OQ)) != 0; }
static inline int vf_all_finite(vf_t x) {
    return _mm256_movemask_ps(_mm256_cmp_ps(_mm256_sub_ps(x, x), _mm256_setzero_ps(), _CMP_EQ_OQ)) == 0xFF;
}
static inline double vf_hmax(vf_t v) {
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    a = _mm_max_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}
static inline double vd_hsum_(__m256d v) {
    __m128d a = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    a = _mm_add_sd(a, _mm_unpackhi_pd(a, a));
    return _mm_cvtsd_f64(a);
}
/* Horizontal sum, widened to double before adding. */
static inline double vf_hsum(vf_t v) {
    return vd_hsum_(_mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                                  _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
}
/* The argument reduction of exp's two paths below: n = round(8 x log2 e), rounded once by
   FASTCE_ROUND_MAGIC_F (|8 x log2 e| < 2^22 for every x they see) and left in *f's low
   mantissa bits (vf_exp_round_, which the sums' exp shares), and r = x - n ln2/8,
   |r| <= ln2/16, with ln2/8 in two parts (math_consts.h). */
static inline __m256 vf_exp_round_(__m256 x, __m256 *f) {
    const __m256 magic = _mm256_set1_ps(FASTCE_ROUND_MAGIC_F);
    *f = _mm256_fmadd_ps(x, _mm256_set1_ps((float)(8.0 * FASTCE_LOG2E)), magic);
    return _mm256_sub_ps(*f, magic);
}
static inline __m256 vf_exp_reduce_(__m256 x, __m256 *f, __m256 *n) {
    *n = vf_exp_round_(x, f);
    const __m256 r = _mm256_fnmadd_ps(*n, _mm256_set1_ps(FASTCE_LN2_HI_F / 8), x);
    return _mm256_fnmadd_ps(*n, _mm256_set1_ps(FASTCE_LN2_LO_F / 8), r);
}
/* exp(r) - 1 for |r| <= ln2/16: r (c1 + r (c2 + r (c3 + c4 r))), one Horner chain. */
static inline __m256 vf_expm1_reduced_(__m256 r) {
    __m256 t = _mm256_set1_ps(fastce_exp8_poly_f[0]);
    for (int k = 1; k < FASTCE_EXP8_POLY_F_LEN; k++) t = _mm256_fmadd_ps(t, r, _mm256_set1_ps(fastce_exp8_poly_f[k]));
    return _mm256_mul_ps(t, r);
}
/* Any x: clamped, and 2^(n/8) applied as 2^((n & 7)/8) 2^e1 (exact, normal), then 2^e2
   (e1 + e2 = n >> 3, see the top of this file). */
static inline vf_t vf_exp_any_(vf_t x) {
    x = _mm256_max_ps(_mm256_set1_ps(FASTCE_EXP_LO_F), x);
    x = _mm256_min_ps(_mm256_set1_ps(FASTCE_EXP_HI_F), x);
    __m256 f, n;
    const __m256 p = vf_expm1_reduced_(vf_exp_reduce_(x, &f, &n));
    const __m256i ni = _mm256_cvtps_epi32(n), e = _mm256_srai_epi32(ni, 3);
    const __m256 t = _mm256_permutevar8x32_ps(_mm256_loadu_ps(fastce_exp2_8th_f), ni); /* lanes n & 7 */
    __m256i n1 = _mm256_srai_epi32(e, 1), n2 = _mm256_sub_epi32(e, n1);
    __m256 p1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
    __m256 p2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
    const __m256 s1 = _mm256_mul_ps(t, p1);
    return _mm256_mul_ps(_mm256_fmadd_ps(p, s1, s1), p2);
}
/* exp (and vf_exp_flush). When every lane has x in [-86.5, 88] (|x - 0.75| <= 87.25, false for NaN
   and +-inf), n >> 3 is in [-125, 127], s (1 + P) is a normal float and needs neither the
   clamps nor the two factors: s comes straight from f's bits and the table. Other vectors take
   vf_exp_any_. Both compute the same n, r and P, and fma(P, s, s) scaled by a power of two, so
   the result is the same bit for bit wherever it is normal; the fast path is measured faster
   (docs/performance/notes_kernels.md). */
static inline int vf_exp_all_normal_(vf_t x) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 dist = _mm256_and_ps(_mm256_sub_ps(x, _mm256_set1_ps(0.75f)), abs_mask);
    return !_mm256_movemask_ps(_mm256_cmp_ps(dist, _mm256_set1_ps(87.25f), _CMP_NLE_UQ));
}
/* s = 2^(n/8) from vf_exp_reduce_'s *f, for n >> 3 in [-126, 127]: f's bits are
   0x4B400000 + n, so shifted left by 20 they are (n << 20) modulo 2^32, that is
   ((n >> 3) << 23) + ((n & 7) << 20); vpermps picks, by their low 3 bits (n & 7), a table of
   2^(k/8)'s bits (exponent field 127) less k << 20, and one integer add gives s's bits. */
static inline __m256 vf_exp_scale_(__m256 f) {
    const __m256i k20 = _mm256_setr_epi32(0, 1 << 20, 2 << 20, 3 << 20, 4 << 20, 5 << 20, 6 << 20, 7 << 20);
    const __m256i table = _mm256_sub_epi32(_mm256_castps_si256(_mm256_loadu_ps(fastce_exp2_8th_f)), k20);
    const __m256i fb = _mm256_castps_si256(f);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_slli_epi32(fb, 20), _mm256_permutevar8x32_epi32(table, fb)));
}
/* s (1 + P(r)), s = 2^(n/8) from f, for a reduced r = x - n ln2/8. */
static inline vf_t vf_exp_join_(__m256 r, __m256 f) {
    const __m256 p = vf_expm1_reduced_(r);
    const __m256 s = vf_exp_scale_(f);
    return _mm256_fmadd_ps(p, s, s);
}
static inline vf_t vf_exp_normal_(vf_t x) {
    __m256 f, n;
    const __m256 r = vf_exp_reduce_(x, &f, &n);
    return vf_exp_join_(r, f);
}
static inline vf_t vf_exp(vf_t x) {
    return vf_exp_all_normal_(x) ? vf_exp_normal_(x) : vf_exp_any_(x);
}
/* The kernels' exp: +0 below FASTCE_EXP_FLUSH_F (math_consts.h), exp's bits elsewhere. No
   subnormal is ever formed, so no microcode assist (a -inf tail fill or masked logit cost one
   per vector): the general path sees x >= FASTCE_EXP_FLUSH_F, whose results are normal. */
static inline vf_t vf_exp_flush(vf_t x) {
    if (vf_exp_all_normal_(x)) return vf_exp_normal_(x);
    const __m256 lo = _mm256_set1_ps(FASTCE_EXP_FLUSH_F);
    const __m256 keep = _mm256_cmp_ps(x, lo, _CMP_NLT_UQ); /* NaN kept */
    return _mm256_and_ps(vf_exp_any_(_mm256_max_ps(lo, x)), keep);
}

/* exp_flush for x <= FASTCE_EXP_BOUNDED_MAX or NaN (math_consts.h), without the range check:
   lanes below FASTCE_EXP_FLUSH_F are computed at it and masked to +0. In the AVX2 forward's
   sweep (max, sum of exps) the check and its branch were 5 of about 22 instructions a vector. */
static inline vf_t vf_exp_flush_bounded(vf_t x) {
    const __m256 lo = _mm256_set1_ps(FASTCE_EXP_FLUSH_F);
    const __m256 keep = _mm256_cmp_ps(x, lo, _CMP_NLT_UQ); /* NaN kept */
    return _mm256_and_ps(vf_exp_normal_(_mm256_max_ps(lo, x)), keep); /* max(lo, NaN) = NaN */
}

/* exp_flush_bounded without the flush: lanes below FASTCE_EXP_FLUSH_F give exp(FASTCE_EXP_FLUSH_F)
   (1.6e-38) instead of +0, two instructions fewer (AVX2 has no masked scale). Only for the terms
   of a sum that holds a term >= 1, at x <= FASTCE_SUM_ARG_MAX (math_consts.h). */
static inline __m256 vf_exp_floor_arg_(vf_t x) {
    return _mm256_max_ps(_mm256_set1_ps(FASTCE_EXP_FLUSH_F), x); /* max(lo, NaN) = NaN */
}
/* The sums' exp: r in one FMA with FASTCE_LN2_8TH_F (math_consts.h: |x| 2.75e-9 relative more
   error, a fraction of an ulp of the sums it joins). */
static inline vf_t vf_exp_floored(vf_t x) {
    x = vf_exp_floor_arg_(x);
    __m256 f;
    const __m256 n = vf_exp_round_(x, &f);
    return vf_exp_join_(_mm256_fnmadd_ps(n, _mm256_set1_ps(FASTCE_LN2_8TH_F), x), f);
}
/* acc + exp_floored(x): the step of the kernels' sums of exponentials. (Fusing the scale into
   the addition, fma(1 + P, s, acc), saves an instruction but rounds 1 + P first: 1.59 ulp
   where this form measures 0.92.) */
static inline vf_t vf_exp_floored_add(vf_t x, vf_t acc) { return _mm256_add_ps(acc, vf_exp_floored(x)); }

/* log(x) for the kernels' sums of exponentials (x >= 1, or 0, inf, NaN): x = m 2^e with
 * m in [sqrt(1/2), sqrt(2)), log x = e ln2 + log(1 + f), f = m - 1, by cephes' logf polynomial
 * (measured max error 0.78 ulp over [1.01, 1e30]; tests/test_vector_math.py). 0 -> -inf, +inf -> +inf, NaN or x < 0 -> NaN.
 * Subnormal x is not supported (never produced: a sum of exps that holds exp(0) is >= 1). */
static inline __attribute__((always_inline)) vf_t vf_log(vf_t x) { /* inlined: a call per tile cost (notes_kernels.md) */
    const __m256i xi = _mm256_castps_si256(x);
    __m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(xi, 23), _mm256_set1_epi32(126)));
    __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(xi, _mm256_set1_epi32(0x007fffff)),
                                                   _mm256_set1_epi32(0x3f000000))); /* [0.5, 1) */
    const __m256 small = _mm256_cmp_ps(m, _mm256_set1_ps(FASTCE_SQRT_HALF_F), _CMP_LT_OQ);
    e = _mm256_sub_ps(e, _mm256_and_ps(small, _mm256_set1_ps(1.0f)));
    const __m256 f = _mm256_sub_ps(_mm256_add_ps(m, _mm256_and_ps(small, m)), _mm256_set1_ps(1.0f));
    const __m256 z = _mm256_mul_ps(f, f);
    __m256 y = _mm256_set1_ps(fastce_log_poly_f[0]);
    for (int k = 1; k < 9; k++) y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(fastce_log_poly_f[k]));
    y = _mm256_mul_ps(_mm256_mul_ps(y, f), z);
    y = _mm256_fmadd_ps(e, _mm256_set1_ps(FASTCE_LN2_LO_F), y);
    y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), y);
    __m256 r = _mm256_fmadd_ps(e, _mm256_set1_ps(FASTCE_LN2_HI_F), _mm256_add_ps(f, y));
    r = _mm256_blendv_ps(r, _mm256_set1_ps(-INFINITY), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_EQ_OQ));
    r = _mm256_blendv_ps(r, x, _mm256_cmp_ps(x, _mm256_set1_ps(INFINITY), _CMP_EQ_OQ));
    r = _mm256_blendv_ps(r, _mm256_set1_ps(NAN), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_NGE_UQ));
    return r;
}

/* ---------------- float16 (vh_) and bfloat16 (vb_) storage ----------------
 * 8 values widened to a float vector on load (F16C's VCVTPH2PS; bfloat16: zero-extend and shift
 * left 16) and narrowed on store, rounding to nearest even (VCVTPS2PH with imm 0; bfloat16: the
 * integer rounding of fastce/half.h, NaN kept quiet). Tails go through a stack buffer: AVX2 has
 * no 16-bit masked loads or stores. Needs -mf16c. */
#include <string.h>
static inline vf_t vh_load(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
static inline __m128i vh_bits_(vf_t v) { return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT); }
static inline vf_t vb_load(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}
static inline __m128i vb_bits_(vf_t v) {
    const __m256i u = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
    const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    /* NaN lanes, truncated and made quiet, only in a vector that holds one: a blend on every
       vector cost a measurable share of the bfloat16 loss+grad (docs/performance/notes_kernels.md). */
    if (__builtin_expect(_mm256_movemask_ps(nan) != 0, 0)) {
        const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
        r = _mm256_blendv_epi8(r, quiet, _mm256_castps_si256(nan));
    }
    /* 32 -> 16 bits: packus works per 128-bit lane (r0-3 r0-3 | r4-7 r4-7); qwords 0 and 2 */
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08));
}
#define FASTCE_VEC_DEFINE_HALF_AVX2(P)                                                            \
    static inline void P##_store(uint16_t *p, vf_t v) { _mm_storeu_si128((__m128i *)p, P##_bits_(v)); } \
    static inline void P##_stream(uint16_t *p, vf_t v) { _mm_stream_si128((__m128i *)p, P##_bits_(v)); } \
    static inline vf_t P##_load_tail(const uint16_t *p, int64_t n, float fill) {                  \
        uint16_t b[8] = {0};                                                                      \
        memcpy(b, p, (size_t)n * 2);                                                              \
        return _mm256_blendv_ps(_mm256_set1_ps(fill), P##_load(b), _mm256_castsi256_ps(vf_tail_mask(n))); \
    }                                                                                             \
    static inline void P##_store_tail(uint16_t *p, vf_t v, int64_t n) {                          \
        uint16_t b[8];                                                                            \
        P##_store(b, v);                                                                          \
        memcpy(p, b, (size_t)n * 2);                                                              \
    }
FASTCE_VEC_DEFINE_HALF_AVX2(vh)
FASTCE_VEC_DEFINE_HALF_AVX2(vb)

/* ---------------- double ---------------- */
typedef __m256d vd_t;
#define VD_W 4

static inline __m256i vd_tail_mask(int64_t n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}
static inline vd_t vd_load(const double *p) { return _mm256_loadu_pd(p); }
static inline void vd_store(double *p, vd_t v) { _mm256_storeu_pd(p, v); }
static inline vd_t vd_load_tail(const double *p, int64_t n, double fill) {
    __m256i m = vd_tail_mask(n);
    return _mm256_blendv_pd(_mm256_set1_pd(fill), _mm256_maskload_pd(p, m), _mm256_castsi256_pd(m));
}
static inline void vd_store_tail(double *p, vd_t v, int64_t n) { _mm256_maskstore_pd(p, vd_tail_mask(n), v); }
static inline vd_t vd_set1(double a) { return _mm256_set1_pd(a); }
static inline void vd_stream(double *p, vd_t v) { _mm256_stream_pd(p, v); }
static inline vd_t vd_add(vd_t a, vd_t b) { return _mm256_add_pd(a, b); }
static inline vd_t vd_sub(vd_t a, vd_t b) { return _mm256_sub_pd(a, b); }
static inline vd_t vd_mul(vd_t a, vd_t b) { return _mm256_mul_pd(a, b); }
static inline vd_t vd_fmadd(vd_t a, vd_t b, vd_t c) { return _mm256_fmadd_pd(a, b, c); }
static inline vd_t vd_max(vd_t a, vd_t b) { return _mm256_max_pd(a, b); }
static inline vd_t vd_shift(vd_t m) {
    return _mm256_andnot_pd(_mm256_cmp_pd(m, _mm256_set1_pd(-INFINITY), _CMP_EQ_OQ), m);
}
static inline vd_t vd_finite_or_zero(vd_t x) {
    return _mm256_and_pd(_mm256_cmp_pd(_mm256_sub_pd(x, x), _mm256_setzero_pd(), _CMP_EQ_OQ), x);
}
static inline vd_t vd_count_gt(vd_t acc, vd_t x, vd_t t) {
    return _mm256_add_pd(acc, _mm256_and_pd(_mm256_cmp_pd(x, t, _CMP_GT_OQ), _mm256_set1_pd(1.0)));
}
static inline vd_t vd_mul_nz(vd_t e, vd_t d) { /* as vf_mul_nz */
    return _mm256_and_pd(_mm256_mul_pd(e, d), _mm256_cmp_pd(e, _mm256_setzero_pd(), _CMP_NEQ_UQ));
}
static inline int vd_any_gt(vd_t a, vd_t b) { return _mm256_movemask_pd(_mm256_cmp_pd(a, b, _CMP_GT_OQ)) != 0; }
static inline int vd_all_finite(vd_t x) {
    return _mm256_movemask_pd(_mm256_cmp_pd(_mm256_sub_pd(x, x), _mm256_setzero_pd(), _CMP_EQ_OQ)) == 0xF;
}
static inline double vd_hmax(vd_t v) {
    __m128d a = _mm_max_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    a = _mm_max_sd(a, _mm_unpackhi_pd(a, a));
    return _mm_cvtsd_f64(a);
}
static inline double vd_hsum(vd_t v) { return vd_hsum_(v); }
static inline vd_t vd_exp_clamped_(vd_t x) {
    const __m256d log2e = _mm256_set1_pd(FASTCE_LOG2E);
    const __m256d ln2_hi = _mm256_set1_pd(FASTCE_LN2_HI_D);
    const __m256d ln2_lo = _mm256_set1_pd(FASTCE_LN2_LO_D);
    __m256d n = _mm256_round_pd(_mm256_mul_pd(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d r = _mm256_fnmadd_pd(n, ln2_hi, x);
    r = _mm256_fnmadd_pd(n, ln2_lo, r);
    __m256d y = _mm256_set1_pd(fastce_exp_poly_d[0]);
    for (int k = 1; k < 14; k++) y = _mm256_fmadd_pd(y, r, _mm256_set1_pd(fastce_exp_poly_d[k]));
    __m128i ni = _mm256_cvtpd_epi32(n);
    __m128i n1 = _mm_srai_epi32(ni, 1), n2 = _mm_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi64x(1023);
    __m256d p1 = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(n1), bias), 52));
    __m256d p2 = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(n2), bias), 52));
    return _mm256_mul_pd(_mm256_mul_pd(y, p1), p2);
}
static inline vd_t vd_exp(vd_t x) {
    x = _mm256_max_pd(_mm256_set1_pd(FASTCE_EXP_LO_D), x);
    return vd_exp_clamped_(_mm256_min_pd(_mm256_set1_pd(FASTCE_EXP_HI_D), x));
}
/* The kernels' exp: +0 below FASTCE_EXP_FLUSH_D, exp's bits elsewhere (see vf_exp_flush). */
static inline vd_t vd_exp_flush(vd_t x) {
    const __m256d lo = _mm256_set1_pd(FASTCE_EXP_FLUSH_D);
    const __m256d keep = _mm256_cmp_pd(x, lo, _CMP_NLT_UQ);
    x = _mm256_min_pd(_mm256_set1_pd(FASTCE_EXP_HI_D), _mm256_max_pd(lo, x));
    return _mm256_and_pd(vd_exp_clamped_(x), keep);
}

static inline vd_t vd_exp_flush_bounded(vd_t x) { return vd_exp_flush(x); }
/* As vf_exp_floored: exp(FASTCE_EXP_FLUSH_D) below it instead of +0, for x <= 88 or NaN. */
static inline vd_t vd_exp_floored(vd_t x) { return vd_exp_clamped_(_mm256_max_pd(_mm256_set1_pd(FASTCE_EXP_FLUSH_D), x)); }
static inline vd_t vd_exp_floored_add(vd_t x, vd_t acc) { return _mm256_add_pd(acc, vd_exp_floored(x)); }
/* double log: lane by lane through libm (used once per row, never per logit). */
static inline vd_t vd_log(vd_t x) {
    double lanes[VD_W];
    vd_store(lanes, x);
    for (int i = 0; i < VD_W; i++) lanes[i] = log(lanes[i]);
    return vd_load(lanes);
}

#endif
