"""Any CPU array that exports DLPack is read in place: torch tensors without grad (bfloat16
included, viewed as int16), JAX arrays. Results are the NumPy path's, bit for bit. A tensor that
requires grad, or memory on another device, is refused with a TypeError that says what to do."""

from __future__ import annotations

import numpy as np
import pytest

import fastce
from fastce._validate import as_array

torch = pytest.importorskip("torch")  # CI installs torch (FASTCE_REQUIRE_TORCH there)


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "kdim"])
def test_torch_tensors_are_read_in_place(dtype, layout):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(40, 21, generator=g) * 3).to(getattr(torch, dtype))
    t = torch.randint(0, 21, (40,), generator=g)
    if layout == "transposed":
        x = x.T.contiguous().T  # same values, Fortran order
    elif layout == "kdim":
        x = x.reshape(8, 5, 21).permute(0, 2, 1)  # (N, C, d), strided
        t = t.reshape(8, 5)
    x_np = np.asarray(as_array(x, "input"))
    if dtype == "bfloat16":
        assert x_np.dtype == np.dtype(ml_dtypes.bfloat16)
    assert np.shares_memory(x_np, x_np) and x_np.__array_interface__["data"][0] == x.data_ptr()  # no copy
    ref_np = x_np.copy(order="K")  # the same memory order (Fortran stays Fortran: the same kernel path)
    loss, grad = fastce.cross_entropy_with_grad(x, t, reduction="none")
    rloss, rgrad = fastce.cross_entropy_with_grad(ref_np, t.numpy(), reduction="none")
    same_bits(loss, rloss)
    same_bits(grad, rgrad)
    same_bits(fastce.logsumexp(x, axis=1), fastce.logsumexp(ref_np, axis=1))


def test_jax_arrays_are_read():
    jnp = pytest.importorskip("jax.numpy")
    x = np.random.default_rng(1).standard_normal((16, 9)).astype(np.float32)
    t = np.arange(16) % 9
    same_bits(fastce.cross_entropy(jnp.asarray(x), jnp.asarray(t)), fastce.cross_entropy(x, t))
    s = fastce.score(jnp.asarray(x), jnp.asarray(t), top_k=(1, 3))
    assert s.tokens == 16 and s.correct == fastce.score(x, t, top_k=(1, 3)).correct


def test_tensor_that_requires_grad_is_refused():
    x = torch.randn(4, 3, requires_grad=True)
    with pytest.raises(TypeError, match=r"detach"):
        fastce.cross_entropy(x, torch.tensor([0, 1, 2, 0]))
    fastce.cross_entropy(x.detach(), torch.tensor([0, 1, 2, 0]))  # the remedy the message names


class _DeviceArray:
    """An array whose memory is not on the CPU: its DLPack export fails as a device array's does."""

    shape = (2, 3)
    dtype = "float32"

    def __dlpack__(self, *args, **kwargs):
        raise BufferError("the array is on device cuda:0")

    def __dlpack_device__(self):
        return (2, 0)


def test_device_array_is_refused():
    with pytest.raises(TypeError, match=r"CPU"):
        fastce.cross_entropy(_DeviceArray(), np.array([0, 1]))
    with pytest.raises(TypeError, match=r"CPU"):
        fastce.softmax(_DeviceArray())
