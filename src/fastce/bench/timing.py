"""The timing loop, one for every table.

:func:`run` measures every (workload, threads, pass) row of a :class:`BenchConfig` over a list of
cases (:class:`~fastce.bench.peers.Case`): each case of the row is prepared and called once to
warm up (JIT compilation, first touch, caches; the loss it returns is kept to cross-check the
cases), then the row's cases are timed round-robin, ``cfg.pause`` s apart (so that load from
other processes, and other runtimes' spinning worker threads, hit them alike), until each has
``>= cfg.min_repeats`` calls and ``>= cfg.min_time`` s, or ``cfg.max_time`` s (cut short). A
cell reports the median and the min of its times, and ``ratio``, its min time over the min time
of the row's baseline case (where the row has one).

With ``cfg.batch_min_s`` (the per-call table), a case whose call is shorter than that is timed
in batches of back-to-back calls lasting about that long, so that the timer's overhead does not
count; its times are then per call (batch time / calls), and ``Cell.batch`` says how many.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .memory import peak_extra_memory, too_big
from .peers import NA, PEER_NAMES, Case, get_peer, linear_cases
from .workloads import DEFAULT_WORKLOADS, LOSS_GRAD, PASSES, DataCache, all_threads, parse_threads


@dataclasses.dataclass
class Cell:
    """One case on one (workload, threads, pass) row, and what was measured."""

    workload: Any
    threads: int
    pass_: str
    case: Case
    times: List[float] = dataclasses.field(default_factory=list)
    loss: Optional[float] = None
    skipped: Optional[str] = None  # reason; NA = not supported by the library
    error: Optional[str] = None
    reused: bool = False  # single-threaded case: measurement shared across rows
    cut_short: bool = False  # stopped by max_time before min_repeats
    ratio: Optional[float] = None  # min time / min time of the row's baseline case
    paired_ratio: Optional[float] = None  # median over rounds of time / the baseline's time that round
    peak_traced: Optional[int] = None  # extra memory of one call: tracemalloc peak
    peak_rss: Optional[int] = None  # ... and RSS high-water mark (cfg.measure_memory)
    batch: int = 1  # calls per timed sample (cfg.batch_min_s); times are per call

    @property
    def name(self) -> str:
        return self.case.name

    @property
    def seconds(self) -> Optional[float]:
        """Median time of one call."""
        return statistics.median(self.times) if self.times else None

    @property
    def best(self) -> Optional[float]:
        """Min time of one call."""
        return min(self.times) if self.times else None

    @property
    def repeats(self) -> int:
        return len(self.times)

    @property
    def gps(self) -> Optional[float]:
        """Throughput in G logits/s (median), for workloads that count their logits."""
        numel = getattr(self.workload, "numel", None)
        if numel is None or not self.seconds:
            return None
        return numel / self.seconds / 1e9


#: what a reused (single-threaded) cell copies from the cell that was measured
_MEASURED = ("times", "loss", "skipped", "error", "cut_short", "peak_traced", "peak_rss", "batch")


@dataclasses.dataclass
class BenchConfig:
    workloads: Sequence[Any] = DEFAULT_WORKLOADS
    threads: Sequence[int] = dataclasses.field(default_factory=lambda: parse_threads("1,all"))
    passes: Sequence[str] = PASSES
    peers: Optional[Sequence[str]] = PEER_NAMES
    min_time: float = 0.5
    min_repeats: int = 3
    max_time: float = 30.0
    max_repeats: int = 10_000
    memory_fraction: float = 0.7
    interleave: bool = True  # time a row's cases round-robin
    pause: float = 0.005  # seconds between interleaved calls
    verbose: bool = True
    quick: bool = False  # leave out the slow cases (they run with --full)
    measure_memory: bool = False  # one untimed call per case for the peak extra memory
    batch_min_s: float = 0.0  # time calls shorter than this in batches lasting about this long


def log(cfg: BenchConfig, msg: str) -> None:
    if cfg.verbose:
        print(msg, file=sys.stderr, flush=True)


def loss_value(result: Any) -> Optional[float]:
    """The loss of a case's result (the first item of a tuple); None for ``()``."""
    if isinstance(result, tuple):
        if not result:
            return None
        result = result[0]
    if hasattr(result, "item"):  # a 0-d array or tensor (a bfloat16 tensor has no NumPy view)
        return float(result.item())
    return float(np.asarray(result))


def available_peers(names: Sequence[str]) -> List[Case]:
    """The peers named, less those whose library is not installed."""
    return [p for p in map(get_peer, names) if p.unavailable() is None]


def run(cfg: BenchConfig, cases: Optional[Sequence[Case]] = None) -> List[Cell]:
    """Measure every (workload, threads, pass) row of ``cfg`` over ``cases`` (default: the
    installed peers of ``cfg.peers``); a case has a cell in the rows of its ``passes``.

    The cases of a row are timed round-robin unless ``cfg.interleave`` is false, so that load
    from other processes on a shared machine hits all of them alike and their ratios stay
    meaningful.
    """
    if cases is None:
        cases = available_peers(cfg.peers or ())
    max_threads = all_threads()
    cache = DataCache()
    cells: List[Cell] = []
    shared: Dict[Tuple[str, str, str], Cell] = {}  # single-threaded cases
    for wl in cfg.workloads:
        if wl.unavailable():
            log(cfg, f"[bench] {wl.name}: skipped, {wl.unavailable()}")
            continue
        t_gen = time.perf_counter()
        data = cache.get(wl)
        log(cfg, f"[bench] {wl.name}: {wl.describe()} (data {time.perf_counter() - t_gen:.1f} s)")
        for n in cfg.threads:
            for pass_ in cfg.passes:
                row = [Cell(wl, n, pass_, c) for c in cases if pass_ in c.passes]
                cells += row
                todo = []
                for cell in row:
                    case = cell.case
                    cell.skipped = (("slow, runs with --full" if cfg.quick and case.slow else None)
                                    or case.unavailable()
                                    or case.unsupported(wl, pass_, n, max_threads))
                    if cell.skipped:
                        continue
                    key = (wl.name, pass_, case.name)
                    if case.single_threaded and key in shared:
                        for f in _MEASURED:
                            setattr(cell, f, getattr(shared[key], f))
                        cell.reused = True
                        continue
                    if case.single_threaded:
                        shared[key] = cell
                    todo.append(cell)
                _measure_row(cfg, todo, wl, data, pass_, n)
                _ratios(row)
                _log_row(cfg, row)
        gc.collect()
    cache.clear()
    return cells


#: rounds of the linear table (the full run)
LINEAR_ROUNDS = 7


def run_linear(cfg: BenchConfig, workloads: Sequence[Any], threads: int, pause: float = 0.25,
               quick: bool = False, rounds: Optional[int] = None) -> List[Cell]:
    """The linear + cross-entropy table: every case of ``linear_cases(cfg.passes, cfg.peers)``
    at one thread count, always round-robin, ``pause`` s apart (OpenBLAS's and libgomp's idle workers
    spin for a while after a call -- docs/performance/notes_bench.md -- so a shorter pause would let
    one library's spinning threads slow the next library's call), with each case's peak extra
    memory, >= ``rounds`` rounds (default 7, ``cfg.min_repeats`` with ``quick``): these calls
    vary from round to round on a shared host (docs/performance/notes_bench.md), so the table
    gives both the ratio of min times and the median of the per-round ratios (`_ratios`).
    ``quick`` leaves out the slow cases (torch's chunked options)."""
    if rounds is None:
        rounds = cfg.min_repeats if quick else LINEAR_ROUNDS
    lcfg = dataclasses.replace(cfg, workloads=workloads, threads=[threads], pause=pause,
                               interleave=True, quick=quick, measure_memory=True,
                               min_repeats=max(cfg.min_repeats, rounds))
    return run(lcfg, linear_cases(cfg.passes, cfg.peers))


def run_per_call(cfg: BenchConfig, workloads: Sequence[Any], cases: Sequence[Case], threads: int,
                 quick: bool = False, min_time: Optional[float] = None,
                 samples: Optional[int] = None) -> List[Cell]:
    """The per-call table: loss+grad of ``cases`` on small to large ``workloads`` at one thread
    count, round-robin 1 ms apart, calls under 1 ms timed in batches of about 1 ms, >=
    ``samples`` samples (default 10; 5 with ``quick``) and >= ``cfg.min_time`` s each, at most
    ``min_time`` s (default 0.2 s; 0.03 s with ``quick``)."""
    if min_time is None:
        min_time = 0.03 if quick else 0.2
    if samples is None:
        samples = 5 if quick else 10
    pcfg = dataclasses.replace(cfg, workloads=workloads, threads=[threads], passes=(LOSS_GRAD,),
                               pause=0.001, batch_min_s=0.001, interleave=True, quick=quick,
                               min_time=min(cfg.min_time, min_time),
                               min_repeats=max(cfg.min_repeats, samples))
    return run(pcfg, cases)


class _Job:
    def __init__(self, cell: Cell, fn: Callable[[], Any]) -> None:
        self.cell, self.fn = cell, fn
        self.times: List[float] = []
        self.spent = 0.0


def _batched(cfg: BenchConfig, cell: Cell, fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn``, or (``cfg.batch_min_s``) ``cell.batch`` back-to-back calls of a short ``fn``
    lasting about ``cfg.batch_min_s`` (from the fastest of 3 calls)."""
    if cfg.batch_min_s <= 0:
        return fn
    perf = time.perf_counter
    one = cfg.batch_min_s
    for _ in range(3):
        t0 = perf()
        fn()
        one = min(one, perf() - t0)
    if one >= cfg.batch_min_s:
        return fn
    k = cell.batch = max(2, math.ceil(cfg.batch_min_s / max(one, 1e-8)))

    def batch():
        for _ in range(k - 1):
            fn()
        return fn()

    return batch


def _measure_row(cfg: BenchConfig, cells: Sequence[Cell], wl, data, pass_: str, n: int) -> None:
    jobs: List[_Job] = []
    with contextlib.ExitStack() as stack:
        # prepare + warm up every case of the row
        for cell in cells:
            case = cell.case
            cell.skipped = too_big(case.memory_needed(wl, pass_), cfg.memory_fraction)
            if cell.skipped:
                continue
            try:
                stack.enter_context(case.threads(n))
                fn = case.prepare(wl, data, pass_, n)
                result = fn()  # warm-up (JIT compilation, first-touch, caches)
                cell.loss = loss_value(result)
                del result
                if cfg.measure_memory:
                    cell.peak_traced, cell.peak_rss = peak_extra_memory(
                        fn, case.returns_results, case.traced)
                jobs.append(_Job(cell, _batched(cfg, cell, fn)))
            except MemoryError:
                cell.skipped = "memory (MemoryError)"
            except Exception as exc:  # keep going; report it
                cell.error = f"{type(exc).__name__}: {exc}"
        _time_jobs(cfg, jobs, round_robin=cfg.interleave and len(jobs) > 1)
        jobs = []
    gc.collect()


def _time_jobs(cfg: BenchConfig, jobs: Sequence[_Job], round_robin: bool) -> None:
    """Timed repeats: one call of each job in turn (``round_robin``), or each job's calls back
    to back, until every job has enough."""
    perf = time.perf_counter
    active = list(jobs)
    while active:
        for job in list(active):
            while True:
                if round_robin:
                    time.sleep(cfg.pause)  # let other runtimes' spinning workers go idle
                try:
                    t0 = perf()
                    job.fn()
                    dt = perf() - t0
                except MemoryError:
                    job.cell.skipped = "memory (MemoryError)"
                    active.remove(job)
                    break
                except Exception as exc:
                    job.cell.error = f"{type(exc).__name__}: {exc}"
                    active.remove(job)
                    break
                job.times.append(dt / job.cell.batch)
                job.spent += dt
                k = len(job.times)
                if (k >= cfg.min_repeats and job.spent >= cfg.min_time) or job.spent >= cfg.max_time \
                        or k >= cfg.max_repeats:
                    job.cell.times = job.times
                    job.cell.cut_short = k < cfg.min_repeats
                    job.fn = None  # release the case's buffers
                    active.remove(job)
                    break
                if round_robin:
                    break


def _ratios(row: Sequence[Cell]) -> None:
    """ratio = min time / the row baseline's min time (the least noisy statistic here), and
    paired_ratio = the median over rounds of each round's time / the baseline's time in that
    round (round-robin rows: the k-th time of every case is from round k, so load that drifts
    over seconds on a shared host hits both terms of a round's ratio alike; a median of
    per-round ratios of calls of a second or so is steadier than a ratio of two mins)."""
    base = next((c for c in row if c.case.baseline and c.best), None)
    if base is None:
        return
    for c in row:
        if c.best is not None:
            c.ratio = c.best / base.best
            if c.times and base.times:
                c.paired_ratio = statistics.median(t / b for t, b in zip(c.times, base.times))


def _log_row(cfg: BenchConfig, row: Sequence[Cell]) -> None:
    """One progress line per measured cell: time per call, G logits/s, how many timings."""
    width = max((len(c.name) for c in row), default=0)
    for c in row:
        if c.reused or c.skipped == NA:
            continue
        if c.seconds is None:
            msg = c.skipped or c.error
        else:
            msg = (f"{c.seconds * 1e3:9.2f} ms" if c.seconds >= 1e-3 else f"{c.seconds * 1e6:9.2f} us") + " a call"
            if c.gps is not None:
                msg += f" {c.gps:7.2f} G logits/s"
            if c.ratio is not None:
                msg += f"  {c.ratio:.2f}x the baseline's time (fastest calls)"
            if c.batch == 1:
                msg += f"  (median of {c.repeats} call{'s' if c.repeats != 1 else ''})"
            else:
                msg += f"  (median of {c.repeats} timings of {c.batch} back-to-back calls each)"
            if c.cut_short:
                msg += ", cut short by --max-time"
        log(cfg, f"   {c.threads}T {c.pass_:9s} {c.name:{width}s} {msg}")
