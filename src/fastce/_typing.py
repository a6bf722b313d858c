"""The types of fastce's public signatures: the closed string options as ``Literal`` types, and
the array-likes its functions accept.

One place for each: the validators (``_validate.REDUCTIONS``, ``_runtime``'s ISA names) check the
same sets at run time, and ``tests/test_typing.py`` checks that each ``Literal`` here lists
exactly the values its validator accepts.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Protocol, Sequence, Tuple, TypedDict, Union

import numpy as np
import numpy.typing as npt

#: ``reduction=`` of the losses: torch's three.
Reduction = Literal["none", "mean", "sum"]

#: The instruction sets fastce compiles kernels for (``available_isas()`` lists the runnable ones).
IsaName = Literal["scalar", "avx2", "avx512", "neon"]


class SupportsDLPack(Protocol):
    """Any object that exports its memory through DLPack (a CPU torch tensor, a JAX array)."""

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any: ...


#: An array argument: a NumPy array or anything ``np.asarray`` reads (a CPU torch tensor has
#: ``__array__``), or any object with ``__dlpack__`` (read in place where the layout allows).
ArrayLike = Union[npt.ArrayLike, SupportsDLPack]

#: ``num_threads=``: ``None`` uses every core; otherwise a positive integer.
NumThreads = Optional[int]

#: ``top_k=`` of the scoring functions: one k or several.
TopK = Union[int, Sequence[int]]

#: What the kernels return: NumPy arrays (a 0-d result for ``reduction="mean"``/``"sum"``).
NDArray = npt.NDArray[Any]
Scalar = Union[np.floating[Any], NDArray]


#: What ``cross_entropy`` and the other losses return: a NumPy scalar for ``"mean"`` / ``"sum"``,
#: an array of the target's shape for ``"none"`` (the same as ``Scalar``, named for its use).
Loss = Scalar


class Config(TypedDict):
    """``fastce.get_config()``: this build and the run-time choices."""

    version: str
    openmp: bool
    num_threads: int
    isas_compiled: Tuple[IsaName, ...]
    isas_available: Tuple[IsaName, ...]
    isa: IsaName


class CacheInfo(TypedDict):
    """``fastce.cache_info()``: the state of the cache of large output buffers."""

    limit: int
    cached_bytes: int
    cached_blocks: int
    hits: int
    misses: int
    min_bytes: int
    max_blocks: int
