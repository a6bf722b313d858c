"""``fastce score``: cross-entropy statistics of a ``.npy`` logits file (or a hidden-state file and
a linear head), read in row blocks so that files larger than memory work.

What it computes: for logits ``x`` of shape ``(N, V)`` and integer targets ``t`` of shape
``(N,)``, every row whose target is not ``--ignore-index`` is scored: its negative
log-likelihood ``nll = logsumexp(x) - x[t]`` and whether ``t`` ranks within the top ``k``
logits. The totals
(tokens, summed NLL, correct@k) are accumulated block by block with :meth:`fastce.Score.merge`,
which is exact, so the block size changes the result only through floating-point summation order.
With ``--hidden H.npy --weight W.npy [--bias B.npy]`` the logits are ``H @ W.T + b``, computed by
:func:`fastce.score_linear`; the ``(N, V)`` logits are never stored.

How the files are read:

* The logits (or hidden) and targets files are read by :mod:`fastce.cli.npy_blocks`, one
  :class:`~fastce.cli.npy_blocks.RowBlockReader` per file, stepping through the same row blocks:
  every header is checked before a single logit is read, and only one block's byte range is
  mapped at a time, so memory stays at about one block whatever the file size (its docstring
  says how and why). While block ``i`` is scored, block ``i+1`` is prefetched.
* The targets are small (one integer per row); they are validated in a first streamed pass (so an
  out-of-range target fails before the long scan starts, with its row number) and then read in
  the same row blocks as the logits, copied to int64 (a copy, so the window is unmapped at once).
* The weight and bias of the linear form are read many times (once per block), so they are
  memory-mapped whole.

Output: a small table on stdout, or ``--json``. A tqdm progress bar goes to stderr only when
stderr is a terminal; otherwise the command prints nothing but the result. Input and usage errors
print one line ``fastce score: error: ...`` on stderr and exit with status 2; a failure while
reading or mapping (I/O error, out of memory) exits with status 1. No traceback in either case.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence

import numpy as np

from .common import (ModelFiles, add_dask_arguments, check_targets, dask_client, error, guarded, int64,
                     json_value, linear_files, load_whole, logits_files, positive_float, positive_int, progress,
                     targets_block, top_k_list, uses_dask)
from .npy_blocks import (DEFAULT_BLOCK_MB, InputError, NpyInfo, RowBlockReader, as_dask_array, block_bounds,
                         check_int, read_npy_header, rows_per_block)

if TYPE_CHECKING:  # pragma: no cover
    from fastce import Score

__all__ = [
    "USAGE",
    "Inputs",
    "check_inputs",
    "Result",
    "score_files",
    "score_files_dask",
    "result_dict",
    "format_table",
    "add_arguments",
    "main",
]

#: The usage lines of ``fastce score --help``.
USAGE = (
    "fastce score [options] LOGITS.npy TARGETS.npy\n"
    "       fastce score [options] --hidden HIDDEN.npy --weight WEIGHT.npy [--bias BIAS.npy] "
    "TARGETS.npy"
)


# --------------------------------------------------------------------------------------------
# the scoring


@dataclass
class Inputs(ModelFiles):
    """Checked headers of one ``fastce score`` invocation: the model's files and the targets.

    Parameters
    ----------
    logits : NpyInfo or ZarrInfo or None
        The ``(N, V)`` logits file (None in the linear form).
    hidden, weight, bias : NpyInfo or None
        The linear form's hidden states ``(N, H)``, weight ``(V, H)`` and bias ``(V,)``.
    targets : NpyInfo or None
        The ``(N,)`` integer targets file (always set by :func:`check_inputs`).
    """

    targets: Optional[NpyInfo] = None

    @property
    def n(self) -> int:
        """The number of rows ``N``."""
        assert self.targets is not None, "Inputs without a targets file"
        return self.targets.shape[0]


def check_inputs(logits: Optional[str], targets: str, hidden: Optional[str] = None,
                 weight: Optional[str] = None, bias: Optional[str] = None,
                 logits_dtype: Optional[str] = None, zarr_ok: bool = False) -> Inputs:
    """Read and cross-check every header, in command-line order, before any data is read.

    Give ``logits``, or ``hidden`` and ``weight`` (and optionally ``bias``).

    Parameters
    ----------
    logits : str or None
        The ``(N, V)`` logits file; None for the linear form.
    targets : str
        The ``(N,)`` integer targets file.
    hidden, weight, bias : str, optional
        The linear form's files: hidden states ``(N, H)``, weight ``(V, H)``, bias ``(V,)``.
    logits_dtype : {None, "bfloat16"}, optional
        ``"bfloat16"`` reads a logits file saved from ml_dtypes' bfloat16 (``|V2``).
    zarr_ok : bool, optional
        Accept a zarr array as the logits (read through dask only).

    Returns
    -------
    Inputs
        The checked headers.

    Raises
    ------
    InputError
        On the first problem.
    """
    if logits is not None:
        model = logits_files(logits, "logits", logits_dtype, zarr_ok=zarr_ok)
    else:
        if hidden is None or weight is None:
            raise InputError("the linear form needs both --hidden and --weight")
        model = linear_files(hidden, weight, bias)
    t = _targets_header(targets)
    x = model.rows
    if x.shape[0] != t.shape[0]:
        what = "logits have" if logits is not None else "hidden has"
        raise InputError(f"{what} {x.shape[0]} rows but targets have {t.shape[0]} "
                         f"({x.path!r} is {x.describe()}, {targets!r} is {t.describe()})")
    return Inputs(targets=t, **vars(model))


def _targets_header(targets: str) -> NpyInfo:
    t = read_npy_header(targets, "targets")
    check_int(t, "targets")
    if len(t.shape) != 1:
        raise InputError(f"targets file {targets!r}: shape {t.shape} is not 1-D; "
                         "targets must have shape (N,)")
    return t


@dataclass
class Result:
    """A finished scan.

    Parameters
    ----------
    score : fastce.Score
        The merged statistics.
    inputs : Inputs
        What was read.
    ignored : int
        Rows whose target is the ignore index.
    """

    score: Score
    inputs: Inputs
    ignored: int


def score_files(inputs: Inputs, *, ignore_index: int = -100, top_k: Sequence[int] = (1,),
                softcap: Optional[float] = None, num_threads: Optional[int] = None,
                block_rows: Optional[int] = None, block_mb: Optional[float] = None,
                progress: Optional[Callable[[int], object]] = None) -> Result:
    """Score the files of ``inputs`` block by block and merge the per-block :class:`fastce.Score`.

    The targets are checked in a first streamed pass, before any logits are read. While one
    block is scored, the next is prefetched.

    Parameters
    ----------
    inputs : Inputs
        The checked headers (:func:`check_inputs`); the logits must be a ``.npy`` file.
    ignore_index : int, optional
        Rows whose target equals it are not scored.
    top_k : sequence of int, optional
        The values of k of the top-k accuracies.
    softcap : float, optional
        Score ``softcap * tanh(logits / softcap)``.
    num_threads : int, optional
        Threads for the kernels (default: all cores).
    block_rows : int, optional
        Rows per block; wins over ``block_mb``.
    block_mb : float, optional
        MiB of the logits (or hidden) file per block (default
        :data:`~fastce.cli.npy_blocks.DEFAULT_BLOCK_MB`).
    progress : callable, optional
        Called after each block with the number of rows it held.

    Returns
    -------
    Result
        The merged score, the inputs and the number of ignored rows.

    Raises
    ------
    InputError
        For an out-of-range target (before any logits are read).
    ReadError
        If a block cannot be mapped.
    """
    import fastce

    top_k = tuple(top_k)
    vocab = inputs.vocab
    src = inputs.rows
    if not isinstance(src, NpyInfo):
        raise InputError(f"logits {src.path!r} is a zarr store: zarr input is read through dask "
                         "(score_files_dask)")
    assert inputs.targets is not None
    rpb = rows_per_block(src.row_bytes, block_rows, block_mb)
    total = fastce.Score.empty(top_k=top_k)
    weight = bias = None
    if inputs.hidden is not None:
        assert inputs.weight is not None
        weight = load_whole(inputs.weight)
        bias = load_whole(inputs.bias) if inputs.bias is not None else None

    with RowBlockReader(inputs.targets) as treader, RowBlockReader(src) as xreader:
        ignored = check_targets(treader, vocab, ignore_index)

        def one(rows: np.ndarray, t: np.ndarray) -> Score:
            if weight is None:
                return fastce.score(rows, t, ignore_index=ignore_index, top_k=top_k,
                                    softcap=softcap, num_threads=num_threads)
            return fastce.score_linear(rows, weight, t, linear_bias=bias,
                                       ignore_index=ignore_index, top_k=top_k, softcap=softcap,
                                       num_threads=num_threads)

        bounds = list(block_bounds(inputs.n, rpb))
        for i, (r0, r1) in enumerate(bounds):
            t = targets_block(treader, r0, r1)
            if i + 1 < len(bounds):
                xreader.prefetch(*bounds[i + 1])
            total = total.merge(xreader.apply(r0, r1, lambda rows: one(rows, t)))
            if progress is not None:
                progress(r1 - r0)
    return Result(score=total, inputs=inputs, ignored=ignored)


def score_files_dask(inputs: Inputs, *, ignore_index: int = -100, top_k: Sequence[int] = (1,),
                     softcap: Optional[float] = None, block_rows: Optional[int] = None,
                     block_mb: Optional[float] = None) -> Result:
    """:func:`score_files` through :func:`fastce.dask.score` on the active dask client.

    The logits file becomes a dask array of row blocks, each read by a worker from the file's
    path (or a zarr array); the targets are checked here first, so an out-of-range target fails
    before any logits are read.

    Parameters
    ----------
    inputs : Inputs
        The checked headers (:func:`check_inputs`), in the logits form.
    ignore_index : int, optional
        Rows whose target equals it are not scored.
    top_k : sequence of int, optional
        The values of k of the top-k accuracies.
    softcap : float, optional
        Not supported here: must be None.
    block_rows : int, optional
        Rows per chunk; wins over ``block_mb``.
    block_mb : float, optional
        MiB of the logits file per chunk.

    Returns
    -------
    Result
        The merged score, the inputs and the number of ignored rows.

    Raises
    ------
    InputError
        For the linear form, a softcap, or an out-of-range target.
    """
    import fastce.dask as fd

    if inputs.logits is None:
        raise InputError("--workers / --scheduler score a LOGITS.npy file; the linear form runs in one process")
    if softcap is not None:
        raise InputError("--softcap is not supported with --workers / --scheduler")
    assert inputs.targets is not None
    with RowBlockReader(inputs.targets) as treader:
        ignored = check_targets(treader, inputs.vocab, ignore_index)
    rpb = rows_per_block(inputs.logits.row_bytes, block_rows, block_mb)
    x = as_dask_array(inputs.logits, rpb)
    t = as_dask_array(inputs.targets, rpb, np.int64)
    return Result(score=fd.score(x, t, top_k=tuple(top_k), ignore_index=ignore_index), inputs=inputs,
                  ignored=ignored)


# --------------------------------------------------------------------------------------------
# output


def result_dict(res: Result) -> Dict[str, Any]:
    """The JSON-ready result: ``Score.as_dict()`` plus rows, ignored rows and vocabulary size.

    Parameters
    ----------
    res : Result
        A finished scan.

    Returns
    -------
    dict
        Strict-JSON values: non-finite floats (the NaN mean of zero tokens, an infinite
        perplexity) become ``None``.
    """
    d = dict(res.score.as_dict())
    d["rows"] = res.inputs.n
    d["ignored"] = res.ignored
    d["vocab"] = res.inputs.vocab
    return json_value(d)  # type: ignore[no-any-return]


def format_table(res: Result) -> str:
    """The human-readable result: the files, tokens, mean NLL, perplexity, top-k accuracies.

    Parameters
    ----------
    res : Result
        A finished scan.

    Returns
    -------
    str
        The table, one figure per line (no final newline).
    """
    s = res.score
    inp = res.inputs
    assert inp.targets is not None
    lines = []
    if inp.logits is not None:
        lines.append(f"logits      {inp.logits.path}  ({inp.logits.describe()})")
    else:
        assert inp.hidden is not None and inp.weight is not None
        lines.append(f"hidden      {inp.hidden.path}  ({inp.hidden.describe()})")
        lines.append(f"weight      {inp.weight.path}  ({inp.weight.describe()})")
        if inp.bias is not None:
            lines.append(f"bias        {inp.bias.path}  ({inp.bias.describe()})")
    lines.append(f"targets     {inp.targets.path}  ({inp.n} rows, {res.ignored} ignored)")
    lines.append(f"tokens      {s.count}")
    lines.append(f"mean NLL    {s.mean_nll:.6f}")
    lines.append(f"perplexity  {s.perplexity:.6g}")
    accs = s.top_k_accuracy
    for k in sorted(accs):
        lines.append(f"{'top-%d acc' % k:<11} {accs[k]:.6f}  ({s.correct[k]}/{s.count})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Register the arguments of ``fastce score`` on its subparser.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The ``score`` subparser.
    """
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="LOGITS.npy TARGETS.npy, or only TARGETS.npy with --hidden/--weight. "
                   "LOGITS: float16/32/64 of shape (N, V), C-ordered; TARGETS: integer class "
                   "indices of shape (N,)")
    lin = p.add_argument_group("linear form (logits = HIDDEN @ WEIGHT.T + BIAS, never stored)")
    lin.add_argument("--hidden", metavar="HIDDEN.npy", help="hidden states, float (N, H)")
    lin.add_argument("--weight", metavar="WEIGHT.npy", help="classifier weight, float (V, H)")
    lin.add_argument("--bias", metavar="BIAS.npy", help="classifier bias, float (V,)")
    p.add_argument("--ignore-index", type=int64, default=-100, metavar="N",
                   help="rows whose target is N are not scored (default: -100)")
    p.add_argument("--top-k", type=top_k_list, action="append", default=None, metavar="K",
                   help="also report top-K accuracy; repeat or give a comma list "
                   "(--top-k 5 --top-k 10, --top-k 5,10). Top-1 is always reported")
    p.add_argument("--softcap", type=positive_float, default=None, metavar="S",
                   help="score softcap * tanh(logits / softcap) instead of the logits")
    p.add_argument("--threads", type=positive_int, default=None, metavar="T",
                   help="threads for the kernels (default: all cores)")
    blk = p.add_mutually_exclusive_group()
    blk.add_argument("--block-rows", type=positive_int, default=None, metavar="R",
                     help="rows per block")
    blk.add_argument("--block-mb", type=positive_float, default=None, metavar="M",
                     help="size of one mapped block of the LOGITS (or HIDDEN) file in MiB "
                     f"(default: {DEFAULT_BLOCK_MB:g}); memory use is about one block")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--dtype", choices=["bfloat16"], default=None,
                   help="the logits file holds bfloat16 (np.save writes ml_dtypes' bfloat16 with the "
                        "header dtype V2, 2-byte void, which does not say so)")
    add_dask_arguments(p)


def main(args: argparse.Namespace, parser: Optional[argparse.ArgumentParser] = None) -> int:
    """Run ``fastce score`` with parsed arguments.

    Parameters
    ----------
    args : argparse.Namespace
        The options registered by :func:`add_arguments`, parsed.
    parser : argparse.ArgumentParser, optional
        The ``score`` subparser: a usage error then prints the usage and exits with status 2
        (``SystemExit``); without it, the error is one line on stderr and the status is returned.

    Returns
    -------
    int
        The exit status: 0 ok, 2 usage or input error, 1 read or memory failure.
    """
    def usage_error(msg: str) -> int:
        if parser is not None:
            parser.error(msg)  # prints the usage, exits with status 2
        return error("score", msg)

    files = list(args.files)
    logits: Optional[str]
    if args.hidden is not None or args.weight is not None or args.bias is not None:
        if args.hidden is None or args.weight is None:
            return usage_error("the linear form needs both --hidden and --weight")
        if len(files) != 1:
            return usage_error("with --hidden/--weight give exactly one positional file, "
                               f"TARGETS.npy (got {len(files)})")
        logits, targets = None, files[0]
    else:
        if len(files) != 2:
            return usage_error(f"expected LOGITS.npy TARGETS.npy (got {len(files)} file"
                               f"{'' if len(files) == 1 else 's'}), or --hidden/--weight and "
                               "TARGETS.npy")
        logits, targets = files

    top_k = sorted({1} | {k for ks in (args.top_k or []) for k in ks})

    def body() -> int:
        if args.dtype is not None and logits is None:
            raise InputError("--dtype names the dtype of a LOGITS.npy file; the linear form reads "
                             "float32/float64 files")
        inputs = check_inputs(logits, targets, hidden=args.hidden, weight=args.weight,
                              bias=args.bias, logits_dtype=args.dtype,
                              zarr_ok=uses_dask(args))
        bad_k = [k for k in top_k if k > inputs.vocab]
        if bad_k:
            raise InputError(f"--top-k {bad_k[0]} exceeds the number of classes ({inputs.vocab})")
        with dask_client(args) as client:
            if client is not None:  # no progress bar: the blocks are read and scored on the workers
                res = score_files_dask(inputs, ignore_index=args.ignore_index, top_k=top_k, softcap=args.softcap,
                                       block_rows=args.block_rows, block_mb=args.block_mb)
            else:
                with progress(inputs.n, "scoring") as update:
                    res = score_files(inputs, ignore_index=args.ignore_index, top_k=top_k,
                                      softcap=args.softcap, num_threads=args.threads,
                                      block_rows=args.block_rows, block_mb=args.block_mb, progress=update)
        print(json.dumps(result_dict(res), allow_nan=False) if args.json else format_table(res))
        return 0

    return guarded("score", body)
