"""Accuracy of the kernels' own vector exp and log, per ISA, measured in ulps.

The kernels take exp of x - max(x) <= 0 (and, in the fused sweep, of values up to +64 above a
running max), and log of sums of exponentials >= 1. The sweeps cover those ranges densely and
compare with a correctly rounded reference (float64 math rounded to float32; long double math
rounded to float64). The bound asserted is the one the headers state: at most 2 ulp; the
float32 exp (measured 0.87 ulp over this sweep on AVX-512, 0.93 on AVX2, whose table form
differs, and 0.50 scalar) is held to 1 ulp.
"""
import numpy as np
import pytest

import fastce
from fastce import _kernels, _runtime

ISAS = fastce.available_isas()


def ulp_error(got, ref_hi, dtype):
    """|got - ref| in units of the last place of the correctly rounded reference."""
    ref = ref_hi.astype(dtype)
    spacing = np.spacing(np.abs(ref)).astype(np.float64)
    # Subnormal results: one ulp is the smallest subnormal.
    spacing = np.maximum(spacing, np.finfo(dtype).smallest_subnormal)
    return np.abs(got.astype(np.float64) - ref_hi.astype(np.float64)) / spacing


def run(isa, func, x):
    return _kernels.vector_math(_runtime._ISA_IDS[isa], func, np.ascontiguousarray(x))


@pytest.mark.parametrize("isa", ISAS)
def test_exp_float32_sweep(isa):
    # A dense grid over [-104, 0] (x - max), [0, 64] (the fused sweep's range), and tiny |x|.
    xs = np.concatenate([
        np.linspace(-104, 0, 4_000_001, dtype=np.float32),
        np.linspace(0, 64, 1_000_001, dtype=np.float32),
        -np.logspace(-30, 0, 100_001).astype(np.float32),
    ])
    got = run(isa, "exp", xs)
    ref = np.exp(xs.astype(np.float64))
    err = ulp_error(got, ref, np.float32)
    assert err.max() <= 1.0, (isa, float(err.max()), float(xs[err.argmax()]))


@pytest.mark.parametrize("isa", ISAS)
def test_exp_float64_sweep(isa):
    xs = np.concatenate([
        np.linspace(-745, 0, 2_000_001),
        np.linspace(0, 64, 500_001),
        -np.logspace(-300, 0, 100_001),
    ])
    got = run(isa, "exp", xs)
    ref = np.exp(xs.astype(np.longdouble))
    err = ulp_error(got, ref, np.float64)
    assert err.max() <= 2.0, (isa, float(err.max()), float(xs[err.argmax()]))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_special_values(isa, dtype):
    x = np.array([-np.inf, np.inf, np.nan, 0.0, -0.0, -1e30, 1e30, -200.0, -1000.0, 710.0, 89.0], dtype=dtype)
    got = run(isa, "exp", x)
    with np.errstate(over="ignore"):
        ref = np.exp(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(got[~np.isnan(ref)], ref[~np.isnan(ref)])


@pytest.mark.parametrize("isa", ISAS)
def test_log_float32_sweep(isa):
    # The kernels take log of sums in [1, C * e^64]; sweep [1, 1e30] densely in log space.
    xs = np.concatenate([
        np.linspace(1, 4, 2_000_001, dtype=np.float32),
        np.logspace(0, 30, 2_000_001).astype(np.float32),
    ])
    got = run(isa, "log", xs)
    ref = np.log(xs.astype(np.float64))
    err = ulp_error(got, ref, np.float32)
    # log(1) = 0 exactly; near 1 the result is tiny and its ulp tiny: compare absolutely there.
    ok = (err <= 2.0) | (np.abs(got - ref) <= 2 * np.spacing(np.float32(1)) * np.abs(xs - 1))
    assert ok.all(), (isa, float(err[~ok].max()), float(xs[~ok][0]))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_special_values(isa, dtype):
    x = np.array([0.0, 1.0, np.inf, np.nan, -1.0, 2.0, 1e30], dtype=dtype)
    got = run(isa, "log", x)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = np.log(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=1e-6)



def _float32_between(a, b, stride=1):
    """Every stride-th float32 from a to b (same sign, |a| <= |b|), by bit pattern."""
    lo, hi = (int(np.array(v, np.float32).view(np.uint32)) for v in (a, b))
    return np.arange(lo, hi + 1, stride, dtype=np.uint32).view(np.float32)


@pytest.mark.parametrize("isa", ISAS)
def test_exp_lane_does_not_depend_on_its_neighbours(isa):
    # The float exp has a fast path for vectors whose lanes are all in [-86.5, 88], and a general
    # one (clamps, two-factor 2^n) for any other vector. Both must give the same bits: each x is
    # computed once among in-range neighbours and once in a vector that also holds a NaN.
    xs = np.concatenate([
        _float32_between(-0.0, -110.0, stride=101), _float32_between(0.0, 100.0, stride=101),
        _float32_between(-86.4, -86.6), _float32_between(86.4, 88.1),  # both edges, every float
    ])
    width = 16  # a multiple of every ISA's float vector width
    xs = xs[: xs.size // width * width]
    plain = run(isa, "exp", xs).reshape(-1, width)
    for nan_lane in (0, 1):
        mixed = xs.copy().reshape(-1, width)
        mixed[:, nan_lane] = np.nan
        got = run(isa, "exp", mixed.ravel()).reshape(-1, width)
        keep = np.arange(width) != nan_lane
        same = got[:, keep].view(np.uint32) == plain[:, keep].view(np.uint32)
        same |= np.isnan(got[:, keep]) & np.isnan(plain[:, keep])
        bad = np.flatnonzero(~same.all(axis=1))
        assert bad.size == 0, (isa, nan_lane, xs.reshape(-1, width)[bad[:3]])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype,threshold", [(np.float32, -87.0), (np.float64, -708.0)])
def test_exp_flush_is_exp_above_the_threshold_and_zero_below(isa, dtype, threshold):
    """The kernels' exp: exp's very bits at and above the threshold (where results are normal),
    +0 below it (where exp is subnormal or 0: no subnormal is formed, so no microcode assist),
    NaN and +-inf kept. Each vector mixes lanes on both sides, so both code paths of a vector run."""
    rng = np.random.default_rng(1)
    lo = threshold * (1.25 if dtype == np.float32 else 1.06)
    x = np.concatenate([
        np.linspace(lo, 0.0, 200_001), rng.uniform(lo, 60, 100_000),
        np.nextafter(np.array([threshold] * 3), [-np.inf, 0.0, np.inf]),
        [np.nan, -np.inf, np.inf, -0.0, 0.0, 88.0 if dtype == np.float32 else 700.0],
    ]).astype(dtype)
    rng.shuffle(x)
    got = run(isa, "exp_flush", x)
    exact = run(isa, "exp", x)
    keep = ~(x < threshold)
    np.testing.assert_array_equal(got[keep], exact[keep])
    assert np.all(got[~keep] == 0) and not np.any(np.signbit(got[~keep]))
    assert np.all(np.isnan(got[np.isnan(x)]))
    assert np.all(got[np.isposinf(x)] == np.inf) and np.all(got[np.isneginf(x)] == 0)
    assert np.all(exact[keep & np.isfinite(x)] >= np.finfo(dtype).tiny)  # normal where kept


def _bounded_exp_inputs(dtype):
    """x <= 88 as the bounded exps see it: float32, every float in [-105, -80] (across the flush
    threshold) and in [32, 88] (up to the bound) and a dense grid between; float64, a grid over
    [-760, 88] and around its threshold. With NaN, -inf and -1e30, shuffled so that each vector
    mixes lanes from all of them."""
    rng = np.random.default_rng(2)
    if dtype == np.float32:
        def every(a, b):  # every float32 in [a, b], a and b of one sign
            lo, hi = sorted(np.array([a, b], dtype=np.float32).view(np.uint32))
            return np.arange(lo, hi + np.uint32(1), dtype=np.uint32).view(np.float32)
        x = np.concatenate([every(-105.0, -80.0), every(32.0, 88.0), np.linspace(-80, 32, 4_000_001),
                            -np.logspace(-30, 0, 100_001), np.logspace(-30, 0, 100_001)])
    else:
        x = np.concatenate([np.linspace(-760.0, 88.0, 2_000_001), rng.uniform(-720.0, -700.0, 100_000)])
    x = np.concatenate([x, np.array([np.nan, -np.inf, -1e30, 88.0], dtype=dtype)]).astype(dtype)
    rng.shuffle(x)
    return x


def _bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_flush_bounded_is_exp_flush_up_to_88(isa, dtype):
    """The hot loops' exp (no range check): exp_flush's very bits for every x <= 88, NaN and -inf."""
    x = _bounded_exp_inputs(dtype)
    got = run(isa, "exp_flush_bounded", x)
    want = run(isa, "exp_flush", x)
    np.testing.assert_array_equal(_bits(got)[~np.isnan(x)], _bits(want)[~np.isnan(x)])
    assert np.all(np.isnan(got[np.isnan(x)]))


# The largest argument at which a kernel's sum of exponentials keeps a term (FASTCE_SUM_ARG_MAX,
# math_consts.h): the sums' exp is held to its bounds up to there.
SUM_ARG_MAX = 16.0


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype,threshold", [(np.float32, -87.0), (np.float64, -708.0)])
def test_exp_floored_is_exp_flush_bounded_but_at_most_exp_threshold_below_it(isa, dtype, threshold):
    """The sums' exp: at and above the flush threshold (and NaN), exp_flush_bounded's bits, except
    AVX2's float32, which reduces x with ln2/8 in one part and so may differ from exp by
    |x| 2.75e-9 relative more (math_consts.h): within 1 + 0.05 |x| ulp of exp up to
    SUM_ARG_MAX (measured: 0.87 + 0.046 |x|, 4.5 ulp at -86.6). Below the threshold, +0 or
    its own value at the threshold (whichever the ISA finds cheaper), never anything else, so that a sum
    holding a term >= 1 cannot see the difference."""
    x = _bounded_exp_inputs(dtype)
    got = run(isa, "exp_floored", x)
    want = run(isa, "exp_flush_bounded", x)
    above = x >= dtype(threshold)
    if isa == "avx2" and dtype == np.float32:
        kept = above & (x <= SUM_ARG_MAX)
        err = ulp_error(got[kept], np.exp(x[kept].astype(np.longdouble)), dtype)
        excess = err - (1 + 0.05 * np.abs(x[kept]))
        assert excess.max() <= 0, (err[excess.argmax()], x[kept][excess.argmax()])
    else:
        np.testing.assert_array_equal(_bits(got)[above], _bits(want)[above])
    assert np.all(np.isnan(got[np.isnan(x)]))
    floor = run(isa, "exp_floored", np.array([threshold], dtype=dtype))[0]
    below = got[x < dtype(threshold)]
    assert below.size > 0 and np.all((below == 0) | (below == floor))
    assert not np.any(np.signbit(below))


# The sums' step, acc + exp_floored(x). On a sum that holds 1, as every kernel sum does, at x up to
# SUM_ARG_MAX: exp's own error (at most 1 ulp of exp(x) in float32, 2 in float64, and AVX2's
# 0.37 more at x = 16; below 0, a fraction of an ulp of the sum) plus one rounding of the sum.
# Measured over these inputs: float32 1.28 ulp with AVX2 (x near 15.5), 0.85 with AVX-512, 0.75
# scalar; float64 1.00 on every ISA.
FLOORED_ADD_ULPS = {np.float32: 1.5, np.float64: 2.5}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_floored_add_to_a_sum_holding_one(isa, dtype):
    """exp_floored_add(x, 1) = 1 + exp(x) within FLOORED_ADD_ULPS of the correctly rounded sum
    over the bounded exps' inputs up to SUM_ARG_MAX; exactly 1 below the flush threshold (and for
    -inf); NaN for NaN."""
    x = _bounded_exp_inputs(dtype)
    x = x[~(x > SUM_ARG_MAX)]  # NaN kept
    got = run(isa, "exp_floored_add", x)
    finite = ~np.isnan(x)
    ref = 1 + np.exp(x[finite].astype(np.longdouble))
    err = ulp_error(got[finite], ref, dtype)
    assert err.max() <= FLOORED_ADD_ULPS[dtype], (err.max(), x[finite][err.argmax()])
    tiny = x[finite] < (-87.0 if dtype == np.float32 else -708.0)
    assert tiny.any() and np.all(got[finite][tiny] == 1)
    assert np.all(np.isnan(got[~finite]))
