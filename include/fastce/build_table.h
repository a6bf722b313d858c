/* fastce/build_table.h: the build matrix (instruction set x dtype), written down once.
 *
 * Every part of the build reads this file, so adding an instruction set is one code macro and
 * one row here, its vector header (vec_<name>.h) and, if cpuid must be asked, its runtime check
 * in src/fastce/_csrc/dispatch.c (docs/design/build_table.md has the recipe):
 *   setup.py           (through tools/build_table.py) compiles src/fastce/_csrc/kernels.c once
 *                      per (row of the host's arch, dtype) with the row's flags, and defines
 *                      FASTCE_HAVE_<name>=1 for the rows the compiler could build;
 *   tools/sanitize.sh  (through tools/build_table.py --rows) does the same for the harness;
 *   kernels.c          takes the row of its FASTCE_BUILD_ISA: the vector header and the name;
 *   dispatch.c         the kernel table of every built row, its name and its runtime check;
 *   _kernels.pyx       ISA_NAMES from fastce_isa_name() and FASTCE_ISA_COUNT.
 * The format is plain C (X-macros) that tools/build_table.py also parses with a regex: keep each
 * row on one line, its strings in double quotes, and the codes as decimal #defines.
 */
#ifndef FASTCE_BUILD_TABLE_H
#define FASTCE_BUILD_TABLE_H

/* ---- instruction sets ----
 * Codes: 0, 1, 2 ... in the order of the rows, worst to best (the Python layer picks the last
 * runnable one). Macros, not an enum: setup.py passes -DFASTCE_BUILD_ISA=FASTCE_ISA_<NAME> and
 * kernels.c compares it in #if. The code is the index of fastce_isa_name() and of ISA_NAMES.
 *
 * FASTCE_ISA_ROW(name, code, "arch", "compiler flags", "vector header", runtime check):
 *   name    the tag: fastce_kernels_<name>_<dtype>, fastce.get_isa(), FASTCE_ISA=<name>, and the
 *           FASTCE_HAVE_<name> that setup.py defines when it built the row
 *   arch    "any" (every machine) or the machine the flags are for: "x86" (x86-64 and i386),
 *           "aarch64" (arm64); setup.py builds the rows of "any" and of the host's arch, so the
 *           codes order the rows within one arch (neon, 3, is never built beside avx512, 2)
 *   flags   what kernels.c is compiled with for this row, after setup.py's BASE_FLAGS
 *   header  the vector API (vf_*, vd_*, vh_*, vb_*) kernels.c includes for this row
 *   check   `int check(void)` in dispatch.c: whether this CPU runs the row (cpuid; no state)
 * neon's flag, -march=armv8-a, is the AArch64 baseline (Advanced SIMD, FMA, the float16
 * conversions): it keeps the kernels runnable on every AArch64 CPU, as its check (always 1)
 * promises, whatever newer -march a toolchain defaults to; and an x86 compiler rejects it, so
 * the probes of setup.py, tools/sanitize.sh and tests/test_build_table.py skip the row there. */
#define FASTCE_ISA_SCALAR 0
#define FASTCE_ISA_AVX2 1
#define FASTCE_ISA_AVX512 2
#define FASTCE_ISA_NEON 3

/* clang-format off */
#define FASTCE_ISA_TABLE(FASTCE_ISA_ROW) \
    FASTCE_ISA_ROW(scalar, FASTCE_ISA_SCALAR, "any", "", "fastce/vec_scalar.h", fastce_cpu_any) \
    FASTCE_ISA_ROW(avx2, FASTCE_ISA_AVX2, "x86", "-mavx2 -mfma -mf16c", "fastce/vec_avx2.h", fastce_cpu_avx2) \
    FASTCE_ISA_ROW(avx512, FASTCE_ISA_AVX512, "x86", "-mavx512f -mavx512dq -mavx2 -mfma -mf16c", "fastce/vec_avx512.h", fastce_cpu_avx512) \
    FASTCE_ISA_ROW(neon, FASTCE_ISA_NEON, "aarch64", "-march=armv8-a", "fastce/vec_neon.h", fastce_cpu_neon)
/* clang-format on */

/* ---- storage dtypes of the logits (and of the output): one kernel table each ----
 * float16 and bfloat16 are computed in float. FASTCE_DTYPE_ROW(name, code, ...): name is the
 * symbol suffix (fastce_kernels_<isa>_<name>); the rows are in the order setup.py submits the
 * compiles, largest objects first. The table passes its extra arguments (...) on to each row,
 * so that a row can be expanded inside an instruction set's row (dispatch.c). */
#define FASTCE_DT_F32 0
#define FASTCE_DT_F64 1
#define FASTCE_DT_F16 2
#define FASTCE_DT_BF16 3

/* clang-format off */
#define FASTCE_DTYPE_TABLE(FASTCE_DTYPE_ROW, ...) \
    FASTCE_DTYPE_ROW(f32, FASTCE_DT_F32, __VA_ARGS__) \
    FASTCE_DTYPE_ROW(f16, FASTCE_DT_F16, __VA_ARGS__) \
    FASTCE_DTYPE_ROW(bf16, FASTCE_DT_BF16, __VA_ARGS__) \
    FASTCE_DTYPE_ROW(f64, FASTCE_DT_F64, __VA_ARGS__)
/* clang-format on */

/* ---- what the rows give the C code ---- */
#define FASTCE_TABLE_ONE_(...) +1
/* The number of rows (usable in #if). */
#define FASTCE_ISA_COUNT (0 FASTCE_ISA_TABLE(FASTCE_TABLE_ONE_))
#define FASTCE_DT_COUNT (0 FASTCE_DTYPE_TABLE(FASTCE_TABLE_ONE_, ~))

/* FASTCE_TABLE_ARG(n, a0, a1, ...): the n-th argument (n a literal, or a macro of one; at most
   8 rows). With a column picked from every row, e.g. FASTCE_ISA_TABLE(FASTCE_ISA_HEADER_), it
   gives row n's value, in #include and #if too. */
#define FASTCE_TABLE_ARG(n, ...) FASTCE_TABLE_ARG_(n, __VA_ARGS__)
#define FASTCE_TABLE_ARG_(n, ...) FASTCE_TABLE_ARG_##n(__VA_ARGS__)
#define FASTCE_TABLE_ARG_0(a, ...) a
#define FASTCE_TABLE_ARG_1(a, ...) FASTCE_TABLE_ARG_0(__VA_ARGS__)
#define FASTCE_TABLE_ARG_2(a, ...) FASTCE_TABLE_ARG_1(__VA_ARGS__)
#define FASTCE_TABLE_ARG_3(a, ...) FASTCE_TABLE_ARG_2(__VA_ARGS__)
#define FASTCE_TABLE_ARG_4(a, ...) FASTCE_TABLE_ARG_3(__VA_ARGS__)
#define FASTCE_TABLE_ARG_5(a, ...) FASTCE_TABLE_ARG_4(__VA_ARGS__)
#define FASTCE_TABLE_ARG_6(a, ...) FASTCE_TABLE_ARG_5(__VA_ARGS__)
#define FASTCE_TABLE_ARG_7(a, ...) FASTCE_TABLE_ARG_6(__VA_ARGS__)
/* Columns of an instruction set's row, one per row, comma-terminated. */
#define FASTCE_ISA_NAME_(name, code, arch, flags, header, check) name,
#define FASTCE_ISA_CODE_(name, code, arch, flags, header, check) code,
#define FASTCE_ISA_HEADER_(name, code, arch, flags, header, check) header,

/* FASTCE_IF_BUILT(name, yes, no): `yes` if setup.py built row `name` (FASTCE_HAVE_<name> is
   defined as 1), else `no`, chosen by the preprocessor, so that `no` never names the kernel
   objects of a row that was not built (the Linux kernel's IS_ENABLED: FASTCE_BUILT_ON_1 adds
   an argument that shifts the 1 into place). `yes` and `no` must hold no bare comma. */
#define FASTCE_IF_BUILT(name, yes, no) FASTCE_IF_BUILT_(FASTCE_BUILT_(FASTCE_HAVE_##name), yes, no)
#define FASTCE_IF_BUILT_(on, yes, no) FASTCE_IF_BUILT__(on, yes, no)
#define FASTCE_IF_BUILT__(on, yes, no) FASTCE_PICK_##on(yes, no)
#define FASTCE_PICK_1(yes, no) yes
#define FASTCE_PICK_0(yes, no) no
#define FASTCE_BUILT_(v) FASTCE_BUILT__(v)
#define FASTCE_BUILT__(v) FASTCE_BUILT___(FASTCE_BUILT_ON_##v)
#define FASTCE_BUILT___(x) FASTCE_BUILT_SECOND_(x, 0, ~)
#define FASTCE_BUILT_SECOND_(a, b, ...) b
#define FASTCE_BUILT_ON_1 ~, 1

#endif
