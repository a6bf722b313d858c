"""Run-time choices: which instruction set runs the kernels, and how many threads.

The ISA is chosen once, at import, as the best one that was compiled in and that this CPU
runs (cpuid), unless the environment variable FASTCE_ISA names one. It can be listed
(`available_isas`), read (`get_isa`) and forced (`set_isa`, `use_isa`), so that tests can run
every path on one machine. The choice is a single module-level value read once per call; a
call in flight keeps the kernels it started with.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Dict, Iterator, Tuple, cast

from . import _kernels
from ._typing import Config, IsaName, NumThreads
from ._validate import check_positive_int
from ._version import __version__

__all__ = ["available_isas", "get_isa", "set_isa", "use_isa", "get_config", "show_config"]

_ISA_IDS: Dict[IsaName, int] = {cast(IsaName, name): i for i, name in enumerate(_kernels.ISA_NAMES)}
_lock = threading.Lock()


def compiled_isas() -> Tuple[IsaName, ...]:
    """Instruction sets compiled into this build, whether or not this CPU runs them."""
    return tuple(n for n, i in _ISA_IDS.items() if _kernels.isa_compiled(i))


def available_isas() -> Tuple[IsaName, ...]:
    """The instruction sets compiled in *and* runnable on this CPU, worst to best.

    Returns
    -------
    tuple of str
        A subset of ``("scalar", "avx2", "avx512")`` on x86-64, or ``("scalar", "neon")`` on
        aarch64, in that order; ``"scalar"`` is always there. The last one is the default choice at import (unless ``FASTCE_ISA`` names one).

    See Also
    --------
    get_isa, set_isa, use_isa

    Examples
    --------
    >>> import fastce
    >>> fastce.available_isas()[0]
    'scalar'
    >>> fastce.get_isa() in fastce.available_isas()
    True
    """
    return tuple(n for n, i in _ISA_IDS.items() if _kernels.isa_runnable(i))


def _check_isa(name: object) -> IsaName:
    if not isinstance(name, str):
        raise TypeError(f"ISA name must be a str, got {type(name).__name__}")
    key = name.lower()
    if key not in _ISA_IDS:
        raise ValueError(f"unknown ISA {name!r}; known: {', '.join(_ISA_IDS)}")
    if not _kernels.isa_compiled(_ISA_IDS[key]):
        raise ValueError(f"ISA {name!r} was not compiled into this build of fastce")
    if not _kernels.isa_runnable(_ISA_IDS[key]):
        raise ValueError(f"ISA {name!r} is not supported by this CPU; available: {', '.join(available_isas())}")
    return cast(IsaName, key)


def _initial_isa() -> IsaName:
    forced = os.environ.get("FASTCE_ISA", "").strip()
    if forced:
        return _check_isa(forced)  # a bad FASTCE_ISA is an import error, not a silent fallback
    return available_isas()[-1]


_current: IsaName = _initial_isa()


def get_isa() -> IsaName:
    """The instruction set the kernels run with.

    Returns
    -------
    {'scalar', 'avx2', 'avx512', 'neon'}
        The best of `available_isas` at import, ``FASTCE_ISA`` where the environment sets it,
        or what `set_isa` / `use_isa` chose since.

    See Also
    --------
    available_isas, set_isa, use_isa

    Examples
    --------
    >>> import fastce
    >>> fastce.get_isa() in fastce.available_isas()
    True
    """
    return _current


def set_isa(name: IsaName) -> None:
    """Run the kernels of one instruction set in every later call, process-wide.

    Parameters
    ----------
    name : {'scalar', 'avx2', 'avx512', 'neon'}
        One of `available_isas` (case-insensitive at run time).

    Raises
    ------
    TypeError
        If `name` is not a str.
    ValueError
        If `name` is not a known ISA, was not compiled into this build, or this CPU does not
        run it.

    See Also
    --------
    use_isa : The same for the duration of a ``with`` block.

    Notes
    -----
    A call already running keeps the kernels it started with. Every ISA computes the same
    function; results may differ in the last bits (vector exp and log, summation order).

    Examples
    --------
    >>> import fastce
    >>> previous = fastce.get_isa()
    >>> fastce.set_isa("scalar")
    >>> fastce.get_isa()
    'scalar'
    >>> fastce.set_isa(previous)
    """
    global _current
    key = _check_isa(name)
    with _lock:
        _current = key


@contextlib.contextmanager
def use_isa(name: IsaName) -> Iterator[None]:
    """Context manager: run the kernels of `name` inside the block, then restore the previous one.

    Parameters
    ----------
    name : {'scalar', 'avx2', 'avx512', 'neon'}
        One of `available_isas`.

    Yields
    ------
    None

    Raises
    ------
    TypeError, ValueError
        As `set_isa`, on entering the block.

    See Also
    --------
    set_isa

    Notes
    -----
    The choice is process-wide (not per thread), like `set_isa`.

    Examples
    --------
    >>> import fastce
    >>> with fastce.use_isa("scalar"):
    ...     print(fastce.get_isa())
    scalar
    """
    previous = get_isa()
    set_isa(name)
    try:
        yield
    finally:
        set_isa(previous)


def isa_id() -> int:
    return _ISA_IDS[_current]


# libgomp cannot be used in a child created by fork() once the parent has started its thread
# team: the child's first parallel region waits forever for threads that were not copied. So a
# forked child of a process that ran fastce multi-threaded runs fastce single-threaded (torch
# does the same). Use the "spawn" or "forkserver" start methods for parallel children.
_thread_team_started: bool = False
_forked_after_threads = False


def _after_fork_in_child() -> None:
    global _forked_after_threads
    if _thread_team_started:
        _forked_after_threads = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def resolve_threads(num_threads: object) -> int:
    """None -> every available core (OMP_NUM_THREADS respected); a positive int -> exactly it.
    1 in a child forked after fastce ran multi-threaded (see above)."""
    n = _check_threads(num_threads)
    if _forked_after_threads:
        return 1
    if n > 1:
        global _thread_team_started
        _thread_team_started = True
    return n


_kernels.set_thread_resolver(resolve_threads)  # the small-call path asks it for large work


# More threads than this is a mistake, not a request: each would be a real OS thread.
MAX_THREADS = 1024


def _check_threads(num_threads: object) -> int:
    n = check_positive_int(num_threads, "num_threads")
    if n is None:
        return max(1, _kernels.omp_max_threads())
    if n > MAX_THREADS:
        raise ValueError(f"num_threads={n} is more than fastce allows ({MAX_THREADS})")
    return n


def get_config() -> Config:
    """This build and the run-time choices, as a dict.

    Returns
    -------
    dict
        ``version`` (str), ``openmp`` (bool: built with OpenMP), ``num_threads`` (int: the
        threads ``num_threads=None`` uses; 1 without OpenMP or in a child forked after fastce
        ran threads), ``isas_compiled`` and ``isas_available`` (tuples of ISA names) and
        ``isa`` (the one selected, `get_isa`).

    See Also
    --------
    show_config : The same, printed.

    Examples
    --------
    >>> import fastce
    >>> config = fastce.get_config()
    >>> sorted(config)
    ['isa', 'isas_available', 'isas_compiled', 'num_threads', 'openmp', 'version']
    >>> config["isa"] == fastce.get_isa()
    True
    """
    return {
        "version": __version__,
        "openmp": _kernels.openmp_enabled(),
        "num_threads": 1 if _forked_after_threads or not _kernels.openmp_enabled() else _check_threads(None),
        "isas_compiled": compiled_isas(),
        "isas_available": available_isas(),
        "isa": get_isa(),
    }


def show_config() -> None:
    """Print the version, OpenMP status, effective thread count and the SIMD paths.

    See Also
    --------
    get_config : The same figures as a dict.

    Examples
    --------
    >>> import fastce
    >>> fastce.show_config()  # doctest: +ELLIPSIS
    fastce ...
      OpenMP: ...
    """
    c = get_config()
    print(f"fastce {c['version']}")
    print(f"  OpenMP:           {'on' if c['openmp'] else 'off (single-threaded build)'}")
    print(f"  threads (None):   {c['num_threads']}")
    print(f"  ISAs compiled:    {', '.join(c['isas_compiled'])}")
    print(f"  ISAs on this CPU: {', '.join(c['isas_available'])}")
    print(f"  ISA selected:     {c['isa']}")
