"""The ``--plot`` figure: throughput vs number of classes (the class-count sweep), one line per
library. matplotlib is imported only here, when a plot is asked for."""

from __future__ import annotations

from typing import Optional, Sequence

from .peers import PEER_NAMES
from .timing import Cell
from .workloads import SWEEP_NUMEL


def plot_sweep(cells: Sequence[Cell], path: str, title: Optional[str] = None) -> None:
    """Throughput vs number of classes (log x), one line per library."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise RuntimeError(
            "--plot needs matplotlib, which is not installed (pip install matplotlib)"
        ) from None
    fig = Figure(figsize=(7.5, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for p in PEER_NAMES:
        pts = sorted(
            (c.workload.num_classes, c.gps) for c in cells if c.name == p and c.gps is not None
        )
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", label=p, linewidth=2.2 if p == "fastce" else 1.4)
    ax.set_xscale("log")
    ax.set_xlabel("number of classes C  (N*C ~ %.3g logits, float32)" % SWEEP_NUMEL)
    ax.set_ylabel("throughput  [G logits/s]")
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title or "softmax cross-entropy forward (mean), all threads")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
