/* AVX2 + FMA kernels. Built with -mavx2 -mfma; run only where cpuid reports both. */
#include "fastce/common.h"
#if defined(__AVX2__) && defined(__FMA__)
#include "fastce/vec_avx2.h"
#define FASTCE_TABLE_NAME fastce_table_avx2
#define FASTCE_ISA_LABEL "avx2"
#include "fastce/instantiate.h"
#else
#error "isa_avx2.c must be compiled with -mavx2 -mfma"
#endif
