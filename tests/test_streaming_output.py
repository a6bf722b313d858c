"""Large gradients are written with non-temporal stores (outputs >= 32 MiB that do not alias the
input). Those paths only run on big arrays, so they get their own tests: rows whose starts fall
at every alignment (C not a multiple of 16), index and probability targets, out= and allocated."""
import numpy as np
import pytest

import fastce
from fastce import reference as ref

ISAS = fastce.available_isas()


@pytest.fixture(scope="module")
def big_case():
    rng = np.random.default_rng(11)
    N, C = 1030, 8201  # 33.8 MB of float32; 8201 * 4 bytes per row: every 4-byte alignment occurs
    x = (rng.standard_normal((N, C)) * 3).astype(np.float32)
    t = rng.integers(0, C, size=N)
    t[::7] = -100
    return x, t


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("use_out", [False, True])
def test_streamed_gradient_matches_reference(isa, use_out, big_case):
    x, t = big_case
    w = np.linspace(0.5, 1.5, x.shape[1]).astype(np.float32)
    rows = np.r_[0:5, 500:505, x.shape[0] - 5:x.shape[0]]
    want_loss, want_grad = ref.cross_entropy_with_grad(x[rows].astype(np.float64), t[rows], weight=w,
                                                       reduction="sum", label_smoothing=0.1)
    out = np.full_like(x, np.nan) if use_out else None
    with fastce.use_isa(isa):
        loss, grad = fastce.cross_entropy_with_grad(x, t, weight=w, reduction="sum",
                                                    label_smoothing=0.1, out=out)
        row_loss = fastce.cross_entropy(x[rows], t[rows], weight=w, reduction="sum", label_smoothing=0.1)
    if use_out:
        assert grad is out
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad[rows], want_grad, rtol=2e-5, atol=2e-7)
    np.testing.assert_allclose(row_loss, want_loss, rtol=2e-5)
    # Ignored rows are exactly zero, including their streamed middle parts.
    assert not grad[::7].any()


@pytest.mark.parametrize("isa", ISAS)
def test_streamed_softmax_and_prob_targets(isa, big_case):
    x, _ = big_case
    with fastce.use_isa(isa):
        sm = fastce.softmax(x, axis=1)
        y = sm[::-1].copy()
        loss, grad = fastce.cross_entropy_with_grad(x, y, reduction="none")
    rows = np.r_[0:3, 700:703]
    np.testing.assert_allclose(sm[rows], ref.softmax(x[rows].astype(np.float64), 1), rtol=2e-5, atol=1e-10)
    want_loss, want_grad = ref.cross_entropy_with_grad(x[rows].astype(np.float64), y[rows], reduction="none")
    np.testing.assert_allclose(loss[rows], want_loss, rtol=2e-5)
    np.testing.assert_allclose(grad[rows], want_grad, rtol=2e-5, atol=2e-7)
