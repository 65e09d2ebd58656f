"""The DET axes every fr-pbd plot shares: normal-deviate scales, ticks, grid, labels (one look, one place)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from fr_pbd.eval import metrics


def finish_det_axes(ax: Any, *, x: tuple[float, float], y: tuple[float, float], xticks: Sequence[float],
                    yticks: Sequence[float], label: Callable[[float], str], xlabel: str, ylabel: str, title: str,
                    legend_loc: str, legend_size: float) -> None:
    """Ticks at the given rates (``label`` writes them), limits ``x``/``y`` as rates, on probit scales."""
    ax.set_xticks(metrics.probit(np.array(xticks)), [label(t) for t in xticks])
    ax.set_yticks(metrics.probit(np.array(yticks)), [label(t) for t in yticks])
    ax.set_xlim(metrics.probit(x[0]), metrics.probit(x[1]))
    ax.set_ylim(metrics.probit(y[0]), metrics.probit(y[1]))
    ax.tick_params(axis="x", labelrotation=35, labelsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(True, color="0.88", lw=0.7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(loc=legend_loc, fontsize=legend_size, framealpha=0.95)
