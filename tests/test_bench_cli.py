"""`fastce bench`: the three runs, the legend, the per-call table, the roofline (%roof) and the
16-bit rows, kept small.

* The runs: the default's workload sets (a minute's worth: no KL, no dask), ``--full`` the
  complete suite, ``--quick`` the smoke run; ``-w`` picks among the run's workloads.
* The legend: printed after the tables, it explains every column header present; ``--json``
  prints records only.

* ``--quick -w call-64x10 --json``: valid JSON whose per_call records give us per call, calls
  per timed sample and fastce's speedup over the NumPy twin; the text run prints the per-call
  table with the issue's target line.
* The roofline: its bound follows the definition (forward min(read / itemsize, exp),
  loss+grad min(read+write / (2 itemsize), exp / 2)); a tiny measurement gives positive
  numbers; ``%roof`` appears beside fastce's column of a large row only.
* Selection: ``--no-per-call`` and ``--pass forward`` leave the per-call table out; the
  float16 workloads are in the full and --quick sets, a 16-bit row in the default.
"""

from __future__ import annotations

import json
import re

import pytest

from fastce import bench as B
from fastce import cli
from fastce.bench import report, roofline
from fastce.bench.timing import Cell

FAST = ["--min-time", "0.01", "--min-repeats", "2", "-q"]


def run_bench(argv, capsys):
    status = cli.main(["bench", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def _legend(out):
    """The legend printed after the tables (empty if none)."""
    assert out.count(report.LEGEND_TITLE) <= 1
    return out.split(report.LEGEND_TITLE, 1)[1] if report.LEGEND_TITLE in out else ""


def _table_headers(text):
    """The column headers of every table in ``text`` (a header line is followed by dashes)."""
    import re

    lines = text.splitlines()
    heads = []
    for head, dashes in zip(lines, lines[1:]):
        if dashes.startswith("---") and set(dashes) <= {"-", " "}:
            # columns are the dash runs; a header is the text above its run
            for m in re.finditer(r"-+", dashes):
                heads.append(head[m.start():m.end()].strip())
    return heads


def _assert_legend_explains_every_column(out):
    tables, legend = out.split(report.LEGEND_TITLE, 1)
    heads = _table_headers(tables)
    assert heads, "no table printed"
    for h in heads:
        assert re.search(r"(^|\s|, )" + re.escape(h) + r"(,|\s)", legend), f"column {h!r} not in the legend"
    for symbol in ("n/a =", "blank =", "- = skipped", "~ =", "! ="):
        assert symbol in legend
    assert "Compare the numbers of one run" in legend and "median" in legend


def test_default_full_quick_suites():
    """The default run (about a minute): the headline row at full size, a 16-bit row, few classes, a
    K-dim input, a 4-size per-call curve with the target row, one small LM head, no KL or dask;
    --full: every workload of every table; --quick: the small smoke set."""
    from fastce.bench.suites import SUITES

    d, f, q = SUITES["default"], SUITES["full"], SUITES["quick"]
    sixteen = "1024x32000-bf16" if B.Workload("x", (1, 1), dtype="bfloat16").unavailable() is None \
        else "1024x32000-f16"
    assert [w.name for w in d.workloads] == ["4096x32000", sixteen, "262144x10", "8x21x256x256"]
    assert d.workloads[0].shape == (4096, 32000) and d.workloads[0].dtype == "float32"
    assert d.workloads[1].numel >= 2**24  # so it has a %roof
    assert [w.name for w in d.per_call] == ["call-64x10", "call-100x100", "call-1000x1000", "call-320x32000"]
    assert [w.name for w in d.linear] == ["lin-1024x256x32000"]
    assert d.kl == () and d.dask == () and not d.slow_cases
    assert d.min_time == 0.1 and d.max_time == 3.0 and d.linear_rounds == 3
    assert f.workloads == B.FULL_WORKLOADS and len(f.workloads) == 10
    assert {"4096x32000-ls0.1", "4096x32000-weight", "4096x32000-f64", "4096x32000-f16", "4096x32000-bf16",
            "1024x128256", "16384x1000"} <= {w.name for w in f.workloads}
    assert len(f.per_call) == 9 and [w.name for w in f.linear] == ["lin-4096x1024x32000"]
    assert [w.name for w in f.kl] == ["kl-4096x32000"] and [w.name for w in f.dask] == ["dask-16384x32000"]
    assert f.slow_cases and f.min_time == 0.5 and f.max_time == 30.0 and f.linear_rounds == 7
    assert q.workloads == B.QUICK_WORKLOADS and q.min_time == 0.1
    # everything else of the default run is in --full at the same size
    assert {w.name for s in d.sets for w in s} - {w.name for s in f.sets for w in s} == {sixteen, "lin-1024x256x32000"}


@pytest.mark.parametrize("flag, expect, absent", [
    ([], ["4096x32000 ", "call-320x32000", "lin-1024x256x32000"], ["kl-", "dask-", "4096x32000-f64"]),
    (["--full"], ["4096x32000-f64", "kl-4096x32000", "call-10x10", "lin-4096x1024x32000", "dask-16384x32000"], []),
    (["--quick"], ["1024x32000 ", "kl-256x32000", "lin-256x512x32000"], ["4096x32000"]),
])
def test_list_shows_the_run(flag, expect, absent, capsys):
    status, out, _ = run_bench([*flag, "--list"], capsys)
    assert status == 0
    listed = out.split("libraries:")[0]
    for name in expect:
        assert name in listed, name
    for name in absent:
        assert name not in listed, name


def test_full_and_quick_exclusive_and_w_hint(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--full", "--quick", "--list"])
    capsys.readouterr()
    status, _, err = run_bench(["-w", "kl-", "--list"], capsys)
    assert status == 0  # --list ignores -w
    status, _, err = run_bench(["-w", "4096x32000-f64", *FAST], capsys)
    assert status == 2 and "no workload matches" in err and "--full" in err


def test_legend_of_a_table_of_its_own():
    """A table formatted on its own carries its legend; with a shared Legend the legend is
    printed once, after every table, each (header, text) once."""
    wl = B.Workload("small", (1000, 10))
    cells = [_cell(wl, "fastce", 1e-5), _cell(wl, "numpy", 1e-4), _cell(wl, "torch", 2e-4)]
    alone = report.format_table(cells)
    assert report.LEGEND_TITLE in alone and "G logits/s" in _legend(alone)
    _assert_legend_explains_every_column(alone)
    legend = report.Legend()
    text = report.format_table(cells, legend=legend)
    assert report.LEGEND_TITLE not in text
    assert set(legend.headers) >= {"workload", "thr", "pass", "fastce", "numpy", "torch", "xnumpy", "xtorch"}
    lines = legend.lines()
    assert sum(1 for line in lines if "xnumpy" in line) == 1  # ratio columns share one entry


def test_per_call_json(capsys):
    status, out, _ = run_bench(["--quick", "-w", "call-64x10", "--json", *FAST], capsys)
    assert status == 0
    records = json.loads(out)
    per_call = [r for r in records if r["section"] == "per_call"]
    assert {r["library"] for r in per_call} >= {"fastce", "numpy"}
    assert all(r["workload"] == "call-64x10" and r["shape"] == [64, 10] for r in per_call)
    for r in per_call:
        assert r["pass"] == B.LOSS_GRAD and r["threads"] == B.default_threads()
        assert r["us_per_call"] > 0 and r["calls_per_sample"] >= 1
        assert r["us_per_call"] == pytest.approx(r["median_s"] * 1e6)
    numpy_rec = next(r for r in per_call if r["library"] == "numpy")
    fastce_rec = next(r for r in per_call if r["library"] == "fastce")
    assert numpy_rec["fastce_speedup"] == pytest.approx(numpy_rec["median_s"] / fastce_rec["median_s"])
    assert fastce_rec["calls_per_sample"] > 1  # a ~us call is timed in batches
    assert not [r for r in records if r["section"] in ("table", "roofline", "linear")]
    assert report.LEGEND_TITLE not in out  # records only, no legend


def test_per_call_table_text(capsys):
    status, out, _ = run_bench(["--quick", "-w", "call-64x10", "--peers", "fastce,numpy", *FAST],
                               capsys)
    assert status == 0
    assert "per-call time of loss+grad" in out and "xnumpy" in out
    assert "target call-64x10: xnumpy" in out
    _assert_legend_explains_every_column(out)
    assert "microseconds per loss+grad call" in _legend(out)


@pytest.mark.parametrize("argv", [["--no-per-call"], ["--pass", "forward"]])
def test_per_call_left_out(argv, capsys):
    status, _, err = run_bench(["--quick", "-w", "call-64x10", *argv, *FAST], capsys)
    assert status == 2 and "no workload matches" in err


def test_float16_workloads():
    assert any(w.dtype == "float16" and w.name == "4096x32000-f16" for w in B.FULL_WORKLOADS)
    assert any(w.dtype in ("float16", "bfloat16") for w in B.DEFAULT_WORKLOADS)
    assert any(w.dtype == "float16" for w in B.QUICK_WORKLOADS)
    assert B.get_peer("sklearn").unsupported(B.QUICK_WORKLOADS[-1], B.LOSS_GRAD, 1, 2) == B.NA


def test_roofline_bound():
    r = B.Roofline(2, read_gbs=16.0, copy_gbs=12.0, exp_gps={"float32": 8.0, "float64": 2.0},
                   nbytes=1)
    assert r.bound("float32", B.FORWARD) == 4.0  # read: 16 GB/s / 4 B
    assert r.bound("float16", B.FORWARD) == 8.0  # read 8 G/s = exp 8 G/s
    assert r.bound("float64", B.FORWARD) == 2.0  # read 2 G/s, f64 exp 2 G/s
    assert r.bound("float32", B.LOSS_GRAD) == 1.5  # 12 GB/s / 8 B
    assert r.bound("float16", B.LOSS_GRAD) == 3.0  # 12 / 4 = 3 < exp 8 / 2
    assert r.bound("float64", B.LOSS_GRAD) == 0.75  # 12 / 16 < exp 2 / 2


def test_roofline_measure_small():
    roofs = roofline.measure([1], nbytes=2**22, repeats=2)
    if roofs is None:
        pytest.skip("no roofline probes in this build of the extension")
    r = roofs[1]
    assert r.read_gbs > 0 and r.copy_gbs > 0 and r.exp_gps["float32"] > 0 and r.exp_gps["float64"] > 0
    assert r.record()["section"] == "roofline"


def _cell(wl, name, seconds, threads=1, pass_=B.FORWARD):
    return Cell(wl, threads, pass_, B.get_peer(name), times=[seconds])


def test_roof_column():
    roofs = {1: B.Roofline(1, 16.0, 12.0, {"float32": 8.0, "float64": 2.0}, 1)}
    big = B.Workload("big", (2**20, 16))  # 2**24 logits, bound 4 G/s forward
    small = B.Workload("small", (1000, 10))
    cells = [_cell(big, "fastce", big.numel / 2e9), _cell(big, "numpy", big.numel / 1e9),
             _cell(small, "fastce", 1e-5)]
    text = report.format_table(cells, roofs=roofs)
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["workload", "thr", "pass", "fastce", "%roof"]
    assert lines[2].split()[3:5] == ["2.00", "50%"]
    assert lines[3].split() == ["small", "1", "forward", "1.00"]  # no %roof below 2**24 logits
    assert "1T read 16.0 GB/s, read+write 12.0 GB/s, exp 8.00 G/s" in text
    rec = report.ce_record(cells[0], "table", roofs)
    assert rec["roof_fraction"] == pytest.approx(0.5) and rec["roofline_glogits_per_s"] == 4.0
    assert "roof_fraction" not in report.ce_record(cells[2], "table", roofs)
    assert "%roof" not in report.format_table(cells).splitlines()[0]  # no column without a roofline


def test_bfloat16_and_torch_tensor_rows(capsys):
    """The bfloat16 row runs fastce on ml_dtypes arrays, torch and fastce.torch on bfloat16
    tensors viewing the same memory, and the NumPy twin in float32; their losses agree, and the
    text table has the torch-tensors ratio xtorch(t)."""
    pytest.importorskip("ml_dtypes")
    pytest.importorskip("torch")
    assert any(w.dtype == "bfloat16" and w.name == "4096x32000-bf16" for w in B.FULL_WORKLOADS)
    argv = ["--quick", "-w", "256x32000-bf16", "--threads", "1", "--peers", "fastce,torch,fastce.torch,numpy",
            "--no-roofline", *FAST]
    status, out, _ = run_bench([*argv, "--json"], capsys)
    assert status == 0
    table = [r for r in json.loads(out) if r["section"] == "table"]
    assert {r["library"] for r in table} == {"fastce", "torch", "fastce.torch", "numpy"}
    assert {r["dtype"] for r in table} == {"bfloat16"}
    for pass_ in (B.FORWARD, B.LOSS_GRAD):
        losses = {r["library"]: r["loss"] for r in table if r["pass"] == pass_}
        assert all(v is not None for v in losses.values()), losses
        for lib, v in losses.items():  # bfloat16 results: a relative step of 2**-7
            assert v == pytest.approx(losses["fastce"], rel=1e-2), (lib, losses)
    status, out, _ = run_bench(argv, capsys)
    assert status == 0 and report.TORCH_RATIO in out and "!" not in out.split(report.LEGEND_TITLE)[0]
    _assert_legend_explains_every_column(out)


def test_workload_without_ml_dtypes_is_skipped(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "ml_dtypes" else real(n, *a))
    wl = next(w for w in B.QUICK_WORKLOADS if w.dtype == "bfloat16")
    assert "ml_dtypes" in wl.unavailable()
    assert next(w for w in B.QUICK_WORKLOADS if w.dtype == "float16").unavailable() is None


def test_kl_table(capsys):
    """The KL table: fastce, torch and the NumPy twin on the same two-model data, losses equal,
    %roof against two input streams."""
    argv = ["--quick", "-w", "kl-256x32000", "--threads", "1", "--peers", "fastce,torch,numpy", *FAST]
    status, out, _ = run_bench([*argv, "--json"], capsys)
    assert status == 0
    recs = json.loads(out)
    kl = [r for r in recs if r["section"] == "kl"]
    assert {r["library"] for r in kl} == {"fastce", "torch", "numpy"} and not [r for r in recs if r["section"] == "table"]
    for pass_ in (B.FORWARD, B.LOSS_GRAD):
        losses = {r["library"]: r["loss"] for r in kl if r["pass"] == pass_}
        assert losses["fastce"] > 0
        for lib, v in losses.items():
            assert v == pytest.approx(losses["fastce"], rel=1e-4), (lib, losses)
    status, out, _ = run_bench(argv, capsys)
    assert status == 0 and "KL divergence of two models" in out and "xtorch" in out
    _assert_legend_explains_every_column(out)
    assert "G logit pairs/s" in _legend(out)


def test_roofline_bound_of_two_streams():
    from fastce.bench.workloads import FULL_KL_WORKLOADS

    r = B.Roofline(1, read_gbs=16.0, copy_gbs=12.0, exp_gps={"float32": 8.0, "float64": 2.0}, nbytes=1)
    wl = FULL_KL_WORKLOADS[0]
    assert r.bound("float32", B.FORWARD, wl.roof_terms(B.FORWARD)) == 2.0  # 16 GB/s / (2 x 4 B) < exp 8 / 2
    assert r.bound("float32", B.LOSS_GRAD, wl.roof_terms(B.LOSS_GRAD)) == 1.0  # 12 GB/s / 12 B < exp 8 / 4


def test_dask_table(capsys):
    """The quick dask row: a 2-worker LocalCluster, fastce.dask against plain dask.array (the
    same loss) and one-process fastce."""
    pytest.importorskip("distributed")
    status, out, _ = run_bench(["--quick", "-w", "dask", *FAST, "--json"], capsys)
    assert status == 0
    recs = [r for r in json.loads(out) if r["section"] == "dask"]
    by_case = {r["case"]: r for r in recs}
    assert len(by_case) == 3 and all(r["median_s"] > 0 for r in recs)
    a = by_case["fastce.dask.cross_entropy"]["loss"]
    assert a == pytest.approx(by_case["plain dask.array (max, exp, sum, log, take)"]["loss"], rel=1e-5)
    status, out, _ = run_bench(["--quick", "-w", "dask", "--no-dask", *FAST], capsys)
    assert status == 2  # no dask workload left to select


def test_linear_table_quick(capsys):
    """The quick LM-head table runs (its workloads go through the same timing loop)."""
    status, out, _ = run_bench(["--quick", "-w", "lin-", "--peers", "fastce,numpy", *FAST], capsys)
    assert status == 0 and "fastce.linear_cross_entropy_with_grad" in out and "x matmul" in out
    _assert_legend_explains_every_column(out)


def test_paired_ratio_is_the_median_of_per_round_ratios():
    """ratio = min / the baseline's min; paired_ratio = median over rounds of time / the
    baseline's time in that round (a slow round for both cancels out)."""
    from types import SimpleNamespace

    from fastce.bench.timing import _ratios

    base = Cell("wl", 2, "forward", SimpleNamespace(baseline=True), times=[1.0, 2.0, 1.1, 1.0, 1.2])
    case = Cell("wl", 2, "forward", SimpleNamespace(baseline=False), times=[1.03, 2.02, 1.16, 1.04, 1.23])
    _ratios([base, case])
    assert case.ratio == pytest.approx(1.03)
    assert case.paired_ratio == pytest.approx(sorted([1.03, 1.01, 1.16 / 1.1, 1.04, 1.23 / 1.2])[2])
    assert base.paired_ratio == pytest.approx(1.0)


def _fake_proc(monkeypatch, status_name, cpuinfo, machine):
    import io

    files = {"/proc/self/status": f"Name:\t{status_name}\nUmask:\t0022\n", "/proc/cpuinfo": cpuinfo}
    monkeypatch.setattr(report, "open", lambda path, *a, **k: io.StringIO(files[path]), raising=False)
    monkeypatch.setattr(report.platform, "machine", lambda: machine)


@pytest.mark.parametrize("status_name, cpuinfo, machine, expected", [
    ("qemu-aarch64", "vendor_id\t: GenuineIntel\n", "aarch64", "qemu-aarch64"),       # qemu-user
    ("python3.11", "vendor_id\t: AuthenticAMD\n", "aarch64", "an emulator of aarch64 on an x86 host"),  # binfmt
    ("python3.11", "CPU implementer\t: 0x41\n", "aarch64", None),                      # real arm64
    ("python3.11", "vendor_id\t: GenuineIntel\n", "x86_64", None),                     # real x86
])
def test_emulator_detection(monkeypatch, status_name, cpuinfo, machine, expected):
    _fake_proc(monkeypatch, status_name, cpuinfo, machine)
    assert report.emulator() == expected


def test_emulated_runs_say_so(monkeypatch):
    """Under an emulator the header starts with a warning that the times are the emulator's."""
    _fake_proc(monkeypatch, "qemu-aarch64", "vendor_id\t: GenuineIntel\n", "aarch64")
    env = report.environment()
    assert env["emulated"] == "qemu-aarch64"
    first, second = report.format_environment(env).split("\n")
    assert first.startswith("# EMULATED") and "qemu-aarch64" in first and "not the hardware" in first
    assert second.startswith("# python=") and "emulated=qemu-aarch64" in second
    assert "EMULATED" not in report.format_environment(dict(env, emulated=False))
