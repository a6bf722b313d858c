"""``fastce compare``: a model's logits against a reference's, from two ``.npy`` files (or two LM
heads), read in row blocks so that files larger than memory work.

What it computes: :func:`fastce.compare` block by block, merged with
:meth:`fastce.Comparison.merge` (exact: the block size changes the result only through
floating-point summation order). KL(p_ref || q_model) per row (mean, max, quantiles),
top-k agreement of the reference's argmax, and with ``--targets`` both models' NLL and
perplexity, their difference and ratio, and the RMS change of the target's probability.

How the files are read: as ``fastce score`` reads them (:mod:`fastce.cli.npy_blocks`): every header
is checked before any logit is read, the targets are validated in a first pass, and then both
logits files are mapped one row block at a time, the same rows of each, so that memory stays at
about one block per file whatever the file sizes. With ``--hidden/--weight`` (and
``--ref-hidden/--ref-weight``) each block's logits are computed by
:func:`fastce.compare_linear` and never stored whole.

Output: a table on stdout, or ``--json``; a tqdm bar on stderr when it is a terminal. Input and
usage errors print one line ``fastce compare: error: ...`` and exit 2; read or memory failures
exit 1.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .common import (ModelFiles, add_dask_arguments, check_targets, dask_client, guarded, int64, json_value,
                     linear_files, load_whole, logits_files, positive_float, positive_int, progress, targets_block,
                     top_k_list, uses_dask)
from .npy_blocks import (DEFAULT_BLOCK_MB, InputError, NpyInfo, RowBlockReader, as_dask_array, block_bounds,
                         check_int, read_npy_header, rows_per_block)

if TYPE_CHECKING:  # pragma: no cover
    from fastce import Comparison

__all__ = [
    "USAGE",
    "Inputs",
    "check_inputs",
    "Result",
    "compare_files",
    "compare_files_dask",
    "result_dict",
    "format_table",
    "add_arguments",
    "main",
]

#: The usage lines of ``fastce compare --help``.
USAGE = (
    "fastce compare [options] LOGITS.npy REF.npy [--targets TARGETS.npy]\n"
    "       fastce compare [options] --hidden H.npy --weight W.npy --ref-hidden RH.npy "
    "--ref-weight RW.npy [--targets TARGETS.npy]"
)


@dataclass
class Inputs:
    """Checked headers of one ``fastce compare`` invocation.

    Parameters
    ----------
    model : ModelFiles
        The model's logits file, or its hidden states and LM head.
    ref : ModelFiles
        The reference's, in the same form.
    targets : NpyInfo or None
        The ``(N,)`` integer targets file, if given.
    """

    model: ModelFiles
    ref: ModelFiles
    targets: Optional[NpyInfo]

    @property
    def n(self) -> int:
        """The number of rows ``N``."""
        return self.model.rows.shape[0]


def check_inputs(args: argparse.Namespace, files: Sequence[str]) -> Inputs:
    """Read and cross-check every header before any data is read.

    Parameters
    ----------
    args : argparse.Namespace
        The options registered by :func:`add_arguments`, parsed: the linear form's files
        (``hidden``, ``weight``, ``bias`` and their ``ref_`` twins), ``targets``, ``dtype``,
        ``ref_dtype`` and the dask options.
    files : sequence of str
        The positional files: ``LOGITS.npy REF.npy``, or none in the linear form.

    Returns
    -------
    Inputs
        The checked headers.

    Raises
    ------
    InputError
        On the first problem.
    """
    if args.hidden is not None:
        model = linear_files(args.hidden, args.weight, args.bias)
        ref = linear_files(args.ref_hidden, args.ref_weight, args.ref_bias, "ref-")
    else:
        zarr_ok = uses_dask(args)
        model = logits_files(files[0], "logits", args.dtype, v2_only=True, zarr_ok=zarr_ok)
        ref = logits_files(files[1], "ref", args.ref_dtype or args.dtype, v2_only=True, zarr_ok=zarr_ok)
    if model.rows.shape[0] != ref.rows.shape[0] or model.vocab != ref.vocab:
        raise InputError(f"the two models differ in shape: {model.rows.path!r} gives {model.rows.shape[0]} rows of "
                         f"{model.vocab} classes, {ref.rows.path!r} {ref.rows.shape[0]} rows of {ref.vocab}")
    t = None
    if args.targets is not None:
        t = read_npy_header(args.targets, "targets")
        check_int(t, "targets")
        if t.shape != (model.rows.shape[0],):
            raise InputError(f"targets file {args.targets!r}: shape {t.shape}, expected ({model.rows.shape[0]},) "
                             "(one target per row of the logits)")
    return Inputs(model, ref, t)


@dataclass
class Result:
    """A finished comparison.

    Parameters
    ----------
    comparison : fastce.Comparison
        The merged statistics.
    inputs : Inputs
        What was read.
    ignored : int
        Rows whose target is the ignore index (0 without targets).
    """

    comparison: Comparison
    inputs: Inputs
    ignored: int


def compare_files(inputs: Inputs, *, ignore_index: int = -100, top_k: Sequence[int] = (1,),
                  num_threads: Optional[int] = None, block_rows: Optional[int] = None,
                  block_mb: Optional[float] = None, progress: Optional[Callable[[int], object]] = None) -> Result:
    """Compare the inputs block by block and merge the per-block :class:`fastce.Comparison`.

    The targets (if any) are checked in a first streamed pass, before any logits are read;
    then the same row block of both models is mapped at a time, and the next one prefetched.

    Parameters
    ----------
    inputs : Inputs
        The checked headers (:func:`check_inputs`); logits must be ``.npy`` files.
    ignore_index : int, optional
        Rows whose target equals it are left out of every figure.
    top_k : sequence of int, optional
        The values of k of the top-k agreements.
    num_threads : int, optional
        Threads for the kernels (default: all cores).
    block_rows : int, optional
        Rows per block; wins over ``block_mb``.
    block_mb : float, optional
        MiB per block of the larger row of the two files (default
        :data:`~fastce.cli.npy_blocks.DEFAULT_BLOCK_MB`).
    progress : callable, optional
        Called after each block with the number of rows it held.

    Returns
    -------
    Result
        The merged comparison, the inputs and the number of ignored rows.

    Raises
    ------
    InputError
        For an out-of-range target (before any logits are read), or zarr logits.
    ReadError
        If a block cannot be mapped.
    """
    import fastce

    top_k = tuple(top_k)
    mrows, rrows = inputs.model.rows, inputs.ref.rows
    if not (isinstance(mrows, NpyInfo) and isinstance(rrows, NpyInfo)):
        raise InputError("zarr input is read through dask (compare_files_dask)")
    rpb = rows_per_block(max(mrows.row_bytes, rrows.row_bytes), block_rows, block_mb)
    total = fastce.Comparison.empty(top_k, has_targets=inputs.targets is not None)
    linear = inputs.model.logits is None
    heads: List[Any] = []
    if linear:
        for s in (inputs.model, inputs.ref):
            assert s.weight is not None
            heads.append((load_whole(s.weight), None if s.bias is None else load_whole(s.bias)))
    treader = RowBlockReader(inputs.targets) if inputs.targets is not None else None
    ignored = 0
    try:
        if treader is not None:
            ignored = check_targets(treader, inputs.model.vocab, ignore_index)
        with RowBlockReader(mrows) as mreader, RowBlockReader(rrows) as rreader:
            bounds = list(block_bounds(inputs.n, rpb))
            for i, (r0, r1) in enumerate(bounds):
                t = targets_block(treader, r0, r1) if treader is not None else None
                if i + 1 < len(bounds):
                    mreader.prefetch(*bounds[i + 1])
                    rreader.prefetch(*bounds[i + 1])

                def one(b: np.ndarray, a: np.ndarray) -> Comparison:
                    if not linear:
                        return fastce.compare(b, a, t, ignore_index=ignore_index, top_k=top_k, num_threads=num_threads)
                    (w, bias), (rw, rbias) = heads
                    return fastce.compare_linear(b, w, a, rw, t, linear_bias=bias, ref_linear_bias=rbias,
                                                 ignore_index=ignore_index, top_k=top_k, num_threads=num_threads)

                total = total.merge(mreader.apply(r0, r1, lambda b: rreader.apply(r0, r1, lambda a: one(b, a))))
                if progress is not None:
                    progress(r1 - r0)
    finally:
        if treader is not None:
            treader.close()
    return Result(total, inputs, ignored)


def compare_files_dask(inputs: Inputs, *, ignore_index: int = -100, top_k: Sequence[int] = (1,),
                       block_rows: Optional[int] = None, block_mb: Optional[float] = None) -> Result:
    """:func:`compare_files` through :func:`fastce.dask.compare` on the active dask client.

    Both logits files become dask arrays of row blocks, each read by a worker from the file's
    path (or zarr arrays); the targets are checked here first.

    Parameters
    ----------
    inputs : Inputs
        The checked headers (:func:`check_inputs`), in the logits form.
    ignore_index : int, optional
        Rows whose target equals it are left out of every figure.
    top_k : sequence of int, optional
        The values of k of the top-k agreements.
    block_rows : int, optional
        Rows per chunk; wins over ``block_mb``.
    block_mb : float, optional
        MiB per chunk of the larger row of the two files.

    Returns
    -------
    Result
        The merged comparison, the inputs and the number of ignored rows.

    Raises
    ------
    InputError
        For the linear form, or an out-of-range target.
    """
    import fastce.dask as fd

    if inputs.model.logits is None or inputs.ref.logits is None:
        raise InputError("--workers / --scheduler compare two logits files; the linear form runs in one process")
    ignored = 0
    t = None
    rpb = rows_per_block(max(inputs.model.rows.row_bytes, inputs.ref.rows.row_bytes), block_rows, block_mb)
    if inputs.targets is not None:
        with RowBlockReader(inputs.targets) as treader:
            ignored = check_targets(treader, inputs.model.vocab, ignore_index)
        t = as_dask_array(inputs.targets, rpb, np.int64)
    x, y = as_dask_array(inputs.model.logits, rpb), as_dask_array(inputs.ref.logits, rpb)
    return Result(fd.compare(x, y, t, ignore_index=ignore_index, top_k=tuple(top_k)), inputs, ignored)


def result_dict(res: Result) -> Dict[str, Any]:
    """The JSON-ready result: ``Comparison.as_dict()`` plus rows, ignored rows and vocabulary size.

    Parameters
    ----------
    res : Result
        A finished comparison.

    Returns
    -------
    dict
        Strict-JSON values: non-finite floats become ``None``.
    """
    d = dict(res.comparison.as_dict())
    d.update(rows=res.inputs.n, ignored=res.ignored, vocab=res.inputs.model.vocab)
    return json_value(d)  # type: ignore[no-any-return]


def _fmt(v: Optional[float], spec: str = ".6g") -> str:
    return "-" if v is None else format(v, spec)


def format_table(res: Result) -> str:
    """The human-readable result: the files, KL statistics, top-k agreement and, with targets,
    both models' NLL and perplexity.

    Parameters
    ----------
    res : Result
        A finished comparison.

    Returns
    -------
    str
        The table, one figure per line (no final newline).
    """
    c, inp = res.comparison, res.inputs
    lines = inp.model.describe("model") + inp.ref.describe("reference")
    if inp.targets is not None:
        lines.append(f"{'targets':<11} {inp.targets.path}  ({inp.n} rows, {res.ignored} ignored)")
    lines.append(f"{'rows':<11} {c.count}")
    lines.append(f"{'mean KL':<11} {_fmt(c.mean_kl)}  (nats, KL(p_ref || q_model) per row)")
    lines.append(f"{'max KL':<11} {_fmt(c.max_kl)}")
    qs = "  ".join(f"p{100 * q:g} {_fmt(v, '.4g')}" for q, v in c.kl_quantiles.items())
    lines.append(f"{'KL quant.':<11} {qs}  (histogram, within 16%)")
    for k, v in c.topk_agreement.items():
        what = "argmax equal" if k == 1 else f"ref argmax in model top {k}"
        lines.append(f"{'top-%d agree' % k:<11} {_fmt(v, '.6f')}  ({c.agree[k]}/{c.count}, {what})")
    if c.has_targets:
        lines.append(f"{'NLL':<11} {_fmt(c.nll)}  (reference {_fmt(c.ref_nll)}, delta {_fmt(c.delta_nll)})")
        lines.append(f"{'perplexity':<11} {_fmt(c.perplexity)}  (reference {_fmt(c.ref_perplexity)}, "
                     f"ratio {_fmt(c.ppl_ratio)})")
        lines.append(f"{'RMS dp':<11} {_fmt(c.rms_dp)}  (of the target's probability)")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Register the arguments of ``fastce compare`` on its subparser.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The ``compare`` subparser.
    """
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="LOGITS.npy REF.npy: the model's and the reference's logits, float16/32/64 or bfloat16 "
                   "(--dtype), shape (N, V), C-ordered; none with --hidden/--weight")
    p.add_argument("--targets", metavar="TARGETS.npy", help="integer next tokens (N,): adds both models' NLL, "
                   "perplexity, their delta and ratio, and RMS delta-p")
    lin = p.add_argument_group("linear form (logits = H @ W.T + b, never stored)")
    for prefix, who in (("", "the model's"), ("ref-", "the reference's")):
        lin.add_argument(f"--{prefix}hidden", metavar="H.npy", help=f"{who} hidden states, float (N, H)")
        lin.add_argument(f"--{prefix}weight", metavar="W.npy", help=f"{who} LM head weight, float (V, H)")
        lin.add_argument(f"--{prefix}bias", metavar="B.npy", help=f"{who} LM head bias, float (V,)")
    p.add_argument("--ignore-index", type=int64, default=-100, metavar="N",
                   help="rows whose target is N are left out of every figure (default: -100)")
    p.add_argument("--top-k", type=top_k_list, action="append", default=None, metavar="K",
                   help="also report top-K agreement (the reference's argmax within the model's top K); "
                   "repeat or give a comma list. Top-1 is always reported")
    p.add_argument("--threads", type=positive_int, default=None, metavar="T",
                   help="threads for the kernels (default: all cores)")
    blk = p.add_mutually_exclusive_group()
    blk.add_argument("--block-rows", type=positive_int, default=None, metavar="R", help="rows per block")
    blk.add_argument("--block-mb", type=positive_float, default=None, metavar="M",
                     help=f"size of one mapped block of each file in MiB (default: {DEFAULT_BLOCK_MB:g})")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--dtype", choices=["bfloat16"], default=None,
                   help="the logits files whose header dtype is V2 (2-byte void) hold bfloat16 (np.save writes "
                   "ml_dtypes' bfloat16 so)")
    p.add_argument("--ref-dtype", choices=["bfloat16"], default=None, help="the same for REF.npy only")
    add_dask_arguments(p)


def main(args: argparse.Namespace, parser: Optional[argparse.ArgumentParser] = None) -> int:
    """Run ``fastce compare`` with parsed arguments.

    Parameters
    ----------
    args : argparse.Namespace
        The options registered by :func:`add_arguments`, parsed.
    parser : argparse.ArgumentParser, optional
        The ``compare`` subparser (unused: every usage error is one line on stderr, status 2;
        accepted so that both file commands are called alike).

    Returns
    -------
    int
        The exit status: 0 ok, 2 usage or input error, 1 read or memory failure.
    """
    files = list(args.files)
    linear = [args.hidden, args.weight, args.ref_hidden, args.ref_weight]

    def body() -> int:
        if any(v is not None for v in linear + [args.bias, args.ref_bias]):
            if any(v is None for v in linear):
                raise InputError("the linear form needs --hidden, --weight, --ref-hidden and --ref-weight")
            if files:
                raise InputError(f"the linear form takes no positional files (got {len(files)})")
            if args.dtype or args.ref_dtype:
                raise InputError("--dtype names the dtype of logits files; the linear form reads float files")
        elif len(files) != 2:
            raise InputError(f"expected LOGITS.npy REF.npy (got {len(files)} file{'' if len(files) == 1 else 's'})")
        inputs = check_inputs(args, files)
        top_k = sorted({1} | {k for ks in (args.top_k or []) for k in ks})
        if top_k[-1] > inputs.model.vocab:
            raise InputError(f"--top-k {top_k[-1]} exceeds the number of classes ({inputs.model.vocab})")
        with dask_client(args) as client:
            if client is not None:  # no progress bar: the blocks are read and compared on the workers
                res = compare_files_dask(inputs, ignore_index=args.ignore_index, top_k=top_k,
                                         block_rows=args.block_rows, block_mb=args.block_mb)
            else:
                with progress(inputs.n, "comparing") as update:
                    res = compare_files(inputs, ignore_index=args.ignore_index, top_k=top_k,
                                        num_threads=args.threads, block_rows=args.block_rows,
                                        block_mb=args.block_mb, progress=update)
        print(json.dumps(result_dict(res), allow_nan=False) if args.json else format_table(res))
        return 0

    return guarded("compare", body)
