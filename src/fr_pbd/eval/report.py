"""Write an evaluation to a folder: report.json, report.md, DET plot and score histograms.

Scores are biometric-derived data: everything written here is an aggregate
(rates, counts, thresholds, binned densities). No per-image score, no template,
no per-comparison list leaves the process.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fr_pbd.machine import machine_info
from fr_pbd.errors import EvaluationError, FrPbdError
from fr_pbd.eval import metrics
from fr_pbd.eval.groups_report import det_groups_plot, groups_markdown
from fr_pbd.eval.plotting import finish_det_axes
from fr_pbd.eval import transactions
from fr_pbd.eval.lfw import LfwResult, protocol_labels

__all__ = ["package_versions", "model_info", "report_dict", "write_report"]

SCHEMA = "fr-pbd/eval-lfw/1"
_PACKAGES = ("fr-pbd", "numpy", "onnxruntime", "opencv-python-headless", "opencv-python", "matplotlib", "dlib-bin")


def package_versions(names: Sequence[str] = _PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return out


def model_info(names: Sequence[str]) -> list[dict[str, Any]]:
    """Model ids and pinned hashes from the manifest (fr_pbd.models.spec)."""
    from fr_pbd import models

    out = []
    for n in names:
        try:
            s = models.spec(n)
        except FrPbdError:
            out.append({"name": n, "sha256": None, "note": "not in the manifest"})
            continue
        entry: dict[str, Any] = {"name": s.name, "role": s.role, "file": s.file, "sha256": s.sha256,
                                 "size": s.size, "licence": s.licence}
        try:
            st = models.status(n)
            entry["verified"] = bool(st.verified)
        except (FrPbdError, AttributeError):
            entry["verified"] = None
        out.append(entry)
    return out


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _num(v: float | None) -> float | None:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return float(v)


def report_dict(
    res: LfwResult,
    *,
    models: Sequence[str] = (),
    command: str | None = None,
    data_dir: Path | None = None,
    pairs_path: Path | None = None,
) -> dict[str, Any]:
    """Every figure of ``res`` as a JSON-ready dict (aggregates only)."""
    ap = res.all_pairs
    tf = res.tenfold
    pairs_label, all_label = protocol_labels(res)
    d: dict[str, Any] = {
        "schema": SCHEMA,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "command": command,
        # which protocol each figure is on: accuracy_* on the pairs; fnmr_at_fmr, eer, groups on every comparison
        "protocols": {"pairs": pairs_label, "all_comparisons": all_label},
        "dataset": {
            "name": "LFW (deep-funneled 250x250)",
            "dir": str(data_dir) if data_dir else None,
            "pairs_file": res.pairs_file,
            "pairs_file_sha256": _sha256(pairs_path) if pairs_path else None,
            "limited": res.limited,
        },
        "conventions": {
            "score": "cosine similarity of L2-normalised templates (higher = same person)",
            "decision": "accept if score >= threshold",
            "fnmr_at_fmr": "NIST FRTE 1:1: smallest threshold with FMR <= target; FNMR at that threshold",
            "failed_pairs": "a pairs-file pair with a failed image is an error at every threshold",
            "failed_genuine": "a genuine comparison with a failed image is a false non-match at every threshold "
                              "(counted in genuine_comparisons)",
            "failed_impostor": "impostor comparisons with a failed image cannot match; they are excluded from FMR "
                               "(impostor_comparisons_failed)",
            "accuracy_10fold_std": "sample standard deviation over the folds (ddof=1); "
                                   "accuracy_10fold_sem = std / sqrt(folds)",
        },
        "accuracy_10fold_score_model": res.score_model or "cosine",
        "accuracy_10fold_mean": _num(tf.mean) if tf else None,
        "accuracy_10fold_std": _num(tf.std) if tf else None,
        "accuracy_10fold_sem": _num(tf.sem) if tf else None,
        "accuracy_folds": [
            {"fold": f.fold + 1, "accuracy": f.accuracy, "threshold": f.threshold, "pairs": f.pairs,
             "failed_pairs": f.failed_pairs} for f in tf.folds
        ] if tf else None,
        "accuracy_same_set_threshold": res.accuracy_same_set,
        "pairs": res.pairs,
        "pairs_failed": res.pairs_failed,
        "folds": res.folds,
        "images": res.images,
        "identities": res.identities,
        "fta_images": res.fta_images,
        "fta_rate": res.fta_images / res.images if res.images else None,
        "fta_reasons": res.fta_reasons,
        "fnmr_at_fmr": {k: op.to_dict() for k, op in res.operating_points.items()},
        "eer": _num(res.eer.eer) if res.eer else None,
        "eer_threshold": _num(res.eer.threshold) if res.eer else None,
        "operating_point": {
            "target_fmr": res.operating_fmr,
            "threshold": _num(res.operating_threshold),
        },
        "impostor_comparisons": ap.impostors.n if ap else None,
        "impostor_comparisons_failed": ap.impostor_failed if ap else None,
        "genuine_comparisons": (ap.genuine.size + ap.genuine_failed) if ap else None,
        "genuine_comparisons_failed": ap.genuine_failed if ap else None,
        "impostor_scoring": {
            "method": "blocked float32 GEMM over the identity-sorted template matrix (fr_pbd.eval.allpairs)",
            "histogram_bins": ap.impostors.bins if ap else None,
            "exact_top_k": int(ap.impostors.top.size) if ap else None,
        },
        "groups": res.groups.to_dict() if res.groups else None,
        "transactions": res.transactions.to_dict() if res.transactions else None,
        "model_id": res.model_id,
        "models": model_info(models),
        "versions": package_versions(),
        "machine": machine_info(),  # fr_pbd.machine: the same description as every result file
        "timings_s": {k: round(v, 3) for k, v in res.timings.items()},
        "caveats": [
            "LFW is a research benchmark of news photos of public figures; a result on LFW does not show "
            "that a system is fit for commercial use (LFW authors' disclaimer).",
            "Known label errors in pairs.txt are kept as is, as the LFW authors ask.",
            "LFW people never consented; the images are used for evaluation only.",
        ],
    }
    return d


# --- plots ---------------------------------------------------------------------------
def _pct(p: float) -> str:
    v = p * 100
    if v >= 1:
        return f"{v:g}%"
    s = f"{v:.10f}".rstrip("0")
    return s + "%"


def _rate(p: float) -> str:
    """A rate in percent, 3 significant digits: 0.0239 -> '2.39%'."""
    return f"{100 * p:.3g}%"


_TICKS = (1e-7, 1e-6, 1e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9,
          0.95, 0.99)
_X_TICKS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5)


def _det_plot(res: LfwResult, out: Path, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = res.all_pairs
    assert ap is not None
    fmr, fnmr, _thr = metrics.det_curve(ap.genuine, ap.impostors, genuine_failed=ap.genuine_failed)
    n_imp = ap.impostors.n
    n_gen = ap.genuine.size + ap.genuine_failed
    x_lo = min(1e-6, 0.5 / n_imp)
    nz = fnmr[fnmr > 0]
    y_floor = max(0.5 / n_gen, 1e-6)
    y_lo = max(y_floor, (nz.min() / 2) if nz.size else y_floor)
    # show every resolvable operating point: FNMR at FMR 1e-6 can be far above 50 %
    worst = max([op.fnmr for op in res.operating_points.values() if op.resolvable] + [0.0])
    x_hi, y_hi = 0.5, float(min(0.99, max(0.5, 1.25 * worst)))
    px = metrics.probit(np.clip(fmr, x_lo, 1 - 1e-12))
    py = metrics.probit(np.clip(fnmr, y_lo, 1 - 1e-12))
    fig, ax = plt.subplots(figsize=(7.5, 6.2), dpi=150)
    ax.plot(px, py, color="#1f5aa6", lw=2.0, label=f"{res.model_id or 'model'}", zorder=3)
    # equal-error diagonal and the resolution limit of the data
    lo = metrics.probit(min(x_lo, y_lo))
    hi = metrics.probit(max(x_hi, y_hi))
    ax.plot([lo, hi], [lo, hi], ls="--", lw=0.8, color="0.6", zorder=1)
    ax.axvline(metrics.probit(1.0 / n_imp), color="0.5", ls=":", lw=1.0, zorder=1)
    ax.annotate(f"FMR = 1 / {n_imp:,} (the data's limit)", (metrics.probit(1.0 / n_imp), metrics.probit(0.2)),
                xytext=(3, 0), textcoords="offset points", fontsize=7, color="0.35", va="center", ha="left",
                rotation=90)
    colours = ["#d62728", "#ff7f0e", "#2ca02c", "#9467bd"]
    for (key, op), c in zip(res.operating_points.items(), colours):
        x = metrics.probit(max(op.target_fmr, x_lo))
        y = metrics.probit(min(max(op.fnmr, y_lo), y_hi))
        if not op.resolvable:
            # the data cannot show this FMR: no point on the curve, only a note in the legend
            ax.plot([], [], marker="o", ms=7, mfc="white", mec=c, mew=1.8, ls="none",
                    label=f"FMR {key}: not resolved (needs >= {op.min_comparisons:,} impostor comparisons)")
            continue
        ax.plot([x], [y], marker="o", ms=7, mfc=c, mec=c, mew=1.8, ls="none", zorder=4,
                label=f"FMR {key}: FNMR {_rate(op.fnmr)} at t = {op.threshold:.4f}"
                + ("" if op.rule_of_three else " (few comparisons)"))
        ax.annotate(f"FNMR {_rate(op.fnmr)}\n@ FMR {_pct(op.target_fmr)}", (x, y), textcoords="offset points",
                    xytext=(8, 6), fontsize=7.5, color=c, zorder=5,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    if res.eer is not None and res.eer.eer > 0:
        e = metrics.probit(max(res.eer.eer, min(x_lo, y_lo)))
        ax.plot([e], [e], marker="D", ms=6, color="black", ls="none", zorder=4,
                label=f"EER {_rate(res.eer.eer)} at t = {res.eer.threshold:.4f}")
    xt = [t for t in _X_TICKS if x_lo <= t <= x_hi]
    yt = [t for t in _TICKS if y_lo <= t <= y_hi]
    if y_lo < 1e-3:  # a long axis: keep decades only below 1 %
        yt = [t for t in yt if t >= 0.01 or math.isclose(math.log10(t), round(math.log10(t)))]
    finish_det_axes(ax, x=(x_lo, x_hi), y=(y_lo, y_hi), xticks=xt, yticks=yt, label=_pct,
                    xlabel="False match rate (FMR), normal-deviate scale",
                    ylabel="False non-match rate (FNMR), normal-deviate scale", title=title,
                    legend_loc="lower left", legend_size=7.5)
    sub = (f"{n_gen:,} genuine, {n_imp:,} impostor comparisons; FTA {res.fta_images} of {res.images:,} images "
           "(failed genuine comparisons count as non-matches)")
    fig.text(0.01, 0.005, sub, fontsize=6.5, color="0.35")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    paths = [out / "det.png", out / "det.svg"]
    for p in paths:
        fig.savefig(p, metadata={"Date": None} if p.suffix == ".svg" else None)
    plt.close(fig)
    return paths


def _hist_plot(res: LfwResult, out: Path, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = res.all_pairs
    assert ap is not None
    imp = ap.impostors
    # display bins: about 150 across the range the scores occupy (power-of-two groups of fine bins)
    fine = np.flatnonzero(imp.hist)
    span = (fine[-1] - fine[0] + 1) if fine.size else imp.bins
    if ap.genuine.size:
        g_idx = imp._bin(ap.genuine)
        lo_i = min(int(g_idx.min()), int(fine[0]) if fine.size else imp.bins)
        hi_i = max(int(g_idx.max()), int(fine[-1]) if fine.size else 0)
        span = hi_i - lo_i + 1
    group = int(2 ** max(0, math.floor(math.log2(max(1, span / 150)))))
    ih = imp.hist[: imp.bins // group * group].reshape(-1, group).sum(axis=1)
    edges = imp.lo + np.arange(ih.size + 1) * (imp.hi - imp.lo) / ih.size
    gh, _ = np.histogram(np.clip(ap.genuine.astype(np.float64), imp.lo, np.nextafter(imp.hi, -np.inf)), bins=edges)
    width = edges[1] - edges[0]
    used = np.flatnonzero((ih > 0) | (gh > 0))
    a, b = (used[0], used[-1] + 1) if used.size else (0, ih.size)
    a, b = max(0, a - 2), min(ih.size, b + 2)
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=150)
    centres = (edges[:-1] + edges[1:]) / 2
    for h, n, colour, label in ((ih, imp.n, "#d62728", f"impostor ({imp.n:,})"),
                                (gh, ap.genuine.size, "#1f5aa6", f"genuine ({ap.genuine.size:,} scored)")):
        if n == 0:
            continue
        dens = np.where(h > 0, h / (n * width), np.nan)
        ax.step(centres[a:b], dens[a:b], where="mid", color=colour, lw=1.3, label=label)
        ax.fill_between(centres[a:b], np.nan_to_num(dens[a:b]), step="mid", color=colour, alpha=0.15)
    ax.set_yscale("log")
    for n, (key, op) in enumerate(res.operating_points.items()):
        ax.axvline(op.threshold, color="0.3", ls=":", lw=0.9)
        ax.text(op.threshold, 1.0 - 0.12 * (n % 2), f"FMR {key} ", transform=ax.get_xaxis_transform(),
                fontsize=6.5, rotation=90, va="top", ha="right", color="0.3")
    ax.set_xlabel("Score (cosine similarity)")
    ax.set_ylabel("Density (log scale)")
    ax.set_title(title + "\nscore distributions; dotted: thresholds at FMR 1e-3 ... 1e-6", fontsize=10)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.95)
    ax.grid(True, color="0.9", lw=0.6)
    fig.tight_layout()
    paths = [out / "scores.png", out / "scores.svg"]
    for p in paths:
        fig.savefig(p, metadata={"Date": None} if p.suffix == ".svg" else None)
    plt.close(fig)
    return paths


def _markdown(d: dict[str, Any]) -> str:
    def pct(v: float | None, digits: int = 3) -> str:
        return "n/a" if v is None else f"{100 * v:.{digits}f} %"

    proto = d["protocols"]
    lines = ["# LFW evaluation", ""]
    if d["dataset"]["limited"]:
        lines += ["**Limited run (--limit): a smoke test, not comparable with published figures.**", ""]
    lines += [f"## {proto['pairs'][0].upper()}{proto['pairs'][1:]}", ""]
    if d["accuracy_10fold_mean"] is not None:
        lines.append(f"- 10-fold accuracy: **{pct(d['accuracy_10fold_mean'], 2)} ± {pct(d['accuracy_10fold_std'], 2)}** "
                     f"(std over {d['folds']} folds; standard error {pct(d['accuracy_10fold_sem'], 2)}), "
                     f"{d['pairs']:,} pairs, {d['pairs_failed']} with a failed image (counted as errors)")
    elif d["accuracy_same_set_threshold"] is not None:
        lines.append(f"- accuracy at the best threshold on the same pairs (no folds; optimistic): "
                     f"{pct(d['accuracy_same_set_threshold'], 2)}")
    lines.append(f"- FTA: {d['fta_images']} of {d['images']:,} images ({pct(d['fta_rate'])})"
                 + (f"; reasons: {', '.join(f'{k} {v}' for k, v in d['fta_reasons'].items())}" if d["fta_reasons"] else ""))
    if proto["all_comparisons"] is None:
        lines += ["", "Every comparison of LFW was not scored (only the images the pairs name were embedded); "
                  "`--all-pairs` adds FNMR@FMR, EER and the DET."]
    if d["impostor_comparisons"] is not None:
        lines += ["", f"## {proto['all_comparisons'][0].upper()}{proto['all_comparisons'][1:]}", ""]
        lines.append(f"- comparisons: {d['genuine_comparisons']:,} genuine ({d['genuine_comparisons_failed']:,} with a failed "
                     f"image, counted as non-matches), {d['impostor_comparisons']:,} impostor")
        lines.append(f"- EER: {pct(d['eer'])} (threshold {d['eer_threshold']:.4f})")
        lines += ["", "| target FMR | FNMR | threshold | observed FMR | impostor comparisons | resolvable | rule of 3 |",
                  "|---|---:|---:|---:|---:|---|---|"]
        for k, v in d["fnmr_at_fmr"].items():
            lines.append(f"| {k} | {pct(v['fnmr'])} | {v['threshold']:.4f}{'' if v['threshold_exact'] else ' (±1 bin)'} "
                         f"| {v['fmr_observed']:.2e} ({v['false_matches']:,}) | {v['impostor_comparisons']:,} | "
                         f"{'yes' if v['resolvable'] else 'NO'} | {'yes' if v['rule_of_three'] else 'no'} |")
        lines += ["", "![DET curve](det.png)", "", "![score distributions](scores.png)"]
    g = d.get("groups")
    if g:
        lines += ["", f"## Demographic differentials (threshold {g['threshold']:.4f}, {g['threshold_source']})", "",
                  "Wilson 95 % intervals assume independent comparisons; impostor comparisons are not "
                  "independent, so the FMR intervals are too narrow.", ""]
        for attr, a in g["attributes"].items():
            lines += [f"### {attr}", "", "| group | identities | FNMR [95 % CI] | FMR (same-group impostors) [95 % CI] |",
                      "|---|---:|---|---|"]
            for name, s in a["groups"].items():
                fn = "n/a" if s["fnmr"] is None else f"{pct(s['fnmr'])} [{pct(s['fnmr_ci95'][0])}, {pct(s['fnmr_ci95'][1])}]"
                fm = "n/a" if s["fmr"] is None else f"{s['fmr']:.2e} [{s['fmr_ci95'][0]:.2e}, {s['fmr_ci95'][1]:.2e}]"
                lines.append(f"| {name} | {s['identities']} | {fn} ({s['genuine_comparisons']:,}) | "
                             f"{fm} ({s['impostor_comparisons']:,}) |")
            for m in ("fnmr", "fmr"):
                r = a[f"{m}_worst_best"]
                txt = f"{r['ratio']:.2f} ({r['worst']} / {r['best']})" if r["ratio"] is not None else f"n/a ({r['note']})"
                lines.append(f"\n{m.upper()} worst/best: {txt}")
            lines.append("")
        lines += groups_markdown(g, figures="det-groups.png" in d.get("figures", []))
    if d.get("transactions"):
        lines += transactions.markdown(d["transactions"])
    ms = ", ".join(f"{m['name']} (sha256 {str(m.get('sha256'))[:12]}…)" for m in d["models"])
    mc = d["machine"]
    lines += ["", f"Models: {ms or 'n/a'}. Machine: {mc['cpu_model']}, {mc['cores']} cores, {mc['memory_gib']} GiB, "
              f"{mc['os']}, Python {mc['python']}. Templates: {d['timings_s'].get('templates_s', 0):.0f} s "
              f"({d['timings_s'].get('per_image_ms', 0):.1f} ms/image).", "",
              "Caveats: " + " ".join(d["caveats"]), ""]
    return "\n".join(lines)


def write_report(
    res: LfwResult,
    out_dir: Path | str,
    *,
    models: Sequence[str] = (),
    command: str | None = None,
    data_dir: Path | None = None,
    pairs_path: Path | None = None,
    plots: bool = True,
) -> dict[str, Path]:
    """Write report.json, report.md and (with all-comparisons results) det/scores PNG+SVG."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvaluationError(f"cannot create the output folder {out}: {exc.strerror}") from None
    d = report_dict(res, models=models, command=command, data_dir=data_dir, pairs_path=pairs_path)
    files: dict[str, Path] = {}
    if plots and res.all_pairs is not None:
        _pairs_label, every = protocol_labels(res)
        every = every[0].upper() + every[1:]
        for p in _det_plot(res, out, f"DET: {every}") + _hist_plot(res, out, every):
            files[p.name] = p
        if res.groups is not None and res.groups.fairness is not None:
            gtitle = f"DET per group, same-group impostors\n{every}"
            for p in det_groups_plot(res.groups.fairness, out, gtitle):
                files[p.name] = p
        if res.transactions is not None:
            where = f"the {res.images:,} images (limited)" if res.limited else "LFW"
            ttitle = f"DET per attempt, K enrolled images\nevery identity of {where}"
            for p in transactions.det_plot(res.transactions, out, ttitle):
                files[p.name] = p
        d["figures"] = sorted(files)
    (out / "report.json").write_text(json.dumps(d, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (out / "report.md").write_text(_markdown(d), encoding="utf-8")
    files["report.json"] = out / "report.json"
    files["report.md"] = out / "report.md"
    return files
