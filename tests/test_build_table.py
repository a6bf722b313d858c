"""The build table (include/fastce/build_table.h) and the C layout around it.

* tools/build_table.py parses the rows that setup.py and tools/sanitize.sh build, and the
  compiled module names the same ISAs, by code, from the C side (fastce_isa_name);
* every header left in include/fastce/ compiles alone (with its row's flags for a vector
  header): what cannot is a kernel template and belongs in src/fastce/_csrc/.
Needs a source checkout (the header and tools/); the compile checks need a C compiler.
"""
import importlib.util
import os
import shutil
import subprocess
import typing

import pytest

from fastce import _kernels, _runtime, _typing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE_H = os.path.join(ROOT, "include", "fastce", "build_table.h")
TOOL = os.path.join(ROOT, "tools", "build_table.py")

pytestmark = pytest.mark.skipif(not (os.path.isfile(TABLE_H) and os.path.isfile(TOOL)),
                                reason="not a fastce source checkout")


def _tool():
    spec = importlib.util.spec_from_file_location("fastce_build_table_tool", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rows_match_the_compiled_module():
    bt = _tool()
    table = bt.read(TABLE_H)
    assert tuple(r.name for r in table.isas) == _kernels.ISA_NAMES
    assert [r.value for r in table.isas] == list(range(len(table.isas)))
    assert sorted(r.name for r in table.dtypes) == ["bf16", "f16", "f32", "f64"]
    # What setup.py built on this machine: the rows of its arch that the compiler took.
    built = {r.name for r in bt.rows_for(table)}
    assert set(_runtime.compiled_isas()) <= built
    assert "scalar" in _runtime.compiled_isas()
    # The typed API's Literal lists the same names (a hand copy: keep it in step with the rows).
    assert set(typing.get_args(_typing.IsaName)) == set(_kernels.ISA_NAMES)


def test_rows_for_arch():
    bt = _tool()
    table = bt.read(TABLE_H)
    assert [r.name for r in bt.rows_for(table, "x86")] == ["scalar", "avx2", "avx512"]
    assert [r.name for r in bt.rows_for(table, "aarch64")] == ["scalar", "neon"]
    assert bt.host_arch("x86_64") == "x86" and bt.host_arch("arm64") == "aarch64"


def test_tool_prints_rows_for_sanitize_sh():
    out = subprocess.run(["python3" if shutil.which("python3") else "python", TOOL, "--rows", "--arch", "x86"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "scalar|FASTCE_ISA_SCALAR|"
    assert "avx2|FASTCE_ISA_AVX2|-mavx2 -mfma -mf16c" in out


#: the cross compilers of the build table's other arches
CROSS_CC = {"aarch64": "aarch64-linux-gnu-gcc"}


def _cc():
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")


@pytest.mark.parametrize("header", sorted(h for h in os.listdir(os.path.join(ROOT, "include", "fastce"))
                                          if h.endswith(".h")) if os.path.isdir(os.path.join(ROOT, "include", "fastce")) else [])
def test_public_header_compiles_alone(header):
    tool = _tool()
    table = tool.read(TABLE_H)
    row = next((r for r in table.isas if r.header == f"fastce/{header}"), None)
    flags = row.flags if row else []
    # A vector header of another arch compiles with that arch's cross compiler (.ci/run installs
    # aarch64-linux-gnu-gcc through tools/aarch64.sh before the tests).
    cross = row is not None and row.arch not in ("any", tool.host_arch())
    cc = shutil.which(CROSS_CC.get(row.arch, "")) if cross else _cc()
    if cc is None:
        pytest.skip(f"no C compiler for {row.arch if cross else 'this machine'}")
    if flags and subprocess.run([cc, *flags, "-x", "c", "-fsyntax-only", os.devnull],
                                capture_output=True).returncode != 0:
        pytest.skip(f"the compiler does not take {' '.join(flags)}")
    proc = subprocess.run([cc, "-fsyntax-only", "-std=c11", "-Wall", "-Werror", "-I", os.path.join(ROOT, "include"),
                           *flags, "-x", "c", os.path.join(ROOT, "include", "fastce", header)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
