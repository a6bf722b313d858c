"""Hostile input: one table of bad calls, each of which must raise a clear exception
(ValueError, TypeError or IndexError, worded like torch's where torch has the same check)
and leave every array it was given byte for byte as it was (`out=` included: nothing may be
written before the arguments are known to be good).

The table is the single parametrized test below; its ids make the number of cases visible
(`pytest tests/test_hostile_input.py --collect-only -q`). Each case builds fresh arrays, so
cases cannot affect one another. The cases marked every_isa (target range, reduction,
label_smoothing, non-floating input, the common shape errors) run under every available ISA,
the others under the default one. Two tests at the end check the good calls next to the bad
ones: ignored targets are not range-checked, and the block-wise target check's weighted-mean
denominator does not depend on the thread count.

Entry points (column `fn`):
  ce    fastce.cross_entropy                 ceg   fastce.cross_entropy_with_grad
  mod   fastce.CrossEntropyLoss(**options)(input, target)
  modg  fastce.CrossEntropyLoss(**options).loss_and_grad(input, target, grad_output=, out=)
  nll   fastce.nll_loss                      lsm / sm / lse   log_softmax / softmax / logsumexp
"""

from __future__ import annotations

import contextlib
import re

import numpy as np
import pytest

import fastce
from _ce_testutil import make_case, ref

# --------------------------------------------------------------------------
# entry points: each takes the same keyword spelling (input=, target=, options)
# --------------------------------------------------------------------------

_MODULE_CALL_KEYS = ("grad_output", "out")


def _mod(input, target, **opts):
    return fastce.CrossEntropyLoss(**opts)(input, target)


def _modg(input, target, **kw):
    call = {k: kw.pop(k) for k in _MODULE_CALL_KEYS if k in kw}
    return fastce.CrossEntropyLoss(**kw).loss_and_grad(input, target, **call)


FNS = {
    "ce": lambda input, target, **kw: fastce.cross_entropy(input, target, **kw),
    "ceg": lambda input, target, **kw: fastce.cross_entropy_with_grad(input, target, **kw),
    "mod": _mod,
    "modg": _modg,
    "nll": lambda input, target, **kw: fastce.nll_loss(input, target, **kw),
    "lsm": lambda input, **kw: fastce.log_softmax(input, **kw),
    "sm": lambda input, **kw: fastce.softmax(input, **kw),
    "lse": lambda input, **kw: fastce.logsumexp(input, **kw),
}
LOSS_FNS = ("ce", "ceg", "mod", "modg", "nll")
GRAD_FNS = ("ceg", "modg")
SOFTMAX_FNS = ("lsm", "sm", "lse")


# --------------------------------------------------------------------------
# fresh arrays for each case, from the shared generator (make_case, fixed seed: a failure
# reproduces); what is hostile is in the explicit target values (T) and in the arguments' kinds
# --------------------------------------------------------------------------

SEED = 1234


def X(shape=(3, 5), dtype=np.float32):
    """Logits of `shape` (class axis 1, or 0 when 1-D)."""
    return make_case(None, None, dtype, "index", shape=shape, seed=SEED, scale=3.0)["x"]


def T(values=(0, 1, 2), dtype=np.int64):
    """Class-index targets of exactly these values."""
    return np.array(values, dtype=dtype)


def P(shape=(3, 5), dtype=np.float32):
    """Class-probability targets of `shape`."""
    return make_case(None, None, dtype, "prob", shape=shape, seed=SEED)["target"]


def W(n=5, dtype=np.float32):
    """n class weights."""
    return make_case(None, n, dtype, "index", weighted=True, shape=(1, n), seed=SEED)["weight"]


def OUT(shape=(3, 5), dtype=np.float32):
    return np.full(shape, -7.25, dtype)   # a sentinel: any write shows in the bytes


def _readonly(a):
    a.flags.writeable = False
    return a


def _out_over_target_contig():
    out = OUT()
    t = out.reshape(-1).view(np.int32)[:3]      # contiguous int32 view of out's first bytes
    t[...] = [0, 1, 2]
    return dict(input=X(), target=t, out=out)


def _out_over_target_strided():
    out = OUT()
    t = out.view(np.int32)[:, 0]                # column 0 of out, as int32 (strided)
    t[...] = [0, 1, 2]
    return dict(input=X(), target=t, out=out)


def _out_over_target_byteswapped():
    out = OUT((3, 8), np.float64)
    t = out.reshape(-1).view(">i8")[:3]        # contiguous, but byte-swapped: fastce converts it
    t[...] = [0, 1, 2]
    return dict(input=X((3, 8), np.float64), target=t, out=out)


def _out_is_prob_target():
    out = P()
    return dict(input=X(), target=out, out=out)


def _out_over_weight_row():
    out = np.ones((5, 5), np.float32)
    return dict(input=X((5, 5)), target=T(range(5)), weight=out[2], out=out)


def _out_over_weight_strided():
    out = np.ones((5, 5), np.float32)
    return dict(input=X((5, 5)), target=T(range(5)), weight=out[:, 1], out=out)


def _out_partial_over_input(shift):
    buf = X((4, 5)).reshape(-1)
    x = buf[:15].reshape(3, 5)
    o = buf[shift:shift + 15].reshape(3, 5)
    return dict(input=x, target=T(), out=o)


def _out_over_grad_output_contig():
    x = X((4, 64), np.float64)
    out = np.zeros((4, 64))
    g = out.reshape(-1)[60:64]                  # grad_output lives in out's first row
    g[...] = 1.0
    return dict(input=x, target=T(range(4)), reduction="none", grad_output=g, out=out)


def _out_over_grad_output_strided():
    x = X((4, 4), np.float64)
    out = np.zeros((4, 4))
    g = out[:, 1]
    g[...] = 1.0
    return dict(input=x, target=T(range(4)), reduction="none", grad_output=g, out=out)


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------

OOB = r"^Target {} is out of bounds\.$"
SHAPE_MSG = r"(?i)shape|batch_size|dimension"
FLOAT_MSG = r"(?i)float"
REDUCTION_MSG = r"is not a valid value for reduction"
SMOOTH_MSG = r"label_smoothing must be between 0\.0 and 1\.0"
THREADS_MSG = r"num_threads"


class Case:
    """One bad call. every_isa: run it under each ISA of fastce.available_isas() (id suffix
    -scalar, -avx2, ...), else once under the default ISA."""

    def __init__(self, id, fn, build, exc, match, every_isa=False):
        self.id, self.fn, self.build, self.exc, self.match = id, fn, build, exc, match
        self.every_isa = every_isa


CASES: list[Case] = []


def case(id, fn, build, exc, match, every_isa=False):
    CASES.append(Case(f"{fn}-{id}", fn, build, exc, match, every_isa))


def each(fns, id, build, exc, match, every_isa=False):
    for fn in fns:
        case(id, fn, build, exc, match, every_isa)


# --- wrong ndim or shape -------------------------------------------------
each(LOSS_FNS, "input-0d", lambda: dict(input=np.array(1.5, np.float32), target=np.array(0)),
     ValueError, r"at least 1 dimension", every_isa=True)
each(("ce",), "input-numpy-scalar", lambda: dict(input=np.float32(1.0), target=np.array(0)),
     (TypeError, ValueError), r".", every_isa=True)
each(LOSS_FNS, "target-batch-mismatch", lambda: dict(input=X(), target=T([0, 1])),
     ValueError, SHAPE_MSG, every_isa=True)
each(LOSS_FNS, "target-keeps-class-axis", lambda: dict(input=X(), target=np.zeros((3, 1), np.int64)),
     ValueError, SHAPE_MSG, every_isa=True)
each(LOSS_FNS, "target-too-long", lambda: dict(input=X(), target=T([0, 1, 2, 3])),
     ValueError, SHAPE_MSG)
each(("ce", "ceg", "nll"), "unbatched-1d-target", lambda: dict(input=X((5,)), target=T([1])),
     ValueError, SHAPE_MSG, every_isa=True)
each(("ce", "ceg", "nll"), "kdim-target-mismatch",
     lambda: dict(input=X((2, 5, 4)), target=np.zeros((2, 3), np.int64)), ValueError, SHAPE_MSG)
each(("ce", "ceg", "nll"), "kdim-target-transposed",
     lambda: dict(input=X((2, 5, 4, 3)), target=np.zeros((2, 3, 4), np.int64)), ValueError, SHAPE_MSG)
each(("ce", "ceg", "mod"), "kdim-target-missing-dim",
     lambda: dict(input=X((2, 5, 4, 3)), target=np.zeros((2, 4), np.int64)), ValueError, SHAPE_MSG)
each(("ce", "ceg", "mod"), "prob-target-wrong-shape",
     lambda: dict(input=X(), target=P((3, 4))), ValueError, SHAPE_MSG, every_isa=True)
each(("ce", "ceg"), "prob-target-transposed",
     lambda: dict(input=X(), target=P((5, 3))), ValueError, SHAPE_MSG)
each(("ce",), "input-list-ragged", lambda: dict(input=[[1.0, 2.0], [3.0]], target=T([0, 1])),
     (ValueError, TypeError), r".")

# --- input not floating ----------------------------------------------------
for _dt, _name in ((np.int64, "int64"), (np.int32, "int32"), (np.uint8, "uint8"),
                   (np.bool_, "bool"), (np.complex64, "complex64"), (np.complex128, "complex128"),
                   (object, "object"), (np.longdouble, "longdouble")):
    _xs = (lambda dt: lambda: X().astype(dt))(_dt)
    _all_isas = _name in ("int64", "int32", "uint8", "bool", "complex128")
    each(LOSS_FNS if _name in ("int64", "bool", "complex128", "object") else ("ce", "ceg"),
         f"input-{_name}", (lambda xs: lambda: dict(input=xs(), target=T()))(_xs),
         TypeError, r"floating", every_isa=_all_isas)
    if _name in ("int64", "int32", "uint8", "bool", "complex128", "object"):
        each(SOFTMAX_FNS, f"input-{_name}", (lambda xs: lambda: dict(input=xs()))(_xs),
             TypeError, r"floating", every_isa=_all_isas)
each(("ce", "lse"), "input-str", lambda: dict(input=np.array(["a", "b"]), target=T([0])),
     TypeError, r"floating")

# --- target dtype ----------------------------------------------------------
for _dt, _name in ((np.float32, "float32"), (np.float64, "float64")):
    each(LOSS_FNS, f"index-target-{_name}",
         (lambda dt: lambda: dict(input=X(), target=T().astype(dt)))(_dt), TypeError, r"(?i)integer",
         every_isa=True)
for _dt, _name in ((np.bool_, "bool"), (np.complex128, "complex128"), (object, "object"),
                   (np.str_, "str")):
    each(("ce", "ceg", "mod", "nll"), f"index-target-{_name}",
         (lambda dt: lambda: dict(input=X(), target=T().astype(dt)))(_dt), TypeError, r".")

# --- target out of range -----------------------------------------------------
for _vals, _bad, _name in (([0, 7, 1], 7, "7"), ([0, 1, 5], 5, "5-eq-C"), ([0, -1, 1], -1, "neg1"),
                           ([0, -99, 1], -99, "neg99"), ([0, 1000, 1], 1000, "1000")):
    each(LOSS_FNS, f"target-{_name}", (lambda v: lambda: dict(input=X(), target=T(v)))(_vals),
         IndexError, OOB.format(_bad), every_isa=True)
    each(("ce", "ceg"), f"target-{_name}-smoothing-none",
         (lambda v: lambda: dict(input=X(), target=T(v), label_smoothing=0.3, reduction="none"))(_vals),
         IndexError, OOB.format(_bad), every_isa=True)
each(("ce", "ceg", "nll"), "target-neg100-ignore-neg1",
     lambda: dict(input=X(), target=T([0, -100, 1]), ignore_index=-1), IndexError, OOB.format(-100))
each(("ce", "ceg"), "target-7-ignore-in-range",
     lambda: dict(input=X(), target=T([1, 7, 1]), ignore_index=1), IndexError, OOB.format(7))
each(("ce", "ceg"), "target-7-weighted",
     lambda: dict(input=X(), target=T([0, 7, 1]), weight=W()), IndexError, OOB.format(7))
each(("ce", "ceg", "nll"), "target-uint8-200",
     lambda: dict(input=X(), target=T([0, 200, 1], np.uint8)), IndexError, OOB.format(200))
each(("ce", "ceg", "nll"), "target-uint64-2p63",
     lambda: dict(input=X(), target=T([0, 2**63 + 5, 1], np.uint64)),
     IndexError, OOB.format(2**63 + 5))
each(("ce", "ceg", "nll"), "target-int64-min",
     lambda: dict(input=X(), target=T([0, -2**63, 1])), IndexError, OOB.format(-2**63))
each(("ce", "ceg", "nll"), "target-int8-neg128",
     lambda: dict(input=X(), target=T([0, -128, 1], np.int8)), IndexError, OOB.format(-128))
each(("ce", "ceg", "nll"), "kdim-target-oob",
     lambda: dict(input=X((2, 5, 3)), target=np.array([[0, 1, 2], [3, 4, 5]])), IndexError, OOB.format(5))
each(("ce", "ceg", "nll"), "unbatched-target-oob",
     lambda: dict(input=X((5,)), target=np.array(9)), IndexError, OOB.format(9))
each(("ce",), "kdim-float64-target-4",
     lambda: dict(input=X((2, 4, 3), np.float64), target=np.array([[0, 1, 2], [3, 0, 4]])),
     IndexError, OOB.format(4), every_isa=True)
each(("ceg",), "unbatched-float64-target-9", lambda: dict(input=X((4,), np.float64), target=np.array(9)),
     IndexError, OOB.format(9), every_isa=True)
each(("ce",), "target-uint8-200-float64", lambda: dict(input=X((2, 5), np.float64), target=T([1, 200], np.uint8)),
     IndexError, OOB.format(200), every_isa=True)
case("target-7-with-out", "ceg", lambda: dict(input=X(), target=T([0, 7, 1]), out=OUT()),
     IndexError, OOB.format(7), every_isa=True)
case("target-7-with-out", "modg", lambda: dict(input=X(), target=T([0, 7, 1]), out=OUT()),
     IndexError, OOB.format(7))
case("target-7-out-is-input", "ceg", lambda: (lambda x: dict(input=x, target=T([0, 7, 1]), out=x))(X()),
     IndexError, OOB.format(7))

CHECK_BLOCK = 65536   # the target check runs in blocks of this many targets, on up to num_threads threads


def _bad_targets_in_two_blocks(tdtype, num_threads):
    """5 blocks and a tail of (N, 7) targets, bad ones in blocks 4 (9) and 1 (8): the first bad
    target in order (8) is reported, whichever block a thread reached first."""
    c = make_case(None, None, np.float32, "index", shape=(5 * CHECK_BLOCK + 123, 7), seed=7, int_dtype=tdtype)
    t = c["target"]
    t[4 * CHECK_BLOCK + 5] = 9
    t[CHECK_BLOCK + 17] = 8
    return dict(input=c["x"], target=t, num_threads=num_threads)


for _tdt in (np.int64, np.int32, np.uint8, np.uint64):
    for _nt in (1, 2):
        case(f"target-first-bad-of-blocks-{np.dtype(_tdt).name}-threads{_nt}", "ce",
             (lambda tdt, nt: lambda: _bad_targets_in_two_blocks(tdt, nt))(_tdt, _nt), IndexError, OOB.format(8))

# --- weight of wrong shape or kind ----------------------------------------------
for _w, _name, _exc in ((lambda: W(4), "short", ValueError), (lambda: W(6), "long", ValueError),
                        (lambda: W(5).reshape(1, 5), "2d", ValueError),
                        (lambda: np.float32(1.0), "0d", ValueError),
                        (lambda: np.ones(5, np.int64), "int64", TypeError),
                        (lambda: np.ones(5, np.bool_), "bool", TypeError),
                        (lambda: np.ones(5, np.complex64), "complex", TypeError),
                        (lambda: np.ones(5, object), "object", TypeError),
                        (lambda: np.array(list("abcde")), "str", TypeError)):
    _fns = LOSS_FNS if _name in ("short", "int64", "object") else ("ce", "ceg")
    each(_fns, f"weight-{_name}", (lambda w: lambda: dict(input=X(), target=T(), weight=w()))(_w),
         _exc, r"weight", every_isa=_name == "short")
each(("ce", "ceg"), "weight-kdim-short",
     lambda: dict(input=X((2, 5, 3)), target=np.zeros((2, 3), np.int64), weight=W(3)), ValueError, r"weight")
each(("ce", "ceg"), "weight-prob-target-short",
     lambda: dict(input=X(), target=P(), weight=W(4)), ValueError, r"weight")

# --- label_smoothing outside [0, 1], NaN, not a number -------------------------------
for _eps, _name in ((-0.1, "neg0.1"), (-1e-12, "neg1e-12"), (1.0000001, "1+1e-7"), (1.0001, "1.0001"),
                    (1.5, "1.5"), (2.0, "2"), (float("nan"), "nan"), (float("inf"), "inf"),
                    (-float("inf"), "-inf")):
    each(("ce", "ceg", "mod", "modg"), f"label_smoothing-{_name}",
         (lambda e: lambda: dict(input=X(), target=T(), label_smoothing=e))(_eps), ValueError, SMOOTH_MSG,
         every_isa=True)
each(("ce", "ceg"), "label_smoothing-nan-prob",
     lambda: dict(input=X(), target=P(), label_smoothing=float("nan")), ValueError, SMOOTH_MSG)
for _eps, _name in (("0.1", "str"), (None, "None"), (np.array([0.1, 0.2]), "array"), (0.1j, "complex")):
    each(("ce", "mod"), f"label_smoothing-{_name}",
         (lambda e: lambda: dict(input=X(), target=T(), label_smoothing=e))(_eps), TypeError,
         r"label_smoothing")

# --- reduction ------------------------------------------------------------------
for _red, _name in (("avg", "avg"), ("MEAN", "MEAN"), ("", "empty"), ("elementwise_mean", "elementwise_mean"),
                   (" mean", "space-mean"), (None, "None"), (1, "int1"), (b"mean", "bytes-mean")):
    each(LOSS_FNS, f"reduction-{_name}",
         (lambda r: lambda: dict(input=X(), target=T(), reduction=r))(_red), ValueError, REDUCTION_MSG,
         every_isa=True)

# --- probability targets ---------------------------------------------------------
for _dt, _name in ((np.int64, "int64"), (np.int32, "int32"), (np.uint8, "uint8"), (np.bool_, "bool"),
                   (np.complex64, "complex64"), (object, "object")):
    each(("ce", "ceg", "mod"), f"prob-target-{_name}",
         (lambda dt: lambda: dict(input=X(), target=np.zeros((3, 5), dt)))(_dt), TypeError, r".")
each(("ce", "ceg"), "prob-target-int-kdim",
     lambda: dict(input=X((2, 5, 3)), target=np.zeros((2, 5, 3), np.int64)), TypeError,
     r"Expected floating point type for target with class probabilities")
for _ii in (0, 3, 4, 100):
    each(("ce", "ceg", "mod", "modg"), f"prob-target-ignore_index-{_ii}",
         (lambda ii: lambda: dict(input=X(), target=P(), ignore_index=ii))(_ii), ValueError,
         r"ignore_index is not supported for floating point target")

# --- ignore_index of the wrong type or size --------------------------------------------
for _ii, _name in ((1.0, "float"), (None, "None"), (True, "bool"), ("1", "str")):
    each(("ce", "ceg", "mod", "nll"), f"ignore_index-{_name}",
         (lambda ii: lambda: dict(input=X(), target=T(), ignore_index=ii))(_ii), TypeError, r"ignore_index")
each(("ce", "nll"), "ignore_index-2p70", lambda: dict(input=X(), target=T(), ignore_index=2**70),
     ValueError, r".")

# --- C == 0 -----------------------------------------------------------------------
each(LOSS_FNS, "C0", lambda: dict(input=np.zeros((3, 0), np.float32), target=T([0, 0, 0])),
     (ValueError, IndexError), r".")
each(("ce", "ceg"), "C0-prob", lambda: dict(input=np.zeros((3, 0), np.float32),
                                            target=np.zeros((3, 0), np.float32)), ValueError, r".")
each(("ce", "ceg", "nll"), "C0-unbatched", lambda: dict(input=np.zeros((0,), np.float32), target=np.array(0)),
     (ValueError, IndexError), r".")
each(("ce", "ceg"), "C0-kdim", lambda: dict(input=np.zeros((2, 0, 3), np.float64),
                                            target=np.zeros((2, 3), np.int64)), (ValueError, IndexError), r".")
each(("ce", "ceg"), "C0-weight-empty", lambda: dict(input=np.zeros((3, 0), np.float32), target=T([0, 0, 0]),
                                                    weight=np.zeros(0, np.float32)), (ValueError, IndexError), r".")

# --- out= ---------------------------------------------------------------------------
for _o, _name, _exc, _msg in (
        (lambda: OUT((3, 4)), "shape-3x4", ValueError, r"shape"),
        (lambda: OUT((5, 3)), "shape-transposed", ValueError, r"shape"),
        (lambda: OUT((15,)), "shape-flat", ValueError, r"shape"),
        (lambda: OUT((1, 3, 5)), "shape-extra-dim", ValueError, r"shape"),
        (lambda: OUT(()), "shape-0d", ValueError, r"shape"),
        (lambda: OUT(dtype=np.float64), "dtype-float64", TypeError, r"dtype"),
        (lambda: OUT(dtype=np.float16), "dtype-float16", TypeError, r"dtype"),
        (lambda: np.zeros((3, 5), np.int32), "dtype-int32", TypeError, r"dtype"),
        (lambda: np.zeros((3, 5), np.complex64), "dtype-complex64", TypeError, r"dtype"),
        (lambda: [[0.0] * 5] * 3, "list", TypeError, r"ndarray"),
        (lambda: _readonly(OUT()), "readonly", ValueError, r"read-only"),
        (lambda: np.broadcast_to(np.float32(0), (3, 5)), "broadcast-readonly", ValueError, r"read-only")):
    each(GRAD_FNS, f"out-{_name}", (lambda o: lambda: dict(input=X(), target=T(), out=o()))(_o), _exc, _msg)
case("out-readonly-is-input", "ceg", lambda: (lambda x: dict(input=x, target=T(), out=x))(_readonly(X())),
     ValueError, r"read-only")
each(GRAD_FNS, "out-overlaps-target", _out_over_target_contig, ValueError, r"overlaps target")
case("out-overlaps-target-strided", "ceg", _out_over_target_strided, ValueError, r"overlaps target")
case("out-overlaps-target-byteswapped", "ceg", _out_over_target_byteswapped, ValueError, r"overlaps target")
case("out-is-prob-target", "ceg", _out_is_prob_target, ValueError, r"overlaps target")
# (not for modg: CrossEntropyLoss keeps its own copy of the weight, so out= over the caller's
# weight array is only an aliasing of the caller's own arrays)
case("out-overlaps-weight", "ceg", _out_over_weight_row, ValueError, r"overlaps weight")
case("out-overlaps-weight-strided", "ceg", _out_over_weight_strided, ValueError, r"overlaps weight")
each(GRAD_FNS, "out-partial-overlap-input-shift1", lambda: _out_partial_over_input(1), ValueError,
     r"overlaps input")
case("out-partial-overlap-input-shift5", "ceg", lambda: _out_partial_over_input(5), ValueError,
     r"overlaps input")
for _v, _name in ((lambda x: x[::-1], "reversed"), (lambda x: x[:, ::-1], "classes-reversed"),
                  (lambda x: x.T, "transposed")):
    # the same memory as the input, in another order: not out=input, so refused
    each(GRAD_FNS, f"out-is-input-{_name}",
         (lambda v: lambda: (lambda x: dict(input=x, target=T(range(5)), out=v(x)))(X((5, 5))))(_v),
         ValueError, r"overlaps input")
case("out-overlaps-grad_output", "ceg", _out_over_grad_output_contig, ValueError, r"overlaps grad_output")
case("out-overlaps-grad_output-strided", "ceg", _out_over_grad_output_strided, ValueError,
     r"overlaps grad_output")

# --- grad_output: a real scalar for 'mean' / 'sum' (one rule, shared with the linear variants)
for _g, _name in (("2", "str"), (b"2", "bytes"), (1 + 2j, "complex"), (np.array(True), "bool-0d")):
    each(GRAD_FNS, f"grad_output-{_name}",
         (lambda g: lambda: dict(input=X(), target=T(), grad_output=g))(_g), TypeError, r"grad_output")

# --- num_threads ----------------------------------------------------------------------
_BAD_THREADS = ((0, "0", ValueError), (-1, "neg1", ValueError), (-(2**40), "neg2p40", ValueError),
                (2.0, "float", TypeError), (np.float64(2.0), "np-float64", TypeError),
                ("2", "str", TypeError), (True, "True", TypeError), (False, "False", TypeError),
                ([2], "list", TypeError))
for _n, _name, _exc in _BAD_THREADS:
    _fns = tuple(FNS) if _name in ("0", "neg1", "float", "str", "True") else ("ce", "ceg")
    for _fn in _fns:
        if _fn in SOFTMAX_FNS:
            _b = (lambda n: lambda: dict(input=X(), num_threads=n))(_n)
        else:
            _b = (lambda n: lambda: dict(input=X(), target=T(), num_threads=n))(_n)
        case(f"num_threads-{_name}", _fn, _b, _exc, THREADS_MSG)
each(("ce", "lse"), "num_threads-2p40", lambda: dict(input=X(), target=T(), num_threads=2**40),
     ValueError, r".")

# --- grad_output ---------------------------------------------------------------------
for _g, _name, _red in ((lambda: np.ones(3, np.float32), "array-for-mean", "mean"),
                        (lambda: np.ones(1, np.float32), "len1-for-sum", "sum"),
                        (lambda: np.ones((3, 5), np.float32), "input-shape-for-mean", "mean"),
                        (lambda: np.ones(4, np.float32), "len4-for-none", "none"),
                        (lambda: np.ones(2, np.float32), "len2-for-none", "none"),
                        (lambda: np.ones((3, 1), np.float32), "3x1-for-none", "none"),
                        (lambda: np.ones((3, 5), np.float32), "input-shape-for-none", "none")):
    each(GRAD_FNS, f"grad_output-{_name}",
         (lambda g, r: lambda: dict(input=X(), target=T(), reduction=r, grad_output=g(), out=OUT()))(_g, _red),
         ValueError, r"grad_output", every_isa=_name == "len4-for-none")
case("grad_output-kdim-wrong", "ceg",
     lambda: dict(input=X((2, 5, 3)), target=np.zeros((2, 3), np.int64), reduction="none",
                  grad_output=np.ones((3, 2), np.float32)), ValueError, r"grad_output")
for _g, _name, _red, _exc in ((lambda: np.ones(3, np.complex64), "complex-none", "none", TypeError),
                              (lambda: np.ones(3, object), "object-none", "none", TypeError),
                              (lambda: np.array(["a"] * 3), "str-none", "none", TypeError),
                              (lambda: 1j, "complex-mean", "mean", TypeError),
                              (lambda: "abc", "str-mean", "mean", (TypeError, ValueError))):
    case(f"grad_output-{_name}", "ceg",
         (lambda g, r: lambda: dict(input=X(), target=T(), reduction=r, grad_output=g(), out=OUT()))(_g, _red),
         _exc, r".")

# --- softmax family: axis ---------------------------------------------------------------
for _fn in SOFTMAX_FNS:
    case("axis-2", _fn, lambda: dict(input=X(), axis=2), (ValueError, IndexError), r"axis")
    case("axis-neg3", _fn, lambda: dict(input=X(), axis=-3), (ValueError, IndexError), r"axis")
    case("axis-float", _fn, lambda: dict(input=X(), axis=1.0), TypeError, r"axis")
    case("axis-None", _fn, lambda: dict(input=X(), axis=None), TypeError, r"axis")


# the softmax family takes no target: drop the target from builds shared with the losses
for _c in CASES:
    if _c.fn in SOFTMAX_FNS:
        _c.build = (lambda b: lambda: {k: v for k, v in b().items() if k != "target"})(_c.build)

assert len({c.id for c in CASES}) == len(CASES), "duplicate case ids"


# --------------------------------------------------------------------------
# the test
# --------------------------------------------------------------------------

def _arrays(obj, found):
    """Every ndarray reachable from a call's arguments, with the root buffer of each view."""
    if isinstance(obj, np.ndarray):
        found.append(obj)
        base = obj
        while isinstance(base.base, np.ndarray):
            base = base.base
            found.append(base)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _arrays(o, found)
    elif isinstance(obj, dict):
        for o in obj.values():
            _arrays(o, found)
    return found


def _snapshot(arrays):
    return [(a.shape, a.dtype, a.tobytes()) for a in arrays]


ISAS = tuple(fastce.available_isas())
PARAMS = [pytest.param(c, isa, id=f"{c.id}-{isa}" if isa else c.id)
          for c in CASES for isa in (ISAS if c.every_isa else (None,))]


@pytest.mark.parametrize("c,isa", PARAMS)
def test_hostile_input(c, isa):
    kwargs = c.build()
    watched = _arrays(kwargs, [])
    before = _snapshot(watched)
    with fastce.use_isa(isa) if isa else contextlib.nullcontext(), pytest.raises(c.exc) as info:
        FNS[c.fn](**kwargs)
    # a clear exception: of the documented kinds, with a message that says what is wrong
    assert isinstance(info.value, (ValueError, TypeError, IndexError)), \
        f"{type(info.value).__name__}: {info.value}"
    msg = str(info.value)
    assert msg.strip(), "empty exception message"
    assert re.search(c.match, msg), f"message {msg!r} does not match {c.match!r}"
    # nothing written: every argument (and the buffer under it) is byte for byte unchanged
    after = _snapshot(watched)
    for i, (b, a) in enumerate(zip(before, after)):
        assert b == a, f"argument array #{i} (shape {b[0]}, dtype {b[1]}) was modified by a call that raised"


# --------------------------------------------------------------------------
# the good calls beside the bad ones: what the checks must let through
# --------------------------------------------------------------------------

def test_ignored_target_is_not_range_checked(isa):
    """An ignored target may hold any value; only the kept targets are range-checked."""
    x = X((2, 5), np.float64)
    for ii in (7, 1000, -5):
        t = T([1, ii])
        np.testing.assert_allclose(fastce.cross_entropy(x, t, ignore_index=ii),
                                   ref.cross_entropy(x, t, ignore_index=ii), rtol=1e-12)


@pytest.mark.parametrize("tdtype", [np.int64, np.int32, np.uint8, np.uint64], ids=lambda d: np.dtype(d).name)
def test_target_check_blocks_weighted_mean(tdtype):
    """The weighted mean's denominator, summed block by block by the target check, is the same
    on 1 and 2 threads and equals the kept targets' weights summed in float64."""
    c = make_case(None, None, np.float32, "index", weighted=True, shape=(5 * CHECK_BLOCK + 123, 7), seed=7,
                  int_dtype=tdtype)
    x, t, w = c["x"], c["target"], c["weight"]
    means = [fastce.cross_entropy(x, t, weight=w, num_threads=nt) for nt in (1, 2)]
    assert means[0] == means[1], means
    w_t = w.astype(np.float64)[t.astype(np.int64)]
    per_row = fastce.cross_entropy(x, t, weight=w, reduction="none")
    np.testing.assert_allclose(means[0], per_row.astype(np.float64).sum() / w_t.sum(), rtol=1e-5)
