/* tests/c/kernel_harness.c: a standalone (no Python) memory-safety and correctness harness for
 * the fastce kernel tables.
 *
 * It calls every entry point of fastce_isa_table(isa) directly, for every ISA this CPU runs and
 * both dtypes: rows, small_rows (C <= FASTCE_SMALL_C), the split path seg_stats -> merge_rows ->
 * seg_out (parts > 1, a `states` buffer), tiles (S = 1, 3, 17, and 70: multi-vector tiles of
 * 64-byte vectors, then single and partial vectors), and the exp/log array hooks;
 * kinds index / prob / lse, outmodes none / grad / softmax / logsoftmax, with and without
 * weights, label smoothing 0 and 0.1, ignore_index hits, stream_out 0 and 1, in place (out == x),
 * per-row grad_output, row_out NULL, every target integer type, class counts 1, 2, 7, 16, 17,
 * 423, 8201 and small N; and the two-stream kernel kl_rows and the shard gradient
 * shard_grad_rows (run_kl_grid).
 *
 * Every buffer is allocated at its exact size (no slack at the end), so AddressSanitizer reports
 * any read or write past it; inputs start at odd element offsets (x and out at every 4-byte
 * alignment for float), with a canary in front that must survive. Outputs are pre-filled with
 * NaN so that an element the kernel forgets to write fails the value check.
 *
 * Results are checked against a plain double reference written here from the formulas of
 * row_math.h: per-element |got - want| <= rtol * mag + 1e-30, where mag is the size of the terms
 * the value is made of (so a tiny p_c is checked relative to itself, not to 1); rtol = 1e-4 for
 * float, 1e-9 for double.
 *
 * Options:
 *   --guard       allocate every buffer next to a PROT_NONE page (ending right before it, or
 *                 starting right after it): catches out-of-bounds masked (vmaskmov, AVX-512
 *                 masked) and non-temporal accesses, which ASan does not instrument.
 *   --misaligned  start float/double buffers 2/4 bytes off their natural alignment (numpy can
 *                 hand such arrays to the kernels: np.frombuffer(..., offset=4) is C-contiguous).
 *   --quick       fewer cases (for valgrind).
 *   --isa NAME    only this ISA (a row of include/fastce/build_table.h: scalar, avx2, avx512).
 *   --seed N, -v  random seed; print every case.
 * Prints "kernel_harness: N passed, M failed" and exits 1 on any failure.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fastce/dispatch.h"

/* ------------------------------------------------------------------ options, counters, rng */

static int opt_guard = 0, opt_misaligned = 0, opt_quick = 0, opt_verbose = 0, opt_isa = -1;
static uint64_t rng_s = 0x9E3779B97F4A7C15ull;
static long n_pass = 0, n_fail = 0;

static uint64_t rnd(void) {
    rng_s ^= rng_s << 13; rng_s ^= rng_s >> 7; rng_s ^= rng_s << 17;
    return rng_s;
}
static double urand(void) { return (double)(rnd() >> 11) * 0x1.0p-53; }
static int64_t irand(int64_t n) { return (int64_t)(rnd() % (uint64_t)n); }

/* ------------------------------------------------------------------ the case being run
 * A sanitizer report aborts the process: the death callback (or, without sanitizers, a
 * SIGSEGV/SIGBUS handler) then names the case, with every option and size. */

static char current_case[768];
extern void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

static void print_current_case(void) {
    static const char head[] = "kernel_harness: died in case: ";
    if (!current_case[0]) return;
    ssize_t rc = write(2, head, sizeof head - 1);
    rc = write(2, current_case, strlen(current_case));
    rc = write(2, "\n", 1);
    (void)rc;
}
static void on_fatal_signal(int sig) {
    print_current_case();
    signal(sig, SIG_DFL);
    raise(sig);
}
static void install_crash_reporting(void) {
    if (__sanitizer_set_death_callback) {
        __sanitizer_set_death_callback(print_current_case);
    } else {
        signal(SIGSEGV, on_fatal_signal);
        signal(SIGBUS, on_fatal_signal);
        signal(SIGILL, on_fatal_signal);
        signal(SIGFPE, on_fatal_signal);
        signal(SIGABRT, on_fatal_signal);
    }
}

/* ------------------------------------------------------------------ exact-size allocations */

#define MAX_ALLOCS 32
#define CANARY 0xA5
typedef struct {
    void *base;        /* malloc'd block or mapping */
    size_t maplen;     /* 0 for malloc */
    unsigned char *pre; size_t prelen; /* bytes in front of the buffer that must stay CANARY */
} alloc_t;
static alloc_t allocs[MAX_ALLOCS];
static int nallocs = 0;

/* A buffer of exactly `bytes`, starting `off` bytes into its block (malloc mode); in guard mode,
   either ending exactly at a PROT_NONE page or starting `off` bytes after one (chosen at random
   per buffer). The bytes in front of it are set to CANARY. */
static void *alloc_buf(size_t bytes, size_t off) {
    if (nallocs == MAX_ALLOCS) { fprintf(stderr, "kernel_harness: too many allocations\n"); exit(2); }
    alloc_t *a = &allocs[nallocs++];
    if (bytes == 0) bytes = 1;
    if (opt_guard) {
        const size_t page = (size_t)sysconf(_SC_PAGESIZE);
        const size_t data_pages = (bytes + off + page - 1) / page;
        a->maplen = (data_pages + 1) * page;
        unsigned char *m = mmap(NULL, a->maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) { perror("mmap"); exit(2); }
        a->base = m;
        if (rnd() & 1) { /* guard after: the buffer ends at the page boundary */
            if (mprotect(m + data_pages * page, page, PROT_NONE)) { perror("mprotect"); exit(2); }
            unsigned char *p = m + data_pages * page - bytes;
            a->pre = m; a->prelen = (size_t)(p - m);
        } else {         /* guard before: the buffer starts `off` bytes after the boundary */
            if (mprotect(m, page, PROT_NONE)) { perror("mprotect"); exit(2); }
            a->pre = m + page; a->prelen = off;
        }
    } else {
        a->maplen = 0;
        a->base = malloc(bytes + off);
        if (!a->base) { fprintf(stderr, "kernel_harness: out of memory\n"); exit(2); }
        a->pre = a->base; a->prelen = off;
    }
    memset(a->pre, CANARY, a->prelen);
    return a->pre + a->prelen;
}

static int canaries_ok(void) {
    for (int i = 0; i < nallocs; i++)
        for (size_t j = 0; j < allocs[i].prelen; j++)
            if (allocs[i].pre[j] != CANARY) return 0;
    return 1;
}

static void free_all(void) {
    for (int i = 0; i < nallocs; i++) {
        if (allocs[i].maplen) munmap(allocs[i].base, allocs[i].maplen);
        else free(allocs[i].base);
    }
    nallocs = 0;
}

/* Byte offset of a buffer's start: `elems` elements of `esize` bytes, plus, with --misaligned,
   half an element (for the buffers numpy may hand over unaligned: x, out, prob, weight,
   targets, grad_output; row_out and states are always allocated by fastce, aligned). */
static size_t start_off(int64_t elems, size_t esize) {
    return (size_t)elems * esize + (opt_misaligned ? esize / 2 : 0);
}
static size_t aligned_off(int64_t elems, size_t esize) { return (size_t)elems * esize; }

/* ------------------------------------------------------------------ element access
 * Through memcpy, so the harness itself is well defined on misaligned buffers. */

static double getv(const void *p, int dbl, int64_t i) {
    if (dbl) { double v; memcpy(&v, (const char *)p + i * 8, 8); return v; }
    float v; memcpy(&v, (const char *)p + i * 4, 4); return v;
}
static void setv(void *p, int dbl, int64_t i, double v) {
    if (dbl) memcpy((char *)p + i * 8, &v, 8);
    else { float f = (float)v; memcpy((char *)p + i * 4, &f, 4); }
}
static double getd(const double *p, int64_t i) { double v; memcpy(&v, (const char *)(p) + i * 8, 8); return v; }

static size_t ttype_size(int tt) {
    switch (tt) {
    case FASTCE_I8: case FASTCE_U8: return 1;
    case FASTCE_I16: case FASTCE_U16: return 2;
    case FASTCE_I32: case FASTCE_U32: return 4;
    default: return 8;
    }
}
static const char *ttype_name(int tt) {
    static const char *n[] = {"i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64"};
    return n[tt];
}
static int ttype_signed(int tt) { return tt <= FASTCE_I64; }
/* Largest class index + 1 the type can hold (numpy would not let a target exceed it). */
static int64_t ttype_limit(int tt) {
    switch (tt) {
    case FASTCE_I8: return 128;
    case FASTCE_U8: return 256;
    case FASTCE_I16: return 32768;
    case FASTCE_U16: return 65536;
    default: return INT64_MAX;
    }
}
static void set_target(void *t, int tt, int64_t i, int64_t v) {
    char *p = (char *)t + (size_t)i * ttype_size(tt);
    switch (tt) {
    case FASTCE_I8: { int8_t x = (int8_t)v; memcpy(p, &x, 1); break; }
    case FASTCE_U8: { uint8_t x = (uint8_t)v; memcpy(p, &x, 1); break; }
    case FASTCE_I16: { int16_t x = (int16_t)v; memcpy(p, &x, 2); break; }
    case FASTCE_U16: { uint16_t x = (uint16_t)v; memcpy(p, &x, 2); break; }
    case FASTCE_I32: { int32_t x = (int32_t)v; memcpy(p, &x, 4); break; }
    case FASTCE_U32: { uint32_t x = (uint32_t)v; memcpy(p, &x, 4); break; }
    case FASTCE_I64: { int64_t x = v; memcpy(p, &x, 8); break; }
    default: { uint64_t x = (uint64_t)v; memcpy(p, &x, 8); break; }
    }
}

/* ------------------------------------------------------------------ a case */

enum { E_ROWS = 0, E_SMALL, E_SPLIT, E_TILES, E_COUNT };
static const char *entry_names[] = {"rows", "small_rows", "split", "tiles"};
static const char *kind_names[] = {"lse", "index", "prob"};
static const char *out_names[] = {"none", "grad", "softmax", "logsoftmax"};
enum { PAT_NORMAL = 0, PAT_JUMP, PAT_NEGINF };
static const char *pat_names[] = {"normal", "offset+jump", "-inf"};

typedef struct {
    int isa, dbl;
    const ce_kernels *k;
    const char *isa_name;
    int entry, kind, outmode, has_w;
    double eps;
    int64_t N, C, S;
    int stream, inplace, use_gout, null_rowout, ttype, pattern, reverse;
    int64_t ignore_index;
    int64_t x_off, out_off, aux_off; /* element offsets of x, out, and the other buffers */
    int64_t parts, seg, block;
} case_t;

static void describe(const case_t *c, char *buf, size_t n) {
    snprintf(buf, n,
             "isa=%s dtype=%s entry=%s kind=%s outmode=%s weight=%d eps=%g N=%lld C=%lld S=%lld "
             "stream_out=%d inplace=%d gout=%d row_out=%s ttype=%s ignore_index=%lld pattern=%s "
             "x_off=%lld out_off=%lld parts=%lld seg=%lld block=%lld%s%s%s",
             c->isa_name, c->dbl ? "f64" : "f32", entry_names[c->entry], kind_names[c->kind],
             out_names[c->outmode], c->has_w, c->eps, (long long)c->N, (long long)c->C, (long long)c->S,
             c->stream, c->inplace, c->use_gout, c->null_rowout ? "NULL" : "set", ttype_name(c->ttype),
             (long long)c->ignore_index, pat_names[c->pattern], (long long)c->x_off, (long long)c->out_off,
             (long long)c->parts, (long long)c->seg, (long long)c->block, c->reverse ? " reverse" : "",
             opt_guard ? " [guard]" : "", opt_misaligned ? " [misaligned]" : "");
}

/* fn over [0, items) in blocks of `block` (0: one call), forwards or backwards. */
static void run_range(ce_range_fn fn, const ce_args *a, int64_t items, int64_t block, int reverse) {
    if (block <= 0 || block >= items) { fn(a, 0, items); return; }
    const int64_t nb = (items + block - 1) / block;
    for (int64_t b = 0; b < nb; b++) {
        const int64_t bb = reverse ? nb - 1 - b : b;
        const int64_t i0 = bb * block, i1 = i0 + block < items ? i0 + block : items;
        fn(a, i0, i1);
    }
}

static int close_enough(double got, double want, double mag, double rtol) {
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    if (!isfinite(got)) return 0;
    return fabs(got - want) <= rtol * mag + 1e-30;
}

#define MAX_REPORT 4

static void run_case(case_t *c) {
    const int dbl = c->dbl;
    const size_t es = dbl ? 8 : 4;
    const int64_t N = c->N, C = c->C, S = c->S, rows = N * S, total = N * C * S;
    const int has_out = c->outmode != FASTCE_OUT_NONE;
    const int ce = c->kind != FASTCE_KIND_LSE;
    const double rtol = dbl ? 1e-9 : 1e-4;
    char desc[640];
    describe(c, desc, sizeof desc);
    snprintf(current_case, sizeof current_case, "%s", desc);
    if (opt_verbose) printf("case: %s\n", desc);

    /* ---- inputs */
    void *x = alloc_buf((size_t)total * es, start_off(c->x_off, es));
    void *target = NULL, *prob = NULL, *weight = NULL;
    double *gout = NULL, *row_out = NULL;
    void *out = NULL;
    ce_state *states = NULL;
    if (c->kind == FASTCE_KIND_INDEX)
        target = alloc_buf((size_t)rows * ttype_size(c->ttype), start_off(c->aux_off, ttype_size(c->ttype)));
    if (c->kind == FASTCE_KIND_PROB) prob = alloc_buf((size_t)total * es, start_off(c->aux_off, es));
    if (c->has_w) weight = alloc_buf((size_t)C * es, start_off(c->aux_off, es));
    if (c->use_gout) gout = alloc_buf((size_t)rows * 8, start_off(c->aux_off, 8));
    if (!c->null_rowout) row_out = alloc_buf((size_t)rows * 8, aligned_off(c->aux_off, 8));
    /* per-row lse (return_lse), ignored rows included: asked for in every CE case */
    double *row_lse = c->kind != FASTCE_KIND_LSE ? alloc_buf((size_t)rows * 8, aligned_off(c->aux_off, 8)) : NULL;
    if (has_out) out = c->inplace ? x : alloc_buf((size_t)total * es, start_off(c->out_off, es));
    if (c->entry == E_SPLIT) states = alloc_buf((size_t)(N * c->parts) * sizeof(ce_state), 0);

    /* targets (and which rows are ignored) */
    int64_t *tgt = calloc((size_t)rows, sizeof(int64_t));
    if (target) {
        int64_t lim = ttype_limit(c->ttype) < C ? ttype_limit(c->ttype) : C;
        for (int64_t r = 0; r < rows; r++) {
            int64_t t = irand(lim);
            if (irand(4) == 0) t = c->ignore_index;
            tgt[r] = t;
            set_target(target, c->ttype, r, t);
        }
    }
    /* logits, row by row (a row is x[n, :, s], class stride S) */
    for (int64_t n = 0; n < N; n++)
        for (int64_t s = 0; s < S; s++) {
            const int64_t r = n * S + s;
            static const double bases[] = {0.0, 50.0, -30.0};
            const double base = c->pattern == PAT_JUMP ? bases[irand(3)] : 0.0;
            for (int64_t k = 0; k < C; k++) setv(x, dbl, (n * C + k) * S + s, base + 8.0 * urand() - 4.0);
            if (c->pattern == PAT_JUMP) {
                const int64_t chunk = 8192 / (int64_t)es;
                if (C > chunk + 7) setv(x, dbl, (n * C + chunk + 7) * S + s, base + 30.0); /* rescale */
                if (C >= 3) setv(x, dbl, (n * C + C - 3) * S + s, base + 80.0);           /* big jump */
            } else if (c->pattern == PAT_NEGINF && C > 1) {
                const int64_t keep = target && tgt[r] >= 0 && tgt[r] < C ? tgt[r] : C - 1;
                for (int64_t k = 0; k < C; k++)
                    if (k != keep && (k == 0 ? irand(2) == 0 : irand(8) == 0))
                        setv(x, dbl, (n * C + k) * S + s, -INFINITY);
            }
        }
    if (prob)
        for (int64_t n = 0; n < N; n++)
            for (int64_t s = 0; s < S; s++) {
                double sum = 0.0;
                for (int64_t k = 0; k < C; k++) {
                    double y = irand(5) == 0 ? 0.0 : urand() + 0.01;
                    setv(prob, dbl, (n * C + k) * S + s, y);
                    sum += y;
                }
                for (int64_t k = 0; k < C; k++) {
                    const int64_t e = (n * C + k) * S + s;
                    setv(prob, dbl, e, sum > 0 ? getv(prob, dbl, e) / sum : 1.0 / (double)C);
                }
            }
    double wsum = (double)C;
    if (weight) {
        wsum = 0.0;
        for (int64_t k = 0; k < C; k++) {
            setv(weight, dbl, k, C > 1 && irand(11) == 0 ? 0.0 : 0.25 + 1.75 * urand());
            wsum += getv(weight, dbl, k);
        }
    }
    const double gscale = c->use_gout ? (irand(2) ? 1.0 : 0.5) : 0.37;
    if (gout)
        for (int64_t r = 0; r < rows; r++) { double g = 0.5 + urand(); memcpy((char *)gout + r * 8, &g, 8); }

    /* ---- reference, in double, from the REAL values */
    double *want_loss = malloc((size_t)rows * sizeof(double)), *mag_loss = malloc((size_t)rows * sizeof(double));
    double *want_lse = malloc((size_t)rows * sizeof(double)), *mag_lse = malloc((size_t)rows * sizeof(double));
    double *want_out = NULL, *mag_out = NULL;
    if (has_out) {
        want_out = malloc((size_t)total * sizeof(double));
        mag_out = malloc((size_t)total * sizeof(double));
    }
    double *xr = malloc((size_t)C * sizeof(double)), *yr = malloc((size_t)C * sizeof(double));
    double *wr = malloc((size_t)C * sizeof(double));
    for (int64_t k = 0; k < C; k++) wr[k] = weight ? getv(weight, dbl, k) : 1.0;
    const double eps = c->eps, Cd = (double)C;
    for (int64_t n = 0; n < N; n++)
        for (int64_t s = 0; s < S; s++) {
            const int64_t r = n * S + s;
            for (int64_t k = 0; k < C; k++) {
                xr[k] = getv(x, dbl, (n * C + k) * S + s);
                yr[k] = prob ? getv(prob, dbl, (n * C + k) * S + s) : 0.0;
            }
            double m = -INFINITY;
            for (int64_t k = 0; k < C; k++) if (xr[k] > m) m = xr[k];
            const double shift = m == -INFINITY ? 0.0 : m;
            double se = 0.0;
            for (int64_t k = 0; k < C; k++) se += exp(xr[k] - shift);
            const double logs = log(se), lse = shift + logs;
            want_lse[r] = lse; mag_lse[r] = fabs(shift) + fabs(logs) + 1.0;
            const double ref = isfinite(xr[0]) ? xr[0] : 0.0;
            const double coef = (gout ? getd(gout, r) : 1.0) * gscale;
            /* |x_k - m| + |logs| + 1: the error scale of log p_k (0 where p_k = 0) */
            #define LPMAG(k) (isfinite(xr[k]) ? fabs(xr[k] - shift) + fabs(logs) + 1.0 : 0.0)
            #define P(k) exp((xr[k] - shift) - logs)
            double loss = 0.0, lmag = 0.0;
            int64_t t = -1;
            int ignored = 0;
            double A = 0.0, B1 = 0.0, B0 = 0.0, fix = 0.0;
            if (c->kind == FASTCE_KIND_INDEX) {
                t = tgt[r];
                if (t == c->ignore_index) ignored = 1;
                else {
                    const double wt = wr[t];
                    loss = (1.0 - eps) * wt * (lse - xr[t]);
                    lmag = (1.0 - eps) * wt * (fabs(shift - xr[t]) + fabs(logs) + 1.0);
                    if (eps > 0.0)
                        for (int64_t k = 0; k < C; k++) {
                            loss += eps / Cd * wr[k] * (lse - xr[k]);
                            lmag += eps / Cd * wr[k] * (fabs(shift - ref) + fabs(xr[k] - ref) + fabs(logs) + 1.0);
                        }
                    A = coef * ((1.0 - eps) * wt + eps * wsum / Cd);
                    B0 = coef * eps / Cd;
                    fix = coef * (1.0 - eps) * wt;
                }
            } else if (c->kind == FASTCE_KIND_PROB) {
                double swy = 0.0;
                for (int64_t k = 0; k < C; k++) {
                    const double yp = (1.0 - eps) * yr[k] + eps / Cd;
                    loss += wr[k] * yp * (lse - xr[k]);
                    lmag += wr[k] * yp * (fabs(shift - ref) + fabs(xr[k] - ref) + fabs(logs) + 1.0);
                    swy += wr[k] * yp;
                }
                A = coef * swy; B1 = coef * (1.0 - eps); B0 = coef * eps / Cd;
            } else {
                loss = lse;
                lmag = fabs(shift) + fabs(logs) + 1.0;
            }
            want_loss[r] = loss; mag_loss[r] = lmag;
            if (!has_out) continue;
            for (int64_t k = 0; k < C; k++) {
                const int64_t e = (n * C + k) * S + s;
                double v, mg;
                if (c->outmode == FASTCE_OUT_LOGSOFTMAX) {
                    v = (xr[k] - shift) - logs; mg = LPMAG(k);
                } else if (c->outmode == FASTCE_OUT_SOFTMAX) {
                    v = P(k); mg = v * LPMAG(k);
                } else if (ignored) {
                    v = 0.0; mg = 0.0;
                } else {
                    const double p = P(k);
                    const double yterm = wr[k] * (B1 * yr[k] + B0);
                    v = A * p - yterm;
                    mg = fabs(A) * p * LPMAG(k) + fabs(yterm);
                    if (k == t) { v -= fix; mg += fabs(fix); }
                }
                want_out[e] = v; mag_out[e] = mg;
            }
            #undef LPMAG
            #undef P
        }

    /* ---- snapshots of the inputs, NaN in the outputs, garbage in the states */
    void *x_copy = malloc((size_t)total * es);
    memcpy(x_copy, x, (size_t)total * es);
    void *aux_copy[3] = {NULL, NULL, NULL};
    const void *aux_ptr[3] = {target, prob, weight};
    const size_t aux_len[3] = {target ? (size_t)rows * ttype_size(c->ttype) : 0, prob ? (size_t)total * es : 0,
                               weight ? (size_t)C * es : 0};
    for (int i = 0; i < 3; i++)
        if (aux_ptr[i]) { aux_copy[i] = malloc(aux_len[i]); memcpy(aux_copy[i], aux_ptr[i], aux_len[i]); }
    if (row_out) memset(row_out, 0xFF, (size_t)rows * 8);
    if (row_lse) memset(row_lse, 0xFF, (size_t)rows * 8);
    if (out && !c->inplace) memset(out, 0xFF, (size_t)total * es);
    if (states) memset(states, 0xFF, (size_t)(N * c->parts) * sizeof(ce_state));

    /* ---- the call, as _kernels.pyx makes it */
    ce_args a;
    memset(&a, 0, sizeof a);
    a.N = N; a.C = C; a.S = S;
    a.x = x; a.target = target; a.ttype = c->ttype; a.prob = prob; a.weight = weight; a.wsum = wsum;
    a.ignore_index = c->ignore_index; a.eps = eps; a.kind = c->kind; a.outmode = c->outmode;
    a.row_out = row_out; a.row_lse = row_lse; a.out = out; a.stream_out = c->stream; a.gout = gout; a.gscale = gscale;
    a.parts = 1; a.seg = C; a.states = NULL;
    const ce_kernels *k = c->k;
    switch (c->entry) {
    case E_ROWS: run_range(k->rows, &a, N, c->block, c->reverse); break;
    case E_SMALL: run_range(k->small_rows, &a, N, c->block, c->reverse); break;
    case E_SPLIT:
        a.parts = c->parts; a.seg = c->seg; a.states = states;
        run_range(k->seg_stats, &a, N * c->parts, c->block, c->reverse);
        run_range(k->merge_rows, &a, N, c->block, c->reverse);
        if (has_out) run_range(k->seg_out, &a, N * c->parts, c->block, !c->reverse);
        break;
    case E_TILES: {
        const int64_t vw = k->vector_width, items = N * ((S + vw - 1) / vw);
        run_range(k->tiles, &a, items, c->block, c->reverse);
        break;
    }
    }

    /* ---- checks */
    int bad = 0;
    if (!canaries_ok()) {
        printf("FAIL %s\n  a byte in front of a buffer was overwritten\n", desc);
        bad++;
    }
    if (!c->inplace && memcmp(x_copy, x, (size_t)total * es)) {
        printf("FAIL %s\n  x was modified\n", desc);
        bad++;
    }
    for (int i = 0; i < 3; i++)
        if (aux_ptr[i] && memcmp(aux_copy[i], aux_ptr[i], aux_len[i])) {
            printf("FAIL %s\n  %s was modified\n", desc, i == 0 ? "target" : i == 1 ? "prob" : "weight");
            bad++;
        }
    int reported = 0;
    if (row_out && (ce || c->kind == FASTCE_KIND_LSE))
        for (int64_t r = 0; r < rows; r++) {
            const double got = getd(row_out, r);
            if (!close_enough(got, want_loss[r], mag_loss[r], rtol)) {
                if (reported++ < MAX_REPORT)
                    printf("%s %s\n  row_out[%lld] = %.17g, want %.17g (tol %.3g)\n", bad ? "    " : "FAIL", desc,
                           (long long)r, got, want_loss[r], rtol * mag_loss[r] + 1e-30);
                bad++;
            }
        }
    if (row_lse)
        for (int64_t r = 0; r < rows; r++) {
            const double got = getd(row_lse, r);
            if (!close_enough(got, want_lse[r], mag_lse[r], rtol)) {
                if (reported++ < MAX_REPORT)
                    printf("%s %s\n  row_lse[%lld] = %.17g, want %.17g\n", bad ? "    " : "FAIL", desc,
                           (long long)r, got, want_lse[r]);
                bad++;
            }
        }
    if (has_out)
        for (int64_t e = 0; e < total; e++) {
            const double got = getv(out, dbl, e);
            if (!close_enough(got, want_out[e], mag_out[e], rtol)) {
                if (reported++ < MAX_REPORT) {
                    const int64_t n = e / (C * S), kk = (e / S) % C, s = e % S;
                    printf("%s %s\n  out[n=%lld, c=%lld, s=%lld] = %.17g, want %.17g (tol %.3g)\n",
                           bad ? "    " : "FAIL", desc, (long long)n, (long long)kk, (long long)s, got,
                           want_out[e], rtol * mag_out[e] + 1e-30);
                }
                bad++;
            }
        }
    if (bad > MAX_REPORT) printf("  ... %d mismatches in all\n", bad);
    if (bad) n_fail++; else n_pass++;

    free(x_copy);
    for (int i = 0; i < 3; i++) free(aux_copy[i]);
    free(want_loss); free(mag_loss); free(want_lse); free(mag_lse); free(want_out); free(mag_out); free(xr); free(yr); free(wr); free(tgt);
    free_all();
    current_case[0] = 0;
}

/* ------------------------------------------------------------------ the vector math hooks */

static void check_array_fn(const char *isa, int dbl, int is_log, const ce_kernels *k) {
    const size_t es = dbl ? 8 : 4;
    static const int64_t sizes[] = {1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 423, 8201};
    int bad = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        const int64_t n = sizes[si];
        void *in = alloc_buf((size_t)n * es, start_off((int64_t)si % 3, es));
        void *outb = alloc_buf((size_t)n * es, start_off((int64_t)(si + 1) % 3, es));
        for (int64_t i = 0; i < n; i++)
            setv(in, dbl, i, is_log ? exp(urand() * 14.0) : 40.0 * urand() - 20.0); /* log: [1, 1.2e6] */
        memset(outb, 0xFF, (size_t)n * es);
        snprintf(current_case, sizeof current_case, "isa=%s dtype=%s %s_array n=%lld%s", isa,
                 dbl ? "f64" : "f32", is_log ? "log" : "exp", (long long)n, opt_guard ? " [guard]" : "");
        k->math_array(in, outb, n, is_log ? FASTCE_MATH_LOG : FASTCE_MATH_EXP);
        current_case[0] = 0;
        for (int64_t i = 0; i < n && bad < MAX_REPORT; i++) {
            const double v = getv(in, dbl, i), got = getv(outb, dbl, i);
            const double want = is_log ? log(v) : exp(v);
            if (!close_enough(got, want, fabs(want), dbl ? 1e-13 : 1e-6)) {
                printf("FAIL isa=%s dtype=%s %s_array n=%lld: y[%lld] = %.17g, want %.17g\n", isa,
                       dbl ? "f64" : "f32", is_log ? "log" : "exp", (long long)n, (long long)i, got, want);
                bad++;
            }
        }
        if (!canaries_ok()) { printf("FAIL isa=%s %s_array n=%lld: canary overwritten\n", isa, is_log ? "log" : "exp", (long long)n); bad++; }
        free_all();
    }
    if (bad) n_fail++; else n_pass++;
}

/* ------------------------------------------------------------------ the two-stream kernel (kl_rows)
 * Row pairs (a = reference, b = model) of C in {1, 2, 7, 16, 17, 423, 8201}, some classes of a
 * at -inf (p = 0: they contribute 0), with and without the gradient (in place over b, or into
 * its own buffer), per-row grad_output, a's argmax and b's rank at it; checked against double math here. */

static void run_kl_case(const ce_kernels *k, const char *isa_name, int dbl, int64_t N, int64_t C, int with_out,
                        int inplace, int with_rank, int use_gout) {
    const size_t es = dbl ? 8 : 4;
    snprintf(current_case, sizeof current_case, "kl_rows %s %s N=%lld C=%lld out=%d inplace=%d rank=%d gout=%d",
             isa_name, dbl ? "f64" : "f32", (long long)N, (long long)C, with_out, inplace, with_rank, use_gout);
    void *a = alloc_buf((size_t)(N * C) * es, start_off(irand(4), es));
    void *b = alloc_buf((size_t)(N * C) * es, start_off(irand(4), es));
    double *b0 = malloc((size_t)(N * C) * sizeof(double));
    for (int64_t i = 0; i < N * C; i++) {
        const double av = 3.0 * (urand() - 0.5) + (i % 97 == 0 ? 20.0 : 0.0);
        setv(a, dbl, i, (C > 1 && irand(9) == 0) ? -INFINITY : av);
        setv(b, dbl, i, getv(a, dbl, i) == -INFINITY ? av : av + (urand() - 0.5));
        b0[i] = getv(b, dbl, i);
    }
    for (int64_t r = 0; r < N; r++) setv(a, dbl, r * C + irand(C), 1.0);  /* one finite class per row */
    double *kl = alloc_buf((size_t)N * 8, aligned_off(irand(2), 8));
    double *lsa = alloc_buf((size_t)N * 8, 0), *lsb = alloc_buf((size_t)N * 8, 0);
    int64_t *ama = with_rank ? alloc_buf((size_t)N * 8, 0) : NULL;
    double *rank = with_rank ? alloc_buf((size_t)N * 8, 0) : NULL;
    double *gout = use_gout ? alloc_buf((size_t)N * 8, start_off(irand(2), 8)) : NULL;
    void *out = NULL;
    if (with_out) out = inplace ? b : alloc_buf((size_t)(N * C) * es, start_off(irand(4), es));
    if (with_out && !inplace) for (int64_t i = 0; i < N * C; i++) setv(out, dbl, i, NAN);
    for (int64_t r = 0; r < N; r++) {
        kl[r] = lsa[r] = lsb[r] = NAN;
        if (gout) gout[r] = urand() * 2.0 - 0.5;
    }
    kl_args ka = {N, C, a, b, kl, lsa, lsb, ama, rank, out, gout, 0.75};
    const int64_t block = 1 + irand(3);
    for (int64_t r0 = 0; r0 < N; r0 += block) k->kl_rows(&ka, r0, r0 + block < N ? r0 + block : N);

    const double rtol = dbl ? 1e-9 : 2e-4;
    int bad = !canaries_ok();
    for (int64_t r = 0; r < N && !bad; r++) {
        double ma = -INFINITY, mb = -INFINITY;
        int64_t ia = 0;
        for (int64_t c = 0; c < C; c++) {
            const double av = getv(a, dbl, r * C + c) , bv = b0[r * C + c];
            if (av > ma) { ma = av; ia = c; }
            if (bv > mb) mb = bv;
        }
        double sa = 0, sb = 0, t = 0, mag = 0;
        for (int64_t c = 0; c < C; c++) {
            const double av = getv(a, dbl, r * C + c), bv = b0[r * C + c];
            const double pa = exp(av - ma);
            sa += pa; sb += exp(bv - mb);
            if (pa > 0) { t += pa * ((av - ma) - (bv - mb)); mag += pa * (fabs(av - ma) + fabs(bv - mb)); }
        }
        const double want = t / sa - log(sa) + log(sb);
        bad |= !close_enough(kl[r], want, mag / sa + fabs(log(sa)) + fabs(log(sb)) + 1.0, rtol);
        bad |= !close_enough(lsa[r], ma + log(sa), fabs(ma) + 1.0, rtol);
        bad |= !close_enough(lsb[r], mb + log(sb), fabs(mb) + 1.0, rtol);
        if (with_rank) {
            int64_t above = 0;
            for (int64_t c = 0; c < C; c++) {
                const double bv = b0[r * C + c], bt = b0[r * C + ia];
                above += bv > bt || (bv == bt && c < ia);
            }
            bad |= ama[r] != ia || rank[r] != (double)above;
        }
        if (with_out) {
            const double g = 0.75 * (gout ? gout[r] : 1.0);
            for (int64_t c = 0; c < C && !bad; c++) {
                const double q = exp(b0[r * C + c] - mb) / sb, p = exp(getv(a, dbl, r * C + c) - ma) / sa;
                bad |= !close_enough(getv(out, dbl, r * C + c), g * (q - p), fabs(g) * (q + p) + 1e-7, rtol);
            }
        }
        if (bad && opt_verbose) printf("  row %lld: kl %.17g want %.17g\n", (long long)r, kl[r], want);
    }
    if (bad) { printf("FAIL %s\n", current_case); n_fail++; } else { n_pass++; if (opt_verbose) printf("ok %s\n", current_case); }
    free(b0);
    free_all();
}

/* shard_grad_rows: out_c = A e^(x_c - lse) - B w_c, minus fix at the target's column (or none),
   with and without weights, in place or not. */
static void run_shard_case(const ce_kernels *k, const char *isa_name, int dbl, int64_t N, int64_t C, int with_w,
                           int inplace) {
    const size_t es = dbl ? 8 : 4;
    snprintf(current_case, sizeof current_case, "shard_grad_rows %s %s N=%lld C=%lld w=%d inplace=%d", isa_name,
             dbl ? "f64" : "f32", (long long)N, (long long)C, with_w, inplace);
    void *x = alloc_buf((size_t)(N * C) * es, start_off(irand(4), es));
    double *x0 = malloc((size_t)(N * C) * sizeof(double));
    for (int64_t i = 0; i < N * C; i++) { setv(x, dbl, i, 4.0 * (urand() - 0.5)); x0[i] = getv(x, dbl, i); }
    void *out = inplace ? x : alloc_buf((size_t)(N * C) * es, start_off(irand(4), es));
    void *w = with_w ? alloc_buf((size_t)C * es, aligned_off(irand(2), es)) : NULL;
    if (w) for (int64_t c = 0; c < C; c++) setv(w, dbl, c, 0.5 + urand());
    double *lse = alloc_buf((size_t)N * 8, 0), *A = alloc_buf((size_t)N * 8, 0), *B = alloc_buf((size_t)N * 8, 0);
    double *fix = alloc_buf((size_t)N * 8, 0);
    int64_t *tcol = alloc_buf((size_t)N * 8, 0);
    for (int64_t r = 0; r < N; r++) {
        lse[r] = 1.0 + urand(); A[r] = urand(); B[r] = urand() * 0.1; fix[r] = urand();
        tcol[r] = irand(3) ? irand(C) : -1;
    }
    shard_args sa = {N, C, x, out, lse, A, B, fix, tcol, w};
    const int64_t block = 1 + irand(3);
    for (int64_t r0 = 0; r0 < N; r0 += block) k->shard_grad_rows(&sa, r0, r0 + block < N ? r0 + block : N);
    const double rtol = dbl ? 1e-9 : 2e-4;
    int bad = !canaries_ok();
    for (int64_t r = 0; r < N && !bad; r++)
        for (int64_t c = 0; c < C && !bad; c++) {
            const double wc = w ? getv(w, dbl, c) : 1.0;
            const double want = A[r] * exp(x0[r * C + c] - lse[r]) - B[r] * wc - (c == tcol[r] ? fix[r] : 0.0);
            bad |= !close_enough(getv(out, dbl, r * C + c), want, A[r] * exp(x0[r * C + c] - lse[r]) + B[r] * wc +
                                 fix[r] + 1e-7, rtol);
        }
    if (bad) { printf("FAIL %s\n", current_case); n_fail++; } else { n_pass++; if (opt_verbose) printf("ok %s\n", current_case); }
    free(x0);
    free_all();
}

static void run_kl_grid(const ce_isa_table *tab, int dbl) {
    static const int64_t Cs[] = {1, 2, 7, 16, 17, 423, 8201};
    const ce_kernels *k = tab->kernels[dbl ? FASTCE_DT_F64 : FASTCE_DT_F32];
    for (int ci = 0; ci < 7; ci++) {
        const int64_t C = Cs[ci], N = C > 1000 ? 3 : C > 100 ? 5 : 11;
        for (int with_out = 0; with_out < 2; with_out++)
            for (int variant = 0; variant < (opt_quick ? 1 : 3); variant++)
                run_kl_case(k, tab->name, dbl, N, C, with_out, with_out && variant == 1, variant != 2,
                            with_out && variant != 0);
        for (int with_w = 0; with_w < 2; with_w++)
            for (int inplace = 0; inplace < 2; inplace++) run_shard_case(k, tab->name, dbl, N, C, with_w, inplace);
    }
}

/* ------------------------------------------------------------------ the grid */

static int64_t rows_for(int entry, int64_t C, int64_t S) {
    if (opt_quick) {
        if (C > 1000) return entry == E_TILES ? 1 : 2;
        return C > 100 ? 2 : (entry == E_TILES && S > 1 ? 2 : 19);
    }
    if (C > 1000) return entry == E_TILES && S > 3 ? 1 : (entry == E_ROWS ? 3 : 2);
    if (C > 100) return entry == E_TILES && S > 3 ? 2 : (entry == E_ROWS ? 5 : 3);
    if (entry == E_TILES) return S == 1 ? 9 : (S == 3 ? 6 : (S == 17 ? 3 : 2));
    return entry == E_SPLIT ? 5 : 37;
}

typedef struct { int kind, outmode, has_w; double eps; } kopt_t;

static void run_grid(int isa, const ce_isa_table *tab, int dbl) {
    static const int64_t Cs_full[] = {1, 2, 7, 16, 17, 423, 8201};
    static const int64_t Cs_quick[] = {1, 7, 16, 17, 423, 8201};
    const int64_t *Cs = opt_quick ? Cs_quick : Cs_full;
    const int nC = opt_quick ? 6 : 7;
    kopt_t kopts[32];
    int nk = 0;
    kopts[nk++] = (kopt_t){FASTCE_KIND_LSE, FASTCE_OUT_NONE, 0, 0.0};
    kopts[nk++] = (kopt_t){FASTCE_KIND_LSE, FASTCE_OUT_SOFTMAX, 0, 0.0};
    kopts[nk++] = (kopt_t){FASTCE_KIND_LSE, FASTCE_OUT_LOGSOFTMAX, 0, 0.0};
    for (int kind = FASTCE_KIND_INDEX; kind <= FASTCE_KIND_PROB; kind++)
        for (int w = 0; w < 2; w++)
            for (int sm = 0; sm < 2; sm++)
                for (int om = 0; om < 2; om++)
                    kopts[nk++] = (kopt_t){kind, om ? FASTCE_OUT_GRAD : FASTCE_OUT_NONE, w, sm ? 0.1 : 0.0};
    const ce_kernels *k = tab->kernels[dbl ? FASTCE_DT_F64 : FASTCE_DT_F32];
    const int64_t vw = k->vector_width;
    static const int64_t Ss[] = {1, 3, 17, 70};

    for (int ci = 0; ci < nC; ci++) {
        const int64_t C = Cs[ci];
        for (int entry = 0; entry < E_COUNT; entry++) {
            if (entry == E_SMALL && C > FASTCE_SMALL_C) continue;
            if (entry == E_SPLIT && C < 2) continue;
            for (int si = 0; si < (entry == E_TILES ? 4 : 1); si++) {
                const int64_t S = Ss[si];
                for (int ki = 0; ki < nk; ki++) {
                    const kopt_t *ko = &kopts[ki];
                    const int has_out = ko->outmode != FASTCE_OUT_NONE;
                    for (int stream = 0; stream <= has_out; stream++) {
                        if (opt_quick && stream == 0 && has_out && irand(2)) continue;
                        case_t c;
                        memset(&c, 0, sizeof c);
                        c.isa = isa; c.dbl = dbl; c.k = k; c.isa_name = tab->name;
                        c.entry = entry; c.kind = ko->kind; c.outmode = ko->outmode;
                        c.has_w = ko->has_w; c.eps = ko->eps;
                        c.C = C; c.S = S; c.N = rows_for(entry, C, S);
                        c.stream = stream;
                        c.inplace = has_out && !stream && irand(3) == 0;
                        c.use_gout = ko->kind != FASTCE_KIND_LSE && irand(3) == 0;
                        c.null_rowout = has_out && irand(5) == 0;
                        c.ttype = ko->kind == FASTCE_KIND_INDEX ? (int)irand(8) : FASTCE_I64;
                        /* ignore_index: -100 for signed targets, or a class (also for unsigned) */
                        if (ttype_signed(c.ttype) && (irand(3) || C == 1)) c.ignore_index = -100;
                        else if (C == 1) c.ignore_index = 1; /* unsigned, one class: no hits */
                        else c.ignore_index = irand(C < 128 ? C : 128);
                        if (ko->kind == FASTCE_KIND_PROB) c.ignore_index = -100;
                        const int neginf_ok = ko->kind == FASTCE_KIND_LSE ||
                                              (ko->kind == FASTCE_KIND_INDEX && ko->eps == 0.0);
                        const int64_t pr = irand(8);
                        c.pattern = pr < 5 ? PAT_NORMAL : pr < 7 || !neginf_ok ? PAT_JUMP : PAT_NEGINF;
                        c.x_off = irand(4);          /* 0..3 elements: every 4-byte alignment */
                        c.out_off = irand(5);
                        c.aux_off = irand(2);
                        c.reverse = (int)irand(2);
                        /* work blocks; small_rows is given whole tiles as _kernels.pyx does, or
                           not (the kernels take any range) */
                        const int64_t bsel = irand(5);
                        c.block = bsel == 0 ? 0 : bsel == 1 ? 1 : bsel == 2 ? 3 : bsel == 3 ? vw : 2 * vw + 1;
                        if (entry == E_SPLIT) {
                            if (C >= 128 && irand(2)) { /* as _kernels.pyx: seg a multiple of 64 */
                                const int64_t want = 2 + irand(3);
                                c.seg = ((C + want - 1) / want + 63) / 64 * 64;
                            } else {
                                c.seg = (C + 1 + irand(3)) / (2 + irand(3)); /* any split */
                                if (c.seg < 1) c.seg = 1;
                                if (c.seg >= C) c.seg = C - 1 > 0 ? C - 1 : 1;
                            }
                            c.parts = (C + c.seg - 1) / c.seg;
                        } else {
                            c.parts = 1; c.seg = C;
                        }
                        run_case(&c);
                    }
                }
            }
        }
    }
    check_array_fn(tab->name, dbl, 0, k);
    check_array_fn(tab->name, dbl, 1, k);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--guard")) opt_guard = 1;
        else if (!strcmp(argv[i], "--misaligned")) opt_misaligned = 1;
        else if (!strcmp(argv[i], "--quick")) opt_quick = 1;
        else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) opt_verbose = 1;
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) rng_s = strtoull(argv[++i], NULL, 0) | 1;
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            const char *n = argv[++i];
            opt_isa = -2;
            for (int k = 0; k < FASTCE_ISA_COUNT; k++) if (!strcmp(n, fastce_isa_name(k))) opt_isa = k;
            if (opt_isa == -2) { fprintf(stderr, "kernel_harness: unknown ISA %s\n", n); return 2; }
        } else {
            fprintf(stderr, "usage: %s [--guard] [--misaligned] [--quick] [--isa NAME] [--seed N] [-v]\n", argv[0]);
            return 2;
        }
    }
    if (opt_guard && opt_misaligned) {
        fprintf(stderr, "kernel_harness: --guard and --misaligned do not combine\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    install_crash_reporting();
    int ran = 0;
    for (int isa = 0; isa < FASTCE_ISA_COUNT; isa++) {
        if (opt_isa >= 0 && isa != opt_isa) continue;
        const ce_isa_table *tab = fastce_isa_table(isa);
        if (!tab) { printf("kernel_harness: %s not compiled in; skipped\n", fastce_isa_name(isa)); continue; }
        if (!fastce_isa_runnable(isa)) { printf("kernel_harness: %s not runnable on this CPU; skipped\n", fastce_isa_name(isa)); continue; }
        for (int dbl = 0; dbl < 2; dbl++) {
            const long p0 = n_pass, f0 = n_fail;
            run_grid(isa, tab, dbl);
            run_kl_grid(tab, dbl);
            printf("kernel_harness: %-6s %s: %ld passed, %ld failed\n", tab->name, dbl ? "f64" : "f32",
                   n_pass - p0, n_fail - f0);
        }
        ran++;
    }
    if (!ran) { printf("kernel_harness: no ISA ran\n"); return 1; }
    printf("kernel_harness: %ld passed, %ld failed%s%s\n", n_pass, n_fail, opt_guard ? " (guard pages)" : "",
           opt_misaligned ? " (misaligned)" : "");
    return n_fail ? 1 : 0;
}
