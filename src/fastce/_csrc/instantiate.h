/* fastce/instantiate.h: one (ISA, dtype) kernel table from kernel_impl.h.
 *
 * Included by kernels.c after the ISA's vector header, with FASTCE_ISA_TAG
 * (avx512, avx2 or scalar) and FASTCE_BUILD_DTYPE (a FASTCE_DT_* code of common.h) defined.
 * Defines `const ce_kernels fastce_kernels_<tag>_<f32|f64|f16|bf16>`; everything else stays
 * static. float16 and bfloat16 logits are computed in float, widened in the loads and narrowed
 * in the stores (XLOAD ... XPUT below); their probability targets go through float32 blocks
 * in the Python layer, so their kernels leave that kind out.
 */
#include <string.h>
#include "fastce/half.h"
#include "fastce/row_math.h"

/* ---- option specialization ----
 * The entry points call FN(a, i0, i1, has_w, kind, smooth, outmode) with literal option values
 * wherever a value changes the vector code, so each such combination becomes its own
 * branch-free inlined copy; where it does not, the value is passed at run time and costs no
 * copy (compile time and code size grow with every copy):
 *   index targets   smooth literal; has_w literal only with smoothing. Without smoothing the
 *                   class weights enter only through the target's weight, a scalar read per row.
 *   prob targets    has_w literal; smooth is 0: y' = (1 - eps) y + eps / C is formed for every
 *                   element (one FMA, exact identity when eps = 0).
 *   lse kind        outmode literal (none, softmax, log_softmax).
 *   outmode         OUTS picks the out modes an entry point runs with (CE_OUT_*_). */
#define CE_OUT_NONE_OR_GRAD_(FN, a, i0, i1, W, K, SM)                                           \
    do {                                                                                        \
        if ((a)->outmode == FASTCE_OUT_GRAD) FN(a, i0, i1, W, K, SM, FASTCE_OUT_GRAD);          \
        else FN(a, i0, i1, W, K, SM, FASTCE_OUT_NONE);                                          \
    } while (0)
#define CE_OUT_GRAD_(FN, a, i0, i1, W, K, SM) FN(a, i0, i1, W, K, SM, FASTCE_OUT_GRAD)
#define CE_OUT_UNUSED_(FN, a, i0, i1, W, K, SM) FN(a, i0, i1, W, K, SM, FASTCE_OUT_NONE)
#define CE_LSE_ALL_(FN, a, i0, i1)                                                              \
    do {                                                                                        \
        if ((a)->outmode == FASTCE_OUT_SOFTMAX) FN(a, i0, i1, 0, FASTCE_KIND_LSE, 0, FASTCE_OUT_SOFTMAX); \
        else if ((a)->outmode == FASTCE_OUT_LOGSOFTMAX)                                         \
            FN(a, i0, i1, 0, FASTCE_KIND_LSE, 0, FASTCE_OUT_LOGSOFTMAX);                        \
        else FN(a, i0, i1, 0, FASTCE_KIND_LSE, 0, FASTCE_OUT_NONE);                             \
    } while (0)
#define CE_LSE_OUTPUTS_(FN, a, i0, i1)                                                          \
    do {                                                                                        \
        if ((a)->outmode == FASTCE_OUT_SOFTMAX) FN(a, i0, i1, 0, FASTCE_KIND_LSE, 0, FASTCE_OUT_SOFTMAX); \
        else FN(a, i0, i1, 0, FASTCE_KIND_LSE, 0, FASTCE_OUT_LOGSOFTMAX);                       \
    } while (0)
#define CE_LSE_STATS_(FN, a, i0, i1) FN(a, i0, i1, 0, FASTCE_KIND_LSE, 0, FASTCE_OUT_NONE)

#define CE_SPECIALIZE(FN, a, i0, i1, OUTS, LSE)                                                 \
    do {                                                                                        \
        const int w_ = (a)->weight != NULL;                                                     \
        if ((a)->kind == FASTCE_KIND_INDEX) {                                                   \
            if (!((a)->eps > 0.0)) OUTS(FN, a, i0, i1, w_, FASTCE_KIND_INDEX, 0);               \
            else if (w_) OUTS(FN, a, i0, i1, 1, FASTCE_KIND_INDEX, 1);                          \
            else OUTS(FN, a, i0, i1, 0, FASTCE_KIND_INDEX, 1);                                  \
        } else if (FASTCE_WITH_PROB && (a)->kind == FASTCE_KIND_PROB) {                         \
            if (w_) OUTS(FN, a, i0, i1, 1, FASTCE_KIND_PROB, 0);                                \
            else OUTS(FN, a, i0, i1, 0, FASTCE_KIND_PROB, 0);                                   \
        } else {                                                                                \
            LSE(FN, a, i0, i1);                                                                 \
        }                                                                                       \
    } while (0)

#define FASTCE_CAT3_(a, b, c) a##b##c
#define FASTCE_CAT3(a, b, c) FASTCE_CAT3_(a, b, c)

#if FASTCE_BUILD_DTYPE == FASTCE_DT_F64
#define REAL double
#define V vd_t
#define VW VD_W
#define VOP(op) vd_##op
#define KFN(name) name##_f64
#define FASTCE_DT_TAG _f64
#else
#define REAL float
#define V vf_t
#define VW VF_W
#define VOP(op) vf_##op
#endif

#if FASTCE_BUILD_DTYPE == FASTCE_DT_F16 || FASTCE_BUILD_DTYPE == FASTCE_DT_BF16
#define XT uint16_t
#define FASTCE_WITH_PROB 0
#if FASTCE_BUILD_DTYPE == FASTCE_DT_F16
#define KFN(name) name##_f16
#define FASTCE_DT_TAG _f16
#define XOP(op) vh_##op
#define XGET(p) fastce_f16_to_f32(*(p))
#define XPUT(p, v) (*(p) = fastce_f32_to_f16(v))
#else
#define KFN(name) name##_bf16
#define FASTCE_DT_TAG _bf16
#define XOP(op) vb_##op
#define XGET(p) fastce_bf16_to_f32(*(p))
#define XPUT(p, v) (*(p) = fastce_f32_to_bf16(v))
#endif
#else /* stored as computed */
#define XT REAL
#define FASTCE_WITH_PROB 1
#define XOP(op) VOP(op)
#define XGET(p) (*(p))
#define XPUT(p, v) (*(p) = (v))
#if FASTCE_BUILD_DTYPE == FASTCE_DT_F32
#define KFN(name) name##_f32
#define FASTCE_DT_TAG _f32
#endif
#endif
#define XLOAD XOP(load)
#define XLOAD_TAIL XOP(load_tail)
#define XSTORE XOP(store)
#define XSTORE_TAIL XOP(store_tail)
#define XSTREAM XOP(stream)
#define FASTCE_KERNELS_NAME FASTCE_CAT3(fastce_kernels_, FASTCE_ISA_TAG, FASTCE_DT_TAG)

#include "kernel_impl.h"
#include "kl_impl.h"
#include "shard_impl.h"

const ce_kernels FASTCE_KERNELS_NAME = {
    KFN(rows), KFN(seg_stats), KFN(merge_rows), KFN(seg_out), KFN(tiles), KFN(small_rows),
    KFN(score_rows), KFN(kl_rows), KFN(shard_grad_rows), VW, KFN(math_array),
#if FASTCE_BUILD_ISA != FASTCE_ISA_SCALAR && FASTCE_BUILD_DTYPE == FASTCE_DT_F32
    KFN(check_block), /* target_check.c takes the float32 table's (targets have no logits dtype) */
#else
    NULL, /* scalar: target_check.c's loop, with its early exit, is faster without SIMD */
#endif
};
