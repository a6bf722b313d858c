"""fastce.shard_stats / ShardStats / shard_grad: the vocabulary split into shards, merged exactly.

Property: random uneven splits (width-1 shards, shards with no target, empty shards) merged in
random orders give cross_entropy's loss and cross_entropy_with_grad's gradient, for every
option, in float64 to 1e-10, and torch's. Merging refuses mismatched problems and overlapping
classes; the loss refuses incomplete coverage; the statistics pickle.
"""

import pickle

import numpy as np
import pytest

import fastce

C = 37


def split(rng, C, empty=True):
    """Random cut points of [0, C): uneven shards, some of width 1, perhaps an empty one."""
    k = int(rng.integers(1, 8))
    cuts = sorted(set(rng.integers(1, C, size=k).tolist()) | {0, C})
    if empty and rng.integers(2):
        j = int(rng.integers(len(cuts)))
        cuts.insert(j, cuts[j])  # a width-0 shard
    if C > 3 and rng.integers(2):  # a width-1 shard
        c = int(rng.integers(1, C - 1))
        cuts = sorted(set(cuts) | {c, c + 1})
    return list(zip(cuts, cuts[1:]))


def problem(rng, shape, options):
    x = rng.standard_normal(shape) * 3
    ax = 0 if len(shape) == 1 else 1
    tshape = () if len(shape) == 1 else shape[:1] + shape[2:]
    t = rng.integers(0, shape[ax], tshape)
    if t.ndim:
        t.reshape(-1)[::4] = -100
    w = rng.uniform(0.5, 1.5, shape[ax]) if options.get("weight") else None
    x.reshape(-1)[::29] = -np.inf if options.get("masked") else x.reshape(-1)[::29]
    return x, t, w, ax


OPTIONS = [dict(), dict(label_smoothing=0.1), dict(weight=True), dict(weight=True, label_smoothing=0.25),
           dict(z_loss=1e-3, weight=True), dict(masked=True)]
SHAPES = [(7, C), (C,), (3, C, 4), (2, C, 2, 3)]


def merged(x, t, w, ax, ranges, rng, **kw):
    parts = [fastce.shard_stats(np.take(x, range(a, b), axis=ax), t, class_start=a, num_classes=x.shape[ax],
                                weight=None if w is None else w[a:b], **kw) for a, b in ranges]
    order = rng.permutation(len(parts))
    acc = parts[order[0]]
    for i in order[1:]:
        acc = acc + parts[i]
    return acc


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("opt", range(len(OPTIONS)), ids=lambda i: "-".join(OPTIONS[i]) or "plain")
def test_random_splits_equal_the_whole(shape, opt):
    rng = np.random.default_rng(100 * opt + len(shape))
    o = OPTIONS[opt]
    kw = {k: v for k, v in o.items() if k in ("label_smoothing", "z_loss")}
    for trial in range(6):
        x, t, w, ax = problem(rng, shape, o)
        stats = merged(x, t, w, ax, split(rng, shape[ax]), rng, **kw)
        assert stats.complete
        for red in ("none", "sum", "mean"):
            want, grad = fastce.cross_entropy_with_grad(x, t, weight=w, reduction=red, **kw)
            np.testing.assert_allclose(stats.loss(red), want, rtol=1e-10, atol=1e-12)
            go = rng.standard_normal(np.shape(want)) if red == "none" else 1.7
            grad = fastce.cross_entropy_with_grad(x, t, weight=w, reduction=red, grad_output=go, **kw)[1]
            for a, b in split(rng, shape[ax], empty=False):  # any split of the gradient
                g = fastce.shard_grad(np.take(x, range(a, b), axis=ax), t, stats, class_start=a, reduction=red,
                                      grad_output=go, weight=None if w is None else w[a:b])
                np.testing.assert_allclose(g, np.take(grad, range(a, b), axis=ax), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(stats.lse, fastce.logsumexp(x, axis=ax), rtol=1e-12)


@pytest.mark.parametrize("opt", [0, 1, 3, 4])
def test_against_torch(opt):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7 + opt)
    o = OPTIONS[opt]
    x, t, w, ax = problem(rng, (9, C), o)
    ls = o.get("label_smoothing", 0.0)
    stats = merged(x, t, w, ax, split(rng, C), rng, label_smoothing=ls)
    xt = torch.from_numpy(x).requires_grad_(True)
    want = torch.nn.functional.cross_entropy(xt, torch.from_numpy(t), weight=None if w is None else torch.from_numpy(w),
                                             label_smoothing=ls)
    want.backward()
    np.testing.assert_allclose(stats.loss(), want.item(), rtol=1e-10)
    g = np.concatenate([fastce.shard_grad(x[:, a:b], t, stats, class_start=a, weight=None if w is None else w[a:b])
                        for a, b in ((0, 5), (5, 6), (6, C))], axis=1)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-9, atol=1e-14)


def test_no_nan_from_empty_or_masked_shards():
    x = np.array([[0.0, 1.0, -np.inf, -np.inf, 2.0]])
    t = np.array([4])
    s = fastce.shard_stats(x[:, 2:4], t, class_start=2, num_classes=5)  # all -inf: lse = -inf
    assert s.lse_partial[0] == -np.inf
    e = fastce.shard_stats(x[:, 2:2], t, class_start=2, num_classes=5)  # no classes at all
    full = s + e + fastce.shard_stats(x[:, :2], t, class_start=0, num_classes=5) + \
        fastce.shard_stats(x[:, 4:], t, class_start=4, num_classes=5)
    assert np.isfinite(full.loss()) and full.loss() == pytest.approx(fastce.cross_entropy(x, t), rel=1e-12)


def test_float32_and_bfloat16_shards():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(3)
    x, t, _, _ = problem(rng, (5, C), {})
    for dt, rtol in ((np.float32, 1e-5), (ml_dtypes.bfloat16, 1e-2)):
        xd = x.astype(dt)
        st = fastce.shard_stats(xd[:, :10], t, class_start=0, num_classes=C) + \
            fastce.shard_stats(xd[:, 10:], t, class_start=10, num_classes=C)
        loss = st.loss()
        assert loss.dtype == np.dtype(dt)
        np.testing.assert_allclose(float(loss), float(fastce.cross_entropy(xd, t)), rtol=rtol)
        assert fastce.shard_grad(xd[:, 10:], t, st, class_start=10).dtype == np.dtype(dt)


def test_pickle_and_repr():
    rng = np.random.default_rng(4)
    x, t, _, _ = problem(rng, (4, C), {})
    s = fastce.shard_stats(x[:, :20], t, class_start=0, num_classes=C, label_smoothing=0.1)
    s2 = pickle.loads(pickle.dumps(s))
    full = s2 + fastce.shard_stats(x[:, 20:], t, class_start=20, num_classes=C, label_smoothing=0.1)
    assert full.loss() == pytest.approx(fastce.cross_entropy(x, t, label_smoothing=0.1), rel=1e-12)
    assert "classes [0, 20)" in repr(s)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: fastce.shard_stats(np.zeros((3, 4)), np.zeros(3, int), class_start=0, num_classes=6)
     + fastce.shard_stats(np.zeros((4, 2)), np.zeros(4, int), class_start=4, num_classes=6), ValueError, "rows"),
    (lambda: fastce.shard_stats(np.zeros((3, 4)), np.zeros(3, int), class_start=0, num_classes=6)
     + fastce.shard_stats(np.zeros((3, 2)), np.zeros(3, int), class_start=4, num_classes=7), ValueError, "num_classes"),
    (lambda: fastce.shard_stats(np.zeros((3, 4)), np.zeros(3, int), class_start=0, num_classes=6)
     + fastce.shard_stats(np.zeros((3, 2)), np.zeros(3, int), class_start=4, num_classes=6, label_smoothing=0.1),
     ValueError, "label_smoothing"),
    (lambda: fastce.shard_stats(np.zeros((3, 4)), np.zeros(3, int), class_start=0, num_classes=6)
     + fastce.shard_stats(np.zeros((3, 3)), np.zeros(3, int), class_start=3, num_classes=6), ValueError, "overlap"),
    (lambda: fastce.shard_stats(np.zeros((3, 4)), np.zeros(3, int), class_start=0, num_classes=6)
     + fastce.shard_stats(np.zeros((3, 2)), np.ones(3, int), class_start=4, num_classes=6), ValueError, "targets"),
    (lambda: fastce.shard_stats(np.zeros((3, 4)), np.zeros(3, int), class_start=0, num_classes=6).loss(),
     ValueError, r"cover classes \[0, 4\)"),
    (lambda: fastce.shard_stats(np.zeros((3, 4)), np.zeros(3, int), class_start=0, num_classes=6).lse,
     ValueError, "merge"),
    (lambda: fastce.shard_stats(np.zeros((3, 4)), np.zeros(3, int), class_start=3, num_classes=6), ValueError,
     "exceed num_classes"),
    (lambda: fastce.shard_stats(np.zeros((3, 4)), np.array([0, 6, 1]), class_start=0, num_classes=6), IndexError,
     "out of bounds"),
    (lambda: fastce.shard_stats(np.zeros((3, 4)), np.zeros(3, int), class_start=0, num_classes=6,
                                weight=np.ones(6)), ValueError, "shard's 4 classes"),
    (lambda: fastce.shard_stats(np.zeros((3, 4)), np.zeros(3, int), class_start=-1, num_classes=6), ValueError,
     "class_start"),
    (lambda: fastce.shard_stats(np.zeros((3, 4)), np.zeros(3, int), class_start=0, num_classes=2.0), TypeError,
     "num_classes"),
    (lambda: fastce.shard_stats(np.zeros((3, 4), np.int32), np.zeros(3, int), class_start=0, num_classes=6),
     TypeError, "floating"),
    (lambda: fastce.shard_stats(np.zeros((3, 4)), np.zeros(4, int), class_start=0, num_classes=6), ValueError,
     "shape"),
    (lambda: fastce.shard_stats(np.zeros((3, 4)), np.zeros(3, int), class_start=0, num_classes=6) + 1, TypeError,
     "ShardStats"),
    (lambda: fastce.shard_grad(np.zeros((3, 4)), np.zeros(3, int), None, class_start=0), TypeError, "ShardStats"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_shard_grad_checks_its_stats():
    x, t = np.zeros((3, 6)), np.array([0, 5, 2])
    st = fastce.shard_stats(x[:, :3], t, class_start=0, num_classes=6) + \
        fastce.shard_stats(x[:, 3:], t, class_start=3, num_classes=6)
    with pytest.raises(ValueError, match="other rows or targets"):
        fastce.shard_grad(x[:, 3:], np.array([0, 5, 1]), st, class_start=3)
    with pytest.raises(ValueError, match="weight must be given"):
        fastce.shard_grad(x[:, 3:], t, st, class_start=3, weight=np.ones(3))
    inc = fastce.shard_stats(x[:, :3], t, class_start=0, num_classes=6)
    with pytest.raises(ValueError, match="cover"):
        fastce.shard_grad(x[:, :3], t, inc, class_start=0)
    out = np.empty((3, 3))
    assert fastce.shard_grad(x[:, 3:], t, st, class_start=3, out=out) is out


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("width_cut", [1, 16, 17, 30])
def test_shard_grad_kernel_every_isa(isa, dtype, width_cut):
    """shard_grad_rows on each ISA and dtype, widths around the vector widths, weights and
    smoothing, in place: the cross_entropy_with_grad gradient's columns."""
    rng = np.random.default_rng(width_cut)
    x, t, w, _ = problem(rng, (9, C), dict(weight=True))
    x = x.astype(dtype)
    kw = dict(label_smoothing=0.1)
    stats = fastce.shard_stats(x[:, :width_cut], t, class_start=0, num_classes=C, weight=w[:width_cut], **kw) + \
        fastce.shard_stats(x[:, width_cut:], t, class_start=width_cut, num_classes=C, weight=w[width_cut:], **kw)
    want = fastce.cross_entropy_with_grad(x, t, weight=w.astype(dtype), **kw)[1]
    part = np.ascontiguousarray(x[:, width_cut:])
    g = fastce.shard_grad(part, t, stats, class_start=width_cut, weight=w[width_cut:], out=part)  # in place
    assert g is part and g.dtype == dtype
    tol = {np.float64: 1e-12, np.float32: 1e-6, np.float16: 2e-3}[dtype]
    np.testing.assert_allclose(g.astype(np.float64), want[:, width_cut:].astype(np.float64), rtol=tol, atol=tol * 1e-2)
