"""``fastce score``: cross-entropy statistics of a ``.npy`` logits file (or a hidden-state file and
a linear head), read in row blocks so that files larger than memory work.

What it computes
----------------
For logits ``x`` of shape ``(N, V)`` and integer targets ``t`` of shape ``(N,)``, every row whose
target is not ``--ignore-index`` is scored: its negative log-likelihood
``nll = logsumexp(x) - x[t]`` and whether ``t`` ranks within the top ``k`` logits. The totals
(tokens, summed NLL, correct@k) are accumulated block by block with :meth:`fastce.Score.merge`,
which is exact, so the block size changes the result only through floating-point summation order.
With ``--hidden H.npy --weight W.npy [--bias B.npy]`` the logits are ``H @ W.T + b``, computed by
:func:`fastce.score_linear`; the ``(N, V)`` logits are never stored.

How the files are read
----------------------
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
from typing import Callable, Optional, Sequence

import numpy as np

# The block-mapped .npy reader; its names stay importable from here.
from .common import (ModelFiles, add_dask_arguments, dask_client, error, guarded, int64, json_value,
                        linear_files, logits_files, positive_float, positive_int, progress, top_k_list,
                        uses_dask)
from .npy_blocks import (DEFAULT_BLOCK_MB, InputError, NpyInfo, ReadError,  # noqa: F401
                          RowBlockReader, as_dask_array, block_bounds, check_int, read_npy_header,
                          rows_per_block)

#: Rows of the targets file read per block in the validation pass (8 MB of int64).
_TARGET_CHECK_ROWS = 1 << 20

USAGE = (
    "fastce score [options] LOGITS.npy TARGETS.npy\n"
    "       fastce score [options] --hidden HIDDEN.npy --weight WEIGHT.npy [--bias BIAS.npy] "
    "TARGETS.npy"
)


# --------------------------------------------------------------------------------------------
# the scoring


@dataclass
class Inputs(ModelFiles):
    """Validated headers of one ``fastce score`` invocation: the model's files and the targets."""

    targets: Optional[NpyInfo] = None

    @property
    def n(self) -> int:
        return self.targets.shape[0]


def check_inputs(logits: Optional[str], targets: str, hidden: Optional[str] = None,
                 weight: Optional[str] = None, bias: Optional[str] = None,
                 logits_dtype: Optional[str] = None, zarr_ok: bool = False) -> Inputs:
    """Read and cross-check every header, in command-line order; raise :class:`InputError` on
    the first problem. Give ``logits``, or ``hidden`` and ``weight`` (and optionally ``bias``).
    ``logits_dtype="bfloat16"`` reads a logits file saved from ml_dtypes' bfloat16 (|V2)."""
    model = (logits_files(logits, "logits", logits_dtype, zarr_ok=zarr_ok) if logits is not None
             else linear_files(hidden, weight, bias))
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


def _targets_block(reader: RowBlockReader, r0: int, r1: int) -> np.ndarray:
    """Targets ``[r0, r1)`` as native int64 (uint64 values above the int64 range are clipped to
    -1 after :func:`check_targets` has rejected them)."""
    if reader.info.dtype.kind == "u" and reader.info.dtype.itemsize == 8:
        t = reader.copy_rows(r0, r1)
        return np.where(t > np.iinfo(np.int64).max, np.uint64(0), t).astype(np.int64)
    return reader.copy_rows(r0, r1, np.int64)


def check_targets(reader: RowBlockReader, vocab: int, ignore_index: int) -> int:
    """Stream the targets once: raise :class:`InputError` naming the first out-of-range target.

    Returns the number of ignored rows.
    """
    ignored = 0
    for r0, r1 in block_bounds(reader.n_rows, _TARGET_CHECK_ROWS):
        t = reader.copy_rows(r0, r1)
        keep = t != ignore_index if _fits(ignore_index, t.dtype) else np.ones(t.shape, bool)
        ignored += int(t.size - np.count_nonzero(keep))
        bad = keep & ((t < 0) | (t >= vocab)) if t.dtype.kind == "i" else keep & (t >= vocab)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"targets file {reader.info.path!r}: target {int(t[i])} at row {r0 + i} is out of "
                f"range for {vocab} classes (valid: 0..{vocab - 1}, or the ignore index "
                f"{ignore_index})")
    return ignored


def _fits(value: int, dtype: np.dtype) -> bool:
    info = np.iinfo(dtype)
    return info.min <= value <= info.max


@dataclass
class Result:
    """A finished scan: the merged :class:`fastce.Score` and what was read."""

    score: object
    inputs: Inputs
    ignored: int


def score_files(inputs: Inputs, *, ignore_index: int = -100, top_k: Sequence[int] = (1,),
                softcap: Optional[float] = None, num_threads: Optional[int] = None,
                block_rows: Optional[int] = None, block_mb: Optional[float] = None,
                progress: Optional[Callable[[int], None]] = None) -> Result:
    """Score the files of ``inputs`` block by block and merge the per-block :class:`fastce.Score`.

    ``progress(rows_done_in_block)`` is called after each block. Raises :class:`InputError` for
    an out-of-range target (before any logits are read) and :class:`ReadError` if a block cannot
    be mapped.
    """
    import fastce

    top_k = tuple(top_k)
    vocab = inputs.vocab
    src = inputs.rows
    rpb = rows_per_block(src.row_bytes, block_rows, block_mb)
    total = fastce.Score.empty(top_k=top_k)
    weight = bias = None
    if inputs.hidden is not None:
        weight = _load_whole(inputs.weight)
        bias = _load_whole(inputs.bias) if inputs.bias is not None else None

    with RowBlockReader(inputs.targets) as treader, RowBlockReader(src) as xreader:
        ignored = check_targets(treader, vocab, ignore_index)

        def one(rows: np.ndarray, t: np.ndarray):
            if weight is None:
                return fastce.score(rows, t, ignore_index=ignore_index, top_k=top_k,
                                    softcap=softcap, num_threads=num_threads)
            return fastce.score_linear(rows, weight, t, linear_bias=bias,
                                       ignore_index=ignore_index, top_k=top_k, softcap=softcap,
                                       num_threads=num_threads)

        bounds = list(block_bounds(inputs.n, rpb))
        for i, (r0, r1) in enumerate(bounds):
            t = _targets_block(treader, r0, r1)
            if i + 1 < len(bounds):
                xreader.prefetch(*bounds[i + 1])
            total = total.merge(xreader.apply(r0, r1, lambda rows: one(rows, t)))
            if progress is not None:
                progress(r1 - r0)
    return Result(score=total, inputs=inputs, ignored=ignored)


def score_files_dask(inputs: Inputs, *, ignore_index: int = -100, top_k: Sequence[int] = (1,),
                     softcap: Optional[float] = None, block_rows: Optional[int] = None,
                     block_mb: Optional[float] = None) -> Result:
    """score_files through fastce.dask on the active dask client: the logits file as a dask
    array of row blocks, each read by a worker from the file's path; the targets are checked
    here first (so an out-of-range target fails before any logits are read)."""
    import fastce.dask as fd

    if inputs.logits is None:
        raise InputError("--workers / --scheduler score a LOGITS.npy file; the linear form runs in one process")
    if softcap is not None:
        raise InputError("--softcap is not supported with --workers / --scheduler")
    with RowBlockReader(inputs.targets) as treader:
        ignored = check_targets(treader, inputs.vocab, ignore_index)
    rpb = rows_per_block(inputs.logits.row_bytes, block_rows, block_mb)
    x = as_dask_array(inputs.logits, rpb)
    t = as_dask_array(inputs.targets, rpb, np.int64)
    return Result(score=fd.score(x, t, top_k=tuple(top_k), ignore_index=ignore_index), inputs=inputs,
                  ignored=ignored)


def _load_whole(info: NpyInfo) -> np.ndarray:
    """The weight or bias, memory-mapped whole (it is read many times, once per block)."""
    try:
        a = np.load(info.path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ReadError(f"cannot map {info.path!r}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    a = np.asarray(a)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return a


# --------------------------------------------------------------------------------------------
# output


def result_dict(res: Result) -> dict:
    """JSON-ready result: ``Score.as_dict()`` plus rows, ignored rows and vocabulary size.

    Non-finite floats (NaN mean of zero tokens, infinite perplexity) become ``null``.
    """
    d = dict(res.score.as_dict())
    d["rows"] = res.inputs.n
    d["ignored"] = res.ignored
    d["vocab"] = res.inputs.vocab
    return json_value(d)


def format_table(res: Result) -> str:
    """The human-readable result: tokens, mean NLL, perplexity, top-k accuracies."""
    s = res.score
    inp = res.inputs
    lines = []
    if inp.logits is not None:
        lines.append(f"logits      {inp.logits.path}  ({inp.logits.describe()})")
    else:
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
    """Register the options of ``fastce score`` on the subparser ``p``."""
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
                   help="score softcap*tanh(logits/softcap) instead of the logits")
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
                        "header dtype |V2, which does not say so)")
    add_dask_arguments(p)


def main(args: argparse.Namespace, parser: Optional[argparse.ArgumentParser] = None) -> int:
    """Run ``fastce score`` with parsed ``args``; returns the exit status."""
    def usage_error(msg: str) -> int:
        if parser is not None:
            parser.error(msg)  # prints the usage, exits with status 2
        return error("score", msg)

    files = list(args.files)
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
