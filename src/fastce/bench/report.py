"""Reporting: one fixed-width table writer (:func:`render`, columns given as :class:`Column`
data, each with the legend's text for it) for every table (cross-entropy, KL, per-call, linear),
the notes under each table (this run's roofline, what was skipped, loss mismatches, errors),
the :class:`Legend` printed after the tables (what every column present means, its unit, the
cell symbols, how to compare), the environment header and the ``--json`` records (no legend)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import textwrap
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

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
    doc: str = ""  # what it shows, in plain words (the legend's line for it)


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
# The legend: what the columns of the tables printed mean
# --------------------------------------------------------------------------

LEGEND_TITLE = "How to read these tables"
LEGEND_WIDTH = 100

#: how to compare (the first lines of the legend)
COMPARE = ("Compare the numbers of one run with each other: each is the median of repeated calls timed in "
           "this run, the libraries of a row taking turns call by call, so that other programs' load hits "
           "them alike; another run or another machine gives other numbers.")

#: the cell symbols of every table (the last lines of the legend)
SYMBOLS = (
    "Cells: n/a = the library cannot do this (jax at 1 thread: XLA fixes its thread pool when jax is "
    "imported; forward with a loss+grad-only case; sklearn with options or shapes it lacks); "
    "blank = nothing to show (a ratio whose library has no number; %roof below 2^24 logits); "
    "- = skipped, see 'skipped:' under the table (not enough memory, or a slow case that only --full "
    "runs); ~ = timed fewer times than --min-repeats (cut short by --max-time); "
    "! = the loss differs from fastce's, see 'loss mismatches:'; err = the call failed, see 'errors:'.",
)


class Legend:
    """The legend printed after the tables: one section per kind of table (its heading says what
    a row is and the unit), one entry per column (header, text); a column whose (header, text)
    an earlier section already explained is not repeated, and the columns of a section with the
    same text share one entry (the x<library> ratios)."""

    def __init__(self, timing: str = "") -> None:
        self.timing = timing  # how long this run timed a cell (a sentence), or ""
        self._sections: Dict[str, List[Tuple[List[str], str]]] = {}
        self._seen: set = set()

    def add(self, section: str, entries: Sequence[Any]) -> None:
        """Explain ``entries`` (:class:`Column` objects or (header, text) pairs) in ``section``."""
        mine = self._sections.setdefault(section, [])
        for e in entries:
            header, doc = (e.header, e.doc) if isinstance(e, Column) else e
            if not doc or (header, doc) in self._seen:
                continue
            self._seen.add((header, doc))
            same = next((m for m in mine if m[1] == doc), None)
            if same is not None:
                same[0].append(header)
            else:
                mine.append(([header], doc))

    @property
    def headers(self) -> List[str]:
        """Every column header explained."""
        return [h for entries in self._sections.values() for hs, _ in entries for h in hs]

    def lines(self, width: int = LEGEND_WIDTH) -> List[str]:
        def para(text: str, indent: str = "  ") -> List[str]:
            return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent)

        out = [LEGEND_TITLE + ":"]
        out += para(COMPARE + (" " + self.timing if self.timing else ""))
        for section, entries in self._sections.items():
            if not entries:
                continue
            out += para(section)
            names = [", ".join(hs) for hs, _ in entries]
            w = min(max(map(len, names)), 14)
            for name, (_, doc) in zip(names, entries):
                hang = " " * (4 + w + 2)
                if len(name) > w:  # a long header (or several): on a line of its own
                    out.append("    " + name)
                    out += textwrap.wrap(doc, width, initial_indent=hang, subsequent_indent=hang)
                else:
                    out += textwrap.wrap(doc, width, initial_indent=f"    {name:<{w}}  ", subsequent_indent=hang)
        for text in SYMBOLS:
            out += para(text)
        return out

    def text(self) -> str:
        return "\n".join(self.lines())


def _with_legend(out: List[str], legend: Optional[Legend], section: str, columns: Sequence[Any]) -> List[str]:
    """Add ``columns`` to ``legend``; with no legend (a table formatted on its own), the table's
    own legend after its lines."""
    own = Legend() if legend is None else legend
    own.add(section, columns)
    return out + [""] + own.lines() if legend is None else out


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


#: the ratio of fastce.torch to torch (the same torch tensors, with autograd)
TORCH_RATIO = "xtorch(fastce.torch)"


#: the legend's texts of the cross-entropy table's columns (the peers' come from their ``note``)
CE_DOCS: Dict[str, str] = {
    "workload": ("the logits: N x C (rows x classes; 8x21x256x256: an N x C x H x W input, classes on axis 1), "
                 "float32 unless the name ends in -f16, -bf16 or -f64; -ls0.1: label_smoothing=0.1; "
                 "-weight: class weights."),
    "thr": "threads each library may use (--threads: 1, and 'all' = every core this process may run on, {cores} here).",
    "pass": "forward = the mean loss alone; loss+grad = the loss and its gradient with respect to the logits.",
    "%roof": ("fastce's bytes per second as a fraction of the most this machine moves, measured in this run "
              "(the 'roofline' line under the table): the memory read speed for forward (each logit read "
              "once), the read+write speed for loss+grad (each logit read, its gradient written), or the exp "
              "rate where that is lower. 100% = as fast as memory allows. Rows of >= 2^24 logits only."),
    "%roof(out=)": "the same for fastce(out=).",
    "ratio": ("fastce's G logits/s / the G logits/s of the library named after the x: how many times "
              "faster fastce is (> 1: fastce faster, < 1: slower)."),
    TORCH_RATIO: ("fastce.torch's G logits/s / torch's: how many times faster the same torch code runs "
                  "with fastce.torch.cross_entropy in place of F.cross_entropy."),
}
CE_SECTION = ("Cross-entropy table: a row per workload, thread count and pass; the library columns give "
              "G logits/s = N x C logits / the median seconds of a call / 1e9 (higher is better).")


def ce_columns(peers: Sequence[str], roofs: Roofs = None,
               docs: Optional[Dict[str, str]] = None) -> List[Column]:
    """workload, thr, pass; G logits/s of each peer (! = loss mismatch), with fastce's
    fraction of the roofline (%roof) beside it where ``roofs``; x<peer> speedups. ``docs``:
    the legend's texts by header (default :data:`CE_DOCS` and the peers' notes)."""
    docs = _ce_docs(peers) if docs is None else docs
    cols = [Column("workload", lambda r: r.workload.name, left=True, doc=docs.get("workload", "")),
            Column("thr", lambda r: str(r.threads), left=True, doc=docs.get("thr", "")),
            Column("pass", lambda r: r.pass_, left=True, doc=docs.get("pass", ""))]
    for p in peers:
        cols.append(Column(p, lambda r, p=p: _fmt_gps(r.cells.get(p)) + ("!" if _mismatch(r, p) else ""),
                           doc=docs.get(p, "")))
        if p in ("fastce", "fastce(out=)") and roofs:  # (out=: the gradient into a reused buffer)
            h = "%roof" if p == "fastce" else "%roof(out=)"
            cols.append(Column(h, lambda r, p=p: _percent(roof_fraction(r.cells.get(p), roofs)),
                               doc=docs.get(h, "")))
    return cols + _ratio_columns(peers, docs)


def _ce_docs(names: Sequence[str], peers: Sequence[Any] = PEERS) -> Dict[str, str]:
    docs = {k: v.replace("{cores}", str(all_threads())) for k, v in CE_DOCS.items()}
    docs.update({p.name: p.note for p in peers if p.name in names and p.note})
    return docs


def _ratio_columns(names: Sequence[str], docs: Optional[Dict[str, str]] = None) -> List[Column]:
    """x<peer> (fastce against each non-fastce peer) and xtorch(fastce.torch) (fastce.torch
    against torch: the same torch tensors, with autograd)."""
    docs = CE_DOCS if docs is None else docs
    cols = []
    if "fastce" in names:
        cols += [Column(f"x{p}", lambda r, p=p: _speedup(r, p), doc=docs.get("ratio", ""))
                 for p in names if not p.startswith("fastce")]
    if "fastce.torch" in names and "torch" in names:
        cols.append(Column(TORCH_RATIO, lambda r: _fmt_ratio(speedup(r, "torch", of="fastce.torch")),
                           doc=docs.get(TORCH_RATIO, "")))
    return cols


def _percent(f: Optional[float]) -> str:
    return "" if f is None else f"{100 * f:.0f}%"


def roofline_legend(roofs: Roofs) -> List[str]:
    """The roofline's numbers measured in this run ({}: why there are none)."""
    if roofs is None:
        return []
    if not roofs:
        return ["%roof: roofline not measured (probes missing from this build of the extension, "
                "or too little free memory)."]
    nums = "; ".join(f"{t}T read {r.read_gbs:.1f} GB/s, read+write {r.copy_gbs:.1f} GB/s, exp "
                     f"{r.exp_gps['float32']:.2f} G/s (f64 {r.exp_gps['float64']:.2f})"
                     for t, r in sorted(roofs.items()))
    r0 = next(iter(roofs.values()))
    return [f"roofline (measured in this run, {r0.nbytes / 2**20:.0f} MiB probes, exp x threads): {nums}."]


KL_TITLE = "KL divergence of two models' logits, KL(softmax(ref) || softmax(logits)), G logit pairs/s:"
KL_SECTION = ("KL table: as the cross-entropy table, for fastce.kl_div of two models' logits; the library "
              "columns give G logit pairs/s (N x C pairs / the median seconds of a call / 1e9).")
KL_DOCS: Dict[str, str] = {
    "workload": ("kl-NxC: the model's float32 (N, C) logits and a reference model's (the same plus "
                 "N(0, 0.5^2) noise)."),
    "%roof": ("as in the cross-entropy table, against two input streams: forward min(read GB/s / "
              "(2 x bytes of a logit), exp G/s / 2), loss+grad min(read+write GB/s / (3 x bytes of a logit), "
              "exp G/s / 4)."),
}


def format_table(cells: Sequence[Cell], title: Optional[str] = None, notes: bool = True,
                 roofs: Roofs = None, peers: Sequence[Any] = PEERS, extra_notes: Sequence[str] = (),
                 legend: Optional[Legend] = None, section: str = CE_SECTION,
                 docs: Optional[Dict[str, str]] = None) -> str:
    """Render ``cells`` of the cross-entropy table (or of another G logits/s table whose cases
    are ``peers``, e.g. the KL table, explained as ``section`` with ``docs`` over the
    cross-entropy table's) as a fixed-width text table, with notes under it (this run's
    roofline with ``roofs``, ``extra_notes``, what was skipped, mismatches, errors). The
    columns' texts go to ``legend``; without one, the table's own legend follows its notes."""
    peers = [p for p in peers if any(c.name == p.name for c in cells)]
    names = [p.name for p in peers]
    lines = rows(cells)
    grouped = len({r.workload.name for r in lines}) < len(lines)
    out = [title] if title else []
    cols = ce_columns(names, roofs, {**_ce_docs(names, peers), **(docs or {})})
    out += render(cols, lines, (lambda a, b: a.workload.name != b.workload.name) if grouped else None)
    if not notes:
        return "\n".join(out)
    out.append("")
    if "fastce" in names:
        out += roofline_legend(roofs)
    out += list(extra_notes)
    skipped = sorted({f"{r.label} {c.name}: {c.skipped}" for r in lines for c in r.cells.values()
                      if c.skipped and c.skipped != NA and not c.reused})
    if skipped:
        out.append("skipped: " + "; ".join(skipped))
    mismatches = [m for r in lines for m in map(lambda p: _mismatch(r, p), names) if m]
    if mismatches:
        out.append("loss mismatches:")
        out.extend("  " + m for m in mismatches)
    out += _errors([(r.label, r.cells[p]) for r in lines for p in names if p in r.cells])
    if out[-1] == "":
        out.pop()
    return "\n".join(_with_legend(out, legend, section, cols))


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


PER_CALL_SECTION = ("Per-call table: a row per input size; the library columns give microseconds per "
                    "loss+grad call (the median; lower is better).")
PER_CALL_DOCS: Dict[str, str] = {
    "N x C": "the float32 logits' shape: N rows x C classes (default options: mean, no weights).",
    "N*C": "the number of logits.",
    "thr": "threads: fastce's default thread count; torch.set_num_threads the same.",
    "fastce": "fastce.cross_entropy_with_grad(x, t) as users call it: default options and threads.",
    "numpy": "the same loss and gradient written in NumPy (max, exp, sum, log; softmax - one-hot).",
    "torch": "F.cross_entropy forward + loss.backward() on CPU tensors.",
    "fastce.torch": "fastce.torch.cross_entropy forward + loss.backward() on the same tensors.",
    "ratio": ("the time of the library named after the x / fastce's time: how many times faster fastce is "
              "(> 1: fastce faster)."),
    TORCH_RATIO: "torch's time / fastce.torch's time.",
}


def per_call_columns(names: Sequence[str]) -> List[Column]:
    """shape, N*C; median us per call of each case (! = loss mismatch); x<peer> speedups."""
    d = PER_CALL_DOCS
    cols = [Column("N x C", lambda r: "x".join(map(str, r.workload.shape)), left=True, doc=d["N x C"]),
            Column("N*C", lambda r: f"{r.workload.numel:,}", doc=d["N*C"]),
            Column("thr", lambda r: str(r.threads), doc=d["thr"])]
    cols += [Column(p, lambda r, p=p: _fmt_us(r.cells.get(p)) + ("!" if _mismatch(r, p) else ""),
                    doc=d.get(p, "")) for p in names]
    return cols + _ratio_columns(names, d)


def _target_line(lines: Sequence[Row]) -> Optional[str]:
    """How the PER_CALL_TARGET row compares with the issue's goal (>= 5x numpy, >= 10x torch)."""
    row = next((r for r in lines if tuple(r.workload.shape) == PER_CALL_TARGET), None)
    if row is None or "fastce" not in row.cells:
        return None
    parts = []
    # (column, ratio, goal): fastce >= 5x numpy and >= 10x torch; fastce.torch's forward+backward
    # at most 1.5x torch's own time, i.e. xtorch(fastce.torch) >= 1 / 1.5.
    for label, got, goal in (("xnumpy", speedup(row, "numpy"), 5.0), ("xtorch", speedup(row, "torch"), 10.0),
                             (TORCH_RATIO, speedup(row, "torch", of="fastce.torch"), 1 / 1.5)):
        if got is not None:
            parts.append(f"{label} {got:.2f} (goal >= {goal:.3g}: {'met' if got >= goal else 'MISSED'})")
    return f"target {row.workload.name}: " + ", ".join(parts) if parts else None


def format_per_call_table(cells: Sequence[Cell], legend: Optional[Legend] = None) -> str:
    """The per-call curve: median microseconds per loss+grad call against N*C (its columns'
    texts go to ``legend``; without one, the table's own legend follows it)."""
    names = list(dict.fromkeys(c.name for c in cells))
    lines = rows(cells)
    thr = lines[0].threads if lines else 0
    out = [f"per-call time of loss+grad, float32, default options ({thr} threads), us per call (median):"]
    cols = per_call_columns(names)
    out += render(cols, lines)
    out.append("")
    target = _target_line(lines)
    if target:
        out.append(target)
    out.append("Calls under 1 ms are timed in batches of back-to-back calls lasting ~1 ms (time per call = "
               "batch time / calls); cases take turns, 1 ms apart.")
    skipped = sorted({f"{r.workload.name} {c.name}: {c.skipped}" for r in lines for c in r.cells.values()
                      if c.skipped and c.skipped != NA and not c.reused})
    if skipped:
        out.append("skipped: " + "; ".join(skipped))
    out += _errors([(r.workload.name, c) for r in lines for c in r.cells.values()])
    return "\n".join(_with_legend(out, legend, PER_CALL_SECTION, cols))


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


LINEAR_SECTION = ("Linear + cross-entropy (LM head) table: a block per head, the loss of "
                  "cross_entropy(x @ W.T, t) without (fastce) or with the full logits, in seconds per call "
                  "(lower is better).")
LINEAR_DOCS: Dict[str, str] = {
    "pass": "forward = the loss; loss+grad = the loss and the gradients of x and W.",
    "case": ("what is timed: NumPy's matmul(s) alone (the baseline: the work any LM head does anyway), "
             "fastce.linear_cross_entropy(_with_grad) (default chunk_size and threads), NumPy's matmul then "
             "fastce.cross_entropy, torch's F.linear_cross_entropy (options=: chunked)."),
    "min s": "the fastest call, in seconds.",
    "median s": "the median call, in seconds.",
    "x matmul": "min s / the baseline's min s (1.00 = no cost beyond the matmuls).",
    "x matmul (paired)": ("the median over rounds of this case's time / the baseline's time in the same "
                          "round (steadier than x matmul on a busy machine)."),
    "extra MB (traced)": ("memory allocated during one call beyond its inputs and returned gradients, as "
                          "tracemalloc sees it (NumPy's allocations; - for torch, which it does not see)."),
    "extra MB (RSS)": "the same from the process's resident-memory high-water mark (every library).",
}


def linear_columns(ref_loss: Optional[float]) -> List[Column]:
    """pass, case (! = loss differs from ``ref_loss``), min and median s, x matmul, extra MB."""

    def case(c: Cell) -> str:
        if (c.best is not None and ref_loss is not None and c.loss is not None
                and not math.isclose(c.loss, ref_loss, rel_tol=1e-3)):
            return c.name + " !"
        return c.name

    d = LINEAR_DOCS
    return [
        Column("pass", lambda c: c.pass_, left=True, doc=d["pass"]),
        Column("case", case, left=True, doc=d["case"]),
        Column("min s", lambda c: f"{c.best:.3f}" if c.best is not None else "err" if c.error else "-",
               doc=d["min s"]),
        Column("median s", _timed(lambda c: f"{c.seconds:.3f}"), doc=d["median s"]),
        Column("x matmul", _timed(lambda c: f"{c.ratio:.2f}" if c.ratio else ""), doc=d["x matmul"]),
        Column("x matmul (paired)", _timed(lambda c: f"{c.paired_ratio:.3f}" if c.paired_ratio else ""),
               doc=d["x matmul (paired)"]),
        Column("extra MB (traced)", _timed(lambda c: _mb(c.peak_traced)), doc=d["extra MB (traced)"]),
        Column("extra MB (RSS)", _timed(lambda c: _mb(c.peak_rss)), doc=d["extra MB (RSS)"]),
    ]


LINEAR_NOTES = (
    "Cases take turns, >= {rounds} rounds {pause} s apart (BLAS/OpenMP workers spin after a call); "
    "x matmul's baseline: one matmul(x, W.T, out=) for forward, the three matmuls of the gradients "
    "(logits, G @ W, G.T @ x; all out=) for loss+grad; extra MB (RSS) from 5 > /proc/self/clear_refs. "
    "Full logits: {full}.",
    "fastce.linear_cross_entropy*: the forward of >= 1024 rows runs one pipeline per BLAS thread, each a "
    "one-thread matmul of its vocabulary columns and their CE step; loss+grad: 1 thread for the CE step "
    "between BLAS calls; torch options= is torch.nn.LinearCrossEntropyOptions() (chunked); "
    "! = loss differs from fastce's by > 1e-3.",
)


def format_linear_table(cells: Sequence[Cell], legend: Optional[Legend] = None, rounds: int = LINEAR_ROUNDS,
                        pause: float = 0.25) -> str:
    """One block per workload: min and median seconds, x baseline, peak extra memory; the notes
    say ``rounds`` rounds ``pause`` s apart (its columns' texts go to ``legend``; without one, the
    table's own legend follows it)."""
    out: List[str] = []
    cols: List[Column] = []
    for wl in _workloads(cells):
        wc = [c for c in cells if c.workload == wl]
        out.append(f"linear + cross-entropy (LM head) {wl.name}: {wl.describe()}, {wc[0].threads} threads")
        ref = next((c.loss for c in wc if c.case.library == "fastce" and c.loss is not None), None)
        cols = linear_columns(ref)
        out += render(cols, wc)
        skipped = [f"{c.name}: {c.skipped}" for c in wc if c.best is None and c.skipped]
        if skipped:
            out.append("skipped: " + "; ".join(skipped))
        out.append("")
    full = ", ".join(f"{w.name} {w.logits_nbytes / 1e6:.0f} MB" for w in _workloads(cells))
    out += [line.format(full=full, rounds=rounds, pause=f"{pause:g}") for line in LINEAR_NOTES]
    out += _errors([(c.workload.name, c) for c in cells])
    return "\n".join(_with_legend(out, legend, LINEAR_SECTION, cols or linear_columns(None)))


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


def emulator() -> Optional[str]:
    """The user-mode emulator this process runs under (e.g. ``"qemu-aarch64"``), or None.

    qemu-user runs the guest inside its own host process: /proc/self/status names that process
    (``Name: qemu-aarch64``), and /proc/cpuinfo, which it passes through, describes the host's
    CPU (an x86 vendor under an aarch64 guest), which also catches a binfmt-started emulator
    whose process takes the guest program's name. Timings there are the emulator's: qemu runs
    vector float instructions lane by lane through softfloat helpers, so they say nothing of
    the hardware, not even which kernel is faster."""
    try:
        with open("/proc/self/status") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("Name:")), "")
        if name.startswith("qemu-"):
            return name
        with open("/proc/cpuinfo") as f:
            cpuinfo = f.read(65536)
    except OSError:
        return None
    machine = platform.machine().lower()
    x86_host = "GenuineIntel" in cpuinfo or "AuthenticAMD" in cpuinfo
    if machine in ("aarch64", "arm64") and x86_host:
        return f"an emulator of {machine} on an x86 host"
    return None


#: printed above the tables when `emulator()` finds one
EMULATED_WARNING = ("# EMULATED: this process runs under {0}. These times are the emulator's, "
                    "not the hardware's (qemu runs vector float instructions lane by lane), and "
                    "compare nothing, not even one kernel with another; measure on the machine itself.")


def environment() -> Dict[str, Any]:
    env: Dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "emulated": emulator() or False,
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
    """The header line of the tables (and, under an emulator, its warning line first)."""
    line = "# " + ", ".join(f"{k}={'not installed' if v is None else v}" for k, v in env.items())
    return (EMULATED_WARNING.format(env["emulated"]) + "\n" + line) if env.get("emulated") else line
