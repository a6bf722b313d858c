"""Block-mapped reading of ``.npy`` files: C-ordered arrays read in row blocks, mapping only one
block's byte range at a time, so that the memory used stays at about one block whatever the
file's size (files larger than memory work).

* :func:`read_npy_header` parses a file's header (:func:`numpy.lib.format.read_magic` and
  ``read_array_header_1_0`` / ``_2_0``): shape, dtype, memory order and the byte offset at which
  the data start, and checks the file kind and its length. With :func:`check_float`,
  :func:`check_int` and :func:`check_rows_contiguous`, every check happens on the headers before
  a single element is read, so a bad input costs nothing and fails with one line
  (:class:`InputError`).
* :class:`RowBlockReader` (one per file; readers of several files can step through the same
  :func:`block_bounds` in lockstep) reads rows ``[r0, r1)`` of a C-ordered array, the
  contiguous byte range ``offset + r0*row_bytes .. offset + r1*row_bytes``: only that range is
  mapped (``mmap.mmap(fd, length, offset=start rounded down to mmap.ALLOCATIONGRANULARITY,
  access=ACCESS_READ)``), viewed with :func:`numpy.frombuffer`, handed to the caller, and
  **unmapped** before the call returns. Byte-swapped files are converted block by block. A
  failure to map raises :class:`ReadError`.
* Why not ``np.load(path, mmap_mode="r")`` of the whole file? A whole-file mapping reserves the
  file's size in address space (``RLIMIT_AS`` / ``ulimit -v`` counts it, so a 3 GB file cannot
  even be opened under a 1.5 GB limit), and every page touched stays mapped, so the process's
  resident set grows to the file size as the scan proceeds (the kernel may reclaim clean pages
  under pressure, but RSS accounting, cgroup limits and other processes see the growth). A
  per-block window bounds both: address space and resident memory are one block plus the fixed
  cost of the interpreter and libraries, whatever the file size. Reading with ``readinto`` into a
  reusable buffer would bound them too, at the cost of one extra copy per byte.
* :meth:`RowBlockReader.prefetch` asks the kernel to read the next block ahead
  (``posix_fadvise(WILLNEED)``) while the current one is processed, which overlaps disk reads
  with computation at no memory cost to the process (the page cache is the kernel's).
* A Fortran-ordered array of 2+ dimensions is refused (:func:`check_rows_contiguous`): its rows
  are not contiguous, so a row block would touch the whole file.

Nothing here knows what the rows mean: the caller (e.g. ``fastce score``) chooses the block size
(:func:`rows_per_block`) and does the work on each block.
"""

from __future__ import annotations

import math
import mmap
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterator, Optional, Tuple, TypeVar, Union

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # pragma: no cover
    import dask.array

__all__ = [
    "DEFAULT_BLOCK_MB",
    "InputError",
    "ReadError",
    "NpyInfo",
    "read_npy_header",
    "check_rows_contiguous",
    "check_float",
    "check_int",
    "RowBlockReader",
    "block_bounds",
    "rows_per_block",
    "ZarrInfo",
    "is_zarr_path",
    "read_zarr_header",
    "as_dask_array",
]

#: Default size of one mapped block, in MiB.
DEFAULT_BLOCK_MB: float = 64.0

_T = TypeVar("_T")


class InputError(Exception):
    """A problem with the command line or an input file: one-line message, exit status 2."""


class ReadError(Exception):
    """A failure while reading or mapping a file that passed the checks: exit status 1."""


# --------------------------------------------------------------------------------------------
# .npy headers


@dataclass(frozen=True)
class NpyInfo:
    """What a ``.npy`` header says, plus where the data start in the file.

    Parameters
    ----------
    path : str
        The file's path.
    shape : tuple of int
        The array's shape.
    dtype : numpy.dtype
        The dtype to read the data as (the header's, or bfloat16 where the caller declared it).
    fortran_order : bool
        Whether the header says the array is Fortran-ordered.
    offset : int
        Byte offset of the first element in the file.
    file_size : int
        The file's size in bytes.
    """

    path: str
    shape: Tuple[int, ...]
    dtype: np.dtype[Any]
    fortran_order: bool
    offset: int      #: byte offset of the first element
    file_size: int

    @property
    def nbytes(self) -> int:
        """Bytes of the whole array's data."""
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def row_bytes(self) -> int:
        """Bytes of one row (all axes but the first), for a C-ordered array of 1+ dimensions."""
        inner = 1
        for d in self.shape[1:]:
            inner *= d
        return inner * self.dtype.itemsize

    def describe(self) -> str:
        """The shape and dtype for messages and tables, e.g. ``"1000 x 50 float32"``.

        Returns
        -------
        str
            The dimensions joined by ``" x "`` (``"scalar"`` for a 0-d array) and the dtype's name.
        """
        dims = " x ".join(str(d) for d in self.shape) or "scalar"
        return f"{dims} {self.dtype.name}"


def _read_header(fp: BinaryIO, version: Tuple[int, int]) -> Tuple[Tuple[int, ...], bool, np.dtype[Any]]:
    fmt = np.lib.format
    if version == (1, 0):
        return fmt.read_array_header_1_0(fp)
    if version == (2, 0):
        return fmt.read_array_header_2_0(fp)
    # Format 3.0 (utf-8 field names) has no public reader; use NumPy's own if it is there.
    private = getattr(fmt, "_read_array_header", None)
    if private is None:  # pragma: no cover - numpy without it
        try:
            from numpy.lib import _format_impl as impl
            private = getattr(impl, "_read_array_header", None)
        except ImportError:
            private = None
    if private is None:  # pragma: no cover
        raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    return private(fp, version)  # type: ignore[no-any-return]


def read_npy_header(path: str, role: str, dtype: Optional[str] = None, v2_only: bool = False) -> NpyInfo:
    """Parse the header of the ``.npy`` file ``path`` and check the file against it.

    ``dtype="bfloat16"`` reads a file whose header says ``|V2``: that is how ``np.save`` writes
    ml_dtypes' bfloat16 (NumPy has no name for it), so the header alone cannot tell bfloat16
    from any other 2-byte record; the caller says so. A ``|V2`` file without it, or any other
    void dtype, is refused.

    Parameters
    ----------
    path : str
        The ``.npy`` file.
    role : str
        What the file is (``"logits"``, ``"targets"``, ...), to name it in error messages.
    dtype : {None, "bfloat16"}, optional
        The dtype the caller declares for a ``|V2`` file.
    v2_only : bool, optional
        If true, ``dtype`` applies to a ``|V2`` file only and any other file keeps its header's
        dtype (one option for several files of different dtypes).

    Returns
    -------
    NpyInfo
        The header's shape, dtype and memory order, where the data start, and the file's size.

    Raises
    ------
    InputError
        With a one-line message, for a missing or unreadable file, a file that is not ``.npy``
        (or a ``.npz`` archive), a corrupt header, an object dtype, or data shorter than the
        header announces.
    """
    label = f"{role} file {path!r}"
    try:
        fp = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{label}: is a directory") from None
    except OSError as exc:
        raise InputError(f"{label}: cannot open: {exc.strerror or exc}") from None
    with fp:
        try:
            file_size = os.fstat(fp.fileno()).st_size
            head = fp.read(6)
            if head[:4] == b"PK\x03\x04":
                raise InputError(f"{label}: is a .npz/zip archive, not a .npy file; "
                                 "extract the array (np.load(path)[name]) and np.save it")
            if head != np.lib.format.MAGIC_PREFIX:
                raise InputError(f"{label}: not a .npy file (no NumPy magic string)")
            fp.seek(0)
            version = np.lib.format.read_magic(fp)
            shape, fortran_order, header_dtype = _read_header(fp, version)
            offset = fp.tell()
        except InputError:
            raise
        except OSError as exc:
            raise InputError(f"{label}: cannot read: {exc.strerror or exc}") from None
        except Exception as exc:  # ValueError/SyntaxError/... from a corrupt header
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{label}: corrupt .npy header ({msg})") from None
    header_dtype = np.dtype(header_dtype)
    if v2_only and not (header_dtype.kind == "V" and header_dtype.itemsize == 2):
        dtype = None
    read_dtype = _declared_dtype(header_dtype, dtype, label)
    if read_dtype.hasobject:
        raise InputError(f"{label}: holds Python objects (dtype {read_dtype}); expected numbers")
    info = NpyInfo(path, tuple(int(d) for d in shape), read_dtype, bool(fortran_order), offset,
                   file_size)
    if offset + info.nbytes > file_size:
        raise InputError(
            f"{label}: truncated: the header announces {info.describe()} ({info.nbytes} bytes of "
            f"data) but only {max(0, file_size - offset)} bytes follow the header")
    return info


def _declared_dtype(header: np.dtype[Any], declared: Optional[str], label: str) -> np.dtype[Any]:
    """The dtype to read: the header's, or bfloat16 for a |V2 header with dtype='bfloat16'."""
    if declared is None:
        if header.kind == "V" and header.itemsize == 2 and header.names is None:
            raise InputError(f"{label}: holds 2-byte records (dtype |V2), which is how np.save writes "
                             "bfloat16; if it is bfloat16, pass --dtype bfloat16")
        return header
    if declared != "bfloat16":
        raise InputError(f"{label}: unknown --dtype {declared!r}; the one known is 'bfloat16'")
    if header.name == "bfloat16" and header.itemsize == 2:
        return header
    if not (header.kind == "V" and header.itemsize == 2 and header.names is None):
        raise InputError(f"{label}: --dtype bfloat16 was given but the header says {header.str} "
                         "(bfloat16 files say |V2)")
    try:
        import ml_dtypes
    except ImportError:
        raise InputError(f"{label}: reading bfloat16 needs ml_dtypes (pip install ml_dtypes)") from None
    return np.dtype(ml_dtypes.bfloat16)


def check_rows_contiguous(info: Union[NpyInfo, ZarrInfo], role: str) -> None:
    """Refuse a Fortran-ordered array of 2+ non-trivial dimensions (its rows are not contiguous).

    Parameters
    ----------
    info : NpyInfo or ZarrInfo
        The file's header.
    role : str
        What the file is, to name it in the error message.

    Raises
    ------
    InputError
        If a row block of the array would touch the whole file.
    """
    if info.fortran_order and len(info.shape) >= 2 and sum(d > 1 for d in info.shape) > 1:
        raise InputError(
            f"{role} file {info.path!r}: is Fortran-ordered, so its rows are not contiguous and "
            "cannot be read in row blocks; re-save it C-ordered "
            "(np.save(path, np.ascontiguousarray(a)))")


def check_float(info: Union[NpyInfo, ZarrInfo], role: str) -> None:
    """Refuse any dtype but float16, bfloat16, float32 and float64.

    Parameters
    ----------
    info : NpyInfo or ZarrInfo
        The file's header.
    role : str
        What the file is, to name it in the error message.

    Raises
    ------
    InputError
        If the dtype is not one of the four floating-point dtypes the kernels read.
    """
    is_bf16 = info.dtype.name == "bfloat16" and info.dtype.itemsize == 2
    if not is_bf16 and (info.dtype.kind != "f" or info.dtype.itemsize not in (2, 4, 8)):
        raise InputError(f"{role} file {info.path!r}: dtype {info.dtype} is not supported; "
                         "expected float16, bfloat16 (with --dtype bfloat16), float32 or float64")


def check_int(info: NpyInfo, role: str) -> None:
    """Refuse a non-integer dtype (targets are integer class indices).

    Parameters
    ----------
    info : NpyInfo
        The file's header.
    role : str
        What the file is, to name it in the error message.

    Raises
    ------
    InputError
        If the dtype is neither a signed nor an unsigned integer dtype.
    """
    if info.dtype.kind not in "iu":
        raise InputError(f"{role} file {info.path!r}: dtype {info.dtype} is not an integer dtype; "
                         "targets must be integer class indices")


# --------------------------------------------------------------------------------------------
# row-block reading


class RowBlockReader:
    """Reads rows ``[r0, r1)`` of a C-ordered ``.npy`` array by mapping only their byte range.

    Use :meth:`apply` (map, call, unmap) or :meth:`copy_rows` (map, copy, unmap); no mapping
    outlives the call, so address space and resident memory stay bounded by one block. The
    reader holds the file open until :meth:`close` (or the end of a ``with`` block).

    Parameters
    ----------
    info : NpyInfo
        The checked header of the file (:func:`read_npy_header`).

    Attributes
    ----------
    info : NpyInfo
        The file's header.
    row_shape : tuple of int
        The shape of one row (all axes but the first).
    row_bytes : int
        Bytes of one row.
    n_rows : int
        Rows in the file (1 for a 0-d array).
    """

    def __init__(self, info: NpyInfo) -> None:
        self.info = info
        self.row_shape: Tuple[int, ...] = info.shape[1:]
        self.row_bytes: int = info.row_bytes
        self.n_rows: int = info.shape[0] if info.shape else 1
        self._fp = open(info.path, "rb")
        self._fd = self._fp.fileno()
        self._swapped = not info.dtype.isnative

    def close(self) -> None:
        """Close the file."""
        self._fp.close()

    def __enter__(self) -> RowBlockReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _span(self, r0: int, r1: int) -> Tuple[int, int, int]:
        """(aligned map offset, map length, offset of row r0 inside the map)."""
        start = self.info.offset + r0 * self.row_bytes
        end = self.info.offset + r1 * self.row_bytes
        aligned = start - start % mmap.ALLOCATIONGRANULARITY
        return aligned, end - aligned, start - aligned

    def prefetch(self, r0: int, r1: int) -> None:
        """Ask the kernel to start reading rows ``[r0, r1)`` into the page cache (no mapping).

        Advisory only (``posix_fadvise(WILLNEED)``): nothing happens where the call is missing
        or fails.

        Parameters
        ----------
        r0, r1 : int
            The first row and one past the last.
        """
        if r1 <= r0 or not hasattr(os, "posix_fadvise"):
            return
        aligned, length, _ = self._span(r0, r1)
        try:
            os.posix_fadvise(self._fd, aligned, length, os.POSIX_FADV_WILLNEED)
        except OSError:  # pragma: no cover - advisory only
            pass

    def apply(self, r0: int, r1: int, fn: Callable[[np.ndarray], _T]) -> _T:
        """Map rows ``[r0, r1)``, return ``fn(rows)``, and unmap them before returning.

        Parameters
        ----------
        r0, r1 : int
            The first row and one past the last.
        fn : callable
            Called once with the rows, an array of shape ``(r1 - r0, *row_shape)`` in native
            byte order. It must not keep a reference to its argument (a view of the mapping,
            except for a byte-swapped file, whose block is converted).

        Returns
        -------
        object
            What ``fn`` returns.

        Raises
        ------
        ReadError
            If the rows cannot be mapped.
        """
        n = r1 - r0
        if n <= 0 or self.row_bytes == 0:
            return fn(np.empty((max(n, 0),) + self.row_shape, self.info.dtype.newbyteorder("=")))
        aligned, length, inner = self._span(r0, r1)
        try:
            mm = mmap.mmap(self._fd, length, offset=aligned, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise ReadError(
                f"cannot map rows {r0}..{r1 - 1} of {self.info.path!r} ({length} bytes): "
                f"{getattr(exc, 'strerror', None) or exc}; try a smaller --block-mb") from None
        try:
            rows = np.frombuffer(mm, dtype=self.info.dtype, count=n * (self.row_bytes //
                                 self.info.dtype.itemsize), offset=inner)
            rows = rows.reshape((n,) + self.row_shape)
            if self._swapped:  # one native-order copy of this block
                rows = rows.astype(self.info.dtype.newbyteorder("="))
            try:
                return fn(rows)
            finally:
                del rows
        finally:
            try:
                mm.close()
            except BufferError:  # pragma: no cover - fn kept a view; the GC unmaps it later
                pass

    def copy_rows(self, r0: int, r1: int, dtype: Optional[npt.DTypeLike] = None) -> np.ndarray:
        """Rows ``[r0, r1)`` as a new array; nothing stays mapped.

        Parameters
        ----------
        r0, r1 : int
            The first row and one past the last.
        dtype : numpy dtype-like, optional
            Convert the rows to it (default: the file's dtype, in native byte order).

        Returns
        -------
        numpy.ndarray
            A copy of the rows, of shape ``(r1 - r0, *row_shape)``.

        Raises
        ------
        ReadError
            If the rows cannot be mapped.
        """
        return self.apply(r0, r1, lambda a: np.array(a, dtype=dtype, copy=True))


def block_bounds(n_rows: int, rows_per_block: int) -> Iterator[Tuple[int, int]]:
    """The consecutive row blocks that cover ``range(n_rows)``.

    Parameters
    ----------
    n_rows : int
        Rows to cover.
    rows_per_block : int
        Rows per block (the last block may be shorter); at least 1.

    Yields
    ------
    tuple of (int, int)
        ``(r0, r1)``: the block's first row and one past its last.
    """
    for r0 in range(0, n_rows, rows_per_block):
        yield r0, min(n_rows, r0 + rows_per_block)


def rows_per_block(row_bytes: int, block_rows: Optional[int], block_mb: Optional[float]) -> int:
    """Rows per block, from ``--block-rows`` or ``--block-mb``.

    Parameters
    ----------
    row_bytes : int
        Bytes of one row of the file read in blocks.
    block_rows : int or None
        Rows per block; wins when given.
    block_mb : float or None
        Size of one block in MiB (default :data:`DEFAULT_BLOCK_MB`).

    Returns
    -------
    int
        ``block_rows`` if given, else as many rows as fit in ``block_mb`` MiB (at least one).
    """
    if block_rows is not None:
        return block_rows
    mb = DEFAULT_BLOCK_MB if block_mb is None else block_mb
    return max(1, int(mb * 1024 * 1024) // max(1, row_bytes))


# --------------------------------------------------------------------------------------------
# the same files as dask arrays (fastce score / compare --workers N | --scheduler ADDRESS)


def _read_rows(info: NpyInfo, r0: int, r1: int, dtype: Optional[npt.DTypeLike] = None) -> np.ndarray:
    """Rows [r0, r1) of the file, read where this runs (a dask worker: the file's path must be
    readable there; with a LocalCluster it is the same machine)."""
    with RowBlockReader(info) as reader:
        return reader.copy_rows(r0, r1, dtype)


@dataclass
class ZarrInfo:
    """A zarr array's path, shape and dtype.

    ``fastce score`` and ``fastce compare`` read zarr logits through dask only (with
    ``--workers`` or ``--scheduler``); see :func:`is_zarr_path`.

    Parameters
    ----------
    path : str
        The zarr store's path.
    shape : tuple of int
        The array's shape.
    dtype : numpy.dtype
        The array's dtype.
    fortran_order : bool
        Always false: dask reads a zarr array in row chunks whatever its layout.
    """

    path: str
    shape: Tuple[int, ...]
    dtype: np.dtype[Any]
    fortran_order: bool = False

    @property
    def row_bytes(self) -> int:
        """Bytes of one row (all axes but the first)."""
        return math.prod(self.shape[1:]) * self.dtype.itemsize

    def describe(self) -> str:
        """The shape and dtype for messages and tables, e.g. ``"1000 x 50 float32 (zarr)"``.

        Returns
        -------
        str
            The dimensions joined by ``" x "``, the dtype's name and ``"(zarr)"``.
        """
        return " x ".join(str(d) for d in self.shape) + f" {self.dtype.name} (zarr)"


def is_zarr_path(path: str) -> bool:
    """Whether ``path`` names a zarr store.

    Parameters
    ----------
    path : str
        A path given on the command line.

    Returns
    -------
    bool
        True for a path ending in ``.zarr``, or a directory holding zarr metadata (v2
        ``.zarray``, v3 ``zarr.json``).
    """
    if path.rstrip("/").endswith(".zarr"):
        return True
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, m)) for m in (".zarray", "zarr.json"))


def read_zarr_header(path: str, role: str) -> ZarrInfo:
    """Open the zarr array at ``path`` and return its shape and dtype (no data is read).

    Parameters
    ----------
    path : str
        The zarr store.
    role : str
        What the array is, to name it in error messages.

    Returns
    -------
    ZarrInfo
        The array's path, shape and dtype.

    Raises
    ------
    InputError
        If zarr is not installed or ``path`` is not a readable zarr array.
    """
    try:
        import zarr
    except ImportError:
        raise InputError(f"{role} {path!r} is a zarr store; reading it needs zarr (pip install zarr)") from None
    try:
        z = zarr.open_array(path, mode="r")
    except Exception as exc:  # zarr raises various errors for a missing or foreign store
        raise InputError(f"{role} {path!r}: not a readable zarr array ({type(exc).__name__}: {exc})") from None
    return ZarrInfo(path, tuple(int(d) for d in z.shape), np.dtype(z.dtype))


def as_dask_array(info: Union[NpyInfo, ZarrInfo], rows_per_chunk: int,
                  dtype: Optional[npt.DTypeLike] = None) -> dask.array.Array:
    """The ``.npy`` file (or zarr array) as a dask array chunked by rows.

    Each chunk is read by its own task from the file (nothing is read here, and no data
    travels in the graph), so the file's path must be readable where the tasks run.

    Parameters
    ----------
    info : NpyInfo or ZarrInfo
        The checked header of the file.
    rows_per_chunk : int
        Rows per chunk (:func:`rows_per_block`).
    dtype : numpy dtype-like, optional
        Convert the chunks to it (default: the file's dtype, in native byte order).

    Returns
    -------
    dask.array.Array
        The array, lazily read.
    """
    import dask
    import dask.array as da

    if isinstance(info, ZarrInfo):
        x = da.from_zarr(info.path)
        x = x.rechunk({0: rows_per_chunk, **{a: -1 for a in range(1, x.ndim)}})
        return x if dtype is None else x.astype(dtype)

    dt = np.dtype(dtype) if dtype is not None else info.dtype.newbyteorder("=")
    chunks = [da.from_delayed(dask.delayed(_read_rows)(info, r0, r1, dtype), shape=(r1 - r0,) + info.shape[1:],
                              dtype=dt)
              for r0, r1 in block_bounds(info.shape[0], rows_per_chunk)]
    if not chunks:
        return da.zeros((0,) + info.shape[1:], dtype=dt)
    return da.concatenate(chunks, axis=0)
