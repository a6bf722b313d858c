"""``fastce bench``: the options and the run (called by :mod:`fastce.cli`).

Three runs (:mod:`.suites`): the default (about a minute), ``--full`` (the complete suite) and
``--quick`` (the smoke run of the tests). The tables go to stdout, then the legend (what every
column means); progress goes to stderr; ``--json`` prints records and no table or legend.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any, Dict, List

from . import roofline
from .dask_table import dask_records, format_dask_table, run_dask
from .peers import KL_PEERS, PEER_NAMES, PEERS, default_threads, get_peer, kl_cases, per_call_cases
from .plot import plot_sweep
from .report import (EMULATED_WARNING, KL_DOCS, KL_SECTION, KL_TITLE, Legend, ce_record, environment, format_environment,
                     format_linear_table, format_per_call_table, format_table, json_text, linear_record,
                     per_call_records)
from .suites import SUITES, suite_of
from .timing import BenchConfig, log, run, run_linear, run_per_call
from .workloads import FORWARD, PASSES, ROOFLINE_MIN_NUMEL, all_threads, parse_threads, select_sets, sweep_workloads

CE_TITLE = "softmax cross-entropy, G logits/s (higher is better):"



def add_arguments(parser) -> None:
    """Add the ``fastce bench`` options to an argparse parser."""
    d, f, q = SUITES["default"], SUITES["full"], SUITES["quick"]
    run_kind = parser.add_mutually_exclusive_group()
    run_kind.add_argument("--full", action="store_true",
                          help="the complete suite: every workload (options, dtypes, shapes), the KL table, "
                          "the whole per-call curve, the large LM head with torch's chunked options and the "
                          f"dask table; >= {f.min_time:g} s a cell (many minutes)")
    run_kind.add_argument("--quick", action="store_true",
                          help=f"a smoke run: small inputs, >= {q.min_time:g} s a cell (well under a minute)")
    parser.add_argument("--threads", default="1,all", metavar="LIST",
                        help="comma-separated thread counts, 'all' = every available core (default: 1,all)")
    parser.add_argument("--workload", "-w", action="append", metavar="NAME",
                        help="only workloads whose name is/contains NAME, among those of the run chosen "
                        "(default, --full or --quick; repeatable; see --list)")
    parser.add_argument("--pass", dest="passes", choices=[FORWARD, "loss+grad", "both"], default="both",
                        help="which pass to time (default: both)")
    parser.add_argument("--peers", default=None, metavar="LIST",
                        help=f"comma-separated libraries (default: all installed of {','.join(PEER_NAMES)})")
    parser.add_argument("--min-time", type=float, default=None, metavar="S",
                        help=f"time each cell for at least S seconds (default {d.min_time:g}; "
                        f"{f.min_time:g} with --full, {q.min_time:g} with --quick)")
    parser.add_argument("--min-repeats", type=int, default=None, metavar="K",
                        help="at least K timed repeats per cell (default 3)")
    parser.add_argument("--max-time", type=float, default=None, metavar="S",
                        help=f"stop timing a cell after S seconds even below --min-repeats (default {d.max_time:g}, "
                        f"which leaves the LM-head table's rounds alone; {f.max_time:g} with --full or --quick)")
    parser.add_argument("--sequential", action="store_true",
                        help="time each library's repeats back to back instead of round-robin within a row")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                        help="write results as a JSON list of dicts to FILE ('-' or no FILE: stdout, "
                        "no table or legend); each has a 'section': table, kl, roofline, per_call, linear, "
                        "dask or sweep")
    parser.add_argument("--plot", metavar="FILE.png", default=None,
                        help="also sweep the number of classes (forward, all threads) and plot throughput")
    parser.add_argument("--plot-only", action="store_true", help="with --plot: skip the main table")
    parser.add_argument("--no-linear", action="store_true",
                        help="skip the linear + cross-entropy (LM head) table (workloads lin-*)")
    parser.add_argument("--no-per-call", action="store_true",
                        help="skip the per-call table (workloads call-NxC: median us per loss+grad call "
                        "of fastce, the NumPy twin and torch, at fastce's default threads; N*C from 640 to 1e7 "
                        "in four sizes, 1e2 to 1e7 in nine with --full, four smaller with --quick; "
                        "left out by --pass forward)")
    parser.add_argument("--no-roofline", action="store_true",
                        help="do not measure this machine's roofline (read, read+write, exp) for the "
                        f"%%roof column of rows with >= 2^{ROOFLINE_MIN_NUMEL.bit_length() - 1} logits")
    parser.add_argument("--no-dask", action="store_true",
                        help="skip the dask table (workloads dask-*: a 2-worker LocalCluster; --full and "
                        "--quick only)")
    parser.add_argument("--list", action="store_true",
                        help="list the run's workloads (with --full or --quick: theirs) and the libraries, then exit")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output on stderr")


def _list(suite, workloads_all, per_call_all, linear_all, kl_all, dask_all) -> int:
    what = {"default": "the default run (about a minute; --full: the complete suite)",
            "full": "--full (the complete suite)", "quick": "--quick (the smoke run)"}[suite.name]
    print(f"workloads of {what}:")
    for w in workloads_all:
        print(f"  {w.name:20s} {w.describe()}")
    for w in kl_all:
        print(f"  {w.name:20s} KL table, {w.describe()}")
    for w in per_call_all:
        print(f"  {w.name:20s} per-call table, {w.describe()}")
    for w in linear_all:
        print(f"  {w.name:20s} linear + cross-entropy, {w.describe()}")
    for w in dask_all:
        print(f"  {w.name:20s} dask, {w.describe()}")
    print("libraries:")
    for p in PEERS:
        why = p.unavailable()
        print(f"  {p.name:14s} {'available' if why is None else why}")
    return 0


def main(args) -> int:
    """Run ``fastce bench`` with parsed ``args``; returns an exit status."""
    suite = suite_of(args)
    workloads_all, per_call_all, linear_all, kl_all, dask_all = suite.sets
    if getattr(args, "no_linear", False):
        linear_all = ()
    if getattr(args, "no_per_call", False) or args.passes == FORWARD:
        per_call_all = ()
    if getattr(args, "no_dask", False):
        dask_all = ()
    if args.list:
        return _list(suite, workloads_all, per_call_all, linear_all, kl_all, dask_all)
    try:
        workloads, per_call_wls, linear_wls, kl_wls, dask_wls = select_sets(
            (workloads_all, per_call_all, linear_all, kl_all, dask_all), args.workload)
        threads = parse_threads(args.threads)
        peers = list(PEER_NAMES) if args.peers is None else [s.strip() for s in args.peers.split(",") if s.strip()]
        for name in peers:
            get_peer(name)
    except (ValueError, KeyError) as exc:
        msg = exc.args[0] if exc.args else exc
        if suite.name != "full" and str(msg).startswith("no workload matches"):
            msg = f"{msg} (--full has more: fastce bench --full --list)"
        print(f"fastce bench: error: {msg}", file=sys.stderr)
        return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("fastce bench: error: --plot needs matplotlib, which is not installed "
                  "(pip install matplotlib)", file=sys.stderr)
            return 2
    cfg = BenchConfig(
        workloads=workloads,
        threads=threads,
        passes=PASSES if args.passes == "both" else (args.passes,),
        peers=peers,
        min_time=args.min_time if args.min_time is not None else suite.min_time,
        min_repeats=args.min_repeats if args.min_repeats is not None else 3,
        max_time=args.max_time if args.max_time is not None else suite.max_time,
        interleave=not args.sequential,
        verbose=not args.quiet,
    )
    to_stdout_json = args.json == "-"
    env = environment()
    if env["emulated"]:
        log(cfg, EMULATED_WARNING.format(env["emulated"]))
    missing = [f"{p}: {get_peer(p).unavailable()}" for p in peers if get_peer(p).unavailable()]
    if missing:
        log(cfg, "[bench] not available: " + "; ".join(missing))

    legend = Legend(timing=f"Each cell of a G logits/s table: one untimed warm-up call (compilation, first touch), then at least "
                    f"{cfg.min_repeats} timed calls and {cfg.min_time:g} s, stopping after {cfg.max_time:g} s of "
                    f"timed calls (fewer calls: marked ~).")
    t0 = time.perf_counter()
    results: List[Dict[str, Any]] = []
    text: List[str] = []
    if not (args.plot and args.plot_only):
        roofs = None  # this machine's roofline, for the %roof of the large rows of both G/s tables
        if (not getattr(args, "no_roofline", False) and "fastce" in peers
                and any(w.numel >= ROOFLINE_MIN_NUMEL for w in workloads + kl_wls)):
            log(cfg, "[bench] roofline: read, read+write, exp at " + ",".join(map(str, threads)) + " threads")
            roofs = roofline.measure(threads) or {}
            results += [r.record() for r in roofs.values()]
        if workloads:
            cells = run(cfg)
            results += [ce_record(c, "table", roofs) for c in cells]
            text.append(format_table(cells, title=CE_TITLE, roofs=roofs, legend=legend))
        if kl_wls:
            kcells = run(dataclasses.replace(cfg, workloads=kl_wls), cases=kl_cases(peers))
            results += [ce_record(c, "kl", roofs) for c in kcells]
            text.append(format_table(kcells, title=KL_TITLE, roofs=roofs, peers=KL_PEERS, legend=legend,
                                     section=KL_SECTION, docs=KL_DOCS))
        if per_call_wls:
            pcells = run_per_call(cfg, per_call_wls, per_call_cases(peers), default_threads(),
                                  min_time=suite.per_call_min_time, samples=suite.per_call_samples)
            results += per_call_records(pcells)
            text.append(format_per_call_table(pcells, legend=legend))
        if linear_wls:
            # BLAS-bound: timed once, at the largest thread count asked for; its rounds are the
            # point (paired ratios), so the default run's short --max-time does not cut them
            lcfg = cfg if args.max_time is not None else dataclasses.replace(cfg, max_time=SUITES["full"].max_time)
            lcells = run_linear(lcfg, linear_wls, max(threads), pause=suite.linear_pause,
                                quick=not suite.slow_cases, rounds=suite.linear_rounds)
            results += [linear_record(c) for c in lcells]
            text.append(format_linear_table(lcells, legend=legend, rounds=max(cfg.min_repeats, suite.linear_rounds),
                                            pause=suite.linear_pause))
        if dask_wls and "fastce" in peers:
            drows = run_dask(cfg, dask_wls)
            results += dask_records(drows)
            text.append(format_dask_table(drows, legend=legend))
    if args.plot:
        sweep_cfg = dataclasses.replace(
            cfg,
            workloads=sweep_workloads(),
            threads=[all_threads()],
            passes=(FORWARD,),
            peers=[p for p in peers if not get_peer(p).loss_grad_only],  # forward-capable
        )
        log(cfg, "[bench] class-count sweep (forward, all threads)")
        scells = run(sweep_cfg)
        results += [ce_record(c, "sweep") for c in scells]
        text.append(format_table(scells, title="class-count sweep (forward, all threads), G logits/s:",
                                 legend=legend))
        plot_sweep(scells, args.plot,
                   title=f"softmax cross-entropy forward, {all_threads()} threads, {env.get('cpu', '')}")
        text.append(f"plot written to {args.plot}")
    elapsed = time.perf_counter() - t0

    if args.json is not None:
        if to_stdout_json:
            print(json_text(results))
        else:
            with open(args.json, "w") as f:
                f.write(json_text(results) + "\n")
    if not to_stdout_json:
        print(format_environment(env))
        print("\n\n".join(text + [legend.text()]))
        run_name = {"default": "the default run; --full runs the complete suite",
                    "full": "--full, the complete suite", "quick": "--quick, a smoke run"}[suite.name]
        print(f"# total {elapsed:.0f} s ({run_name})")
    else:
        log(cfg, f"[bench] total {elapsed:.0f} s")
    return 0
