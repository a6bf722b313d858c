"""What the file commands (``fastce score``, ``fastce compare``) share: argument types, the
mapping of failures to one ``fastce <command>: error: ...`` line and an exit status, the progress
bar, and JSON output.

Exit status: 0 ok; 2 for usage and input errors (:class:`InputError`, and the IndexError /
ValueError / TypeError that fastce raises on bad data); 1 for failures while reading or mapping
(:class:`ReadError`, I/O errors, out of memory). No traceback in any of these cases.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional

import numpy as np

from .npy_blocks import (InputError, NpyInfo, ReadError, check_float, check_rows_contiguous, is_zarr_path,
                          read_npy_header, read_zarr_header)


@dataclass
class ModelFiles:
    """One model's validated headers: its logits file, or its hidden states and LM-head weight
    (and bias), whose logits are computed chunk by chunk."""

    logits: Optional[NpyInfo] = None
    hidden: Optional[NpyInfo] = None
    weight: Optional[NpyInfo] = None
    bias: Optional[NpyInfo] = None

    @property
    def rows(self) -> NpyInfo:
        """The file that is read in row blocks (logits, or hidden for the linear form)."""
        return self.logits if self.logits is not None else self.hidden

    @property
    def vocab(self) -> int:
        return self.logits.shape[1] if self.logits is not None else self.weight.shape[0]

    def describe(self, label: str) -> List[str]:
        """Table lines naming the files (label: e.g. "model")."""
        if self.logits is not None:
            return [f"{label:<11} {self.logits.path}  ({self.logits.describe()})"]
        out = [f"{label + ' h':<11} {self.hidden.path}  ({self.hidden.describe()})",
               f"{label + ' W':<11} {self.weight.path}  ({self.weight.describe()})"]
        if self.bias is not None:
            out.append(f"{label + ' b':<11} {self.bias.path}  ({self.bias.describe()})")
        return out


def logits_files(path: str, role: str = "logits", dtype: Optional[str] = None, v2_only: bool = False,
                 zarr_ok: bool = False) -> ModelFiles:
    """A C-ordered (N, V) float logits file's header, checked (InputError on a problem); with
    `zarr_ok`, a zarr array's too (read through dask only)."""
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
    """The headers of hidden states (N, H), an LM-head weight (V, H) and bias (V,), checked;
    `prefix` names the options in messages (e.g. "ref-")."""
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


def _number(text: str, kind):
    """int(text) or float(text), or the argparse error that names what was expected."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None


def positive_int(text: str) -> int:
    v = _number(text, int)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def positive_float(text: str) -> float:
    v = _number(text, float)
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return v


def int64(text: str) -> int:
    v = _number(text, int)
    if not -(2 ** 63) <= v < 2 ** 63:
        raise argparse.ArgumentTypeError(f"must fit in a 64-bit integer, got {v}")
    return v


def top_k_list(text: str) -> List[int]:
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


def json_value(v):
    """NumPy scalars to Python numbers; NaN and infinities to ``None`` (strict JSON)."""
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
    print(f"fastce {command}: error: {msg}", file=sys.stderr)
    return status


def guarded(command: str, body: Callable[[], int]) -> int:
    """``body()``'s status, or the failure it raised as one error line and its exit status."""
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
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def progress(total: int, desc: str) -> Iterator[Optional[Callable[[int], None]]]:
    """Yields the update function of a tqdm bar on stderr when it is a terminal (else None),
    with NumPy's floating-point warnings silenced (NaN rows are reported in the results)."""
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


def add_dask_arguments(p: argparse.ArgumentParser) -> None:
    """--workers N / --scheduler ADDRESS: run a file command through fastce.dask."""
    g = p.add_argument_group("on a dask cluster (needs dask[array] and distributed)")
    ex = g.add_mutually_exclusive_group()
    ex.add_argument("--workers", type=positive_int, default=None, metavar="N",
                    help="start a local dask cluster of N worker processes (1 thread each) and run through it; "
                    "with it (or --scheduler) a logits file may also be a zarr array (a .zarr store; needs zarr)")
    ex.add_argument("--scheduler", default=None, metavar="ADDRESS",
                    help="use the dask scheduler at ADDRESS (e.g. tcp://host:8786); the workers read the files "
                    "by their paths, which must be readable there")


def uses_dask(args: argparse.Namespace) -> bool:
    """Whether --workers or --scheduler asks to run the command through fastce.dask."""
    return args.workers is not None or args.scheduler is not None


@contextlib.contextmanager
def dask_client(args: argparse.Namespace):
    """The distributed.Client the options ask for (None without --workers / --scheduler)."""
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
