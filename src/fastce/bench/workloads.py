"""What is timed: the workloads (shapes, dtypes, loss options), their data, and the selection
of workloads and thread counts from the command line.

A workload class needs ``name``, ``describe()``, ``data_key`` (workloads with the same key share
their arrays), ``make_shared_data()`` (the arrays, made once per key) and
``with_options(data)`` (the shared arrays adapted to this workload, e.g. with class weights);
``json_fields()`` gives its columns in the ``--json`` output.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

FORWARD = "forward"
LOSS_GRAD = "loss+grad"
PASSES = (FORWARD, LOSS_GRAD)


# --------------------------------------------------------------------------
# Cross-entropy workloads (the main table, G logits/s)
# --------------------------------------------------------------------------


def np_dtype(name: str) -> np.dtype:
    """The NumPy dtype named ``name``; "bfloat16" is ml_dtypes' (imported only for it)."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


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
        return self.numel * (2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize)

    def roof_terms(self, pass_: str) -> Tuple[int, int, int]:
        """Per logit: arrays read, arrays written, exps (the roofline's bound of a pass)."""
        return (1, 0, 1) if pass_ == FORWARD else (1, 1, 2)

    def unavailable(self) -> Optional[str]:
        """None if its data can be made here, else why not (bfloat16 needs ml_dtypes)."""
        if self.dtype == "bfloat16" and importlib.util.find_spec("ml_dtypes") is None:
            return "ml_dtypes not installed (bfloat16 arrays)"
        return None

    @property
    def is_2d(self) -> bool:
        return len(self.shape) == 2

    @property
    def data_key(self) -> Tuple[Any, ...]:
        # Variants that differ only in loss options share the same arrays.
        return (self.shape, self.dtype, self.seed)

    def make_shared_data(self) -> "WorkloadData":
        return make_data(dataclasses.replace(self, weighted=False))

    def with_options(self, data: "WorkloadData") -> "WorkloadData":
        return with_options(self, data)

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

    def json_fields(self) -> Dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype, "num_classes": self.num_classes,
                "label_smoothing": self.label_smoothing, "weighted": self.weighted,
                "numel": self.numel}


@dataclasses.dataclass
class WorkloadData:
    input: np.ndarray
    target: np.ndarray
    weight: Optional[np.ndarray]


def make_data(wl: Workload) -> WorkloadData:
    """Random logits (normal * 3), random int64 targets, fixed seed."""
    rng = np.random.default_rng(wl.seed)
    dt = np_dtype(wl.dtype)
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
        w = rng.uniform(0.5, 1.5, size=wl.num_classes).astype(np_dtype(wl.dtype))
        return WorkloadData(data.input, data.target, w)
    if not wl.weighted and data.weight is not None:
        return WorkloadData(data.input, data.target, None)
    return data


#: the complete suite (``fastce bench --full``): every option, dtype and shape the README's
#: tables and the issues' targets quote
FULL_WORKLOADS: Tuple[Workload, ...] = (
    Workload("4096x32000", (4096, 32000)),
    Workload("4096x32000-ls0.1", (4096, 32000), label_smoothing=0.1),
    Workload("4096x32000-weight", (4096, 32000), weighted=True),
    Workload("4096x32000-f64", (4096, 32000), dtype="float64"),
    Workload("4096x32000-f16", (4096, 32000), dtype="float16"),
    Workload("4096x32000-bf16", (4096, 32000), dtype="bfloat16"),
    Workload("1024x128256", (1024, 128256)),
    Workload("16384x1000", (16384, 1000)),
    Workload("262144x10", (262144, 10)),
    Workload("8x21x256x256", (8, 21, 256, 256)),
)


def _sixteen_bit(n: int, c: int) -> Workload:
    """The default run's 16-bit row: bfloat16, or float16 where ml_dtypes (NumPy's bfloat16) is
    not installed."""
    bf16 = Workload(f"{n}x{c}-bf16", (n, c), dtype="bfloat16")
    return bf16 if bf16.unavailable() is None else Workload(f"{n}x{c}-f16", (n, c), dtype="float16")


#: the default run (about a minute): the headline row at full size, one 16-bit row (>= 2^24
#: logits, so it has a %roof), few classes and a K-dim input (both as in the full suite)
DEFAULT_WORKLOADS: Tuple[Workload, ...] = (
    Workload("4096x32000", (4096, 32000)),
    _sixteen_bit(1024, 32000),
    Workload("262144x10", (262144, 10)),
    Workload("8x21x256x256", (8, 21, 256, 256)),
)

#: ``--quick``: the smoke run of the tests, smaller shapes
QUICK_WORKLOADS: Tuple[Workload, ...] = (
    Workload("1024x32000", (1024, 32000)),
    Workload("8192x1000", (8192, 1000)),
    Workload("131072x10", (131072, 10)),
    Workload("2x21x256x256", (2, 21, 256, 256)),
    Workload("256x32000-f16", (256, 32000), dtype="float16"),
    Workload("256x32000-bf16", (256, 32000), dtype="bfloat16"),
)

#: rows of the main table with at least this many logits get a roofline fraction (%roof)
ROOFLINE_MIN_NUMEL = 2**24

# Throughput vs number of classes (forward, all threads), N*C ~ 2**25.
SWEEP_CLASSES: Tuple[int, ...] = (10, 100, 1000, 10_000, 32_000, 128_000)
SWEEP_NUMEL = 2**27 // 4


def sweep_workloads(classes: Sequence[int] = SWEEP_CLASSES, numel: int = SWEEP_NUMEL) -> List[Workload]:
    out = []
    for c in classes:
        n = max(1, int(round(numel / c)))
        out.append(Workload(f"{n}x{c}", (n, c)))
    return out


# --------------------------------------------------------------------------
# The per-call curve (us per call of loss+grad against N*C, default options)
# --------------------------------------------------------------------------

#: (N, C) of the per-call table: N*C from 1e2 to 1e7, log-spaced, C in {10, 100, 1000, 32000}
PER_CALL_SHAPES: Tuple[Tuple[int, int], ...] = (
    (10, 10), (64, 10), (256, 10), (100, 100), (1024, 100), (32, 32000), (1000, 1000),
    (4096, 1000), (320, 32000),
)
#: the default run's curve: one shape a decade apart from 640 to 1e7 logits, with the target row
DEFAULT_PER_CALL_SHAPES: Tuple[Tuple[int, int], ...] = ((64, 10), (100, 100), (1000, 1000), (320, 32000))
QUICK_PER_CALL_SHAPES: Tuple[Tuple[int, int], ...] = ((64, 10), (1024, 100), (1000, 1000), (32, 32000))
#: the row of the issue's target: fastce >= 5x the NumPy twin and >= 10x torch
PER_CALL_TARGET = (64, 10)


def per_call_workloads(shapes: Sequence[Tuple[int, int]] = PER_CALL_SHAPES) -> Tuple[Workload, ...]:
    """float32 (N, C) workloads named ``call-NxC`` (the per-call table's rows)."""
    return tuple(Workload(f"call-{n}x{c}", (n, c)) for n, c in shapes)


FULL_PER_CALL_WORKLOADS = per_call_workloads()
DEFAULT_PER_CALL_WORKLOADS = per_call_workloads(DEFAULT_PER_CALL_SHAPES)
QUICK_PER_CALL_WORKLOADS = per_call_workloads(QUICK_PER_CALL_SHAPES)


# --------------------------------------------------------------------------
# Two models: KL divergence workloads (the KL table, G logits/s)
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KLWorkload(Workload):
    """KL(softmax(ref) || softmax(input)): two (N, C) logit arrays, the model's (input, logits
    as make_data's) and the reference's (the model's + N(0, 0.5^2) noise, a quantized model's
    distance)."""

    def make_shared_data(self) -> "KLData":
        base = make_data(self)
        rng = np.random.default_rng(self.seed + 7)
        ref = base.input.astype(np.float32) + rng.standard_normal(self.shape, dtype=np.float32) * 0.5
        return KLData(base.input, base.target, None, ref=ref.astype(base.input.dtype))

    def with_options(self, data: "KLData") -> "KLData":
        return data

    def roof_terms(self, pass_: str) -> Tuple[int, int, int]:
        """Per logit: arrays read, arrays written, exps (kl_rows: two exps per pair in the sums,
        two more for the gradient)."""
        return (2, 0, 2) if pass_ == FORWARD else (2, 1, 4)

    def describe(self) -> str:
        return f"{'x'.join(map(str, self.shape))} {self.dtype}, two models"


@dataclasses.dataclass
class KLData(WorkloadData):
    ref: Optional[np.ndarray] = None


FULL_KL_WORKLOADS: Tuple[KLWorkload, ...] = (KLWorkload("kl-4096x32000", (4096, 32000)),)
#: none in the default run: the NumPy twin of KL takes seconds a call at this size
DEFAULT_KL_WORKLOADS: Tuple[KLWorkload, ...] = ()
QUICK_KL_WORKLOADS: Tuple[KLWorkload, ...] = (KLWorkload("kl-256x32000", (256, 32000)),)


# --------------------------------------------------------------------------
# Linear + cross-entropy workloads (the LM-head table, seconds per call)
# --------------------------------------------------------------------------


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

    @property
    def data_key(self) -> Tuple[Any, ...]:
        return (self.N, self.H, self.V, self.dtype, self.seed)

    def make_shared_data(self) -> "LinearData":
        return make_linear_data(self)

    def unavailable(self) -> Optional[str]:
        return None

    def with_options(self, data: "LinearData") -> "LinearData":
        return data

    def describe(self) -> str:
        return (f"N={self.N} H={self.H} V={self.V} {self.dtype} "
                f"(full logits {self.logits_nbytes / 1e6:.0f} MB)")

    def json_fields(self) -> Dict[str, Any]:
        return {"N": self.N, "H": self.H, "V": self.V, "dtype": self.dtype}


FULL_LINEAR_WORKLOADS: Tuple[LinearWorkload, ...] = (
    LinearWorkload("lin-4096x1024x32000", 4096, 1024, 32000),
)
#: 1024 rows: the smallest head fastce's pipelined forward (one pipeline per BLAS thread) takes;
#: H=256 keeps its matmuls short (the table's pauses between calls are most of its time)
DEFAULT_LINEAR_WORKLOADS: Tuple[LinearWorkload, ...] = (
    LinearWorkload("lin-1024x256x32000", 1024, 256, 32000),
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


class DataCache:
    """Generate each workload's arrays once; keep only the most recent set."""

    def __init__(self) -> None:
        self._key: Optional[Tuple[Any, ...]] = None
        self._data: Any = None

    def get(self, wl):
        key = (type(wl), wl.data_key)
        if self._key != key:
            self._data = None
            gc.collect()
            self._data = wl.make_shared_data()
            self._key = key
        return wl.with_options(self._data)

    def clear(self) -> None:
        self._key = self._data = None
        gc.collect()


# --------------------------------------------------------------------------
# Selection (-w, --threads)
# --------------------------------------------------------------------------


def _matches(wl, pattern: str) -> bool:
    return pattern == wl.name or pattern in wl.name


def select_workloads(workloads: Sequence[Any], patterns: Optional[Sequence[str]]) -> List[Any]:
    """Filter by exact name, or by substring when no exact name matches."""
    if not patterns:
        return list(workloads)
    chosen: List[Any] = []
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


def select_sets(sets: Sequence[Sequence[Any]], patterns: Optional[Sequence[str]]) -> List[List[Any]]:
    """Workload patterns (-w) over several workload sets (one per table): each pattern must
    match a workload of at least one set; no patterns: every workload of every set."""
    if not patterns:
        return [list(s) for s in sets]
    for p in patterns:
        if not any(_matches(w, p) for s in sets for w in s):
            known = ", ".join(w.name for s in sets for w in s)
            raise ValueError(f"no workload matches {p!r}; known: {known}")
    out = []
    for s in sets:
        mine = [p for p in patterns if any(_matches(w, p) for w in s)]
        out.append(select_workloads(s, mine) if mine else [])
    return out


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
