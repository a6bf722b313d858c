"""pytest configuration for fastce.

* ``isa`` fixture: every test that uses it runs once per ISA in
  ``fastce.available_isas()`` inside ``with fastce.use_isa(name):`` so the
  scalar / avx2 / avx512 kernels are each exercised.
* Hypothesis profile "fastce": modest example counts (env FASTCE_HYPOTHESIS_EXAMPLES, default 80), no deadline.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:  # fastce may not be built yet: the reference/torch tests still run
    import fastce  # noqa: E402

    _ISAS = tuple(fastce.available_isas())
    _IMPORT_ERROR = None
except Exception as exc:  # pragma: no cover - only when the build is missing
    fastce = None
    _ISAS = ("fastce-not-importable",)
    _IMPORT_ERROR = exc

try:
    from hypothesis import HealthCheck, settings

    _derandomize = os.environ.get("FASTCE_HYPOTHESIS_RANDOM", "") == ""
    _extra = {"database": None} if _derandomize else {}
    settings.register_profile(
        "fastce",
        max_examples=int(os.environ.get("FASTCE_HYPOTHESIS_EXAMPLES", "80")),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        derandomize=_derandomize,   # reproducible CI runs; FASTCE_HYPOTHESIS_RANDOM=1 to explore
        print_blob=True,
        **_extra,
    )
    settings.load_profile("fastce")
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(params=_ISAS)
def isa(request):
    """Run the test with ``fastce.use_isa(name)`` active; yields the name."""
    if fastce is None:
        pytest.fail(f"`import fastce` failed: {_IMPORT_ERROR!r}")
    name = request.param
    with fastce.use_isa(name):
        assert fastce.get_isa() == name
        yield name


@pytest.fixture
def fc():
    """The fastce module (fails, rather than skips, when it cannot be imported)."""
    if fastce is None:
        pytest.fail(f"`import fastce` failed: {_IMPORT_ERROR!r}")
    return fastce


def pytest_report_header(config):
    if fastce is None:
        return f"fastce: NOT importable ({_IMPORT_ERROR!r})"
    return f"fastce {getattr(fastce, '__version__', '?')}, ISAs under test: {', '.join(_ISAS)}"
