"""fastce.dask on a real distributed.LocalCluster (2 worker processes, started here).

Row-only, class-only and row x class chunkings (uneven, width-1 class chunks), K-dim input,
every option: loss, gradient and score equal single-process fastce; compare merges row
blocks; workers run the kernels on one thread (no OpenMP team per task); bad input.
"""

import numpy as np
import pytest

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
import dask.array as da  # noqa: E402

import fastce  # noqa: E402
import fastce.dask as fd  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       silence_logs=40)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


rng = np.random.default_rng(0)
X = rng.standard_normal((61, 40)) * 3
T = rng.integers(0, 40, 61)
T[::7] = -100
W = rng.uniform(0.5, 1.5, 40)
CHUNKS = {"rows": (13, 40), "classes": (61, (9, 1, 20, 10)), "rows-x-classes": ((30, 1, 30), (1, 38, 1)),
          "one-block": (61, 40)}
OPTIONS = {"plain": {}, "smoothing-weight": dict(label_smoothing=0.1, weight=W), "z-loss": dict(z_loss=1e-3),
           "ignore": dict(ignore_index=3)}


@pytest.mark.parametrize("chunks", list(CHUNKS))
@pytest.mark.parametrize("opt", list(OPTIONS))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_and_grad_equal_one_process(client, chunks, opt, reduction):
    x = da.from_array(X, chunks=CHUNKS[chunks])
    kw = OPTIONS[opt]
    t = np.where(T == -100, kw.get("ignore_index", -100), T)  # padding marked with the ignore_index in use
    loss, grad = fd.cross_entropy_with_grad(x, t, reduction=reduction, **kw)
    assert isinstance(loss, da.Array) and loss.shape == (() if reduction != "none" else (61,))
    assert grad.chunks == x.chunks
    loss, grad = client.compute([loss, grad], sync=True)
    want, wgrad = fastce.cross_entropy_with_grad(X, t, reduction=reduction, **kw)
    np.testing.assert_allclose(loss, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad, wgrad, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(client.compute(fd.cross_entropy(x, t, reduction=reduction, **kw), sync=True), want,
                               rtol=1e-10, atol=1e-12)


def test_k_dim_and_float32(client):
    xk = rng.standard_normal((6, 9, 4, 3)).astype(np.float32)
    tk = rng.integers(0, 9, (6, 4, 3))
    x = da.from_array(xk, chunks=(4, (2, 7), 3, (1, 2)))
    loss, grad = fd.cross_entropy_with_grad(x, da.from_array(tk, chunks=(2, 2, 3)), label_smoothing=0.2)
    loss, grad = client.compute([loss, grad], sync=True)
    want, wgrad = fastce.cross_entropy_with_grad(xk, tk, label_smoothing=0.2)
    assert loss.dtype == np.float32 and grad.dtype == np.float32
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(grad, wgrad, rtol=1e-4, atol=1e-8)


def test_grad_output_per_row(client):
    go = rng.standard_normal(61)
    x = da.from_array(X, chunks=CHUNKS["rows-x-classes"])
    _, grad = fd.cross_entropy_with_grad(x, T, reduction="none", grad_output=da.from_array(go, chunks=20))
    np.testing.assert_allclose(client.compute(grad, sync=True),
                               fastce.cross_entropy_with_grad(X, T, reduction="none", grad_output=go)[1],
                               rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("chunks", list(CHUNKS))
def test_score_equals_one_process(client, chunks):
    x = da.from_array(X, chunks=CHUNKS[chunks])
    ties = X.copy()
    ties[:, 5] = ties[:, 6]  # ties across a class-chunk edge in the "classes" chunking too
    for data in (X, ties):
        s = fd.score(da.from_array(data, chunks=CHUNKS[chunks]), T, top_k=(1, 5))
        want = fastce.score(data, T, top_k=(1, 5))
        assert isinstance(s, fastce.Score)
        assert s.count == want.count and s.correct == want.correct
        assert s.nll_sum == pytest.approx(want.nll_sum, rel=1e-12)
    lazy = fd.score(x, T, compute=False)
    assert client.compute(lazy, sync=True).count == want.count


def test_compare_merges_row_blocks(client):
    y = X + rng.standard_normal(X.shape) * 0.3
    c = fd.compare(da.from_array(X, chunks=(13, (10, 30))), da.from_array(y, chunks=(20, 40)), T, top_k=(1, 3))
    want = fastce.compare(X, y, T, top_k=(1, 3))
    assert c.count == want.count and c.agree == want.agree
    np.testing.assert_array_equal(c.kl_hist, want.kl_hist)
    assert c.mean_kl == pytest.approx(want.mean_kl, rel=1e-12) and c.delta_nll == pytest.approx(want.delta_nll)


def test_workers_run_one_kernel_thread(client):
    x = da.random.default_rng(1).standard_normal((4000, 1000), chunks=(1000, 500)).astype(np.float32)
    client.compute(fd.cross_entropy(x, rng.integers(0, 1000, 4000)), sync=True)

    def probe():
        import os

        from fastce import _runtime
        return os.environ.get("OMP_NUM_THREADS"), _runtime._thread_team_started

    for omp, team in client.run(probe).values():
        assert omp == "1" and team is False


@pytest.mark.parametrize("call,exc,match", [
    (lambda: fd.cross_entropy(da.zeros((4, 3)), np.zeros(5, int)), ValueError, "shape"),
    (lambda: fd.cross_entropy(da.zeros((4, 3)), np.zeros(4)), TypeError, "integers"),
    (lambda: fd.cross_entropy(da.zeros(3), np.zeros((), int)), ValueError, "batched"),
    (lambda: fd.cross_entropy(da.zeros((4, 3), dtype=int), np.zeros(4, int)), TypeError, "floating"),
    (lambda: fd.cross_entropy(da.zeros((4, 3)), np.zeros(4, int), weight=np.ones(4)), ValueError, "weight"),
    (lambda: fd.cross_entropy(da.zeros((4, 3)), np.zeros(4, int), reduction="avg"), ValueError, "reduction"),
    (lambda: fd.cross_entropy_with_grad(da.zeros((4, 3)), np.zeros(4, int), grad_output=np.ones(4)), ValueError,
     "scalar"),
    (lambda: fd.score(da.zeros((4, 3, 2)), np.zeros((4, 2), int)), ValueError, "(N, V)"),
    (lambda: fd.score(da.zeros((4, 3)), np.zeros(4, int), top_k=4), ValueError, "top_k"),
    (lambda: fd.compare(da.zeros((4, 3)), da.zeros((4, 2))), ValueError, "one shape"),
    (lambda: fd.cross_entropy(da.zeros((4, 3)), np.array([0, 1, 5, 0])).compute(), IndexError, "out of bounds"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_unknown_chunks_are_refused():
    x = da.zeros((6, 3), chunks=(3, 3))
    x = x[x[:, 0] == 0]  # unknown row count
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        fd.cross_entropy(x, np.zeros(6, int))


def test_import_fastce_does_not_import_dask():
    import subprocess
    import sys

    code = "import sys, fastce; assert 'dask' not in sys.modules; import fastce.dask; assert 'dask' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
