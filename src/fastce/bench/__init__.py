"""Benchmark harness for fastce (used by ``fastce bench`` and by ``benchmarks/``).

Four tables, one machinery:

* the cross-entropy table: fastce's softmax cross-entropy (forward loss, and fused
  loss+gradient) against torch, a NumPy twin, JAX/optax and scikit-learn on the same data, in
  G logits/s with fastce/peer ratios, at each ``--threads`` count; rows of >= 2^24 logits
  also give fastce's fraction of this machine's roofline (``%roof``, measured in the run);
* the KL table (workloads ``kl-*``): ``fastce.kl_div`` / ``kl_div_with_grad`` of two models'
  logits against torch's ``kl_div(log_softmax, log_softmax, log_target=True)`` (+ backward) and
  a NumPy twin, in G logit pairs/s, with %roof against two input streams;
* the per-call table (workloads ``call-NxC``; ``--no-per-call`` skips it): median
  microseconds per ``fastce.cross_entropy_with_grad(x, t)`` call (default options and
  threads) against N*C from 1e2 to 1e7, beside the NumPy twin and torch, with ratios;
* the linear + cross-entropy (LM head) table (workloads ``lin-*``; ``--no-linear`` skips it):
  ``fastce.linear_cross_entropy`` and ``..._with_grad`` in seconds per call against the NumPy
  matmul(s) any LM head must do anyway (``x matmul``: the ratio of min times, and the median
  of the per-round ratios) and against torch's
  ``F.linear_cross_entropy``, with the peak extra memory of each call.

Modules, one job each:

* :mod:`.workloads` -- the workloads (:class:`Workload`, :class:`LinearWorkload`), their data
  (:class:`DataCache`), the sets (``DEFAULT_*``, ``FULL_*``, ``QUICK_*``, the per-call shapes,
  the class-count sweep), ``-w`` and ``--threads`` selection;
* :mod:`.suites` -- the three runs (:data:`SUITES`): the default (about a minute), ``--full``
  (the complete suite) and ``--quick`` (the tests' smoke run), each a workload set per table
  and its timing defaults;
* :mod:`.peers` -- the cases a row compares (:class:`Case`): the cross-entropy :data:`PEERS`
  and the NumPy twin :func:`numpy_cross_entropy`, :func:`per_call_cases`, the
  :data:`LINEAR_CASES`;
* :mod:`.timing` -- the one timing loop (:func:`run`): warm-up, round-robin over a row's
  cases, ``>= --min-repeats`` calls and ``>= --min-time`` s, median, ``--max-time`` cut;
  short calls timed in batches (``batch_min_s``, the per-call table);
* :mod:`.roofline` -- this machine's roofline (the extension's read and read+write probes,
  its exp) and the bound it puts on a row;
* :mod:`.memory` -- free memory, and the peak extra memory of one call (tracemalloc, RSS);
* :mod:`.report` -- the one table writer (:func:`report.render`, columns as data, each with its
  legend text), every table's columns and notes, the :class:`~.report.Legend` printed after the
  tables, the environment header, the JSON records (no legend);
* :mod:`.plot` -- the ``--plot`` figure (matplotlib, imported only then);
* :mod:`.cli` -- the ``fastce bench`` options and run (:func:`add_arguments`, :func:`main`).

Importing this package needs only NumPy and the standard library: every peer imports its
library inside ``prepare``, when it is timed.

Adding to it
------------
* A workload: one entry in ``FULL_WORKLOADS`` (and ``DEFAULT_WORKLOADS`` if the default run,
  about a minute, must show it) / ``QUICK_WORKLOADS`` (or the other tables' sets).
  A new kind (e.g. bfloat16 logits: a ``dtype`` that ``make_data`` must create; KL
  divergence: a workload with a second input) is a class with ``name``, ``describe()``,
  ``data_key``, ``make_shared_data()``, ``with_options(data)`` and ``json_fields()``; a curve
  of per-call time over N*C sizes is a generated list, like ``per_call_workloads()``.
* A peer: a :class:`Peer` subclass in :mod:`.peers` (``name``, ``requires``, ``prepare``;
  ``unsupported`` for the cells it cannot do, ``threads`` for its thread count, ``note`` for
  its legend line) listed in ``PEERS``; it then has a column, a ratio column and ``--peers``.
  A case of another table (e.g. dask) is a :class:`Case` listed with that table's cases; a
  ``baseline=True`` case gives every other case of its row a ``ratio``.
* A column: one :class:`report.Column` (header, text of a line, ``doc``: its legend line) in ``ce_columns``,
  ``per_call_columns`` or ``linear_columns`` (e.g. ``%roof``, from ``cell.gps`` and the
  row's roofline); if it needs a new measurement, a field of :class:`Cell` set in
  :mod:`.timing`, and the JSON record in :mod:`.report`.
"""

from .cli import add_arguments, main
from .memory import available_memory
from .peers import (LINEAR_CASES, NA, PEER_NAMES, PEERS, Case, LinearCase, Peer, all_blas_threads,
                    default_threads, get_peer, linear_cases, numpy_cross_entropy, per_call_cases)
from .report import format_linear_table, format_per_call_table, format_table
from .roofline import Roofline
from .timing import BenchConfig, Cell, loss_value, run, run_linear, run_per_call
from .suites import SUITES, Suite
from .workloads import (DEFAULT_LINEAR_WORKLOADS, DEFAULT_PER_CALL_WORKLOADS, DEFAULT_WORKLOADS,
                        FULL_LINEAR_WORKLOADS, FULL_PER_CALL_WORKLOADS, FULL_WORKLOADS, FORWARD, LOSS_GRAD, PASSES, QUICK_LINEAR_WORKLOADS,
                        QUICK_PER_CALL_WORKLOADS, QUICK_WORKLOADS, DataCache, LinearWorkload,
                        Workload, all_threads, make_data, make_linear_data, parse_threads,
                        per_call_workloads, select_workloads, sweep_workloads)

__all__ = [
    "add_arguments", "main", "available_memory", "LINEAR_CASES", "NA", "PEER_NAMES", "PEERS",
    "Case", "LinearCase", "Peer", "all_blas_threads", "default_threads", "get_peer",
    "linear_cases", "numpy_cross_entropy", "per_call_cases", "format_linear_table",
    "format_per_call_table", "format_table", "Roofline", "BenchConfig", "Cell", "loss_value",
    "run", "run_linear", "run_per_call", "DEFAULT_LINEAR_WORKLOADS", "DEFAULT_PER_CALL_WORKLOADS",
    "DEFAULT_WORKLOADS", "FULL_LINEAR_WORKLOADS", "FULL_PER_CALL_WORKLOADS", "FULL_WORKLOADS",
    "SUITES", "Suite", "FORWARD", "LOSS_GRAD", "PASSES", "QUICK_LINEAR_WORKLOADS",
    "QUICK_PER_CALL_WORKLOADS", "QUICK_WORKLOADS", "DataCache", "LinearWorkload", "Workload",
    "all_threads", "make_data", "make_linear_data", "parse_threads", "per_call_workloads",
    "select_workloads", "sweep_workloads",
]
