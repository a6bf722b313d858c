/* fastce/shard_impl.h: the gradient of one vocabulary shard from merged row statistics
 * (shard_grad_rows).
 *
 * Included by instantiate.h after kernel_impl.h (same macros). For row r of a shard's (N, C)
 * logits x, given the row's GLOBAL log-sum-exp and coefficients (computed in Python from the
 * merged ShardStats, see src/fastce/_shards.py):
 *
 *   out_c = A_r e^(x_c - lse_r) - B_r w_c          (w_c = 1 without weights)
 *   out_t = A_r e^(x_t - lse_r) - B_r w_t - fix_r  at the target's column t (tcol_r >= 0)
 *
 * one pass, read x, write out (which may be x itself: each logit is read before its gradient
 * is written, the target's before the row's). The target's element is recomputed in float from
 * x (not from the stored, perhaps rounded, out value), so a 2-byte output is rounded once.
 */

static void KFN(shard_grad_rows)(const shard_args *k, int64_t i0, int64_t i1) {
    const int64_t C = k->C;
    const REAL *w = (const REAL *)k->weight;
    for (int64_t r = i0; r < i1; r++) {
        const XT *x = (const XT *)k->x + r * C;
        XT *o = (XT *)k->out + r * C;
        const REAL Ar = (REAL)k->A[r], Br = (REAL)k->B[r], lr = (REAL)k->lse[r];
        const int64_t t = k->tcol[r];
        const REAL xt = t >= 0 ? (REAL)XGET(x + t) : (REAL)0;  /* before out (perhaps x) is written */
        const V A = VOP(set1)(Ar), B = VOP(set1)(Br), l = VOP(set1)(lr);
        int64_t i = 0;
        for (; i + VW <= C; i += VW) {
            const V e = VOP(exp_flush)(VOP(sub)(XLOAD(x + i), l));
            const V bw = w ? VOP(mul)(B, VOP(load)(w + i)) : B;
            XSTORE(o + i, VOP(sub)(VOP(mul)(A, e), bw));
        }
        if (i < C) {
            const V e = VOP(exp_flush)(VOP(sub)(XLOAD_TAIL(x + i, C - i, (REAL)0), l));
            const V bw = w ? VOP(mul)(B, VOP(load_tail)(w + i, C - i, (REAL)0)) : B;
            XSTORE_TAIL(o + i, VOP(sub)(VOP(mul)(A, e), bw), C - i);
        }
        if (t >= 0) {
            REAL e = xt - lr;
            VOP(store_tail)(&e, VOP(exp_flush)(VOP(load_tail)(&e, 1, (REAL)0)), 1);
            const REAL g = Ar * e - Br * (w ? w[t] : (REAL)1) - (REAL)k->fix[r];
            XPUT(o + t, g);
        }
    }
}
