/* fastce/kl_impl.h: two logit streams, one row pair at a time (kl_rows).
 *
 * Included by instantiate.h after kernel_impl.h (same macros: REAL, V, VW, VOP, KFN, XT, XLOAD...).
 * With a = the reference row, b = the model's row, p = softmax(a), q = softmax(b), and the row
 * maxima M_a, M_b:
 *
 *   KL(p || q) = sum_c p_c (log p_c - log q_c)
 *              = T / S_a - log S_a + log S_b,   where
 *   S_a = sum_c e^(a_c - M_a),  S_b = sum_c e^(b_c - M_b),
 *   T   = sum_c e^(a_c - M_a) * ((a_c - M_a) - (b_c - M_b)).
 *
 * (log p_c = (a_c - M_a) - log S_a, log q_c = (b_c - M_b) - log S_b.) The differences are taken
 * against the maxima, not as lse_a - lse_b at the end: for two close rows both terms are small,
 * and equal rows give exactly 0.
 *
 * Passes per row pair: (1) the two maxima, from memory; (2) S_a, S_b and T, from cache (a
 * 32000-class float32 pair is 256 KiB, in L2), summed in float vectors per chunk of KL_CHUNK
 * and in double across chunks; then, where asked for, (3) the first index of each maximum and
 * the rank of b at a's argmax t, #{c : b_c > b_t} + #{c < t : b_c == b_t}: the classes that
 * argmax's tie order puts above t (so rank < k is "t is in b's top k", and rank 0 is "argmax
 * b == t"); and (4) the gradient with respect to b, g (q_c - p_c) with q_c = e^(b_c - lse_b),
 * last because it may be written over b.
 *
 * Special values, as the math says (tested):
 *   p_c = 0 (a_c = -inf, or its exp below the flush): the class contributes 0 to T, never
 *     0 * inf = NaN (kl_cross, VOP(mul_nz)).
 *   q_c = 0 where p_c > 0 (b_c = -inf): (b_c - M_b) = -inf, the term is +inf, and so is KL.
 *   A row of a or b that is all -inf (M = -inf), or holds +inf or NaN: NaN, as torch's
 *     log_softmax gives there.
 */

/* Elements per float-vector partial sum (8 KiB of REAL), then added in double; and how far
   ahead the maxima's sweep prefetches (as the row kernels do, kernel_impl.h). */
#define KL_CHUNK ((int64_t)(8192 / sizeof(REAL)))
#define KL_PREFETCH_BYTES 8192

/* The REAL just below v: x > KL_BELOW(v) is x >= v. */
#if FASTCE_BUILD_DTYPE == FASTCE_DT_F64
#define KL_BELOW(v) nextafter((v), -INFINITY)
#else
#define KL_BELOW(v) nextafterf((v), -INFINITY)
#endif

/* The first index in [0, C) of a row whose value equals its maximum M (a value of the row), or
   0 if none does (a row of NaN only). A vector is scanned element by element only once one of
   its lanes is >= M. */
static int64_t KFN(first_max)(const XT *x, int64_t C, double M) {
    const REAL m = (REAL)M;
    const V below = VOP(set1)(KL_BELOW(m));
    int64_t i = 0;
    for (; i + VW <= C; i += VW)
        if (VOP(any_gt)(XLOAD(x + i), below)) break;
    for (; i < C; i++)
        if ((REAL)XGET(x + i) == m) return i;
    return 0;
}

/* T = sum_c e^(a_c - M_a) ((a_c - M_a) - (b_c - M_b)) with 0 where e^(a_c - M_a) = 0, whatever
   the log-ratio (kl_rows' careful sum, for the rare rows whose fast sum is NaN). */
static __attribute__((noinline)) double KFN(kl_cross)(const XT *a, const XT *b, int64_t C, V sa, V sb) {
    double T = 0.0;
    for (int64_t c0 = 0; c0 < C; c0 += KL_CHUNK) {
        const int64_t c1 = c0 + KL_CHUNK < C ? c0 + KL_CHUNK : C;
        V t = VOP(set1)((REAL)0);
        int64_t i = c0;
        for (; i + VW <= c1; i += VW) {
            const V da = VOP(sub)(XLOAD(a + i), sa), db = VOP(sub)(XLOAD(b + i), sb);
            t = VOP(add)(t, VOP(mul_nz)(VOP(exp_flush)(da), VOP(sub)(da, db)));
        }
        if (i < c1) {
            const V da = VOP(sub)(XLOAD_TAIL(a + i, c1 - i, (REAL)-INFINITY), sa);
            const V db = VOP(sub)(XLOAD_TAIL(b + i, c1 - i, (REAL)-INFINITY), sb);
            t = VOP(add)(t, VOP(mul_nz)(VOP(exp_flush)(da), VOP(sub)(da, db)));
        }
        T += VOP(hsum)(t);
    }
    return T;
}

static void KFN(kl_rows)(const kl_args *k, int64_t i0, int64_t i1) {
    const int64_t C = k->C;
    const V ninf = VOP(set1)((REAL)-INFINITY), zero = VOP(set1)((REAL)0);
    for (int64_t r = i0; r < i1; r++) {
        const XT *a = (const XT *)k->a + r * C, *b = (const XT *)k->b + r * C;

        /* (1) the maxima */
        V ma = ninf, mb = ninf;
        int64_t i = 0;
        for (; i + VW <= C; i += VW) {
            if ((i * (int64_t)sizeof(XT)) % 64 == 0) {
                __builtin_prefetch((const char *)(a + i) + KL_PREFETCH_BYTES);
                __builtin_prefetch((const char *)(b + i) + KL_PREFETCH_BYTES);
            }
            ma = VOP(max)(ma, XLOAD(a + i));
            mb = VOP(max)(mb, XLOAD(b + i));
        }
        if (i < C) {
            ma = VOP(max)(ma, XLOAD_TAIL(a + i, C - i, (REAL)-INFINITY));
            mb = VOP(max)(mb, XLOAD_TAIL(b + i, C - i, (REAL)-INFINITY));
        }
        const double Ma = VOP(hmax)(ma), Mb = VOP(hmax)(mb);

        /* (2) S_a, S_b, T. The cross term takes one FMA per vector; a class with p = 0 and an
           infinite log-ratio (a_c = -inf, or b_c = -inf where a_c = -inf too) makes that 0 * inf
           = NaN, and so does a NaN input: a row whose T comes out NaN is summed again with
           mul_nz (0 where p = 0), which keeps the math's 0 and the input's NaN (kl_cross).
           Tail lanes load -inf: e^(a - M_a) = 0 there. The last pass over the row (this one,
           or the gradient's) prefetches the next row pair into L2, so that pass (1) of the
           next row, which would otherwise wait on memory with no computation beside it, reads
           from cache. */
        const int ahead_sums = k->out == NULL;
        const V sa = VOP(set1)((REAL)Ma), sb = VOP(set1)((REAL)Mb);
        double Sa = 0.0, Sb = 0.0, T = 0.0;
        for (int64_t c0 = 0; c0 < C; c0 += KL_CHUNK) {
            const int64_t c1 = c0 + KL_CHUNK < C ? c0 + KL_CHUNK : C;
            V ea = zero, eb = zero, t = zero;
            for (i = c0; i + VW <= c1; i += VW) {
                if (ahead_sums && (i * (int64_t)sizeof(XT)) % 64 == 0) {
                    __builtin_prefetch((const char *)(a + C + i), 0, 2);
                    __builtin_prefetch((const char *)(b + C + i), 0, 2);
                }
                const V da = VOP(sub)(XLOAD(a + i), sa), db = VOP(sub)(XLOAD(b + i), sb);
                const V pa = VOP(exp_flush_bounded)(da);
                ea = VOP(add)(ea, pa);
                eb = VOP(add)(eb, VOP(exp_flush_bounded)(db));
                t = VOP(fmadd)(pa, VOP(sub)(da, db), t);
            }
            if (i < c1) {
                const V da = VOP(sub)(XLOAD_TAIL(a + i, c1 - i, (REAL)-INFINITY), sa);
                const V db = VOP(sub)(XLOAD_TAIL(b + i, c1 - i, (REAL)-INFINITY), sb);
                const V pa = VOP(exp_flush_bounded)(da);
                ea = VOP(add)(ea, pa);
                eb = VOP(add)(eb, VOP(exp_flush_bounded)(db));
                t = VOP(add)(t, VOP(mul_nz)(pa, VOP(sub)(da, db)));
            }
            Sa += VOP(hsum)(ea);
            Sb += VOP(hsum)(eb);
            T += VOP(hsum)(t);
        }
        if (T != T) T = KFN(kl_cross)(a, b, C, sa, sb);
        const double lsa = log(Sa), lsb = log(Sb);
        /* M = -inf (an all -inf row) leaves NaN in the sums already: e^(-inf - -inf). */
        k->kl[r] = T / Sa - lsa + lsb;
        if (k->lse_a) k->lse_a[r] = Ma + lsa;
        if (k->lse_b) k->lse_b[r] = Mb + lsb;

        /* (3) a's argmax, and the rank of b at it (before the gradient, which may be
           written over b) */
        if (k->argmax_a) {
            const int64_t ia = KFN(first_max)(a, C, Ma);
            k->argmax_a[r] = ia;
            if (k->rank_b) { /* #{c : b_c > b_t} + #{c < t : b_c == b_t}, t = ia (argmax's tie order) */
                const REAL bt = (REAL)XGET(b + ia);
                const V ge = VOP(set1)(KL_BELOW(bt)), gt = VOP(set1)(bt);
                V cnt = zero;
                for (i = 0; i + VW <= ia; i += VW) cnt = VOP(count_gt)(cnt, XLOAD(b + i), ge);
                if (i < ia) cnt = VOP(count_gt)(cnt, XLOAD_TAIL(b + i, ia - i, (REAL)-INFINITY), ge);
                for (i = ia; i + VW <= C; i += VW) cnt = VOP(count_gt)(cnt, XLOAD(b + i), gt);
                if (i < C) cnt = VOP(count_gt)(cnt, XLOAD_TAIL(b + i, C - i, (REAL)-INFINITY), gt);
                k->rank_b[r] = VOP(hsum)(cnt);
            }
        }
        /* (4) the gradient with respect to b: g (e^(b - lse_b) - e^(a - lse_a)) */
        if (k->out) {
            const double g = k->gscale * (k->gout ? k->gout[r] : 1.0);
            const V la = VOP(set1)((REAL)(Ma + lsa)), lb = VOP(set1)((REAL)(Mb + lsb));
            const V gv = VOP(set1)((REAL)g);
            XT *o = (XT *)k->out + r * C;
            for (i = 0; i + VW <= C; i += VW) {
                if ((i * (int64_t)sizeof(XT)) % 64 == 0) {
                    __builtin_prefetch((const char *)(a + C + i), 0, 2);
                    __builtin_prefetch((const char *)(b + C + i), 0, 2);
                }
                const V q = VOP(exp_flush_bounded)(VOP(sub)(XLOAD(b + i), lb)); /* <= 0 */
                const V p = VOP(exp_flush_bounded)(VOP(sub)(XLOAD(a + i), la));
                XSTORE(o + i, VOP(mul)(gv, VOP(sub)(q, p)));
            }
            if (i < C) {
                const V q = VOP(exp_flush)(VOP(sub)(XLOAD_TAIL(b + i, C - i, (REAL)0), lb));
                const V p = VOP(exp_flush)(VOP(sub)(XLOAD_TAIL(a + i, C - i, (REAL)0), la));
                XSTORE_TAIL(o + i, VOP(mul)(gv, VOP(sub)(q, p)), C - i);
            }
        }

    }
}

#undef KL_BELOW
#undef KL_CHUNK
#undef KL_PREFETCH_BYTES
