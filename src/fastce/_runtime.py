"""Run-time choices: which instruction set runs the kernels, and how many threads.

The ISA is chosen once, at import, as the best one that was compiled in and that this CPU
runs (cpuid), unless the environment variable FASTCE_ISA names one. It can be listed
(`available_isas`), read (`get_isa`) and forced (`set_isa`, `use_isa`), so that tests can run
every path on one machine. The choice is a single module-level value read once per call; a
call in flight keeps the kernels it started with.
"""
import contextlib
import operator
import os
import threading

from . import _kernels
from ._version import __version__

__all__ = ["available_isas", "get_isa", "set_isa", "use_isa", "get_config", "show_config"]

_ISA_IDS = {name: i for i, name in enumerate(_kernels.ISA_NAMES)}
_lock = threading.Lock()


def compiled_isas():
    """Instruction sets compiled into this build, whether or not this CPU runs them."""
    return tuple(n for n, i in _ISA_IDS.items() if _kernels.isa_compiled(i))


def available_isas():
    """Instruction sets compiled in *and* runnable on this CPU, worst to best."""
    return tuple(n for n, i in _ISA_IDS.items() if _kernels.isa_runnable(i))


def _check_isa(name):
    if not isinstance(name, str):
        raise TypeError(f"ISA name must be a str, got {type(name).__name__}")
    key = name.lower()
    if key not in _ISA_IDS:
        raise ValueError(f"unknown ISA {name!r}; known: {', '.join(_ISA_IDS)}")
    if not _kernels.isa_compiled(_ISA_IDS[key]):
        raise ValueError(f"ISA {name!r} was not compiled into this build of fastce")
    if not _kernels.isa_runnable(_ISA_IDS[key]):
        raise ValueError(f"ISA {name!r} is not supported by this CPU; available: {', '.join(available_isas())}")
    return key


def _initial_isa():
    forced = os.environ.get("FASTCE_ISA", "").strip()
    if forced:
        return _check_isa(forced)  # a bad FASTCE_ISA is an import error, not a silent fallback
    return available_isas()[-1]


_current = _initial_isa()


def get_isa():
    """The instruction set the kernels run with: 'scalar', 'avx2' or 'avx512'."""
    return _current


def set_isa(name):
    """Force the kernels of one instruction set (one of available_isas()) for all later calls."""
    global _current
    key = _check_isa(name)
    with _lock:
        _current = key


@contextlib.contextmanager
def use_isa(name):
    """Context manager: run the kernels of `name` inside the block, then restore the previous choice.

    The choice is process-wide (not per thread), like set_isa."""
    previous = get_isa()
    set_isa(name)
    try:
        yield
    finally:
        set_isa(previous)


def isa_id():
    return _ISA_IDS[_current]


# libgomp cannot be used in a child created by fork() once the parent has started its thread
# team: the child's first parallel region waits forever for threads that were not copied. So a
# forked child of a process that ran fastce multi-threaded runs fastce single-threaded (torch
# does the same). Use the "spawn" or "forkserver" start methods for parallel children.
_thread_team_started = False
_forked_after_threads = False


def _after_fork_in_child():
    global _forked_after_threads
    if _thread_team_started:
        _forked_after_threads = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def resolve_threads(num_threads):
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


def _check_threads(num_threads):
    if num_threads is None:
        return max(1, _kernels.omp_max_threads())
    if isinstance(num_threads, bool):
        raise TypeError("num_threads must be None or a positive integer, got bool")
    try:
        n = operator.index(num_threads)
    except TypeError:
        raise TypeError(
            f"num_threads must be None or a positive integer, got {type(num_threads).__name__}"
        ) from None
    if n <= 0:
        raise ValueError(f"num_threads must be None or a positive integer, got {n}")
    if n > MAX_THREADS:
        raise ValueError(f"num_threads={n} is more than fastce allows ({MAX_THREADS})")
    return n


def get_config():
    """A dict describing this build and the run-time choices."""
    return {
        "version": __version__,
        "openmp": _kernels.openmp_enabled(),
        "num_threads": 1 if _forked_after_threads or not _kernels.openmp_enabled() else _check_threads(None),
        "isas_compiled": compiled_isas(),
        "isas_available": available_isas(),
        "isa": get_isa(),
    }


def show_config():
    """Print the version, OpenMP status, effective thread count and the SIMD paths."""
    c = get_config()
    print(f"fastce {c['version']}")
    print(f"  OpenMP:           {'on' if c['openmp'] else 'off (single-threaded build)'}")
    print(f"  threads (None):   {c['num_threads']}")
    print(f"  ISAs compiled:    {', '.join(c['isas_compiled'])}")
    print(f"  ISAs on this CPU: {', '.join(c['isas_available'])}")
    print(f"  ISA selected:     {c['isa']}")
