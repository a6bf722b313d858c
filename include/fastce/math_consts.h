/* fastce/math_consts.h: the constants of the vector exp and log, shared by every SIMD header so
 * that all ISAs evaluate the same polynomials (their Horner loops unroll over these tables).
 *
 * exp(x) = 2^n exp(r), n = round(x log2 e), r = x - n ln2_hi - n ln2_lo, |r| <= ln2/2.
 *   float : exp(r) = 1 + r (1 + r Q(r)), Q of degree 4 (a fitted minimax), one Horner chain
 *           (AVX-512). AVX2 takes 2^(n/8) from a table and a polynomial of degree 4 on
 *           |r| <= ln2/16 (fastce_exp8_poly_f below).
 *   double: exp(r) = sum_{k=0}^{13} r^k / k! (Taylor; truncation < 5e-18 relative).
 * log(x) = e ln2 + log(1 + f), f in [sqrt(1/2) - 1, sqrt(2) - 1):
 *   float : log(1 + f) = f - f^2/2 + f^3 Q(f), Q of degree 8 (cephes logf).
 */
#ifndef FASTCE_MATH_CONSTS_H
#define FASTCE_MATH_CONSTS_H

#define FASTCE_LOG2E 1.4426950408889634074
/* ln 2 split so that n * ln2_hi is exact for the n that occur. */
#define FASTCE_LN2_HI_F 0.693359375f
#define FASTCE_LN2_LO_F (-2.12194440e-4f)
#define FASTCE_LN2_HI_D 6.93147180369123816490e-01
#define FASTCE_LN2_LO_D 1.90821492927058770002e-10
/* Adding 1.5 2^23 to a float of magnitude < 2^22 rounds it to an integer, held in the low
   mantissa bits of the sum; subtracting it again gives that integer exactly. The float exps
   form n = round(x log2 e) this way, as fma(x, log2e, magic) - magic: rounded once. */
#define FASTCE_ROUND_MAGIC_F 12582912.0f
/* Clamps: below the low end exp rounds to 0; above the high end it overflows to +inf. */
#define FASTCE_EXP_LO_F (-104.0f)
#define FASTCE_EXP_HI_F 88.8f
#define FASTCE_EXP_LO_D (-746.0)
#define FASTCE_EXP_HI_D 709.8
/* The kernels' exp (vf_exp_flush / vd_exp_flush) gives +0 below these, where exp is below or
   near the smallest normal (FLT_MIN 1.2e-38, DBL_MIN 2.2e-308): a subnormal result costs a
   microcode assist of ~150 cycles on x86 (for the whole vector), and to a sum of exponentials
   that holds exp(0) = 1, or to a probability, it adds nothing. At and above them the result is
   normal (n >= -126 / -1022, y >= 1) and the same bits as exp's. */
#define FASTCE_EXP_FLUSH_F (-87.0f)
#define FASTCE_EXP_FLUSH_D (-708.0)
/* exp_flush_bounded(x): exp_flush's bits for x <= FASTCE_EXP_BOUNDED_MAX (and NaN, -inf), with
   no range check (AVX2: 3 instructions fewer than exp_flush's check-and-branch); any value
   above it. The kernels call it where the argument is x - max, x - lse or a difference of
   running maxima (<= 0), or a sum's term (kept only at <= FASTCE_SUM_ARG_MAX, below).
   At x <= 88, n = round(x log2 e) <= 127: 2^n is formed from the exponent bits directly. */
#define FASTCE_EXP_BOUNDED_MAX 88.0
/* The largest argument a kernel's sum of exponentials keeps a term at: a chunk's x - running
   max (the row kernels' MAX_JUMP) and a tile's x - m (TILE_MAX_SPREAD, kernel_impl.h); a sum
   that saw a larger one is redone against its max. It bounds the error that AVX2's sums' exp
   (exp_floored, below) adds. */
#define FASTCE_SUM_ARG_MAX 16.0
/* exp_floored(x), for the terms of a sum of exponentials: exp_flush_bounded's bits for x >= the
   flush threshold (and NaN; AVX-512, scalar) or within |x| 2.75e-9 relative of them (AVX2,
   below); below the threshold, +0 or exp(threshold) (1.6e-38 / 3.3e-308) as each ISA finds
   cheaper (AVX2: the flush's compare and mask are 2 of about 20 instructions a vector of the
   forward's sweep; AVX-512 masks for free). Only sums that hold a term >= 1 take it (x - max
   over a row, x - a running max the sum has reached, a tile's x - m, m the max of logits the
   sum holds), at x <= FASTCE_SUM_ARG_MAX: there even 2^24 terms below the threshold add less
   than 1e-30, far below the sum's own rounding.
   AVX2's reduces r = x - n ln2/8 with ln2/8 rounded to float (FASTCE_LN2_8TH_F, 2.4e-10 off)
   in one FMA, where exp's two-part Cody-Waite takes two: r moves by n 2.4e-10 <= |x| 2.75e-9,
   the term's added relative error. A sum holding a term >= 1 gains at most 1.0e-9 of itself
   from its terms at x <= 0 (|x| e^x <= 1/e) and 4.4e-8 (0.37 ulp) from one at x <= 16; the
   rounding of x - m itself costs a tile more (half an ulp of 16, 4.8e-7 relative). The FMA
   saved was 1 of 14 instructions a vector on the ports the FMAs use (measured faster on AVX2:
   docs/performance/notes_kernels.md). */
#define FASTCE_LN2_8TH_F 0.0866433978f /* ln2 / 8 rounded to float */

/* exp(r) = 1 + r (1 + r Q(r)), Q of degree 4: Q's coefficients, highest degree first, then the
   two ones, so that the whole polynomial is one Horner chain of 6 FMAs (the cephes form
   1 + r + r^2 P(r), P of degree 5, took 8 instructions). Fitted as a near-minimax in relative
   error on |r| <= ln2/2 (3.1e-9 with these coefficients in double, 0.05 ulp), then rounded
   to float; the error of the float evaluation is measured by tests/test_vector_math.py. */
#define FASTCE_EXP_POLY_F_LEN 7
static const float fastce_exp_poly_f[FASTCE_EXP_POLY_F_LEN] = {
    0.001381459180265665f, 0.008368708193302155f, 0.04166838899254799f,
    0.1666652113199234f, 0.4999999403953552f, 1.0f, 1.0f,
};
/* AVX2's float exp (vec_avx2.h) takes 2^(n/8) from a table instead: n = round(8 x log2 e),
   r = x - n (ln2/8)_hi - n (ln2/8)_lo, |r| <= ln2/16, and
       exp(x) = s (1 + P(r)),  s = 2^(n >> 3) 2^((n & 7)/8),  P(r) = r (1 + r (c2 + r (c3 + c4 r))),
   computed as fma(P(r), s, s), so the table's rounding (<= half an ulp), P's and that one
   fma's are the whole error. P: c1..c4 fitted as a near-minimax in relative error on
   |r| <= ln2/16 (8e-11 in double), then rounded to float (c1 = 1 and c2 = 1/2 exactly): four
   instructions where the 2^n form's polynomial on |r| <= ln2/2 takes six, and vpermps (the
   lookup) runs on a port the FMAs do not use. ln2/8 is FASTCE_LN2_HI_F / 8 (9 significant
   bits: n times it is exact for |n| < 2^15) and FASTCE_LN2_LO_F / 8, both exact divisions. */
#define FASTCE_EXP8_POLY_F_LEN 4
static const float fastce_exp8_poly_f[FASTCE_EXP8_POLY_F_LEN] = {
    0.04166460409760475f, 0.16668614745140076f, 0.5f, 1.0f, /* c4, c3, c2, c1 */
};
/* 2^(k/8), k = 0..7, rounded to float. */
static const float fastce_exp2_8th_f[8] = {
    0x1.000000p+0f, 0x1.172b84p+0f, 0x1.306fe0p+0f, 0x1.4bfdaep+0f,
    0x1.6a09e6p+0f, 0x1.8ace54p+0f, 0x1.ae89fap+0f, 0x1.d5818ep+0f,
};
/* 1/k! for k = 13 down to 0. */
static const double fastce_exp_poly_d[14] = {
    1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0,
    1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0,
};
/* Q(f), highest degree first. */
static const float fastce_log_poly_f[9] = {
    7.0376836292e-2f, -1.1514610310e-1f, 1.1676998740e-1f, -1.2420140846e-1f, 1.4249322787e-1f,
    -1.6668057665e-1f, 2.0000714765e-1f, -2.4999993993e-1f, 3.3333331174e-1f,
};
#define FASTCE_SQRT_HALF_F 0.707106781186547524f

#endif
