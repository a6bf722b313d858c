"""`_blas_threads`: NumPy's OpenBLAS thread count, and the section in which it is 1.

The section is process-wide and shared: overlapping sections (nested, or in several threads)
keep the count at 1 until the last one ends, which restores the count from before the first.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from fastce import _blas_threads, _gemm


def _numpy_blas_name():
    try:
        return np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"].lower()
    except Exception:  # NumPy < 1.26 has no mode="dicts"
        return "unknown"


@pytest.fixture
def two_threads():
    """NumPy's OpenBLAS on 2 threads for the test (whatever the machine or environment set)."""
    if _blas_threads._FUNCS is None:
        if "openblas" in _numpy_blas_name() or _gemm.backend() == "numpy-cblas":
            pytest.fail("NumPy's OpenBLAS is loaded but its thread-count functions were not found")
        pytest.skip(f"NumPy's BLAS is {_numpy_blas_name()!r}, not OpenBLAS: nothing to control")
    get, put = _blas_threads._FUNCS
    before = get()
    put(2)
    yield
    put(before)


def test_blas_threads_reads_the_count(two_threads):
    assert _blas_threads.blas_threads() == 2


def test_section_sets_one_thread_and_restores(two_threads):
    with _blas_threads.single_threaded_blas():
        assert _blas_threads.blas_threads() == 1
        a = np.ones((64, 64))
        np.testing.assert_array_equal(a @ a, 64.0)  # the BLAS still works inside
    assert _blas_threads.blas_threads() == 2


def test_nested_sections_restore_once(two_threads):
    with _blas_threads.single_threaded_blas():
        with _blas_threads.single_threaded_blas():
            assert _blas_threads.blas_threads() == 1
        assert _blas_threads.blas_threads() == 1  # the outer section is still open
    assert _blas_threads.blas_threads() == 2


def test_section_restores_after_an_error(two_threads):
    with pytest.raises(KeyError):
        with _blas_threads.single_threaded_blas():
            raise KeyError("inside")
    assert _blas_threads.blas_threads() == 2
    assert _blas_threads._open == 0


def test_sections_in_two_threads_overlapping(two_threads):
    """A enters, B enters, A leaves (still 1: B is open), B leaves (2 again)."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with _blas_threads.single_threaded_blas():
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def b():
        a_in.wait(10)
        with _blas_threads.single_threaded_blas():
            b_in.set()
            a_out.wait(10)
            seen["after A left"] = _blas_threads.blas_threads()

    ts = [threading.Thread(target=f) for f in (a, b)]
    for th in ts:
        th.start()
    for th in ts:
        th.join(20)
    assert seen == {"after A left": 1}
    assert _blas_threads.blas_threads() == 2
