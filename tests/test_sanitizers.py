"""The C kernels under AddressSanitizer + UndefinedBehaviorSanitizer, without Python.

Runs tools/sanitize.sh, which compiles src/fastce/_csrc/kernels.c once per (ISA, dtype) row of
the build table (include/fastce/build_table.h, each ISA with its own flags), dispatch.c and
tests/c/kernel_harness.c with -fsanitize=address,undefined in a temporary directory and runs
the harness: every kernel entry point, option and tail size, on exact-size buffers, checked
against a double reference. Needs a source checkout and a C compiler; nothing is installed.

The sanitized kernel objects take a few CPU-minutes to compile cold (they are cached by content
hash under ~/.cache/fastce-sanitize, so reruns with unchanged kernels take seconds); set
FASTCE_SANITIZE_TIMEOUT to change the limit below.
"""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "sanitize.sh")
TIMEOUT = float(os.environ.get("FASTCE_SANITIZE_TIMEOUT", "900"))


def _compiler():
    cc = os.environ.get("CC", "cc")
    return shutil.which(cc) or shutil.which("gcc") or shutil.which("clang")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tools/sanitize.sh needs Linux (bash, mmap guard pages)")
def test_kernels_under_asan_and_ubsan():
    if not os.path.isdir(os.path.join(ROOT, "include", "fastce")) or not os.path.isfile(SCRIPT):
        pytest.skip(f"not a fastce source checkout ({ROOT} has no include/fastce or tools/sanitize.sh)")
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler found (CC, gcc or clang)")
    if shutil.which("bash") is None:
        pytest.skip("bash not found")
    env = dict(os.environ, CC=cc)
    try:
        proc = subprocess.run(
            ["bash", SCRIPT], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
        pytest.fail(f"tools/sanitize.sh did not finish in {TIMEOUT:.0f}s\n{out[-6000:]}")
    out = proc.stdout
    assert proc.returncode == 0, f"tools/sanitize.sh failed (exit {proc.returncode}):\n{out[-12000:]}"
    assert "kernel_harness: " in out and " 0 failed" in out, out[-6000:]
