/* fastce/instantiate.h: builds one ISA's kernel table from kernel_impl.h.
 *
 * An ISA translation unit includes its vector header (which defines vf_* and vd_*), defines
 * FASTCE_TABLE_NAME and FASTCE_ISA_LABEL, then includes this file. kernel_impl.h is compiled
 * twice, for float and for double; its functions are static, so each ISA's copies stay private
 * and only the table is exported.
 */
#include <string.h>
#include "fastce/row_math.h"

/* Call FN(a, i0, i1, has_w, kind, smooth, outmode) with literal option values, so each
   combination becomes its own branch-free specialization. */
#define CE_CALL_OUT_(FN, a, i0, i1, W, K, SM)                                                     \
    do {                                                                                          \
        if ((a)->outmode == FASTCE_OUT_GRAD) FN(a, i0, i1, W, K, SM, FASTCE_OUT_GRAD);           \
        else FN(a, i0, i1, W, K, SM, FASTCE_OUT_NONE);                                            \
    } while (0)
#define CE_CALL_CE_(FN, a, i0, i1, K)                                                             \
    do {                                                                                          \
        const int w_ = (a)->weight != NULL, sm_ = (a)->eps > 0.0;                                 \
        if (w_ && sm_) CE_CALL_OUT_(FN, a, i0, i1, 1, K, 1);                                      \
        else if (w_) CE_CALL_OUT_(FN, a, i0, i1, 1, K, 0);                                        \
        else if (sm_) CE_CALL_OUT_(FN, a, i0, i1, 0, K, 1);                                       \
        else CE_CALL_OUT_(FN, a, i0, i1, 0, K, 0);                                                \
    } while (0)
#define CE_SPECIALIZE(FN, a, i0, i1)                                                              \
    do {                                                                                          \
        if ((a)->kind == FASTCE_KIND_INDEX) CE_CALL_CE_(FN, a, i0, i1, FASTCE_KIND_INDEX);       \
        else if ((a)->kind == FASTCE_KIND_PROB) CE_CALL_CE_(FN, a, i0, i1, FASTCE_KIND_PROB);    \
        else if ((a)->outmode == FASTCE_OUT_SOFTMAX)                                              \
            FN(a, i0, i1, 0, FASTCE_KIND_LSE, 0, FASTCE_OUT_SOFTMAX);                             \
        else if ((a)->outmode == FASTCE_OUT_LOGSOFTMAX)                                           \
            FN(a, i0, i1, 0, FASTCE_KIND_LSE, 0, FASTCE_OUT_LOGSOFTMAX);                          \
        else FN(a, i0, i1, 0, FASTCE_KIND_LSE, 0, FASTCE_OUT_NONE);                               \
    } while (0)

#define REAL float
#define V vf_t
#define VW VF_W
#define VOP(op) vf_##op
#define KFN(name) name##_f32
#include "fastce/kernel_impl.h"
#undef REAL
#undef V
#undef VW
#undef VOP
#undef KFN

#define REAL double
#define V vd_t
#define VW VD_W
#define VOP(op) vd_##op
#define KFN(name) name##_f64
#include "fastce/kernel_impl.h"
#undef REAL
#undef V
#undef VW
#undef VOP
#undef KFN

const ce_isa_table FASTCE_TABLE_NAME = {
    FASTCE_ISA_LABEL,
    {rows_f32, seg_stats_f32, merge_rows_f32, seg_out_f32, tiles_f32, small_rows_f32, score_rows_f32, VF_W, exp_array_f32, log_array_f32},
    {rows_f64, seg_stats_f64, merge_rows_f64, seg_out_f64, tiles_f64, small_rows_f64, score_rows_f64, VD_W, exp_array_f64, log_array_f64},
};
