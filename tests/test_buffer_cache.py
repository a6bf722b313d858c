"""The cache of large output buffers (fastce._buffer_cache, include/fastce/buffer_cache.h).

A released gradient / softmax output of at least 16 MiB is kept and handed to the next output
of a size it can serve. These tests pin down that memory is reused only after NumPy released
it (never shared by live arrays, views included), that results stay right, that the slots and
the byte limit hold, that the controls (set_cache_limit, empty_cache, FASTCE_CACHE_MB) do what
they say, and that the arrays are ordinary ndarrays.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastce

MIB = 2**20
ROWS, C = 2048, 4400  # 36 MB of float32: 2/3 of it is still above the cache's 16 MiB minimum


@pytest.fixture
def cache():
    """A known, empty cache with a 1 GiB limit; the previous limit is restored afterwards."""
    old = fastce.cache_info()["limit"]
    fastce.set_cache_limit(1 << 30)
    fastce.empty_cache()
    yield
    fastce.set_cache_limit(old)
    fastce.empty_cache()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((ROWS, C)).astype(np.float32)
    t = rng.integers(0, C, ROWS)
    want = np.empty_like(x)
    loss = fastce.cross_entropy_with_grad(x, t, out=want)[0]
    return x, t, loss, want


def _grad(data):
    x, t, _, _ = data
    return fastce.cross_entropy_with_grad(x, t)[1]


def test_released_gradient_is_reused_and_right(cache, data):
    x, t, loss, want = data
    g1 = _grad(data)
    ptr = g1.ctypes.data
    del g1
    assert fastce.cache_info()["cached_blocks"] == 1
    hits = fastce.cache_info()["hits"]
    g1 = np.full_like(x, np.nan)  # a small unrelated allocation in between
    del g1
    loss2, g2 = fastce.cross_entropy_with_grad(x, t)
    assert g2.ctypes.data == ptr, "the released block was not reused"
    assert fastce.cache_info()["hits"] == hits + 1
    assert fastce.cache_info()["cached_blocks"] == 0
    assert loss2 == loss
    np.testing.assert_array_equal(g2, want)


def test_live_arrays_and_views_never_share(cache, data):
    g1 = _grad(data)
    keep = g1.copy()
    view = g1[5:, ::3]
    del g1  # the view keeps the gradient's memory alive: it must not be cached
    assert fastce.cache_info()["cached_blocks"] == 0
    g2 = _grad(data)
    g2[...] = -7.0
    assert not np.shares_memory(view, g2)
    np.testing.assert_array_equal(view, keep[5:, ::3])
    g3 = _grad(data)
    assert not np.shares_memory(g2, g3) and not np.shares_memory(view, g3)
    np.testing.assert_array_equal(g3, data[3])


def test_outputs_are_ordinary_arrays(cache, data):
    x, t, _, want = data
    for _ in range(2):  # fresh memory, then cached memory
        g = _grad(data)
        assert g.flags.owndata and g.base is None and g.flags.writeable and g.flags.c_contiguous
        assert g.dtype == np.float32 and g.shape == x.shape
        del g
    xf = np.asfortranarray(x)
    for _ in range(2):
        gf = fastce.cross_entropy_with_grad(xf, t)[1]
        assert gf.flags.f_contiguous and gf.flags.owndata
        np.testing.assert_allclose(gf, want, rtol=1e-6, atol=1e-9)
        del gf


def test_slots_limit_and_size_match(cache, data):
    x, t, _, _ = data
    slots = fastce.cache_info()["max_blocks"]
    assert slots == 4
    gs = [_grad(data) for _ in range(slots + 1)]
    del gs
    info = fastce.cache_info()
    assert info["cached_blocks"] == slots
    assert info["cached_bytes"] == slots * x.nbytes
    # a request much smaller than every cached block does not take one
    misses = fastce.cache_info()["misses"]
    half = fastce.cross_entropy_with_grad(x[: ROWS * 2 // 3], t[: ROWS * 2 // 3])[1]
    assert fastce.cache_info()["misses"] == misses + 1
    assert fastce.cache_info()["cached_blocks"] == slots
    del half
    # a limit below the cached total drops the oldest blocks
    fastce.set_cache_limit(x.nbytes + MIB)
    assert fastce.cache_info()["cached_blocks"] == 1
    assert fastce.cache_info()["cached_bytes"] <= x.nbytes + MIB


def test_small_outputs_bypass_the_cache(cache):
    x = np.zeros((16, 100), np.float32)
    before = fastce.cache_info()
    for _ in range(3):
        g = fastce.cross_entropy_with_grad(x, np.zeros(16, np.int64))[1]
        del g
    info = fastce.cache_info()
    assert info["cached_blocks"] == 0
    assert (info["hits"], info["misses"]) == (before["hits"], before["misses"])


def test_limit_zero_disables_and_empty_cache_frees(cache, data):
    g = _grad(data)
    del g
    assert fastce.cache_info()["cached_bytes"] == data[0].nbytes
    assert fastce.empty_cache() == data[0].nbytes
    assert fastce.cache_info()["cached_bytes"] == 0
    fastce.set_cache_limit(0)
    g = _grad(data)
    del g
    assert fastce.cache_info()["cached_blocks"] == 0
    np.testing.assert_array_equal(_grad(data), data[3])


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")
def test_empty_cache_returns_memory_to_the_os(cache, data):
    page = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    g = _grad(data)
    del g
    before = rss()
    freed = fastce.empty_cache()
    assert freed == data[0].nbytes
    assert before - rss() > 0.9 * freed


def test_softmax_outputs_use_the_cache(cache, data):
    x = data[0]
    s = fastce.softmax(x, axis=1)
    ptr = s.ctypes.data
    want = s.copy()
    del s
    s2 = fastce.softmax(x, axis=1)
    assert s2.ctypes.data == ptr
    np.testing.assert_array_equal(s2, want)


def test_threads_reuse_without_sharing(cache, data):
    """Four threads drop and take cached blocks concurrently; every gradient must stay right
    while it is alive, which fails if two live gradients ever share memory."""
    x, t, _, want = data
    errors = []

    def work():
        try:
            for _ in range(6):
                g = fastce.cross_entropy_with_grad(x, t, num_threads=1)[1]
                g2 = fastce.cross_entropy_with_grad(x, t, num_threads=1)[1]
                if not (np.array_equal(g, want) and np.array_equal(g2, want)):
                    errors.append("wrong gradient")
                if np.shares_memory(g, g2):
                    errors.append("two live gradients share memory")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[:3]
    assert fastce.cache_info()["hits"] > 0


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (1.5, TypeError), ("1", TypeError),
                                      (True, TypeError), (None, TypeError)])
def test_set_cache_limit_rejects_bad_values(bad, exc):
    with pytest.raises(exc, match="nbytes"):
        fastce.set_cache_limit(bad)


def _probe(env_value):
    env = dict(os.environ, FASTCE_CACHE_MB=env_value)
    code = "import fastce; print(fastce.cache_info()['limit'])"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_env_limit():
    assert _probe("0").stdout.strip() == "0"
    assert _probe("64").stdout.strip() == str(64 * MIB)
    bad = _probe("lots")
    assert bad.returncode != 0 and "FASTCE_CACHE_MB must be a number of MiB >= 0" in bad.stderr


def test_linear_head_gradients_reuse_released_memory(cache):
    """linear_cross_entropy_with_grad's grad_linear_weight (and grad_input) come from the
    cache: never memory a live result holds, and right whichever memory they got."""
    rng = np.random.default_rng(4)
    N, H, V = 8, 1024, 4608  # grad_linear_weight 18 MiB: cached; the rest small
    x = rng.standard_normal((N, H)).astype(np.float32)
    W = (0.05 * rng.standard_normal((V, H))).astype(np.float32)
    t = rng.integers(0, V, N)
    first = fastce.linear_cross_entropy_with_grad(x, W, t)
    kept = first[2].copy()
    second = fastce.linear_cross_entropy_with_grad(x, W, t)
    assert not np.shares_memory(first[2], second[2])  # both alive: distinct memory
    hits = fastce.cache_info()["hits"]
    del first
    third = fastce.linear_cross_entropy_with_grad(x, W, t)
    assert fastce.cache_info()["hits"] == hits + 1  # took the released gradient's memory
    np.testing.assert_array_equal(third[2], kept)
    np.testing.assert_array_equal(second[2], kept)
    third[2][...] = np.nan  # the caller owns it; the other result is untouched
    np.testing.assert_array_equal(second[2], kept)
