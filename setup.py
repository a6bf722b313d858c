"""Build fastce's extension: one Cython module plus one C object per instruction set.

Why a custom build_ext: each ISA's kernels must be compiled with their own flags (-mavx2 -mfma,
-mavx512f ...) in their own translation unit, while the dispatcher and the Cython module are
compiled for the baseline, so the extension imports and runs on any x86-64 CPU and picks the
best kernels at run time (fastce.get_isa()). setuptools' Extension has one flag set for all its
sources, so the ISA objects are compiled here and linked in as extra objects.

Environment:
  FASTCE_NATIVE=1      add -march=native to every object (opt-in; the result runs only on CPUs
                       like the build machine's).
  FASTCE_NO_OPENMP=1   build without OpenMP even where the compiler supports it.
"""
import os
import platform
import shutil
import sys
import tempfile
import textwrap

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
INCLUDE = os.path.join("include")
ISA_DIR = os.path.join("src", "fastce", "_isa")

BASE_FLAGS = ["-O3", "-std=c11", "-fno-math-errno"]
# (name, flags, macro set when it builds). The scalar kernels are always built.
X86_ISAS = [
    ("avx2", ["-mavx2", "-mfma"], "FASTCE_HAVE_AVX2"),
    ("avx512", ["-mavx512f", "-mavx512dq", "-mavx2", "-mfma"], "FASTCE_HAVE_AVX512"),
]


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
        isa_sources = [(os.path.join(ISA_DIR, "isa_scalar.c"), [])]
        if _is_x86():
            for name, flags, macro in X86_ISAS:
                if _try_compile(compiler, "int main(void){return 0;}\n", flags):
                    isa_sources.append((os.path.join(ISA_DIR, f"isa_{name}.c"), flags))
                    macros.append((macro, "1"))
                else:
                    print(f"*** fastce: the compiler cannot build {name} kernels; skipping them.",
                          file=sys.stderr)

        for ext in self.extensions:
            objects = []
            for src, flags in isa_sources:
                objects += compiler.compile(
                    [src],
                    output_dir=self.build_temp,
                    include_dirs=[INCLUDE],
                    extra_postargs=BASE_FLAGS + flags + native + ["-fPIC"],
                    depends=[os.path.join(INCLUDE, "fastce", h) for h in os.listdir(os.path.join(INCLUDE, "fastce"))],
                )
            ext.extra_objects = objects + list(ext.extra_objects or [])
            ext.define_macros = list(ext.define_macros or []) + macros
            ext.extra_compile_args = list(ext.extra_compile_args or []) + ["-O3", "-fno-math-errno"] + openmp + native
            ext.extra_link_args = list(ext.extra_link_args or []) + openmp
        super().build_extensions()


extensions = [
    Extension(
        "fastce._kernels",
        sources=["src/fastce/_kernels.pyx", os.path.join(ISA_DIR, "dispatch.c"), os.path.join(ISA_DIR, "buffer_cache.c")],
        include_dirs=[INCLUDE, numpy.get_include()],
        # Rebuild (and relink the ISA objects) whenever a kernel header or ISA source changes.
        depends=[os.path.join(INCLUDE, "fastce", h) for h in sorted(os.listdir(os.path.join(INCLUDE, "fastce")))]
        + [os.path.join(ISA_DIR, f) for f in sorted(os.listdir(ISA_DIR)) if f.startswith("isa_")],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(
    ext_modules=cythonize(extensions, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False}),
    cmdclass={"build_ext": BuildExt},
)
