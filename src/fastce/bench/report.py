"""Reporting: one fixed-width table writer (:func:`render`, columns given as :class:`Column`
data) for every table (cross-entropy, per-call, linear), their legends, the environment header
and the ``--json`` records."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .peers import NA, PEERS
from .roofline import Roofline
from .timing import LINEAR_ROUNDS, Cell
from .workloads import PER_CALL_TARGET, ROOFLINE_MIN_NUMEL, all_threads

#: {threads: Roofline} of this run (see :mod:`.roofline`); None: not measured
Roofs = Optional[Dict[int, Roofline]]


# --------------------------------------------------------------------------
# The table writer
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Column:
    """One column: its header and the text it shows for one line of the table."""

    header: str
    text: Callable[[Any], str]
    left: bool = False  # labels are left-aligned, numbers right-aligned


def render(columns: Sequence[Column], lines: Sequence[Any],
           blank_between: Optional[Callable[[Any, Any], bool]] = None) -> List[str]:
    """Header, dashes, then one text line per item of ``lines`` (an empty line between two
    items where ``blank_between(previous, item)``)."""
    head = [c.header for c in columns]
    table = [[c.text(line) for c in columns] for line in lines]
    widths = [max([len(h)] + [len(row[i]) for row in table]) for i, h in enumerate(head)]

    def fmt(row):
        return "  ".join(v.ljust(w) if c.left else v.rjust(w)
                         for c, v, w in zip(columns, row, widths)).rstrip()

    out = [fmt(head), "  ".join("-" * w for w in widths)]
    for i, row in enumerate(table):
        if blank_between is not None and i and blank_between(lines[i - 1], lines[i]):
            out.append("")
        out.append(fmt(row))
    return out


def _workloads(cells: Sequence[Cell]) -> List[Any]:
    return list(dict.fromkeys(c.workload for c in cells))


# --------------------------------------------------------------------------
# Cross-entropy table: one line per (workload, threads, pass), one column per peer
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    workload: Any
    threads: int
    pass_: str
    cells: Dict[str, Cell]

    @property
    def label(self) -> str:
        return f"{self.workload.name} {self.threads}T {self.pass_}"


def rows(cells: Sequence[Cell]) -> List[Row]:
    """The cells grouped by (workload, threads, pass), in first-seen order."""
    out: Dict[Any, Row] = {}
    for c in cells:
        key = (c.workload.name, c.threads, c.pass_)
        if key not in out:
            out[key] = Row(c.workload, c.threads, c.pass_, {})
        out[key].cells[c.name] = c
    return list(out.values())


def _loss_tol(dtype: str) -> float:
    # float16: torch's and fastce's losses are float16 (a relative step of 2**-10)
    # bfloat16: a relative step of 2**-7
    return {"float64": 1e-8, "float16": 2e-3, "bfloat16": 1e-2}.get(dtype, 2e-4)


def _mismatch(row: Row, peer: str) -> Optional[str]:
    """A line if ``peer``'s loss differs from fastce's on ``row``, else None."""
    c, ref = row.cells.get(peer), row.cells.get("fastce")
    if c is None or ref is None or c is ref or c.loss is None or ref.loss is None:
        return None
    if math.isclose(c.loss, ref.loss, rel_tol=_loss_tol(row.workload.dtype), abs_tol=1e-6):
        return None
    return f"{row.label}: {peer} loss {c.loss:.9g} vs fastce {ref.loss:.9g}"


def _fmt_gps(cell: Optional[Cell]) -> str:
    if cell is None:
        return ""
    if cell.gps is not None:
        s = f"{cell.gps:.2f}" if cell.gps < 100 else f"{cell.gps:.1f}"
        return "~" + s if cell.cut_short else s
    if cell.skipped == NA:
        return NA
    return "err" if cell.error else "-"


def speedup(row: Row, peer: str, of: str = "fastce") -> Optional[float]:
    """``of``'s throughput over ``peer``'s on ``row`` (medians), or None."""
    ref, c = row.cells.get(of), row.cells.get(peer)
    if ref is not None and ref.gps and c is not None and c.gps:
        return ref.gps / c.gps
    return None


def _fmt_ratio(x: Optional[float]) -> str:
    return "" if x is None else f"{x:.2f}"


def _speedup(row: Row, peer: str) -> str:
    return _fmt_ratio(speedup(row, peer))


def roof_fraction(cell: Optional[Cell], roofs: Roofs) -> Optional[float]:
    """``cell``'s G logits/s over the roofline of its dtype, pass and thread count, for
    workloads of >= ROOFLINE_MIN_NUMEL logits; else None."""
    if cell is None or not cell.gps or not roofs or cell.threads not in roofs:
        return None
    wl = cell.workload
    if getattr(wl, "numel", 0) < ROOFLINE_MIN_NUMEL or not hasattr(wl, "dtype"):
        return None
    return cell.gps / roofs[cell.threads].bound(wl.dtype, cell.pass_, wl.roof_terms(cell.pass_))


def ce_columns(peers: Sequence[str], roofs: Roofs = None) -> List[Column]:
    """workload, thr, pass; G logits/s of each peer (! = loss mismatch), with fastce's
    fraction of the roofline (%roof) beside it where ``roofs``; x<peer> speedups."""
    cols = [Column("workload", lambda r: r.workload.name, left=True),
            Column("thr", lambda r: str(r.threads), left=True),
            Column("pass", lambda r: r.pass_, left=True)]
    for p in peers:
        cols.append(Column(p, lambda r, p=p: _fmt_gps(r.cells.get(p)) + ("!" if _mismatch(r, p) else "")))
        if p in ("fastce", "fastce(out=)") and roofs:  # (out=: the gradient into a reused buffer)
            cols.append(Column("%roof" if p == "fastce" else "%roof(out=)",
                               lambda r, p=p: _percent(roof_fraction(r.cells.get(p), roofs))))
    return cols + _ratio_columns(peers)


def _ratio_columns(names: Sequence[str]) -> List[Column]:
    """x<peer> (fastce against each non-fastce peer) and xtorch(t) (fastce.torch against torch:
    the same torch tensors, with autograd)."""
    cols = []
    if "fastce" in names:
        cols += [Column(f"x{p}", lambda r, p=p: _speedup(r, p)) for p in names if not p.startswith("fastce")]
    if "fastce.torch" in names and "torch" in names:
        cols.append(Column("xtorch(t)", lambda r: _fmt_ratio(speedup(r, "torch", of="fastce.torch"))))
    return cols


CE_LEGEND = (
    "Throughput in G logits/s = numel(input) / median time / 1e9 (higher is better); "
    "x<peer> = fastce throughput / peer throughput (>1: fastce faster).",
    "Each cell: 1 warm-up call, then >= min-repeats calls and >= min-time s, median reported; the libraries "
    "of a row are timed round-robin (not with --sequential).",
    "n/a = not supported by that library/cell; - = skipped (memory/time); "
    "~ = cut short by --max-time (fewer repeats); ! = loss differs from fastce's.",
)


def _percent(f: Optional[float]) -> str:
    return "" if f is None else f"{100 * f:.0f}%"


def roofline_legend(roofs: Roofs) -> List[str]:
    """The roofline's numbers and the definition of %roof ({}: why there is none)."""
    if roofs is None:
        return []
    if not roofs:
        return ["%roof: roofline not measured (probes missing from this build of the extension, "
                "or too little free memory)."]
    nums = "; ".join(f"{t}T read {r.read_gbs:.1f} GB/s, read+write {r.copy_gbs:.1f} GB/s, exp "
                     f"{r.exp_gps['float32']:.2f} G/s (f64 {r.exp_gps['float64']:.2f})"
                     for t, r in sorted(roofs.items()))
    r0 = next(iter(roofs.values()))
    return [f"roofline (measured in this run, {r0.nbytes / 2**20:.0f} MiB probes, exp x threads): {nums}.",
            f"%roof = fastce G/s / roofline of the row (numel >= 2^{ROOFLINE_MIN_NUMEL.bit_length() - 1}; "
            "%roof(out=): fastce(out=)'s): "
            "forward min(read GB/s / itemsize, exp G/s), loss+grad min(read+write GB/s / (2 itemsize), "
            "exp G/s / 2)."]


KL_TITLE = "KL divergence of two models' logits, KL(softmax(ref) || softmax(logits)), G logit pairs/s:"
KL_LEGEND = ("KL rows: throughput counts logit pairs (numel of one input); %roof against two input streams: "
             "forward min(read GB/s / (2 itemsize), exp G/s / 2), loss+grad min(read+write GB/s / (3 itemsize), "
             "exp G/s / 4).",)


def format_table(cells: Sequence[Cell], title: Optional[str] = None, notes: bool = True,
                 roofs: Roofs = None, peers: Sequence[Any] = PEERS, legend: Sequence[str] = ()) -> str:
    """Render ``cells`` of the cross-entropy table (or of another G logits/s table whose cases
    are ``peers``, e.g. the KL table) as a fixed-width text table with footnotes (and a %roof
    column and legend with ``roofs``; ``legend``: lines added to the footnotes)."""
    peers = [p for p in peers if any(c.name == p.name for c in cells)]
    names = [p.name for p in peers]
    lines = rows(cells)
    grouped = len({r.workload.name for r in lines}) < len(lines)
    out = [title] if title else []
    out += render(ce_columns(names, roofs), lines,
                  (lambda a, b: a.workload.name != b.workload.name) if grouped else None)
    if not notes:
        return "\n".join(out)
    out.append("")
    out += CE_LEGEND
    if "fastce" in names:
        out += roofline_legend(roofs)
    out += list(legend)
    out += [p.note for p in peers if p.note]
    skipped = sorted({f"{r.label} {c.name}: {c.skipped}" for r in lines for c in r.cells.values()
                      if c.skipped and c.skipped != NA and not c.reused})
    if skipped:
        out.append("skipped: " + "; ".join(skipped))
    mismatches = [m for r in lines for m in map(lambda p: _mismatch(r, p), names) if m]
    if mismatches:
        out.append("loss mismatches:")
        out.extend("  " + m for m in mismatches)
    out += _errors([(r.label, r.cells[p]) for r in lines for p in names if p in r.cells])
    return "\n".join(out)


# --------------------------------------------------------------------------
# Per-call table: one line per (N, C), one column per case, microseconds per call
# --------------------------------------------------------------------------


def _fmt_us(cell: Optional[Cell]) -> str:
    if cell is None:
        return ""
    if cell.seconds is None:
        return NA if cell.skipped == NA else "err" if cell.error else "-"
    us = cell.seconds * 1e6
    s = f"{us:.2f}" if us < 10 else f"{us:.1f}" if us < 1000 else f"{us:.0f}"
    return "~" + s if cell.cut_short else s


def per_call_columns(names: Sequence[str]) -> List[Column]:
    """shape, N*C; median us per call of each case (! = loss mismatch); x<peer> speedups."""
    cols = [Column("N x C", lambda r: "x".join(map(str, r.workload.shape)), left=True),
            Column("N*C", lambda r: f"{r.workload.numel:,}"),
            Column("thr", lambda r: str(r.threads))]
    cols += [Column(p, lambda r, p=p: _fmt_us(r.cells.get(p)) + ("!" if _mismatch(r, p) else ""))
             for p in names]
    return cols + _ratio_columns(names)


def _target_line(lines: Sequence[Row]) -> Optional[str]:
    """How the PER_CALL_TARGET row compares with the issue's goal (>= 5x numpy, >= 10x torch)."""
    row = next((r for r in lines if tuple(r.workload.shape) == PER_CALL_TARGET), None)
    if row is None or "fastce" not in row.cells:
        return None
    parts = []
    # (column, ratio, goal): fastce >= 5x numpy and >= 10x torch; fastce.torch's forward+backward
    # at most 1.5x torch's own time, i.e. xtorch(t) >= 1 / 1.5.
    for label, got, goal in (("xnumpy", speedup(row, "numpy"), 5.0), ("xtorch", speedup(row, "torch"), 10.0),
                             ("xtorch(t)", speedup(row, "torch", of="fastce.torch"), 1 / 1.5)):
        if got is not None:
            parts.append(f"{label} {got:.2f} (goal >= {goal:.3g}: {'met' if got >= goal else 'MISSED'})")
    return f"target {row.workload.name}: " + ", ".join(parts) if parts else None


def format_per_call_table(cells: Sequence[Cell]) -> str:
    """The per-call curve: median microseconds per loss+grad call against N*C."""
    names = list(dict.fromkeys(c.name for c in cells))
    lines = rows(cells)
    thr = lines[0].threads if lines else 0
    out = [f"per-call time of loss+grad, float32, default options ({thr} threads), us per call (median):"]
    out += render(per_call_columns(names), lines)
    out.append("")
    target = _target_line(lines)
    if target:
        out.append(target)
    out += [
        "fastce = fastce.cross_entropy_with_grad(x, t) with default options and threads; numpy = the NumPy "
        "twin (max, exp, sum, log; grad = e/s - onehot); torch = F.cross_entropy forward + backward, "
        "torch.set_num_threads(thr); fastce.torch = fastce.torch.cross_entropy forward + backward on the same "
        "tensors. x<peer> = peer median / fastce median (>1: fastce faster); xtorch(t) = torch median / "
        "fastce.torch median.",
        "Calls under 1 ms are timed in batches of back-to-back calls lasting ~1 ms (time per call = "
        "batch / calls); cases round-robin 1 ms apart; ~ = cut short by --max-time; ! = loss differs.",
    ]
    skipped = sorted({f"{r.workload.name} {c.name}: {c.skipped}" for r in lines for c in r.cells.values()
                      if c.skipped and c.skipped != NA and not c.reused})
    if skipped:
        out.append("skipped: " + "; ".join(skipped))
    out += _errors([(r.workload.name, c) for r in lines for c in r.cells.values()])
    return "\n".join(out)


def _errors(labelled: Sequence[Any]) -> List[str]:
    """``errors:`` and one line per (label, cell) whose cell failed; nothing if none did."""
    lines = [f"  {label} {c.name}: {c.error}" for label, c in labelled if c.error]
    return ["errors:"] + lines if lines else []


# --------------------------------------------------------------------------
# Linear + cross-entropy table: one block per workload, one line per case
# --------------------------------------------------------------------------


def _mb(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


def _timed(fmt: Callable[[Cell], str]) -> Callable[[Cell], str]:
    """A column that is empty for a cell with no times."""
    return lambda c: fmt(c) if c.best is not None else ""


def linear_columns(ref_loss: Optional[float]) -> List[Column]:
    """pass, case (! = loss differs from ``ref_loss``), min and median s, x matmul, extra MB."""

    def case(c: Cell) -> str:
        if (c.best is not None and ref_loss is not None and c.loss is not None
                and not math.isclose(c.loss, ref_loss, rel_tol=1e-3)):
            return c.name + " !"
        return c.name

    return [
        Column("pass", lambda c: c.pass_, left=True),
        Column("case", case, left=True),
        Column("min s", lambda c: f"{c.best:.3f}" if c.best is not None else "err" if c.error else "-"),
        Column("median s", _timed(lambda c: f"{c.seconds:.3f}")),
        Column("x matmul", _timed(lambda c: f"{c.ratio:.2f}" if c.ratio else "")),
        Column("x matmul (paired)", _timed(lambda c: f"{c.paired_ratio:.3f}" if c.paired_ratio else "")),
        Column("extra MB (traced)", _timed(lambda c: _mb(c.peak_traced))),
        Column("extra MB (RSS)", _timed(lambda c: _mb(c.peak_rss))),
    ]


LINEAR_LEGEND = (
    "x matmul = min time / min time of the pass's NumPy baseline: one matmul(x, W.T, out=) for "
    "forward, the three matmuls of the gradients (logits, G @ W, G.T @ x; all out=) for loss+grad; "
    "x matmul (paired) = the median over rounds of each round's time / the baseline's time in that round. "
    f"Cases timed round-robin, >= {LINEAR_ROUNDS} rounds 0.25 s apart (3 rounds 0.1 s apart with --quick; BLAS/OpenMP workers "
    "spin after a call).",
    "extra MB = peak memory during one call beyond its inputs and returned results (the grads): "
    "traced = tracemalloc (NumPy allocations; not torch's), RSS = high-water mark (5 > /proc/self/clear_refs). "
    "Full logits: {full}.",
    "fastce.linear_cross_entropy*: default chunk_size (a logits buffer of up to 128 MiB) "
    "and num_threads (the forward of >= 1024 rows: one pipeline per BLAS thread, each a one-thread "
    "matmul of its vocabulary columns and their CE step; loss+grad: 1 thread for the CE step "
    "between BLAS calls); torch: options=None is linear + cross_entropy, options= is "
    "torch.nn.LinearCrossEntropyOptions() (chunked); ! = loss differs from fastce's by > 1e-3.",
)


def format_linear_table(cells: Sequence[Cell]) -> str:
    """One block per workload: min and median seconds, x baseline, peak extra memory."""
    out: List[str] = []
    for wl in _workloads(cells):
        wc = [c for c in cells if c.workload == wl]
        out.append(f"linear + cross-entropy (LM head) {wl.name}: {wl.describe()}, {wc[0].threads} threads")
        ref = next((c.loss for c in wc if c.case.library == "fastce" and c.loss is not None), None)
        out += render(linear_columns(ref), wc)
        skipped = [f"{c.name}: {c.skipped}" for c in wc if c.best is None and c.skipped]
        if skipped:
            out.append("skipped: " + "; ".join(skipped))
        out.append("")
    full = ", ".join(f"{w.name} {w.logits_nbytes / 1e6:.0f} MB" for w in _workloads(cells))
    out += [line.replace("{full}", full) for line in LINEAR_LEGEND]
    out += _errors([(c.workload.name, c) for c in cells])
    return "\n".join(out)


# --------------------------------------------------------------------------
# JSON records
# --------------------------------------------------------------------------


def _record(cell: Cell, section: str, fields: Dict[str, Any]) -> Dict[str, Any]:
    return {"section": section, "workload": cell.workload.name, **cell.workload.json_fields(),
            "threads": cell.threads, "pass": cell.pass_, **fields}


def ce_record(cell: Cell, section: str = "table", roofs: Roofs = None) -> Dict[str, Any]:
    """A cross-entropy cell (section "table", "sweep" or "per_call") as a JSON-ready dict;
    with ``roofs``, the roofline bound of its row and its fraction of it (large rows)."""
    rec = _record(cell, section, {
        "library": cell.name, "median_s": cell.seconds, "glogits_per_s": cell.gps,
        "min_s": cell.best, "repeats": cell.repeats, "loss": cell.loss, "skipped": cell.skipped,
        "error": cell.error, "reused_single_thread_measurement": cell.reused,
        "cut_short": cell.cut_short,
    })
    frac = roof_fraction(cell, roofs)
    if frac is not None:
        wl = cell.workload
        rec["roofline_glogits_per_s"] = roofs[cell.threads].bound(wl.dtype, cell.pass_, wl.roof_terms(cell.pass_))
        rec["roof_fraction"] = frac
    return rec


def per_call_records(cells: Sequence[Cell]) -> List[Dict[str, Any]]:
    """The per-call cells as JSON-ready dicts: section "per_call", us per call (median), calls
    per timed sample, and for the peers ``fastce_speedup`` (peer median / fastce median)."""
    out = []
    for row in rows(cells):
        for name, cell in row.cells.items():
            rec = ce_record(cell, "per_call")
            rec["us_per_call"] = None if cell.seconds is None else cell.seconds * 1e6
            rec["calls_per_sample"] = cell.batch
            if name != "fastce":
                rec["fastce_speedup"] = speedup(row, name)
            out.append(rec)
    return out


def linear_record(cell: Cell) -> Dict[str, Any]:
    """A linear + cross-entropy cell as a JSON-ready dict."""
    c = cell.case
    return _record(cell, "linear", {
        "case": c.name, "library": c.library, "median_s": cell.seconds, "min_s": cell.best,
        "repeats": cell.repeats, "ratio_to_matmul": cell.ratio,
        "paired_ratio_to_matmul": cell.paired_ratio, "baseline": c.baseline,
        "loss": cell.loss, "peak_extra_tracemalloc_bytes": cell.peak_traced,
        "peak_extra_rss_bytes": cell.peak_rss, "full_logits_bytes": cell.workload.logits_nbytes,
        "skipped": cell.skipped, "error": cell.error,
    })


def json_text(records: Sequence[Dict[str, Any]]) -> str:
    """Valid JSON, one record per line."""
    return "[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]"


# --------------------------------------------------------------------------
# Environment header
# --------------------------------------------------------------------------


def environment() -> Dict[str, Any]:
    env: Dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cores_available": all_threads(),
        "numpy": np.__version__,
    }
    if hasattr(os, "getloadavg"):  # other processes' load: OpenMP timings suffer most from it
        env["load_1min"] = round(os.getloadavg()[0], 2)
    for p in PEERS:
        if p.name in ("fastce(out=)", "numpy"):
            continue
        env[p.name] = p.version() if p.unavailable() is None else None
    try:
        import fastce

        cfg = fastce.get_config()
        env["fastce_isa"] = cfg.get("isa")
        env["fastce_openmp"] = cfg.get("openmp")
        env["fastce_num_threads"] = cfg.get("num_threads")
    except Exception:
        pass
    return env


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def format_environment(env: Dict[str, Any]) -> str:
    return "# " + ", ".join(f"{k}={'not installed' if v is None else v}" for k, v in env.items())
