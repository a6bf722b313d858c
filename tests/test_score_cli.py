"""`fastce score`: the command-line scorer of .npy files read in memory-mapped row blocks.

* Numbers: the CLI equals ``fastce.score`` on the same arrays, and the float64 NumPy reference
  ``fastce.reference.score`` (nll = logsumexp(x) - x[t]; correct@k when fewer than k classes rank
  above the target: strictly greater logits, or equal logits at a lower class index).
* Blocks: block sizes smaller than N and not dividing it give the one-batch result (up to
  summation order); the linear form (--hidden/--weight/--bias) equals the logits form.
* Output: JSON parses; the table names every figure; nothing on stderr when it is not a terminal,
  a progress bar when it is.
* Errors: every bad file / bad option exits with status 2 and one clear line, no traceback.
* Memory: scoring a 256 MiB file in 8 MiB blocks raises the process's peak RSS by far less than
  the file (measured in a subprocess against the same subprocess scoring a tiny file), while a
  whole-file memory map (the control) raises it by about the file size.
"""

from __future__ import annotations

import json
import math
import re
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastce
from _ce_testutil import ref
from fastce import cli
from fastce.cli import common, npy_blocks

N, V = 1000, 50


# ------------------------------------------------------------------------------------------
# helpers (the reference is fastce.reference.score, `ref.score`)


def run_cli(argv, capsys):
    """``cli.main(['score', *argv])`` in-process: (status, stdout, stderr)."""
    try:
        rc = cli.main(["score", *map(str, argv)])
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def run_json(argv, capsys):
    rc, out, err = run_cli([*argv, "--json"], capsys)
    assert rc == 0, err
    assert err == "", f"stderr not empty on success: {err!r}"
    return json.loads(out)


def assert_matches(d, r, rel):
    """The CLI's JSON `d` against ref.score's sums `r` (nll_sum, tokens, correct)."""
    nll_sum, count, correct = r
    assert d["tokens"] == count
    assert math.isclose(d["nll_sum"], nll_sum, rel_tol=rel, abs_tol=rel)
    if count:
        assert math.isclose(d["mean_nll"], nll_sum / count, rel_tol=rel)
        assert math.isclose(d["perplexity"], math.exp(nll_sum / count), rel_tol=10 * rel)
    for k, c in correct.items():
        assert d["accuracy"][f"top{k}"] == pytest.approx(c / count, abs=1e-12), k


def make_data(seed=0, n=N, v=V, dtype=np.float32, ignore_every=9):
    rng = np.random.default_rng(seed)
    x = (3 * rng.standard_normal((n, v))).astype(dtype)
    t = rng.integers(0, v, n)
    if ignore_every:
        t[::ignore_every] = -100
    return x, t


@pytest.fixture
def files(tmp_path):
    """Writes arrays as .npy files under tmp_path: files(name=array, ...) -> dict of paths."""
    def write(**arrays):
        paths = {}
        for name, a in arrays.items():
            p = tmp_path / f"{name}.npy"
            np.save(p, a)
            paths[name] = str(p)
        return paths
    return write


# ------------------------------------------------------------------------------------------
# numbers


@pytest.mark.parametrize("dtype, rel", [(np.float32, 1e-5), (np.float64, 1e-11),
                                        (np.float16, 1e-5)])
def test_equals_score_and_reference(files, capsys, dtype, rel):
    x, t = make_data(dtype=dtype)
    p = files(x=x, t=t)
    d = run_json([p["x"], p["t"], "--top-k", "5,10", "--top-k", "3"], capsys)
    assert d["rows"] == N and d["vocab"] == V and d["ignored"] == int((t == -100).sum())
    api = fastce.score(x, t, top_k=(1, 3, 5, 10))
    assert d["tokens"] == api.count
    assert d["nll_sum"] == pytest.approx(api.nll_sum, rel=1e-12)
    assert d["accuracy"] == {f"top{k}": pytest.approx(v, abs=1e-15)
                             for k, v in api.top_k_accuracy.items()}
    assert_matches(d, ref.score(x, t, top_k=(1, 3, 5, 10)), rel=rel)


def test_ties_rank_lower_class_first(files, capsys):
    """Equal logits: the lower class index ranks above (float16 data has many ties)."""
    rng = np.random.default_rng(3)
    x = rng.integers(-2, 3, (400, 12)).astype(np.float16)    # heavy ties
    t = rng.integers(0, 12, 400)
    p = files(x=x, t=t)
    d = run_json([p["x"], p["t"], "--top-k", "2,5", "--block-rows", "33"], capsys)
    assert_matches(d, ref.score(x, t, top_k=(1, 2, 5)), rel=1e-5)


def test_table_output(files, capsys):
    x, t = make_data()
    p = files(x=x, t=t)
    rc, out, err = run_cli([p["x"], p["t"], "--top-k", "5"], capsys)
    assert rc == 0 and err == ""
    nll_sum, count, correct = ref.score(x, t, top_k=(1, 5))
    rows = {}
    for line in out.splitlines():
        label, value = line[:12].strip(), line[12:].split()
        rows[label] = value
    assert rows["logits"][0] == p["x"] and rows["targets"][0] == p["t"]
    assert int(rows["tokens"][0]) == count
    assert float(rows["mean NLL"][0]) == pytest.approx(nll_sum / count, rel=1e-5)
    assert float(rows["perplexity"][0]) == pytest.approx(math.exp(nll_sum / count), rel=1e-5)
    assert float(rows["top-1 acc"][0]) == pytest.approx(correct[1] / count, abs=1e-6)
    assert float(rows["top-5 acc"][0]) == pytest.approx(correct[5] / count, abs=1e-6)
    assert rows["top-5 acc"][1] == f"({correct[5]}/{count})"


@pytest.mark.parametrize("block", [["--block-rows", "37"], ["--block-rows", "1"],
                                   ["--block-rows", "999"], ["--block-mb", "0.003"],
                                   ["--block-rows", "5000"]])
def test_blocks_equal_one_batch(files, capsys, block):
    x, t = make_data(seed=1)
    p = files(x=x, t=t)
    whole = fastce.score(x, t, top_k=(1, 5))
    d = run_json([p["x"], p["t"], "--top-k", "5", *block], capsys)
    assert d["tokens"] == whole.count
    assert d["nll_sum"] == pytest.approx(whole.nll_sum, rel=1e-6)
    assert d["accuracy"]["top5"] == whole.top_k_accuracy[5]


def test_block_plan_covers_rows():
    assert npy_blocks.rows_per_block(200, None, 0.003) == 15          # 3145 B // 200 B
    assert npy_blocks.rows_per_block(10 ** 9, None, 1) == 1           # a row bigger than a block
    assert npy_blocks.rows_per_block(200, 7, None) == 7
    b = list(npy_blocks.block_bounds(1000, 37))
    assert b[0] == (0, 37) and b[-1] == (999, 1000) and len(b) == 28
    assert all(b[i][1] == b[i + 1][0] for i in range(len(b) - 1))


def test_ignore_index_and_unusual_target_dtypes(files, capsys):
    x, t = make_data(seed=2, ignore_every=0)
    t[::4] = 7                                    # ignore class 7 instead of -100
    for tt in (t.astype(np.uint8), t.astype(np.int32), t.astype(">i8"), t.astype(np.uint64)):
        p = files(x=x, t=tt)
        d = run_json([p["x"], p["t"], "--ignore-index", "7"], capsys)
        assert_matches(d, ref.score(x, t, ignore_index=7), rel=1e-5)
        assert d["ignored"] == int((t == 7).sum())


def test_byte_swapped_logits(files, capsys):
    x, t = make_data(seed=4)
    p = files(x=x.astype(">f4"), t=t)
    d = run_json([p["x"], p["t"], "--block-rows", "100"], capsys)
    assert_matches(d, ref.score(x, t), rel=1e-5)


def test_softcap(files, capsys):
    x, t = make_data(seed=5)
    x *= 10
    p = files(x=x, t=t)
    d = run_json([p["x"], p["t"], "--softcap", "15", "--top-k", "5"], capsys)
    api = fastce.score(x, t, top_k=(1, 5), softcap=15.0)
    assert d["nll_sum"] == pytest.approx(api.nll_sum, rel=1e-12)
    assert d["accuracy"]["top5"] == api.top_k_accuracy[5]
    nll_sum, count, _ = ref.score(x, t, softcap=15.0)
    assert d["tokens"] == count and d["nll_sum"] == pytest.approx(nll_sum, rel=1e-5)


def test_threads_option(files, capsys):
    x, t = make_data(seed=6)
    p = files(x=x, t=t)
    one = run_json([p["x"], p["t"], "--threads", "1"], capsys)
    two = run_json([p["x"], p["t"], "--threads", "2"], capsys)
    assert one["tokens"] == two["tokens"] and one["accuracy"] == two["accuracy"]
    assert one["nll_sum"] == pytest.approx(two["nll_sum"], rel=1e-6)


def test_linear_form_equals_logits_form(files, capsys):
    rng = np.random.default_rng(7)
    h = rng.standard_normal((N, 16))
    w = rng.standard_normal((V, 16))
    b = rng.standard_normal(V)
    _, t = make_data(seed=7)
    logits = h @ w.T + b
    p = files(h=h, w=w, b=b, x=logits, t=t, x0=h @ w.T)
    lin = run_json(["--hidden", p["h"], "--weight", p["w"], "--bias", p["b"], p["t"],
                    "--top-k", "5", "--block-rows", "77"], capsys)
    full = run_json([p["x"], p["t"], "--top-k", "5"], capsys)
    assert lin["tokens"] == full["tokens"] and lin["accuracy"] == full["accuracy"]
    assert lin["nll_sum"] == pytest.approx(full["nll_sum"], rel=1e-10)
    assert_matches(lin, ref.score(logits, t, top_k=(1, 5)), rel=1e-10)
    nobias = run_json(["--hidden", p["h"], "--weight", p["w"], p["t"], "--block-mb", "0.01"],
                      capsys)
    assert_matches(nobias, ref.score(h @ w.T, t), rel=1e-10)


def test_linear_form_float32(files, capsys):
    rng = np.random.default_rng(8)
    h = rng.standard_normal((300, 32)).astype(np.float32)
    w = rng.standard_normal((V, 32)).astype(np.float32)
    _, t = make_data(seed=8, n=300)
    p = files(h=h, w=w, t=t)
    d = run_json(["--hidden", p["h"], "--weight", p["w"], p["t"], "--block-rows", "64"], capsys)
    api = fastce.score_linear(h, w, t)
    assert d["tokens"] == api.count
    assert d["nll_sum"] == pytest.approx(api.nll_sum, rel=1e-5)
    nll_sum, count, _ = ref.score(h.astype(np.float64) @ w.T.astype(np.float64), t)
    assert d["nll_sum"] == pytest.approx(nll_sum, rel=1e-4)


def test_json_when_nothing_is_scored(files, capsys):
    x, t = make_data(seed=9)
    p = files(x=x, t=np.full(N, -100), x0=np.zeros((0, V), np.float32),
              t0=np.zeros(0, np.int64))
    for args in ([p["x"], p["t"]], [p["x0"], p["t0"]]):
        rc, out, err = run_cli([*args, "--json", "--top-k", "5"], capsys)
        assert rc == 0 and err == ""
        d = json.loads(out)                       # strict JSON: NaN became null
        assert d["tokens"] == 0 and d["mean_nll"] is None and d["perplexity"] is None
        assert d["accuracy"] == {"top1": None, "top5": None}


# ------------------------------------------------------------------------------------------
# quiet / progress / subprocess


def test_subprocess_python_m_fastce_is_quiet(files):
    x, t = make_data(seed=10)
    p = files(x=x, t=t)
    res = subprocess.run([sys.executable, "-m", "fastce", "score", p["x"], p["t"], "--json",
                          "--top-k", "5", "--block-rows", "128"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert_matches(json.loads(res.stdout), ref.score(x, t, top_k=(1, 5)), rel=1e-5)


def test_subprocess_error_has_no_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "fastce", "score", str(tmp_path / "nope.npy"),
                          str(tmp_path / "t.npy")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        f"fastce score: error: logits file {str(tmp_path / 'nope.npy')!r}: no such file"]


def test_progress_bar_on_a_terminal(files, capsys, monkeypatch):
    pytest.importorskip("tqdm")
    x, t = make_data(seed=11)
    p = files(x=x, t=t)
    monkeypatch.setattr(common, "stderr_is_terminal", lambda: True)
    rc, out, err = run_cli([p["x"], p["t"], "--json", "--block-rows", "100"], capsys)
    assert rc == 0
    assert "scoring" in err and "row" in err           # tqdm wrote its bar to stderr
    assert json.loads(out)["tokens"] == int((t != -100).sum())


# ------------------------------------------------------------------------------------------
# block reader


def test_reader_rows_and_unmapping(tmp_path):
    rng = np.random.default_rng(12)
    a = rng.standard_normal((301, 7)).astype(np.float16)       # 14-byte rows, unaligned blocks
    path = str(tmp_path / "a.npy")
    np.save(path, a)
    info = npy_blocks.read_npy_header(path, "logits")
    assert info.shape == (301, 7) and info.dtype == np.float16 and info.offset % 64 == 0
    with npy_blocks.RowBlockReader(info) as r:
        for r0, r1 in [(0, 1), (0, 301), (5, 17), (300, 301), (123, 299), (10, 10)]:
            np.testing.assert_array_equal(r.copy_rows(r0, r1), a[r0:r1])
            seen = r.apply(r0, r1, lambda rows: rows.sum(dtype=np.float64))
            assert seen == pytest.approx(a[r0:r1].sum(dtype=np.float64))
            if os.path.exists("/proc/self/maps"):
                with open("/proc/self/maps") as f:
                    assert path not in f.read(), "a block stayed mapped after apply()"


def test_npy_format_versions(tmp_path, capsys):
    x, t = make_data(seed=13, n=50)
    for version in [(1, 0), (2, 0), (3, 0)]:
        path = str(tmp_path / f"x{version[0]}.npy")
        with open(path, "wb") as f:
            np.lib.format.write_array(f, x, version=version)
        d = run_json([path, str(_save(tmp_path, "t", t))], capsys)
        assert_matches(d, ref.score(x, t), rel=1e-5)


def _save(tmp_path, name, a):
    p = tmp_path / f"{name}.npy"
    np.save(p, a)
    return p


# ------------------------------------------------------------------------------------------
# errors


def _bad_cases(tmp_path):
    """name -> (argv, text expected in the error line); every case must exit with status 2."""
    x, t = make_data(seed=14, n=20, v=6)
    s = lambda name, a: str(_save(tmp_path, name, a))     # noqa: E731
    X, T = s("x", x), s("t", t)
    h, w = s("h", np.ones((20, 4), np.float32)), s("w", np.ones((6, 4), np.float32))
    notnpy = tmp_path / "notnpy.npy"
    notnpy.write_bytes(b"just some text, not an array\n")
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.npy"
    raw = open(X, "rb").read()
    corrupt.write_bytes(raw[:10] + b"{'descr': '<f4', 'fortran_order': False, 'shape': (20, }"
                        + raw[10 + 57:])
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(raw[: len(raw) // 2])
    npz = tmp_path / "arrays.npz"
    np.savez(npz, x=x)
    obj = np.empty(3, dtype=object)
    np.save(tmp_path / "obj.npy", obj, allow_pickle=True)
    tbad, tneg = t.copy(), t.copy()
    tbad[13] = 6
    tneg[4] = -3
    return {
        "missing file": ([tmp_path / "missing.npy", T], "no such file"),
        "missing targets": ([X, tmp_path / "missing.npy"], "targets file"),
        "directory": ([tmp_path, T], "is a directory"),
        "not npy": ([notnpy, T], "not a .npy file"),
        "empty file": ([empty, T], "not a .npy file"),
        "corrupt header": ([corrupt, T], "corrupt .npy header"),
        "truncated": ([truncated, T], "truncated"),
        "npz": ([npz, T], ".npz"),
        "object dtype": ([tmp_path / "obj.npy", T], "objects"),
        "fortran order": ([s("xf", np.asfortranarray(x)), T], "Fortran-ordered"),
        "int logits": ([s("xi", x.astype(np.int32)), T], "expected float16, bfloat16 (with --dtype bfloat16), float32 or float64"),
        "complex logits": ([s("xc", x.astype(np.complex64)), T], "expected float16"),
        "float targets": ([X, s("tf", t.astype(np.float32))], "not an integer dtype"),
        "bool targets": ([X, s("tb", t > 0)], "not an integer dtype"),
        "1-D logits": ([s("x1", x[0]), s("t0", np.int64(1))], "not 2-D"),
        "3-D logits": ([s("x3", x.reshape(2, 10, 6)), T], "reshape (B, T, V)"),
        "2-D targets": ([X, s("t2", t.reshape(20, 1))], "not 1-D"),
        "length mismatch": ([X, s("t19", t[:19])], "20 rows but targets have 19"),
        "no classes": ([s("xv0", np.zeros((20, 0), np.float32)), T], "no classes"),
        "target too large": ([X, s("tbad", tbad)], "target 6 at row 13 is out of range"),
        "target negative": ([X, s("tneg", tneg)], "target -3 at row 4 is out of range"),
        "top-k zero": ([X, T, "--top-k", "0"], "--top-k"),
        "top-k negative": ([X, T, "--top-k", "5,-1"], "--top-k"),
        "top-k > V": ([X, T, "--top-k", "7"], "exceeds the number of classes (6)"),
        "top-k text": ([X, T, "--top-k", "five"], "--top-k"),
        "ignore-index text": ([X, T, "--ignore-index", "x"], "--ignore-index"),
        "ignore-index huge": ([X, T, "--ignore-index", str(2 ** 64)], "64-bit"),
        "block-rows zero": ([X, T, "--block-rows", "0"], "--block-rows"),
        "block-mb negative": ([X, T, "--block-mb", "-1"], "--block-mb"),
        "block-mb nan": ([X, T, "--block-mb", "nan"], "--block-mb"),
        "both block sizes": ([X, T, "--block-rows", "3", "--block-mb", "1"], "not allowed with"),
        "threads zero": ([X, T, "--threads", "0"], "--threads"),
        "softcap zero": ([X, T, "--softcap", "0"], "--softcap"),
        "no files": ([], "expected LOGITS.npy TARGETS.npy"),
        "one file": ([X], "expected LOGITS.npy TARGETS.npy"),
        "three files": ([X, T, T], "expected LOGITS.npy TARGETS.npy"),
        "hidden without weight": (["--hidden", h, T], "needs both --hidden and --weight"),
        "bias alone": ([X, T, "--bias", s("b", np.ones(6))], "needs both --hidden and --weight"),
        "linear with logits": (["--hidden", h, "--weight", w, X, T], "exactly one positional"),
        "H mismatch": (["--hidden", h, "--weight", s("w5", np.ones((6, 5))), T],
                       "hidden size mismatch"),
        "bias shape": (["--hidden", h, "--weight", w, "--bias", s("b7", np.ones(7)), T],
                       "does not match the weight's 6 classes"),
        "int weight": (["--hidden", h, "--weight", s("wi", np.ones((6, 4), np.int64)), T],
                       "weight file"),
        "hidden rows": (["--hidden", s("h19", np.ones((19, 4))), "--weight", w, T],
                        "hidden has 19 rows"),
        "linear target range": (["--hidden", h, "--weight", w, s("tbad2", tbad)],
                                "out of range for 6 classes"),
    }


def test_bad_inputs_exit_2_with_one_clear_line(tmp_path, capsys):
    cases = _bad_cases(tmp_path)
    failures = []
    for name, (argv, expected) in cases.items():
        rc, out, err = run_cli(argv, capsys)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error:" in ln]
        ok = (rc == 2 and out == "" and "Traceback" not in err and len(errors) == 1
              and expected in errors[0] and errors[0].startswith("fastce score: error: ")
              and all(ln.startswith(("usage:", "  ", "fastce score: error:")) for ln in lines))
        if not ok:
            failures.append(f"{name}: rc={rc} out={out!r} err={err!r}")
    assert not failures, "\n".join(failures)


def test_fastce_errors_on_the_data_are_reported(files, capsys, monkeypatch):
    """If fastce itself rejects a block (e.g. IndexError), the CLI prints it, exit 2."""
    x, t = make_data(seed=15)
    p = files(x=x, t=t)

    def boom(*a, **k):
        raise IndexError("Target 99 is out of bounds.")
    monkeypatch.setattr(fastce, "score", boom)
    rc, out, err = run_cli([p["x"], p["t"]], capsys)
    assert (rc, out) == (2, "")
    assert err == "fastce score: error: Target 99 is out of bounds.\n"


# ------------------------------------------------------------------------------------------
# bounded resident memory


_PEAK_PROBE = textwrap.dedent("""
    import sys
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "cli":
        from fastce import cli
        rc = cli.main(["score", *args, "--json"])
    else:   # control: the whole file memory-mapped at once
        import json, numpy as np, fastce
        x = np.load(args[0], mmap_mode="r")
        t = np.load(args[1])
        print(json.dumps({"tokens": fastce.score(x, t).count}))
        rc = 0
    peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
    print("VmHWM_KiB", int(peak.split()[1]))
    sys.exit(rc)
""")


def _peak_rss(mode, *args):
    res = subprocess.run([sys.executable, "-c", _PEAK_PROBE, mode, *map(str, args)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    tokens = json.loads(out[0])["tokens"]
    return int(out[1].split()[1]) * 1024, tokens


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc (Linux)")
def test_resident_memory_is_bounded_by_the_block(tmp_path):
    rows, v = 8192, 8192                     # 256 MiB float32
    big, tiny, tpath = tmp_path / "big.npy", tmp_path / "tiny.npy", tmp_path / "t.npy"
    rng = np.random.default_rng(16)
    tile = rng.standard_normal((256, v)).astype(np.float32)
    mm = np.lib.format.open_memmap(big, mode="w+", dtype=np.float32, shape=(rows, v))
    for r0 in range(0, rows, 256):
        mm[r0:r0 + 256] = tile
    mm.flush()
    del mm
    np.save(tiny, tile[:64])
    t = rng.integers(0, v, rows)
    np.save(tpath, t)
    np.save(tmp_path / "t64.npy", t[:64])
    size = os.path.getsize(big)
    try:
        base, n0 = _peak_rss("cli", tiny, tmp_path / "t64.npy", "--block-mb", "8")
        peak, n1 = _peak_rss("cli", big, tpath, "--block-mb", "8")
        control, n2 = _peak_rss("control", big, tpath)
    finally:
        os.remove(big)
    assert (n0, n1, n2) == (64, rows, rows)
    growth, control_growth = peak - base, control - base
    print(f"file {size / 2**20:.0f} MiB, 8 MiB blocks: peak RSS {peak / 2**20:.1f} MiB, "
          f"baseline {base / 2**20:.1f} MiB, growth {growth / 2**20:.1f} MiB; whole-file mmap "
          f"control growth {control_growth / 2**20:.1f} MiB")
    assert growth < size / 4, (growth, size)
    # the measurement sees mapped file pages: a whole-file map grows by about the file size
    assert control_growth > size / 2, (control_growth, size)


# ------------------------------------------------------------------------------------------
# bfloat16 files: np.save writes ml_dtypes' bfloat16 with the header dtype |V2
# ------------------------------------------------------------------------------------------

def test_bfloat16_file_with_dtype_flag(files, capsys):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x, t = make_data(dtype=np.float32)
    xb = x.astype(ml_dtypes.bfloat16)
    p = files(logits=xb, targets=t)
    assert np.load(p["logits"]).dtype.str == "|V2"  # what makes the flag necessary
    d = run_json([p["logits"], p["targets"], "--dtype", "bfloat16", "--top-k", "5", "--block-rows", "64"], capsys)
    s = fastce.score(xb, t, top_k=(1, 5))
    assert d["tokens"] == s.tokens and d["nll_sum"] == pytest.approx(s.nll_sum, rel=1e-12)
    assert d["accuracy"]["top5"] == pytest.approx(s.top_k_accuracy[5])
    r = ref.score(xb.astype(np.float64), t, top_k=(1, 5))
    assert d["nll_sum"] == pytest.approx(r.nll_sum, rel=1e-5)


@pytest.mark.parametrize("case", ["v2-without-flag", "flag-on-float32", "void4", "linear-form"])
def test_bfloat16_flag_bad_input(files, capsys, case):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x, t = make_data(n=20, dtype=np.float32)
    if case == "v2-without-flag":
        p = files(logits=x.astype(ml_dtypes.bfloat16), targets=t[:20])
        argv, match = [p["logits"], p["targets"]], r"\|V2.*--dtype bfloat16"
    elif case == "flag-on-float32":
        p = files(logits=x, targets=t[:20])
        argv, match = [p["logits"], p["targets"], "--dtype", "bfloat16"], r"header says <f4"
    elif case == "void4":
        p = files(logits=np.zeros((20, 3), dtype="V4"), targets=t[:20])
        argv, match = [p["logits"], p["targets"], "--dtype", "bfloat16"], r"\|V4"
    else:
        p = files(hidden=x, weight=x[:5], targets=t[:20])
        argv, match = ["--hidden", p["hidden"], "--weight", p["weight"], p["targets"], "--dtype", "bfloat16"], r"linear form"
    rc, out, err = run_cli(argv, capsys)
    assert rc == 2 and out == ""
    assert err.startswith("fastce score: error: ") and len(err.strip().splitlines()) == 1
    assert re.search(match, err), err


def test_workers_option_scores_through_dask(files, capsys):
    """--workers 2: the logits file read by a 2-process LocalCluster's tasks, in row blocks, the
    targets checked here first; the same Score as one process."""
    pytest.importorskip("distributed")
    x, t = make_data(dtype=np.float32)
    p = files(x=x, t=t)
    d = run_json([p["x"], p["t"], "--top-k", "5", "--block-rows", "17", "--workers", "2"], capsys)
    api = fastce.score(x, t, top_k=(1, 5))
    assert d["tokens"] == api.count and d["rows"] == N
    assert d["nll_sum"] == pytest.approx(api.nll_sum, rel=1e-6)
    assert d["accuracy"] == {f"top{k}": pytest.approx(v, abs=1e-15) for k, v in api.top_k_accuracy.items()}
    bad = t.copy()
    bad[3] = V
    p = files(x=x, t=bad)
    status, out, err = run_cli([p["x"], p["t"], "--workers", "2"], capsys)
    assert status == 2 and "out of range" in err and out == ""


def test_zarr_logits_through_dask(files, capsys, tmp_path):
    pytest.importorskip("distributed")
    zarr = pytest.importorskip("zarr")
    x, t = make_data(dtype=np.float32)
    p = files(t=t)
    store = str(tmp_path / "x_store")  # no .zarr suffix: recognized by its zarr metadata
    z = zarr.open_array(store, mode="w", shape=x.shape, chunks=(23, x.shape[1]), dtype=x.dtype)
    z[:] = x
    d = run_json([store, p["t"], "--workers", "2", "--block-rows", "40"], capsys)
    api = fastce.score(x, t)
    assert d["tokens"] == api.count and d["nll_sum"] == pytest.approx(api.nll_sum, rel=1e-6)
    status, out, err = run_cli([str(tmp_path / "missing.zarr"), p["t"], "--workers", "2"], capsys)
    assert status == 2 and "not a readable zarr array" in err
