"""num_threads handling, ISA selection and show_config()/get_config()."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import fastce
from _ce_testutil import assert_close, make_case, ref, shape_id

CONFIG_KEYS = {"version", "openmp", "num_threads", "isas_compiled", "isas_available", "isa"}


def test_version():
    assert fastce.__version__ == "0.1.0"


THREAD_SHAPES = [(64, 7), (16, 17, 8), (4, 32000), (4, 423, 3, 3),
                 (1024, 1000), (8, 100, 256)]   # the last two are big enough to go parallel


@pytest.mark.parametrize("shape", THREAD_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_num_threads_same_result(isa, shape, dtype):
    C = shape[1]
    case = make_case(None, C, dtype, "index", "neg", True, "none", seed=7, shape=shape)
    x, t = case["x"], case["target"]
    yp = ref.softmax(x, 1).astype(dtype)
    # Thread counts may change the summation order (few long rows are split across threads and
    # their partial states merged), so results agree to rounding, relative to each array's scale.
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    results = {}
    for nt in (None, 1, 2):
        kw = dict(weight=case["weight"], ignore_index=case["ignore_index"], label_smoothing=0.1,
                  num_threads=nt)
        res = []
        for red in ("none", "mean", "sum"):
            res.append(fastce.cross_entropy(x, t, reduction=red, **kw))
            res.extend(fastce.cross_entropy_with_grad(x, t, reduction=red, **kw))
            res.extend(fastce.cross_entropy_with_grad(x, yp, reduction=red, **kw))
        res.append(fastce.CrossEntropyLoss(reduction="sum", num_threads=nt)(x, t))
        res.append(fastce.log_softmax(x, axis=1, num_threads=nt))
        res.append(fastce.softmax(x, axis=1, num_threads=nt))
        res.append(fastce.logsumexp(x, axis=1, num_threads=nt))
        res.append(fastce.nll_loss(res[-3], t, ignore_index=case["ignore_index"], num_threads=nt))
        results[nt] = res
    for nt in (1, 2):
        for i, (a, b) in enumerate(zip(results[None], results[nt])):
            a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
            finite = np.abs(a64[np.isfinite(a64)])
            scale = finite.max() if finite.size else 0.0
            np.testing.assert_allclose(a64, b64, equal_nan=True, rtol=rtol, atol=10 * rtol * scale,
                                       err_msg=f"isa={isa} result #{i} num_threads={nt} differs from None")
    r = ref.cross_entropy(x, t, weight=case["weight"], ignore_index=case["ignore_index"],
                          label_smoothing=0.1, reduction="mean")
    assert_close(results[2][5], r, dtype, "mean loss with num_threads=2")  # [5]: mean


@pytest.mark.parametrize("bad", [0, -1, -8])
def test_num_threads_value_error(bad):
    x = np.zeros((2, 3), np.float32)
    t = np.array([0, 1])
    with pytest.raises(ValueError):
        fastce.cross_entropy(x, t, num_threads=bad)
    with pytest.raises(ValueError):
        fastce.cross_entropy_with_grad(x, t, num_threads=bad)
    with pytest.raises(ValueError):
        fastce.log_softmax(x, num_threads=bad)
    with pytest.raises(ValueError):
        fastce.softmax(x, num_threads=bad)
    with pytest.raises(ValueError):
        fastce.logsumexp(x, num_threads=bad)
    with pytest.raises(ValueError):
        fastce.nll_loss(x, t, num_threads=bad)
    with pytest.raises(ValueError):
        fastce.CrossEntropyLoss(num_threads=bad)(x, t)


@pytest.mark.parametrize("bad", [1.5, 2.0, "2"])
def test_num_threads_type_error(bad):
    x = np.zeros((2, 3), np.float32)
    t = np.array([0, 1])
    with pytest.raises(TypeError):
        fastce.cross_entropy(x, t, num_threads=bad)
    with pytest.raises(TypeError):
        fastce.cross_entropy_with_grad(x, t, num_threads=bad)
    with pytest.raises(TypeError):
        fastce.softmax(x, num_threads=bad)
    with pytest.raises(TypeError):
        fastce.CrossEntropyLoss(num_threads=bad)(x, t)


def test_get_config_keys(isa):
    cfg = fastce.get_config()
    assert isinstance(cfg, dict)
    assert CONFIG_KEYS <= set(cfg), f"missing keys: {CONFIG_KEYS - set(cfg)}"
    assert cfg["version"] == fastce.__version__
    assert isinstance(cfg["openmp"], bool)
    assert isinstance(cfg["num_threads"], int) and cfg["num_threads"] >= 1
    assert isinstance(cfg["isas_compiled"], tuple) and isinstance(cfg["isas_available"], tuple)
    assert tuple(cfg["isas_available"]) == tuple(fastce.available_isas())
    assert set(cfg["isas_available"]) <= set(cfg["isas_compiled"])
    assert "scalar" in cfg["isas_available"]
    assert cfg["isa"] == isa == fastce.get_isa()


def test_show_config_prints(capsys, isa):
    ret = fastce.show_config()
    out = capsys.readouterr().out
    assert ret is None or isinstance(ret, (str, dict))
    assert fastce.__version__ in out
    assert isa in out
    assert out.strip(), "show_config() printed nothing"


def test_use_isa_restores_and_set_isa():
    before = fastce.get_isa()
    for name in fastce.available_isas():
        with fastce.use_isa(name):
            assert fastce.get_isa() == name
        assert fastce.get_isa() == before
    try:
        fastce.set_isa("scalar")
        assert fastce.get_isa() == "scalar"
    finally:
        fastce.set_isa(before)
    assert fastce.get_isa() == before
    with pytest.raises(Exception):
        fastce.set_isa("no-such-isa")
    assert fastce.get_isa() == before


def test_isas_give_consistent_results():
    case = make_case("NCd", 423, np.float64, "index", "neg", True, "mean", seed=1)
    vals = []
    for name in fastce.available_isas():
        with fastce.use_isa(name):
            vals.append(fastce.cross_entropy_with_grad(case["x"], case["target"],
                                                       weight=case["weight"]))
    for loss, grad in vals[1:]:
        np.testing.assert_allclose(loss, vals[0][0], rtol=1e-10)
        np.testing.assert_allclose(grad, vals[0][1], rtol=1e-10, atol=1e-12)


def test_env_fastce_isa_scalar_at_import():
    env = dict(os.environ, FASTCE_ISA="scalar")
    code = "import fastce; print(fastce.get_isa()); print(fastce.get_config()['isa'])"
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["scalar", "scalar"]


def test_omp_num_threads_respected():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    code = "import fastce; print(fastce.get_config()['num_threads'])"
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "1"


def test_reference_module_is_shipped():
    from fastce import reference

    x = np.array([[1.0, 2.0, 3.0]])
    assert np.isclose(reference.cross_entropy(x, np.array([2])), 0.40760596444438)
