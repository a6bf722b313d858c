"""What the file commands (``fastce score``, ``fastce compare``) share: argument types and the
``--workers`` / ``--scheduler`` options, the checked headers of a model's files, the targets'
validation pass and row blocks, the mapping of failures to one ``fastce <command>: error: ...``
line and an exit status, the progress bar, and JSON output.

Exit status: 0 ok; 2 for usage and input errors (:class:`~fastce.cli.npy_blocks.InputError`,
and the IndexError / ValueError / TypeError that fastce raises on bad data); 1 for failures
while reading or mapping (:class:`~fastce.cli.npy_blocks.ReadError`, I/O errors, out of
memory). No traceback in any of these cases.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, List, Optional, TypeVar, Union

import numpy as np

from .npy_blocks import (InputError, NpyInfo, ReadError, RowBlockReader, ZarrInfo, block_bounds, check_float,
                         check_rows_contiguous, is_zarr_path, read_npy_header, read_zarr_header)

if TYPE_CHECKING:  # pragma: no cover
    import distributed

__all__ = [
    "ModelFiles",
    "logits_files",
    "linear_files",
    "TARGET_CHECK_ROWS",
    "check_targets",
    "targets_block",
    "load_whole",
    "positive_int",
    "positive_float",
    "int64",
    "top_k_list",
    "json_value",
    "error",
    "guarded",
    "stderr_is_terminal",
    "progress",
    "add_dask_arguments",
    "uses_dask",
    "dask_client",
]

_N = TypeVar("_N", int, float)


# --------------------------------------------------------------------------------------------
# a model's files


@dataclass
class ModelFiles:
    """One model's checked headers: its logits file, or its hidden states and LM-head weight
    (and bias), whose logits are computed chunk by chunk.

    Build it with :func:`logits_files` or :func:`linear_files`, which check the headers.

    Parameters
    ----------
    logits : NpyInfo or ZarrInfo or None
        The ``(N, V)`` logits file (None in the linear form).
    hidden : NpyInfo or None
        The ``(N, H)`` hidden states of the linear form.
    weight : NpyInfo or None
        The ``(V, H)`` LM-head weight of the linear form.
    bias : NpyInfo or None
        The ``(V,)`` LM-head bias of the linear form, if any.
    """

    logits: Optional[Union[NpyInfo, ZarrInfo]] = None
    hidden: Optional[NpyInfo] = None
    weight: Optional[NpyInfo] = None
    bias: Optional[NpyInfo] = None

    @property
    def rows(self) -> Union[NpyInfo, ZarrInfo]:
        """The file that is read in row blocks (logits, or hidden for the linear form)."""
        rows = self.logits if self.logits is not None else self.hidden
        assert rows is not None, "ModelFiles holds neither logits nor hidden states"
        return rows

    @property
    def vocab(self) -> int:
        """The number of classes ``V``."""
        if self.logits is not None:
            return self.logits.shape[1]
        assert self.weight is not None, "ModelFiles holds neither logits nor a weight"
        return self.weight.shape[0]

    def describe(self, label: str) -> List[str]:
        """Table lines naming the files and their shapes.

        Parameters
        ----------
        label : str
            The model's name in the table, e.g. ``"model"`` or ``"reference"``.

        Returns
        -------
        list of str
            One line per file.
        """
        if self.logits is not None:
            return [f"{label:<11} {self.logits.path}  ({self.logits.describe()})"]
        assert self.hidden is not None and self.weight is not None
        out = [f"{label + ' h':<11} {self.hidden.path}  ({self.hidden.describe()})",
               f"{label + ' W':<11} {self.weight.path}  ({self.weight.describe()})"]
        if self.bias is not None:
            out.append(f"{label + ' b':<11} {self.bias.path}  ({self.bias.describe()})")
        return out


def logits_files(path: str, role: str = "logits", dtype: Optional[str] = None, v2_only: bool = False,
                 zarr_ok: bool = False) -> ModelFiles:
    """Read and check the header of a C-ordered ``(N, V)`` float logits file.

    Parameters
    ----------
    path : str
        The ``.npy`` file (or, with ``zarr_ok``, a zarr array).
    role : str, optional
        What the file is, to name it in error messages.
    dtype : {None, "bfloat16"}, optional
        The dtype declared for a ``|V2`` file (see :func:`~fastce.cli.npy_blocks.read_npy_header`).
    v2_only : bool, optional
        Apply ``dtype`` to a ``|V2`` file only.
    zarr_ok : bool, optional
        Accept a zarr array (read through dask only).

    Returns
    -------
    ModelFiles
        With ``logits`` set.

    Raises
    ------
    InputError
        On the first problem with the file.
    """
    x: Union[NpyInfo, ZarrInfo]
    if is_zarr_path(path):
        if not zarr_ok:
            raise InputError(f"{role} {path!r} is a zarr store: zarr input is read through dask, with "
                             "--workers N or --scheduler ADDRESS")
        x = read_zarr_header(path, role)
    else:
        x = read_npy_header(path, role, dtype, v2_only=v2_only)
    check_float(x, role)
    if len(x.shape) != 2:
        hint = "; reshape (B, T, V) logits to (B*T, V) and (B, T) targets to (B*T,)" if len(x.shape) > 2 else ""
        raise InputError(f"{role} file {path!r}: shape {x.shape} is not 2-D; logits must have shape (N, V){hint}")
    check_rows_contiguous(x, role)
    if x.shape[1] == 0:
        raise InputError(f"{role} file {path!r}: has no classes (shape {x.shape})")
    return ModelFiles(logits=x)


def linear_files(hidden: str, weight: str, bias: Optional[str] = None, prefix: str = "") -> ModelFiles:
    """Read and check the headers of hidden states ``(N, H)``, an LM-head weight ``(V, H)`` and
    bias ``(V,)``.

    Parameters
    ----------
    hidden, weight : str
        The ``.npy`` files of the hidden states and the weight.
    bias : str, optional
        The ``.npy`` file of the bias.
    prefix : str, optional
        Prefix of the options' names in messages (e.g. ``"ref-"``).

    Returns
    -------
    ModelFiles
        With ``hidden``, ``weight`` and ``bias`` set.

    Raises
    ------
    InputError
        On the first problem with a file, or shapes that do not fit together.
    """
    h = read_npy_header(hidden, f"{prefix}hidden")
    check_float(h, f"{prefix}hidden")
    if len(h.shape) != 2:
        raise InputError(f"{prefix}hidden file {hidden!r}: shape {h.shape} is not 2-D; hidden states "
                         "must have shape (N, H)")
    check_rows_contiguous(h, f"{prefix}hidden")
    w = read_npy_header(weight, f"{prefix}weight")
    check_float(w, f"{prefix}weight")
    if len(w.shape) != 2:
        raise InputError(f"{prefix}weight file {weight!r}: shape {w.shape} is not 2-D; the weight must "
                         "have shape (V, H)")
    if h.shape[1] != w.shape[1]:
        raise InputError(f"hidden size mismatch: {prefix}hidden {hidden!r} is {h.describe()} (H = "
                         f"{h.shape[1]}) but {prefix}weight {weight!r} is {w.describe()} (H = {w.shape[1]})")
    if h.shape[1] == 0:
        raise InputError(f"{prefix}hidden file {hidden!r}: has no features (shape {h.shape})")
    if w.shape[0] == 0:
        raise InputError(f"{prefix}weight file {weight!r}: has no classes (shape {w.shape})")
    b = None
    if bias is not None:
        b = read_npy_header(bias, f"{prefix}bias")
        check_float(b, f"{prefix}bias")
        if b.shape != (w.shape[0],):
            raise InputError(f"{prefix}bias file {bias!r}: shape {b.shape} does not match the weight's "
                             f"{w.shape[0]} classes; expected ({w.shape[0]},)")
    return ModelFiles(hidden=h, weight=w, bias=b)


def load_whole(info: NpyInfo) -> np.ndarray:
    """Memory-map a weight or bias file whole (it is read many times, once per block).

    Parameters
    ----------
    info : NpyInfo
        The checked header of the file.

    Returns
    -------
    numpy.ndarray
        The array, memory-mapped read-only (a native-order copy for a byte-swapped file).

    Raises
    ------
    ReadError
        If the file cannot be mapped.
    """
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
# targets

#: Rows of the targets file read per block in the validation pass (8 MB of int64).
TARGET_CHECK_ROWS: int = 1 << 20


def check_targets(reader: RowBlockReader, vocab: int, ignore_index: int) -> int:
    """Stream the targets once, in blocks of :data:`TARGET_CHECK_ROWS`, and check their range.

    Run before the long scan, so that an out-of-range target fails before any logits are read.

    Parameters
    ----------
    reader : RowBlockReader
        The targets file's reader.
    vocab : int
        The number of classes; valid targets are ``0 .. vocab - 1``.
    ignore_index : int
        Targets equal to it are ignored (counted, not checked).

    Returns
    -------
    int
        The number of ignored rows.

    Raises
    ------
    InputError
        Naming the first out-of-range target and its row.
    """
    ignored = 0
    for r0, r1 in block_bounds(reader.n_rows, TARGET_CHECK_ROWS):
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


def _fits(value: int, dtype: np.dtype[Any]) -> bool:
    info = np.iinfo(dtype)
    return info.min <= value <= info.max


def targets_block(reader: RowBlockReader, r0: int, r1: int) -> np.ndarray:
    """Targets ``[r0, r1)`` as native int64 (a copy: nothing stays mapped).

    uint64 values above the int64 range are clipped to 0; :func:`check_targets` has rejected
    them before (they exceed any vocabulary).

    Parameters
    ----------
    reader : RowBlockReader
        The targets file's reader.
    r0, r1 : int
        The first row and one past the last.

    Returns
    -------
    numpy.ndarray
        The targets, int64 of shape ``(r1 - r0,)``.
    """
    if reader.info.dtype.kind == "u" and reader.info.dtype.itemsize == 8:
        t = reader.copy_rows(r0, r1)
        return np.where(t > np.iinfo(np.int64).max, np.uint64(0), t).astype(np.int64)
    return reader.copy_rows(r0, r1, np.int64)


# --------------------------------------------------------------------------------------------
# argument types


def _number(text: str, kind: Callable[[str], _N]) -> _N:
    """int(text) or float(text), or the argparse error that names what was expected."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1.

    Parameters
    ----------
    text : str
        The option's value.

    Returns
    -------
    int
        The value.

    Raises
    ------
    argparse.ArgumentTypeError
        If ``text`` is not an integer, or is below 1.
    """
    v = _number(text, int)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def positive_float(text: str) -> float:
    """argparse type: a positive finite number.

    Parameters
    ----------
    text : str
        The option's value.

    Returns
    -------
    float
        The value.

    Raises
    ------
    argparse.ArgumentTypeError
        If ``text`` is not a number, or is not positive and finite.
    """
    v = _number(text, float)
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return v


def int64(text: str) -> int:
    """argparse type: an integer that fits in int64 (e.g. ``--ignore-index``).

    Parameters
    ----------
    text : str
        The option's value.

    Returns
    -------
    int
        The value.

    Raises
    ------
    argparse.ArgumentTypeError
        If ``text`` is not an integer, or is outside ``[-2**63, 2**63)``.
    """
    v = _number(text, int)
    if not -(2 ** 63) <= v < 2 ** 63:
        raise argparse.ArgumentTypeError(f"must fit in a 64-bit integer, got {v}")
    return v


def top_k_list(text: str) -> List[int]:
    """argparse type of ``--top-k``: one k or a comma list of them, each >= 1.

    Parameters
    ----------
    text : str
        The option's value, e.g. ``"5"`` or ``"5,10"`` (empty items are skipped).

    Returns
    -------
    list of int
        The values of k, in the order given.

    Raises
    ------
    argparse.ArgumentTypeError
        If an item is not an integer or is below 1, or no item is given.
    """
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        k = _number(part, int)
        if k < 1:
            raise argparse.ArgumentTypeError(f"k must be >= 1, got {k}")
        out.append(k)
    if not out:
        raise argparse.ArgumentTypeError(f"no value in {text!r}")
    return out


# --------------------------------------------------------------------------------------------
# output and errors


def json_value(v: Any) -> Any:
    """A value made ready for strict JSON, recursively through dicts, lists and tuples.

    Parameters
    ----------
    v : object
        A result value: a dict, list, tuple, NumPy or Python scalar, or anything else.

    Returns
    -------
    object
        NumPy scalars as Python ``bool`` / ``int`` / ``float``, NaN and infinities as ``None``,
        dict keys as ``str``, tuples as lists; anything else unchanged.
    """
    if isinstance(v, dict):
        return {str(k): json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_value(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return v


def error(command: str, msg: str, status: int = 2) -> int:
    """Print ``fastce <command>: error: <msg>`` on stderr.

    Parameters
    ----------
    command : str
        The subcommand, e.g. ``"score"``.
    msg : str
        The one-line message.
    status : int, optional
        The exit status to return.

    Returns
    -------
    int
        ``status``.
    """
    print(f"fastce {command}: error: {msg}", file=sys.stderr)
    return status


def guarded(command: str, body: Callable[[], int]) -> int:
    """Run a command's body; turn the failures it raises into one error line and an exit status.

    Parameters
    ----------
    command : str
        The subcommand, to name it in the error line.
    body : callable
        The command's work; returns its exit status.

    Returns
    -------
    int
        ``body()``'s status; or 2 for :class:`~fastce.cli.npy_blocks.InputError` and the
        IndexError / ValueError / TypeError that fastce raises on the data; or 1 for
        :class:`~fastce.cli.npy_blocks.ReadError`, MemoryError and OSError.
    """
    try:
        return body()
    except InputError as exc:
        return error(command, str(exc), 2)
    except ReadError as exc:
        return error(command, str(exc), 1)
    except MemoryError:
        return error(command, "out of memory; try a smaller --block-mb / --block-rows", 1)
    except OSError as exc:
        where = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
        return error(command, f"I/O error{where}: {exc.strerror or exc}", 1)
    except (IndexError, ValueError, TypeError) as exc:  # raised by fastce on the data
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return error(command, msg, 2)


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (the progress bar is shown only then).

    Returns
    -------
    bool
        False also when there is no stderr, or it cannot say.
    """
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def progress(total: int, desc: str) -> Iterator[Optional[Callable[[int], object]]]:
    """A tqdm progress bar on stderr when it is a terminal, with NumPy's floating-point
    warnings silenced inside (NaN rows are reported in the results).

    Parameters
    ----------
    total : int
        Rows to process.
    desc : str
        The bar's label, e.g. ``"scoring"``.

    Yields
    ------
    callable or None
        The bar's ``update(rows_done)``, or None when there is no bar (stderr is not a
        terminal, or tqdm is missing).
    """
    bar = None
    if stderr_is_terminal():
        try:
            from tqdm import tqdm
            bar = tqdm(total=total, unit="row", unit_scale=True, file=sys.stderr, desc=desc, leave=False,
                       dynamic_ncols=True)
        except Exception:  # pragma: no cover - tqdm missing: no bar
            bar = None
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            yield bar.update if bar is not None else None
    finally:
        if bar is not None:
            bar.close()


# --------------------------------------------------------------------------------------------
# dask


def add_dask_arguments(p: argparse.ArgumentParser) -> None:
    """Register ``--workers N`` / ``--scheduler ADDRESS``: run a file command through
    :mod:`fastce.dask`.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The subcommand's parser.
    """
    g = p.add_argument_group("on a dask cluster (needs dask[array] and distributed)")
    ex = g.add_mutually_exclusive_group()
    ex.add_argument("--workers", type=positive_int, default=None, metavar="N",
                    help="start a local dask cluster of N worker processes (1 thread each) and run through it; "
                    "with it (or --scheduler) a logits file may also be a zarr array (a .zarr store; needs zarr)")
    ex.add_argument("--scheduler", default=None, metavar="ADDRESS",
                    help="use the dask scheduler at ADDRESS (e.g. tcp://host:8786); the workers read the files "
                    "by their paths, which must be readable there")


def uses_dask(args: argparse.Namespace) -> bool:
    """Whether ``--workers`` or ``--scheduler`` asks to run the command through fastce.dask.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed options (of a parser with :func:`add_dask_arguments`).

    Returns
    -------
    bool
        True if either option is given.
    """
    return args.workers is not None or args.scheduler is not None


@contextlib.contextmanager
def dask_client(args: argparse.Namespace) -> Iterator[Optional[distributed.Client]]:
    """The ``distributed.Client`` the options ask for, closed (with its local cluster) on exit.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed options (of a parser with :func:`add_dask_arguments`).

    Yields
    ------
    distributed.Client or None
        A client of a new local cluster of ``--workers`` processes, or of the scheduler at
        ``--scheduler``; None with neither option.

    Raises
    ------
    InputError
        If distributed is not installed, or the scheduler cannot be reached.
    """
    if not uses_dask(args):
        yield None
        return
    try:
        import distributed
    except ImportError:
        raise InputError("--workers / --scheduler need dask and distributed (pip install 'dask[array]' "
                         "distributed)") from None
    cluster = None
    try:
        if args.workers is not None:
            cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                               dashboard_address=None, silence_logs=40)
            client = distributed.Client(cluster)
        else:
            try:
                client = distributed.Client(args.scheduler, timeout="5s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise InputError(f"cannot connect to the dask scheduler at {args.scheduler!r}: {exc}") from None
        try:
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()
