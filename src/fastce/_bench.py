"""Benchmark harness for fastce (used by ``fastce bench`` and by ``bench/``).

Compares fastce's softmax cross-entropy (forward loss, and fused loss+gradient)
with the same computation done by other libraries, on the same data:

* ``fastce``        -- ``fastce.cross_entropy`` / ``fastce.cross_entropy_with_grad``
* ``fastce(out=)``  -- ``cross_entropy_with_grad(..., out=buf)`` with ``buf``
                       preallocated once and reused (loss+grad only)
* ``torch``         -- ``F.cross_entropy`` (forward under ``torch.no_grad()``;
                       loss+grad = forward + autograd backward)
* ``numpy``         -- a vectorized NumPy implementation (max, exp, sum, log)
* ``jax``           -- jitted ``optax.softmax_cross_entropy_with_integer_labels
                       (...).mean()`` and ``jax.value_and_grad`` of it
* ``sklearn``       -- ``HalfMultinomialLoss().loss_gradient`` (loss+grad,
                       2-D unweighted workloads only)

A second, smaller table times the fused linear + cross-entropy of an LM head
(``fastce.linear_cross_entropy`` and ``..._with_grad``, workloads ``lin-*``) in
seconds per call against its yardstick, the NumPy matmul(s) it must do anyway,
and against torch's ``F.linear_cross_entropy``; with peak extra memory
(``run_linear``, ``format_linear_table``; ``--no-linear`` skips it).

Every peer is optional and detected at run time: this module imports only
NumPy and the standard library at import time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

FORWARD = "forward"
LOSS_GRAD = "loss+grad"
PASSES = (FORWARD, LOSS_GRAD)

NA = "n/a"  # the library cannot do this cell (feature missing)


# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Workload:
    """One benchmark problem: logits of ``shape`` (class axis 1), int64 targets."""

    name: str
    shape: Tuple[int, ...]
    dtype: str = "float32"
    label_smoothing: float = 0.0
    weighted: bool = False
    seed: int = 0

    @property
    def num_classes(self) -> int:
        return self.shape[1] if len(self.shape) >= 2 else self.shape[0]

    @property
    def target_shape(self) -> Tuple[int, ...]:
        return (self.shape[0],) + tuple(self.shape[2:])

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.numel * np.dtype(self.dtype).itemsize

    @property
    def is_2d(self) -> bool:
        return len(self.shape) == 2

    @property
    def data_key(self) -> Tuple[Any, ...]:
        # Variants that differ only in loss options share the same arrays.
        return (self.shape, self.dtype, self.seed)

    def describe(self) -> str:
        extra = []
        if self.label_smoothing:
            extra.append(f"label_smoothing={self.label_smoothing}")
        if self.weighted:
            extra.append("class weights")
        if len(self.shape) > 2:
            extra.append("class axis 1")
        return f"{'x'.join(map(str, self.shape))} {self.dtype}" + (
            f" ({', '.join(extra)})" if extra else ""
        )


@dataclasses.dataclass
class WorkloadData:
    input: np.ndarray
    target: np.ndarray
    weight: Optional[np.ndarray]


def make_data(wl: Workload) -> WorkloadData:
    """Random logits (normal * 3), random int64 targets, fixed seed."""
    rng = np.random.default_rng(wl.seed)
    dt = np.dtype(wl.dtype)
    if dt in (np.float32, np.float64):
        x = rng.standard_normal(wl.shape, dtype=dt)
    else:
        x = rng.standard_normal(wl.shape, dtype=np.float32)
    x *= 3
    x = np.ascontiguousarray(x, dtype=dt)
    t = rng.integers(0, wl.num_classes, size=wl.target_shape, dtype=np.int64)
    w = None
    if wl.weighted:
        w = rng.uniform(0.5, 1.5, size=wl.num_classes).astype(dt)
    return WorkloadData(x, t, w)


def with_options(wl: Workload, data: WorkloadData) -> WorkloadData:
    """The shared arrays of ``data`` plus weights if ``wl`` needs them."""
    if wl.weighted and data.weight is None:
        rng = np.random.default_rng(wl.seed + 1)
        w = rng.uniform(0.5, 1.5, size=wl.num_classes).astype(wl.dtype)
        return WorkloadData(data.input, data.target, w)
    if not wl.weighted and data.weight is not None:
        return WorkloadData(data.input, data.target, None)
    return data


class DataCache:
    """Generate each workload's arrays once; keep only the most recent set."""

    def __init__(self) -> None:
        self._key: Optional[Tuple[Any, ...]] = None
        self._data: Optional[WorkloadData] = None

    def get(self, wl: Workload) -> WorkloadData:
        if self._key != wl.data_key:
            self._data = None
            gc.collect()
            self._data = make_data(dataclasses.replace(wl, weighted=False))
            self._key = wl.data_key
        assert self._data is not None
        return with_options(wl, self._data)

    def clear(self) -> None:
        self._key = self._data = None
        gc.collect()


DEFAULT_WORKLOADS: Tuple[Workload, ...] = (
    Workload("4096x32000", (4096, 32000)),
    Workload("4096x32000-ls0.1", (4096, 32000), label_smoothing=0.1),
    Workload("4096x32000-weight", (4096, 32000), weighted=True),
    Workload("4096x32000-f64", (4096, 32000), dtype="float64"),
    Workload("1024x128256", (1024, 128256)),
    Workload("16384x1000", (16384, 1000)),
    Workload("262144x10", (262144, 10)),
    Workload("8x21x256x256", (8, 21, 256, 256)),
)

QUICK_WORKLOADS: Tuple[Workload, ...] = (
    Workload("1024x32000", (1024, 32000)),
    Workload("8192x1000", (8192, 1000)),
    Workload("131072x10", (131072, 10)),
    Workload("2x21x256x256", (2, 21, 256, 256)),
)

# Throughput vs number of classes (forward, all threads), N*C ~ 2**25.
SWEEP_CLASSES: Tuple[int, ...] = (10, 100, 1000, 10_000, 32_000, 128_000)
SWEEP_NUMEL = 2**27 // 4


def sweep_workloads(classes: Sequence[int] = SWEEP_CLASSES, numel: int = SWEEP_NUMEL) -> List[Workload]:
    out = []
    for c in classes:
        n = max(1, int(round(numel / c)))
        out.append(Workload(f"{n}x{c}", (n, c)))
    return out


def select_workloads(workloads: Sequence[Workload], patterns: Optional[Sequence[str]]) -> List[Workload]:
    """Filter by exact name, or by substring when no exact name matches."""
    if not patterns:
        return list(workloads)
    chosen: List[Workload] = []
    for p in patterns:
        exact = [w for w in workloads if w.name == p]
        hits = exact or [w for w in workloads if p in w.name]
        if not hits:
            raise ValueError(
                f"no workload matches {p!r}; known: {', '.join(w.name for w in workloads)}"
            )
        chosen.extend(w for w in hits if w not in chosen)
    # keep the canonical order (consecutive workloads share data)
    return [w for w in workloads if w in chosen]


# --------------------------------------------------------------------------
# Threads, memory
# --------------------------------------------------------------------------


def all_threads() -> int:
    """Number of cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def parse_threads(spec: str) -> List[int]:
    """'1,all' -> [1, ncores]; duplicates removed, order kept."""
    out: List[int] = []
    for part in str(spec).split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part in ("all", "max"):
            n = all_threads()
        else:
            try:
                n = int(part)
            except ValueError:
                raise ValueError(f"bad thread count {part!r} (use integers or 'all')") from None
            if n < 1:
                raise ValueError(f"thread count must be >= 1, got {n}")
        if n not in out:
            out.append(n)
    if not out:
        raise ValueError("no thread counts given")
    return out


def available_memory() -> Optional[int]:
    """Bytes of memory available to new allocations (Linux), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# --------------------------------------------------------------------------
# NumPy reference implementation (also a peer)
# --------------------------------------------------------------------------


def _bcast_classes(v: np.ndarray, ndim: int) -> np.ndarray:
    """(C,) -> shape broadcasting along the class axis 1 of an ndim array."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def numpy_cross_entropy(x, target, weight=None, label_smoothing=0.0, with_grad=False):
    """Vectorized softmax cross-entropy, torch semantics, mean reduction.

    Works on (N, C, d1..dk) with the class axis 1 and stays in ``x.dtype``.
    Returns the loss (0-d array) or ``(loss, grad)``.
    """
    dt = x.dtype
    C = x.shape[1]
    eps = float(label_smoothing)
    idx = np.expand_dims(target, 1)

    m = x.max(axis=1, keepdims=True)
    e = np.subtract(x, m)
    np.exp(e, out=e)
    s = e.sum(axis=1, keepdims=True)
    lse = np.log(s)
    lse += m  # (N, 1, d...)
    zt = np.take_along_axis(x, idx, axis=1)
    nll = lse - zt  # (N, 1, d...)

    if weight is None:
        denom = dt.type(nll.size)
        if eps:
            smooth = lse - x.mean(axis=1, keepdims=True, dtype=dt)
            per = (1 - eps) * nll + eps * smooth
        else:
            per = nll
        loss = per.sum(dtype=dt) / denom
    else:
        wt = weight[target]
        wt = np.expand_dims(wt, 1)
        denom = wt.sum(dtype=dt)
        per = (1 - eps) * wt * nll
        if eps:
            W = weight.sum(dtype=dt)
            wz = np.tensordot(x, weight, axes=([1], [0])) if x.ndim == 2 else (
                x * _bcast_classes(weight, x.ndim)
            ).sum(axis=1)
            wz = np.expand_dims(wz, 1) if wz.ndim == per.ndim - 1 else wz
            per = per + (eps / C) * (W * lse - wz)
        loss = per.sum(dtype=dt) / denom
    loss = np.asarray(loss, dtype=dt)
    if not with_grad:
        return loss

    g = e
    g /= s  # softmax
    if weight is None:
        np.put_along_axis(g, idx, np.take_along_axis(g, idx, axis=1) - dt.type(1 - eps), axis=1)
        if eps:
            g -= dt.type(eps / C)
        g *= dt.type(1) / denom
    else:
        coef = (1 - eps) * wt
        if eps:
            coef = coef + (eps / C) * W
        g *= coef
        np.put_along_axis(
            g, idx, np.take_along_axis(g, idx, axis=1) - dt.type(1 - eps) * wt, axis=1
        )
        if eps:
            g -= (eps / C) * _bcast_classes(weight, x.ndim)
        g *= dt.type(1) / denom
    return loss, g


# --------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------


class Peer:
    """A library that can compute the benchmark's cross-entropy."""

    name: str = ""
    requires: Tuple[str, ...] = ()
    #: measured once per (workload, pass) and shown in every threads row
    single_threaded: bool = False
    #: extra memory needed, in multiples of the input's bytes (forward, loss+grad)
    mem_factor: Tuple[float, float] = (1.0, 2.0)

    def unavailable(self) -> Optional[str]:
        """None if importable, else a reason."""
        for mod in self.requires:
            if importlib.util.find_spec(mod) is None:
                return f"{mod} not installed"
        return None

    def version(self) -> str:
        try:
            mod = importlib.import_module(self.requires[0]) if self.requires else np
            return str(getattr(mod, "__version__", "?"))
        except Exception as exc:  # pragma: no cover - broken installs
            return f"? ({exc})"

    def unsupported(self, wl: Workload, pass_: str, threads: int, max_threads: int) -> Optional[str]:
        """None if this peer can run the cell, else a short reason."""
        return None

    def threads(self, n: int):
        """Context manager setting this library's thread count."""
        return contextlib.nullcontext()

    def prepare(self, wl: Workload, data: WorkloadData, pass_: str, threads: int) -> Callable[[], Any]:
        """Return a zero-argument callable doing one full computation.

        It returns the loss (forward) or ``(loss, grad)`` (loss+grad), fully
        computed (no lazy/async results left).
        """
        raise NotImplementedError

    def memory_needed(self, wl: Workload, pass_: str) -> int:
        f = self.mem_factor[0 if pass_ == FORWARD else 1]
        return int(wl.nbytes * f)


class FastcePeer(Peer):
    name = "fastce"
    requires = ("fastce",)
    mem_factor = (0.1, 1.1)

    def prepare(self, wl, data, pass_, threads):
        import fastce

        x, t, w, ls = data.input, data.target, data.weight, wl.label_smoothing
        if pass_ == FORWARD:
            f = fastce.cross_entropy
            return lambda: f(x, t, weight=w, label_smoothing=ls, num_threads=threads)
        f = fastce.cross_entropy_with_grad
        return lambda: f(x, t, weight=w, label_smoothing=ls, num_threads=threads)


class FastceOutPeer(Peer):
    name = "fastce(out=)"
    requires = ("fastce",)
    mem_factor = (0.0, 1.1)

    def unsupported(self, wl, pass_, threads, max_threads):
        if pass_ == FORWARD:
            return NA
        return None

    def prepare(self, wl, data, pass_, threads):
        import fastce

        x, t, w, ls = data.input, data.target, data.weight, wl.label_smoothing
        out = np.empty_like(x)
        f = fastce.cross_entropy_with_grad
        return lambda: f(x, t, weight=w, label_smoothing=ls, out=out, num_threads=threads)


class TorchPeer(Peer):
    name = "torch"
    requires = ("torch",)
    mem_factor = (1.1, 3.1)

    @contextlib.contextmanager
    def threads(self, n):
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(old)

    def prepare(self, wl, data, pass_, threads):
        import torch
        import torch.nn.functional as F

        xt = torch.from_numpy(data.input)
        tt = torch.from_numpy(data.target)
        wt = None if data.weight is None else torch.from_numpy(data.weight)
        ls = wl.label_smoothing
        if pass_ == FORWARD:

            def fwd():
                with torch.no_grad():
                    return F.cross_entropy(xt, tt, weight=wt, label_smoothing=ls)

            return fwd
        xg = xt.detach().requires_grad_(True)

        def loss_grad():
            xg.grad = None
            loss = F.cross_entropy(xg, tt, weight=wt, label_smoothing=ls)
            loss.backward()
            return loss.detach(), xg.grad

        return loss_grad


class NumpyPeer(Peer):
    name = "numpy"
    requires = ()
    single_threaded = True
    mem_factor = (1.2, 1.2)

    def version(self):
        return np.__version__

    def prepare(self, wl, data, pass_, threads):
        x, t, w, ls = data.input, data.target, data.weight, wl.label_smoothing
        g = pass_ == LOSS_GRAD
        return lambda: numpy_cross_entropy(x, t, w, ls, with_grad=g)


class JaxPeer(Peer):
    name = "jax"
    requires = ("jax", "optax")
    mem_factor = (2.1, 4.1)
    _ready = False

    def version(self):
        try:
            import jax
            import optax

            return f"{jax.__version__} (optax {optax.__version__})"
        except Exception as exc:  # pragma: no cover
            return f"? ({exc})"

    def unsupported(self, wl, pass_, threads, max_threads):
        if threads != max_threads:
            return NA  # XLA's CPU thread pool is fixed at import time
        return None

    @classmethod
    def _setup(cls):
        if not cls._ready:
            import jax

            # float64 workloads must stay float64 (JAX truncates to 32 bits otherwise)
            jax.config.update("jax_enable_x64", True)
            cls._ready = True

    def prepare(self, wl, data, pass_, threads):
        self._setup()
        import jax
        import jax.numpy as jnp
        import optax

        ls = float(wl.label_smoothing)
        C = wl.num_classes
        moveaxis = data.input.ndim > 2

        def loss_fn(x, t, w):
            if moveaxis:  # optax wants the class axis last
                x = jnp.moveaxis(x, 1, -1)
            ce = optax.softmax_cross_entropy_with_integer_labels(x, t)
            if ls:
                smooth_w = jnp.ones((C,), x.dtype) if w is None else w
                smooth = (
                    smooth_w.sum() * jax.nn.logsumexp(x, axis=-1) - x @ smooth_w
                ) / C
            if w is None:
                if not ls:
                    return ce.mean()
                return ((1 - ls) * ce + ls * smooth).mean()
            wt = w[t]
            per = (1 - ls) * wt * ce
            if ls:
                per = per + ls * smooth
            return per.sum() / wt.sum()

        x = jnp.asarray(data.input)
        t = jnp.asarray(data.target)
        w = None if data.weight is None else jnp.asarray(data.weight)
        if pass_ == FORWARD:
            f = jax.jit(loss_fn)
        else:
            f = jax.jit(jax.value_and_grad(loss_fn))
        return lambda: jax.block_until_ready(f(x, t, w))


class SklearnPeer(Peer):
    name = "sklearn"
    requires = ("sklearn",)
    mem_factor = (0.0, 1.1)

    def unsupported(self, wl, pass_, threads, max_threads):
        if pass_ == FORWARD or not wl.is_2d or wl.weighted or wl.label_smoothing:
            return NA
        return None

    def prepare(self, wl, data, pass_, threads):
        from sklearn._loss.loss import HalfMultinomialLoss

        x = data.input
        y = data.target.astype(x.dtype)  # sklearn takes float labels
        lossobj = HalfMultinomialLoss(n_classes=wl.num_classes)

        def loss_grad():
            loss, grad = lossobj.loss_gradient(y_true=y, raw_prediction=x, n_threads=threads)
            return loss.mean(), grad  # grad is per-sample (not divided by N)

        return loss_grad


PEERS: Tuple[Peer, ...] = (
    FastcePeer(),
    FastceOutPeer(),
    TorchPeer(),
    NumpyPeer(),
    JaxPeer(),
    SklearnPeer(),
)
PEER_NAMES = tuple(p.name for p in PEERS)


def get_peer(name: str) -> Peer:
    for p in PEERS:
        if p.name == name:
            return p
    raise KeyError(f"unknown peer {name!r}; known: {', '.join(PEER_NAMES)}")


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------


def _loss_value(result: Any) -> float:
    if isinstance(result, tuple):
        result = result[0]
    return float(np.asarray(result))


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Cell:
    workload: Workload
    threads: int
    pass_: str
    peer: str
    seconds: Optional[float] = None  # median
    best_seconds: Optional[float] = None  # min (JSON only)
    repeats: int = 0
    loss: Optional[float] = None
    skipped: Optional[str] = None  # reason; NA = not supported by the library
    reused: bool = False  # single-threaded peer: measurement shared across rows
    cut_short: bool = False  # stopped by max_time before min_repeats
    error: Optional[str] = None

    @property
    def gps(self) -> Optional[float]:
        if self.seconds is None or self.seconds <= 0:
            return None
        return self.workload.numel / self.seconds / 1e9

    def to_dict(self, section: str = "table") -> Dict[str, Any]:
        wl = self.workload
        return {
            "section": section,
            "workload": wl.name,
            "shape": list(wl.shape),
            "dtype": wl.dtype,
            "num_classes": wl.num_classes,
            "label_smoothing": wl.label_smoothing,
            "weighted": wl.weighted,
            "numel": wl.numel,
            "threads": self.threads,
            "pass": self.pass_,
            "library": self.peer,
            "median_s": self.seconds,
            "glogits_per_s": self.gps,
            "min_s": self.best_seconds,
            "repeats": self.repeats,
            "loss": self.loss,
            "skipped": self.skipped,
            "error": self.error,
            "reused_single_thread_measurement": self.reused,
            "cut_short": self.cut_short,
        }


@dataclasses.dataclass
class BenchConfig:
    workloads: Sequence[Workload] = DEFAULT_WORKLOADS
    threads: Sequence[int] = dataclasses.field(default_factory=lambda: parse_threads("1,all"))
    passes: Sequence[str] = PASSES
    peers: Sequence[str] = PEER_NAMES
    min_time: float = 0.5
    min_repeats: int = 3
    max_time: float = 30.0
    max_repeats: int = 10_000
    memory_fraction: float = 0.7
    interleave: bool = True  # time a row's peers round-robin
    pause: float = 0.005  # seconds between interleaved calls
    verbose: bool = True


def _log(cfg: BenchConfig, msg: str) -> None:
    if cfg.verbose:
        print(msg, file=sys.stderr, flush=True)


def run(cfg: BenchConfig) -> List[Cell]:
    """Measure every (workload, threads, pass, peer) cell of ``cfg``.

    The peers of one (workload, threads, pass) row are timed round-robin
    (one call each in turn, ``cfg.pause`` s apart) unless ``cfg.interleave``
    is false, so that load from other processes on a shared machine hits all
    of them alike and the fastce/peer ratios stay meaningful.
    """
    peers = [get_peer(n) for n in cfg.peers]
    missing = {p.name: p.unavailable() for p in peers}
    peers = [p for p in peers if missing[p.name] is None]
    max_threads = all_threads()
    cache = DataCache()
    cells: List[Cell] = []
    shared: Dict[Tuple[str, str, str], Cell] = {}  # single-threaded peers
    for wl in cfg.workloads:
        t_gen = time.perf_counter()
        data = cache.get(wl)
        _log(cfg, f"[bench] {wl.name}: {wl.describe()} (data {time.perf_counter() - t_gen:.1f} s)")
        for n in cfg.threads:
            for pass_ in cfg.passes:
                jobs: List[Tuple[Peer, Cell]] = []
                for peer in peers:
                    cell = Cell(wl, n, pass_, peer.name)
                    cells.append(cell)
                    reason = peer.unsupported(wl, pass_, n, max_threads)
                    if reason:
                        cell.skipped = reason
                        continue
                    key = (wl.name, pass_, peer.name)
                    if peer.single_threaded and key in shared:
                        src = shared[key]
                        for f in ("seconds", "best_seconds", "repeats", "loss", "skipped", "error", "cut_short"):
                            setattr(cell, f, getattr(src, f))
                        cell.reused = True
                        continue
                    if peer.single_threaded:
                        shared[key] = cell
                    jobs.append((peer, cell))
                _measure_row(cfg, jobs, wl, data, pass_, n)
        gc.collect()
    cache.clear()
    return cells


class _Job:
    def __init__(self, peer: Peer, cell: Cell, fn: Callable[[], Any]) -> None:
        self.peer, self.cell, self.fn = peer, cell, fn
        self.times: List[float] = []
        self.spent = 0.0


def _measure_row(cfg: BenchConfig, jobs: Sequence[Tuple[Peer, Cell]], wl, data, pass_, n) -> None:
    perf = time.perf_counter
    active: List[_Job] = []
    with contextlib.ExitStack() as stack:
        # prepare + warm up every peer of the row
        for peer, cell in jobs:
            avail = available_memory()
            need = peer.memory_needed(wl, pass_)
            if avail is not None and need > cfg.memory_fraction * avail:
                cell.skipped = f"memory (~{need / 2**30:.1f} GiB needed, {avail / 2**30:.1f} GiB free)"
                continue
            try:
                stack.enter_context(peer.threads(n))
                fn = peer.prepare(wl, data, pass_, n)
                result = fn()  # warm-up (JIT compilation, first-touch, caches)
                cell.loss = _loss_value(result)
                del result
                active.append(_Job(peer, cell, fn))
            except MemoryError:
                cell.skipped = "memory (MemoryError)"
            except Exception as exc:  # keep going; report it
                cell.error = f"{type(exc).__name__}: {exc}"
        # timed repeats
        interleave = cfg.interleave and len(active) > 1
        while active:
            for job in list(active):
                while True:
                    if interleave:
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
                    job.times.append(dt)
                    job.spent += dt
                    k = len(job.times)
                    if (k >= cfg.min_repeats and job.spent >= cfg.min_time) or job.spent >= cfg.max_time \
                            or k >= cfg.max_repeats:
                        _finish(job, cfg)
                        active.remove(job)
                        break
                    if interleave:
                        break
        active = []
    gc.collect()
    for _peer, cell in jobs:
        if cell.seconds is not None:
            _log(cfg, f"   {n}T {pass_:9s} {cell.peer:13s} {cell.seconds * 1e3:9.2f} ms "
                      f"{cell.gps:7.2f} G/s  (x{cell.repeats})")
        else:
            _log(cfg, f"   {n}T {pass_:9s} {cell.peer:13s} {cell.skipped or cell.error}")


def _finish(job: _Job, cfg: BenchConfig) -> None:
    c = job.cell
    c.seconds = statistics.median(job.times)
    c.best_seconds = min(job.times)
    c.repeats = len(job.times)
    c.cut_short = c.repeats < cfg.min_repeats
    job.fn = None  # release the peer's buffers


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def fastce_cache_limit() -> int:
    """The buffer cache's limit in bytes (0: off)."""
    import fastce

    return int(fastce.cache_info()["limit"])


def _loss_tol(dtype: str) -> float:
    return 1e-8 if dtype == "float64" else 2e-4


def _fmt_gps(cell: Optional[Cell]) -> str:
    if cell is None:
        return ""
    if cell.gps is not None:
        s = f"{cell.gps:.2f}" if cell.gps < 100 else f"{cell.gps:.1f}"
        if cell.cut_short:
            s = "~" + s
        return s
    if cell.skipped == NA:
        return NA
    if cell.error:
        return "err"
    return "-"


def format_table(cells: Sequence[Cell], title: Optional[str] = None, notes: bool = True) -> str:
    """Render ``cells`` as a fixed-width text table with footnotes."""
    peers_present = [p for p in PEER_NAMES if any(c.peer == p for c in cells)]
    ratio_peers = [p for p in peers_present if not p.startswith("fastce")]
    rows: Dict[Tuple[str, int, str], Dict[str, Cell]] = {}
    order: List[Tuple[str, int, str]] = []
    wls: Dict[str, Workload] = {}
    for c in cells:
        key = (c.workload.name, c.threads, c.pass_)
        if key not in rows:
            rows[key] = {}
            order.append(key)
        rows[key][c.peer] = c
        wls[c.workload.name] = c.workload

    head = ["workload", "thr", "pass"] + [f"{p}" for p in peers_present]
    if "fastce" in peers_present:
        head += [f"x{p}" for p in ratio_peers]
    mismatches: List[str] = []
    errors: List[str] = []
    table: List[List[str]] = []
    for key in order:
        r = rows[key]
        wl = wls[key[0]]
        line = [key[0], str(key[1]), key[2]]
        ref = r.get("fastce")
        for p in peers_present:
            s = _fmt_gps(r.get(p))
            c = r.get(p)
            if c is not None and ref is not None and c is not ref and c.loss is not None and ref.loss is not None:
                if not math.isclose(c.loss, ref.loss, rel_tol=_loss_tol(wl.dtype), abs_tol=1e-6):
                    s += "!"
                    mismatches.append(
                        f"{key[0]} {key[1]}T {key[2]}: {p} loss {c.loss:.9g} vs fastce {ref.loss:.9g}"
                    )
            if c is not None and c.error:
                errors.append(f"{key[0]} {key[1]}T {key[2]} {p}: {c.error}")
            line.append(s)
        if "fastce" in peers_present:
            for p in ratio_peers:
                c = r.get(p)
                if ref is not None and ref.gps and c is not None and c.gps:
                    line.append(f"{ref.gps / c.gps:.2f}")
                else:
                    line.append("")
        table.append(line)

    widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h) for i, h in enumerate(head)]
    out: List[str] = []
    if title:
        out.append(title)

    def fmt(row):
        cols = []
        for i, v in enumerate(row):
            cols.append(v.ljust(widths[i]) if i < 3 else v.rjust(widths[i]))
        return "  ".join(cols).rstrip()

    out.append(fmt(head))
    out.append("  ".join("-" * w for w in widths))
    prev = None
    group_rows = len({r[0] for r in table}) < len(table)
    for row in table:
        if group_rows and prev is not None and row[0] != prev:
            out.append("")
        prev = row[0]
        out.append(fmt(row))
    if not notes:
        return "\n".join(out)
    notes = [
        "Throughput in G logits/s = numel(input) / median time / 1e9 (higher is better); "
        "x<peer> = fastce throughput / peer throughput (>1: fastce faster).",
        "Each cell: 1 warm-up call, then >= min-repeats calls and >= min-time s, median reported; the libraries "
        "of a row are timed round-robin (not with --sequential).",
        "n/a = not supported by that library/cell; - = skipped (memory/time); "
        "~ = cut short by --max-time (fewer repeats); ! = loss differs from fastce's.",
    ]
    if "fastce(out=)" in peers_present:
        notes.append("fastce(out=): cross_entropy_with_grad with a preallocated out= buffer reused across repeats; "
                     "x<peer> ratios use plain fastce (allocating).")
    cache_limit = fastce_cache_limit()
    if cache_limit:
        notes.append(f"fastce (allocating) gets each gradient's memory from its buffer cache (limit "
                     f"{cache_limit / 2**20:.0f} MiB) once an earlier gradient was released; "
                     "FASTCE_CACHE_MB=0 measures fresh memory (page faults) every call.")
    else:
        notes.append("fastce (allocating): buffer cache off, fresh memory every call.")
    if "numpy" in peers_present:
        notes.append("numpy is single-threaded: measured once per workload/pass and shown in every threads row.")
    if "jax" in peers_present:
        notes.append("jax: XLA's CPU thread pool size is fixed when jax is imported, so JAX is reported only in the "
                     "all-threads rows; K-dim input is moved to class-last inside the jitted function (timed).")
    if "sklearn" in peers_present:
        notes.append("sklearn: HalfMultinomialLoss().loss_gradient(n_threads=thr) + loss.mean(), 2-D unweighted "
                     "loss+grad only; its gradient is per-sample (not divided by N).")
    if "torch" in peers_present:
        notes.append("torch: F.cross_entropy under no_grad (forward); forward + autograd backward (loss+grad); "
                     "torch.set_num_threads(thr).")
    out.append("")
    out.extend(notes)
    skipped = sorted({f"{c.workload.name} {c.threads}T {c.pass_} {c.peer}: {c.skipped}"
                      for c in cells if c.skipped and c.skipped != NA and not c.reused})
    if skipped:
        out.append("skipped: " + "; ".join(skipped))
    if mismatches:
        out.append("loss mismatches:")
        out.extend("  " + m for m in mismatches)
    if errors:
        out.append("errors:")
        out.extend("  " + e for e in errors)
    return "\n".join(out)


def environment() -> Dict[str, Any]:
    env: Dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cores_available": all_threads(),
        "numpy": np.__version__,
    }
    for p in PEERS:
        if p.name in ("fastce(out=)", "numpy"):
            continue
        if p.unavailable() is None:
            env[p.name] = p.version()
        else:
            env[p.name] = None
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
    parts = []
    for k, v in env.items():
        if v is None:
            v = "not installed"
        parts.append(f"{k}={v}")
    return "# " + ", ".join(parts)


# --------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------


def plot_sweep(cells: Sequence[Cell], path: str, title: Optional[str] = None) -> None:
    """Throughput vs number of classes (log x), one line per library."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise RuntimeError(
            "--plot needs matplotlib, which is not installed (pip install matplotlib)"
        ) from None
    fig = Figure(figsize=(7.5, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for p in PEER_NAMES:
        pts = sorted(
            (c.workload.num_classes, c.gps) for c in cells if c.peer == p and c.gps is not None
        )
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", label=p, linewidth=2.2 if p == "fastce" else 1.4)
    ax.set_xscale("log")
    ax.set_xlabel("number of classes C  (N*C ~ %.3g logits, float32)" % SWEEP_NUMEL)
    ax.set_ylabel("throughput  [G logits/s]")
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title or "softmax cross-entropy forward (mean), all threads")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# --------------------------------------------------------------------------
# Linear + cross-entropy (LM head): seconds per call, ratios to the matmul
# --------------------------------------------------------------------------
#
# Its own small table: the unit is time per call, and the yardstick is the BLAS matmul that
# any LM head must do (1 matmul for the loss, 3 for the loss and every gradient).


@dataclasses.dataclass(frozen=True)
class LinearWorkload:
    """loss = cross_entropy(input @ W.T, target): input (N, H), W (V, H), int64 targets."""

    name: str
    N: int
    H: int
    V: int
    dtype: str = "float32"
    seed: int = 0

    @property
    def logits_nbytes(self) -> int:
        return self.N * self.V * np.dtype(self.dtype).itemsize

    def describe(self) -> str:
        return (f"N={self.N} H={self.H} V={self.V} {self.dtype} "
                f"(full logits {self.logits_nbytes / 1e6:.0f} MB)")


DEFAULT_LINEAR_WORKLOADS: Tuple[LinearWorkload, ...] = (
    LinearWorkload("lin-4096x1024x32000", 4096, 1024, 32000),
)
QUICK_LINEAR_WORKLOADS: Tuple[LinearWorkload, ...] = (
    LinearWorkload("lin-256x512x32000", 256, 512, 32000),
)


@dataclasses.dataclass
class LinearData:
    x: np.ndarray
    W: np.ndarray
    target: np.ndarray


def make_linear_data(wl: LinearWorkload) -> LinearData:
    """x ~ N(0, 1), W ~ N(0, 9 / H) (logits ~ N(0, 9), as make_data's), int64 targets."""
    rng = np.random.default_rng(wl.seed)
    dt = np.dtype(wl.dtype)
    x = rng.standard_normal((wl.N, wl.H), dtype=dt)
    W = rng.standard_normal((wl.V, wl.H), dtype=dt)
    W *= dt.type(3.0 / math.sqrt(wl.H))
    t = rng.integers(0, wl.V, size=wl.N, dtype=np.int64)
    return LinearData(x, W, t)


@dataclasses.dataclass(frozen=True)
class LinearCase:
    """One way of computing the LM-head loss (forward) or loss + all gradients (loss+grad).

    ``prepare(wl, data, threads)`` returns a zero-argument callable doing one full computation
    and returning (loss, arrays it allocated and returns...). ``baseline``: the matmul(s) the
    other cases of its pass are divided by. ``mem_factor``: extra memory in full-logits units
    (to skip a case that would not fit)."""

    name: str
    pass_: str
    library: str
    prepare: Callable[..., Callable[[], Any]]
    requires: Tuple[str, ...] = ()
    baseline: bool = False
    returns_results: bool = False  # its returned arrays are results, not counted as extra memory
    mem_factor: float = 0.0
    slow: bool = False  # left out of --quick runs

    def unavailable(self) -> Optional[str]:
        for mod in self.requires:
            if importlib.util.find_spec(mod) is None:
                return f"{mod} not installed"
        if self.library == "torch(chunked)":
            import torch

            if not hasattr(torch.nn, "LinearCrossEntropyOptions"):
                return "torch.nn.LinearCrossEntropyOptions not in this torch"
        return None


def _lin_numpy_matmul_out(wl, d, threads):
    out = np.empty((wl.N, wl.V), dtype=d.x.dtype)
    def run():
        np.matmul(d.x, d.W.T, out=out)
        return ()

    return run


def _lin_numpy_matmul_alloc(wl, d, threads):
    def run():
        d.x @ d.W.T  # the (N, V) logits, allocated and freed
        return ()

    return run


def _lin_fastce(wl, d, threads):
    import fastce

    return lambda: (fastce.linear_cross_entropy(d.x, d.W, d.target),)


def _lin_numpy_then_fastce(wl, d, threads):
    import fastce

    return lambda: (fastce.cross_entropy(d.x @ d.W.T, d.target, num_threads=threads),)


def _lin_numpy_3mm_out(wl, d, threads):
    z = np.empty((wl.N, wl.V), dtype=d.x.dtype)
    gx = np.empty_like(d.x)
    gW = np.empty_like(d.W)

    def run():
        np.matmul(d.x, d.W.T, out=z)  # logits
        np.matmul(z, d.W, out=gx)  # G @ W
        np.matmul(z.T, d.x, out=gW)  # G.T @ x
        return ()

    return run


def _lin_fastce_grad(wl, d, threads):
    import fastce

    return lambda: fastce.linear_cross_entropy_with_grad(d.x, d.W, d.target)[:3]


def _torch_lce(chunked: bool, with_grad: bool):
    def prepare(wl, d, threads):
        import torch
        import torch.nn.functional as F

        xt, Wt, tt = torch.from_numpy(d.x), torch.from_numpy(d.W), torch.from_numpy(d.target)
        opts = torch.nn.LinearCrossEntropyOptions() if chunked else None
        if not with_grad:

            def fwd():
                with torch.no_grad():
                    return (F.linear_cross_entropy(xt, Wt, tt, options=opts),)

            return fwd
        xg = xt.detach().requires_grad_(True)
        Wg = Wt.detach().requires_grad_(True)

        def loss_grad():
            xg.grad = Wg.grad = None
            loss = F.linear_cross_entropy(xg, Wg, tt, options=opts)
            loss.backward()
            return loss.detach(), xg.grad, Wg.grad

        return loss_grad

    return prepare


LINEAR_CASES: Tuple[LinearCase, ...] = (
    LinearCase("numpy matmul(x, W.T, out=)", FORWARD, "numpy", _lin_numpy_matmul_out, baseline=True),
    LinearCase("numpy x @ W.T (allocating)", FORWARD, "numpy", _lin_numpy_matmul_alloc, mem_factor=1.0),
    LinearCase("fastce.linear_cross_entropy", FORWARD, "fastce", _lin_fastce, ("fastce",), mem_factor=0.1),
    LinearCase("numpy x @ W.T + fastce.cross_entropy", FORWARD, "fastce", _lin_numpy_then_fastce,
               ("fastce",), mem_factor=1.0),
    LinearCase("torch F.linear_cross_entropy", FORWARD, "torch", _torch_lce(False, False), ("torch",),
               mem_factor=2.2),
    LinearCase("torch F.linear_cross_entropy (options=)", FORWARD, "torch(chunked)", _torch_lce(True, False),
               ("torch",), mem_factor=1.0, slow=True),
    LinearCase("numpy 3 matmuls (out=)", LOSS_GRAD, "numpy", _lin_numpy_3mm_out, baseline=True, mem_factor=1.0),
    LinearCase("fastce.linear_cross_entropy_with_grad", LOSS_GRAD, "fastce", _lin_fastce_grad, ("fastce",),
               returns_results=True, mem_factor=0.2),
    LinearCase("torch forward + backward", LOSS_GRAD, "torch", _torch_lce(False, True), ("torch",),
               returns_results=True, mem_factor=3.2),
    LinearCase("torch forward + backward (options=)", LOSS_GRAD, "torch(chunked)", _torch_lce(True, True),
               ("torch",), returns_results=True, mem_factor=1.5, slow=True),
)


def linear_cases(passes: Sequence[str] = PASSES, peers: Optional[Sequence[str]] = None) -> List[LinearCase]:
    """The cases of `passes`; with `peers`, only the libraries named there ('torch' brings
    torch(chunked) too). The NumPy matmul baselines are always included."""
    out = []
    for c in LINEAR_CASES:
        if c.pass_ not in passes:
            continue
        lib = "torch" if c.library.startswith("torch") else c.library
        if peers is not None and not c.baseline and lib not in peers:
            continue
        out.append(c)
    return out


@dataclasses.dataclass
class LinearCell:
    workload: LinearWorkload
    case: LinearCase
    threads: int
    times: List[float] = dataclasses.field(default_factory=list)
    loss: Optional[float] = None
    peak_traced: Optional[int] = None  # tracemalloc peak above the results (NumPy allocations)
    peak_rss: Optional[int] = None  # RSS high-water mark above the RSS before, minus results
    ratio: Optional[float] = None  # min time / min time of the pass's baseline
    skipped: Optional[str] = None
    error: Optional[str] = None

    @property
    def median(self) -> Optional[float]:
        return statistics.median(self.times) if self.times else None

    @property
    def best(self) -> Optional[float]:
        return min(self.times) if self.times else None

    def to_dict(self) -> Dict[str, Any]:
        wl, c = self.workload, self.case
        return {
            "section": "linear", "workload": wl.name, "N": wl.N, "H": wl.H, "V": wl.V,
            "dtype": wl.dtype, "threads": self.threads, "pass": c.pass_, "case": c.name,
            "library": c.library, "median_s": self.median, "min_s": self.best,
            "repeats": len(self.times), "ratio_to_matmul": self.ratio,
            "baseline": c.baseline, "loss": self.loss,
            "peak_extra_tracemalloc_bytes": self.peak_traced, "peak_extra_rss_bytes": self.peak_rss,
            "full_logits_bytes": wl.logits_nbytes, "skipped": self.skipped, "error": self.error,
        }


def _rss_status(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _malloc_trim() -> None:
    """Gives the C heap's free memory back to the OS (glibc), so that the next allocations
    fault in fresh pages that the RSS high-water mark sees (freed blocks kept resident by
    malloc would otherwise hide them)."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_rss_peak() -> bool:
    """Resets the process's RSS high-water mark (Linux: 5 > /proc/self/clear_refs)."""
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _result_nbytes(result: Any) -> int:
    n = 0
    for r in result if isinstance(result, tuple) else (result,):
        if isinstance(r, np.ndarray):
            n += r.nbytes
        elif hasattr(r, "element_size") and hasattr(r, "numel"):  # torch.Tensor
            n += r.element_size() * r.numel()
    return n


def _measure_linear_memory(cell: LinearCell, fn: Callable[[], Any]) -> None:
    """One untimed call: tracemalloc peak (NumPy's allocations; torch's are not traced) and
    the RSS high-water mark above the RSS before it, both less the results it returns."""
    import tracemalloc

    gc.collect()
    rss_ok = _reset_rss_peak()
    rss0 = _rss_status("VmRSS") if rss_ok else None
    tracemalloc.start()
    try:
        result = fn()
        traced = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    hwm = _rss_status("VmHWM") if rss_ok else None
    res = _result_nbytes(result) if cell.case.returns_results else 0
    del result
    if not cell.case.library.startswith("torch"):
        cell.peak_traced = max(0, traced - res)
    if rss0 is not None and hwm is not None:
        cell.peak_rss = max(0, hwm - rss0 - res)


@contextlib.contextmanager
def _all_blas_threads(n: int):
    """NumPy's/SciPy's BLAS and torch limited to n threads (threadpoolctl and
    torch.set_num_threads, where installed); no-op for the default (all cores)."""
    with contextlib.ExitStack() as stack:
        if n < all_threads():
            try:
                from threadpoolctl import threadpool_limits

                stack.enter_context(threadpool_limits(n, user_api="blas"))
            except ImportError:
                pass
        if importlib.util.find_spec("torch") is not None:
            stack.enter_context(TorchPeer().threads(n))
        yield


def run_linear(cfg: "BenchConfig", workloads: Sequence[LinearWorkload], threads: int,
               pause: float = 0.25, quick: bool = False) -> List[LinearCell]:
    """Time every case of ``linear_cases(cfg.passes, cfg.peers)`` on each workload.

    The cases of a pass are timed round-robin, ``pause`` s apart: OpenBLAS's idle workers spin
    for up to ~0.1 s after a call, libgomp's for a few ms, so a shorter pause would let one
    library's spinning threads slow the next library's call. Each case: one warm-up call, one
    untimed call for the memory figures, then >= cfg.min_repeats timed calls. ``quick`` leaves
    out the slow cases (torch's chunked options, ~9x one matmul here)."""
    cells: List[LinearCell] = []
    peers = None if cfg.peers is None else list(cfg.peers)
    for wl in workloads:
        t_gen = time.perf_counter()
        data = make_linear_data(wl)
        _log(cfg, f"[bench] {wl.name}: {wl.describe()}, {threads} threads "
                  f"(data {time.perf_counter() - t_gen:.1f} s)")
        with _all_blas_threads(threads):
            for pass_ in cfg.passes:
                jobs = []
                for case in linear_cases((pass_,), peers):
                    cell = LinearCell(wl, case, threads)
                    cells.append(cell)
                    why = "left out of --quick" if quick and case.slow else case.unavailable()
                    avail = available_memory()
                    if why:
                        cell.skipped = why
                    elif avail is not None and case.mem_factor * wl.logits_nbytes > cfg.memory_fraction * avail:
                        cell.skipped = "memory"
                    else:
                        try:
                            fn = case.prepare(wl, data, threads)
                            result = fn()  # warm-up
                            cell.loss = _loss_value(result) if result else None
                            del result
                            _measure_linear_memory(cell, fn)
                            jobs.append((cell, fn))
                        except MemoryError:
                            cell.skipped = "memory (MemoryError)"
                        except Exception as exc:
                            cell.error = f"{type(exc).__name__}: {exc}"
                _time_linear_round_robin(cfg, jobs, pause)
                _linear_ratios([c for c in cells if c.workload is wl and c.case.pass_ == pass_])
                for cell in (c for c in cells if c.workload is wl and c.case.pass_ == pass_):
                    msg = (f"{cell.best:.3f} s (x{cell.ratio:.2f})" if cell.best is not None and cell.ratio
                           else f"{cell.best:.3f} s" if cell.best is not None else cell.skipped or cell.error)
                    _log(cfg, f"   {pass_:9s} {cell.case.name:42s} {msg}")
                gc.collect()
        del data
        gc.collect()
    return cells


def _time_linear_round_robin(cfg, jobs, pause):
    perf = time.perf_counter
    spent = {id(c): 0.0 for c, _ in jobs}
    active = list(jobs)
    while active:
        for cell, fn in list(active):
            time.sleep(pause)
            try:
                t0 = perf()
                fn()
                dt = perf() - t0
            except Exception as exc:  # pragma: no cover - reported in the table
                cell.error = f"{type(exc).__name__}: {exc}"
                active.remove((cell, fn))
                continue
            cell.times.append(dt)
            spent[id(cell)] += dt
            k = len(cell.times)
            if (k >= cfg.min_repeats and spent[id(cell)] >= cfg.min_time) or spent[id(cell)] >= cfg.max_time:
                active.remove((cell, fn))


def _linear_ratios(cells: Sequence[LinearCell]) -> None:
    """ratio = min time / the pass baseline's min time (the least noisy statistic here)."""
    base = next((c for c in cells if c.case.baseline and c.best), None)
    for c in cells:
        if base is not None and c.best is not None:
            c.ratio = c.best / base.best


def _fmt_mb(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


def format_linear_table(cells: Sequence[LinearCell]) -> str:
    """One block per workload: min and median seconds, x baseline, peak extra memory."""
    out: List[str] = []
    for wl in dict.fromkeys(c.workload for c in cells):
        wc = [c for c in cells if c.workload == wl]
        out.append(f"linear + cross-entropy (LM head) {wl.name}: {wl.describe()}, {wc[0].threads} threads")
        head = ["pass", "case", "min s", "median s", "x matmul", "extra MB (traced)", "extra MB (RSS)"]
        rows: List[List[str]] = []
        skipped: List[str] = []
        ref = next((c.loss for c in wc if c.case.library == "fastce" and c.loss is not None), None)
        for c in wc:
            if c.best is None:
                rows.append([c.case.pass_, c.case.name, "err" if c.error else "-", "", "", "", ""])
                if c.skipped:
                    skipped.append(f"{c.case.name}: {c.skipped}")
                continue
            name = c.case.name
            if ref is not None and c.loss is not None and not math.isclose(c.loss, ref, rel_tol=1e-3):
                name += " !"
            rows.append([c.case.pass_, name, f"{c.best:.3f}", f"{c.median:.3f}",
                         f"{c.ratio:.2f}" if c.ratio else "", _fmt_mb(c.peak_traced), _fmt_mb(c.peak_rss)])
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

        def fmt(r):
            return "  ".join(v.ljust(widths[i]) if i < 2 else v.rjust(widths[i]) for i, v in enumerate(r)).rstrip()

        out.append(fmt(head))
        out.append("  ".join("-" * w for w in widths))
        out.extend(fmt(r) for r in rows)
        if skipped:
            out.append("skipped: " + "; ".join(skipped))
        out.append("")
    errors = [f"{c.workload.name} {c.case.name}: {c.error}" for c in cells if c.error]
    full = ", ".join(f"{w.name} {w.logits_nbytes / 1e6:.0f} MB" for w in dict.fromkeys(c.workload for c in cells))
    out += [
        "x matmul = min time / min time of the pass's NumPy baseline: one matmul(x, W.T, out=) for "
        "forward, the three matmuls of the gradients (logits, G @ W, G.T @ x; all out=) for loss+grad. "
        "Cases timed round-robin, 0.25 s apart (0.1 s with --quick; BLAS/OpenMP workers spin after a call).",
        "extra MB = peak memory during one call beyond its inputs and returned results (the grads): "
        "traced = tracemalloc (NumPy allocations; not torch's), RSS = high-water mark (5 > /proc/self/clear_refs). "
        f"Full logits: {full}.",
        "fastce.linear_cross_entropy*: default chunk_size (a ~32 MiB logits buffer) and num_threads (1 thread "
        "for the CE step between BLAS calls); torch: options=None is linear + cross_entropy, options= is "
        "torch.nn.LinearCrossEntropyOptions() (chunked); ! = loss differs from fastce's by > 1e-3.",
    ]
    if errors:
        out.append("errors:")
        out.extend("  " + e for e in errors)
    return "\n".join(out)


# --------------------------------------------------------------------------
# CLI entry (called by fastce.cli)
# --------------------------------------------------------------------------


def add_arguments(parser) -> None:
    """Add the ``fastce bench`` options to an argparse parser."""
    parser.add_argument("--quick", action="store_true",
                        help="reduced run: smaller workloads, shorter timing (well under a minute)")
    parser.add_argument("--threads", default="1,all", metavar="LIST",
                        help="comma-separated thread counts, 'all' = every available core (default: 1,all)")
    parser.add_argument("--workload", "-w", action="append", metavar="NAME",
                        help="only workloads whose name is/contains NAME (repeatable; see --list)")
    parser.add_argument("--pass", dest="passes", choices=[FORWARD, LOSS_GRAD, "both"], default="both",
                        help="which pass to time (default: both)")
    parser.add_argument("--peers", default=None, metavar="LIST",
                        help=f"comma-separated libraries (default: all installed of {','.join(PEER_NAMES)})")
    parser.add_argument("--min-time", type=float, default=None, metavar="S",
                        help="time each cell for at least S seconds (default 0.5; 0.1 with --quick)")
    parser.add_argument("--min-repeats", type=int, default=None, metavar="K",
                        help="at least K timed repeats per cell (default 3)")
    parser.add_argument("--max-time", type=float, default=30.0, metavar="S",
                        help="stop timing a cell after S seconds even below --min-repeats (default 30)")
    parser.add_argument("--sequential", action="store_true",
                        help="time each library's repeats back to back instead of round-robin within a row")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                        help="write results as a JSON list of dicts to FILE ('-' or no FILE: stdout, no table)")
    parser.add_argument("--plot", metavar="FILE.png", default=None,
                        help="also sweep the number of classes (forward, all threads) and plot throughput")
    parser.add_argument("--plot-only", action="store_true", help="with --plot: skip the main table")
    parser.add_argument("--no-linear", action="store_true",
                        help="skip the linear + cross-entropy (LM head) table (workloads lin-*)")
    parser.add_argument("--list", action="store_true", help="list workloads and libraries, then exit")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output on stderr")


def _select_both(ce_all, linear_all, patterns):
    """Workload patterns (-w) over both sets: each must match a cross-entropy workload or a
    linear one (lin-*); no patterns: every workload of both."""
    if not patterns:
        return list(ce_all), list(linear_all)
    ce_p, lin_p = [], []
    for p in patterns:
        in_ce = any(p == w.name or p in w.name for w in ce_all)
        in_lin = any(p == w.name or p in w.name for w in linear_all)
        if not (in_ce or in_lin):
            known = ", ".join(w.name for w in tuple(ce_all) + tuple(linear_all))
            raise ValueError(f"no workload matches {p!r}; known: {known}")
        if in_ce:
            ce_p.append(p)
        if in_lin:
            lin_p.append(p)
    ce = select_workloads(ce_all, ce_p) if ce_p else []
    lin = select_workloads(linear_all, lin_p) if lin_p else []
    return ce, lin


def main(args) -> int:
    """Run ``fastce bench`` with parsed ``args``; returns an exit status."""
    workloads_all = QUICK_WORKLOADS if args.quick else DEFAULT_WORKLOADS
    linear_all = QUICK_LINEAR_WORKLOADS if args.quick else DEFAULT_LINEAR_WORKLOADS
    if getattr(args, "no_linear", False):
        linear_all = ()
    if args.list:
        print("workloads%s:" % (" (--quick)" if args.quick else ""))
        for w in workloads_all:
            print(f"  {w.name:20s} {w.describe()}")
        for w in linear_all:
            print(f"  {w.name:20s} linear + cross-entropy, {w.describe()}")
        print("libraries:")
        for p in PEERS:
            why = p.unavailable()
            print(f"  {p.name:14s} {'available' if why is None else why}")
        return 0
    try:
        workloads, linear_wls = _select_both(workloads_all, linear_all, args.workload)
        threads = parse_threads(args.threads)
        peers = list(PEER_NAMES) if args.peers is None else [s.strip() for s in args.peers.split(",") if s.strip()]
        for name in peers:
            get_peer(name)
    except (ValueError, KeyError) as exc:
        print(f"fastce bench: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("fastce bench: error: --plot needs matplotlib, which is not installed "
                  "(pip install matplotlib)", file=sys.stderr)
            return 2
    passes = PASSES if args.passes == "both" else (args.passes,)
    cfg = BenchConfig(
        workloads=workloads,
        threads=threads,
        passes=passes,
        peers=peers,
        min_time=args.min_time if args.min_time is not None else (0.1 if args.quick else 0.5),
        min_repeats=args.min_repeats if args.min_repeats is not None else 3,
        max_time=args.max_time,
        interleave=not args.sequential,
        verbose=not args.quiet,
    )
    to_stdout_json = args.json == "-"
    env = environment()
    missing = [f"{p}: {get_peer(p).unavailable()}" for p in peers if get_peer(p).unavailable()]
    if missing:
        _log(cfg, "[bench] not available: " + "; ".join(missing))

    t0 = time.perf_counter()
    results: List[Dict[str, Any]] = []
    text: List[str] = []
    if not (args.plot and args.plot_only):
        if workloads:
            cells = run(cfg)
            results += [c.to_dict("table") for c in cells]
            text.append(format_table(cells))
        if linear_wls:
            # BLAS-bound: timed once, at the largest thread count asked for
            lcells = run_linear(cfg, linear_wls, max(threads), pause=0.1 if args.quick else 0.25,
                                quick=args.quick)
            results += [c.to_dict() for c in lcells]
            text.append(format_linear_table(lcells))
    if args.plot:
        sweep_cfg = dataclasses.replace(
            cfg,
            workloads=sweep_workloads(),
            threads=[all_threads()],
            passes=(FORWARD,),
            peers=[p for p in peers if p not in ("fastce(out=)", "sklearn")],  # forward-capable
        )
        _log(cfg, "[bench] class-count sweep (forward, all threads)")
        scells = run(sweep_cfg)
        results += [c.to_dict("sweep") for c in scells]
        text.append(format_table(scells, title="class-count sweep (forward, all threads):",
                                 notes=not text))
        plot_sweep(scells, args.plot,
                   title=f"softmax cross-entropy forward, {all_threads()} threads, {env.get('cpu', '')}")
        text.append(f"plot written to {args.plot}")
    elapsed = time.perf_counter() - t0

    if args.json is not None:
        # valid JSON, one result dict per line
        payload = "[\n" + ",\n".join(json.dumps(r) for r in results) + "\n]"
        if to_stdout_json:
            print(payload)
        else:
            with open(args.json, "w") as f:
                f.write(payload + "\n")
    if not to_stdout_json:
        print(format_environment(env))
        print("\n\n".join(text))
        print(f"# total {elapsed:.0f} s")
    else:
        _log(cfg, f"[bench] total {elapsed:.0f} s")
    return 0
