"""Build fastce's extension: one Cython module plus one C object per (instruction set, dtype).

Why a custom build_ext: each ISA's kernels must be compiled with their own flags (-mavx2 -mfma,
-mavx512f ...) in their own translation unit, while the dispatcher and the Cython module are
compiled for the baseline, so the extension imports and runs on any x86-64 CPU and picks the
best kernels at run time (fastce.get_isa()). setuptools' Extension has one flag set for all its
sources, so the kernel objects are compiled here and linked in as extra objects.

Build time: src/fastce/_isa/kernels.c is compiled once per (ISA, dtype), twelve objects, on every
core at once (a thread pool; each compile is its own gcc process) while the Cython module
compiles. Debug info is off (-g0): Python's CFLAGS add -g, which nearly doubled the time of the
heavily inlined kernels.

Environment:
  FASTCE_NATIVE=1      add -march=native to every object (opt-in; the result runs only on CPUs
                       like the build machine's).
  FASTCE_NO_OPENMP=1   build without OpenMP even where the compiler supports it.
  FASTCE_BUILD_JOBS=N  compile at most N objects at once (default: the number of cores).
"""
import os
import platform
import shutil
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
INCLUDE = os.path.join("include")
ISA_DIR = os.path.join("src", "fastce", "_isa")
KERNEL_SOURCE = os.path.join(ISA_DIR, "kernels.c")
HEADERS = [os.path.join(INCLUDE, "fastce", h) for h in sorted(os.listdir(os.path.join(INCLUDE, "fastce")))]

# -fno-wrapv undoes the -fwrapv of Python's own CFLAGS for the kernel objects only: the kernels
# never rely on signed overflow wrapping (tools/sanitize.sh runs them under UBSan), and without
# it gcc optimizes their index arithmetic freely. Measured: the AVX2 (4096, 32000) float32
# forward 3.09-3.25 -> 3.14-3.32 G/s on one core, 5.2-6.1 -> 5.8-6.6 on two; AVX-512 unchanged;
# the build 104 -> 98 s of CPU.
BASE_FLAGS = ["-O3", "-std=c11", "-fno-math-errno", "-fno-wrapv", "-g0"]
# (name, code in include/fastce/common.h, flags, macro set when it builds), biggest first. The
# scalar kernels are always built.
X86_ISAS = [
    ("avx512", "FASTCE_ISA_AVX512", ["-mavx512f", "-mavx512dq", "-mavx2", "-mfma", "-mf16c"], "FASTCE_HAVE_AVX512"),
    ("avx2", "FASTCE_ISA_AVX2", ["-mavx2", "-mfma", "-mf16c"], "FASTCE_HAVE_AVX2"),
]
SCALAR_ISA = ("scalar", "FASTCE_ISA_SCALAR", [], None)
# Storage dtypes of the logits (FASTCE_DT_* in common.h), biggest objects first.
DTYPES = [("f32", "FASTCE_DT_F32"), ("f16", "FASTCE_DT_F16"), ("bf16", "FASTCE_DT_BF16"), ("f64", "FASTCE_DT_F64")]


def _is_x86():
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def _try_compile(compiler, source, flags, link=False):
    """Compile (and optionally link) `source`; True if it worked."""
    tmp = tempfile.mkdtemp(prefix="fastce-probe-")
    try:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(source)
        objs = compiler.compile([path], output_dir=tmp, extra_postargs=flags)
        if link:
            compiler.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=flags)
        return True
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return n > 0 && omp_get_max_threads() > 0 ? 0 : 1;
    }
    """
)


class BuildExt(build_ext):
    def build_extensions(self):
        compiler = self.compiler
        native = ["-march=native"] if os.environ.get("FASTCE_NATIVE") == "1" else []

        openmp = []
        if os.environ.get("FASTCE_NO_OPENMP") != "1":
            if _try_compile(compiler, OPENMP_PROBE, ["-fopenmp"], link=True):
                openmp = ["-fopenmp"]
        if not openmp:
            print(
                "\n*** fastce WARNING: OpenMP was not found (or FASTCE_NO_OPENMP=1); building a "
                "single-threaded fastce. Install an OpenMP runtime (e.g. libgomp) and rebuild for "
                "multi-threaded kernels. ***\n",
                file=sys.stderr,
            )

        macros = []
        isas = []
        if _is_x86():
            for isa in X86_ISAS:
                name, _, flags, macro = isa
                if _try_compile(compiler, "int main(void){return 0;}\n", flags):
                    isas.append(isa)
                    macros.append((macro, "1"))
                else:
                    print(f"*** fastce: the compiler cannot build {name} kernels; skipping them.",
                          file=sys.stderr)
        isas.append(SCALAR_ISA)

        for ext in self.extensions:
            # The kernel objects compile in the background; the link waits for them.
            units = [(isa, dt) for dt in DTYPES for isa in isas]
            jobs = int(os.environ.get("FASTCE_BUILD_JOBS", "0")) or os.cpu_count() or 1
            pool = ThreadPoolExecutor(max_workers=max(1, jobs))
            futures = [pool.submit(self._compile_kernels, isa, dt, native) for isa, dt in units]
            link = compiler.link_shared_object

            def link_after_kernels(objects, *args, **kwargs):
                kernel_objects = [obj for f in futures for obj in f.result()]
                return link(list(objects) + kernel_objects, *args, **kwargs)

            compiler.link_shared_object = link_after_kernels
            ext.define_macros = list(ext.define_macros or []) + macros
            ext.extra_compile_args = list(ext.extra_compile_args or []) + ["-O3", "-fno-math-errno", "-g0"] + openmp + native
            ext.extra_link_args = list(ext.extra_link_args or []) + openmp
            try:
                super().build_extension(ext)
            finally:
                compiler.link_shared_object = link
                pool.shutdown(wait=True)

    def _compile_kernels(self, isa, dtype, native):
        """Compiles kernels.c for one (ISA, dtype) into its own folder; returns the object list."""
        name, code, flags, _ = isa
        tag = f"{name}_{dtype[0]}"
        t0 = time.perf_counter()
        objects = self.compiler.compile(
            [KERNEL_SOURCE],
            output_dir=os.path.join(self.build_temp, "kernels", tag),
            macros=[("FASTCE_BUILD_ISA", code), ("FASTCE_BUILD_DTYPE", dtype[1])],
            include_dirs=[INCLUDE],
            extra_postargs=BASE_FLAGS + flags + native + ["-fPIC"],
            depends=HEADERS,
        )
        print(f"fastce: kernels {tag} compiled in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        return objects


extensions = [
    Extension(
        "fastce._kernels",
        sources=["src/fastce/_kernels.pyx", os.path.join(ISA_DIR, "dispatch.c"), os.path.join(ISA_DIR, "buffer_cache.c")],
        include_dirs=[INCLUDE, numpy.get_include()],
        # Rebuild (and relink the ISA objects) whenever a kernel header or ISA source changes.
        depends=HEADERS + [KERNEL_SOURCE],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(
    ext_modules=cythonize(extensions, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False}),
    cmdclass={"build_ext": BuildExt},
)
