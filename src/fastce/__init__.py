"""fastce: fused softmax cross-entropy (loss and gradient) on NumPy arrays, on the CPU.

Semantics follow torch.nn.functional.cross_entropy (torch 2.13); see README.md.
"""
from ._version import __version__

from ._functional import (  # noqa: E402
    cross_entropy,
    cross_entropy_with_grad,
    log_softmax,
    logsumexp,
    nll_loss,
    softmax,
)
from ._linear import iter_logit_chunks, linear_cross_entropy, linear_cross_entropy_with_grad  # noqa: E402
from ._modules import CrossEntropyLoss  # noqa: E402
from ._score import Score, score, score_linear  # noqa: E402
from ._kl import kl_div, kl_div_with_grad  # noqa: E402
from ._compare import Comparison, compare, compare_linear  # noqa: E402
from ._shards import ShardStats, shard_grad, shard_stats  # noqa: E402
from ._runtime import available_isas, get_config, get_isa, set_isa, show_config, use_isa  # noqa: E402
from ._buffer_cache import cache_info, empty_cache, set_cache_limit  # noqa: E402

__all__ = [
    "cross_entropy",
    "cross_entropy_with_grad",
    "CrossEntropyLoss",
    "linear_cross_entropy",
    "linear_cross_entropy_with_grad",
    "iter_logit_chunks",
    "score",
    "score_linear",
    "Score",
    "kl_div",
    "kl_div_with_grad",
    "compare",
    "compare_linear",
    "Comparison",
    "shard_stats",
    "shard_grad",
    "ShardStats",
    "nll_loss",
    "log_softmax",
    "softmax",
    "logsumexp",
    "available_isas",
    "get_isa",
    "set_isa",
    "use_isa",
    "get_config",
    "show_config",
    "cache_info",
    "empty_cache",
    "set_cache_limit",
    "__version__",
]
