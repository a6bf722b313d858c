"""Memory: what is free (to skip a case that would not fit), and the peak extra memory of one
call (tracemalloc peak and RSS high-water mark, less the results the call returns)."""

from __future__ import annotations

import gc
import os
from typing import Any, Callable, Optional, Tuple

import numpy as np


def available_memory() -> Optional[int]:
    """Bytes of memory available to new allocations (Linux), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def too_big(need: int, fraction: float) -> Optional[str]:
    """A skip reason if ``need`` bytes exceed ``fraction`` of the free memory, else None."""
    avail = available_memory()
    if avail is not None and need > fraction * avail:
        return f"memory (~{need / 2**30:.1f} GiB needed, {avail / 2**30:.1f} GiB free)"
    return None


def _rss_status(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _malloc_trim() -> None:
    """Gives the C heap's free memory back to the OS (glibc), so that the next allocations
    fault in fresh pages that the RSS high-water mark sees (freed blocks kept resident by
    malloc would otherwise hide them)."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_rss_peak() -> bool:
    """Resets the process's RSS high-water mark (Linux: 5 > /proc/self/clear_refs)."""
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def result_nbytes(result: Any) -> int:
    """Bytes of the arrays (NumPy or torch) in a call's result (one value or a tuple)."""
    n = 0
    for r in result if isinstance(result, tuple) else (result,):
        if isinstance(r, np.ndarray):
            n += r.nbytes
        elif hasattr(r, "element_size") and hasattr(r, "numel"):  # torch.Tensor
            n += r.element_size() * r.numel()
    return n


def peak_extra_memory(fn: Callable[[], Any], returns_results: bool,
                      traced: bool = True) -> Tuple[Optional[int], Optional[int]]:
    """One untimed call of ``fn``: ``(tracemalloc peak, RSS high-water mark above the RSS
    before it)``, both less the results it returns when ``returns_results``. The traced figure
    is None when ``traced`` is false (a library whose allocations tracemalloc does not see),
    the RSS one where /proc/self/clear_refs is not writable."""
    import tracemalloc

    gc.collect()
    rss_ok = _reset_rss_peak()
    rss0 = _rss_status("VmRSS") if rss_ok else None
    tracemalloc.start()
    try:
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    hwm = _rss_status("VmHWM") if rss_ok else None
    res = result_nbytes(result) if returns_results else 0
    del result
    peak_traced = max(0, peak - res) if traced else None
    peak_rss = max(0, hwm - rss0 - res) if rss0 is not None and hwm is not None else None
    return peak_traced, peak_rss
