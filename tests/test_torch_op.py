"""fastce.torch: cross_entropy / CrossEntropyLoss on torch tensors with autograd, as the operator
fastce::cross_entropy (opcheck, torch.compile) and through the eager autograd.Function.

Oracle: torch.nn.functional.cross_entropy and its autograd, in float64 for the 2-byte dtypes
(torch's own float16 / bfloat16 arithmetic is the larger error there)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # CI installs torch (FASTCE_REQUIRE_TORCH there)
pytest.importorskip("ml_dtypes")
import torch.nn.functional as F  # noqa: E402

import fastce.torch as fct  # noqa: E402

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
TOL = {torch.float64: (1e-10, 1e-12), torch.float32: (2e-5, 1e-6), torch.float16: (4e-3, 2e-4),
       torch.bfloat16: (2e-2, 2e-3)}
OPTIONS = [dict(), dict(reduction="sum", label_smoothing=0.1), dict(reduction="none", weighted=True),
           dict(ignore_index=1, weighted=True, label_smoothing=0.2)]


def _case(dtype, shape, opts, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 3).to(dtype)
    C = shape[1] if len(shape) > 1 else shape[0]
    tshape = (shape[0],) + tuple(shape[2:]) if len(shape) > 1 else ()
    t = torch.randint(0, C, tshape, generator=g)
    kw = {k: v for k, v in opts.items() if k != "weighted"}
    if opts.get("weighted"):
        kw["weight"] = (torch.rand(C, generator=g, dtype=torch.float64) + 0.5).to(dtype if dtype != torch.float16 else torch.float32)
    return x, t, kw


def _loss_and_grad(fn, x, t, kw, scale=1.0):
    x = x.detach().clone().requires_grad_()
    loss = fn(x, t, **kw)
    (loss.sum() * scale).backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(13, 37), (4, 9, 5), (37,)], ids=["NC", "NCd", "C"])
@pytest.mark.parametrize("opts", OPTIONS, ids=["mean", "sum-ls", "none-w", "ignore-w-ls"])
def test_matches_torch(dtype, shape, opts):
    x, t, kw = _case(dtype, shape, opts)
    if len(shape) == 1 and "ignore_index" in kw:
        kw["ignore_index"] = -100
    loss, grad = _loss_and_grad(fct.cross_entropy, x, t, kw, scale=1.5)
    assert loss.dtype == dtype and grad.dtype == dtype and grad.shape == x.shape
    kw64 = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    rloss, rgrad = _loss_and_grad(F.cross_entropy, x.double(), t, kw64, scale=1.5)
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(loss.double(), rloss, rtol=rtol, atol=atol)
    torch.testing.assert_close(grad.double(), rgrad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_strided_inputs_and_probability_targets(dtype):
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(11, 30, generator=g, dtype=torch.float64) * 2).to(dtype)[:, ::2]  # strided view
    p = torch.softmax(torch.randn(11, 15, generator=g, dtype=torch.float64), 1).to(dtype)
    for target in (torch.randint(0, 15, (11,), generator=g, dtype=torch.int32), p):
        loss, grad = _loss_and_grad(fct.cross_entropy, x, target, {})
        rloss, rgrad = _loss_and_grad(F.cross_entropy, x.double(), target.double() if target.is_floating_point()
                                      else target.long(), {})
        rtol, atol = TOL[dtype]
        torch.testing.assert_close(loss.double(), rloss, rtol=rtol, atol=atol)
        torch.testing.assert_close(grad.double(), rgrad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("opts", OPTIONS + [dict(z_loss=1e-2)], ids=["mean", "sum-ls", "none-w", "ignore-w-ls", "zloss"])
def test_gradcheck(opts):
    x, t, kw = _case(torch.float64, (5, 6, 3), opts, seed=2)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: fct.cross_entropy(x, t, **kw), (x,))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_opcheck(reduction):
    x, t, _ = _case(torch.float64, (6, 7), {}, seed=3)
    op = torch.ops.fastce.cross_entropy.default
    torch.library.opcheck(op, (x.requires_grad_(), t, None, -100, reduction, 0.1, 0.0, None, True))
    torch.library.opcheck(op, (x.detach(), t, None, -100, reduction, 0.0, 0.0, None, False))


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_torch_compile_fullgraph(reduction):
    x, t, _ = _case(torch.float64, (8, 9), {}, seed=5)
    f = torch.compile(lambda x, t: fct.cross_entropy(x, t, reduction=reduction), fullgraph=True, backend="aot_eager")
    loss, grad = _loss_and_grad(lambda x, t: f(x, t), x, t, {}, scale=2.0)
    rloss, rgrad = _loss_and_grad(F.cross_entropy, x, t, dict(reduction=reduction), scale=2.0)
    torch.testing.assert_close(loss, rloss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, rgrad, rtol=1e-12, atol=1e-12)


def test_training_loop_matches_nn_cross_entropy_step_for_step():
    torch.manual_seed(0)
    data = torch.randn(64, 20, dtype=torch.float64)
    labels = torch.randint(0, 7, (64,))
    models = [torch.nn.Linear(20, 7, dtype=torch.float64) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    losses = []
    for model, loss_fn in zip(models, (fct.CrossEntropyLoss(label_smoothing=0.05), torch.nn.CrossEntropyLoss(label_smoothing=0.05))):
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        run = []
        for step in range(25):
            batch = slice((step * 16) % 64, (step * 16) % 64 + 16)
            opt.zero_grad()
            loss = loss_fn(model(data[batch]), labels[batch])
            loss.backward()
            opt.step()
            run.append(loss.item())
        losses.append(run)
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-10)
    assert losses[0][-1] < losses[0][0]


def test_no_grad_forward_and_inference():
    x, t, _ = _case(torch.float32, (10, 12), {})
    with torch.no_grad():
        loss = fct.cross_entropy(x.requires_grad_(), t)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, F.cross_entropy(x.detach(), t))


def test_bad_input():
    x, t, _ = _case(torch.float32, (4, 5), {})
    with pytest.raises(TypeError, match="CPU"):
        fct.cross_entropy(x.to("meta"), t.to("meta"))
    p = torch.softmax(torch.randn(4, 5), 1).requires_grad_()
    with pytest.raises(TypeError, match="target requires grad"):
        fct.cross_entropy(x, p)
    with pytest.raises(IndexError, match="Target 9 is out of bounds"):
        fct.cross_entropy(x, torch.tensor([0, 9, 1, 2]))
    with pytest.raises(ValueError, match="reduction"):
        fct.cross_entropy(x, t, reduction="avg")
    with pytest.raises(TypeError, match="deprecated"):
        fct.CrossEntropyLoss(size_average=True)


def test_import_fastce_does_not_import_torch():
    code = "import sys, fastce; assert 'torch' not in sys.modules; import fastce.torch; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("first", ["fastce", "torch"])
def test_one_openmp_runtime_with_torch(first):
    """fastce and torch share one OpenMP runtime in a process, whichever is imported first (both
    link libgomp.so.1 by that soname, which the loader maps once): no second thread pool."""
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/maps")
    code = f"""
import numpy as np
import {first}
import fastce, torch, fastce.torch
x = torch.randn(512, 3000, requires_grad=True)
fastce.torch.cross_entropy(x, torch.randint(0, 3000, (512,)), num_threads=2).backward()
torch.nn.functional.cross_entropy(x, torch.randint(0, 3000, (512,))).backward()
fastce.cross_entropy(np.zeros((512, 3000), np.float32), np.zeros(512, np.int64), num_threads=2)
libs = {{l.split()[-1] for l in open('/proc/self/maps') if 'gomp' in l or 'iomp' in l}}
assert len(libs) == 1, libs
"""
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_cross_entropy_matches_torch(dtype, reduction, bias):
    g = torch.Generator().manual_seed(8)
    x = torch.randn(9, 6, generator=g, dtype=dtype, requires_grad=True)
    W = torch.randn(11, 6, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(11, generator=g, dtype=dtype, requires_grad=True) if bias else None
    t = torch.randint(0, 11, (9,), generator=g)
    t[2] = -100
    params = [p for p in (x, W, b) if p is not None]
    out = []
    for fn in (fct.linear_cross_entropy, F.linear_cross_entropy):
        loss = fn(x, W, t, linear_bias=b, reduction=reduction, label_smoothing=0.1)
        (loss.sum() * 1.5).backward()
        out.append((loss.detach(), [p.grad.clone() for p in params]))
        for p in params:
            p.grad = None
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(out[0][0], out[1][0], rtol=rtol, atol=atol)
    for a, r in zip(out[0][1], out[1][1]):
        torch.testing.assert_close(a, r, rtol=rtol, atol=atol)
    with torch.no_grad():
        torch.testing.assert_close(fct.linear_cross_entropy(x, W, t, linear_bias=b), F.linear_cross_entropy(x, W, t, linear_bias=b),
                                   rtol=rtol, atol=atol)


def _linear_problem(dtype=torch.float64, n=9, h=6, v=11, bias=True, seed=8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, generator=g, dtype=dtype, requires_grad=True)
    W = torch.randn(v, h, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(v, generator=g, dtype=dtype, requires_grad=True) if bias else None
    t = torch.randint(0, v, (n,), generator=g)
    t[2] = -100
    return x, W, b, t


def _linear_grads(fn, x, W, b, t, grad_output, **kw):
    params = [p for p in (x, W, b) if p is not None]
    loss = fn(x, W, t, linear_bias=b, **kw)
    loss.backward(grad_output)
    grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return loss.detach(), grads


def _assert_same(got, want):
    torch.testing.assert_close(got[0], want[0])
    assert len(got[1]) == len(want[1])
    for a, r in zip(got[1], want[1]):
        torch.testing.assert_close(a, r)


def _compiled_linear(**kw):
    return torch.compile(lambda x, W, t, linear_bias: fct.linear_cross_entropy(x, W, t, linear_bias=linear_bias, **kw),
                         fullgraph=True, backend="aot_eager")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("compiled", [False, True])
def test_linear_cross_entropy_none_per_row_grad_output(bias, compiled):
    """reduction='none' with a different grad_output per row (not a uniform scale of the saved
    gradients): the fused pass runs again with it, eager and under torch.compile."""
    x, W, b, t = _linear_problem(bias=bias)
    go = torch.linspace(-1.0, 2.0, 9, dtype=torch.float64)
    kw = dict(reduction="none", label_smoothing=0.1)
    fn = _compiled_linear(**kw) if compiled else (lambda x, W, t, linear_bias: fct.linear_cross_entropy(
        x, W, t, linear_bias=linear_bias, **kw))
    _assert_same(_linear_grads(fn, x, W, b, t, go), _linear_grads(F.linear_cross_entropy, x, W, b, t, go, **kw))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_linear_torch_compile_fullgraph(reduction):
    x, W, b, t = _linear_problem()
    go = torch.tensor(1.5, dtype=x.dtype)
    _assert_same(_linear_grads(_compiled_linear(reduction=reduction), x, W, b, t, go),
                 _linear_grads(F.linear_cross_entropy, x, W, b, t, go, reduction=reduction))
    with pytest.raises(Exception, match="num_threads"):
        torch.compile(lambda x: fct.linear_cross_entropy(x, W, t, num_threads=1), fullgraph=True,
                      backend="aot_eager")(x)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_linear_opcheck(reduction):
    x, W, b, t = _linear_problem(dtype=torch.float32, n=5, h=4, v=7)
    op = torch.ops.fastce.linear_cross_entropy.default
    torch.library.opcheck(op, (x, W, t, b, None, -100, reduction, 0.1, True))
    torch.library.opcheck(op, (x.detach(), W.detach(), t, None, None, -100, reduction, 0.0, False))
    go = torch.ones(5) if reduction == "none" else torch.tensor(1.0)
    torch.library.opcheck(torch.ops.fastce.linear_cross_entropy_backward.default,
                          (go, x.detach(), W.detach(), t, b.detach(), None, -100, reduction, 0.0))
