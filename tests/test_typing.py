"""The typed public API (issue 25): mypy --strict on a user's script and on three wrong calls,
stubtest on the package (inline types and _kernels.pyi against the runtime), and the Literal
types of fastce._typing against the values their validators accept.

mypy runs in a subprocess with this interpreter (``python -m mypy``), on the fastce that this
interpreter imports (an installed package, or a source tree on PYTHONPATH): the package's own
directory is put first on the child's PYTHONPATH, and mypy reads packages from the
interpreter's search path (it needs the py.typed marker that fastce ships).
"""
import importlib.util
import os
import re
import runpy
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import fastce
from fastce import _kernels, _runtime, _typing, _validate

HERE = Path(__file__).resolve().parent / "typing"
USER_SCRIPT = HERE / "user_script.py"
BAD_CALLS = HERE / "bad_calls.py"
STUBTEST_CONFIG = HERE / "mypy_stubtest.ini"
STUBTEST_ALLOWLIST = HERE / "stubtest_allowlist.txt"

ERROR_LINE = re.compile(r"^(?P<path>.+?):(?P<line>\d+): error: (?P<msg>.*?)(?:  \[(?P<code>[\w-]+)\])?$")


def _package_root():
    """The directory that holds the imported fastce package (site-packages or src/)."""
    spec = importlib.util.find_spec("fastce")
    return Path(spec.origin).resolve().parent.parent


def _env():
    env = dict(os.environ)
    root = str(_package_root())
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("MYPYPATH", None)
    return env


def _mypy(request, tmp_path, path):
    pytest.importorskip("mypy")
    # pytest's cache (kept between runs: mypy's second run is fast), or a fresh one without it
    pytest_cache = getattr(request.config, "cache", None)
    cache = pytest_cache.mkdir("fastce_mypy") if pytest_cache is not None else tmp_path / "mypy"
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--show-error-codes", "--no-color-output",
         "--no-error-summary", "--cache-dir", str(cache), str(path)],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600,
    )
    errors = []
    for line in proc.stdout.splitlines():
        m = ERROR_LINE.match(line)
        if m:
            errors.append((Path(m["path"]).name, int(m["line"]), m["code"], m["msg"]))
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # 2: mypy itself failed
    return errors, proc.stdout + proc.stderr


def test_user_script_is_clean_under_mypy_strict(request, tmp_path):
    errors, out = _mypy(request, tmp_path, USER_SCRIPT)
    assert errors == [], out


def test_bad_calls_give_exactly_the_marked_errors(request, tmp_path):
    expected = {}  # line -> (code, text the message must hold)
    for i, line in enumerate(BAD_CALLS.read_text().splitlines(), 1):
        m = re.search(r'# E: ([\w-]+) "(.*)"$', line)
        if m:
            expected[i] = (m[1], m[2].replace('\\"', '"'))
    assert len(expected) == 3
    errors, out = _mypy(request, tmp_path, BAD_CALLS)
    assert {e[1] for e in errors} == set(expected), out
    for _, line, code, _ in errors:
        assert code == expected[line][0], out
    for line, (_, text) in expected.items():
        assert any(e[1] == line and text in e[3] for e in errors), out


def test_stubtest_passes(tmp_path):
    pytest.importorskip("mypy")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "fastce", "--mypy-config-file", str(STUBTEST_CONFIG),
         "--allowlist", str(STUBTEST_ALLOWLIST)],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_user_script_uses_every_public_name_and_runs(capsys):
    text = USER_SCRIPT.read_text()
    missing = [n for n in fastce.__all__ if not re.search(rf"\bfastce\.{re.escape(n)}\b", text)]
    assert missing == []
    previous = fastce.get_isa()
    try:
        runpy.run_path(str(USER_SCRIPT), run_name="__main__")
    finally:
        fastce.set_isa(previous)
    assert fastce.__version__ in capsys.readouterr().out


def test_py_typed_and_kernel_stub_are_in_the_package():
    pkg = _package_root() / "fastce"
    assert (pkg / "py.typed").is_file()
    assert (pkg / "_kernels.pyi").is_file()


def test_reduction_literal_matches_the_validator():
    assert set(typing.get_args(_typing.Reduction)) == set(_validate.REDUCTIONS)
    assert len(typing.get_args(_typing.Reduction)) == len(_validate.REDUCTIONS)
    for r in typing.get_args(_typing.Reduction):
        assert _validate.check_reduction(r) == r
    with pytest.raises(ValueError):
        _validate.check_reduction("avg")


def test_isa_literal_matches_the_kernels():
    names = typing.get_args(_typing.IsaName)
    assert set(names) == set(_kernels.ISA_NAMES) == set(_runtime._ISA_IDS)
    assert len(names) == len(_kernels.ISA_NAMES)
    assert set(fastce.available_isas()) <= set(names)
    for name in fastce.available_isas():
        assert _runtime._check_isa(name) == name


def test_typed_dicts_match_the_runtime_dicts():
    assert set(fastce.get_config()) == set(_typing.Config.__annotations__)
    assert set(fastce.cache_info()) == set(_typing.CacheInfo.__annotations__)


@pytest.mark.parametrize("name", ["chunk_size", "num_threads"])
def test_check_positive_int(name):
    import numpy as np

    assert _validate.check_positive_int(None, name) is None
    assert _validate.check_positive_int(np.int64(3), name) == 3
    with pytest.raises(TypeError, match=f"^{name} must be None or a positive integer, got bool$"):
        _validate.check_positive_int(True, name)
    with pytest.raises(TypeError, match=f"^{name} must be None or a positive integer, got str$"):
        _validate.check_positive_int("2", name)
    with pytest.raises(ValueError, match=f"^{name} must be None or a positive integer, got 0$"):
        _validate.check_positive_int(0, name)
