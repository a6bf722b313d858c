"""Three wrong calls that ``mypy --strict`` must report, each on its line, and nothing else.

tests/test_typing.py reads each line's ``# E:`` comment: the error code mypy must give there,
then, quoted, a text its message must hold. (The losses are overloaded on ``return_lse``, so
mypy words each error as "no overload variant matches"; the misspelt keyword gets a second
message on its line, naming the keyword.)
"""
from __future__ import annotations

import numpy as np

import fastce

x = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
t = np.array([0, 1])

fastce.cross_entropy(x, t, reduction="avg")  # E: call-overload "No overload variant of \"cross_entropy\""
fastce.cross_entropy(x, t, num_threads="2")  # E: call-overload "No overload variant of \"cross_entropy\""
fastce.cross_entropy(x, t, ignore_indx=1)  # E: call-overload "Unexpected keyword argument \"ignore_indx\""
