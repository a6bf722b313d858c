/* fastce/kernel_impl.h: the row kernels, written once against the vector API of vec_*.h.
 *
 * Included by instantiate.h once per dtype, with these macros defined:
 *   REAL   float or double          V     the vector type          VW   lanes per vector
 *   VOP(op) the vector function op  (vf_op or vd_op)               KFN(name) a dtype-unique name
 *   XT     how the logits and the output are stored: REAL, or uint16_t for float16 / bfloat16,
 *          computed in float. XLOAD / XLOAD_TAIL widen a vector of them, XSTORE / XSTORE_TAIL /
 *          XSTREAM narrow one (round to nearest even), XGET / XPUT one element. Class weights
 *          and probability targets are always REAL.
 *
 * Passes over one row (C classes):
 *   pass 1 (seg_pass1): online max / sum-exp, in L1-sized chunks (CHUNK_ELEMS). One sweep per
 *     chunk from memory takes the max, the option sums and exp(x - running max); the running
 *     sum is rescaled once per chunk when the max grows (Milakov & Gimelshein 2018). The first
 *     chunk, or a jump of the max beyond MAX_JUMP, re-sweeps the chunk from L1. Each logit is
 *     read from DRAM once.
 *   pass 2 (seg_pass2): the gradient / softmax / log_softmax, from the row still in cache
 *     (non-temporal stores for large outputs).
 * Row groups (tile_group) run the same math with one row per lane: K-dimensional inputs in
 * place (VW neighbouring positions, classes strided by S), short rows (C <= FASTCE_SMALL_C)
 * through a transposed tile (small_rows).
 *
 * Options are specialized at compile time: every *_spec function is always_inline and called
 * with literal has_w / kind / smooth / outmode wherever they change the vector code
 * (CE_SPECIALIZE in instantiate.h), so the inner loops carry no option branches. Code that
 * options do not touch (sweep_exp) is out of line, once per dtype.
 */

#define CHUNK_ELEMS ((int64_t)(8192 / sizeof(REAL)))
/* Independent accumulators (vectors per step) of the sweeps from memory. With SIMD, one: the
   memory stream, not the latency of the max and sum chains, bounds these loops, and more
   accumulators only spilled the exp's constants (AVX2 has 16 vector registers) and lengthened
   the loop (measured: docs/performance/notes_kernels.md). The scalar path keeps 4: its float sums
   of a chunk would otherwise run through one accumulator (2048 additions), which cost float32
   accuracy on long rows. */
#define UNROLL (VW == 1 ? 4 : 1)

/* Constants of the linear sums: the row's (or lane's) ref, and y' = ys * y + ya. */
typedef struct { V ref, ys, ya; } KFN(lin);

FASTCE_INLINE KFN(lin) KFN(lin_make)(const ce_args *a, V ref) {
    KFN(lin) l;
    l.ref = ref;
    l.ys = VOP(set1)((REAL)(1.0 - a->eps));
    l.ya = VOP(set1)((REAL)(a->eps / (double)a->C));
    return l;
}

/* Lanes [0, n) of 1, the rest 0: masks the tail of the linear sums when there is no weight. */
static const REAL KFN(ones)[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

/* ---- one vector step of the linear sums that pass 1 gathers beside the max (see common.h) ----
 * index + smooth: sx += w (x - ref);   prob: y' = ys y + ya, swy += w y', swyx += w y' (x - ref)
 * (w = 1 without weights; for prob targets y' is formed whatever eps: ys = 1, ya = 0 give y
 * exactly, and one FMA per element costs less than a second copy of every prob kernel) */
FASTCE_INLINE void KFN(linear_step)(V xv, V wv, V yv, const KFN(lin) *l, const int has_w,
                                    const int kind, const int smooth, V *sx, V *swy, V *swyx) {
    const V d = VOP(sub)(xv, l->ref);
    if (kind == FASTCE_KIND_INDEX && smooth) *sx = has_w ? VOP(fmadd)(wv, d, *sx) : VOP(add)(*sx, d);
    if (kind == FASTCE_KIND_PROB) {
        const V yp = VOP(fmadd)(yv, l->ys, l->ya);
        const V wy = has_w ? VOP(mul)(wv, yp) : yp;
        *swy = VOP(add)(*swy, wy);
        *swyx = VOP(fmadd)(wy, d, *swyx);
    }
}

/* Sum of exp(x - shift) over one chunk (from L1: the chunk was just read). Out of line: it has
   no options, and runs only for a row's first chunk and after a large jump of the max. */
/* sweep_exp reads from L1, so latency, not memory, bounds it: two accumulators, measured faster
   than one (docs/performance/notes_kernels.md). */
#define EXP_UNROLL 2
static __attribute__((noinline)) double KFN(sweep_exp)(const XT *xc, int64_t len, V shift) {
    V e[EXP_UNROLL];
    for (int u = 0; u < EXP_UNROLL; u++) e[u] = VOP(set1)((REAL)0);
    int64_t i = 0;
    for (; i + EXP_UNROLL * VW <= len; i += EXP_UNROLL * VW)
        for (int u = 0; u < EXP_UNROLL; u++)
            e[u] = VOP(add)(e[u], VOP(exp_flush_bounded)(VOP(sub)(XLOAD(xc + i + u * VW), shift)));
    for (; i + VW <= len; i += VW)
        e[0] = VOP(add)(e[0], VOP(exp_flush_bounded)(VOP(sub)(XLOAD(xc + i), shift)));
    if (i < len)
        e[0] = VOP(add)(e[0], VOP(exp_flush_bounded)(VOP(sub)(XLOAD_TAIL(xc + i, len - i, (REAL)-INFINITY), shift)));
    for (int u = 1; u < EXP_UNROLL; u++) e[0] = VOP(add)(e[0], e[u]);
    return VOP(hsum)(e[0]);
}

/* How far ahead of the sweep from memory a software prefetch asks for each line. The hardware
   prefetchers alone left the row kernels well short of the memory bandwidth; 8 KiB ahead was
   the best distance measured (docs/performance/notes_kernels.md). The prefetch may run past the chunk into the next row or past the array's end: a prefetch
   never faults. */
#define ROW_PREFETCH_BYTES 8192
/* Vectors per step of sweep_main: UNROLL, or a cache line of REAL if more, so that a float32
   step issues one prefetch per line (AVX2: two vectors a line; a prefetch per vector asked for
   every line twice). Counted in REAL, not XT: the order of the additions, and so the bits of
   the sums, must not depend on how the logits are stored (a float16 row sums as its float32
   widening does). */
#define SWEEP_LINE_V (64 / (VW * (int)sizeof(REAL)))
#define SWEEP_STEP (SWEEP_LINE_V > UNROLL ? SWEEP_LINE_V : UNROLL)

/* One sweep over a chunk from memory: its max, the linear sums of the options, and, when
   with_exp, the sum of exp(x - shift) against a shift fixed before the sweep (the running max
   of the row's earlier chunks, whose sum, >= 1, this one joins: so exp_floored). With `rank`, it
   also counts the logits above `thr` into st->gt (the scoring kernel's rank of the target). */
FASTCE_INLINE double KFN(sweep_main)(const XT *xc, const REAL *wc, const REAL *yc, int64_t len,
                                     const KFN(lin) *l, const int has_w, const int kind,
                                     const int smooth, const int with_exp, V shift, double *esum,
                                     const int rank, V thr, ce_state *st) {
    const V zero = VOP(set1)((REAL)0);
    V mx[UNROLL], e[UNROLL], sx[UNROLL], swy[UNROLL], swyx[UNROLL], gt[UNROLL];
    for (int u = 0; u < UNROLL; u++) {
        mx[u] = VOP(set1)((REAL)-INFINITY);
        e[u] = sx[u] = swy[u] = swyx[u] = gt[u] = zero;
    }
    int64_t i = 0;
    for (; i + SWEEP_STEP * VW <= len; i += SWEEP_STEP * VW) {
        for (int b = 0; b < SWEEP_STEP * VW * (int)sizeof(XT); b += 64)
            __builtin_prefetch((const char *)(xc + i) + b + ROW_PREFETCH_BYTES);
        for (int v = 0; v < SWEEP_STEP; v++) {
            const int u = v % UNROLL;
            const int64_t k = i + v * VW;
            V xv = XLOAD(xc + k);
            mx[u] = VOP(max)(mx[u], xv);
            if (rank) gt[u] = VOP(count_gt)(gt[u], xv, thr);
            if (with_exp) e[u] = VOP(exp_floored_add)(VOP(sub)(xv, shift), e[u]);
            KFN(linear_step)(xv, has_w ? VOP(load)(wc + k) : zero,
                             kind == FASTCE_KIND_PROB ? VOP(load)(yc + k) : zero,
                             l, has_w, kind, smooth, &sx[u], &swy[u], &swyx[u]);
        }
    }
    for (; i + VW <= len; i += VW) {
        V xv = XLOAD(xc + i);
        mx[0] = VOP(max)(mx[0], xv);
        if (rank) gt[0] = VOP(count_gt)(gt[0], xv, thr);
        if (with_exp) e[0] = VOP(exp_floored_add)(VOP(sub)(xv, shift), e[0]);
        KFN(linear_step)(xv, has_w ? VOP(load)(wc + i) : zero,
                         kind == FASTCE_KIND_PROB ? VOP(load)(yc + i) : zero,
                         l, has_w, kind, smooth, &sx[0], &swy[0], &swyx[0]);
    }
    if (i < len) { /* tail: max and exp see -inf, the sums see 0 in the missing lanes */
        const int64_t rem = len - i;
        V xm = XLOAD_TAIL(xc + i, rem, (REAL)-INFINITY);
        mx[0] = VOP(max)(mx[0], xm);
        if (rank) gt[0] = VOP(count_gt)(gt[0], xm, thr); /* -inf fill is never above thr */
        if (with_exp) e[0] = VOP(exp_floored_add)(VOP(sub)(xm, shift), e[0]);
        if (smooth || kind == FASTCE_KIND_PROB) /* the weight (or a 0/1 mask) zeroes missing lanes */
            KFN(linear_step)(XLOAD_TAIL(xc + i, rem, 0),
                             VOP(load_tail)(has_w ? wc + i : KFN(ones), rem, 0),
                             kind == FASTCE_KIND_PROB ? VOP(load_tail)(yc + i, rem, 0) : zero,
                             l, 1, kind, smooth, &sx[0], &swy[0], &swyx[0]);
    }
    for (int u = 1; u < UNROLL; u++) {
        mx[0] = VOP(max)(mx[0], mx[u]); e[0] = VOP(add)(e[0], e[u]);
        sx[0] = VOP(add)(sx[0], sx[u]); swy[0] = VOP(add)(swy[0], swy[u]);
        swyx[0] = VOP(add)(swyx[0], swyx[u]); gt[0] = VOP(add)(gt[0], gt[u]);
    }
    if (rank) st->gt += VOP(hsum)(gt[0]); /* exact: at most CHUNK_ELEMS per chunk */
    if (kind == FASTCE_KIND_INDEX && smooth) st->sx += VOP(hsum)(sx[0]);
    if (kind == FASTCE_KIND_PROB) { st->swy += VOP(hsum)(swy[0]); st->swyx += VOP(hsum)(swyx[0]); }
    if (with_exp) *esum = VOP(hsum)(e[0]);
    return VOP(hmax)(mx[0]);
}

/* Largest jump of the max within which a chunk's exps, taken against the previous max, are
   kept (and rescaled exactly afterwards): the bound of the sums' terms (math_consts.h). It was
   64, only to stay finite, until AVX2's sums' exp traded accuracy above 16 for speed. */
#define MAX_JUMP FASTCE_SUM_ARG_MAX

/* Pass 1 over one contiguous segment: x, w, y point at the segment's first class.
 * Chunk by chunk (CHUNK_ELEMS, L1-sized). The first chunk is swept twice: for its max, then
 * for exp(x - max) from L1. Later chunks are swept once, taking exp against the running max
 * while the new max is found (memory streaming overlaps the exp work); if the chunk's max
 * exceeds the running max by more than MAX_JUMP (rare: the first large logits), the exps are
 * redone from L1 against the new max. Either way the running sum is rescaled once per chunk
 * (Milakov & Gimelshein 2018) and every logit is read from memory once. */
FASTCE_INLINE void KFN(seg_pass1)(const ce_args *a, const XT *x, const REAL *w, const REAL *y,
                                  int64_t n, const int has_w, const int kind, const int smooth,
                                  const int rank, REAL thr, ce_state *st) {
    const KFN(lin) l = KFN(lin_make)(a, VOP(set1)((REAL)st->ref));
    const V thr_v = VOP(set1)(thr);
    for (int64_t c0 = 0; c0 < n; c0 += CHUNK_ELEMS) {
        const int64_t len = n - c0 < CHUNK_ELEMS ? n - c0 : CHUNK_ELEMS;
        const XT *xc = x + c0;
        const REAL *wc = has_w ? w + c0 : NULL, *yc = y ? y + c0 : NULL;
        double esum = 0.0;
        if (st->m == -INFINITY) {
            const double m_new = fmax(st->m, KFN(sweep_main)(xc, wc, yc, len, &l, has_w, kind, smooth, 0,
                                                             VOP(set1)((REAL)0), &esum, rank, thr_v, st));
            esum = KFN(sweep_exp)(xc, len, VOP(set1)((REAL)ce_shift(m_new)));
            st->s = st->s * ce_rescale(st->m, m_new) + esum;
            st->m = m_new;
            continue;
        }
        const double m_old = st->m;
        const double m_k = KFN(sweep_main)(xc, wc, yc, len, &l, has_w, kind, smooth, 1,
                                           VOP(set1)((REAL)m_old), &esum, rank, thr_v, st);
        if (!(m_k > m_old)) {               /* max unchanged (or NaN, which esum carries) */
            st->s += esum;
        } else if (m_k - m_old <= MAX_JUMP) { /* exps taken at m_old: rescale all to m_k */
            st->s = (st->s + esum) * exp(m_old - m_k);
            st->m = m_k;
        } else {                              /* big jump (or +inf): redo from L1 at m_k */
            esum = KFN(sweep_exp)(xc, len, VOP(set1)((REAL)ce_shift(m_k)));
            st->s = st->s * ce_rescale(m_old, m_k) + esum;
            st->m = m_k;
        }
    }
}

/* The pass-2 value of one vector of classes (see row_math.h for A, B1, B0). */
FASTCE_INLINE V KFN(out_value)(V xv, V wv, V yv, V shift, V logs, V A, V B1, V B0,
                               const int outmode, const int has_w, const int kind, const int smooth) {
    V d = VOP(sub)(VOP(sub)(xv, shift), logs); /* log p, in torch's order */
    if (outmode == FASTCE_OUT_LOGSOFTMAX) return d;
    V p = VOP(exp_flush_bounded)(d); /* d <= 0 */
    if (outmode == FASTCE_OUT_SOFTMAX) return p;
    V g = VOP(mul)(A, p);
    if (kind == FASTCE_KIND_PROB) {
        V t = VOP(fmadd)(B1, yv, B0);
        g = VOP(sub)(g, has_w ? VOP(mul)(wv, t) : t);
    } else if (smooth) {
        g = VOP(sub)(g, has_w ? VOP(mul)(wv, B0) : B0);
    }
    return g;
}

/* Pass 2 over one contiguous segment; out may alias x (each element is read before written).
 * With `stream`, the whole vectors from out's first 64-byte boundary on are written with
 * non-temporal stores: a large gradient then costs one DRAM write per element instead of a
 * read-for-ownership plus a write. The caller fences (fastce_store_fence) before out is read. */
FASTCE_INLINE void KFN(seg_pass2)(const XT *x, XT *out, const REAL *w, const REAL *y, int64_t n,
                                  const int outmode, const int has_w, const int kind, const int smooth,
                                  const ce_row *r, const int stream) {
    const V shift = VOP(set1)((REAL)r->shift), logs = VOP(set1)((REAL)r->logs), A = VOP(set1)((REAL)r->A);
    const V B1 = VOP(set1)((REAL)r->B1), B0 = VOP(set1)((REAL)r->B0), zero = VOP(set1)((REAL)0);
    const int need_w = has_w && (kind == FASTCE_KIND_PROB || smooth) && outmode == FASTCE_OUT_GRAD;
    const int need_y = kind == FASTCE_KIND_PROB && outmode == FASTCE_OUT_GRAD;
#define OUT_FULL(i) KFN(out_value)(XLOAD(x + (i)), need_w ? VOP(load)(w + (i)) : zero,          \
                                   need_y ? VOP(load)(y + (i)) : zero, shift, logs, A, B1, B0,     \
                                   outmode, has_w, kind, smooth)
#define OUT_PART(i, m) KFN(out_value)(XLOAD_TAIL(x + (i), m, 0),                                 \
                                      need_w ? VOP(load_tail)(w + (i), m, 0) : zero,               \
                                      need_y ? VOP(load_tail)(y + (i), m, 0) : zero, shift, logs,  \
                                      A, B1, B0, outmode, has_w, kind, smooth)
    int64_t i = 0;
    if (stream && (uintptr_t)out % sizeof(XT) == 0) {
        int64_t head = (int64_t)((64 - (uintptr_t)out % 64) % 64 / sizeof(XT));
        if (head > n) head = n;
        while (i < head) { /* up to the 64-byte boundary: ordinary (masked) stores */
            const int64_t m = head - i < VW ? head - i : VW;
            XSTORE_TAIL(out + i, OUT_PART(i, m), m);
            i += m;
        }
        for (; i + VW <= n; i += VW) XSTREAM(out + i, OUT_FULL(i));
    }
    for (; i + VW <= n; i += VW) XSTORE(out + i, OUT_FULL(i));
    if (i < n) XSTORE_TAIL(out + i, OUT_PART(i, n - i), n - i);
#undef OUT_FULL
#undef OUT_PART
}

/* The target's gradient: pass 2 wrote A p_t - ..., the target also takes -fix (row_math.h).
   Stored as REAL, that is one more rounding, as it always was. Stored as float16 / bfloat16,
   subtracting from the narrowed value would round twice (and lose everything when p_t is near
   1), so g_t is computed again in float from x_t (the row state's xt: the logit may already
   be overwritten, with out = x) by the same vector code as pass 2, and narrowed once. */
FASTCE_INLINE void KFN(fix_target)(XT *out_t, double xt, const REAL *w_t, const ce_row *r,
                                   const int outmode, const int has_w, const int kind, const int smooth) {
    if (sizeof(XT) == sizeof(REAL)) {
        XPUT(out_t, XGET(out_t) - (REAL)r->fix);
        return;
    }
    const V zero = VOP(set1)((REAL)0);
    const V g = KFN(out_value)(VOP(set1)((REAL)xt), has_w && smooth ? VOP(set1)(*w_t) : zero, zero,
                               VOP(set1)((REAL)r->shift), VOP(set1)((REAL)r->logs), VOP(set1)((REAL)r->A),
                               VOP(set1)((REAL)r->B1), VOP(set1)((REAL)r->B0), outmode, has_w, kind, smooth);
    REAL lanes[VW];
    VOP(store)(lanes, g);
    XPUT(out_t, lanes[0] - (REAL)r->fix);
}

/* log(s) of n rows' states. Short rows are processed ROW_BATCH at a time so that their logs run
   VW lanes at once (a libm log per row would cost as much as the rest of a 10-class row). */
#define ROW_BATCH 16
FASTCE_INLINE void KFN(logs_batch)(const ce_state *st, double *logs, int64_t n) {
    REAL sb[ROW_BATCH + VW];
    int64_t j = 0;
    for (; j < n; j++) sb[j] = (REAL)st[j].s;
    for (; j % VW; j++) sb[j] = 1;
    for (j = 0; j < n; j += VW) VOP(store)(sb + j, VOP(log)(VOP(load)(sb + j)));
    for (j = 0; j < n; j++) logs[j] = (double)sb[j];
}

/* The largest REAL below x: logits before the target rank above it when x_c > this (x_c >= x_t). */
FASTCE_INLINE REAL KFN(next_below)(REAL x) {
    return sizeof(REAL) == sizeof(float) ? (REAL)nextafterf((float)x, -INFINITY) : (REAL)nextafter((double)x, -INFINITY);
}

/* ---- S == 1, one row per item, both passes fused ----
 * With `rank` (the scoring kernel), pass 1 runs as two segments split at the target t: classes
 * before t count towards gt when x_c >= x_t, classes from t on when x_c > x_t (argmax's tie order).
 * Ignored rows skip pass 1, unless their lse is asked for (row_lse). */
FASTCE_INLINE void KFN(rows_core)(const ce_args *a, int64_t r0, int64_t r1, const int has_w,
                                  const int kind, const int smooth, const int outmode, const int rank) {
    const int64_t C = a->C;
    const REAL *w = (const REAL *)a->weight;
    /* Batch only rows short enough that a batch stays in L1 for pass 2. */
    const int64_t batch = C * (int64_t)sizeof(REAL) <= 1024 ? ROW_BATCH : 1;
    for (int64_t rb = r0; rb < r1; rb += batch) {
        const int64_t nb = r1 - rb < batch ? r1 - rb : batch;
        ce_state st[ROW_BATCH];
        int64_t t[ROW_BATCH];
        double w_t[ROW_BATCH], logs[ROW_BATCH];
        for (int64_t j = 0; j < nb; j++) {
            const int64_t r = rb + j;
            const XT *xr = (const XT *)a->x + r * C;
            ce_state_init(&st[j], ce_ref(XGET(xr)));
            t[j] = 0;
            w_t[j] = 1.0;
            const int ignored = kind == FASTCE_KIND_INDEX && (t[j] = ce_target_at(a->target, a->ttype, r)) == a->ignore_index;
            if (ignored && !a->row_lse) { st[j].s = 1.0; continue; } /* skipped below */
            if (kind == FASTCE_KIND_INDEX && !ignored) {
                st[j].xt = XGET(xr + t[j]);
                if (has_w) w_t[j] = w[t[j]];
            }
            if (rank && !ignored) {
                const int64_t tt = t[j];
                const REAL x_t = XGET(xr + tt);
                KFN(seg_pass1)(a, xr, w, NULL, tt, has_w, kind, smooth, 1, KFN(next_below)(x_t), &st[j]);
                KFN(seg_pass1)(a, xr + tt, has_w ? w + tt : NULL, NULL, C - tt, has_w, kind, smooth, 1,
                               x_t, &st[j]);
            } else {
                KFN(seg_pass1)(a, xr, w, kind == FASTCE_KIND_PROB ? (const REAL *)a->prob + r * C : NULL, C,
                               has_w, kind, smooth, 0, 0, &st[j]);
            }
        }
        if (batch == 1) logs[0] = log(st[0].s);
        else KFN(logs_batch)(st, logs, nb);
        for (int64_t j = 0; j < nb; j++) {
            const int64_t r = rb + j;
            XT *outr = outmode ? (XT *)a->out + r * C : NULL;
            if (kind == FASTCE_KIND_INDEX && t[j] == a->ignore_index) {
                if (a->row_out) a->row_out[r] = 0.0;
                if (a->row_lse) a->row_lse[r] = ce_shift(st[j].m) + logs[j];
                if (rank) a->row_rank[r] = -1.0;
                if (outmode) memset(outr, 0, (size_t)C * sizeof(XT));
                continue;
            }
            const ce_row rr = ce_finish(a, &st[j], logs[j], w_t[j], ce_coef(a, r));
            if (a->row_out) a->row_out[r] = rr.loss;
            if (a->row_lse) a->row_lse[r] = rr.lse;
            if (rank) a->row_rank[r] = st[j].gt;
            if (outmode) {
                KFN(seg_pass2)((const XT *)a->x + r * C, outr, w,
                               kind == FASTCE_KIND_PROB ? (const REAL *)a->prob + r * C : NULL, C,
                               outmode, has_w, kind, smooth, &rr, a->stream_out);
                if (kind == FASTCE_KIND_INDEX) {
                    if (a->stream_out) fastce_store_fence(); /* the target's line may be streamed */
                    KFN(fix_target)(outr + t[j], st[j].xt, has_w ? w + t[j] : NULL, &rr, outmode, has_w, kind, smooth);
                }
            }
        }
    }
    if (outmode && a->stream_out) fastce_store_fence();
}

FASTCE_INLINE void KFN(rows_spec)(const ce_args *a, int64_t r0, int64_t r1, const int has_w,
                                  const int kind, const int smooth, const int outmode) {
    KFN(rows_core)(a, r0, r1, has_w, kind, smooth, outmode, 0);
}

/* ---- S == 1, rows split into `parts` class segments (few rows, many classes) ---- */
FASTCE_INLINE void KFN(seg_bounds)(const ce_args *a, int64_t i, int64_t *r, int64_t *c0, int64_t *c1) {
    *r = i / a->parts;
    *c0 = (i % a->parts) * a->seg;
    *c1 = *c0 + a->seg < a->C ? *c0 + a->seg : a->C;
}

FASTCE_INLINE void KFN(seg_stats_spec)(const ce_args *a, int64_t i0, int64_t i1, const int has_w,
                                       const int kind, const int smooth, const int outmode) {
    (void)outmode;
    const REAL *w = (const REAL *)a->weight;
    for (int64_t i = i0; i < i1; i++) {
        int64_t r, c0, c1;
        KFN(seg_bounds)(a, i, &r, &c0, &c1);
        const XT *xr = (const XT *)a->x + r * a->C;
        const REAL *yr = kind == FASTCE_KIND_PROB ? (const REAL *)a->prob + r * a->C : NULL;
        ce_state *st = &a->states[i];
        ce_state_init(st, ce_ref(XGET(xr))); /* the row's ref, shared by all its segments */
        if (kind == FASTCE_KIND_INDEX) {
            const int64_t t = ce_target_at(a->target, a->ttype, r);
            if (t == a->ignore_index) { if (!a->row_lse) continue; } /* else: its lse only */
            else if (t >= c0 && t < c1) st->xt = XGET(xr + t);
        }
        KFN(seg_pass1)(a, xr + c0, has_w ? w + c0 : NULL, yr ? yr + c0 : NULL, c1 - c0, has_w, kind,
                       smooth, 0, 0, st);
    }
}

FASTCE_INLINE double KFN(target_weight)(const ce_args *a, int64_t t, const int has_w) {
    return has_w ? (double)((const REAL *)a->weight)[t] : 1.0;
}

/* O(rows) scalar code: the options are read at run time (one copy per dtype). */
static void KFN(merge_rows)(const ce_args *a, int64_t r0, int64_t r1) {
    const int has_w = a->weight != NULL, kind = a->kind;
    for (int64_t r = r0; r < r1; r++) {
        ce_state *st = &a->states[r * a->parts];
        int64_t t = 0;
        for (int64_t p = 1; p < a->parts; p++) ce_state_merge(st, &a->states[r * a->parts + p]);
        if (kind == FASTCE_KIND_INDEX) {
            t = ce_target_at(a->target, a->ttype, r);
            if (t == a->ignore_index) {
                if (a->row_out) a->row_out[r] = 0.0;
                if (a->row_lse) a->row_lse[r] = ce_shift(st->m) + log(st->s);
                continue;
            }
        }
        const ce_row rr = ce_finish(a, st, log(st->s), KFN(target_weight)(a, t, has_w), ce_coef(a, r));
        if (a->row_out) a->row_out[r] = rr.loss;
        if (a->row_lse) a->row_lse[r] = rr.lse;
    }
}

FASTCE_INLINE void KFN(seg_out_spec)(const ce_args *a, int64_t i0, int64_t i1, const int has_w,
                                     const int kind, const int smooth, const int outmode) {
    const REAL *w = (const REAL *)a->weight;
    for (int64_t i = i0; i < i1; i++) {
        int64_t r, c0, c1;
        KFN(seg_bounds)(a, i, &r, &c0, &c1);
        const XT *xr = (const XT *)a->x + r * a->C;
        XT *outr = (XT *)a->out + r * a->C;
        const REAL *yr = kind == FASTCE_KIND_PROB ? (const REAL *)a->prob + r * a->C : NULL;
        int64_t t = 0;
        if (kind == FASTCE_KIND_INDEX) {
            t = ce_target_at(a->target, a->ttype, r);
            if (t == a->ignore_index) {
                memset(outr + c0, 0, (size_t)(c1 - c0) * sizeof(XT));
                continue;
            }
        }
        const ce_state *st = &a->states[r * a->parts];
        const ce_row rr = ce_finish(a, st, log(st->s), KFN(target_weight)(a, t, has_w), ce_coef(a, r));
        KFN(seg_pass2)(xr + c0, outr + c0, has_w ? w + c0 : NULL, yr ? yr + c0 : NULL, c1 - c0,
                       outmode, has_w, kind, smooth, &rr, a->stream_out);
        if (a->stream_out) fastce_store_fence();
        if (kind == FASTCE_KIND_INDEX && t >= c0 && t < c1)
            KFN(fix_target)(outr + t, st->xt, has_w ? w + t : NULL, &rr, outmode, has_w, kind, smooth);
    }
}

/* ---- tiles: rows across lanes, one row per lane ----
 * A tile is nv vectors of rows (nv * VW lanes; the last vector holds `lanes` rows, and is read
 * with masked loads when `full` is 0) whose logits of class c lie contiguously at xb + c * cstride, lane l holding row
 * pos0 + l. K-dimensional inputs are tiles in place (neighbouring positions, cstride = S);
 * short (N, C) rows are transposed into a one-vector tile first (small_rows). Every row is then
 * reduced across lanes, with no horizontal reductions and one vector log per vector of rows.
 * nv, full and prefetch are literals; lanes is not (a transposed tile is padded, so full).
 *
 * Why several vectors and a prefetch: in place, a tile reads C lines spaced cstride apart, one
 * stream per class, which the hardware prefetchers follow poorly. A software prefetch
 * PREFETCH_BYTES ahead in every class's stream (tile_ahead: into the next n's planes near a
 * plane's end; input in pass A, output, for writing, in pass C) and, with 64-byte vectors,
 * TILE_V = 4 neighbouring vectors per class visit (4 whole lines) keep the loads from waiting
 * on DRAM (measured: docs/performance/notes_kernels.md). AVX2 takes 2 (one whole line per
 * visit) for the forward, whose pass A then keeps its sums in registers, and 4 (two lines)
 * with an output, whose pass C writes the lines back. The scalar path keeps 1. TILE_V is the most any specialization takes (the tile's arrays). */
#define TILE_V (VW == 1 ? 1 : 4)
#define TILE_V_FOR(outmode) (VW == 1 ? 1 : VW * sizeof(REAL) >= 64 || (outmode) ? 4 : 2)

/* The widest max - m (a lane's max over its reference, see tile_group) whose sum pass A keeps.
 * Every exp of that sum is taken at x - m, rounded once: by at most half an ulp of
 * TILE_MAX_SPREAD where it matters (the terms within TILE_MAX_SPREAD of the max), 2^-21
 * relative in float32, so lse and p are off by at most ~5e-7 relative. (A reference lagging
 * the max by up to 64, as before, gave 2^-19: 1.3e-6 measured in a gradient, over float32's
 * test tolerance.) Wider lanes are redone against their max (pass B), and the reference is
 * the max of the first TILE_REF_CLASSES logits so that this stays rare: for normal logits of
 * std 3 and 21 classes, max - x0 > 16 in 0.14% of lanes (1.1% of 8-lane vectors, 2.2% of
 * 16-lane ones), max - max(x0..x3) > 16 in 1 of 2e6 rows. Far below exp's overflow (88). */
#define TILE_MAX_SPREAD FASTCE_SUM_ARG_MAX
#define TILE_REF_CLASSES 4
#define PREFETCH_BYTES 1024

/* The prefetch's target for tile (n, p0): the offset, in elements, from it to the position
   PREFETCH_BYTES further on in the order the tiles are visited (p through S, then n), where
   the classes' streams will be read next. Within the plane that is PREFETCH_BYTES itself;
   across its end it is the next n's plane, C planes on (an offset of PREFETCH_BYTES alone would
   land in class c + 1's plane, already read: with S of 64 to 512 floats that was every prefetch,
   and the forward ran far slower: notes_kernels.md). Past the array's end: 0, the tile itself. */
FASTCE_INLINE int64_t KFN(tile_ahead)(int64_t n, int64_t p0, int64_t N, int64_t C, int64_t S) {
    const int64_t step = PREFETCH_BYTES / (int64_t)sizeof(XT);
    if (p0 + step < S) return step;
    const int64_t q = n * S + p0 + step, n2 = q / S;
    return n2 < N ? (n2 - n) * C * S + (q - n2 * S) - p0 : 0;
}

FASTCE_INLINE V KFN(load_tile)(const REAL *p, int v, int nv, int64_t lanes, const int full) {
    return full || v < nv - 1 ? VOP(load)(p) : VOP(load_tail)(p, lanes, 0);
}
FASTCE_INLINE V KFN(load_tile_x)(const XT *p, int v, int nv, int64_t lanes, const int full) {
    return full || v < nv - 1 ? XLOAD(p) : XLOAD_TAIL(p, lanes, 0);
}
#define TILE_LOAD(p, v) KFN(load_tile)((p) + (v) * VW, v, nv, lanes, full)
#define TILE_LOAD_X(p, v) KFN(load_tile_x)((p) + (v) * VW, v, nv, lanes, full)

FASTCE_INLINE void KFN(tile_group)(const ce_args *a, const XT *xb, const REAL *yb, XT *ob,
                                   int64_t cstride, int64_t pos0, const int nv, int64_t lanes,
                                   const int full, const int prefetch, int64_t ahead, const int has_w,
                                   const int kind, const int smooth, const int outmode) {
    const int64_t C = a->C, S = cstride;
    const REAL *w = (const REAL *)a->weight;
    const V zero = VOP(set1)((REAL)0), spread = VOP(set1)((REAL)TILE_MAX_SPREAD);
    const int line_v = VW * (int)sizeof(XT) >= 64 ? 1 : 64 / (VW * (int)sizeof(XT)); /* vectors per line */

    /* Pass A, one read of the tile: per-lane max, linear sums (relative to each lane's first
       logit x0), and e = sum_c exp(x_c - m) against a reference m: the max of the lane's first
       TILE_REF_CLASSES logits (read twice, the second time from L1), so e holds exp(0) = 1.
       At the end sum_c exp(x_c - max) = e exp(m - max) when every lane of the vector has
       max - m <= TILE_MAX_SPREAD. Otherwise, or with any non-finite x0, max or e (inf or NaN
       logits), the vector redoes its sum against shift(max) from cache (pass B), which gives
       those rows exactly the two-pass semantics of the row kernels; whatever pass A's exps
       made of arguments above TILE_MAX_SPREAD is then discarded. One test per vector after
       the classes, none per class. */
    V x0[TILE_V], m[TILE_V], mx[TILE_V], e[TILE_V], sx[TILE_V], swy[TILE_V], swyx[TILE_V];
    KFN(lin) lin[TILE_V];
    const int64_t n_ref = C < TILE_REF_CLASSES ? C : TILE_REF_CLASSES;
    for (int v = 0; v < nv; v++) {
        x0[v] = m[v] = TILE_LOAD_X(xb, v);
        for (int64_t c = 1; c < n_ref; c++) m[v] = VOP(max)(m[v], TILE_LOAD_X(xb + c * S, v));
        lin[v] = KFN(lin_make)(a, VOP(finite_or_zero)(x0[v]));
        mx[v] = VOP(set1)((REAL)-INFINITY);
        e[v] = sx[v] = swy[v] = swyx[v] = zero;
    }
    for (int64_t c = 0; c < C; c++) {
        const XT *xc = xb + c * S;
        if (prefetch)
            for (int v = 0; v < nv; v += line_v) __builtin_prefetch(xc + ahead + v * VW);
        for (int v = 0; v < nv; v++) {
            const V xv = TILE_LOAD_X(xc, v);
            mx[v] = VOP(max)(mx[v], xv);
            KFN(linear_step)(xv, has_w ? VOP(set1)(w[c]) : zero,
                             kind == FASTCE_KIND_PROB ? TILE_LOAD(yb + c * S, v) : zero,
                             &lin[v], has_w, kind, smooth, &sx[v], &swy[v], &swyx[v]);
            e[v] = VOP(exp_floored_add)(VOP(sub)(xv, m[v]), e[v]); /* kept if <= TILE_MAX_SPREAD */
        }
    }

    /* log(sum) for all lanes at once; then per lane, in double, the loss and the pass-2
       coefficients (row_math.h). */
    REAL mb[TILE_V * VW], refb[TILE_V * VW], logs_b[TILE_V * VW], sxb[TILE_V * VW];
    REAL swyb[TILE_V * VW], swyxb[TILE_V * VW], A_b[TILE_V * VW], B1_b[TILE_V * VW], B0_b[TILE_V * VW];
    /* Per lane: the target, its logit x_t and weight; for the target's gradient, the fix alone
       when the output is stored as REAL, the row's coefficients too for 2-byte outputs
       (fix_target recomputes g_t from x_t). */
    enum { HALF_OUT_ = sizeof(XT) != sizeof(REAL) };
    double fix_b[TILE_V * VW], xt_b[TILE_V * VW], wt_b[TILE_V * VW], loss_b[TILE_V * VW], lse_b[TILE_V * VW];
    ce_row row_b[HALF_OUT_ ? TILE_V * VW : 1];
    int64_t t_b[TILE_V * VW];
    V shift[TILE_V];
    for (int v = 0; v < nv; v++) {
        shift[v] = VOP(shift)(mx[v]);
        if (VOP(all_finite)(VOP(add)(VOP(add)(x0[v], mx[v]), e[v])) && !VOP(any_gt)(VOP(sub)(mx[v], m[v]), spread)) {
            e[v] = VOP(mul)(e[v], VOP(exp_flush_bounded)(VOP(sub)(m[v], mx[v])));
        } else { /* Pass B: this vector's sum of exp(x - shift) */
            e[v] = zero;
            for (int64_t c = 0; c < C; c++)
                e[v] = VOP(add)(e[v], VOP(exp_flush_bounded)(VOP(sub)(TILE_LOAD_X(xb + c * S, v), shift[v])));
        }
        VOP(store)(mb + v * VW, mx[v]); VOP(store)(refb + v * VW, lin[v].ref);
        VOP(store)(logs_b + v * VW, VOP(log)(e[v]));
        VOP(store)(sxb + v * VW, sx[v]); VOP(store)(swyb + v * VW, swy[v]); VOP(store)(swyxb + v * VW, swyx[v]);
    }
    const int64_t nl = (nv - 1) * VW + lanes;
    /* The options as ce_finish sees them: a local copy (so the compiler knows the stores below
       leave them alone) with what this specialization fixes written in (the kind; eps = 0
       without smoothing), so that ce_finish folds to the case at hand. Without an output only
       the loss and lse are kept, and the gradient's coefficients fold away. */
    ce_args opt = *a;
    opt.kind = kind;
    if (kind == FASTCE_KIND_INDEX && !smooth) opt.eps = 0.0;
    /* Each lane's target (t_b: -1 for an ignored or padding lane), its logit and weight. */
    if (kind == FASTCE_KIND_INDEX) {
        ce_targets_at(a->target, a->ttype, pos0, nl, t_b);
        for (int64_t l = 0; l < nv * VW; l++) {
            const int64_t t = l < nl && t_b[l] != opt.ignore_index ? t_b[l] : -1;
            t_b[l] = t;
            xt_b[l] = t >= 0 ? XGET(xb + t * S + l) : 0.0;
            wt_b[l] = has_w ? (t >= 0 ? (double)w[t] : 0.0) : 1.0;
        }
    }
    /* Then the lanes' losses and coefficients in one loop with no branch that depends on the
       lane, into local arrays, so that gcc vectorizes it for the forward (measured faster:
       docs/performance/notes_kernels.md). Only there: with an output (whose pass C costs far
       more) an empty asm with a memory clobber keeps gcc from vectorizing it, and the
       vectorized copies in every specialization had multiplied the objects' compile time
       (notes_kernels.md). An ignored lane has loss 0
       and gradient 0 (A = B = 0 times p <= 1), and its lse. */
#pragma GCC ivdep
    for (int64_t l = 0; l < nl; l++) {
        if (outmode) __asm__ volatile("" ::: "memory"); /* not vectorized: see above */
        const ce_state st = {mb[l], 0.0, kind == FASTCE_KIND_INDEX ? xt_b[l] : 0.0, refb[l], sxb[l], swyb[l], swyxb[l], 0.0};
        const int keep = kind != FASTCE_KIND_INDEX || t_b[l] >= 0;
        const ce_row rr = ce_finish(&opt, &st, logs_b[l], kind == FASTCE_KIND_INDEX ? wt_b[l] : 1.0,
                                    ce_coef(&opt, pos0 + l));
        loss_b[l] = keep ? rr.loss : 0.0;
        lse_b[l] = rr.lse;
        if (outmode) {
            A_b[l] = keep ? (REAL)rr.A : 0; B1_b[l] = keep ? (REAL)rr.B1 : 0; B0_b[l] = keep ? (REAL)rr.B0 : 0;
            fix_b[l] = rr.fix;
            if (HALF_OUT_) row_b[HALF_OUT_ ? l : 0] = rr;
        }
    }
    if (opt.row_out) memcpy(opt.row_out + pos0, loss_b, (size_t)nl * sizeof(double));
    if (opt.row_lse) memcpy(opt.row_lse + pos0, lse_b, (size_t)nl * sizeof(double));
    if (outmode)
        for (int64_t l = nl; l < nv * VW; l++) A_b[l] = B1_b[l] = B0_b[l] = 0; /* padding lanes */
    if (!outmode) return;

    /* Pass C: the output, class by class, prefetching the output lines of the next tile for
       writing. */
    V logs[TILE_V], A[TILE_V], B1[TILE_V], B0[TILE_V];
    for (int v = 0; v < nv; v++) {
        logs[v] = VOP(load)(logs_b + v * VW); A[v] = VOP(load)(A_b + v * VW);
        B1[v] = VOP(load)(B1_b + v * VW); B0[v] = VOP(load)(B0_b + v * VW);
    }
    for (int64_t c = 0; c < C; c++) {
        const V wv = has_w ? VOP(set1)(w[c]) : zero;
        if (prefetch)
            for (int v = 0; v < nv; v += line_v) __builtin_prefetch(ob + c * S + ahead + v * VW, 1);
        for (int v = 0; v < nv; v++) {
            const V yv = kind == FASTCE_KIND_PROB ? TILE_LOAD(yb + c * S, v) : zero;
            const V r = KFN(out_value)(TILE_LOAD_X(xb + c * S, v), wv, yv, shift[v], logs[v], A[v],
                                       B1[v], B0[v], outmode, has_w, kind, smooth);
            if (full || v < nv - 1) XSTORE(ob + c * S + v * VW, r);
            else XSTORE_TAIL(ob + c * S + v * VW, r, lanes);
        }
    }
    if (kind != FASTCE_KIND_INDEX) return;
    for (int64_t l = 0; l < nl; l++) {
        if (t_b[l] < 0) continue;
        XT *out_t = ob + t_b[l] * S + l;
        if (!HALF_OUT_) {
            XPUT(out_t, XGET(out_t) - (REAL)fix_b[l]);
        } else {
            KFN(fix_target)(out_t, xt_b[l], has_w ? w + t_b[l] : NULL, &row_b[HALF_OUT_ ? l : 0],
                            outmode, has_w, kind, smooth);
        }
    }
}
#undef TILE_LOAD
#undef TILE_LOAD_X

/* S > 1: item = (n, group of VW positions), in place, classes strided by S. Runs of TILE_V
   whole vectors of one n go through one tile; the rest a vector at a time. */
FASTCE_INLINE void KFN(tiles_spec)(const ce_args *a, int64_t i0, int64_t i1, const int has_w,
                                   const int kind, const int smooth, const int outmode) {
    const int64_t C = a->C, S = a->S, groups = (S + VW - 1) / VW;
    for (int64_t i = i0; i < i1;) {
        const int64_t n = i / groups, p0 = (i % groups) * VW, offset = n * C * S + p0;
        const XT *xb = (const XT *)a->x + offset;
        const REAL *yb = kind == FASTCE_KIND_PROB ? (const REAL *)a->prob + offset : NULL;
        XT *ob = outmode ? (XT *)a->out + offset : NULL;
        const int64_t ahead = KFN(tile_ahead)(n, p0, a->N, C, S);
        const int tv = TILE_V_FOR(outmode);
        if (tv > 1 && i + tv <= i1 && p0 + tv * VW <= S) { /* (dead code when tv is 1) */
            KFN(tile_group)(a, xb, yb, ob, S, n * S + p0, tv, VW, 1, 1, ahead, has_w, kind, smooth, outmode);
            i += tv;
            continue;
        }
        if (p0 + VW <= S)
            KFN(tile_group)(a, xb, yb, ob, S, n * S + p0, 1, VW, 1, 1, ahead, has_w, kind, smooth, outmode);
        else
            KFN(tile_group)(a, xb, yb, ob, S, n * S + p0, 1, S - p0, 0, 1, ahead, has_w, kind, smooth, outmode);
        i++;
    }
}

/* S == 1 and C <= SMALL_C: item = row; rows [i0, i1) go VW at a time through a transposed tile
   (C x VW, on the stack), so a 10-class row costs no reductions and 1/VW of a log. A last tile
   of fewer rows is padded with zeros (finite logits, probability 0), so every tile is read
   whole and one inlined tile_group serves them all; only its `lanes` rows are reported. */
#define FASTCE_TRANSPOSE_DEF(NAME, T)                                                              \
    FASTCE_INLINE void KFN(NAME)(const T *src, T *dst, int64_t rows, int64_t cols, int64_t src_stride, \
                                 int64_t dst_stride) {                                            \
        for (int64_t i = 0; i < rows; i++)                                                        \
            for (int64_t j = 0; j < cols; j++) dst[j * dst_stride + i] = src[i * src_stride + j];  \
    }                                                                                             \
    FASTCE_INLINE void KFN(NAME##_padded)(const T *src, T *tile, int64_t rows, int64_t C) {      \
        KFN(NAME)(src, tile, rows, C, C, VW);                                                     \
        if (rows < VW)                                                                            \
            for (int64_t j = 0; j < C; j++)                                                       \
                for (int64_t i = rows; i < VW; i++) tile[j * VW + i] = 0; /* 0.0 in every XT */   \
    }
FASTCE_TRANSPOSE_DEF(transpose, REAL)  /* probability targets */
FASTCE_TRANSPOSE_DEF(transpose_x, XT)  /* logits and output, as stored (no conversion) */
#undef FASTCE_TRANSPOSE_DEF

FASTCE_INLINE void KFN(small_rows_spec)(const ce_args *a, int64_t i0, int64_t i1, const int has_w,
                                        const int kind, const int smooth, const int outmode) {
    const int64_t C = a->C;
    XT bx[FASTCE_SMALL_C * VW], bo[FASTCE_SMALL_C * VW];
    REAL by[FASTCE_SMALL_C * VW];
    for (int64_t r = i0; r < i1; r += VW) {
        const int64_t lanes = i1 - r < VW ? i1 - r : VW;
        KFN(transpose_x_padded)((const XT *)a->x + r * C, bx, lanes, C);
        if (kind == FASTCE_KIND_PROB) KFN(transpose_padded)((const REAL *)a->prob + r * C, by, lanes, C);
        KFN(tile_group)(a, bx, by, bo, VW, r, 1, lanes, 1, 0, 0, has_w, kind, smooth, outmode);
        if (outmode) KFN(transpose_x)(bo, (XT *)a->out + r * C, C, lanes, VW, C);
    }
}

/* ---- the index targets' check without weights (fastce_check_targets, target_check.c) ----
 * Targets [i0, i1) of dtype ttype (any but uint64, whose values above INT64_MAX only the
 * dispatcher's scalar loop tells apart from ignore_index): the index rule (torch's), a target
 * equal to ignore_index is ignored and any other must lie in [0, C). Returns whether any target
 * breaks it, and the count in range. One loop with no branch, so that gcc vectorizes it with
 * this object's ISA (compiled for the baseline ISA the loop, with its early exit, was a
 * measurable share of a small forward: docs/performance/notes_kernels.md); the dispatcher's
 * scalar loop (target_check.c) then finds the first bad target of a block that has one. */
#if FASTCE_BUILD_ISA != FASTCE_ISA_SCALAR && FASTCE_BUILD_DTYPE == FASTCE_DT_F32 /* the one used (instantiate.h) */
FASTCE_INLINE int KFN(check_block_t)(const void *t, const int ttype, int64_t i0, int64_t i1, int64_t C,
                                     int64_t ignore_index, int64_t *kept) {
    int64_t count = 0, bad = 0;
    for (int64_t i = i0; i < i1; i++) {
        const int64_t v = ce_target_at(t, ttype, i);
        const int64_t live = v != ignore_index, in_range = ce_target_in_range(v, C);
        count += live & in_range;
        bad |= live & !in_range;
    }
    *kept = count;
    return bad != 0;
}
static int KFN(check_block)(const void *t, int ttype, int64_t i0, int64_t i1, int64_t C,
                            int64_t ignore_index, int64_t *kept) {
#define CHECK_CASE(T) case T: return KFN(check_block_t)(t, T, i0, i1, C, ignore_index, kept)
    switch (ttype) {
    CHECK_CASE(FASTCE_I8); CHECK_CASE(FASTCE_I16); CHECK_CASE(FASTCE_I32); CHECK_CASE(FASTCE_I64);
    CHECK_CASE(FASTCE_U8); CHECK_CASE(FASTCE_U16); default: return KFN(check_block_t)(t, FASTCE_U32, i0, i1, C, ignore_index, kept);
    }
#undef CHECK_CASE
}
#endif

/* ---- the vector math over arrays (test hooks: tests/test_vector_math.py sweeps them) ---- */
FASTCE_INLINE V KFN(map_one)(V v, const int func) {
    return func == FASTCE_MATH_LOG ? VOP(log)(v)
         : func == FASTCE_MATH_EXP_FLUSH ? VOP(exp_flush)(v)
         : func == FASTCE_MATH_EXP_FLUSH_BOUNDED ? VOP(exp_flush_bounded)(v)
         : func == FASTCE_MATH_EXP_FLOORED ? VOP(exp_floored)(v)
         : func == FASTCE_MATH_EXP_FLOORED_ADD ? VOP(exp_floored_add)(v, VOP(set1)((REAL)1)) /* a sum holding 1 */
         : VOP(exp)(v);
}
FASTCE_INLINE void KFN(map_array)(const REAL *x, REAL *y, int64_t n, const int func) {
    int64_t i = 0;
    for (; i + VW <= n; i += VW) VOP(store)(y + i, KFN(map_one)(VOP(load)(x + i), func));
    if (i < n) VOP(store_tail)(y + i, KFN(map_one)(VOP(load_tail)(x + i, n - i, 1), func), n - i);
}
/* One loop per function (func literal in each), so the exp loop the bench times has no branch. */
static void KFN(math_array)(const void *x, void *y, int64_t n, int func) {
    switch (func) {
    case FASTCE_MATH_LOG: KFN(map_array)((const REAL *)x, (REAL *)y, n, FASTCE_MATH_LOG); break;
    case FASTCE_MATH_EXP_FLUSH: KFN(map_array)((const REAL *)x, (REAL *)y, n, FASTCE_MATH_EXP_FLUSH); break;
    case FASTCE_MATH_EXP_FLUSH_BOUNDED:
        KFN(map_array)((const REAL *)x, (REAL *)y, n, FASTCE_MATH_EXP_FLUSH_BOUNDED); break;
    case FASTCE_MATH_EXP_FLOORED: KFN(map_array)((const REAL *)x, (REAL *)y, n, FASTCE_MATH_EXP_FLOORED); break;
    case FASTCE_MATH_EXP_FLOORED_ADD:
        KFN(map_array)((const REAL *)x, (REAL *)y, n, FASTCE_MATH_EXP_FLOORED_ADD); break;
    default: KFN(map_array)((const REAL *)x, (REAL *)y, n, FASTCE_MATH_EXP);
    }
}

/* ---- entry points: pick the specialization once per call ---- */
/* Each entry point is specialized only on the options that change its code: pass 1 of a split
   row (seg_stats) writes no output; its pass 2 (seg_out) always writes one. */
static void KFN(rows)(const ce_args *a, int64_t i0, int64_t i1) {
    CE_SPECIALIZE(KFN(rows_spec), a, i0, i1, CE_OUT_NONE_OR_GRAD_, CE_LSE_ALL_);
}
static void KFN(seg_stats)(const ce_args *a, int64_t i0, int64_t i1) {
    CE_SPECIALIZE(KFN(seg_stats_spec), a, i0, i1, CE_OUT_UNUSED_, CE_LSE_STATS_);
}
static void KFN(seg_out)(const ce_args *a, int64_t i0, int64_t i1) {
    CE_SPECIALIZE(KFN(seg_out_spec), a, i0, i1, CE_OUT_GRAD_, CE_LSE_OUTPUTS_);
}
static void KFN(tiles)(const ce_args *a, int64_t i0, int64_t i1) {
    CE_SPECIALIZE(KFN(tiles_spec), a, i0, i1, CE_OUT_NONE_OR_GRAD_, CE_LSE_ALL_);
}
static void KFN(small_rows)(const ce_args *a, int64_t i0, int64_t i1) {
    CE_SPECIALIZE(KFN(small_rows_spec), a, i0, i1, CE_OUT_NONE_OR_GRAD_, CE_LSE_ALL_);
}
static void KFN(score_rows)(const ce_args *a, int64_t i0, int64_t i1) {
    KFN(rows_core)(a, i0, i1, 0, FASTCE_KIND_INDEX, 0, FASTCE_OUT_NONE, 1);
}

#undef CHUNK_ELEMS
#undef MAX_JUMP
#undef TILE_MAX_SPREAD
#undef TILE_REF_CLASSES
#undef UNROLL
#undef EXP_UNROLL
#undef TILE_V
#undef TILE_V_FOR
#undef PREFETCH_BYTES
#undef ROW_PREFETCH_BYTES
#undef ROW_BATCH
