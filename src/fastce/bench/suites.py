"""The three runs of ``fastce bench``: which workloads each table gets and how long a cell is
timed.

* default (no flag): about a minute on an idle 2-core machine -- the headline (4096, 32000)
  float32 row at 1 and all threads, one 16-bit row, few classes, a K-dim input, a per-call
  curve of four sizes, one small LM head; no KL or dask table; shorter timing (>= 0.1 s a
  cell, and at most 3 s: a peer whose call takes seconds, the NumPy twin's loss+grad of
  (4096, 32000) say, gets one or two timed calls, marked ~);
* ``--full``: the complete suite the README's tables and the issues' targets quote -- every
  option and dtype, the KL table, the whole per-call curve, the (4096, 1024, 32000) LM head
  with torch's chunked options, the dask table; >= 0.5 s a cell (at most 30 s), >= 7 rounds of
  the LM head;
* ``--quick``: the smoke run of the tests, smaller shapes, >= 0.1 s a cell.

``-w`` selects among the workloads of the run's suite (``fastce bench [--full|--quick]
--list`` shows them).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

from .dask_table import DEFAULT_DASK_WORKLOADS, FULL_DASK_WORKLOADS, QUICK_DASK_WORKLOADS
from .timing import LINEAR_ROUNDS
from .workloads import (DEFAULT_KL_WORKLOADS, DEFAULT_LINEAR_WORKLOADS, DEFAULT_PER_CALL_WORKLOADS,
                        DEFAULT_WORKLOADS, FULL_KL_WORKLOADS, FULL_LINEAR_WORKLOADS, FULL_PER_CALL_WORKLOADS,
                        FULL_WORKLOADS, QUICK_KL_WORKLOADS, QUICK_LINEAR_WORKLOADS, QUICK_PER_CALL_WORKLOADS,
                        QUICK_WORKLOADS)


@dataclasses.dataclass(frozen=True)
class Suite:
    """One run: its workload sets (one per table) and its timing defaults."""

    name: str  # "default", "full", "quick"
    flag: str  # the option that selects it ("" for the default)
    workloads: Tuple[Any, ...]  # cross-entropy table
    kl: Tuple[Any, ...]
    per_call: Tuple[Any, ...]
    linear: Tuple[Any, ...]
    dask: Tuple[Any, ...]
    min_time: float  # s a cell is timed at least (--min-time's default)
    max_time: float  # s a cell is timed at most, even below --min-repeats (--max-time's default)
    linear_rounds: int  # rounds of the LM-head table at least
    linear_pause: float  # s between its calls (BLAS workers spin after a call)
    per_call_min_time: float  # s a per-call cell is timed at least (at most --min-time)
    per_call_samples: int  # timed samples of a per-call cell at least
    slow_cases: bool  # torch's chunked LM-head options (slower than the unchunked ones)

    @property
    def sets(self) -> Tuple[Tuple[Any, ...], ...]:
        """(cross-entropy, per-call, linear, KL, dask) workloads."""
        return (self.workloads, self.per_call, self.linear, self.kl, self.dask)


SUITES: Dict[str, Suite] = {
    "default": Suite("default", "", DEFAULT_WORKLOADS, DEFAULT_KL_WORKLOADS, DEFAULT_PER_CALL_WORKLOADS,
                     DEFAULT_LINEAR_WORKLOADS, DEFAULT_DASK_WORKLOADS, min_time=0.1, max_time=3.0, linear_rounds=3,
                     linear_pause=0.25, per_call_min_time=0.1, per_call_samples=10, slow_cases=False),
    "full": Suite("full", "--full", FULL_WORKLOADS, FULL_KL_WORKLOADS, FULL_PER_CALL_WORKLOADS,
                  FULL_LINEAR_WORKLOADS, FULL_DASK_WORKLOADS, min_time=0.5, max_time=30.0, linear_rounds=LINEAR_ROUNDS,
                  linear_pause=0.25, per_call_min_time=0.2, per_call_samples=10, slow_cases=True),
    "quick": Suite("quick", "--quick", QUICK_WORKLOADS, QUICK_KL_WORKLOADS, QUICK_PER_CALL_WORKLOADS,
                   QUICK_LINEAR_WORKLOADS, QUICK_DASK_WORKLOADS, min_time=0.1, max_time=30.0, linear_rounds=3,
                   linear_pause=0.1, per_call_min_time=0.03, per_call_samples=5, slow_cases=False),
}


def suite_of(args) -> Suite:
    """The suite that parsed ``fastce bench`` options ask for."""
    if getattr(args, "full", False):
        return SUITES["full"]
    if getattr(args, "quick", False):
        return SUITES["quick"]
    return SUITES["default"]
