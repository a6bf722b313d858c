"""Command-line interface: ``fastce <command> ...``.

Commands:
  bench   benchmark fastce's cross-entropy against torch / NumPy / JAX / scikit-learn
  score   NLL / perplexity / top-k accuracy of a .npy logits file (or hidden states + linear
          head), read in memory-mapped row blocks so files larger than memory work
  compare a model's logits against a reference's (KL, agreement, both NLLs), two files in
          row blocks

Add a command by writing ``_add_<name>(subparsers)`` that registers a
subparser with ``set_defaults(func=...)`` and listing it in ``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, List, Optional, Sequence


def _version() -> str:
    from fastce._version import __version__

    return __version__


def _run_bench(args: argparse.Namespace) -> int:
    from fastce import bench

    return bench.main(args)


def _add_bench(subparsers) -> None:
    from fastce import bench

    p = subparsers.add_parser(
        "bench",
        help="benchmark cross-entropy against other libraries",
        description=(
            "Time softmax cross-entropy (forward loss, and loss+gradient) in fastce and in every "
            "installed peer (torch, NumPy, JAX/optax, scikit-learn) on the same data, and print "
            "throughput in G logits/s with fastce/peer ratios."
        ),
        epilog="examples:  fastce bench --quick   |   fastce bench -w 4096x32000 --threads all   |   "
        "fastce bench --plot ce.png --plot-only",
    )
    bench.add_arguments(p)
    p.set_defaults(func=_run_bench)


def _add_score(subparsers) -> None:
    from fastce.cli import score as _score_cli

    p = subparsers.add_parser(
        "score",
        help="NLL, perplexity and top-k accuracy of a .npy logits file, in row blocks",
        usage=_score_cli.USAGE,
        description=(
            "Score integer targets against logits (N, V) stored in a .npy file, or against\n"
            "HIDDEN @ WEIGHT.T (+ BIAS) computed chunk by chunk: number of scored tokens, mean\n"
            "negative log-likelihood, perplexity and top-k accuracy. The files are read through\n"
            "memory maps one row block at a time, so files larger than memory work and the\n"
            "memory used is about one block. Rows whose target is --ignore-index are skipped."
        ),
        epilog="examples:\n"
        "  fastce score logits.npy targets.npy --top-k 5,10\n"
        "  fastce score --hidden h.npy --weight w.npy --bias b.npy targets.npy --json\n"
        "  fastce score big.npy targets.npy --block-mb 16 --threads 2\n"
        "exit status: 0 ok, 2 usage or input error, 1 read or memory failure",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _score_cli.add_arguments(p)
    p.set_defaults(func=lambda args: _score_cli.main(args, p))


def _add_compare(subparsers) -> None:
    from fastce.cli import compare as _compare_cli

    p = subparsers.add_parser(
        "compare",
        help="KL divergence, agreement and NLLs of a model's logits against a reference's, in row blocks",
        usage=_compare_cli.USAGE,
        description=(
            "Compare a model's logits (N, V) with a reference model's, row by row, from two .npy\n"
            "files (or two LM heads, HIDDEN @ WEIGHT.T computed chunk by chunk): KL(p_ref || q_model)\n"
            "mean, max and quantiles, top-k agreement, and with --targets both models' NLL,\n"
            "perplexity, delta NLL, perplexity ratio and RMS delta-p. Both files are read through\n"
            "memory maps one row block at a time: memory stays at about one block per file."
        ),
        epilog="examples:\n"
        "  fastce compare quantized.npy base.npy --targets tokens.npy --top-k 5\n"
        "  fastce compare q.npy base.npy --dtype bfloat16 --json\n"
        "  fastce compare --hidden h.npy --weight w.npy --ref-hidden rh.npy --ref-weight rw.npy\n"
        "exit status: 0 ok, 2 usage or input error, 1 read or memory failure",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _compare_cli.add_arguments(p)
    p.set_defaults(func=lambda args: _compare_cli.main(args, p))


_COMMANDS: List[Callable] = [_add_bench, _add_score, _add_compare]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastce",
        description="fastce: fast softmax cross-entropy for NumPy on the CPU.",
    )
    parser.add_argument("--version", action="version", version=f"fastce {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``fastce`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
