"""Fused linear + softmax cross-entropy for LM heads, chunked over rows of the input.

The math (torch.nn.functional.linear_cross_entropy)::

    logits = input @ linear_weight.T + linear_bias              (N, V)
    loss   = cross_entropy(logits, target, weight, ...)

The design, point by point:

1. The (N, V) logits are never materialized. Rows of `input` are taken `chunk_rows` at a time;
   their logits are computed by BLAS (`_gemm.gemm`, see 3.) into ONE preallocated
   (chunk_rows, V) buffer that every chunk reuses, and handed straight to fastce's fused kernels. Extra memory: that buffer plus O(N)
   per-row values (`_logit_chunks`, `iter_logit_chunks`).
2. Reductions across chunks. Each chunk is reduced with reduction='sum' (or 'none'); the 'mean'
   denominator D is computed once over the whole target before the first chunk, exactly as torch
   does (`_Targets`), so that

       mean = (sum over chunks of the chunk sums) / D,
       D = sum_i w[t_i] over kept (not ignored) index targets   (their count without weights),
       D = N * d1 * ... * dk                                     for probability targets,

   and an empty or all-ignored 'mean' is NaN (0 / 0), as in torch.
3. Gradients. Let g be grad_output (1 by default). With 'sum' each chunk's kernel is called with
   grad_output = g, with 'mean' with g / D, with 'none' with the chunk's rows of grad_output; it
   then writes G = d(sum g * loss)/d(logits) for its rows IN PLACE over the logits in the buffer
   (the kernels read a logit before writing its gradient). Then, by the chain rule through
   logits = x W^T + b,

       dL/dx[r0:r1]  = G @ W              gemm into grad_input[r0:r1], beta = 0         (n, H)
       dL/dW        += G^T @ x[r0:r1]     gemm, beta = 1, accumulating in place         (V, H)
       dL/db        += sum_rows G                                                       (V,)

   The gemms are `_gemm.gemm`, a BLAS ?gemm called in place with beta (NumPy's own BLAS through
   CBLAS where it can be found, else SciPy's): no V x H temporary exists besides the returned
   grad_linear_weight. The first chunk writes grad_W with beta = 0 (no zero-fill pass). The
   chunks' logits come from the same gemm, so one BLAS and one thread pool serve the pass.
4. K-dimensional heads: a linear_weight of shape (V, d1..dk, H) is, unchanged, a (V*D, H) matrix
   (D = d1*...*dk); a chunk's (n, V*D) logits are, unchanged, the (n, V, d1..dk) input of the
   K-dim cross-entropy (classes on axis 1), and its gradient the (n, V*D) matrix G above.
5. Threads. The matmuls use the BLAS's own thread pool (all cores; OPENBLAS_NUM_THREADS or
   threadpoolctl set it). fastce's cross-entropy step runs on ONE thread unless `num_threads`
   says otherwise, because right after a BLAS call the BLAS's idle workers still spin on the
   other cores (OpenBLAS: sched_yield loop until its thread timeout), and libgomp's workers spin
   for ~10 ms after each parallel region (GOMP_SPINCOUNT, unless OMP_WAIT_POLICY=passive),
   slowing the next matmul: a multithreaded step was erratic and slowed the matmuls, a
   one-thread step is steady, a small part of the chunk's matmul, and leaves the matmuls
   untouched (docs/performance/notes_python.md has the figures).
   The plain forward of at least MIN_PIPELINE_ROWS rows, with the default num_threads and
   NumPy's OpenBLAS on n >= 2 threads, runs n pipelines instead (`_pipelines`): each thread
   computes the logits of its own vocabulary columns with a one-thread matmul and reduces them
   itself, so no pool spins between the two; NumPy's BLAS is on one thread, process-wide, while
   they run (`_blas_threads`).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from math import prod
from typing import Iterator, Literal, Optional, Tuple, Union, overload

import numpy as np

from . import _blas_threads, _buffer_cache, _functional, _runtime
from ._gemm import gemm
from ._shards import shard_stats
from ._targets import LossTargets
from ._typing import ArrayLike, NDArray, NumThreads, Reduction, Scalar
from ._validate import Layout, as_floating, check_label_smoothing, check_positive_int, check_softcap, check_z_loss

__all__ = ["linear_cross_entropy", "linear_cross_entropy_with_grad", "iter_logit_chunks",
           "default_chunk_rows"]

# iter_logit_chunks' default chunk holds at most this many bytes of logits (at least one row):
# for N=4096, H=1024, V=32000 float32, 256 rows (31 MiB), 6% of the 500 MiB of full logits.
DEFAULT_CHUNK_BYTES = 32 << 20

# The loss functions' default chunk is larger: up to this many bytes of logits (at least one
# row or column), because every chunk costs a BLAS call whose operands it must pack again, a
# cost that only larger chunks amortize: the larger the chunk, the closer the chunked forward
# and gradient come to the unchunked matmuls (docs/performance/notes_python.md). The
# gradient's chunk is also never more than the weight gradient (V x H) that the call returns
# anyway, nor less than DEFAULT_CHUNK_BYTES.
LOSS_CHUNK_BYTES = 128 << 20


# --------------------------------------------------------------------------
# Operands
# --------------------------------------------------------------------------

def default_chunk_rows(n_rows: int, n_logits_per_row: int, itemsize: int,
                       chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk: as many as fit in `chunk_bytes` (at least 1), balanced so that the last
    chunk is not a small remainder (e.g. N=4096, 262 rows fit -> 16 chunks of 256 rows), and
    rounded up to a multiple of 16 where that still fits (BLAS micro-kernels work on row
    blocks, and chunks of other sizes were slower: docs/performance/notes_python.md)."""
    fit = max(1, chunk_bytes // max(1, n_logits_per_row * itemsize))
    if n_rows <= fit:
        return max(1, n_rows)
    n_chunks = -(-n_rows // fit)
    rows = -(-n_rows // n_chunks)
    rows16 = -(-rows // 16) * 16
    return rows16 if rows16 <= fit else rows


def _blas_matrix(a, dtype):
    """`a` (2-D) as a BLAS operand: native `dtype`, aligned, C- or F-contiguous. No copy when it
    is one already (the usual case); else one contiguous copy, made once per call."""
    if a.dtype == dtype and a.flags.aligned and (a.flags.c_contiguous or a.flags.f_contiguous):
        return a
    return np.ascontiguousarray(a, dtype=dtype)


class _Head:
    """Validated (input, linear_weight, linear_bias) as 2-D BLAS operands.

    x: (N, H) view of the input (an unbatched (H,) input is one row); W: (V*D, H); b: (V*D,)
    or None, where D = prod(linear_weight.shape[1:-1]) (1 for the usual 2-D weight)."""

    def __init__(self, input, linear_weight, linear_bias):
        x = as_floating(input, "input")
        w = as_floating(linear_weight, "linear_weight")
        if x.ndim not in (1, 2):
            raise ValueError(f"expected input with dimensionality 1 or 2, got {x.ndim} (shape {x.shape})")
        if w.ndim < 2:
            raise ValueError(f"expected linear_weight with dimensionality at least 2, got {w.ndim} (shape {w.shape})")
        if x.shape[-1] != w.shape[-1]:
            raise ValueError(
                "expected equal input and linear_weight last dimensions (in_features), "
                f"got {x.shape[-1]} and {w.shape[-1]}, respectively"
            )
        self.dtype = dt = x.dtype.newbyteorder("=")
        if dt == np.float16:
            raise TypeError("linear_cross_entropy supports float32 and float64, not float16; "
                            "convert input and linear_weight with .astype(np.float32)")
        if w.dtype.newbyteorder("=") != dt:
            raise TypeError(f"expected input and linear_weight to have the same dtype, got {x.dtype} and {w.dtype}")
        self.V, self.H = w.shape[0], w.shape[-1]
        self.out_features = tuple(w.shape[1:-1])
        self.D = prod(self.out_features)
        self.unbatched = x.ndim == 1
        if self.out_features and self.unbatched:
            raise ValueError(
                f"K-dimensional loss defined by linear_weight shape {w.shape} requires batched input "
                f"(N, {self.H}), got unbatched input with shape {x.shape}"
            )
        self.weight_shape = w.shape
        self.x = x[None] if self.unbatched else x
        self.N = self.x.shape[0]
        # A contiguous (V, d.., H) weight is, unchanged, a (V*D, H) matrix (reshape is a view).
        self.W = _blas_matrix(w.reshape(self.V * self.D, self.H), dt)
        self.b = None
        self.bias_shape = None
        if linear_bias is not None:
            b = as_floating(linear_bias, "linear_bias")
            if b.shape != (self.V, *self.out_features):
                raise ValueError(f"expected linear_bias shape {(self.V, *self.out_features)}, got {b.shape}")
            if b.dtype.newbyteorder("=") != dt:
                raise TypeError(f"expected linear_bias to have input's dtype {x.dtype}, got {b.dtype}")
            self.bias_shape = b.shape
            self.b = np.require(b.reshape(-1), dtype=dt, requirements=["C", "A"])
        # The logits as cross_entropy sees them (classes on axis 1; axis 0 when unbatched).
        self.logits_shape = (self.V,) if self.unbatched else (self.N, self.V, *self.out_features)

    @property
    def row_width(self):
        """Logits per input row: V * d1 * ... * dk."""
        return self.V * self.D

    def rows(self, r0, r1):
        """x[r0:r1] as a C-contiguous native array (a view unless the input's layout forbids)."""
        return np.require(self.x[r0:r1], dtype=self.dtype, requirements=["C", "A"])


def _logit_chunks(head, chunk_rows):
    """Yields (r0, r1, x_chunk, z): z = x[r0:r1] @ W^T + b, a (r1 - r0, V*D) view of one
    (chunk_rows, V*D) buffer allocated here once and overwritten by every chunk. The product is
    `_gemm.gemm`, the BLAS that the gradient pass's other two products use too."""
    if head.N == 0:
        return
    chunk_rows = min(chunk_rows, head.N)
    # From the buffer cache: a call after the first gets this buffer back with no page faults
    # (fresh memory costs a sizeable part of the cross-entropy step to zero on first touch).
    buf = _buffer_cache.empty((chunk_rows, head.row_width), head.dtype)
    Wt = head.W.T  # (H, V*D) view, no copy; BLAS reads it transposed
    for r0 in range(0, head.N, chunk_rows):
        r1 = min(head.N, r0 + chunk_rows)
        xc = head.rows(r0, r1)
        z = buf[: r1 - r0]  # the first rows of a C-contiguous buffer: C-contiguous
        gemm(xc, Wt, z)
        if head.b is not None:
            z += head.b
        yield r0, r1, xc, z


def iter_logit_chunks(input: ArrayLike, linear_weight: ArrayLike, linear_bias: Optional[ArrayLike] = None,
                      chunk_rows: Optional[int] = None) -> Iterator[Tuple[int, int, NDArray]]:
    """Yield the logits ``input @ linear_weight.T + linear_bias`` a chunk of rows at a time.

    Parameters
    ----------
    input : array_like of float32 or float64, shape (N, H) or (H,)
        An unbatched (H,) input is one row.
    linear_weight : array_like of input's dtype, shape (V, H) or (V, d1, ..., dk, H)
        A K-dimensional weight yields (n, V*d1*...*dk) rows, which ``.reshape(n, V, d1, ..., dk)``
        views as K-dimensional logits with classes on axis 1.
    linear_bias : array_like of shape (V,) or (V, d1, ..., dk), optional
        Added to every row of logits.
    chunk_rows : int, optional
        Rows per chunk; None picks `default_chunk_rows` (a buffer of about 32 MiB).

    Yields
    ------
    r0, r1 : int
        The chunk's rows of `input`, ``input[r0:r1]``.
    logits : numpy.ndarray
        A C-contiguous (r1 - r0, V*D) view of ONE buffer, allocated once and overwritten by the
        next chunk: use (or copy) it before advancing the generator. It may be modified in
        place (e.g. turned into a gradient). Computed in place by BLAS (`_gemm.gemm`).

    Raises
    ------
    TypeError, ValueError
        As `linear_cross_entropy` for the operands; also for a `chunk_rows` that is not None or
        a positive integer. The generator raises them on its first ``next()``.

    See Also
    --------
    linear_cross_entropy : The loss of these logits, chunked the same way.

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> x = np.array([[1.0, 0.5], [0.2, -1.0], [0.3, 0.8]])
    >>> W = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    >>> best = np.empty(3, dtype=np.int64)
    >>> for r0, r1, z in fastce.iter_logit_chunks(x, W, chunk_rows=2):
    ...     print(r0, r1, z.shape)
    ...     best[r0:r1] = z.argmax(axis=1)
    0 2 (2, 3)
    2 3 (1, 3)
    >>> best
    array([0, 2, 1])
    """
    head = _Head(input, linear_weight, linear_bias)
    rows = check_positive_int(chunk_rows, "chunk_size")
    if rows is None:
        rows = default_chunk_rows(head.N, head.row_width, head.dtype.itemsize)
    for r0, r1, _, z in _logit_chunks(head, rows):
        yield r0, r1, z


# --------------------------------------------------------------------------
# Targets, denominators, options
# --------------------------------------------------------------------------

class _Targets:
    """Validated targets and loss options for the logits of `head`, as one cross_entropy call
    would validate them (a LossTargets over the whole (N, V, ...) logits), before any matmul
    runs, so errors cost nothing and the 'mean' denominator covers every chunk."""

    def __init__(self, head, target, weight, ignore_index, reduction, label_smoothing):
        self.layout = lay = Layout(head.logits_shape)  # V == 0 -> ValueError
        self.eps = check_label_smoothing(label_smoothing)
        self.loss = LossTargets(target, lay, weight=weight, ignore_index=-100 if ignore_index is None else ignore_index,
                                reduction=reduction, cdtype=head.dtype)
        self.reduction = self.loss.reduction
        t = self.loss.target if self.loss.kind == "index" else self.loss.prob
        self.t = t[None] if head.unbatched else t  # batched: rows along axis 0
        # Per-row loss shape, batched: (N, d1, ..., dk); the caller's is layout.target_shape.
        self.row_shape = (head.N, *head.out_features)

    def chunk(self, r0, r1):
        return self.t[r0:r1]

    def kernel_kwargs(self):
        return dict(weight=self.loss.weight, ignore_index=self.loss.ignore_index, label_smoothing=self.eps)

    def finish(self, total, rows_out, dtype):
        """The reduced loss from the chunks' float64 sum (or the per-row array for 'none')."""
        if self.reduction == "none":
            return rows_out.reshape(self.layout.target_shape)
        return self.loss.reduce_total(total, dtype)

    def grad_output_chunks(self, grad_output):
        """Per-chunk grad_output for the kernels, a function of (r0, r1): the scalar (with 1/D
        folded in for 'mean') or, for 'none', rows r0:r1 of grad_output (LossTargets.grad_scale)."""
        g, scale = self.loss.grad_scale(grad_output)
        if self.reduction != "none":
            return lambda r0, r1: scale
        if g is None:
            return lambda r0, r1: None
        g = g.reshape(self.row_shape)
        return lambda r0, r1: g[r0:r1]


def _extra_options(z_loss, softcap, return_lse):
    """The options beyond torch, validated before any matmul runs, for each chunk's call."""
    return dict(z_loss=check_z_loss(z_loss), softcap=check_softcap(softcap), return_lse=bool(return_lse))


class _Collector:
    """Per-row outputs across chunks: the loss ('none') and the lse (return_lse)."""

    def __init__(self, tg, dtype, return_lse):
        self.tg, self.dtype = tg, dtype
        self.total = 0.0  # float64 sum of the chunks' 'sum' losses
        self.rows = np.empty(tg.row_shape, dtype=dtype) if tg.reduction == "none" else None
        self.lse = np.empty(tg.row_shape, dtype=dtype) if return_lse else None

    def add(self, r0, r1, loss, lse=None):
        if self.rows is not None:
            self.rows[r0:r1] = loss
        else:
            self.total += float(loss)
        if self.lse is not None:
            self.lse[r0:r1] = lse

    def results(self):
        loss = self.tg.finish(self.total, self.rows, self.dtype)
        if self.lse is None:
            return (loss,)
        return loss, self.lse.reshape(self.tg.layout.target_shape)


def _kernel_threads(num_threads):
    """Threads of the cross-entropy step: 1 for None (see the module docstring, 5.), else the
    validated num_threads (checked before any matmul runs)."""
    if num_threads is None:
        return 1
    _runtime.resolve_threads(num_threads)
    return num_threads


def _chunk_setup(head, chunk_size, grad=False):
    rows = check_positive_int(chunk_size, "chunk_size")
    if rows is None:
        nbytes = LOSS_CHUNK_BYTES
        if grad:  # see LOSS_CHUNK_BYTES
            grad_w_bytes = head.row_width * head.H * head.dtype.itemsize
            nbytes = max(DEFAULT_CHUNK_BYTES, min(LOSS_CHUNK_BYTES, grad_w_bytes))
        rows = default_chunk_rows(head.N, head.row_width, head.dtype.itemsize, nbytes)
    # The kernels' view of a chunk's (n, V*D) logits: (n, V, d1, ..., dk), no copy.
    return rows, lambda z: z.reshape(z.shape[0], head.V, *head.out_features) if head.out_features else z


# --------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------

@overload
def linear_cross_entropy(input: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
                         linear_bias: Optional[ArrayLike] = ..., weight: Optional[ArrayLike] = ...,
                         reduction: Reduction = ..., ignore_index: Optional[int] = ...,
                         label_smoothing: float = ..., chunk_size: Optional[int] = ...,
                         num_threads: NumThreads = ..., z_loss: float = ..., softcap: Optional[float] = ...,
                         return_lse: Literal[False] = ...) -> Scalar: ...
@overload
def linear_cross_entropy(input: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
                         linear_bias: Optional[ArrayLike] = ..., weight: Optional[ArrayLike] = ...,
                         reduction: Reduction = ..., ignore_index: Optional[int] = ...,
                         label_smoothing: float = ..., chunk_size: Optional[int] = ...,
                         num_threads: NumThreads = ..., z_loss: float = ..., softcap: Optional[float] = ...,
                         return_lse: Literal[True]) -> Tuple[Scalar, NDArray]: ...
@overload
def linear_cross_entropy(input: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
                         linear_bias: Optional[ArrayLike] = ..., weight: Optional[ArrayLike] = ...,
                         reduction: Reduction = ..., ignore_index: Optional[int] = ...,
                         label_smoothing: float = ..., chunk_size: Optional[int] = ...,
                         num_threads: NumThreads = ..., z_loss: float = ..., softcap: Optional[float] = ...,
                         return_lse: bool = ...) -> Union[Scalar, Tuple[Scalar, NDArray]]: ...
def linear_cross_entropy(input: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
                         linear_bias: Optional[ArrayLike] = None, weight: Optional[ArrayLike] = None,
                         reduction: Reduction = "mean", ignore_index: Optional[int] = -100,
                         label_smoothing: float = 0.0, chunk_size: Optional[int] = None,
                         num_threads: NumThreads = None, z_loss: float = 0.0, softcap: Optional[float] = None,
                         return_lse: bool = False) -> Union[Scalar, Tuple[Scalar, NDArray]]:
    """Cross-entropy of the logits ``input @ linear_weight.T + linear_bias``, never materialized.

    As ``torch.nn.functional.linear_cross_entropy``. Rows of `input` are processed `chunk_size` at a time: BLAS writes a chunk's logits into one
    reused (chunk_size, V) buffer and fastce's fused kernel reduces them to per-row losses. The
    'mean' denominator is computed over the whole target first, so every reduction equals
    torch's (see the module docstring for the math).

    Parameters
    ----------
    input : array_like of float32 or float64, shape (N, H), or (H,) unbatched
        A float16 input is refused (TypeError): its matmul would need a float32 copy of linear_weight.
    linear_weight : array_like of input's dtype, shape (V, H)
        Or (V, d1, ..., dk, H) for torch's K-dimensional loss: the logits are then
        (N, V, d1, ..., dk), classes on axis 1, and input must be batched. A weight that is
        neither C- nor F-contiguous is copied once.
    target : array_like
        Class indices of shape (N,) (or () unbatched, (N, d1, ..., dk) K-dim), any integer dtype,
        in [0, V) or equal to ignore_index; or class probabilities of the logits' shape (floating).
    linear_bias : array_like of input's dtype, shape (V,) (or (V, d1, ..., dk)), optional
        Added to every row of logits.
    weight : array_like of shape (V,), optional
        Per-class rescaling weights of the cross-entropy.
    reduction : {'mean', 'none', 'sum'}, default 'mean'
        'mean' divides by the sum of the kept targets' weights (index targets) or by the number
        of rows N*d1*...*dk (probability targets), as torch does; all ignored or empty gives NaN.
    ignore_index : int, default -100
        Index targets equal to this contribute 0 and leave the mean's denominator. None means
        -100 (torch's spelling). Must be negative with probability targets.
    label_smoothing : float in [0, 1], default 0.0
        As in `cross_entropy`.
    chunk_size : int, optional
        Rows of input per chunk. None picks a buffer of up to 128 MiB (at least one row; see
        `LOSS_CHUNK_BYTES`). Peak extra memory is this buffer plus O(N). With None, the plain
        forward (class-index targets, a 2-D weight, no smoothing, softcap or return_lse) of more
        rows than one chunk holds computes the logits in column chunks of the same buffer
        instead, so the BLAS reads the weight once (`_vocab_chunk_cols`).
    num_threads : int, optional
        Threads of fastce's cross-entropy step. None means 1 here (unlike cross_entropy): the
        step is a small part of the work and, run between BLAS calls, more threads only contend
        with the BLAS's spinning workers (see the module docstring). The matmuls use the BLAS's threads.
        With None, the plain forward of at least 1024 rows, when NumPy's OpenBLAS has n >= 2
        threads, runs as n threads that each multiply (one-thread BLAS) and reduce their own
        vocabulary columns; meanwhile NumPy's BLAS is on one thread for the whole process.
    z_loss, softcap, return_lse : float, float or None, bool
        Passed through to fastce.cross_entropy for every chunk: z_loss adds z * lse^2 per row,
        softcap replaces the logits by cap * tanh(logits / cap) before the softmax, return_lse
        also returns the per-row log-sum-exp (the loss's shape for 'none'), gathered across
        chunks.

    Returns
    -------
    loss : numpy scalar or numpy.ndarray
        A NumPy scalar of input's dtype ('mean', 'sum') or an array of the target's shape
        ('none').
    lse : numpy.ndarray
        The per-row log-sum-exp, of the per-row loss's shape; only with ``return_lse=True``,
        which returns ``(loss, lse)``.

    Raises
    ------
    TypeError
        For float16 or non-floating operands, operands of different dtypes, or targets and
        options of the wrong type (as `cross_entropy`).
    ValueError
        For operands of mismatched shapes, V == 0, an unknown `reduction` or an option out of
        its range.
    IndexError
        For an index target outside [0, V) that is not `ignore_index`.

    See Also
    --------
    linear_cross_entropy_with_grad : The loss and the gradients of all three operands.
    iter_logit_chunks : The chunks of logits themselves.
    cross_entropy : The loss of logits given whole.

    Notes
    -----
    The result is ``cross_entropy(input @ linear_weight.T + linear_bias, target, ...)``, up to
    the rounding of the chunked float sums: for 'mean' the chunks' float64 sums are added and
    divided once by the denominator of the whole target.

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> x = np.array([[1.0, 0.5], [0.2, -1.0], [0.3, 0.8]])
    >>> W = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    >>> t = np.array([0, 1, 2])
    >>> round(float(fastce.linear_cross_entropy(x, W, t)), 4)
    1.7721
    >>> round(float(fastce.cross_entropy(x @ W.T, t)), 4)
    1.7721
    >>> loss, lse = fastce.linear_cross_entropy(x, W, t, return_lse=True)
    >>> lse.round(4)
    array([1.7944, 1.5912, 1.4308])
    """
    head = _Head(input, linear_weight, linear_bias)
    tg = _Targets(head, target, weight, ignore_index, reduction, label_smoothing)
    nthreads = _kernel_threads(num_threads)
    extra = _extra_options(z_loss, softcap, return_lse)
    rows, as_kernel = _chunk_setup(head, chunk_size)
    n = _pipelines(head, tg, extra, chunk_size, num_threads)
    if n:
        return tg.loss.reduce(_pipelined_row_losses(head, tg, extra["z_loss"], n), head.dtype)
    cols = _vocab_chunk_cols(head, tg, extra, rows, chunk_size)
    if cols:
        return tg.loss.reduce(_vocab_chunked_row_losses(head, tg, extra["z_loss"], cols, nthreads), head.dtype)
    red: Reduction = "none" if tg.reduction == "none" else "sum"
    acc = _Collector(tg, head.dtype, return_lse)
    for r0, r1, _, z in _logit_chunks(head, rows):
        res = _functional.cross_entropy(as_kernel(z), tg.chunk(r0, r1), reduction=red,
                                        num_threads=nthreads, **tg.kernel_kwargs(), **extra)
        acc.add(r0, r1, *(res if return_lse else (res,)))
    out = acc.results()
    return out if return_lse else out[0]


# The vocabulary-chunked forward: used when the row chunks would make the BLAS pack the whole
# weight more than once, and each column chunk keeps at least this many columns.
MIN_VOCAB_CHUNK = 512

# The pipelined forward (`_pipelines`) runs for at least this many rows: one-thread matmuls run
# side by side as fast as one alone only for tall enough inputs (from about 1024 rows on the
# project's 2-core VM; docs/performance/notes_python.md).
MIN_PIPELINE_ROWS = 1024


def _plain_forward(head, tg, extra, chunk_size):
    """The forward whose logits may be taken in column chunks: class-index targets, a 2-D head,
    no label smoothing, softcap or return_lse (their per-row sums need the whole row), no
    explicit chunk_size. Each row's log-sum-exp then merges exactly across column chunks
    (vocabulary shards, `_shards`)."""
    return (chunk_size is None and tg.loss.kind == "index" and head.D == 1 and tg.eps == 0.0
            and extra["softcap"] is None and not extra["return_lse"])


def _whole_lines(cols):
    return cols // 64 * 64 if cols >= 64 else cols  # whole cache lines per row of a chunk


def _vocab_chunk_cols(head, tg, extra, rows, chunk_size):
    """Columns per chunk of the vocabulary-chunked forward, or 0 where the row chunks serve.

    Row chunks (the default) compute x[r0:r1] @ W.T, and the BLAS packs all of W (V x H) for
    every chunk, a cost that grows with the number of chunks (docs/performance/notes_python.md).
    Column chunks compute x @ W[v0:v1].T for all N rows: W is read
    once, x (N x H, much smaller) is packed per chunk. This path serves the plain forward
    (`_plain_forward`) of more rows than one row chunk holds."""
    if not _plain_forward(head, tg, extra, chunk_size) or rows >= head.N:
        return 0
    cols = _chunk_cols(head, 1)
    return cols if MIN_VOCAB_CHUNK <= cols < head.V else 0


def _pipelines(head, tg, extra, chunk_size, num_threads):
    """How many pipelines the pipelined forward runs (0: it does not run).

    The plain forward (`_plain_forward`) with the default num_threads, when NumPy's BLAS has
    n >= 2 threads (`_blas_threads`): the vocabulary is split into n ranges, and one thread per
    range computes its logits chunk by chunk with a ONE-thread matmul (x @ W[v0:v1].T) and
    reduces each chunk at once (`shard_stats`); the ranges' statistics then merge. Every core
    both multiplies and reduces, and no thread pool spins between the two. The one-thread
    reduction between multithreaded matmuls instead reads each 128 MiB chunk back from memory
    on one core while OpenBLAS's idle worker spins on the other, so the pipelines come closer
    to the single matmul than column chunks do (docs/performance/notes_python.md). For fewer
    rows see MIN_PIPELINE_ROWS. While it runs, NumPy's BLAS is on one thread
    process-wide (`_blas_threads`)."""
    if num_threads is not None or not _plain_forward(head, tg, extra, chunk_size):
        return 0
    if head.N < MIN_PIPELINE_ROWS:
        return 0
    n = min(_blas_threads.blas_threads(), head.V // MIN_VOCAB_CHUNK)
    # Not for so many rows that a pipeline's chunk would be narrower than MIN_VOCAB_CHUNK.
    return n if n >= 2 and _chunk_cols(head, n) >= MIN_VOCAB_CHUNK else 0


def _chunk_cols(head, n):
    """Columns per column chunk when n buffers (one per pipeline; 1 without) hold
    LOSS_CHUNK_BYTES of logits in all: whole cache lines per row, and an odd number of them.

    Why odd: the BLAS writes a chunk's logits a few rows at a time, and rows whose stride is a
    multiple of 4 KiB (4096 float32 columns, what 64 MiB gives 4096 rows) fall into the same
    cache sets, which made such chunks measurably slower (docs/performance/notes_python.md)."""
    cols = _whole_lines(LOSS_CHUNK_BYTES // n // max(1, head.N * head.dtype.itemsize))
    per_line = max(1, 64 // head.dtype.itemsize)
    if cols >= 64 and cols // per_line % 2 == 0:
        cols -= per_line  # still whole lines, one fewer: an odd count
    return cols


def _vocab_range_stats(head, tg, z_loss, v_lo, v_hi, buf, nthreads):
    """Merged `ShardStats` of vocabulary columns [v_lo, v_hi), computed in column chunks of the
    flat buffer `buf` (N * cols elements): each chunk is a vocabulary shard (`shard_stats`)."""
    N, V = head.N, head.V
    cols = buf.size // max(1, N)
    t = tg.loss.target.reshape(-1)
    w = tg.loss.weight
    stats = None
    for v0 in range(v_lo, v_hi, cols):
        v1 = min(v_hi, v0 + cols)
        z = buf[: N * (v1 - v0)].reshape(N, v1 - v0)  # C-contiguous
        np.matmul(head.x, head.W[v0:v1].T, out=z)
        if head.b is not None:
            z += head.b[v0:v1]
        s = shard_stats(z, t, class_start=v0, num_classes=V, weight=None if w is None else w[v0:v1],
                        ignore_index=tg.loss.ignore_index, z_loss=z_loss, num_threads=nthreads)
        stats = s if stats is None else stats.merge(s)
    return stats


def _vocab_chunked_row_losses(head, tg, z_loss, cols, nthreads):
    """Per-row float64 losses of the plain forward over column chunks of the logits (the BLAS's
    threads for the matmuls, `nthreads` for each chunk's reduction)."""
    buf = _buffer_cache.empty((head.N * min(cols, head.V),), head.dtype)
    return _vocab_range_stats(head, tg, z_loss, 0, head.V, buf, nthreads).row_losses()


def _pipelined_row_losses(head, tg, z_loss, n):
    """Per-row float64 losses of the plain forward by `n` pipelines (`_pipelines`): pipeline k
    covers columns [bounds[k], bounds[k+1]) (whole cache lines), in chunks of a buffer of its
    own, LOSS_CHUNK_BYTES / n in all. Pipeline 0 runs in the calling thread."""
    N, V = head.N, head.V
    # Ranges of at least MIN_VOCAB_CHUNK (> 64) columns each: rounding down to whole lines
    # leaves them distinct and non-empty.
    bounds = [0] + [_whole_lines(V * k // n) for k in range(1, n)] + [V]
    cols = _chunk_cols(head, n)
    bufs = [_buffer_cache.empty((N * min(cols, hi - lo),), head.dtype) for lo, hi in zip(bounds, bounds[1:])]
    run = lambda k: _vocab_range_stats(head, tg, z_loss, bounds[k], bounds[k + 1], bufs[k], 1)  # noqa: E731
    with _blas_threads.single_threaded_blas(), ThreadPoolExecutor(max_workers=n - 1) as pool:
        others = [pool.submit(run, k) for k in range(1, n)]
        stats = run(0)
        for f in others:
            stats = stats.merge(f.result())
    return stats.row_losses()


@overload
def linear_cross_entropy_with_grad(input: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
                                   linear_bias: Optional[ArrayLike] = ..., weight: Optional[ArrayLike] = ...,
                                   reduction: Reduction = ..., ignore_index: Optional[int] = ...,
                                   label_smoothing: float = ..., grad_output: Optional[ArrayLike] = ..., chunk_size: Optional[int] = ...,
                                   num_threads: NumThreads = ..., z_loss: float = ..., softcap: Optional[float] = ...,
                                   return_lse: Literal[False] = ...) -> Tuple[Scalar, NDArray, NDArray, Optional[NDArray]]: ...
@overload
def linear_cross_entropy_with_grad(input: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
                                   linear_bias: Optional[ArrayLike] = ..., weight: Optional[ArrayLike] = ...,
                                   reduction: Reduction = ..., ignore_index: Optional[int] = ...,
                                   label_smoothing: float = ..., grad_output: Optional[ArrayLike] = ..., chunk_size: Optional[int] = ...,
                                   num_threads: NumThreads = ..., z_loss: float = ..., softcap: Optional[float] = ...,
                                   return_lse: Literal[True]) -> Tuple[Scalar, NDArray, NDArray, Optional[NDArray], NDArray]: ...
@overload
def linear_cross_entropy_with_grad(input: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
                                   linear_bias: Optional[ArrayLike] = ..., weight: Optional[ArrayLike] = ...,
                                   reduction: Reduction = ..., ignore_index: Optional[int] = ...,
                                   label_smoothing: float = ..., grad_output: Optional[ArrayLike] = ..., chunk_size: Optional[int] = ...,
                                   num_threads: NumThreads = ..., z_loss: float = ..., softcap: Optional[float] = ...,
                                   return_lse: bool = ...) -> Union[Tuple[Scalar, NDArray, NDArray, Optional[NDArray]], Tuple[Scalar, NDArray, NDArray, Optional[NDArray], NDArray]]: ...
def linear_cross_entropy_with_grad(input: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
                                   linear_bias: Optional[ArrayLike] = None, weight: Optional[ArrayLike] = None,
                                   reduction: Reduction = "mean", ignore_index: Optional[int] = -100,
                                   label_smoothing: float = 0.0, grad_output: Optional[ArrayLike] = None, chunk_size: Optional[int] = None,
                                   num_threads: NumThreads = None, z_loss: float = 0.0, softcap: Optional[float] = None,
                                   return_lse: bool = False) -> Union[Tuple[Scalar, NDArray, NDArray, Optional[NDArray]], Tuple[Scalar, NDArray, NDArray, Optional[NDArray], NDArray]]:
    """The loss of `linear_cross_entropy` and its gradients, chunked, in one pass over the rows.

    For L = sum(grad_output * loss) (or grad_output * loss for 'mean'/'sum'), per chunk of rows
    r0:r1 with G = dL/dlogits written in place into the chunk's logits buffer:

        grad_input[r0:r1]   = G @ linear_weight                  (BLAS gemm, in place)
        grad_linear_weight += G.T @ input[r0:r1]                 (BLAS gemm, beta=1, in place)
        grad_linear_bias   += G.sum(axis=0)

    Besides its results it allocates the (chunk_size, V) buffer, O(N + V) and nothing of size
    N x V or V x H. With chunk_size=None that buffer holds up to 128 MiB of logits, but never
    more than grad_linear_weight (nor less than 32 MiB), because every chunk streams all of W
    twice and grad_linear_weight once, a cost that only more rows per chunk amortize
    (`LOSS_CHUNK_BYTES`).

    Parameters
    ----------
    input, linear_weight, target : array_like
        As in `linear_cross_entropy`.
    linear_bias, weight, reduction, ignore_index, label_smoothing : see linear_cross_entropy
        As in `linear_cross_entropy`.
    grad_output : array_like, optional
        A scalar (for 'mean' and 'sum') or an array broadcastable to the loss's shape (for
        'none'); defaults to 1.
    chunk_size, num_threads, z_loss, softcap, return_lse : see linear_cross_entropy
        As in `linear_cross_entropy` (chunk_size=None: see above).

    Returns
    -------
    loss : numpy scalar or numpy.ndarray
        As `linear_cross_entropy` returns it.
    grad_input : numpy.ndarray
        Of input's shape.
    grad_linear_weight : numpy.ndarray
        Of linear_weight's shape.
    grad_linear_bias : numpy.ndarray or None
        Of linear_bias's shape; None without a bias.
    lse : numpy.ndarray
        Only with ``return_lse=True``: the per-row lse comes last.

    Raises
    ------
    TypeError, ValueError, IndexError
        As `linear_cross_entropy`.

    See Also
    --------
    linear_cross_entropy, cross_entropy_with_grad

    Notes
    -----
    The gradients are all of input's dtype and C-contiguous; those of >= 16 MiB get their
    memory from fastce's buffer cache, as cross_entropy_with_grad's gradient does (no page
    faults in a training loop).

    Examples
    --------
    >>> import numpy as np
    >>> import fastce
    >>> x = np.array([[1.0, 0.5], [0.2, -1.0], [0.3, 0.8]])
    >>> W = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    >>> b = np.array([0.1, 0.0, -0.1])
    >>> t = np.array([0, 1, 2])
    >>> loss, gx, gW, gb = fastce.linear_cross_entropy_with_grad(x, W, t, linear_bias=b)
    >>> gx.shape, gW.shape, gb.shape
    ((3, 2), (3, 2), (3,))
    >>> gb.round(4)
    array([ 0.0415, -0.044 ,  0.0025])
    """
    head = _Head(input, linear_weight, linear_bias)
    tg = _Targets(head, target, weight, ignore_index, reduction, label_smoothing)
    nthreads = _kernel_threads(num_threads)
    gout = tg.grad_output_chunks(grad_output)
    extra = _extra_options(z_loss, softcap, return_lse)
    rows, as_kernel = _chunk_setup(head, chunk_size, grad=True)
    red: Reduction = "none" if tg.reduction == "none" else "sum"
    acc = _Collector(tg, head.dtype, return_lse)
    grads = _Grads(head)
    for r0, r1, xc, z in _logit_chunks(head, rows):
        zk = as_kernel(z)
        res = _functional.cross_entropy_with_grad(
            zk, tg.chunk(r0, r1), reduction=red, grad_output=gout(r0, r1), out=zk,
            num_threads=nthreads, **tg.kernel_kwargs(), **extra)
        acc.add(r0, r1, res[0], *res[2:])  # z now holds G = dL/dlogits for rows r0:r1
        grads.add(r0, r1, xc, z)
    out = acc.results()
    return out[:1] + grads.results() + out[1:]


class _Grads:
    """grad_input, grad_linear_weight and grad_linear_bias, accumulated chunk by chunk."""

    def __init__(self, head):
        self.head = head
        dt = head.dtype
        # Large results come from the buffer cache (_buffer_cache): a training loop's next call
        # then writes memory the program released instead of faulting in fresh pages.
        self.gx = _buffer_cache.empty((head.N, head.H), dt)
        # = G^T x for the first chunk (beta = 0: no zero-fill pass over V x H), += for the rest.
        self.gW = _buffer_cache.empty((head.row_width, head.H), dt)
        self.gb = np.zeros(head.row_width, dtype=dt) if head.b is not None else None
        self._colsum = np.empty(head.row_width, dtype=dt) if head.b is not None else None

    def add(self, r0, r1, xc, G):
        """G: (n, V*D) C-contiguous gradient of the logits of rows r0:r1; xc: those rows of x."""
        gemm(G, self.head.W, self.gx[r0:r1])  # dL/dx = G W
        gemm(G.T, xc, self.gW, beta=1.0 if r0 > 0 else 0.0)  # dL/dW += G^T x, in place
        if self.gb is not None:
            self.gb += G.sum(axis=0, out=self._colsum)  # dL/db = sum over rows of G

    def results(self):
        h = self.head
        if h.N == 0:  # no chunk ran: the weight gradient of an empty batch is 0
            self.gW[...] = 0
        gx = self.gx.reshape(-1) if h.unbatched else self.gx
        gb = None if self.gb is None else self.gb.reshape(h.bias_shape)
        return gx, self.gW.reshape(h.weight_shape), gb
