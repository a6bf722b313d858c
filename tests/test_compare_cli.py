"""`fastce compare`: two logits files (or two LM heads) in row blocks.

The CLI's figures equal fastce.compare on the whole arrays whatever the block size; bfloat16
files with --dtype (one flag for both, or --ref-dtype); targets with padding; the linear form;
resident memory bounded by the blocks, not the files; bad input gives one error line and
status 2.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastce
from fastce import cli

ml_dtypes = pytest.importorskip("ml_dtypes")  # CI installs it (the test extra)


def run(argv, capsys):
    status = cli.main(["compare", *argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((203, 57)) * 2).astype(np.float32)
    b = (a + rng.standard_normal(a.shape) * 0.4).astype(np.float32)
    t = rng.integers(0, 57, 203)
    t[::6] = -100
    paths = {name: str(tmp_path / f"{name}.npy") for name in ("b", "a", "t")}
    for name, arr in (("b", b), ("a", a), ("t", t)):
        np.save(paths[name], arr)
    return paths, b, a, t


def same_figures(d, c, rel=1e-9):
    assert d["count"] == c.count
    for key, v in c.as_dict().items():
        if isinstance(v, dict):
            assert d[key] == pytest.approx(v, rel=rel), key
        elif v is None:
            assert d[key] is None, key
        else:
            assert d[key] == pytest.approx(v, rel=rel), key


@pytest.mark.parametrize("block", [["--block-rows", "1"], ["--block-rows", "50"], []])
def test_equals_compare_on_the_whole_arrays(files, capsys, block):
    paths, b, a, t = files
    status, out, _ = run([paths["b"], paths["a"], "--targets", paths["t"], "--top-k", "3,5", "--json", *block], capsys)
    assert status == 0
    d = json.loads(out)
    same_figures(d, fastce.compare(b, a, t, top_k=(3, 5)))
    assert d["rows"] == 203 and d["ignored"] == 34 and d["vocab"] == 57


def test_table_and_no_targets(files, capsys):
    paths, b, a, _ = files
    status, out, _ = run([paths["b"], paths["a"]], capsys)
    assert status == 0
    c = fastce.compare(b, a)
    assert f"rows        {c.count}" in out and "mean KL" in out and "top-1 agree" in out
    assert "NLL" not in out  # no targets, no target figures
    status, out, _ = run([paths["b"], paths["a"], "--json"], capsys)
    d = json.loads(out)
    assert d["nll"] is None and d["rms_dp"] is None
    same_figures(d, c)


def test_bfloat16_files(files, capsys, tmp_path):
    paths, b, a, t = files
    bb, ab = b.astype(ml_dtypes.bfloat16), a.astype(ml_dtypes.bfloat16)
    np.save(tmp_path / "bb.npy", bb)
    np.save(tmp_path / "ab.npy", ab)
    status, out, err = run([str(tmp_path / "bb.npy"), str(tmp_path / "ab.npy"), "--targets", paths["t"]], capsys)
    assert status == 2 and "--dtype bfloat16" in err  # |V2 needs the flag
    status, out, _ = run([str(tmp_path / "bb.npy"), str(tmp_path / "ab.npy"), "--targets", paths["t"],
                          "--dtype", "bfloat16", "--json"], capsys)
    assert status == 0
    same_figures(json.loads(out), fastce.compare(bb, ab, t), rel=1e-6)
    # a bfloat16 model against a float32 reference: --dtype applies to the |V2 file only
    status, out, _ = run([str(tmp_path / "bb.npy"), paths["a"], "--dtype", "bfloat16", "--json"], capsys)
    assert status == 0
    same_figures(json.loads(out), fastce.compare(bb, a), rel=1e-6)
    status, out, _ = run([paths["b"], str(tmp_path / "ab.npy"), "--ref-dtype", "bfloat16", "--json"], capsys)
    assert status == 0
    same_figures(json.loads(out), fastce.compare(b, ab), rel=1e-6)


def test_linear_form(tmp_path, capsys):
    rng = np.random.default_rng(3)
    N, V = 61, 40
    arrays = dict(h=rng.standard_normal((N, 8)), w=rng.standard_normal((V, 8)) * 0.5, bias=rng.standard_normal(V),
                  rh=rng.standard_normal((N, 12)), rw=rng.standard_normal((V, 12)) * 0.5,
                  t=rng.integers(0, V, N))
    p = {k: str(tmp_path / f"{k}.npy") for k in arrays}
    for k, v in arrays.items():
        np.save(p[k], v)
    status, out, _ = run(["--hidden", p["h"], "--weight", p["w"], "--bias", p["bias"], "--ref-hidden", p["rh"],
                          "--ref-weight", p["rw"], "--targets", p["t"], "--block-rows", "7", "--json"], capsys)
    assert status == 0
    A = arrays
    same_figures(json.loads(out), fastce.compare(A["h"] @ A["w"].T + A["bias"], A["rh"] @ A["rw"].T, A["t"]), rel=1e-9)


@pytest.mark.parametrize("case", ["shapes", "missing", "targets-length", "targets-range", "one-file", "partial-linear",
                                  "top-k", "int-logits", "targets-float", "3d"])
def test_bad_inputs_exit_2_with_one_clear_line(files, capsys, tmp_path, case):
    paths, b, a, t = files
    np.save(tmp_path / "short.npy", a[:-1])
    np.save(tmp_path / "tshort.npy", t[:-1])
    np.save(tmp_path / "tbad.npy", np.full(203, 57))
    np.save(tmp_path / "tfloat.npy", t.astype(np.float32))
    np.save(tmp_path / "int.npy", np.zeros((203, 57), np.int32))
    np.save(tmp_path / "3d.npy", np.zeros((7, 29, 57), np.float32))
    argv, words = {
        "shapes": ([paths["b"], str(tmp_path / "short.npy")], "differ in shape"),
        "missing": ([paths["b"], str(tmp_path / "nope.npy")], "no such file"),
        "targets-length": ([paths["b"], paths["a"], "--targets", str(tmp_path / "tshort.npy")], "one target per row"),
        "targets-range": ([paths["b"], paths["a"], "--targets", str(tmp_path / "tbad.npy")], "out of range"),
        "one-file": ([paths["b"]], "expected LOGITS.npy REF.npy"),
        "partial-linear": (["--hidden", paths["b"], "--weight", paths["a"]], "--ref-hidden"),
        "top-k": ([paths["b"], paths["a"], "--top-k", "58"], "exceeds the number of classes"),
        "int-logits": ([str(tmp_path / "int.npy"), paths["a"]], "not supported"),
        "targets-float": ([paths["b"], paths["a"], "--targets", str(tmp_path / "tfloat.npy")], "integer"),
        "3d": ([str(tmp_path / "3d.npy"), str(tmp_path / "3d.npy")], "not 2-D"),
    }[case]
    status, out, err = run(argv, capsys)
    assert status == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastce compare: error: ") and words in lines[0], err


def test_subprocess_is_quiet_and_errors_have_no_traceback(files, tmp_path):
    paths, *_ = files
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-m", "fastce", "compare", paths["b"], paths["a"], "--json"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stderr == "" and json.loads(r.stdout)["count"] == 203
    r = subprocess.run([sys.executable, "-m", "fastce", "compare", paths["b"], str(tmp_path / "x.npy")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.startswith("fastce compare: error:")


def test_resident_memory_is_bounded_by_the_blocks(tmp_path):
    """Two 128 MiB files compared in 8 MiB blocks: the peak RSS grows by a fraction of the files."""
    rows, v = 4096, 8192
    rng = np.random.default_rng(5)
    tile = rng.standard_normal((256, v)).astype(np.float32)
    for name, shift in (("b", 0.1), ("a", 0.0)):
        mm = np.lib.format.open_memmap(tmp_path / f"{name}.npy", mode="w+", dtype=np.float32, shape=(rows, v))
        for r0 in range(0, rows, 256):
            mm[r0:r0 + 256] = tile + shift * np.roll(tile, r0 // 256, axis=1)
        mm.flush()
        del mm
    size = 2 * os.path.getsize(tmp_path / "b.npy")
    code = textwrap.dedent(f"""
        import resource, json, sys
        from fastce import cli
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        status = cli.main(["compare", {str(tmp_path / 'b.npy')!r}, {str(tmp_path / 'a.npy')!r}, "--block-mb", "8",
                           "--json"])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print("RSS", base * 1024, peak * 1024, status, file=sys.stderr)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    _, base, peak, status = r.stderr.split()[-4:]
    assert int(status) == 0 and json.loads(r.stdout)["count"] == rows
    growth = int(peak) - int(base)
    print(f"two files of {size / 2 ** 21:.0f} MiB each, 8 MiB blocks: RSS growth {growth / 2**20:.1f} MiB")
    assert growth < size / 4, (growth, size)


def test_workers_option_runs_through_dask(files, capsys):
    """--workers 2: both files read by a 2-process LocalCluster's tasks, the same figures."""
    pytest.importorskip("distributed")
    paths, b, a, t = files
    status, out, _ = run([paths["b"], paths["a"], "--targets", paths["t"], "--json", "--block-rows", "50",
                          "--workers", "2", "--top-k", "3"], capsys)
    assert status == 0
    same_figures(json.loads(out), fastce.compare(b, a, t, top_k=(3,)), rel=1e-6)
    status, _, err = run(["--hidden", paths["b"], "--weight", paths["a"], "--ref-hidden", paths["b"], "--ref-weight",
                          paths["a"], "--workers", "2"], capsys)
    assert status == 2 and "linear form runs in one process" in err


def test_scheduler_unreachable_is_one_error_line(files, capsys):
    pytest.importorskip("distributed")
    paths, *_ = files
    status, out, err = run([paths["b"], paths["a"], "--scheduler", "tcp://127.0.0.1:9"], capsys)
    assert status == 2 and out == "" and err.startswith("fastce compare: error: cannot connect to the dask scheduler")


def test_zarr_logits_through_dask(files, capsys, tmp_path):
    """A zarr array as either logits file, read through dask (--workers); refused without it."""
    pytest.importorskip("distributed")
    zarr = pytest.importorskip("zarr")
    paths, b, a, t = files
    store = str(tmp_path / "b.zarr")
    z = zarr.open_array(store, mode="w", shape=b.shape, chunks=(50, b.shape[1]), dtype=b.dtype)
    z[:] = b
    status, out, _ = run([store, paths["a"], "--targets", paths["t"], "--workers", "2", "--json"], capsys)
    assert status == 0
    same_figures(json.loads(out), fastce.compare(b, a, t), rel=1e-6)
    status, out, err = run([store, paths["a"]], capsys)
    assert status == 2 and "zarr input is read through dask" in err
