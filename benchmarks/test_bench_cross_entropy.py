"""Side-by-side benchmarks: fastce vs torch vs NumPy vs JAX (vs scikit-learn).

One benchmark group per (workload, pass, threads); see conftest.py for how to
run.  Throughput (G logits/s) is stored in each benchmark's ``extra_info``.
"""

import pytest

from fastce import bench as B


def pytest_generate_tests(metafunc):
    if "workload" not in metafunc.fixturenames:
        return
    quick = metafunc.config.getoption("--bench-quick")
    workloads = B.QUICK_WORKLOADS if quick else B.FULL_WORKLOADS
    # Workload outermost so consecutive tests reuse the cached arrays.
    cases = [
        pytest.param(wl, pass_, peer, id=f"{wl.name}-{pass_}-{peer}")
        for wl in workloads
        for pass_ in B.PASSES
        for peer in B.PEER_NAMES
    ]
    metafunc.parametrize("workload, pass_, library", cases)


def test_cross_entropy(benchmark, workload, pass_, library, bench_threads, bench_data_cache):
    peer = B.get_peer(library)
    for mod in peer.requires:
        pytest.importorskip(mod)
    reason = peer.unsupported(workload, pass_, bench_threads, B.all_threads())
    if reason:
        pytest.skip(f"{library}: not supported here ({reason})")
    avail = B.available_memory()
    if avail is not None and peer.memory_needed(workload, pass_) > 0.7 * avail:
        pytest.skip(f"{library}: would need too much memory")

    data = bench_data_cache.get(workload)
    benchmark.group = f"{workload.name} {pass_} threads={bench_threads}"
    benchmark.name = library
    benchmark.extra_info.update(
        workload=workload.name, shape=list(workload.shape), dtype=workload.dtype,
        label_smoothing=workload.label_smoothing, weighted=workload.weighted,
        threads=bench_threads, library=library, numel=workload.numel,
    )
    with peer.threads(bench_threads):
        fn = peer.prepare(workload, data, pass_, bench_threads)
        result = fn()  # warm-up (and JIT compilation for JAX)
        assert B.loss_value(result) > 0
        del result
        benchmark(fn)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["glogits_per_s"] = workload.numel / stats.stats.median / 1e9
