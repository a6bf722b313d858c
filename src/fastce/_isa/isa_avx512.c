/* AVX-512 (F + DQ) kernels. Built with -mavx512f -mavx512dq -mfma; run only where cpuid reports them. */
#include "fastce/common.h"
#if defined(__AVX512F__) && defined(__AVX512DQ__)
#include "fastce/vec_avx512.h"
#define FASTCE_TABLE_NAME fastce_table_avx512
#define FASTCE_ISA_LABEL "avx512"
#include "fastce/instantiate.h"
#else
#error "isa_avx512.c must be compiled with -mavx512f -mavx512dq -mfma"
#endif
