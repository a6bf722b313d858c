"""Build fastce's extension: one Cython module plus one C object per (instruction set, dtype).

Why a custom build_ext: each ISA's kernels must be compiled with their own flags (-mavx2 -mfma,
-mavx512f ...) in their own translation unit, while the dispatcher and the Cython module are
compiled for the baseline, so the extension imports and runs on any x86-64 CPU and picks the
best kernels at run time (fastce.get_isa()). setuptools' Extension has one flag set for all its
sources, so the kernel objects are compiled here and linked in as extra objects.

The build matrix is include/fastce/build_table.h, read here through tools/build_table.py: one
row per instruction set (its name, code macro, arch, flags, vector header, runtime check) and
one per dtype. The rows of "any" arch and of the target's are built, each only if the
compiler takes its flags.

The target architecture is FASTCE_TARGET_ARCH if set, else the machine the compiler builds for
(its -dumpmachine, e.g. "aarch64-linux-gnu", "arm64-apple-darwin23", "x86_64-linux-gnu"), else
this machine's (platform.machine()); tools/build_table.py's host_arch() maps it to the table's
arch names ("x86", "aarch64"). So a native build on any machine, and a cross build with a cross
compiler (CC=aarch64-linux-gnu-gcc: tools/aarch64.sh), take the rows of the machine the objects
run on.

Build time: src/fastce/_csrc/kernels.c is compiled once per (ISA, dtype), twelve objects on
x86-64, on every core at once (a thread pool; each compile is its own gcc process) while the
Cython module compiles. Debug info is off (-g0): Python's CFLAGS add -g, which made the heavily
inlined kernels far slower to compile (docs/performance/notes_kernels.md).

Environment:
  FASTCE_NATIVE=1      add -march=native to every object (opt-in; the result runs only on CPUs
                       like the build machine's).
  FASTCE_NO_OPENMP=1   build without OpenMP even where the compiler supports it.
  FASTCE_BUILD_JOBS=N  compile at most N objects at once (default: the number of cores).
  FASTCE_TARGET_ARCH=A build the rows of arch A ("x86", "aarch64", or a machine name such as
                       x86_64 or arm64) instead of the compiler's (see above).
"""
import os
import shutil
import subprocess
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
sys.path.insert(0, os.path.join(HERE, "tools"))
import build_table  # noqa: E402  (tools/build_table.py: the parser of include/fastce/build_table.h)

INCLUDE = os.path.join("include")
CSRC = os.path.join("src", "fastce", "_csrc")
KERNEL_SOURCE = os.path.join(CSRC, "kernels.c")
# The C of the extension module itself, compiled with its flags (the baseline ISA).
EXT_C_SOURCES = [os.path.join(CSRC, c) for c in ("dispatch.c", "target_check.c", "reductions.c", "probes.c",
                                                 "buffer_cache.c")]
# Every header a C unit includes: the public ones and the kernel templates of _csrc.
HEADERS = [os.path.join(INCLUDE, "fastce", h) for h in sorted(os.listdir(os.path.join(INCLUDE, "fastce")))
           if h.endswith(".h")] + [os.path.join(CSRC, h) for h in sorted(os.listdir(CSRC)) if h.endswith(".h")]
TABLE = build_table.read(os.path.join(HERE, INCLUDE, "fastce", "build_table.h"))

# -fno-wrapv undoes the -fwrapv of Python's own CFLAGS for the kernel objects only: the kernels
# never rely on signed overflow wrapping (tools/sanitize.sh runs them under UBSan), and without
# it gcc optimizes their index arithmetic freely (measured faster on AVX2, and a shorter build:
# docs/performance/notes_kernels.md).
BASE_FLAGS = ["-O3", "-std=c11", "-fno-math-errno", "-fno-wrapv", "-g0"]


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


def target_arch(compiler):
    """The build table's arch of the machine the objects are built for (module docstring)."""
    machine = os.environ.get("FASTCE_TARGET_ARCH", "")
    if not machine:
        try:
            out = subprocess.run(list(compiler.compiler_so) + ["-dumpmachine"], capture_output=True,
                                 text=True, timeout=60)
            if out.returncode == 0 and out.stdout.strip():
                machine = out.stdout.strip().split("-")[0]
        except (AttributeError, OSError, subprocess.SubprocessError):
            pass  # no unix-style compiler command: this machine's arch
    return build_table.host_arch(machine or None)


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

        # The rows of the target's arch that the compiler takes, the widest first (the
        # largest objects start first); the scalar row ("any" arch) is always built: the
        # dispatcher falls back to it.
        arch = target_arch(compiler)
        print(f"fastce: building the build table's rows for arch {arch!r}", file=sys.stderr)
        macros = []
        isas = []
        for isa in reversed(build_table.rows_for(TABLE, arch)):
            if isa.arch == "any" or _try_compile(compiler, "int main(void){return 0;}\n", isa.flags):
                isas.append(isa)
                macros.append((isa.have_macro, "1"))
            else:
                print(f"*** fastce: the compiler cannot build {isa.name} kernels; skipping them.",
                      file=sys.stderr)

        for ext in self.extensions:
            # The kernel objects compile in the background; the link waits for them.
            units = [(isa, dt) for dt in TABLE.dtypes for isa in isas]
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
        tag = f"{isa.name}_{dtype.name}"
        t0 = time.perf_counter()
        objects = self.compiler.compile(
            [KERNEL_SOURCE],
            output_dir=os.path.join(self.build_temp, "kernels", tag),
            macros=[("FASTCE_BUILD_ISA", isa.code), ("FASTCE_BUILD_DTYPE", dtype.code)],
            include_dirs=[INCLUDE],
            extra_postargs=BASE_FLAGS + isa.flags + native + ["-fPIC"],
            depends=HEADERS,
        )
        print(f"fastce: kernels {tag} compiled in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        return objects


extensions = [
    Extension(
        "fastce._kernels",
        sources=["src/fastce/_kernels.pyx"] + EXT_C_SOURCES,
        include_dirs=[INCLUDE, numpy.get_include()],
        # Rebuild (and relink the ISA objects) whenever a header, the build table or kernels.c
        # changes.
        depends=HEADERS + [KERNEL_SOURCE],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(
    ext_modules=cythonize(extensions, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False}),
    cmdclass={"build_ext": BuildExt},
)
