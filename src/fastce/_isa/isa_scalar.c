/* Portable kernels: plain C, no SIMD flags. Always built; the fallback on every CPU. */
#include "fastce/vec_scalar.h"
#define FASTCE_TABLE_NAME fastce_table_scalar
#define FASTCE_ISA_LABEL "scalar"
#include "fastce/instantiate.h"
