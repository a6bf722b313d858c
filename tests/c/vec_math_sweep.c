/* tests/c/vec_math_sweep.c: the accuracy of one ISA's vector exp and log, measured in ulps over
 * every float of the kernels' ranges (tests/test_vector_math.py samples the same ranges through
 * the Python module; this needs no Python, so it runs under qemu-aarch64 as well).
 *
 * Built with -DFASTCE_BUILD_ISA=<code of a row of fastce/build_table.h> and that row's flags
 * (tools/neon_harness.sh builds it for scalar and neon); it includes that row's vector header
 * and calls vf_* / vd_* directly. Checks, each against libm in double (float) or long double
 * (double), rounded ulps as in tests/test_vector_math.py (the ulp of the correctly rounded
 * result, the smallest subnormal below the normal range):
 *   exp  float: every float in [-87, 88] (both signs, by bit pattern): max ulp of vf_exp; that
 *               vf_exp_flush, vf_exp_flush_bounded give vf_exp's bits there and vf_exp_floored
 *               too (or, with --floored-ulp, its ulp error); every float in [-104, -87): vf_exp's
 *               ulp error (subnormal results), and that the flushes give +0, the floored exp +0
 *               or its value at -87.
 *   log  float: every float in [1, 1e30] (near 1, where log is tiny, within 2 ulp of 1 times |x - 1|
 *               absolutely, as the Python test).
 *   exp double: a grid of 2^21 points over [-745, 64] and |x| in [1e-300, 1]; log double: libm's.
 *   special values of both, NaN lanes among ordinary ones.
 *   half: the float16 / bfloat16 loads and stores (and every tail) against fastce/half.h.
 * Prints one line per check and, for the float exp and log, a 64-bit hash of every result's
 * bits in order (equal hashes on two ISAs: the same bits; vec_neon.h computes AVX2's
 * operations, so its hashes should match an x86 build with --isa avx2).
 * Usage: vec_math_sweep [--part K/N] [--stride S] [--only exp|log|dexp|special|half]
 *   --part K/N  slice K of N of the float sweeps, so that N processes share them (the hashes
 *               are then per slice);
 *   --stride S  the libm reference (the ulp error) only at the floats whose bits are a multiple
 *               of S (under qemu, libm's exp and log cost most of the time); the hashes and the
 *               flush/bounded/floored bit checks still cover every float.
 * Exit status 1 if a bound fails: float exp <= 1 ulp, log <= 2 ulp, double exp <= 2 ulp, the
 * flush/bounded/floored contracts.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fastce/build_table.h"
#include "fastce/half.h"
#if !defined(FASTCE_BUILD_ISA)
#error "build with -DFASTCE_BUILD_ISA=FASTCE_ISA_<NAME> and the row's flags"
#endif
#include FASTCE_TABLE_ARG(FASTCE_BUILD_ISA, FASTCE_ISA_TABLE(FASTCE_ISA_HEADER_))
#define ISA_NAME_STR_(x) #x
#define ISA_NAME_STR(x) ISA_NAME_STR_(x)
static const char *isa_name = ISA_NAME_STR(FASTCE_TABLE_ARG(FASTCE_BUILD_ISA, FASTCE_ISA_TABLE(FASTCE_ISA_NAME_)));

static int failed = 0;
static uint64_t stride = 1; /* --stride: the libm reference for every stride-th float only */
static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint64_t d2u(double d) { uint64_t u; memcpy(&u, &d, 8); return u; }

/* |got - ref| in ulps of ref rounded to float (subnormals: the smallest subnormal). */
static double ulp_f(float got, double ref) {
    const float rf = (float)ref;
    double sp = (double)nextafterf(fabsf(rf), INFINITY) - (double)fabsf(rf);
    if (isinf(rf)) return got == rf ? 0.0 : INFINITY;
    if (sp < 0x1p-149) sp = 0x1p-149;
    return fabs((double)got - ref) / sp;
}
static double ulp_d(double got, long double ref) {
    const double rd = (double)ref;
    if (isinf(rd)) return got == rd ? 0.0 : INFINITY;
    double sp = nextafter(fabs(rd), INFINITY) - fabs(rd);
    if (sp < 0x1p-1074) sp = 0x1p-1074;
    return (double)fabsl((long double)got - ref) / sp;
}

#define BLK 4096 /* a multiple of every VF_W */
static uint64_t hash_add(uint64_t h, uint32_t v) { return (h ^ v) * 0x100000001b3ull; }

/* Every float with bits in [lo, hi] (one sign), in slice `part` of `nparts`. */
typedef struct { uint32_t lo, hi; } urange;
static urange slice(uint32_t lo, uint32_t hi, int part, int nparts) {
    const uint64_t n = (uint64_t)hi - lo + 1, a = lo + n * part / nparts, b = lo + n * (part + 1) / nparts;
    urange r = {(uint32_t)a, (uint32_t)(b - 1)};
    return r;
}

typedef struct {
    double max_ulp; float at; uint64_t hash, count;
    uint64_t flush_diff, bounded_diff, floored_diff; double floored_max_ulp; float floored_at;
} exp_stats;

/* Float exp over the float bits [lo, hi] of one sign: vf_exp vs exp in double, and the kernels'
   exps against vf_exp (`above`: x >= -87, where they must give vf_exp's bits). */
static void sweep_exp_f(urange r, int above, exp_stats *s) {
    float x[BLK], y[BLK], yf[BLK], yb[BLK], yl[BLK];
    uint64_t u = r.lo;
    const float floor87 = ({ float t[VF_W]; vf_store(t, vf_exp_floored(vf_set1(FASTCE_EXP_FLUSH_F))); t[0]; });
    while (u <= r.hi) {
        int n = 0;
        for (; n < BLK && u <= r.hi; n++, u++) x[n] = u2f((uint32_t)u);
        const int nv = (n + VF_W - 1) / VF_W * VF_W;
        for (int i = n; i < nv; i++) x[i] = x[0];
        for (int i = 0; i < nv; i += VF_W) {
            const vf_t v = vf_load(x + i);
            vf_store(y + i, vf_exp(v));
            vf_store(yf + i, vf_exp_flush(v));
            vf_store(yb + i, vf_exp_flush_bounded(v));
            vf_store(yl + i, vf_exp_floored(v));
        }
        for (int i = 0; i < n; i++) {
            const int with_ref = f2u(x[i]) % stride == 0;
            const double ref = with_ref ? exp((double)x[i]) : 0.0;
            const double e = with_ref ? ulp_f(y[i], ref) : 0.0;
            if (e > s->max_ulp || isnan(e)) { s->max_ulp = isnan(e) ? INFINITY : e; s->at = x[i]; }
            s->hash = hash_add(s->hash, f2u(y[i]));
            s->count++;
            if (above) {
                s->flush_diff += f2u(yf[i]) != f2u(y[i]);
                s->bounded_diff += x[i] <= 88.0f && f2u(yb[i]) != f2u(y[i]);
                if (x[i] <= (float)FASTCE_SUM_ARG_MAX) {
                    s->floored_diff += f2u(yl[i]) != f2u(y[i]);
                    const double el = with_ref ? ulp_f(yl[i], ref) : 0.0;
                    if (el > s->floored_max_ulp) { s->floored_max_ulp = el; s->floored_at = x[i]; }
                }
            } else {
                s->flush_diff += f2u(yf[i]) != 0u;
                s->bounded_diff += f2u(yb[i]) != 0u;
                s->floored_diff += f2u(yl[i]) != 0u && f2u(yl[i]) != f2u(floor87);
            }
        }
    }
}

static void report_exp(const char *what, const exp_stats *s, int above) {
    printf("%s exp f32 %s: %llu floats, max %.3f ulp at %.9g, hash %016llx; flush %s %llu, "
           "bounded %s %llu, floored %s %llu", isa_name, what, (unsigned long long)s->count, s->max_ulp,
           (double)s->at, (unsigned long long)s->hash, above ? "!= exp:" : "!= +0:", (unsigned long long)s->flush_diff,
           above ? "!= exp:" : "!= +0:", (unsigned long long)s->bounded_diff,
           above ? "!= exp:" : "not +0 or exp(-87):", (unsigned long long)s->floored_diff);
    if (above) printf(" (floored max %.3f ulp at %.9g, x <= %g)", s->floored_max_ulp, (double)s->floored_at, FASTCE_SUM_ARG_MAX);
    printf("\n");
}

static void run_exp(int part, int nparts) {
    /* [-87, 88]: -0 .. -87 and +0 .. 88 by bits. */
    exp_stats neg = {0}, pos = {0}, low = {0};
    neg.hash = pos.hash = low.hash = 0xcbf29ce484222325ull;
    sweep_exp_f(slice(f2u(-0.0f), f2u(-87.0f), part, nparts), 1, &neg);
    sweep_exp_f(slice(f2u(0.0f), f2u(88.0f), part, nparts), 1, &pos);
    sweep_exp_f(slice(f2u(-87.0f) + 1, f2u(-104.0f), part, nparts), 0, &low);
    report_exp("[-87, -0]", &neg, 1);
    report_exp("[+0, 88]", &pos, 1);
    report_exp("[-104, -87)", &low, 0);
    const double worst = neg.max_ulp > pos.max_ulp ? neg.max_ulp : pos.max_ulp;
    if (!(worst <= 1.0)) { printf("FAIL: float exp max %.3f ulp > 1 over [-87, 88]\n", worst); failed = 1; }
    if (!(low.max_ulp <= 1.0)) { printf("FAIL: float exp max %.3f ulp > 1 over [-104, -87)\n", low.max_ulp); failed = 1; }
    if (neg.flush_diff || pos.flush_diff || neg.bounded_diff || pos.bounded_diff || low.flush_diff ||
        low.bounded_diff || low.floored_diff) {
        printf("FAIL: exp_flush / exp_flush_bounded / exp_floored break their contracts (counts above)\n");
        failed = 1;
    }
    /* exp_floored: exp's bits where x >= -87, except AVX2's one-part reduction (math_consts.h). */
    if (FASTCE_BUILD_ISA != FASTCE_ISA_AVX2 && (neg.floored_diff || pos.floored_diff)) {
        printf("FAIL: exp_floored differs from exp at x >= -87\n");
        failed = 1;
    }
}

static void run_log(int part, int nparts) {
    float x[BLK], y[BLK];
    const urange r = slice(f2u(1.0f), f2u(1e30f), part, nparts);
    double max_ulp = 0; float at = 0; uint64_t hash = 0xcbf29ce484222325ull, count = 0, bad = 0;
    uint64_t u = r.lo;
    while (u <= r.hi) {
        int n = 0;
        for (; n < BLK && u <= r.hi; n++, u++) x[n] = u2f((uint32_t)u);
        const int nv = (n + VF_W - 1) / VF_W * VF_W;
        for (int i = n; i < nv; i++) x[i] = x[0];
        for (int i = 0; i < nv; i += VF_W) vf_store(y + i, vf_log(vf_load(x + i)));
        for (int i = 0; i < n; i++) {
            hash = hash_add(hash, f2u(y[i]));
            count++;
            if (f2u(x[i]) % stride) continue;
            const double ref = log((double)x[i]);
            const double e = ulp_f(y[i], ref);
            const int ok = e <= 2.0 || fabs((double)y[i] - ref) <= 2 * 0x1p-23 * fabs((double)x[i] - 1);
            if (!ok) bad++;
            if (e > max_ulp && (double)x[i] >= 1.01) { max_ulp = e; at = x[i]; } /* the stated range */
        }
    }
    printf("%s log f32 [1, 1e30]: %llu floats, max %.3f ulp over [1.01, 1e30] at %.9g, %llu outside the bound, hash %016llx\n",
           isa_name, (unsigned long long)count, max_ulp, (double)at, (unsigned long long)bad, (unsigned long long)hash);
    if (bad) { printf("FAIL: float log beyond 2 ulp\n"); failed = 1; }
}

static void run_dexp(void) {
    enum { N = 1 << 21 };
    static double x[N + 2 * VD_W], y[N + 2 * VD_W];
    int n = 0;
    for (int i = 0; i < N / 2; i++) x[n++] = -745.0 + 809.0 * i / (N / 2 - 1); /* [-745, 64] */
    for (int i = 0; i < N / 2; i++) x[n++] = -pow(10.0, -300.0 + 300.0 * i / (N / 2 - 1)); /* -[1e-300, 1] */
    for (int i = 0; i < n; i += VD_W) vd_store(y + i, vd_exp(vd_load(x + i)));
    double max_ulp = 0, at = 0;
    for (int i = 0; i < n; i++) {
        const double e = ulp_d(y[i], expl((long double)x[i]));
        if (e > max_ulp || isnan(e)) { max_ulp = isnan(e) ? INFINITY : e; at = x[i]; }
    }
    /* the kernels' exps against vd_exp */
    uint64_t flush_bad = 0;
    for (int i = 0; i < n; i += VD_W) {
        double yf[VD_W], yb[VD_W], yl[VD_W];
        const vd_t v = vd_load(x + i);
        vd_store(yf, vd_exp_flush(v)); vd_store(yb, vd_exp_flush_bounded(v)); vd_store(yl, vd_exp_floored(v));
        for (int k = 0; k < VD_W; k++) {
            const int above = x[i + k] >= FASTCE_EXP_FLUSH_D;
            if (d2u(yf[k]) != (above ? d2u(y[i + k]) : 0)) flush_bad++;
            if (x[i + k] <= 88.0 && d2u(yb[k]) != (above ? d2u(y[i + k]) : 0)) flush_bad++;
            if (above && x[i + k] <= FASTCE_SUM_ARG_MAX && d2u(yl[k]) != d2u(y[i + k])) flush_bad++;
        }
    }
    printf("%s exp f64 [-745, 64] and -[1e-300, 1]: %d points, max %.3f ulp at %.17g; flush/bounded/floored contract breaks %llu\n",
           isa_name, n, max_ulp, at, (unsigned long long)flush_bad);
    if (!(max_ulp <= 2.0) || flush_bad) { printf("FAIL: double exp\n"); failed = 1; }
}

/* Special values, each in a vector with ordinary lanes beside it (both code paths of exp). */
static void run_special(void) {
    const float fs[] = {-INFINITY, INFINITY, NAN, 0.0f, -0.0f, -1e30f, 1e30f, -200.0f, 89.0f, -87.5f, 88.7f, -103.9f};
    int bad = 0;
    for (size_t k = 0; k < sizeof fs / sizeof fs[0]; k++)
        for (int lane = 0; lane < VF_W; lane++) {
            float in[VF_W], o[VF_W], of[VF_W], ol[VF_W];
            for (int i = 0; i < VF_W; i++) in[i] = -1.5f * (float)i;
            in[lane] = fs[k];
            vf_store(o, vf_exp(vf_load(in)));
            vf_store(of, vf_exp_flush(vf_load(in)));
            vf_store(ol, vf_log(vf_load(in)));
            const float want = expf(fs[k]), wantf = fs[k] < -87.0f ? 0.0f : want, wantl = logf(fs[k]);
            if (!(o[lane] == want || (isnan(o[lane]) && isnan(want))) || (isfinite(want) && ulp_f(o[lane], exp((double)fs[k])) > 1.0)) {
                printf("FAIL special exp(%g) = %g, want %g\n", (double)fs[k], (double)o[lane], (double)want); bad++;
            }
            if (isnan(wantf) != isnan(of[lane]) || (!isnan(wantf) && (wantf == 0 ? f2u(of[lane]) != 0 : ulp_f(of[lane], exp((double)fs[k])) > 1.0))) {
                printf("FAIL special exp_flush(%g) = %g, want %g\n", (double)fs[k], (double)of[lane], (double)wantf); bad++;
            }
            if (isnan(wantl) != isnan(ol[lane]) || (!isnan(wantl) && !(ol[lane] == wantl || fabsf(ol[lane] - wantl) <= 2e-6f * fabsf(wantl)))) {
                printf("FAIL special log(%g) = %g, want %g\n", (double)fs[k], (double)ol[lane], (double)wantl); bad++;
            }
            for (int i = 0; i < VF_W; i++)
                if (i != lane && f2u(o[i]) != ({ float t[VF_W]; float s[VF_W]; for (int j = 0; j < VF_W; j++) s[j] = in[i];
                                                vf_store(t, vf_exp(vf_load(s))); f2u(t[0]); })) {
                    printf("FAIL special: exp(%g) depends on a neighbour %g\n", (double)in[i], (double)fs[k]); bad++;
                }
        }
    const double ds[] = {-INFINITY, INFINITY, NAN, 0.0, -0.0, -1e300, 1e300, -1000.0, 710.0, -708.5, 709.7};
    for (size_t k = 0; k < sizeof ds / sizeof ds[0]; k++) {
        double in[VD_W], o[VD_W], of[VD_W];
        for (int i = 0; i < VD_W; i++) in[i] = -2.0 * i;
        in[0] = ds[k];
        vd_store(o, vd_exp(vd_load(in)));
        vd_store(of, vd_exp_flush(vd_load(in)));
        const double want = exp(ds[k]), wantf = ds[k] < -708.0 ? 0.0 : want;
        if (!(o[0] == want || (isnan(o[0]) && isnan(want))) && !(isfinite(want) && ulp_d(o[0], expl(ds[k])) <= 2.0)) {
            printf("FAIL special f64 exp(%g) = %g, want %g\n", ds[k], o[0], want); bad++;
        }
        if (isnan(wantf) != isnan(of[0]) || (!isnan(wantf) && (wantf == 0 ? d2u(of[0]) != 0 : ulp_d(of[0], expl(ds[k])) > 2.0))) {
            printf("FAIL special f64 exp_flush(%g) = %g, want %g\n", ds[k], of[0], wantf); bad++;
        }
    }
#if FASTCE_BUILD_ISA == FASTCE_ISA_NEON
    for (int k = 0; k < 8; k++) /* vec_neon.h's written-out table of 2^(k/8) */
        if (fastce_neon_exp2_8th_bits[0][k] != f2u(fastce_exp2_8th_f[k]) ||
            fastce_neon_exp2_8th_bits[1][k] != f2u(fastce_exp2_8th_f[k]) - ((uint32_t)k << 20)) {
            printf("FAIL vec_neon.h's table entry %d is not fastce_exp2_8th_f's\n", k); bad++;
        }
#endif
    printf("%s special values: %d failures\n", isa_name, bad);
    if (bad) failed = 1;
}


/* The 16-bit storage conversions against fastce/half.h (the scalar path's, and the rounding the
   Python tests check outputs against), bit for bit:
   widening, every one of the 65536 float16 and bfloat16 patterns (NaN: NaN, quiet or not);
   narrowing, every float whose bits below the kept ones are at or next to a rounding boundary
   (0, 1, half - 1, half, half + 1, all ones) for every value of the bits above, every float in
   float16's subnormal range [2^-25, 2^-14] with bits a multiple of 7, and 2^22 random floats.
   And the tails: *_load_tail / *_store_tail with n = 0 .. W on buffers that end at a PROT_NONE
   page (a lane past the end faults), fill in the missing lanes, nothing written past n. */
static uint64_t rs = 0x243F6A8885A308D3ull;
static uint32_t rnd32(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (uint32_t)(rs >> 16); }

static uint64_t half_bad = 0, half_checked = 0;
static void check_narrow(const float *x, int n) {
    uint16_t h[VF_W], b[VF_W];
    for (int i = 0; i + VF_W <= n; i += VF_W) {
        const vf_t v = vf_load(x + i);
        vh_store(h, v);
        vb_store(b, v);
        for (int k = 0; k < VF_W; k++) {
            const uint16_t wh = fastce_f32_to_f16(x[i + k]), wb = fastce_f32_to_bf16(x[i + k]);
            if (h[k] != wh || b[k] != wb) {
                if (half_bad < 10)
                    printf("FAIL narrow %a (bits %08x): f16 %04x want %04x, bf16 %04x want %04x\n", (double)x[i + k],
                           f2u(x[i + k]), h[k], wh, b[k], wb);
                half_bad++;
            }
            half_checked++;
        }
    }
}

static void *guarded(size_t bytes, int at_end, void **map, size_t *maplen) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    *maplen = 3 * page;
    unsigned char *m = mmap(NULL, *maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) { perror("mmap"); exit(2); }
    mprotect(m, page, PROT_NONE);
    mprotect(m + 2 * page, page, PROT_NONE);
    *map = m;
    return at_end ? m + 2 * page - bytes : m + page;
}

static void run_half(void) {
    int wbad = 0;
    for (uint32_t u = 0; u < 65536; u += VF_W) {
        uint16_t in[VF_W];
        float gh[VF_W], gb[VF_W];
        for (int k = 0; k < VF_W; k++) in[k] = (uint16_t)(u + (uint32_t)k);
        vf_store(gh, vh_load(in));
        vf_store(gb, vb_load(in));
        for (int k = 0; k < VF_W; k++) {
            const float wh = fastce_f16_to_f32(in[k]), wb = fastce_bf16_to_f32(in[k]);
            const int okh = isnan(wh) ? isnan(gh[k]) : f2u(gh[k]) == f2u(wh);
            const int okb = isnan(wb) ? isnan(gb[k]) : f2u(gb[k]) == f2u(wb);
            if (!okh || !okb) {
                if (wbad < 10) printf("FAIL widen %04x: f16 %08x want %08x, bf16 %08x want %08x\n", in[k], f2u(gh[k]),
                                      f2u(wh), f2u(gb[k]), f2u(wb));
                wbad++;
            }
        }
    }
    enum { NB = 4096 };
    float x[NB];
    int n = 0;
#define PUSH(bits) do { x[n++] = u2f(bits); if (n == NB) { check_narrow(x, n); n = 0; } } while (0)
    static const uint32_t low16[] = {0, 1, 0x7fff, 0x8000, 0x8001, 0xffff};
    static const uint32_t low13[] = {0, 1, 0xfff, 0x1000, 0x1001, 0x1fff};
    for (uint32_t hi = 0; hi < 65536; hi++)
        for (int k = 0; k < 6; k++) PUSH(hi << 16 | low16[k]);
    for (uint32_t hi = 0; hi < (1u << 19); hi++)
        for (int k = 0; k < 6; k++) PUSH(hi << 13 | low13[k]);
    for (uint32_t u = f2u(0x1p-25f); u <= f2u(0x1p-14f); u += 7) { PUSH(u); PUSH(u | 0x80000000u); }
    for (int i = 0; i < (1 << 22); i++) PUSH(rnd32());
    n = n / VF_W * VF_W;
    check_narrow(x, n);
#undef PUSH
    /* tails */
    int tbad = 0;
    for (int64_t cnt = 0; cnt <= VF_W; cnt++)
        for (int at_end = 0; at_end < 2; at_end++) {
            void *map; size_t maplen;
            float *pf = guarded((size_t)(cnt ? cnt : 1) * 4, at_end, &map, &maplen);
            for (int i = 0; i < cnt; i++) pf[i] = 1.5f + (float)i;
            float got[VF_W];
            vf_store(got, vf_load_tail(pf, cnt, -INFINITY));
            for (int i = 0; i < VF_W; i++) tbad += f2u(got[i]) != f2u(i < cnt ? 1.5f + (float)i : -INFINITY);
            if (cnt < VF_W) { /* a store of cnt lanes, then the byte after must be untouched */
                float *q = at_end ? pf : pf;
                memset(q, 0x5a, (size_t)(cnt ? cnt : 1) * 4);
                vf_store_tail(q, vf_set1(7.0f), cnt);
                for (int i = 0; i < cnt; i++) tbad += q[i] != 7.0f;
                if (!cnt) tbad += ((unsigned char *)q)[0] != 0x5a;
            }
            munmap(map, maplen);
            uint16_t *ph = guarded((size_t)(cnt ? cnt : 1) * 2, at_end, &map, &maplen);
            for (int i = 0; i < cnt; i++) ph[i] = fastce_f32_to_f16(2.0f + (float)i);
            vf_store(got, vh_load_tail(ph, cnt, -INFINITY));
            for (int i = 0; i < VF_W; i++) tbad += f2u(got[i]) != f2u(i < cnt ? 2.0f + (float)i : -INFINITY);
            for (int i = 0; i < cnt; i++) ph[i] = fastce_f32_to_bf16(3.0f + (float)i);
            vf_store(got, vb_load_tail(ph, cnt, 0.0f));
            for (int i = 0; i < VF_W; i++) tbad += f2u(got[i]) != f2u(i < cnt ? 3.0f + (float)i : 0.0f);
            vh_store_tail(ph, vf_set1(5.0f), cnt);
            for (int i = 0; i < cnt; i++) tbad += ph[i] != fastce_f32_to_f16(5.0f);
            vb_store_tail(ph, vf_set1(6.0f), cnt);
            for (int i = 0; i < cnt; i++) tbad += ph[i] != fastce_f32_to_bf16(6.0f);
            munmap(map, maplen);
        }
    for (int64_t cnt = 0; cnt <= VD_W; cnt++)
        for (int at_end = 0; at_end < 2; at_end++) {
            void *map; size_t maplen;
            double *pd = guarded((size_t)(cnt ? cnt : 1) * 8, at_end, &map, &maplen);
            for (int i = 0; i < cnt; i++) pd[i] = 0.25 + i;
            double got[VD_W];
            vd_store(got, vd_load_tail(pd, cnt, 9.0));
            for (int i = 0; i < VD_W; i++) tbad += got[i] != (i < cnt ? 0.25 + i : 9.0);
            vd_store_tail(pd, vd_set1(4.0), cnt);
            for (int i = 0; i < cnt; i++) tbad += pd[i] != 4.0;
            munmap(map, maplen);
        }
    printf("%s half: widening %d of 131072 patterns wrong; narrowing %llu of %llu floats wrong; tails %d wrong\n",
           isa_name, wbad, (unsigned long long)half_bad, (unsigned long long)half_checked, tbad);
    if (wbad || half_bad || tbad) { printf("FAIL: 16-bit conversions or tails\n"); failed = 1; }
}

int main(int argc, char **argv) {
    int part = 0, nparts = 1;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--part") && i + 1 < argc) {
            if (sscanf(argv[++i], "%d/%d", &part, &nparts) != 2 || nparts < 1 || part < 0 || part >= nparts) {
                fprintf(stderr, "--part K/N, 0 <= K < N\n"); return 2;
            }
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--stride") && i + 1 < argc) stride = strtoull(argv[++i], NULL, 0) ? strtoull(argv[i], NULL, 0) : 1;
        else { fprintf(stderr, "usage: %s [--part K/N] [--stride S] [--only exp|log|dexp|special|half]\n", argv[0]); return 2; }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (nparts > 1) printf("%s: slice %d of %d of the float sweeps\n", isa_name, part, nparts);
    if (stride > 1) printf("%s: ulps of the float sweeps measured at every %llu-th float (by bits); hashes over all\n", isa_name, (unsigned long long)stride);
    /* the checks that are not split run in slice 0 only */
    if ((!only && part == 0) || (only && !strcmp(only, "special"))) run_special();
    if ((!only && part == 0) || (only && !strcmp(only, "half"))) run_half();
    if ((!only && part == 0) || (only && !strcmp(only, "dexp"))) run_dexp();
    if (!only || !strcmp(only, "exp")) run_exp(part, nparts);
    if (!only || !strcmp(only, "log")) run_log(part, nparts);
    printf("vec_math_sweep %s: %s\n", isa_name, failed ? "FAILED" : "passed");
    return failed;
}
