"""The per-group part of the LFW report: a DET plot with one curve per group and the
operating points marked, a table under it, and the markdown section.

Why a plot of its own: a global DET curve hides that one group crosses the
promised FMR at a threshold where another does not. Only aggregates are drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fr_pbd.eval import metrics
from fr_pbd.eval.groups import FairnessResult
from fr_pbd.eval.plotting import finish_det_axes

__all__ = ["det_groups_plot", "groups_markdown", "summary_lines"]

_COLOURS = ["#c2185b", "#1f5aa6", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
_TICKS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5)
_Y_TICKS = (1e-3, 2e-3, 5e-3, 1e-2, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.9, 0.95)


def _pct(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f} %"


def _sci(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2e}"


def _ci(lohi, fmt) -> str:
    return "n/a" if not lohi else f"[{fmt(lohi[0])}, {fmt(lohi[1])}]"


def _source(src: str) -> str:
    """``"FMR=1e-4"`` -> "FMR 1e-4 over all comparisons"; ``"given"`` -> "given with --threshold"."""
    if src.startswith("FMR="):
        return f"FMR {src[4:]} over all comparisons"
    return "given with --threshold" if src == "given" else (src or "global")


def _tick(p: float) -> str:
    v = 100 * p
    return f"{v:g}%" if v >= 0.01 else f"{v:.10f}".rstrip("0") + "%"


def det_groups_plot(fair: FairnessResult, out: Path, title: str) -> list[Path]:
    """det-groups.png/.svg: one DET curve per group, each group's point at the global
    threshold (open) and at the worst-group threshold (filled), a table under it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = fair.target_fmr
    key = metrics.fmr_key(target)
    t_w = fair.worst[key].threshold
    x_lo = 1e-6
    for d in fair.details:
        x_lo = min(x_lo, 0.5 / max(1, d.at_global.impostor_comparisons))
    y_lo, y_hi, x_hi = 2e-3, 0.95, 0.5
    fig = plt.figure(figsize=(7.8, 8.0), dpi=150)
    gs = fig.add_gridspec(2, 1, height_ratios=[4.6, 0.8], hspace=0.3)
    ax = fig.add_subplot(gs[0])
    rows = []
    for n, d in enumerate(fair.details):
        c = _COLOURS[n % len(_COLOURS)]
        fmr, fnmr, _thr = d.det
        px = metrics.probit(np.clip(fmr, x_lo, 1 - 1e-12))
        py = metrics.probit(np.clip(fnmr, y_lo, 1 - 1e-12))
        label = f"{d.attribute} = {d.group}" if len({x.attribute for x in fair.details}) > 1 else d.group
        ax.plot(px, py, color=c, lw=1.8, label=f"{label} ({d.at_global.impostor_comparisons:,} same-group "
                                                 f"impostor, {d.at_global.genuine_comparisons:,} genuine)", zorder=3)
        for p, filled in ((d.at_global, False), (d.at_worst, True)):
            gn, fn, im, fm = p.genuine_comparisons, p.false_non_matches, p.impostor_comparisons, p.false_matches
            if not (gn and im):
                continue
            x = metrics.probit(min(max(fm / im, x_lo), 1 - 1e-12))
            y = metrics.probit(min(max(fn / gn, y_lo), y_hi))
            ax.plot([x], [y], marker="o", ms=7, mfc=c if filled else "white", mec=c, mew=1.8, ls="none", zorder=4)
        rows.append((label, c, d))
    ax.plot([], [], marker="o", ms=7, mfc="white", mec="0.3", mew=1.8, ls="none",
            label=f"at the global threshold {fair.global_threshold:.4f} ({_source(fair.global_source)})")
    ax.plot([], [], marker="o", ms=7, mfc="0.3", mec="0.3", mew=1.8, ls="none",
            label=f"at the worst-group threshold {t_w:.4f} (every group FMR <= {key})")
    ax.axvline(metrics.probit(target), color="0.45", ls="--", lw=1.0, zorder=1)
    ax.annotate(f"target FMR {key}", (metrics.probit(target), metrics.probit(0.9)), xytext=(3, 0),
                textcoords="offset points", fontsize=7, color="0.35", rotation=90, va="top")
    lo = metrics.probit(min(x_lo, y_lo))
    hi = metrics.probit(max(x_hi, y_hi))
    ax.plot([lo, hi], [lo, hi], ls=":", lw=0.8, color="0.6", zorder=1)
    xt = [t for t in _TICKS if x_lo <= t <= x_hi]
    yt = [t for t in _Y_TICKS if y_lo <= t <= y_hi]
    finish_det_axes(ax, x=(x_lo, x_hi), y=(y_lo, y_hi), xticks=xt, yticks=yt, label=_tick,
                    xlabel="False match rate (same-group impostors), normal-deviate scale",
                    ylabel="False non-match rate, normal-deviate scale", title=title,
                    legend_loc="upper right", legend_size=7)
    tab = fig.add_subplot(gs[1])
    tab.axis("off")
    tg = f"{fair.global_threshold:.4f}"
    tw = f"{t_w:.4f}"
    head = ["group", f"FMR\nat {tg}", f"FNMR\nat {tg}", f"FMR\nat {tw}", "bootstrap 95 %",
            f"FNMR\nat {tw}", "bootstrap 95 %"]
    cells = []
    for label, _c, d in rows:
        g, w = d.at_global.to_dict(), d.at_worst.to_dict()
        cells.append([label, _sci(g["fmr"]), _pct(g["fnmr"]), _sci(w["fmr"]), _ci(w["fmr_ci95_bootstrap"], _sci),
                      _pct(w["fnmr"]), _ci(w["fnmr_ci95_bootstrap"], _pct)])
    gn, fn, im, fm = fair.overall_at_global
    gw, fw, iw, fmw = fair.overall_at_worst
    cells.append(["all comparisons", _sci(fm / im if im else None), _pct(fn / gn if gn else None),
                  _sci(fmw / iw if iw else None), "", _pct(fw / gw if gw else None), ""])
    table = tab.table(cellText=cells, colLabels=head, loc="upper center", cellLoc="center",
                      colWidths=[0.17, 0.11, 0.11, 0.11, 0.19, 0.11, 0.19])
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.scale(1.0, 1.3)
    for col in range(len(head)):
        table[(0, col)].set_height(table[(0, col)].get_height() * 1.7)
    for k, (_label, c, _d) in enumerate(rows, start=1):
        table[(k, 0)].get_text().set_color(c)
    fig.text(0.01, 0.008, f"Same-group impostors (both identities in the group); per-identity bootstrap, "
             f"{fair.resamples:,} resamples, seed {fair.seed}; thresholds held fixed.", fontsize=6.5, color="0.35")
    paths = [out / "det-groups.png", out / "det-groups.svg"]
    for p in paths:
        fig.savefig(p, metadata={"Date": None} if p.suffix == ".svg" else None, bbox_inches="tight")
    plt.close(fig)
    return paths


def summary_lines(g: dict[str, Any]) -> list[str]:
    """What `fr-pbd eval` prints: both thresholds and what each costs, per group."""
    w = g.get("worst_group")
    if not w:
        return []
    key = metrics.fmr_key(w["target_fmr"])
    out = []
    for label, t, where, over in (("global", g["threshold"], "at_global_threshold",
                                   w["all_comparisons_at_global_threshold"]),
                                  ("worst-group", w["threshold"], "at_worst_group_threshold",
                                   w["all_comparisons_at_worst_group_threshold"])):
        parts = []
        for attr, a in g["attributes"].items():
            for name, s in a["groups"].items():
                p = s.get(where) or {}
                parts.append(f"{name} FMR {_sci(p.get('fmr'))} FNMR {_pct(p.get('fnmr'))}")
        rule = (_source(g.get("threshold_source", "")) if label == "global"
                else f"every group FMR <= {key}, bound by {w['binding']}")
        out.append(f"{label} threshold {t:.4f} ({rule}): FNMR {_pct(over['fnmr'])} overall; " + "; ".join(parts))
    return out


def groups_markdown(g: dict[str, Any], figures: bool = True) -> list[str]:
    """The report.md section: both operating points per group, Wilson and bootstrap intervals."""
    w = g.get("worst_group")
    if not w:
        return []
    key = metrics.fmr_key(w["target_fmr"])
    lines = ["", f"## One operating point for every group (target FMR {key})", "",
             f"- global threshold {g['threshold']:.4f} ({g['threshold_source']}); worst-group threshold "
             f"**{w['threshold']:.4f}** (the smallest at which every labelled group's same-group FMR and the FMR "
             f"over all comparisons are <= {key}; bound by {w['binding']})",
             f"- the price: FNMR over all genuine comparisons {_pct(w['all_comparisons_at_global_threshold']['fnmr'])}"
             f" -> {_pct(w['all_comparisons_at_worst_group_threshold']['fnmr'])}",
             f"- intervals: Wilson (assumes independent comparisons: too narrow) and per-identity bootstrap "
             f"({w['bootstrap']['resamples']:,} resamples, seed {w['bootstrap']['seed']}, threshold held fixed)", ""]
    for attr, a in g["attributes"].items():
        lines += [f"### {attr}", "", "| group | threshold | FMR | FMR Wilson 95 % | FMR bootstrap 95 % | FNMR | "
                  "FNMR Wilson 95 % | FNMR bootstrap 95 % |", "|---|---:|---:|---|---|---:|---|---|"]
        for name, s in a["groups"].items():
            for where in ("at_global_threshold", "at_worst_group_threshold"):
                p = s.get(where)
                if not p:
                    continue
                lines.append(f"| {name} | {p['threshold']:.4f} | {_sci(p['fmr'])} | {_ci(p['fmr_ci95_wilson'], _sci)} | "
                             f"{_ci(p['fmr_ci95_bootstrap'], _sci)} | {_pct(p['fnmr'])} | "
                             f"{_ci(p['fnmr_ci95_wilson'], _pct)} | {_ci(p['fnmr_ci95_bootstrap'], _pct)} |")
        lines.append("")
    lines += ["| target FMR | worst-group threshold | bound by | " + " | ".join(
        f"FNMR {n}" for a in g["attributes"].values() for n in a["groups"]) + " |",
              "|---|---:|---|" + "---:|" * sum(len(a["groups"]) for a in g["attributes"].values())]
    for k, v in w["by_target"].items():
        fn = [s["at_worst_group_threshold_by_target"][k]["fnmr"] for a in g["attributes"].values()
              for s in a["groups"].values() if "at_worst_group_threshold_by_target" in s]
        cells = " | ".join(_pct(f) for f in fn)
        lines.append(f"| {k} | {v['threshold']:.4f} | {v['binding']} | {cells} |")
    if figures:
        lines += ["", "![DET per group](det-groups.png)"]
    return lines
