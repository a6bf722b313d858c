"""A typed user of fastce's public API.

``mypy --strict`` must find no error here, and the script must run (tests/test_typing.py).
Every name of ``fastce.__all__`` is used below, with arguments of the documented types, and
the results are bound to the types a user would expect.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

import fastce

Array = npt.NDArray[Any]
Loss = Union[np.floating[Any], Array]


def losses(x: Array, t: Array) -> float:
    loss: Loss = fastce.cross_entropy(x, t)
    per_row: Loss = fastce.cross_entropy(x, t, reduction="none", ignore_index=-1, num_threads=1)
    with_lse: Tuple[Loss, Array] = fastce.cross_entropy(x, t, return_lse=True, z_loss=1e-4, softcap=30.0)
    smoothed: Loss = fastce.cross_entropy(x, t, np.ones(3, np.float32), -100, "sum", 0.1)
    loss_grad: Tuple[Loss, Array] = fastce.cross_entropy_with_grad(x, t)
    grad_out = np.empty_like(x)
    loss_grad_lse: Tuple[Loss, Array, Array] = fastce.cross_entropy_with_grad(
        x, t, reduction="mean", grad_output=2.0, out=grad_out, return_lse=True)
    nll: Loss = fastce.nll_loss(fastce.log_softmax(x, axis=1), t, reduction="mean")
    loss_fn = fastce.CrossEntropyLoss(reduction="sum", label_smoothing=0.05, num_threads=None)
    from_module: Loss = loss_fn(x, t)
    from_forward: Loss = loss_fn.forward(x, t)
    module_grad: Tuple[Loss, Array] = loss_fn.loss_and_grad(x, t, grad_output=1.0)
    return (float(loss) + float(np.sum(per_row)) + float(with_lse[0]) + float(smoothed)
            + float(loss_grad[0]) + float(loss_grad_lse[0]) + float(nll) + float(from_module)
            + float(from_forward) + float(module_grad[0]))


def softmax_family(x: Array) -> Array:
    p: Array = fastce.softmax(x)
    lp: Array = fastce.log_softmax(x, axis=-1, num_threads=2)
    lse: Array = fastce.logsumexp(x, 1)
    return p + lp + lse[:, None]


def linear_head(h: Array, w: Array, b: Array, t: Array) -> float:
    loss: Loss = fastce.linear_cross_entropy(h, w, t, linear_bias=b, chunk_size=2)
    loss_lse: Tuple[Loss, Array] = fastce.linear_cross_entropy(h, w, t, return_lse=True)
    grads: Tuple[Loss, Array, Array, Optional[Array]] = fastce.linear_cross_entropy_with_grad(
        h, w, t, linear_bias=b, reduction="sum")
    grads_lse: Tuple[Loss, Array, Array, Optional[Array], Array] = fastce.linear_cross_entropy_with_grad(
        h, w, t, return_lse=True)
    chunks: Iterator[Tuple[int, int, Array]] = fastce.iter_logit_chunks(h, w, b, chunk_rows=2)
    best = np.empty(h.shape[0], dtype=np.int64)
    for r0, r1, z in chunks:
        best[r0:r1] = z.argmax(axis=1)
    return float(loss) + float(loss_lse[0]) + float(grads[0]) + float(grads_lse[0]) + float(best.sum())


def scoring(x: Array, t: Array, h: Array, w: Array) -> float:
    s = fastce.score(x, t, top_k=(1, 2), ignore_index=-100)
    s_lin = fastce.score_linear(h, w, t, top_k=2, chunk_size=2)
    acc = fastce.Score.empty(top_k=(1, 2))
    acc = acc.merge(s).merge(s_lin)
    summary: Dict[str, Any] = acc.as_dict()
    return float(acc.mean_nll) + float(acc.perplexity) + float(acc.accuracy) + len(summary)


def two_models(x: Array, ref: Array, t: Array, h: Array, w: Array) -> float:
    kl: Loss = fastce.kl_div(x, ref, reduction="mean")
    kl_grad = fastce.kl_div_with_grad(x, ref, reduction="sum", grad_output=1.0)
    c = fastce.compare(x, ref, t, top_k=(1, 2))
    c_lin = fastce.compare_linear(h, w, h, w, t, top_k=(1, 2), chunk_size=2)
    both = fastce.Comparison.empty(top_k=(1, 2), has_targets=True).merge(c).merge(c_lin)
    return float(kl) + float(kl_grad[0]) + float(both.mean_kl) + float(both.top1_agreement)


def shards(x: Array, t: Array) -> float:
    left, right = x[:, :2], x[:, 2:]
    a = fastce.shard_stats(left, t, class_start=0, num_classes=3)
    b = fastce.shard_stats(right, t, class_start=2, num_classes=3)
    stats: fastce.ShardStats = a.merge(b)
    loss = stats.loss("mean")
    g_left: Array = fastce.shard_grad(left, t, stats, class_start=0, reduction="mean")
    return float(loss) + float(g_left.sum())


def runtime() -> str:
    isas: Tuple[str, ...] = fastce.available_isas()
    current = fastce.get_isa()
    fastce.set_isa("scalar")
    with fastce.use_isa("scalar"):
        pass
    fastce.set_isa(current)
    config = fastce.get_config()
    threads: int = config["num_threads"]
    fastce.show_config()
    info = fastce.cache_info()
    limit: int = info["limit"]
    fastce.set_cache_limit(limit)
    freed: int = fastce.empty_cache()
    return f"{fastce.__version__} {isas} {threads} {freed >= 0}"


def main() -> None:
    x = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3], [0.2, 0.1, 1.7]], dtype=np.float32)
    ref = np.array([[1.5, 1.0, 0.3], [0.4, 2.0, 0.1], [0.0, 0.3, 1.2]], dtype=np.float32)
    t = np.array([0, 1, 2])
    h = np.array([[1.0, 0.5], [0.2, -1.0], [0.3, 0.8]], dtype=np.float32)
    w = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]], dtype=np.float32)
    b = np.zeros(3, dtype=np.float32)
    previous = fastce.get_isa()
    total = losses(x, t) + linear_head(h, w, b, t) + scoring(x, t, h, w) + two_models(x, ref, t, h, w)
    total += shards(x, t) + float(softmax_family(x).sum())
    print(runtime(), round(total, 2))
    fastce.set_isa(previous)


if __name__ == "__main__":
    main()
