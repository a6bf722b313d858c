"""The dask table: cross-entropy of logits that live on a 2-worker distributed.LocalCluster.

The logits are generated on the workers (never shipped), in row chunks, and persisted there;
each case then computes the mean loss of the same array:

* ``fastce.dask.cross_entropy`` -- per-chunk vocab statistics, tree merge, finish (fastce.dask);
* ``plain dask.array``          -- the same loss in dask.array expressions: max, exp, sum, log,
                                   and the target's logit by a per-chunk take;
* ``fastce, one process``       -- ``fastce.cross_entropy`` on a NumPy array of the same shape in
                                   this process, all cores: the speed a cluster keeps a fraction of.

Cases run round-robin, median of the repeats. Needs dask[array] and distributed (skipped
without them).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .timing import BenchConfig, log


@dataclasses.dataclass(frozen=True)
class DaskWorkload:
    name: str
    shape: Tuple[int, int]
    chunk_rows: int
    workers: int = 2

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))

    def describe(self) -> str:
        n, c = self.shape
        return (f"{n}x{c} float32 in ({self.chunk_rows}, {c}) chunks on a {self.workers}-worker LocalCluster "
                "(1 thread each)")


FULL_DASK_WORKLOADS = (DaskWorkload("dask-16384x32000", (16384, 32000), 2048),)
DEFAULT_DASK_WORKLOADS: Tuple[DaskWorkload, ...] = ()  # starting a cluster alone takes seconds
QUICK_DASK_WORKLOADS = (DaskWorkload("dask-2048x32000", (2048, 32000), 512),)


def unavailable() -> Optional[str]:
    missing = [m for m in ("dask", "distributed") if importlib.util.find_spec(m) is None]
    return f"{' and '.join(missing)} not installed" if missing else None


def _plain_dask_loss(x, t):
    """The mean cross-entropy in dask.array expressions (max, exp, sum, log, take)."""
    import dask.array as da

    m = x.max(axis=1, keepdims=True)
    lse = da.log(da.exp(x - m).sum(axis=1)) + m[:, 0]
    xt = da.map_blocks(lambda xb, tb: np.take_along_axis(xb, tb, axis=1)[:, 0], x, t[:, None],
                       drop_axis=1, dtype=x.dtype)
    return (lse - xt).mean()


@dataclasses.dataclass
class DaskRow:
    workload: DaskWorkload
    times: Dict[str, List[float]]
    losses: Dict[str, float]
    error: Optional[str] = None


CASES = ("fastce.dask.cross_entropy", "plain dask.array (max, exp, sum, log, take)", "fastce, one process")


def run_dask(cfg: BenchConfig, workloads: Sequence[DaskWorkload]) -> List[DaskRow]:
    why = unavailable()
    if why:
        return [DaskRow(w, {}, {}, error=why) for w in workloads]
    import dask.array as da
    import distributed

    import fastce
    import fastce.dask as fd

    rows = []
    for wl in workloads:
        log(cfg, f"[bench] {wl.name}: {wl.describe()}")
        cluster = distributed.LocalCluster(n_workers=wl.workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=40)
        client = distributed.Client(cluster)
        try:
            n, c = wl.shape
            rng = da.random.default_rng(0)
            x = (rng.standard_normal((n, c), chunks=(wl.chunk_rows, c), dtype=np.float32) * 3).persist()
            t = rng.integers(0, c, size=n, chunks=wl.chunk_rows).persist()
            distributed.wait([x, t])
            xl = np.random.default_rng(0).standard_normal((n, c), dtype=np.float32) * 3
            tl = np.random.default_rng(1).integers(0, c, n)
            fns: Dict[str, Callable[[], Any]] = {
                CASES[0]: lambda: fd.cross_entropy(x, t).compute(),
                CASES[1]: lambda: _plain_dask_loss(x, t).compute(),
                CASES[2]: lambda: fastce.cross_entropy(xl, tl),
            }
            times: Dict[str, List[float]] = {k: [] for k in fns}
            losses = {k: float(f()) for k, f in fns.items()}  # warm-up, and the values to check
            t_end = time.perf_counter() + cfg.min_time * len(fns)
            reps = 0
            while reps < cfg.min_repeats or (time.perf_counter() < t_end and reps < 50):
                for k, f in fns.items():
                    t0 = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - t0)
                reps += 1
            rows.append(DaskRow(wl, times, losses))
        except Exception as exc:  # pragma: no cover - a cluster that fails to start
            rows.append(DaskRow(wl, {}, {}, error=f"{type(exc).__name__}: {exc}"))
        finally:
            client.close()
            cluster.close()
    return rows


DASK_SECTION = ("Dask table: the mean cross-entropy of logits that live on a 2-worker distributed.LocalCluster "
                "(generated there, never shipped), a line per way of computing it.")
DASK_DOCS = (
    ("case", "fastce.dask.cross_entropy (per-chunk statistics, tree merge); the same loss in plain "
             "dask.array expressions; fastce.cross_entropy on a NumPy array of the same shape in this "
             "process, every core (the speed a cluster keeps a fraction of)."),
    ("median s", "the median seconds of a call (lower is better)."),
    ("G logits/s", "N x C logits / median s / 1e9 (higher is better)."),
    ("x plain dask", "plain dask.array's time / this case's time (> 1: faster than plain dask)."),
    ("loss", "the loss computed (the two dask cases must agree)."),
)


def format_dask_table(rows: Sequence[DaskRow], legend=None) -> str:
    """The dask table (its columns' texts go to ``legend``, a :class:`~.report.Legend`;
    without one, the table's own legend follows it)."""
    out = ["dask: the mean cross-entropy of logits on a distributed.LocalCluster, median seconds:"]
    for row in rows:
        wl = row.workload
        out.append(f"{wl.name}: {wl.describe()}")
        if row.error:
            out.append(f"  skipped: {row.error}")
            continue
        med = {k: statistics.median(v) for k, v in row.times.items()}
        plain = med[CASES[1]]
        out.append(f"  {'case':46s} {'median s':>9s} {'G logits/s':>11s} {'x plain dask':>13s}  loss")
        for k in CASES:
            out.append(f"  {k:46s} {med[k]:9.3f} {wl.numel / med[k] / 1e9:11.2f} {plain / med[k]:13.2f}  "
                       f"{row.losses[k]:.6f}")
        a, b = row.losses[CASES[0]], row.losses[CASES[1]]
        if not abs(a - b) <= 1e-4 * abs(b):
            out.append(f"  ! loss mismatch: fastce.dask {a!r} vs plain dask {b!r}")
        keep = med[CASES[2]] / med[CASES[0]]
        out.append(f"  fastce.dask keeps {100 * keep:.0f}% of one-process fastce's speed; "
                   f"{plain / med[CASES[0]]:.2f}x plain dask (goal >= 3x). {len(row.times[CASES[0]])} repeats, "
                   "round-robin. The one-process case draws other random numbers (same distribution).")
    from .report import _with_legend

    return "\n".join(_with_legend(out, legend, DASK_SECTION, DASK_DOCS))


def dask_records(rows: Sequence[DaskRow]) -> List[Dict[str, Any]]:
    recs = []
    for row in rows:
        for k, v in row.times.items():
            recs.append({"section": "dask", "workload": row.workload.name, "case": k, "median_s": statistics.median(v),
                         "times_s": v, "loss": row.losses.get(k), "numel": row.workload.numel})
        if row.error:
            recs.append({"section": "dask", "workload": row.workload.name, "skipped": row.error})
    return recs
