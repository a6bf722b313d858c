"""fastce._gemm.gemm: c = a @ b + beta * c in place, through NumPy's CBLAS and through SciPy."""

import os

import numpy as np
import pytest

from fastce import _gemm

BACKENDS = ["numpy-cblas", "scipy"]


def _numpy_bundles_openblas():
    """True for NumPy's PyPI wheels (the BLAS is scipy-openblas, in numpy.libs)."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:  # older NumPy: no mode="dicts"
        return False
    return blas.get("name") == "scipy-openblas"


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    if request.param == "scipy":
        monkeypatch.setattr(_gemm, "_CBLAS", None)
    elif _gemm._CBLAS is None:
        if _numpy_bundles_openblas() and os.environ.get("FASTCE_GEMM", "").lower() != "scipy":
            pytest.fail("NumPy bundles scipy-openblas but fastce._gemm did not find its CBLAS")
        pytest.skip("NumPy's BLAS is not a bundled OpenBLAS: fastce uses SciPy's gemm")
    assert _gemm.backend() == request.param
    return request.param


def _layout(x, order):
    return np.asfortranarray(x) if order == "F" else np.ascontiguousarray(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("orders", ["CC", "CF", "FC", "FF"])
@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
@pytest.mark.parametrize("m,k,n", [(5, 7, 3), (1, 4, 9), (6, 1, 1), (13, 33, 17)])
def test_gemm_in_place(backend, dtype, orders, beta, m, k, n):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a = _layout(rng.standard_normal((m, k)).astype(dtype), orders[0])
    b = _layout(rng.standard_normal((k, n)).astype(dtype), orders[1])
    c = np.full((m, n), np.nan if beta == 0.0 else 2.0, dtype=dtype)  # beta=0 must not read c
    before, ptr = c.copy(), c.ctypes.data
    a0, b0 = a.copy(), b.copy()
    _gemm.gemm(a, b, c, beta)
    expect = a.astype(np.float64) @ b.astype(np.float64) + (beta * before if beta else 0)
    np.testing.assert_allclose(c, expect, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
    assert c.ctypes.data == ptr and c.dtype == dtype  # written in place
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


def test_gemm_transposed_views(backend):
    """The products of the linear gradient pass: G @ W, G.T @ x (+=), x @ W.T."""
    rng = np.random.default_rng(3)
    x, W, G = (rng.standard_normal(s).astype(np.float32) for s in ((6, 4), (9, 4), (6, 9)))
    z = np.empty((6, 9), np.float32)
    _gemm.gemm(x, W.T, z)
    np.testing.assert_allclose(z, x @ W.T, rtol=1e-5, atol=1e-6)
    gW = rng.standard_normal((9, 4)).astype(np.float32)
    before = gW.copy()
    _gemm.gemm(G.T, x, gW, beta=1.0)
    np.testing.assert_allclose(gW, before + G.T @ x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_gemm_empty(backend, beta):
    a, b = np.zeros((3, 0), np.float32), np.zeros((0, 2), np.float32)
    c = np.full((3, 2), 7.0, np.float32)
    _gemm.gemm(a, b, c, beta)
    assert np.all(c == (0.0 if beta == 0.0 else 7.0))
    _gemm.gemm(np.zeros((0, 4)), np.zeros((4, 2)), np.zeros((0, 2)))  # nothing to write
