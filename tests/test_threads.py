"""Threads and processes.

* The GIL is released while the kernels run: another Python thread keeps running Python code
  in the middle of a long call (measured per call, so a noisy machine cannot fake a pass).
* 8 Python threads calling at once, each with its own options, all get exactly the result of
  the same call made alone (and that result matches the reference).
* Calls from inside a concurrent.futures thread pool, nested pools, and side by side with
  torch's own OpenMP threads.
* fork() after fastce ran multi-threaded: a child (multiprocessing 'fork' start method) calls
  fastce with num_threads=2 and must finish; a deadlock fails the test through a timeout. The
  forking parent is a fresh interpreter (subprocess) with only numpy and fastce in it.
* num_threads far above the number of cores must not crash the process (subprocess).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastce
from _ce_testutil import assert_close, get_torch, ref

TIMEOUT = 120  # seconds: a deadlock fails the test instead of hanging CI


# --------------------------------------------------------------------------
# the GIL is released during kernels
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4096, 4096), dtype=np.float32)
    t = rng.integers(0, 4096, 4096)
    return x, t, np.empty_like(x)


GIL_CALLS = {
    "cross_entropy": lambda x, t, o: fastce.cross_entropy(x, t, label_smoothing=0.1, num_threads=1),
    "cross_entropy_with_grad": lambda x, t, o: fastce.cross_entropy_with_grad(x, t, out=o, num_threads=1),
    "CrossEntropyLoss": lambda x, t, o: fastce.CrossEntropyLoss(num_threads=1).loss_and_grad(x, t, out=o),
    "softmax": lambda x, t, o: fastce.softmax(x, num_threads=1),
    "logsumexp": lambda x, t, o: fastce.logsumexp(x, num_threads=1),
}


@pytest.mark.parametrize("name", list(GIL_CALLS))
def test_gil_released_during_kernels(big, name):
    """A worker thread makes CALLS long calls; the main thread meanwhile spins in Python,
    time-stamping its progress. Were the GIL held by a kernel, the main thread could not run
    a single bytecode during that call, so no stamp would fall in the middle half of any call.
    With the GIL released, almost every call has stamps there; we ask for half of them
    (robust to a busy 2-core machine descheduling the main thread now and then)."""
    x, t, o = big
    fn = GIL_CALLS[name]
    fn(x, t, o)  # warm-up
    CALLS = 24
    spans = []
    done = threading.Event()
    started = threading.Event()

    def worker():
        started.set()
        try:
            for _ in range(CALLS):
                t0 = time.perf_counter()
                fn(x, t, o)
                spans.append((t0, time.perf_counter()))
        finally:
            done.set()

    stamps = []
    th = threading.Thread(target=worker)
    th.start()
    started.wait()
    last = 0.0
    deadline = time.perf_counter() + TIMEOUT
    while not done.is_set():
        now = time.perf_counter()
        if now - last > 20e-6:
            stamps.append(now)
            last = now
        if now > deadline:
            break
    th.join(TIMEOUT)
    assert not th.is_alive(), "worker did not finish"
    assert len(spans) == CALLS
    st = np.array(stamps)
    overlapped = 0
    for t0, t1 in spans:
        q = (t1 - t0) / 4
        if np.any((st > t0 + q) & (st < t1 - q)):
            overlapped += 1
    durations = [round((t1 - t0) * 1e3, 2) for t0, t1 in spans]
    assert overlapped >= CALLS // 2, (
        f"{name}: the main thread ran Python during only {overlapped} of {CALLS} kernel calls "
        f"(call durations, ms: {durations}); the GIL seems to be held by the kernels")


# --------------------------------------------------------------------------
# many Python threads at once, each with its own options
# --------------------------------------------------------------------------

def _configs():
    """8 calls with different options, entry points, dtypes and thread counts.
    Each: (name, fn() -> tuple of arrays, reference() -> tuple of arrays, dtype)."""
    rng = np.random.default_rng(42)
    cfgs = []

    x1 = rng.standard_normal((300, 257)).astype(np.float32)
    t1 = rng.integers(0, 257, 300)
    w1 = rng.random(257).astype(np.float32) + 0.5
    cfgs.append(("index-mean-weight-smooth", np.float32,
                 lambda: fastce.cross_entropy_with_grad(x1, t1, w1, label_smoothing=0.1, num_threads=1),
                 lambda: ref.cross_entropy_with_grad(x1, t1, w1, label_smoothing=0.1)))

    x2 = rng.standard_normal((8, 33, 40)).astype(np.float64)
    t2 = rng.integers(0, 33, (8, 40))
    t2[:, ::5] = -100
    g2 = rng.standard_normal((8, 40))
    cfgs.append(("kdim-none-ignore", np.float64,
                 lambda: fastce.cross_entropy_with_grad(x2, t2, reduction="none", grad_output=g2, num_threads=2),
                 lambda: ref.cross_entropy_with_grad(x2, t2, reduction="none", grad_output=g2)))

    x3 = rng.standard_normal((200, 100)).astype(np.float32)
    y3 = ref.softmax(rng.standard_normal((200, 100)), 1).astype(np.float32)
    cfgs.append(("prob-sum", np.float32,
                 lambda: fastce.cross_entropy_with_grad(x3, y3, reduction="sum", label_smoothing=0.2),
                 lambda: ref.cross_entropy_with_grad(x3, y3, reduction="sum", label_smoothing=0.2)))

    x4 = rng.standard_normal(5000)
    t4 = np.array(1234)
    cfgs.append(("unbatched", np.float64,
                 lambda: (fastce.cross_entropy(x4, t4, num_threads=2),),
                 lambda: (ref.cross_entropy(x4, t4),)))

    x5 = rng.standard_normal((2, 40000)).astype(np.float32)
    t5 = np.array([3, 39999])
    cfgs.append(("long-rows-split", np.float32,
                 lambda: fastce.cross_entropy_with_grad(x5, t5, reduction="sum", num_threads=2),
                 lambda: ref.cross_entropy_with_grad(x5, t5, reduction="sum")))

    x6 = rng.standard_normal((64, 300)).astype(np.float16)
    t6 = rng.integers(0, 300, 64).astype(np.uint16)
    cfgs.append(("float16-uint16", np.float16,
                 lambda: fastce.cross_entropy_with_grad(x6, t6, num_threads=2),
                 lambda: ref.cross_entropy_with_grad(x6, t6)))

    x7 = rng.standard_normal((128, 512)).astype(np.float32)
    t7 = rng.integers(0, 512, 128).astype(np.int32)
    mod = fastce.CrossEntropyLoss(ignore_index=3, reduction="sum", num_threads=2)

    def modcall():
        o = np.full_like(x7, np.nan)   # a fresh out= per call: no sharing between threads
        loss, g = mod.loss_and_grad(x7, t7, out=o)
        assert g is o
        return loss, g
    cfgs.append(("module-out", np.float32, modcall,
                 lambda: ref.cross_entropy_with_grad(x7, t7, ignore_index=3, reduction="sum")))

    x8 = rng.standard_normal((16, 64, 30)).astype(np.float64)
    lp8 = ref.log_softmax(x8, 1)
    t8 = rng.integers(0, 64, (16, 30))
    cfgs.append(("softmax-family-nll", np.float64,
                 lambda: (fastce.log_softmax(x8, axis=1), fastce.softmax(x8, axis=1, num_threads=2),
                          fastce.logsumexp(x8, axis=1), fastce.nll_loss(lp8, t8)),
                 lambda: (ref.log_softmax(x8, 1), ref.softmax(x8, 1), ref.logsumexp(x8, 1),
                          ref.nll_loss(lp8, t8))))
    return cfgs


@pytest.fixture(scope="module")
def configs():
    out = []
    for name, dt, fn, rfn in _configs():
        expected = tuple(np.array(a, copy=True) for a in fn())
        for i, (got, want) in enumerate(zip(expected, rfn())):
            assert_close(got, want, dt, f"{name}[{i}] alone vs reference", kind="grad" if i else "loss")
        out.append((name, fn, expected))
    return out


def _same(name, got, expected):
    got = tuple(got)
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        g = np.asarray(g)
        assert g.shape == e.shape and g.dtype == e.dtype, f"{name}[{i}]"
        # the same call gives the same bits, whatever runs beside it
        assert np.array_equal(g, e, equal_nan=True), f"{name}[{i}]: differs from the call made alone"


def test_eight_threads_different_options(configs):
    assert len(configs) == 8
    barrier = threading.Barrier(len(configs))
    errors = []

    def run(name, fn, expected):
        try:
            barrier.wait(TIMEOUT)
            for _ in range(25):
                _same(name, fn(), expected)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(f"{name}: {e!r}")

    threads = [threading.Thread(target=run, args=c) for c in configs]
    for th in threads:
        th.start()
    for th in threads:
        th.join(TIMEOUT)
    assert not any(th.is_alive() for th in threads), "a thread did not finish (deadlock?)"
    assert not errors, errors


def test_thread_pool_and_nested_pools(configs):
    """Tasks in a ThreadPoolExecutor, and tasks that themselves fan out to an inner pool."""
    with cf.ThreadPoolExecutor(max_workers=4) as pool:
        futs = [pool.submit(fn) for _ in range(6) for _, fn, _ in configs]
        for (name, _, expected), f in zip(configs * 6, futs):
            _same(name, f.result(timeout=TIMEOUT), expected)

    def outer(k):
        with cf.ThreadPoolExecutor(max_workers=3) as inner:
            fs = [(c, inner.submit(c[1])) for c in configs[k::2]]
            for (name, _, expected), f in fs:
                _same(name, f.result(timeout=TIMEOUT), expected)
        return k

    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        assert sorted(f.result(timeout=TIMEOUT) for f in [pool.submit(outer, k) for k in (0, 1)]) == [0, 1]


def test_beside_torch_openmp_threads(configs):
    """fastce's OpenMP teams and torch's (its own OpenMP runtime) running at the same time."""
    torch = get_torch()
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    stop = threading.Event()
    errors = []

    def torch_work():
        try:
            a = torch.randn(256, 256)
            while not stop.is_set():
                b = torch.nn.functional.cross_entropy(a @ a, torch.zeros(256, dtype=torch.long))
                assert torch.isfinite(b)
        except BaseException as e:  # noqa: BLE001
            errors.append(repr(e))

    th = threading.Thread(target=torch_work)
    th.start()
    try:
        for _ in range(10):
            for name, fn, expected in configs:
                _same(name, fn(), expected)
    finally:
        stop.set()
        th.join(TIMEOUT)
        torch.set_num_threads(old)
    assert not th.is_alive()
    assert not errors, errors


# --------------------------------------------------------------------------
# fork after multi-threaded use
# --------------------------------------------------------------------------

_FORK_X = np.random.default_rng(5).standard_normal((512, 1024)).astype(np.float32)   # > MIN_PARALLEL_WORK
_FORK_T = np.random.default_rng(6).integers(0, 1024, 512)


def _fork_child(q):
    """In the child: several multi-threaded calls (num_threads=2), results sent back."""
    try:
        loss, grad = fastce.cross_entropy_with_grad(_FORK_X, _FORK_T, num_threads=2)
        lse = fastce.logsumexp(_FORK_X, num_threads=2)
        loss2 = fastce.cross_entropy(_FORK_X[:2].repeat(20, axis=1), _FORK_T[:2], num_threads=2)  # split rows
        q.put(("ok", float(loss), float(grad.sum(dtype=np.float64)), float(lse.sum(dtype=np.float64)),
               float(loss2)))
    except BaseException as e:  # noqa: BLE001
        q.put(("error", repr(e)))


def _expected_fork():
    loss, grad = fastce.cross_entropy_with_grad(_FORK_X, _FORK_T, num_threads=1)
    lse = fastce.logsumexp(_FORK_X, num_threads=1)
    loss2 = fastce.cross_entropy(_FORK_X[:2].repeat(20, axis=1), _FORK_T[:2], num_threads=1)
    return float(loss), float(grad.sum(dtype=np.float64)), float(lse.sum(dtype=np.float64)), float(loss2)


def _run_forked(target, n=1):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(q,), daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    results = []
    try:
        for _ in procs:
            results.append(q.get(timeout=TIMEOUT))
    except Exception:
        pass
    for p in procs:
        p.join(10)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
        p.join(10)
    assert not hung, f"{len(hung)} forked child(ren) did not finish within {TIMEOUT} s: deadlock after fork"
    assert len(results) == n, f"children returned {len(results)} results of {n}; exit codes {[p.exitcode for p in procs]}"
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return results


def _check_fork_results(results, expected):
    for r in results:
        assert r[0] == "ok", r
        np.testing.assert_allclose(r[1:], expected, rtol=1e-5, atol=1e-4)


def _in_fresh_interpreter(body):
    """Run `body`, a function of this module, in a new Python process (numpy and fastce
    imported, nothing else), as a program that forks would. Inside pytest, other test files
    have started other runtimes' threads (JAX's, torch's) by then, and fork() with those alive
    can deadlock in their code, not fastce's (Python warns of it)."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = (f"import sys; sys.path.insert(0, {here!r}); import test_threads; test_threads.{body.__name__}(); "
            "assert not {'jax', 'torch'} & set(sys.modules), 'another runtime was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=4 * TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_after_multithreaded_use():
    _in_fresh_interpreter(_fork_after_multithreaded_use)


def _fork_after_multithreaded_use():
    expected = _expected_fork()
    # the parent runs multi-threaded first, so its OpenMP thread team exists at fork time
    for _ in range(3):
        fastce.cross_entropy_with_grad(_FORK_X, _FORK_T, num_threads=2)
        fastce.softmax(_FORK_X, num_threads=2)
    _check_fork_results(_run_forked(_fork_child, n=2), expected)
    # and the parent still works, multi-threaded, afterwards
    loss, _ = fastce.cross_entropy_with_grad(_FORK_X, _FORK_T, num_threads=2)
    np.testing.assert_allclose(float(loss), expected[0], rtol=1e-6)


def _fork_grandchild(q):
    """A child that runs fastce, then forks again, both calling with num_threads=2."""
    try:
        _fork_child(q)
        sub = _run_forked(_fork_child, n=1)
        q.put(sub[0])
    except BaseException as e:  # noqa: BLE001
        q.put(("error", repr(e)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_twice_and_fork_during_kernels():
    _in_fresh_interpreter(_fork_twice_and_fork_during_kernels)


def _fork_twice_and_fork_during_kernels():
    expected = _expected_fork()
    fastce.cross_entropy(_FORK_X, _FORK_T, num_threads=2)
    # a child that itself forks a grandchild
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_fork_grandchild, args=(q,))   # not a daemon: it has a child
    p.start()
    try:
        results = [q.get(timeout=TIMEOUT), q.get(timeout=TIMEOUT)]
    finally:
        p.join(TIMEOUT)
        if p.is_alive():
            p.kill()
    assert p.exitcode == 0, f"child exit code {p.exitcode} (None: hung)"
    _check_fork_results(results, expected)

    # fork while another thread of the parent is inside a multi-threaded kernel
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            fastce.cross_entropy_with_grad(_FORK_X, _FORK_T, num_threads=2)

    th = threading.Thread(target=busy)
    th.start()
    try:
        time.sleep(0.05)
        results = _run_forked(_fork_child, n=2)
    finally:
        stop.set()
        th.join(TIMEOUT)
    _check_fork_results(results, expected)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_pool_map():
    """multiprocessing.Pool with the fork start method, after multi-threaded use."""
    _in_fresh_interpreter(_fork_pool_map)


def _fork_pool_map():
    fastce.cross_entropy(_FORK_X, _FORK_T, num_threads=2)
    expected = float(fastce.cross_entropy(_FORK_X, _FORK_T, num_threads=1))
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        res = pool.map_async(_pool_task, range(6)).get(timeout=TIMEOUT)
    np.testing.assert_allclose(res, [expected] * 6, rtol=1e-6)


def _pool_task(i):
    return float(fastce.cross_entropy(_FORK_X, _FORK_T, num_threads=2))


# --------------------------------------------------------------------------
# num_threads far above the core count
# --------------------------------------------------------------------------

_MANY_THREADS = r"""
import sys
import numpy as np
import fastce
n = int(sys.argv[1])
x = np.random.default_rng(0).standard_normal((256, 1024)).astype(np.float32)
t = np.arange(256)
want = fastce.cross_entropy(x, t, num_threads=1)
try:
    got = fastce.cross_entropy(x, t, num_threads=n)
    got2 = fastce.cross_entropy(x[:2].repeat(16, axis=1), t[:2], num_threads=n)  # split rows
    want2 = fastce.cross_entropy(x[:2].repeat(16, axis=1), t[:2], num_threads=1)
except (ValueError, RuntimeError) as e:      # a clear refusal is acceptable
    print("refused:", e)
    sys.exit(0)
assert abs(float(got) - float(want)) <= 1e-5 * abs(float(want)), (got, want)
assert abs(float(got2) - float(want2)) <= 1e-5 * abs(float(want2)), (got2, want2)
print("ok")
"""


@pytest.mark.parametrize("n", [64, 100_000])
def test_num_threads_far_above_cores(n):
    """num_threads is a request: far more than the cores must work (or be refused with a
    clear exception), never crash the process (run in a subprocess so a crash is a failure)."""
    res = subprocess.run([sys.executable, "-c", _MANY_THREADS, str(n)], capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert res.returncode == 0, (
        f"num_threads={n}: the process died with exit status {res.returncode} "
        f"(negative: killed by signal {-res.returncode}); stderr tail: {res.stderr[-500:]!r}")
