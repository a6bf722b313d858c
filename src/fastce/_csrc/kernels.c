/* The kernels of one instruction set and one dtype: setup.py compiles this file once per
 * (ISA, dtype) of the build table (include/fastce/build_table.h), each object with its own
 * flags, so that they build in parallel: twelve objects for the three x86 rows and four dtypes.
 *
 *   -DFASTCE_BUILD_ISA=FASTCE_ISA_<NAME>     plus that row's flags (-mavx2 -mfma -mf16c ...)
 *   -DFASTCE_BUILD_DTYPE=FASTCE_DT_<DTYPE>   F32, F64, F16 or BF16
 *
 * Each object exports one ce_kernels table, fastce_kernels_<isa>_<f32|f64|f16|bf16>;
 * dispatch.c gathers them. The row's vector header defines vf_* / vd_* (and checks that the
 * row's flags are on); instantiate.h builds the table from kernel_impl.h.
 */
#include "fastce/common.h"

#if !defined(FASTCE_BUILD_ISA) || !defined(FASTCE_BUILD_DTYPE)
#error "kernels.c is compiled by setup.py with -DFASTCE_BUILD_ISA=FASTCE_ISA_<NAME> -DFASTCE_BUILD_DTYPE=FASTCE_DT_<DTYPE> (the rows of fastce/build_table.h)"
#endif
#if FASTCE_BUILD_ISA < 0 || FASTCE_BUILD_ISA >= FASTCE_ISA_COUNT
#error "FASTCE_BUILD_ISA is not the code of a row of fastce/build_table.h"
#endif
/* The rows are found by position: their codes must be 0, 1, 2 ... in order. */
#if FASTCE_TABLE_ARG(FASTCE_BUILD_ISA, FASTCE_ISA_TABLE(FASTCE_ISA_CODE_)) != FASTCE_BUILD_ISA
#error "the rows of FASTCE_ISA_TABLE (fastce/build_table.h) are not in the order of their codes"
#endif

#include FASTCE_TABLE_ARG(FASTCE_BUILD_ISA, FASTCE_ISA_TABLE(FASTCE_ISA_HEADER_))
#define FASTCE_ISA_TAG FASTCE_TABLE_ARG(FASTCE_BUILD_ISA, FASTCE_ISA_TABLE(FASTCE_ISA_NAME_))

#include "instantiate.h"
