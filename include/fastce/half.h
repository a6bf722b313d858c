/* fastce/half.h: float16 (IEEE binary16) and bfloat16 <-> float32, one value at a time, in
 * portable C (integer operations only, so subnormals cost no more than normal values).
 *
 * Widening is exact. Narrowing rounds to nearest, ties to even, as torch and NumPy do;
 * overflow gives +-inf, NaN stays NaN (quiet, sign kept). The vector headers widen and
 * narrow whole vectors the same way (F16C / AVX-512 conversions, or the shifts below for
 * bfloat16); these serve the scalar path and single elements everywhere.
 */
#ifndef FASTCE_HALF_H
#define FASTCE_HALF_H
#include <stdint.h>
#include <string.h>

static inline float fastce_bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t fastce_f32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* bfloat16 is the top half of a float32. */
static inline float fastce_bf16_to_f32(uint16_t h) { return fastce_bits_to_f32((uint32_t)h << 16); }

static inline uint16_t fastce_f32_to_bf16(float f) {
    const uint32_t u = fastce_f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* NaN: keep quiet */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);                 /* nearest, ties to even */
}

/* float16: 1 sign, 5 exponent (bias 15), 10 mantissa bits. */
static inline float fastce_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return fastce_bits_to_f32(sign | 0x7f800000u | (m << 13));   /* inf, NaN */
    if (e) return fastce_bits_to_f32(sign | ((e + 112u) << 23) | (m << 13));    /* normal */
    const float sub = (float)m * 0x1p-24f;                                       /* subnormal, 0 */
    return fastce_bits_to_f32(sign | fastce_f32_to_bits(sub));
}

static inline uint16_t fastce_f32_to_f16(float f) {
    const uint32_t u = fastce_f32_to_bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x1ffu));  /* NaN, quiet */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  /* >= 65520 rounds to inf (and inf) */
    if (a >= 0x38800000u) {                                   /* a normal half: |f| >= 2^-14 */
        uint32_t r = a - 0x38000000u;                         /* exponent rebiased 127 -> 15 */
        r += 0xfffu + ((r >> 13) & 1u);                       /* nearest, ties to even */
        return (uint16_t)(sign | (r >> 13));
    }
    if (a <= 0x33000000u) return (uint16_t)sign;              /* <= 2^-25: rounds to 0 */
    /* a subnormal half k 2^-24: |f| = m 2^(e - 150), so k = m 2^(e - 126), shift = 126 - e */
    const uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u, shift = 126u - e;
    uint32_t k = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (k & 1u))) k++;   /* may carry into the smallest normal */
    return (uint16_t)(sign | k);
}

#endif
