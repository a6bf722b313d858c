"""This machine's roofline, measured in the run with the extension's probes, and the bound it
puts on a row of the cross-entropy table (the ``%roof`` column).

* read: ``fastce._kernels.probe_read`` -- one streaming read of a float32 array of
  ``>= 256 MiB`` on n threads (GB/s, the best of 5);
* read+write: ``probe_copy`` -- ``dst[...] = src`` (GB/s counting the bytes read and written);
* exp: ``vector_math(isa, "exp_floored", x)`` -- the exp the kernels' sums of exponentials
  inline (the gradient pass's exp_flush_bounded is no faster), one thread, on an L2-sized
  array (32768 values in [-80, 0]), float32 and float64; n threads are taken to do n times as
  many.

Bound, in G logits/s, for logits of ``itemsize`` bytes: forward ``min(read GB/s / itemsize,
exp G/s)``; loss+grad ``min(read+write GB/s / (2 itemsize), exp G/s / 2)`` (each logit is read
and its gradient written; two exps a logit). float16 logits use the float32 exp.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from .memory import too_big
from .workloads import FORWARD, np_dtype

PROBE_BYTES = 256 * 2**20
PROBE_REPEATS = 5
EXP_VALUES = 32768
EXP_FUNC = "exp_floored"  # the exp of the kernels' sums of exponentials (vec_*.h)


@dataclasses.dataclass(frozen=True)
class Roofline:
    """The roofline at one thread count."""

    threads: int
    read_gbs: float  # streaming read, GB/s
    copy_gbs: float  # read + write, GB/s (bytes read + bytes written)
    exp_gps: Dict[str, float]  # G exp/s on `threads` threads, by dtype ("float32", "float64")
    nbytes: int  # bytes of the probes' arrays

    def bound(self, dtype: str, pass_: str, terms=None) -> float:
        """The most G logits/s a ``pass_`` over ``dtype`` logits can reach here. ``terms`` =
        (arrays read, arrays written, exps) per logit; default (1, 0, 1) forward, (1, 1, 2)
        loss+grad (the cross-entropy's)."""
        item = np_dtype(dtype).itemsize
        exp = self.exp_gps["float64" if item == 8 else "float32"]
        reads, writes, exps = terms or ((1, 0, 1) if pass_ == FORWARD else (1, 1, 2))
        gbs = self.read_gbs if writes == 0 else self.copy_gbs
        return min(gbs / ((reads + writes) * item), exp / exps)

    def record(self) -> Dict[str, Any]:
        return {"section": "roofline", "threads": self.threads, "read_GBps": self.read_gbs,
                "read_write_GBps": self.copy_gbs, "exp_f32_Gps": self.exp_gps["float32"],
                "exp_f64_Gps": self.exp_gps["float64"], "probe_bytes": self.nbytes}


def _best(fn: Callable[[], Any], repeats: int) -> float:
    """The shortest of ``repeats`` calls of ``fn``, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def exp_rate(kernels, isa_id: int, dtype: str, calls: int = 100) -> float:
    """G exp/s of the kernels' exp on one thread (the best of 5 runs of ``calls`` calls)."""
    x = np.linspace(-80.0, 0.0, EXP_VALUES, dtype=dtype)
    kernels.vector_math(isa_id, EXP_FUNC, x)  # warm-up

    def many():
        for _ in range(calls):
            kernels.vector_math(isa_id, EXP_FUNC, x)

    return EXP_VALUES * calls / _best(many, 5) / 1e9


def measure(threads: Sequence[int], nbytes: int = PROBE_BYTES,
            repeats: int = PROBE_REPEATS) -> Optional[Dict[int, Roofline]]:
    """The roofline at each thread count, or None where it cannot be measured here (no probes
    in this build of the extension, or too little free memory for the arrays)."""
    try:
        import fastce
        from fastce import _kernels as K

        isa_id = K.ISA_NAMES.index(fastce.get_isa())
        K.probe_read, K.probe_copy  # noqa: B018 - present in this build?
    except (ImportError, AttributeError, ValueError):
        return None
    if too_big(2 * nbytes, 0.5):
        return None
    exp1 = {dt: exp_rate(K, isa_id, dt) for dt in ("float32", "float64")}
    n = nbytes // 4
    src = np.empty(n, dtype=np.float32)
    src.fill(1.0)  # fault the pages in before timing
    dst = np.empty_like(src)
    dst.fill(0.0)
    out = {}
    for t in threads:
        read = _best(lambda: K.probe_read(src, t), repeats)
        copy = _best(lambda: K.probe_copy(src, dst, t), repeats)
        out[t] = Roofline(t, 4 * n / read / 1e9, 8 * n / copy / 1e9,
                          {dt: r * t for dt, r in exp1.items()}, 4 * n)
    return out
