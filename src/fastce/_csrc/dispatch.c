/* Runtime ISA dispatch and OpenMP queries.
 *
 * Every instruction set is compiled into its own translation units with its own flags, one
 * per dtype (kernels.c); the rows of include/fastce/build_table.h say which, and setup.py
 * defines FASTCE_HAVE_<name>=1 for those the compiler could build. Everything below is built
 * from those rows. The choice among them is made by the Python layer, once at import (and when
 * the user forces one), from fastce_isa_runnable(); nothing here is lazily initialized, so
 * concurrent callers are safe.
 */
#include "fastce/dispatch.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* ---- the runtime checks of the rows: whether this CPU runs them (no state is cached) ---- */
static inline int fastce_cpu_any(void) { return 1; }

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
/* F16C (the float16 conversions the AVX2 kernels use): cpuid leaf 1, ecx bit 29. Every CPU with
   AVX2 and FMA that we know of has it; checked all the same. */
static inline int fastce_cpu_f16c(void) {
    unsigned int eax = 1, ebx, ecx = 0, edx;
    __asm__ volatile("cpuid" : "+a"(eax), "=b"(ebx), "+c"(ecx), "=d"(edx));
    return (ecx >> 29) & 1u;
}
static inline int fastce_cpu_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && fastce_cpu_f16c();
}
static inline int fastce_cpu_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("fma");
}
#endif

#if defined(__aarch64__)
/* Advanced SIMD (NEON, with FMA and the float16 conversions the neon kernels use) is part of
   the AArch64 baseline: every AArch64 CPU runs the row. (SVE, if a row ever takes it, would ask
   getauxval(AT_HWCAP) & HWCAP_SVE here.) */
static inline int fastce_cpu_neon(void) { return 1; }
#endif

/* ---- the kernel objects: one per (built row, dtype), fastce_kernels_<isa>_<dtype> ---- */
#define FASTCE_DECLARE_DT_(dt, dtcode, isa) extern const ce_kernels fastce_kernels_##isa##_##dt;
#define FASTCE_DECLARE_ISA_(name, code, arch, flags, header, check) FASTCE_DTYPE_TABLE(FASTCE_DECLARE_DT_, name)
FASTCE_ISA_TABLE(FASTCE_DECLARE_ISA_)

/* Indexed by ISA code, then dtype code; a row that was not built has NULL kernels. */
#define FASTCE_KERNELS_DT_(dt, dtcode, isa) [dtcode] = FASTCE_IF_BUILT(isa, &fastce_kernels_##isa##_##dt, NULL),
#define FASTCE_TABLE_ISA_(name, code, arch, flags, header, check) \
    [code] = {#name, {FASTCE_DTYPE_TABLE(FASTCE_KERNELS_DT_, name)}},
static const ce_isa_table isa_tables[FASTCE_ISA_COUNT] = {FASTCE_ISA_TABLE(FASTCE_TABLE_ISA_)};

const ce_isa_table *fastce_isa_table(int isa) {
    if (isa < 0 || isa >= FASTCE_ISA_COUNT || !isa_tables[isa].kernels[FASTCE_DT_F32]) return NULL;
    return &isa_tables[isa];
}

const char *fastce_isa_name(int isa) {
    return isa < 0 || isa >= FASTCE_ISA_COUNT ? NULL : isa_tables[isa].name;
}

#define FASTCE_RUNNABLE_(name, code, arch, flags, header, check) \
    case code: return FASTCE_IF_BUILT(name, check(), 0);
int fastce_isa_runnable(int isa) {
    switch (isa) {
    FASTCE_ISA_TABLE(FASTCE_RUNNABLE_)
    default: return 0;
    }
}

int fastce_openmp_enabled(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int fastce_omp_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
