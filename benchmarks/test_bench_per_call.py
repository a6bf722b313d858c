"""pytest-benchmark: the per-call curve, time per loss+grad call against N*C (1e2 to 1e7).

The rows of the per-call table of ``fastce bench`` (workloads ``call-NxC``): fastce as users
call it, ``cross_entropy_with_grad(x, t)`` with default options and threads, beside the NumPy
twin and torch (forward + backward, ``torch.set_num_threads`` = fastce's default), one
benchmark group per shape. pytest-benchmark calibrates the number of calls per round itself.
``--bench-quick`` uses the reduced set (it keeps the issue's target row, 64x10).

    pytest benchmarks/test_bench_per_call.py --benchmark-only [--bench-quick]
"""

import pytest

from fastce import bench as B


def pytest_generate_tests(metafunc):
    if "call_workload" not in metafunc.fixturenames:
        return
    quick = metafunc.config.getoption("--bench-quick")
    workloads = B.QUICK_PER_CALL_WORKLOADS if quick else B.FULL_PER_CALL_WORKLOADS
    cases = [pytest.param(wl, name, id=f"{wl.name}-{name}")
             for wl in workloads for name in ("fastce", "numpy", "torch")]
    metafunc.parametrize("call_workload, library", cases)


def test_per_call(benchmark, call_workload, library, bench_data_cache):
    wl = call_workload
    cases = [c for c in B.per_call_cases() if c.name == library]
    if not cases:
        pytest.skip(f"{library} not installed")
    case, threads = cases[0], B.default_threads()
    data = bench_data_cache.get(wl)
    benchmark.group = f"per-call {wl.name} loss+grad threads={threads}"
    benchmark.name = library
    benchmark.extra_info.update(workload=wl.name, shape=list(wl.shape), numel=wl.numel,
                                threads=threads, library=library)
    with case.threads(threads):
        fn = case.prepare(wl, data, B.LOSS_GRAD, threads)
        assert B.loss_value(fn()) > 0  # warm-up
        benchmark(fn)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["us_per_call"] = stats.stats.median * 1e6
