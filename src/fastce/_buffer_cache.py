"""The cache of large output buffers: fastce's large outputs reuse memory the program dropped.

A fresh gradient of a large input is fresh memory from the OS, which zeroes every page on first
touch, a cost comparable to the fused loss+gradient pass itself
(docs/performance/notes_python.md). fastce therefore allocates the outputs it creates (the gradient of
``cross_entropy_with_grad`` when no ``out=`` is given, and the results of ``softmax`` and
``log_softmax``) through a small cache (include/fastce/buffer_cache.h), installed as NumPy's
allocator for that one allocation only:

* the arrays are ordinary ndarrays that own their memory;
* when NumPy releases one of at least 16 MiB, the cache keeps its memory (at most 4 blocks, at
  most the limit in bytes, the newest first) and a later output of that size (up to 1/8 smaller)
  gets it back with no page faults. No memory is ever shared by two live arrays;
* the limit defaults to a quarter of physical memory; ``FASTCE_CACHE_MB`` (read at import) or
  :func:`set_cache_limit` changes it, and 0 turns the cache off.

The cost: the process keeps up to that much memory after the arrays are gone, until
:func:`empty_cache` (or a limit of 0) gives it back. ``out=`` avoids both the faults and the cache.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union, cast

import numpy as np

from . import _kernels
from ._typing import CacheInfo, NDArray
from ._validate import check_int

ENV_LIMIT = "FASTCE_CACHE_MB"


def _physical_memory() -> Optional[int]:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX, or not reported
        return None


def default_limit() -> int:
    """A quarter of physical memory (1 GiB where the OS does not report it)."""
    mem = _physical_memory()
    return mem // 4 if mem else 1 << 30


def _limit_from_env() -> int:
    raw = os.environ.get(ENV_LIMIT, "").strip()
    if not raw:
        return default_limit()
    try:
        mib = float(raw)
    except ValueError:
        mib = -1.0
    if not (mib >= 0 and mib != float("inf")):  # also rejects NaN
        # An import error, not a silent fallback (as FASTCE_ISA).
        raise ValueError(f"{ENV_LIMIT} must be a number of MiB >= 0 (0 disables the cache), got {raw!r}")
    return int(mib * 2**20)


def set_cache_limit(nbytes: int) -> None:
    """Keep at most `nbytes` bytes of released output buffers for reuse.

    Parameters
    ----------
    nbytes : int
        The limit in bytes, >= 0. 0 disables the cache and returns what it holds to the OS.
        The default is a quarter of physical memory, or ``FASTCE_CACHE_MB`` MiB where the
        environment sets it at import.

    Raises
    ------
    TypeError
        If `nbytes` is not an integer (bool included).
    ValueError
        If `nbytes` is negative.

    See Also
    --------
    cache_info, empty_cache

    Examples
    --------
    >>> import fastce
    >>> previous = fastce.cache_info()["limit"]
    >>> fastce.set_cache_limit(64 << 20)
    >>> fastce.cache_info()["limit"]
    67108864
    >>> fastce.set_cache_limit(previous)
    """
    n = check_int(nbytes, "nbytes", "an int")
    if n < 0:
        raise ValueError(f"nbytes must be >= 0, got {n}")
    _kernels.cache_set_limit(min(n, 2**63 - 1))


def empty_cache() -> int:
    """Return the memory of every cached buffer to the OS.

    Returns
    -------
    int
        How many bytes that was.

    See Also
    --------
    cache_info, set_cache_limit

    Examples
    --------
    >>> import fastce
    >>> freed = fastce.empty_cache()
    >>> fastce.cache_info()["cached_bytes"]
    0
    """
    return int(_kernels.cache_release())


def cache_info() -> CacheInfo:
    """The state of the cache of large output buffers.

    Returns
    -------
    dict
        ``limit`` (bytes), ``cached_bytes`` and ``cached_blocks`` (held now), ``hits`` and
        ``misses`` (outputs of at least ``min_bytes`` served from cached memory / from new
        memory since import), ``min_bytes`` (the smallest output the cache serves, 16 MiB) and
        ``max_blocks`` (how many blocks it holds at most). All ints.

    See Also
    --------
    empty_cache, set_cache_limit

    Examples
    --------
    >>> import fastce
    >>> info = fastce.cache_info()
    >>> sorted(info)
    ['cached_blocks', 'cached_bytes', 'hits', 'limit', 'max_blocks', 'min_bytes', 'misses']
    >>> info["min_bytes"]
    16777216
    """
    info = _kernels.cache_stats()
    return cast(CacheInfo, dict(info, min_bytes=_kernels.CACHE_MIN_BYTES, max_blocks=_kernels.CACHE_SLOTS))


def empty_like(a: NDArray, dtype: Any) -> NDArray:
    """np.empty_like(a, dtype=dtype), in a's memory order, its memory from the cache."""
    return _kernels.allocate_cached(np.empty_like, a, dtype=dtype)


def empty(shape: Union[int, Sequence[int]], dtype: Any) -> NDArray:
    """np.empty(shape, dtype) (C order), its memory from the cache."""
    return _kernels.allocate_cached(np.empty, shape, dtype=dtype)


set_cache_limit(_limit_from_env())
