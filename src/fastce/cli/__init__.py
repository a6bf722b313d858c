"""The command line, ``fastce <command> ...``: the ``fastce`` console script and ``python -m fastce``.

Commands:

* ``fastce bench``: benchmark fastce's cross-entropy against torch / NumPy / JAX / scikit-learn
  (the options and the run live in :mod:`fastce.bench`).
* ``fastce score``: NLL, perplexity and top-k accuracy of a ``.npy`` logits file (or hidden
  states and a linear head), read in memory-mapped row blocks so that files larger than memory
  work (:mod:`fastce.cli.score`).
* ``fastce compare``: a model's logits against a reference's (KL, agreement, both NLLs), two
  files in row blocks (:mod:`fastce.cli.compare`).

The package:

* :mod:`fastce.cli` (this module): :func:`main`, the entry point, and :func:`build_parser`, the
  whole parser with every subcommand (the documentation's command-line reference is generated
  from it).
* :mod:`fastce.cli.score`, :mod:`fastce.cli.compare`: one file command each: its arguments
  (``add_arguments``), its work and output, and its ``main(args, parser)``.
* :mod:`fastce.cli.common`: what the file commands share: argument types, a model's checked
  headers, the targets' validation pass, errors and exit statuses, the progress bar, JSON and
  the dask options.
* :mod:`fastce.cli.npy_blocks`: the ``.npy`` header checks and the row-block reader that maps
  one block of a file at a time (and the same files as dask arrays).

Add a command by writing ``_add_<name>(subparsers)`` here, which registers a subparser with
``set_defaults(func=...)`` (``func(args)`` returns the exit status), and listing it in
``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence

if TYPE_CHECKING:  # pragma: no cover
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["build_parser", "main"]

#: The exit status after Ctrl-C (128 + SIGINT), as a shell reports it.
_INTERRUPTED = 130

_FILE_EXIT_STATUS = "exit status: 0 ok, 2 usage or input error, 1 read or memory failure"


def _version() -> str:
    from fastce._version import __version__

    return __version__


def _run_bench(args: argparse.Namespace) -> int:
    from fastce import bench

    return bench.main(args)


def _add_bench(subparsers: _Subparsers) -> None:
    from fastce import bench

    p = subparsers.add_parser(
        "bench",
        help="benchmark cross-entropy against other libraries",
        description=(
            "Time softmax cross-entropy (forward loss, and loss+gradient) in fastce and in every\n"
            "installed peer (torch, NumPy, JAX/optax, scikit-learn) on the same data, and print\n"
            "throughput in G logits/s with fastce/peer ratios."
        ),
        epilog="examples:\n"
        "  fastce bench                              the default run, about a minute\n"
        "  fastce bench --full                       the complete suite (many minutes)\n"
        "  fastce bench --quick                      a smoke run on small inputs\n"
        "  fastce bench -w 4096x32000 --threads all\n"
        "  fastce bench --json out.json\n"
        "  fastce bench --plot ce.png --plot-only",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_arguments(p)
    p.set_defaults(func=_run_bench)


def _add_score(subparsers: _Subparsers) -> None:
    from . import score

    p = subparsers.add_parser(
        "score",
        help="NLL, perplexity and top-k accuracy of a .npy logits file, in row blocks",
        usage=score.USAGE,
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
        "\n" + _FILE_EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    score.add_arguments(p)
    p.set_defaults(func=lambda args: score.main(args, p))


def _add_compare(subparsers: _Subparsers) -> None:
    from . import compare

    p = subparsers.add_parser(
        "compare",
        help="KL divergence, agreement and NLLs of a model's logits against a reference's, in row blocks",
        usage=compare.USAGE,
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
        "\n" + _FILE_EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_arguments(p)
    p.set_defaults(func=lambda args: compare.main(args, p))


_COMMANDS: List[Callable[[_Subparsers], None]] = [_add_bench, _add_score, _add_compare]


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``fastce`` command, with every subcommand and its options.

    Each subcommand's parser sets ``func``: ``args.func(args)`` runs the parsed command and
    returns its exit status (:func:`main` does that). Building the parser imports
    :mod:`fastce.bench` (for its options) but runs nothing.

    Returns
    -------
    argparse.ArgumentParser
        The parser, ``prog="fastce"``, with the subcommands ``bench``, ``score`` and
        ``compare`` under the positional ``COMMAND`` (``dest="command"``) and ``--version``.

    Examples
    --------
    >>> from fastce.cli import build_parser
    >>> args = build_parser().parse_args(["score", "logits.npy", "targets.npy", "--top-k", "5"])
    >>> args.command, args.files, args.top_k
    ('score', ['logits.npy', 'targets.npy'], [[5]])
    """
    parser = argparse.ArgumentParser(
        prog="fastce",
        description="fastce: fast softmax cross-entropy for NumPy on the CPU.\n\n"
        "Run 'fastce COMMAND --help' for the options of one command.",
        epilog="examples:\n"
        "  fastce score logits.npy targets.npy --top-k 5\n"
        "  fastce compare model.npy reference.npy --targets targets.npy\n"
        "  fastce bench --quick",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fastce {_version()}",
                        help="print fastce's version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``fastce`` command: the entry point of the console script and of ``python -m fastce``.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program's name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 ok; 2 for a usage or input error (also without a command, after
        printing the help on stderr); 1 for a read or memory failure; 130 after Ctrl-C.

    Raises
    ------
    SystemExit
        Where argparse exits: ``--help``, ``--version`` (status 0) and usage errors (status 2).

    Examples
    --------
    >>> from fastce.cli import main
    >>> main(["--version"])  # doctest: +SKIP
    fastce 0.1.0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Optional[Callable[[argparse.Namespace], Optional[int]]] = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return _INTERRUPTED
