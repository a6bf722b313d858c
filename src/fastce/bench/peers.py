"""Who is timed: the cases of a table row, each one way of computing the benchmark.

Cross-entropy table (G logits/s): the :class:`Peer` objects of :data:`PEERS`

* ``fastce``        -- ``fastce.cross_entropy`` / ``fastce.cross_entropy_with_grad``
* ``fastce(out=)``  -- ``cross_entropy_with_grad(..., out=buf)`` with ``buf``
                       preallocated once and reused (loss+grad only)
* ``torch``         -- ``F.cross_entropy`` (forward under ``torch.no_grad()``;
                       loss+grad = forward + autograd backward)
* ``fastce.torch``  -- ``fastce.torch.cross_entropy`` on the torch peer's tensors, same calls
* ``numpy``         -- :func:`numpy_cross_entropy`, a vectorized NumPy twin (max, exp, sum, log;
                       float16 and bfloat16 logits computed in float32)
* ``jax``           -- jitted ``optax.softmax_cross_entropy_with_integer_labels
                       (...).mean()`` and ``jax.value_and_grad`` of it
* ``sklearn``       -- ``HalfMultinomialLoss().loss_gradient`` (loss+grad,
                       2-D unweighted float32/float64 workloads only)

Per-call table (us per loss+grad call): :func:`per_call_cases` -- fastce as users call it
(:class:`FastceDefaultCall`: ``cross_entropy_with_grad(x, t)``, default options and threads),
the NumPy twin, torch and fastce.torch, at fastce's :func:`default_threads`.

Linear + cross-entropy table (seconds per call): the :class:`LinearCase` objects of
:data:`LINEAR_CASES`, each for one pass, beside the NumPy matmul(s) it must do anyway (the
``baseline`` of its pass) and torch's ``F.linear_cross_entropy``.

Both kinds are :class:`Case` objects, the interface the timing loop uses. Every library is
optional and imported inside ``prepare`` only: importing this module needs NumPy alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from .workloads import FORWARD, LOSS_GRAD, PASSES, all_threads

NA = "n/a"  # the library cannot do this cell (feature missing)


# --------------------------------------------------------------------------
# NumPy twin (also a peer)
# --------------------------------------------------------------------------


def _bcast_classes(v: np.ndarray, ndim: int) -> np.ndarray:
    """(C,) -> shape broadcasting along the class axis 1 of an ndim array."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def numpy_cross_entropy(x, target, weight=None, label_smoothing=0.0, with_grad=False):
    """Vectorized softmax cross-entropy, torch semantics, mean reduction.

    Works on (N, C, d1..dk) with the class axis 1 and stays in ``x.dtype``.
    Returns the loss (0-d array) or ``(loss, grad)``.
    """
    dt = x.dtype
    C = x.shape[1]
    eps = float(label_smoothing)
    idx = np.expand_dims(target, 1)

    m = x.max(axis=1, keepdims=True)
    e = np.subtract(x, m)
    np.exp(e, out=e)
    s = e.sum(axis=1, keepdims=True)
    lse = np.log(s)
    lse += m  # (N, 1, d...)
    zt = np.take_along_axis(x, idx, axis=1)
    nll = lse - zt  # (N, 1, d...)

    if weight is None:
        denom = dt.type(nll.size)
        if eps:
            smooth = lse - x.mean(axis=1, keepdims=True, dtype=dt)
            per = (1 - eps) * nll + eps * smooth
        else:
            per = nll
        loss = per.sum(dtype=dt) / denom
    else:
        wt = weight[target]
        wt = np.expand_dims(wt, 1)
        denom = wt.sum(dtype=dt)
        per = (1 - eps) * wt * nll
        if eps:
            W = weight.sum(dtype=dt)
            wz = np.tensordot(x, weight, axes=([1], [0])) if x.ndim == 2 else (
                x * _bcast_classes(weight, x.ndim)
            ).sum(axis=1)
            wz = np.expand_dims(wz, 1) if wz.ndim == per.ndim - 1 else wz
            per = per + (eps / C) * (W * lse - wz)
        loss = per.sum(dtype=dt) / denom
    loss = np.asarray(loss, dtype=dt)
    if not with_grad:
        return loss

    g = e
    g /= s  # softmax
    if weight is None:
        np.put_along_axis(g, idx, np.take_along_axis(g, idx, axis=1) - dt.type(1 - eps), axis=1)
        if eps:
            g -= dt.type(eps / C)
        g *= dt.type(1) / denom
    else:
        coef = (1 - eps) * wt
        if eps:
            coef = coef + (eps / C) * W
        g *= coef
        np.put_along_axis(
            g, idx, np.take_along_axis(g, idx, axis=1) - dt.type(1 - eps) * wt, axis=1
        )
        if eps:
            g -= (eps / C) * _bcast_classes(weight, x.ndim)
        g *= dt.type(1) / denom
    return loss, g


# --------------------------------------------------------------------------
# The interface of a case
# --------------------------------------------------------------------------


class Case:
    """One way of computing a table row's result; the timing loop uses only this interface."""

    name: str
    #: the library, for --peers (and the loss every other case is checked against: fastce)
    library: str
    requires: Tuple[str, ...] = ()
    #: the passes in whose rows it appears
    passes: Tuple[str, ...] = PASSES
    #: measured once per (workload, pass) and shown in every threads row
    single_threaded: bool = False
    #: the yardstick of its row: the other cases' ``ratio`` is their min time / its min time
    baseline: bool = False
    #: left out of --quick runs
    slow: bool = False
    #: the arrays it returns are results, not counted as extra memory
    returns_results: bool = True
    #: tracemalloc sees its allocations (NumPy's); false for torch and XLA
    traced: bool = True
    #: the legend's text for its column: what exactly is timed ("" for none)
    note: str = ""

    def unavailable(self) -> Optional[str]:
        """None if importable, else a reason."""
        for mod in self.requires:
            if importlib.util.find_spec(mod) is None:
                return f"{mod} not installed"
        return None

    def version(self) -> str:
        try:
            mod = importlib.import_module(self.requires[0]) if self.requires else np
            return str(getattr(mod, "__version__", "?"))
        except Exception as exc:  # pragma: no cover - broken installs
            return f"? ({exc})"

    def unsupported(self, wl, pass_: str, threads: int, max_threads: int) -> Optional[str]:
        """None if this case can run the cell, else a short reason (:data:`NA`: feature missing)."""
        return None

    def threads(self, n: int):
        """Context manager setting this library's thread count."""
        return contextlib.nullcontext()

    def prepare(self, wl, data, pass_: str, threads: int) -> Callable[[], Any]:
        """Return a zero-argument callable doing one full computation.

        It returns the loss (forward) or ``(loss, grad...)`` (loss+grad), fully computed (no
        lazy/async results left), or ``()`` when it computes no loss (a baseline).
        """
        raise NotImplementedError

    def memory_needed(self, wl, pass_: str) -> int:
        """Bytes of extra memory it needs (a case that would not fit is skipped)."""
        return 0


class Peer(Case):
    """A library that can compute the cross-entropy table's softmax cross-entropy."""

    #: extra memory needed, in multiples of the input's bytes (forward, loss+grad)
    mem_factor: Tuple[float, float] = (1.0, 2.0)
    #: computes no forward-only loss: n/a in the forward rows
    loss_grad_only: bool = False

    @property
    def library(self) -> str:  # type: ignore[override]
        return self.name

    def unsupported(self, wl, pass_, threads, max_threads):
        return NA if self.loss_grad_only and pass_ == FORWARD else None

    def memory_needed(self, wl, pass_):
        f = self.mem_factor[0 if pass_ == FORWARD else 1]
        return int(wl.nbytes * f)


def fastce_cache_limit() -> int:
    """The buffer cache's limit in bytes (0: off)."""
    import fastce

    return int(fastce.cache_info()["limit"])


class FastcePeer(Peer):
    name = "fastce"
    requires = ("fastce",)
    mem_factor = (0.1, 1.1)

    @property
    def note(self) -> str:  # type: ignore[override]
        what = ("fastce.cross_entropy (forward), fastce.cross_entropy_with_grad (loss+grad) on NumPy "
                "arrays; a new gradient array every call")
        limit = fastce_cache_limit()
        if not limit:
            return what + " (buffer cache off: fresh memory every call)."
        return (what + f", from fastce's buffer cache (limit {limit / 2**20:.0f} MiB; FASTCE_CACHE_MB=0 "
                "turns it off).")

    def prepare(self, wl, data, pass_, threads):
        import fastce

        x, t, w, ls = data.input, data.target, data.weight, wl.label_smoothing
        if pass_ == FORWARD:
            f = fastce.cross_entropy
            return lambda: f(x, t, weight=w, label_smoothing=ls, num_threads=threads)
        f = fastce.cross_entropy_with_grad
        return lambda: f(x, t, weight=w, label_smoothing=ls, num_threads=threads)


class FastceOutPeer(Peer):
    name = "fastce(out=)"
    requires = ("fastce",)
    mem_factor = (0.0, 1.1)
    loss_grad_only = True
    note = ("fastce.cross_entropy_with_grad(..., out=buf): the gradient written into one preallocated "
            "array that every call reuses (loss+grad only; the x<library> ratios use plain fastce).")

    def prepare(self, wl, data, pass_, threads):
        import fastce

        x, t, w, ls = data.input, data.target, data.weight, wl.label_smoothing
        out = np.empty_like(x)
        f = fastce.cross_entropy_with_grad
        return lambda: f(x, t, weight=w, label_smoothing=ls, out=out, num_threads=threads)


def torch_tensor(a: np.ndarray):
    """``a`` as a CPU tensor sharing its memory (bfloat16 through an int16 view: NumPy has no
    bfloat16 of its own, so torch.from_numpy refuses ml_dtypes' arrays)."""
    import torch

    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


class TorchPeer(Peer):
    name = "torch"
    requires = ("torch",)
    mem_factor = (1.1, 3.1)
    traced = False
    note = ("torch.nn.functional.cross_entropy (eager) on tensors sharing the arrays' memory; loss+grad = "
            "forward + loss.backward(); torch.set_num_threads(thr).")

    @contextlib.contextmanager
    def threads(self, n):
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(old)

    def prepare(self, wl, data, pass_, threads):
        import torch.nn.functional as F

        return self._prepare(F.cross_entropy, wl, data, pass_)

    @staticmethod
    def _prepare(cross_entropy, wl, data, pass_):
        """``cross_entropy(input, target, weight=, label_smoothing=)`` on torch tensors viewing
        the workload's arrays: under no_grad (forward), or forward + autograd backward."""
        import torch

        xt, tt = torch_tensor(data.input), torch_tensor(data.target)
        wt = None if data.weight is None else torch_tensor(data.weight)
        ls = wl.label_smoothing
        if pass_ == FORWARD:

            def fwd():
                with torch.no_grad():
                    return cross_entropy(xt, tt, weight=wt, label_smoothing=ls)

            return fwd
        xg = xt.detach().requires_grad_(True)

        def loss_grad():
            xg.grad = None
            loss = cross_entropy(xg, tt, weight=wt, label_smoothing=ls)
            loss.backward()
            return loss.detach(), xg.grad

        return loss_grad


class FastceTorchPeer(TorchPeer):
    """fastce.torch.cross_entropy on the same torch tensors as the torch peer, with autograd: the
    torch-tensors row of every workload (column ``fastce.torch``, ratio ``xtorch(fastce.torch)``)."""

    name = "fastce.torch"
    requires = ("torch", "fastce")
    mem_factor = (0.1, 1.1)
    note = ("fastce.torch.cross_entropy, fastce's drop-in for F.cross_entropy, on the same torch tensors, "
            "with autograd.")

    def prepare(self, wl, data, pass_, threads):
        import fastce.torch

        return self._prepare(fastce.torch.cross_entropy, wl, data, pass_)


class NumpyPeer(Peer):
    name = "numpy"
    requires = ()
    single_threaded = True
    mem_factor = (1.2, 1.2)
    note = ("the same loss in NumPy (max, exp, sum, log; gradient = softmax - one-hot), single-threaded "
            "(measured once, shown in every thr row); 16-bit logits computed in float32.")

    def version(self):
        return np.__version__

    def prepare(self, wl, data, pass_, threads):
        x, t, w, ls = data.input, data.target, data.weight, wl.label_smoothing
        g = pass_ == LOSS_GRAD
        if x.dtype.itemsize == 2:
            # float16 or bfloat16 (ml_dtypes): NumPy's float16 math is emulated and ml_dtypes'
            # bfloat16 math is slower still: compute in float32. The gradient stays float32:
            # NumPy's cast of its (mostly subnormal) values to float16 takes many times as long
            # as the cross-entropy itself (docs/performance/notes_bench.md has the figures).
            w32 = None if w is None else w.astype(np.float32)
            return lambda: numpy_cross_entropy(x.astype(np.float32), t, w32, ls, with_grad=g)
        return lambda: numpy_cross_entropy(x, t, w, ls, with_grad=g)


class JaxPeer(Peer):
    name = "jax"
    requires = ("jax", "optax")
    mem_factor = (2.1, 4.1)
    traced = False
    note = ("optax.softmax_cross_entropy_with_integer_labels(...).mean() under jax.jit (loss+grad: "
            "jax.value_and_grad; compiling is not timed; K-dim input moved to class-last inside, timed); "
            "all-threads rows only.")
    _ready = False

    def version(self):
        try:
            import jax
            import optax

            return f"{jax.__version__} (optax {optax.__version__})"
        except Exception as exc:  # pragma: no cover
            return f"? ({exc})"

    def unsupported(self, wl, pass_, threads, max_threads):
        if threads != max_threads:
            return NA  # XLA's CPU thread pool is fixed at import time
        return None

    @classmethod
    def _setup(cls):
        if not cls._ready:
            import jax

            # float64 workloads must stay float64 (JAX truncates to 32 bits otherwise)
            jax.config.update("jax_enable_x64", True)
            cls._ready = True

    def prepare(self, wl, data, pass_, threads):
        self._setup()
        import jax
        import jax.numpy as jnp
        import optax

        ls = float(wl.label_smoothing)
        C = wl.num_classes
        moveaxis = data.input.ndim > 2

        def loss_fn(x, t, w):
            if moveaxis:  # optax wants the class axis last
                x = jnp.moveaxis(x, 1, -1)
            ce = optax.softmax_cross_entropy_with_integer_labels(x, t)
            if ls:
                smooth_w = jnp.ones((C,), x.dtype) if w is None else w
                smooth = (
                    smooth_w.sum() * jax.nn.logsumexp(x, axis=-1) - x @ smooth_w
                ) / C
            if w is None:
                if not ls:
                    return ce.mean()
                return ((1 - ls) * ce + ls * smooth).mean()
            wt = w[t]
            per = (1 - ls) * wt * ce
            if ls:
                per = per + ls * smooth
            return per.sum() / wt.sum()

        x = jnp.asarray(data.input)
        t = jnp.asarray(data.target)
        w = None if data.weight is None else jnp.asarray(data.weight)
        if pass_ == FORWARD:
            f = jax.jit(loss_fn)
        else:
            f = jax.jit(jax.value_and_grad(loss_fn))
        return lambda: jax.block_until_ready(f(x, t, w))


class SklearnPeer(Peer):
    name = "sklearn"
    requires = ("sklearn",)
    mem_factor = (0.0, 1.1)
    loss_grad_only = True
    note = ("scikit-learn's HalfMultinomialLoss().loss_gradient(n_threads=thr): loss+grad of 2-D "
            "unweighted float32/float64 logits only (its gradient is per sample, not divided by N).")

    def unsupported(self, wl, pass_, threads, max_threads):
        if not wl.is_2d or wl.weighted or wl.label_smoothing or wl.dtype not in ("float32", "float64"):
            return NA
        return super().unsupported(wl, pass_, threads, max_threads)

    def prepare(self, wl, data, pass_, threads):
        from sklearn._loss.loss import HalfMultinomialLoss

        x = data.input
        y = data.target.astype(x.dtype)  # sklearn takes float labels
        lossobj = HalfMultinomialLoss(n_classes=wl.num_classes)

        def loss_grad():
            loss, grad = lossobj.loss_gradient(y_true=y, raw_prediction=x, n_threads=threads)
            return loss.mean(), grad  # grad is per-sample (not divided by N)

        return loss_grad


class FastceDefaultCall(FastcePeer):
    """The per-call table's fastce: ``cross_entropy_with_grad(x, t)`` as users write it (default
    options and thread count; the table's other cases get that thread count)."""

    passes = (LOSS_GRAD,)
    note = ""

    def prepare(self, wl, data, pass_, threads):
        import fastce

        x, t, f = data.input, data.target, fastce.cross_entropy_with_grad
        return lambda: f(x, t)


def default_threads() -> int:
    """fastce's default thread count (the per-call table's), or every core without fastce."""
    try:
        import fastce

        return int(fastce.get_config()["num_threads"])
    except Exception:
        return all_threads()


PEERS: Tuple[Peer, ...] = (
    FastcePeer(),
    FastceOutPeer(),
    TorchPeer(),
    FastceTorchPeer(),
    NumpyPeer(),
    JaxPeer(),
    SklearnPeer(),
)
PEER_NAMES = tuple(p.name for p in PEERS)


def per_call_cases(peers: Optional[Sequence[str]] = None) -> List[Peer]:
    """The per-call table's cases: fastce (default call), the NumPy twin, torch and fastce.torch
    (those of ``peers`` that are installed)."""
    cases = (FastceDefaultCall(), get_peer("numpy"), get_peer("torch"), get_peer("fastce.torch"))
    return [c for c in cases if (peers is None or c.name in peers) and c.unavailable() is None]


def get_peer(name: str) -> Peer:
    for p in PEERS:
        if p.name == name:
            return p
    raise KeyError(f"unknown peer {name!r}; known: {', '.join(PEER_NAMES)}")


# --------------------------------------------------------------------------
# Two models: the KL table (KL(softmax(ref) || softmax(logits)), G logit pairs/s)
# --------------------------------------------------------------------------


def numpy_kl_div(x, ref, with_grad=False):
    """The NumPy twin of fastce.kl_div (batchmean over rows of (N, C) logits): log_softmax of
    both (max, exp, sum, log), sum p (log p - log q); grad = (q - p) / N. 2-byte logits are
    computed in float32 (converted inside, as the cross-entropy twin's caller does)."""
    if x.dtype.itemsize == 2:
        x, ref = x.astype(np.float32), ref.astype(np.float32)
    elif ref.dtype != x.dtype:
        ref = ref.astype(x.dtype)

    def log_softmax(z):
        m = z.max(axis=1, keepdims=True)
        e = np.subtract(z, m)
        np.exp(e, out=e)
        return z - m - np.log(e.sum(axis=1, keepdims=True))

    lq, lp = log_softmax(x), log_softmax(ref)
    p = np.exp(lp)
    loss = np.asarray((p * (lp - lq)).sum() / x.shape[0], dtype=x.dtype)
    if not with_grad:
        return loss
    return loss, (np.exp(lq) - p) / x.dtype.type(x.shape[0])


class KLPeer(Peer):
    """A case of the KL table: ``fn(x, ref, threads, with_grad)`` on a KLWorkload's data."""

    def __init__(self, name, requires, fn, mem_factor, note, threads_of=None, single_threaded=False):
        self.name, self.requires, self._fn, self.mem_factor, self.note = name, requires, fn, mem_factor, note
        self._threads_of, self.single_threaded = threads_of, single_threaded

    def threads(self, n):
        return self._threads_of(n) if self._threads_of else contextlib.nullcontext()

    def prepare(self, wl, data, pass_, threads):
        return self._fn(data.input, data.ref, threads, pass_ == LOSS_GRAD)


def _kl_fastce(x, ref, threads, with_grad):
    import fastce

    f = fastce.kl_div_with_grad if with_grad else fastce.kl_div
    return lambda: f(x, ref, num_threads=threads)


def _kl_torch(x, ref, threads, with_grad):
    import torch
    import torch.nn.functional as F

    xt, rt = torch_tensor(x), torch_tensor(ref)

    def loss(z):
        return F.kl_div(F.log_softmax(z, 1), F.log_softmax(rt, 1), log_target=True, reduction="batchmean")

    if not with_grad:
        def fwd():
            with torch.no_grad():
                return loss(xt)
        return fwd
    xg = xt.detach().requires_grad_(True)

    def loss_grad():
        xg.grad = None
        val = loss(xg)
        val.backward()
        return val.detach(), xg.grad

    return loss_grad


def _kl_numpy(x, ref, threads, with_grad):
    return lambda: numpy_kl_div(x, ref, with_grad)


KL_PEERS: Tuple[KLPeer, ...] = (
    KLPeer("fastce", ("fastce",), _kl_fastce, (0.1, 1.1),
           "fastce.kl_div(logits, ref) (forward), fastce.kl_div_with_grad (loss+grad), reduction='mean'."),
    KLPeer("torch", ("torch",), _kl_torch, (3.1, 5.1),
           "F.kl_div(F.log_softmax(x, 1), F.log_softmax(ref, 1), log_target=True, reduction='batchmean') "
           "under no_grad; + loss.backward() for loss+grad.",
           threads_of=lambda n: TorchPeer().threads(n)),
    KLPeer("numpy", (), _kl_numpy, (4.2, 5.2),
           "the same in NumPy (log_softmax of both by max, exp, sum, log; sum p (log p - log q); "
           "gradient (q - p) / N), single-threaded.", single_threaded=True),
)


def kl_cases(peers: Optional[Sequence[str]] = None) -> List[KLPeer]:
    """The KL table's cases (those of ``peers`` that are installed; fastce always)."""
    return [c for c in KL_PEERS if (peers is None or c.name in peers or c.name == "fastce")
            and c.unavailable() is None]


# --------------------------------------------------------------------------
# Linear + cross-entropy (LM head) cases
# --------------------------------------------------------------------------


@contextlib.contextmanager
def all_blas_threads(n: int):
    """NumPy's/SciPy's BLAS and torch limited to n threads (threadpoolctl and
    torch.set_num_threads, where installed); no-op for the default (all cores)."""
    with contextlib.ExitStack() as stack:
        if n < all_threads():
            try:
                from threadpoolctl import threadpool_limits

                stack.enter_context(threadpool_limits(n, user_api="blas"))
            except ImportError:
                pass
        if importlib.util.find_spec("torch") is not None:
            stack.enter_context(TorchPeer().threads(n))
        yield


@dataclasses.dataclass(frozen=True)
class LinearCase(Case):
    """One way of computing the LM-head loss (forward) or loss + all gradients (loss+grad).

    ``make(wl, data, threads)`` returns a zero-argument callable doing one full computation and
    returning (loss, arrays it allocated and returns...), or ``()`` (the baselines).
    ``baseline``: the matmul(s) the other cases of its pass are divided by. ``mem_factor``:
    extra memory in full-logits units (to skip a case that would not fit)."""

    name: str
    pass_: str
    library: str
    make: Callable[..., Callable[[], Any]]
    requires: Tuple[str, ...] = ()
    baseline: bool = False
    returns_results: bool = False
    mem_factor: float = 0.0
    slow: bool = False

    @property
    def passes(self) -> Tuple[str, ...]:  # type: ignore[override]
        return (self.pass_,)

    @property
    def traced(self) -> bool:  # type: ignore[override]
        return not self.library.startswith("torch")

    def unavailable(self) -> Optional[str]:
        why = super().unavailable()
        if why is None and self.library == "torch(chunked)":
            import torch

            if not hasattr(torch.nn, "LinearCrossEntropyOptions"):
                return "torch.nn.LinearCrossEntropyOptions not in this torch"
        return why

    def threads(self, n):
        return all_blas_threads(n)  # BLAS-bound: every library's BLAS, torch too

    def prepare(self, wl, data, pass_, threads):
        return self.make(wl, data, threads)

    def memory_needed(self, wl, pass_):
        return int(self.mem_factor * wl.logits_nbytes)


def _lin_numpy_matmul_out(wl, d, threads):
    out = np.empty((wl.N, wl.V), dtype=d.x.dtype)

    def run():
        np.matmul(d.x, d.W.T, out=out)
        return ()

    return run


def _lin_numpy_matmul_alloc(wl, d, threads):
    def run():
        d.x @ d.W.T  # the (N, V) logits, allocated and freed
        return ()

    return run


def _lin_fastce(wl, d, threads):
    import fastce

    return lambda: (fastce.linear_cross_entropy(d.x, d.W, d.target),)


def _lin_numpy_then_fastce(wl, d, threads):
    import fastce

    return lambda: (fastce.cross_entropy(d.x @ d.W.T, d.target, num_threads=threads),)


def _lin_numpy_3mm_out(wl, d, threads):
    z = np.empty((wl.N, wl.V), dtype=d.x.dtype)
    gx = np.empty_like(d.x)
    gW = np.empty_like(d.W)

    def run():
        np.matmul(d.x, d.W.T, out=z)  # logits
        np.matmul(z, d.W, out=gx)  # G @ W
        np.matmul(z.T, d.x, out=gW)  # G.T @ x
        return ()

    return run


def _lin_fastce_grad(wl, d, threads):
    import fastce

    return lambda: fastce.linear_cross_entropy_with_grad(d.x, d.W, d.target)[:3]


def _torch_lce(chunked: bool, with_grad: bool):
    def prepare(wl, d, threads):
        import torch
        import torch.nn.functional as F

        xt, Wt, tt = torch.from_numpy(d.x), torch.from_numpy(d.W), torch.from_numpy(d.target)
        opts = torch.nn.LinearCrossEntropyOptions() if chunked else None
        if not with_grad:

            def fwd():
                with torch.no_grad():
                    return (F.linear_cross_entropy(xt, Wt, tt, options=opts),)

            return fwd
        xg = xt.detach().requires_grad_(True)
        Wg = Wt.detach().requires_grad_(True)

        def loss_grad():
            xg.grad = Wg.grad = None
            loss = F.linear_cross_entropy(xg, Wg, tt, options=opts)
            loss.backward()
            return loss.detach(), xg.grad, Wg.grad

        return loss_grad

    return prepare


LINEAR_CASES: Tuple[LinearCase, ...] = (
    LinearCase("numpy matmul(x, W.T, out=)", FORWARD, "numpy", _lin_numpy_matmul_out, baseline=True),
    LinearCase("numpy x @ W.T (allocating)", FORWARD, "numpy", _lin_numpy_matmul_alloc, mem_factor=1.0),
    LinearCase("fastce.linear_cross_entropy", FORWARD, "fastce", _lin_fastce, ("fastce",), mem_factor=0.1),
    LinearCase("numpy x @ W.T + fastce.cross_entropy", FORWARD, "fastce", _lin_numpy_then_fastce,
               ("fastce",), mem_factor=1.0),
    LinearCase("torch F.linear_cross_entropy", FORWARD, "torch", _torch_lce(False, False), ("torch",),
               mem_factor=2.2),
    LinearCase("torch F.linear_cross_entropy (options=)", FORWARD, "torch(chunked)", _torch_lce(True, False),
               ("torch",), mem_factor=1.0, slow=True),
    LinearCase("numpy 3 matmuls (out=)", LOSS_GRAD, "numpy", _lin_numpy_3mm_out, baseline=True, mem_factor=1.0),
    LinearCase("fastce.linear_cross_entropy_with_grad", LOSS_GRAD, "fastce", _lin_fastce_grad, ("fastce",),
               returns_results=True, mem_factor=0.2),
    LinearCase("torch forward + backward", LOSS_GRAD, "torch", _torch_lce(False, True), ("torch",),
               returns_results=True, mem_factor=3.2),
    LinearCase("torch forward + backward (options=)", LOSS_GRAD, "torch(chunked)", _torch_lce(True, True),
               ("torch",), returns_results=True, mem_factor=1.5, slow=True),
)


def linear_cases(passes: Sequence[str] = PASSES, peers: Optional[Sequence[str]] = None) -> List[LinearCase]:
    """The cases of `passes`; with `peers`, only the libraries named there ('torch' brings
    torch(chunked) too). The NumPy matmul baselines are always included."""
    out = []
    for c in LINEAR_CASES:
        if c.pass_ not in passes:
            continue
        lib = "torch" if c.library.startswith("torch") else c.library
        if peers is not None and not c.baseline and lib not in peers:
            continue
        out.append(c)
    return out
