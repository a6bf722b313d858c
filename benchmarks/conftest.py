"""pytest-benchmark suite for fastce (kept apart from tests/).

Run:   pytest benchmarks --benchmark-only
       pytest benchmarks --benchmark-only --bench-quick                # small workloads
       pytest benchmarks --benchmark-only --bench-threads 1 -k 4096x32000
       pytest benchmarks --benchmark-only --benchmark-json out.json     # machine-readable

Workloads and per-library implementations come from ``fastce.bench`` (the
same ones ``fastce bench`` uses); each benchmark group is one
(workload, pass, threads) cell so the libraries sit side by side.
"""

import os

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_addoption(parser):
    group = parser.getgroup("fastce-bench")
    group.addoption("--bench-threads", default="all",
                    help="thread count for every library: an integer or 'all' (default: all cores)")
    group.addoption("--bench-quick", action="store_true",
                    help="use the reduced workload set of `fastce bench --quick`")


def _bench_dir_requested(config):
    """True when benchmarks/ (or a file in it) was named on the command line."""
    for arg in config.args:
        path = os.path.abspath(str(arg).split("::", 1)[0])
        if path == _HERE or path.startswith(_HERE + os.sep):
            return True
    return False


def pytest_collection_modifyitems(config, items):
    # Never run these (slow) benchmarks as a side effect of a bare `pytest` at
    # the repository root: they run only when benchmarks/ is named explicitly.
    if _bench_dir_requested(config):
        return
    skip = pytest.mark.skip(reason="benchmarks: run `pytest benchmarks --benchmark-only`")
    for item in items:
        if os.path.abspath(str(item.fspath)).startswith(_HERE + os.sep):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def bench_threads(request):
    from fastce import bench

    return bench.parse_threads(request.config.getoption("--bench-threads"))[0]


@pytest.fixture(scope="session")
def bench_data_cache():
    """Generates each workload's arrays once; keeps only the latest in memory."""
    from fastce import bench

    cache = bench.DataCache()
    yield cache
    cache.clear()
