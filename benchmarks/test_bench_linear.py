"""pytest-benchmark: linear + cross-entropy (LM head), fastce vs NumPy matmul(s) vs torch.

The cases of the linear table of ``fastce bench`` (``fastce.bench.LINEAR_CASES``), one
benchmark group per (workload, pass), so that fastce sits beside its yardstick: one NumPy
matmul ``x @ W.T`` (forward) or the three matmuls of the gradients (loss+grad). The unit is
seconds per call; full-size calls take seconds, so each case runs pedantically (1 warm-up,
3 rounds). ``--bench-quick`` uses the small workload and leaves out torch's chunked options.

    pytest benchmarks/test_bench_linear.py --benchmark-only
    pytest benchmarks/test_bench_linear.py --benchmark-only --bench-quick
"""

import pytest

from fastce import bench as B


def _slug(text):
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").replace("--", "-")


def pytest_generate_tests(metafunc):
    if "lin_workload" not in metafunc.fixturenames:
        return
    quick = metafunc.config.getoption("--bench-quick")
    workloads = B.QUICK_LINEAR_WORKLOADS if quick else B.FULL_LINEAR_WORKLOADS
    cases = [
        pytest.param(wl, case, id=f"{wl.name}-{case.pass_}-{_slug(case.name)}")
        for wl in workloads
        for case in B.LINEAR_CASES
        if not (quick and case.slow)
    ]
    metafunc.parametrize("lin_workload, lin_case", cases)


def test_linear_cross_entropy(benchmark, lin_workload, lin_case, bench_threads, bench_data_cache):
    wl, case = lin_workload, lin_case
    for mod in case.requires:
        pytest.importorskip(mod)
    why = case.unavailable()
    if why:
        pytest.skip(why)
    avail = B.available_memory()
    if avail is not None and case.memory_needed(wl, case.pass_) > 0.7 * avail:
        pytest.skip("would need too much memory")
    data = bench_data_cache.get(wl)
    benchmark.group = f"linear {wl.name} {case.pass_} threads={bench_threads}"
    benchmark.name = case.name
    benchmark.extra_info.update(workload=wl.name, N=wl.N, H=wl.H, V=wl.V, dtype=wl.dtype,
                                threads=bench_threads, library=case.library, baseline=case.baseline,
                                pass_=case.pass_)
    with case.threads(bench_threads):
        fn = case.prepare(wl, data, case.pass_, bench_threads)
        result = fn()  # warm-up
        if result:
            assert B.loss_value(result) > 0
        del result
        benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=0)
