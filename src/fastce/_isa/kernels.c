/* The kernels of one instruction set and one dtype: setup.py compiles this file six times,
 * once per (ISA, dtype), each with its own flags, so the six objects build in parallel:
 *
 *   -DFASTCE_BUILD_ISA=FASTCE_ISA_SCALAR|AVX2|AVX512   plus that ISA's -m flags
 *   -DFASTCE_BUILD_F64=0|1                             float or double
 *
 * Each object exports one ce_kernels table, fastce_kernels_<isa>_<f32|f64>; dispatch.c
 * gathers them. The vector header of the ISA defines vf_* / vd_*; instantiate.h builds the
 * table from kernel_impl.h.
 */
#include "fastce/common.h"

#if !defined(FASTCE_BUILD_ISA) || !defined(FASTCE_BUILD_DTYPE)
#error "kernels.c is compiled by setup.py with -DFASTCE_BUILD_ISA=... -DFASTCE_BUILD_DTYPE=..."
#endif

#if FASTCE_BUILD_ISA == FASTCE_ISA_AVX512
#if !(defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__FMA__))
#error "the avx512 kernels must be compiled with -mavx512f -mavx512dq -mavx2 -mfma -mf16c"
#endif
#include "fastce/vec_avx512.h"
#define FASTCE_ISA_TAG avx512
#elif FASTCE_BUILD_ISA == FASTCE_ISA_AVX2
#if !(defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#error "the avx2 kernels must be compiled with -mavx2 -mfma -mf16c"
#endif
#include "fastce/vec_avx2.h"
#define FASTCE_ISA_TAG avx2
#else
#include "fastce/vec_scalar.h"
#define FASTCE_ISA_TAG scalar
#endif

#include "fastce/instantiate.h"
