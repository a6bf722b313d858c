/* fastce/vec_neon.h: AArch64 Advanced SIMD (NEON) vector math (4 floats, 2 doubles).
 * Advanced SIMD (with FMA, float16 conversions and TBL) is baseline on AArch64; the row's flag
 * -march=armv8-a only pins the kernels to that baseline (fastce/build_table.h).
 *
 * The algorithms are vec_avx2.h's, instruction for instruction where NEON has one, so that the
 * float results are the same bits as AVX2's (every FMA of AVX2's is an FMA here: fmadd(a, b, c)
 * is vfmaq_f32(c, a, b), fnmadd(a, b, c) is vfmsq_f32(c, a, b)):
 * exp(x), float: n = round(8 x log2 e) (rounded once, by a magic-number FMA), r = x - n ln2/8
 *   (Cody-Waite: ln2/8 in two parts so n (ln2/8)_hi is exact), |r| <= ln2/16, and
 *   exp(x) = s (1 + P(r)) computed as fma(P, s, s), s = 2^(n >> 3) 2^((n & 7)/8), P of degree 4
 *   (math_consts.h; XNNPACK's rr2_lut8_p4 shape). AVX2 looks the eight entries 2^(k/8) up with
 *   vpermps; here TBL (vqtbl2q_u8) picks the four bytes of entry n & 7 from the 32-byte table
 *   held in two registers. Vectors whose results are all normal skip the clamps and the
 *   two-factor scale (vf_exp below); the others clamp to [-104, 88.8] and apply
 *   2^(n >> 3) as two factors, so subnormal results round twice (< 1 subnormal ulp) and 2^128
 *   overflows to inf. Measured max error: tools/neon_ulp_sweep.c, docs/design/neon.md.
 * exp(x), double: n = round(x log2 e) (FRINTN), r = x - n ln2 (two parts), Taylor series to
 *   r^13, times 2^n in two factors (exactly vec_avx2.h's vd_exp).
 * Clamps with FMAX/FMIN propagate NaN (as MAXPS/MINPS with the clamp first do), so -inf -> 0,
 * +inf -> inf, NaN -> NaN.
 * The kernels' exps (math_consts.h has their contracts):
 *   vf_exp_flush            +0 below FASTCE_EXP_FLUSH_F (-87), exp's bits elsewhere;
 *   vf_exp_flush_bounded    the same bits for x <= 88 (and NaN, -inf), no range check;
 *   vf_exp_floored          the sums' exp. AVX2 reduces it with ln2/8 in one part (one FMA
 *                           fewer, |x| 2.75e-9 relative more error); here it keeps the two-part
 *                           reduction, so its bits are exp_flush_bounded's at and above -87 and
 *                           exp(-87) (1.6e-38) below (a max instead of a compare and a mask).
 *                           With no NEON timing yet, one FMA is not worth a second exp whose
 *                           error the sums must absorb (see docs/design/neon.md).
 * log(x), float: cephes' logf polynomial on m in [sqrt(1/2), sqrt(2)), as vec_avx2.h.
 * log(x), double: libm, lane by lane (once per row).
 *
 * Tails (fewer than 4 floats / 2 doubles): NEON has no masked loads or stores, so a tail is
 * loaded lane by lane (vld1q_lane) into a vector of `fill` and stored lane by lane
 * (vst1q_lane): no byte outside [p, p + n) is touched, as the masked AVX loads guarantee.
 * max(a, b) is a > b ? a : b (FCMGT + BSL), MAXPS's and the scalar path's rule (b when either
 * is NaN), not FMAX's (NaN when either is): the kernels' running maxima behave as on x86.
 * Non-temporal stores: AArch64's STNP is only a hint, and takes register pairs; vf_stream is an
 * ordinary store and fastce_store_fence does nothing, until a NEON machine measures otherwise.
 */
#ifndef FASTCE_VEC_NEON_H
#define FASTCE_VEC_NEON_H
#if !(defined(__aarch64__) && defined(__ARM_NEON) && defined(__ARM_FEATURE_FMA))
#error "fastce/vec_neon.h needs AArch64 Advanced SIMD with FMA (-march=armv8-a: its row of fastce/build_table.h)"
#endif
#include <arm_neon.h>
#include <math.h>
#include <stdint.h>
#include "fastce/math_consts.h"

/* ---------------- float ---------------- */
typedef float32x4_t vf_t;
#define VF_W 4

/* All ones in lanes [0, n), n clamped to [0, 4]. */
static inline uint32x4_t vf_tail_mask(int64_t n) {
    static const uint32_t lane[4] = {0, 1, 2, 3};
    const uint32_t k = n <= 0 ? 0u : n >= 4 ? 4u : (uint32_t)n;
    return vcltq_u32(vld1q_u32(lane), vdupq_n_u32(k));
}
static inline vf_t vf_load(const float *p) { return vld1q_f32(p); }
static inline void vf_store(float *p, vf_t v) { vst1q_f32(p, v); }
/* Lanes [0, n) from p, the rest `fill`; nothing past p + n is read. */
static inline vf_t vf_load_tail(const float *p, int64_t n, float fill) {
    if (n >= 4) return vld1q_f32(p);
    vf_t v = vdupq_n_f32(fill);
    if (n >= 1) v = vld1q_lane_f32(p, v, 0);
    if (n >= 2) v = vld1q_lane_f32(p + 1, v, 1);
    if (n >= 3) v = vld1q_lane_f32(p + 2, v, 2);
    return v;
}
static inline void vf_store_tail(float *p, vf_t v, int64_t n) {
    if (n >= 4) { vst1q_f32(p, v); return; }
    if (n >= 1) vst1q_lane_f32(p, v, 0);
    if (n >= 2) vst1q_lane_f32(p + 1, v, 1);
    if (n >= 3) vst1q_lane_f32(p + 2, v, 2);
}
static inline vf_t vf_set1(float a) { return vdupq_n_f32(a); }
/* The kernels' non-temporal store: an ordinary one here (see the top of this file). */
static inline void vf_stream(float *p, vf_t v) { vst1q_f32(p, v); }
static inline void fastce_store_fence(void) {}
static inline vf_t vf_add(vf_t a, vf_t b) { return vaddq_f32(a, b); }
static inline vf_t vf_sub(vf_t a, vf_t b) { return vsubq_f32(a, b); }
static inline vf_t vf_mul(vf_t a, vf_t b) { return vmulq_f32(a, b); }
static inline vf_t vf_fmadd(vf_t a, vf_t b, vf_t c) { return vfmaq_f32(c, a, b); } /* a b + c, fused */
/* a > b ? a : b per lane (b when either is NaN: MAXPS's rule, see the top of this file). */
static inline vf_t vf_max(vf_t a, vf_t b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
/* m, or 0 where m == -inf (see ce_shift). */
static inline vf_t vf_shift(vf_t m) {
    return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(m), vceqq_f32(m, vdupq_n_f32(-INFINITY))));
}
/* x where finite, else 0 (x - x is 0 only for finite x). */
static inline vf_t vf_finite_or_zero(vf_t x) {
    return vreinterpretq_f32_u32(vandq_u32(vceqq_f32(vsubq_f32(x, x), vdupq_n_f32(0.0f)), vreinterpretq_u32_f32(x)));
}
/* acc + 1 in the lanes where x > t (ordered: NaN counts nowhere). */
static inline vf_t vf_count_gt(vf_t acc, vf_t x, vf_t t) {
    return vaddq_f32(acc, vreinterpretq_f32_u32(vandq_u32(vcgtq_f32(x, t), vreinterpretq_u32_f32(vdupq_n_f32(1.0f)))));
}
/* e * d in the lanes where e != 0 (NaN included), +0 where e == 0 (as vec_avx2.h). */
static inline vf_t vf_mul_nz(vf_t e, vf_t d) {
    return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(vmulq_f32(e, d)), vceqq_f32(e, vdupq_n_f32(0.0f))));
}
/* Whether a > b in any lane (ordered: NaN never), and whether every lane is finite. */
static inline int vf_any_gt(vf_t a, vf_t b) { return vmaxvq_u32(vcgtq_f32(a, b)) != 0; }
static inline int vf_all_finite(vf_t x) { return vminvq_u32(vceqq_f32(vsubq_f32(x, x), vdupq_n_f32(0.0f))) != 0; }
static inline double vf_hmax(vf_t v) { return vmaxvq_f32(v); } /* NaN if any lane is */
/* Horizontal sum, widened to double before adding: (v0 + v2) + (v1 + v3). */
static inline double vf_hsum(vf_t v) {
    return vaddvq_f64(vaddq_f64(vcvt_f64_f32(vget_low_f32(v)), vcvt_high_f64_f32(v)));
}

/* The eight entries 2^(k/8) of math_consts.h's fastce_exp2_8th_f, as bits (`plain`), and
   the same less k << 20 (`minus_k20`, for vf_exp_scale_), loaded into two registers for TBL
   with one LD1. Written out rather than computed from fastce_exp2_8th_f: gcc 12 folds the
   subtraction into constants but then reloads them with two ADRP + LDR pairs per vector
   inside the kernels' loops, where one LD1 of this array is all it takes (tests/c/
   vec_math_sweep.c checks both arrays against fastce_exp2_8th_f). */
static const uint32_t fastce_neon_exp2_8th_bits[2][8] = {
    {0x3f800000u, 0x3f8b95c2u, 0x3f9837f0u, 0x3fa5fed7u, 0x3fb504f3u, 0x3fc5672au, 0x3fd744fdu, 0x3feac0c7u},
    {0x3f800000u, 0x3f7b95c2u, 0x3f7837f0u, 0x3f75fed7u, 0x3f7504f3u, 0x3f75672au, 0x3f7744fdu, 0x3f7ac0c7u},
};
static inline uint8x16x2_t vf_exp_table_(int minus_k20) {
    return vld1q_u8_x2((const uint8_t *)fastce_neon_exp2_8th_bits[minus_k20 ? 1 : 0]);
}
/* table[i & 7] per lane (vpermps's rule): TBL with the byte indices 4 (i & 7) + {0, 1, 2, 3}. */
static inline uint32x4_t vf_lut8_(uint8x16x2_t table, uint32x4_t i) {
    const uint32x4_t k = vandq_u32(i, vdupq_n_u32(7));
    const uint32x4_t bytes = vmlaq_u32(vdupq_n_u32(0x03020100u), k, vdupq_n_u32(0x04040404u));
    return vreinterpretq_u32_u8(vqtbl2q_u8(table, vreinterpretq_u8_u32(bytes)));
}
/* The argument reduction: n = round(8 x log2 e), rounded once by FASTCE_ROUND_MAGIC_F
   (|8 x log2 e| < 2^22 for every x seen here) and left in *f's low mantissa bits, and
   r = x - n ln2/8, |r| <= ln2/16, with ln2/8 in two parts (math_consts.h). */
static inline float32x4_t vf_exp_round_(float32x4_t x, float32x4_t *f) {
    const float32x4_t magic = vdupq_n_f32(FASTCE_ROUND_MAGIC_F);
    *f = vfmaq_f32(magic, x, vdupq_n_f32((float)(8.0 * FASTCE_LOG2E)));
    return vsubq_f32(*f, magic);
}
static inline float32x4_t vf_exp_reduce_(float32x4_t x, float32x4_t *f, float32x4_t *n) {
    *n = vf_exp_round_(x, f);
    const float32x4_t r = vfmsq_f32(x, *n, vdupq_n_f32(FASTCE_LN2_HI_F / 8));
    return vfmsq_f32(r, *n, vdupq_n_f32(FASTCE_LN2_LO_F / 8));
}
/* exp(r) - 1 for |r| <= ln2/16: r (c1 + r (c2 + r (c3 + c4 r))), one Horner chain. */
static inline float32x4_t vf_expm1_reduced_(float32x4_t r) {
    float32x4_t t = vdupq_n_f32(fastce_exp8_poly_f[0]);
    for (int k = 1; k < FASTCE_EXP8_POLY_F_LEN; k++) t = vfmaq_f32(vdupq_n_f32(fastce_exp8_poly_f[k]), t, r);
    return vmulq_f32(t, r);
}
/* Any x: clamped, and 2^(n/8) applied as 2^((n & 7)/8) 2^e1 (exact, normal), then 2^e2
   (e1 + e2 = n >> 3). */
static inline vf_t vf_exp_any_(vf_t x) {
    x = vmaxq_f32(vdupq_n_f32(FASTCE_EXP_LO_F), x); /* FMAX: NaN stays NaN */
    x = vminq_f32(vdupq_n_f32(FASTCE_EXP_HI_F), x);
    float32x4_t f, n;
    const float32x4_t p = vf_expm1_reduced_(vf_exp_reduce_(x, &f, &n));
    const int32x4_t ni = vcvtq_s32_f32(n), e = vshrq_n_s32(ni, 3); /* n is an integer: exact */
    const float32x4_t t = vreinterpretq_f32_u32(vf_lut8_(vf_exp_table_(0), vreinterpretq_u32_s32(ni)));
    const int32x4_t n1 = vshrq_n_s32(e, 1), n2 = vsubq_s32(e, n1);
    const float32x4_t p1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, vdupq_n_s32(127)), 23));
    const float32x4_t p2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, vdupq_n_s32(127)), 23));
    const float32x4_t s1 = vmulq_f32(t, p1);
    return vmulq_f32(vfmaq_f32(s1, p, s1), p2);
}
/* Whether every lane has x in [-86.5, 88] (|x - 0.75| <= 87.25, false for NaN and +-inf): then
   n >> 3 is in [-125, 127] and s (1 + P) is a normal float, taken without clamps or the two
   factors (vf_exp_normal_), the same bits as vf_exp_any_'s. */
static inline int vf_exp_all_normal_(vf_t x) {
    const float32x4_t dist = vabsq_f32(vsubq_f32(x, vdupq_n_f32(0.75f)));
    return vminvq_u32(vcleq_f32(dist, vdupq_n_f32(87.25f))) != 0;
}
/* s = 2^(n/8) from vf_exp_round_'s *f, for n >> 3 in [-126, 127]: f's bits are 0x4B400000 + n,
   so shifted left by 20 they are ((n >> 3) << 23) + ((n & 7) << 20) modulo 2^32; TBL picks, by
   n & 7, 2^(k/8)'s bits less k << 20, and one integer add gives s's bits. */
static inline float32x4_t vf_exp_scale_(float32x4_t f) {
    const uint32x4_t fb = vreinterpretq_u32_f32(f);
    return vreinterpretq_f32_u32(vaddq_u32(vshlq_n_u32(fb, 20), vf_lut8_(vf_exp_table_(1), fb)));
}
/* s (1 + P(r)) = fma(P, s, s), s = 2^(n/8) from f, for a reduced r = x - n ln2/8. */
static inline vf_t vf_exp_join_(float32x4_t r, float32x4_t f) {
    const float32x4_t p = vf_expm1_reduced_(r);
    const float32x4_t s = vf_exp_scale_(f);
    return vfmaq_f32(s, p, s);
}
static inline vf_t vf_exp_normal_(vf_t x) {
    float32x4_t f, n;
    const float32x4_t r = vf_exp_reduce_(x, &f, &n);
    return vf_exp_join_(r, f);
}
static inline vf_t vf_exp(vf_t x) { return vf_exp_all_normal_(x) ? vf_exp_normal_(x) : vf_exp_any_(x); }
/* The lanes to keep at the flush: x >= FASTCE_EXP_FLUSH_F, or NaN (not x < lo). */
static inline uint32x4_t vf_exp_keep_(vf_t x) { return vmvnq_u32(vcltq_f32(x, vdupq_n_f32(FASTCE_EXP_FLUSH_F))); }
/* The kernels' exp: +0 below FASTCE_EXP_FLUSH_F (math_consts.h), exp's bits elsewhere; no
   subnormal is formed (the general path sees x >= FASTCE_EXP_FLUSH_F). */
static inline vf_t vf_exp_flush(vf_t x) {
    if (vf_exp_all_normal_(x)) return vf_exp_normal_(x);
    const float32x4_t lo = vdupq_n_f32(FASTCE_EXP_FLUSH_F);
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(vf_exp_any_(vmaxq_f32(lo, x))), vf_exp_keep_(x)));
}
/* exp_flush for x <= FASTCE_EXP_BOUNDED_MAX or NaN (math_consts.h), without the range check:
   lanes below FASTCE_EXP_FLUSH_F are computed at it and masked to +0. */
static inline vf_t vf_exp_flush_bounded(vf_t x) {
    const float32x4_t lo = vdupq_n_f32(FASTCE_EXP_FLUSH_F);
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(vf_exp_normal_(vmaxq_f32(lo, x))), vf_exp_keep_(x)));
}
/* The sums' exp, for x <= FASTCE_SUM_ARG_MAX or NaN: exp_flush_bounded's bits at and above
   FASTCE_EXP_FLUSH_F, exp(FASTCE_EXP_FLUSH_F) below (math_consts.h allows either there). */
static inline vf_t vf_exp_floored(vf_t x) { return vf_exp_normal_(vmaxq_f32(vdupq_n_f32(FASTCE_EXP_FLUSH_F), x)); }
static inline vf_t vf_exp_floored_add(vf_t x, vf_t acc) { return vaddq_f32(acc, vf_exp_floored(x)); }

/* log(x) for the kernels' sums of exponentials (x >= 1, or 0, inf, NaN): x = m 2^e with
 * m in [sqrt(1/2), sqrt(2)), log x = e ln2 + log(1 + f), f = m - 1, by cephes' logf polynomial
 * (vec_avx2.h's vf_log, the same operations). 0 -> -inf, +inf -> +inf, NaN or x < 0 -> NaN.
 * Subnormal x is not supported (never produced: a sum of exps that holds exp(0) is >= 1). */
static inline __attribute__((always_inline)) vf_t vf_log(vf_t x) {
    const uint32x4_t xu = vreinterpretq_u32_f32(x);
    float32x4_t e = vcvtq_f32_s32(vsubq_s32(vreinterpretq_s32_u32(vshrq_n_u32(xu, 23)), vdupq_n_s32(126)));
    const float32x4_t m = vreinterpretq_f32_u32(vorrq_u32(vandq_u32(xu, vdupq_n_u32(0x007fffffu)),
                                                           vdupq_n_u32(0x3f000000u))); /* [0.5, 1) */
    const uint32x4_t small = vcltq_f32(m, vdupq_n_f32(FASTCE_SQRT_HALF_F));
    const uint32x4_t one = vreinterpretq_u32_f32(vdupq_n_f32(1.0f));
    e = vsubq_f32(e, vreinterpretq_f32_u32(vandq_u32(small, one)));
    const float32x4_t f = vsubq_f32(vaddq_f32(m, vreinterpretq_f32_u32(vandq_u32(small, vreinterpretq_u32_f32(m)))),
                                    vdupq_n_f32(1.0f));
    const float32x4_t z = vmulq_f32(f, f);
    float32x4_t y = vdupq_n_f32(fastce_log_poly_f[0]);
    for (int k = 1; k < 9; k++) y = vfmaq_f32(vdupq_n_f32(fastce_log_poly_f[k]), y, f);
    y = vmulq_f32(vmulq_f32(y, f), z);
    y = vfmaq_f32(y, e, vdupq_n_f32(FASTCE_LN2_LO_F));
    y = vfmsq_f32(y, z, vdupq_n_f32(0.5f));
    float32x4_t r = vfmaq_f32(vaddq_f32(f, y), e, vdupq_n_f32(FASTCE_LN2_HI_F));
    r = vbslq_f32(vceqq_f32(x, vdupq_n_f32(0.0f)), vdupq_n_f32(-INFINITY), r);
    r = vbslq_f32(vceqq_f32(x, vdupq_n_f32(INFINITY)), x, r);
    r = vbslq_f32(vmvnq_u32(vcgeq_f32(x, vdupq_n_f32(0.0f))), vdupq_n_f32(NAN), r); /* x < 0 or NaN */
    return r;
}

/* ---------------- float16 (vh_) and bfloat16 (vb_) storage ----------------
 * 4 values widened to a float vector on load and narrowed on store, rounding to nearest even:
 * float16 by FCVTL / FCVTN (vcvt_f32_f16 / vcvt_f16_f32: baseline on AArch64, nearest even
 * under the default FPCR, NaN made quiet with its sign and top payload bits, overflow to inf,
 * subnormal halves exact), bfloat16 by a 16-bit shift (USHLL, vshll_n_u16) and the integer
 * rounding of fastce/half.h: (u + 0x7fff + lsb) >> 16, NaN lanes truncated and made quiet
 * (| 0x40), +-inf kept (BFCVTN is ARMv8.6, not baseline). Tails lane by lane, as the floats. */
static inline vf_t vh_widen_(uint16x4_t h) { return vcvt_f32_f16(vreinterpret_f16_u16(h)); }
static inline uint16x4_t vh_bits_(vf_t v) { return vreinterpret_u16_f16(vcvt_f16_f32(v)); }
static inline vf_t vb_widen_(uint16x4_t h) { return vreinterpretq_f32_u32(vshll_n_u16(h, 16)); }
static inline uint16x4_t vb_bits_(vf_t v) {
    const uint32x4_t u = vreinterpretq_u32_f32(v);
    const uint32x4_t lsb = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
    const uint16x4_t r = vshrn_n_u32(vaddq_u32(u, vaddq_u32(lsb, vdupq_n_u32(0x7fffu))), 16);
    const uint16x4_t quiet = vorr_u16(vshrn_n_u32(u, 16), vdup_n_u16(0x40));
    const uint16x4_t nan = vmovn_u32(vmvnq_u32(vceqq_f32(v, v)));
    return vbsl_u16(nan, quiet, r);
}
static inline uint16x4_t v16_load_tail_(const uint16_t *p, int64_t n) {
    uint16x4_t h = vdup_n_u16(0);
    if (n >= 1) h = vld1_lane_u16(p, h, 0);
    if (n >= 2) h = vld1_lane_u16(p + 1, h, 1);
    if (n >= 3) h = vld1_lane_u16(p + 2, h, 2);
    return h;
}
static inline void v16_store_tail_(uint16_t *p, uint16x4_t h, int64_t n) {
    if (n >= 1) vst1_lane_u16(p, h, 0);
    if (n >= 2) vst1_lane_u16(p + 1, h, 1);
    if (n >= 3) vst1_lane_u16(p + 2, h, 2);
}
#define FASTCE_VEC_DEFINE_HALF_NEON(P)                                                            \
    static inline vf_t P##_load(const uint16_t *p) { return P##_widen_(vld1_u16(p)); }            \
    static inline void P##_store(uint16_t *p, vf_t v) { vst1_u16(p, P##_bits_(v)); }             \
    static inline void P##_stream(uint16_t *p, vf_t v) { vst1_u16(p, P##_bits_(v)); }            \
    static inline vf_t P##_load_tail(const uint16_t *p, int64_t n, float fill) {                  \
        if (n >= 4) return P##_load(p);                                                           \
        return vbslq_f32(vf_tail_mask(n), P##_widen_(v16_load_tail_(p, n)), vdupq_n_f32(fill));   \
    }                                                                                             \
    static inline void P##_store_tail(uint16_t *p, vf_t v, int64_t n) {                          \
        if (n >= 4) P##_store(p, v);                                                              \
        else v16_store_tail_(p, P##_bits_(v), n);                                                 \
    }
FASTCE_VEC_DEFINE_HALF_NEON(vh)
FASTCE_VEC_DEFINE_HALF_NEON(vb)

/* ---------------- double ---------------- */
typedef float64x2_t vd_t;
#define VD_W 2

static inline vd_t vd_load(const double *p) { return vld1q_f64(p); }
static inline void vd_store(double *p, vd_t v) { vst1q_f64(p, v); }
static inline vd_t vd_load_tail(const double *p, int64_t n, double fill) {
    if (n >= 2) return vld1q_f64(p);
    vd_t v = vdupq_n_f64(fill);
    if (n >= 1) v = vld1q_lane_f64(p, v, 0);
    return v;
}
static inline void vd_store_tail(double *p, vd_t v, int64_t n) {
    if (n >= 2) vst1q_f64(p, v);
    else if (n >= 1) vst1q_lane_f64(p, v, 0);
}
static inline vd_t vd_set1(double a) { return vdupq_n_f64(a); }
static inline void vd_stream(double *p, vd_t v) { vst1q_f64(p, v); }
static inline vd_t vd_add(vd_t a, vd_t b) { return vaddq_f64(a, b); }
static inline vd_t vd_sub(vd_t a, vd_t b) { return vsubq_f64(a, b); }
static inline vd_t vd_mul(vd_t a, vd_t b) { return vmulq_f64(a, b); }
static inline vd_t vd_fmadd(vd_t a, vd_t b, vd_t c) { return vfmaq_f64(c, a, b); }
static inline vd_t vd_max(vd_t a, vd_t b) { return vbslq_f64(vcgtq_f64(a, b), a, b); } /* as vf_max */
static inline vd_t vd_shift(vd_t m) {
    return vreinterpretq_f64_u64(vbicq_u64(vreinterpretq_u64_f64(m), vceqq_f64(m, vdupq_n_f64(-INFINITY))));
}
static inline vd_t vd_finite_or_zero(vd_t x) {
    return vreinterpretq_f64_u64(vandq_u64(vceqq_f64(vsubq_f64(x, x), vdupq_n_f64(0.0)), vreinterpretq_u64_f64(x)));
}
static inline vd_t vd_count_gt(vd_t acc, vd_t x, vd_t t) {
    return vaddq_f64(acc, vreinterpretq_f64_u64(vandq_u64(vcgtq_f64(x, t), vreinterpretq_u64_f64(vdupq_n_f64(1.0)))));
}
static inline vd_t vd_mul_nz(vd_t e, vd_t d) { /* as vf_mul_nz */
    return vreinterpretq_f64_u64(vbicq_u64(vreinterpretq_u64_f64(vmulq_f64(e, d)), vceqq_f64(e, vdupq_n_f64(0.0))));
}
static inline int vd_any_gt(vd_t a, vd_t b) { return vmaxvq_u32(vreinterpretq_u32_u64(vcgtq_f64(a, b))) != 0; }
static inline int vd_all_finite(vd_t x) {
    return vminvq_u32(vreinterpretq_u32_u64(vceqq_f64(vsubq_f64(x, x), vdupq_n_f64(0.0)))) != 0;
}
static inline double vd_hmax(vd_t v) { return vmaxvq_f64(v); }
static inline double vd_hsum(vd_t v) { return vaddvq_f64(v); }
/* exp of x in [FASTCE_EXP_LO_D, FASTCE_EXP_HI_D] (or NaN): vec_avx2.h's vd_exp_clamped_. */
static inline vd_t vd_exp_clamped_(vd_t x) {
    const float64x2_t n = vrndnq_f64(vmulq_f64(x, vdupq_n_f64(FASTCE_LOG2E)));
    float64x2_t r = vfmsq_f64(x, n, vdupq_n_f64(FASTCE_LN2_HI_D));
    r = vfmsq_f64(r, n, vdupq_n_f64(FASTCE_LN2_LO_D));
    float64x2_t y = vdupq_n_f64(fastce_exp_poly_d[0]);
    for (int k = 1; k < 14; k++) y = vfmaq_f64(vdupq_n_f64(fastce_exp_poly_d[k]), y, r);
    const int64x2_t ni = vcvtq_s64_f64(n); /* exact (NaN gives 0: y is NaN anyway) */
    const int64x2_t n1 = vshrq_n_s64(ni, 1), n2 = vsubq_s64(ni, n1);
    const float64x2_t p1 = vreinterpretq_f64_s64(vshlq_n_s64(vaddq_s64(n1, vdupq_n_s64(1023)), 52));
    const float64x2_t p2 = vreinterpretq_f64_s64(vshlq_n_s64(vaddq_s64(n2, vdupq_n_s64(1023)), 52));
    return vmulq_f64(vmulq_f64(y, p1), p2);
}
static inline vd_t vd_exp(vd_t x) {
    x = vmaxq_f64(vdupq_n_f64(FASTCE_EXP_LO_D), x);
    return vd_exp_clamped_(vminq_f64(vdupq_n_f64(FASTCE_EXP_HI_D), x));
}
/* The kernels' exp: +0 below FASTCE_EXP_FLUSH_D, exp's bits elsewhere (see vf_exp_flush). */
static inline vd_t vd_exp_flush(vd_t x) {
    const float64x2_t lo = vdupq_n_f64(FASTCE_EXP_FLUSH_D);
    const uint64x2_t below = vcltq_f64(x, lo); /* NaN kept */
    x = vminq_f64(vdupq_n_f64(FASTCE_EXP_HI_D), vmaxq_f64(lo, x));
    return vreinterpretq_f64_u64(vbicq_u64(vreinterpretq_u64_f64(vd_exp_clamped_(x)), below));
}
static inline vd_t vd_exp_flush_bounded(vd_t x) { return vd_exp_flush(x); }
/* As vf_exp_floored: exp(FASTCE_EXP_FLUSH_D) below it instead of +0, for x <= 88 or NaN. */
static inline vd_t vd_exp_floored(vd_t x) { return vd_exp_clamped_(vmaxq_f64(vdupq_n_f64(FASTCE_EXP_FLUSH_D), x)); }
static inline vd_t vd_exp_floored_add(vd_t x, vd_t acc) { return vaddq_f64(acc, vd_exp_floored(x)); }
/* double log: lane by lane through libm (used once per row, never per logit). */
static inline vd_t vd_log(vd_t x) {
    double lanes[VD_W];
    vd_store(lanes, x);
    for (int i = 0; i < VD_W; i++) lanes[i] = log(lanes[i]);
    return vd_load(lanes);
}

#endif
