"""Demographic differentials (ISO/IEC 19795-10): per-group FNMR and FMR at one global threshold.

Groups file (CSV, UTF-8): a header whose first column is ``identity``, then one
or more attribute columns (``group``, or e.g. ``sex,age_band``). One row per
identity (the LFW folder name). An empty cell means "not labelled" for that
attribute. Identities of the data set missing from the file are "unlabelled" and
left out of every group (their number is reported).

Per attribute and group g:
* FNMR_g: genuine comparisons of identities in g (failed ones count as rejections);
* FMR_g: impostor comparisons whose *both* identities are in g (same-group
  impostors, as NIST FRTE demographics reports them: the harder, realistic case).
Confidence intervals are Wilson score intervals. They assume independent
comparisons; impostor (and genuine) comparisons share images and identities,
so they are *not* independent and the intervals are too narrow, the FMR ones most.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from fr_pbd.errors import EvaluationError
from fr_pbd.eval.metrics import wilson_interval

if TYPE_CHECKING:
    from fr_pbd.eval.allpairs import AllPairsScores
    from fr_pbd.eval.bootstrap import BootstrapInterval, IdentityCounts
    from fr_pbd.eval.metrics import ScoreDistribution

__all__ = ["GroupsTable", "read_groups", "GroupStats", "AttributeResult", "GroupsResult", "demographic_differentials",
           "WorstGroupThreshold", "worst_group_threshold", "GroupPoint", "GroupDetail", "FairnessResult",
           "analyse_groups"]


@dataclass(frozen=True)
class GroupsTable:
    """identity -> {attribute: label}; ``attributes`` in file order."""

    attributes: tuple[str, ...]
    labels: dict[str, dict[str, str]]
    source: str = ""


def read_groups(path: Path | str) -> GroupsTable:
    """Read and validate a groups CSV (see the module docstring for the format)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise EvaluationError(f"cannot read groups file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise EvaluationError(f"groups file {path.name} is not UTF-8 text") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise EvaluationError(f"groups file {path.name} is empty")
    header = [c.strip() for c in rows[0]]
    if len(header) < 2 or header[0].lower() != "identity":
        raise EvaluationError(f"groups file {path.name}: the header must be 'identity,<attribute>[,<attribute>...]'")
    attrs = header[1:]
    if any(not a for a in attrs) or len(set(attrs)) != len(attrs):
        raise EvaluationError(f"groups file {path.name}: attribute names must be non-empty and distinct")
    labels: dict[str, dict[str, str]] = {}
    for lineno, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise EvaluationError(f"groups file {path.name}: line {lineno} has {len(r)} fields, the header {len(header)}")
        ident = r[0].strip()
        if not ident:
            raise EvaluationError(f"groups file {path.name}: line {lineno}: empty identity")
        if ident in labels:
            raise EvaluationError(f"groups file {path.name}: line {lineno}: identity {ident!r} listed twice")
        labels[ident] = {a: v.strip() for a, v in zip(attrs, r[1:]) if v.strip()}
    return GroupsTable(tuple(attrs), labels, path.name)


@dataclass(frozen=True)
class GroupStats:
    group: str
    identities: int
    images: int
    images_failed: int
    genuine_comparisons: int
    false_non_matches: int
    impostor_comparisons: int
    false_matches: int

    @property
    def fnmr(self) -> float | None:
        return self.false_non_matches / self.genuine_comparisons if self.genuine_comparisons else None

    @property
    def fmr(self) -> float | None:
        return self.false_matches / self.impostor_comparisons if self.impostor_comparisons else None

    def to_dict(self) -> dict:
        return {
            "identities": self.identities,
            "images": self.images,
            "fta_images": self.images_failed,
            "genuine_comparisons": self.genuine_comparisons,
            "false_non_matches": self.false_non_matches,
            "fnmr": self.fnmr,
            "fnmr_ci95": list(wilson_interval(self.false_non_matches, self.genuine_comparisons))
            if self.genuine_comparisons else None,
            "impostor_comparisons": self.impostor_comparisons,
            "false_matches": self.false_matches,
            "fmr": self.fmr,
            "fmr_ci95": list(wilson_interval(self.false_matches, self.impostor_comparisons))
            if self.impostor_comparisons else None,
        }


def _ratio(values: list[tuple[str, float | None]]) -> dict:
    """Worst/best ratio of an error rate over groups (None where undefined)."""
    vals = [(g, v) for g, v in values if v is not None]
    if len(vals) < 2:
        return {"worst": None, "best": None, "ratio": None, "note": "fewer than two groups with comparisons"}
    worst = max(vals, key=lambda gv: gv[1])
    best = min(vals, key=lambda gv: gv[1])
    if best[1] == 0:
        note = "best group has no errors: ratio undefined" if worst[1] > 0 else "no errors in any group"
        return {"worst": worst[0], "best": best[0], "ratio": None, "note": note}
    return {"worst": worst[0], "best": best[0], "ratio": worst[1] / best[1], "note": None}


@dataclass(frozen=True)
class AttributeResult:
    attribute: str
    groups: tuple[GroupStats, ...]
    unlabelled_identities: int

    def to_dict(self) -> dict:
        return {
            "groups": {g.group: g.to_dict() for g in self.groups},
            "unlabelled_identities": self.unlabelled_identities,
            "fnmr_worst_best": _ratio([(g.group, g.fnmr) for g in self.groups]),
            "fmr_worst_best": _ratio([(g.group, g.fmr) for g in self.groups]),
        }


@dataclass(frozen=True)
class GroupsResult:
    threshold: float
    threshold_source: str
    attributes: tuple[AttributeResult, ...]
    source: str
    identities_not_in_data: int
    #: the worst-group operating point, intervals and curves (analyse_groups); None from the bare counts
    fairness: "FairnessResult | None" = None

    def to_dict(self) -> dict:
        attrs = {a.attribute: a.to_dict() for a in self.attributes}
        d = {
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "groups_file": self.source,
            "identities_in_file_not_in_data": self.identities_not_in_data,
            "impostor_definition": "same-group impostors: both identities in the group",
            "ci": "Wilson score 95 %; assumes independent comparisons, which impostor comparisons are not "
                  "(shared images and identities): the FMR intervals are too narrow. The per-identity "
                  "bootstrap intervals (*_ci95_bootstrap) resample people instead",
            "attributes": attrs,
        }
        if self.fairness is not None:
            d["worst_group"] = self.fairness.to_dict()
            for det in self.fairness.details:
                attrs[det.attribute]["groups"][det.group].update(det.to_dict())
            for attr, a in attrs.items():
                pts = [(det.group, det.at_worst) for det in self.fairness.details if det.attribute == attr]
                a["at_worst_group_threshold"] = {
                    "fnmr_worst_best": _ratio([(g, p.false_non_matches / p.genuine_comparisons
                                                if p.genuine_comparisons else None) for g, p in pts]),
                    "fmr_worst_best": _ratio([(g, p.false_matches / p.impostor_comparisons
                                               if p.impostor_comparisons else None) for g, p in pts])}
        return d


def _c2(n: np.ndarray) -> np.ndarray:
    return n * (n - 1) // 2


def demographic_differentials(
    table: GroupsTable,
    names: Sequence[str],
    identity: np.ndarray,
    acquired: np.ndarray,
    ap: "AllPairsScores",
    threshold: float,
    accepted_i: np.ndarray,
    accepted_j: np.ndarray,
    *,
    threshold_source: str = "",
) -> GroupsResult:
    """Per-group FNMR/FMR at ``threshold``.

    ``names[c]`` is the identity of code c; ``identity`` and ``acquired`` give each
    template's code and whether it was acquired; ``accepted_i/j`` the template
    indices of every impostor comparison accepted at ``threshold`` (no scores).
    """
    n_ids = len(names)
    identity = np.asarray(identity, dtype=np.int64)
    ok = np.asarray(acquired, dtype=bool)
    img_all = np.bincount(identity, minlength=n_ids)
    img_ok = np.bincount(identity[ok], minlength=n_ids)
    # genuine: per identity, rejected = scored below threshold + failed comparisons
    gen_total = _c2(img_all)
    gen_rej = np.bincount(ap.genuine_identity[ap.genuine < np.float64(threshold)], minlength=n_ids)
    gen_rej = gen_rej + ap.genuine_failed_per_identity
    name_set = set(names)
    attrs = []
    for attr in table.attributes:
        lab = [table.labels.get(n, {}).get(attr) for n in names]
        groups = sorted({g for g in lab if g is not None})
        gcode = {g: k for k, g in enumerate(groups)}
        of_id = np.array([gcode[g] if g is not None else -1 for g in lab], dtype=np.int64)
        gi = of_id[identity[accepted_i]] if accepted_i.size else np.zeros(0, np.int64)
        gj = of_id[identity[accepted_j]] if accepted_j.size else np.zeros(0, np.int64)
        same_g = (gi == gj) & (gi >= 0)
        fm = np.bincount(gi[same_g], minlength=len(groups))
        stats = []
        for g, k in gcode.items():
            mine = of_id == k
            n_ok = int(img_ok[mine].sum())
            imp = int(_c2(np.int64(n_ok)) - _c2(img_ok[mine]).sum())
            stats.append(GroupStats(
                group=g,
                identities=int(mine.sum()),
                images=int(img_all[mine].sum()),
                images_failed=int(img_all[mine].sum() - n_ok),
                genuine_comparisons=int(gen_total[mine].sum()),
                false_non_matches=int(gen_rej[mine].sum()),
                impostor_comparisons=imp,
                false_matches=int(fm[k]),
            ))
        attrs.append(AttributeResult(attr, tuple(stats), int((of_id < 0).sum())))
    not_in = sum(1 for n in table.labels if n not in name_set)
    if math.isnan(threshold):
        raise EvaluationError("the operating threshold is not a number")
    return GroupsResult(float(threshold), threshold_source, tuple(attrs), table.source, not_in)


# --------------------------------------------------------------------------------------
# An operating point that holds for every group (issue 17)
# --------------------------------------------------------------------------------------
#: Curve grid for the audit: multiples of 2**-10. Every one is an edge of the
#: impostor histogram (2**20 bins on [-1, 1)), so the counts there are exact.
GRID_STEP = 2.0 ** -10
GRID_MAX_POINTS = 400
#: DET points per group kept in report.json (the plot uses more, in memory).
DET_POINTS_JSON = 150
ALL = "all comparisons"


@dataclass(frozen=True)
class WorstGroupThreshold:
    """The smallest threshold at which every labelled group's same-group FMR, and the
    FMR over all comparisons, is at most ``target_fmr`` (the max of their own thresholds)."""

    target_fmr: float
    threshold: float
    binding: str  # "attribute=group" whose own threshold is the largest, or ALL
    own_thresholds: dict[str, float]  # per "attribute=group" and ALL
    exact: bool
    unresolved: tuple[str, ...]  # groups with fewer than 1/target impostor comparisons

    def to_dict(self) -> dict:
        return {"target_fmr": self.target_fmr, "threshold": self.threshold, "binding": self.binding,
                "own_thresholds": self.own_thresholds, "threshold_exact": self.exact,
                "unresolved_groups": list(self.unresolved)}


def worst_group_threshold(target_fmr: float, groups: "dict[str, ScoreDistribution]",
                          overall: "ScoreDistribution | None" = None) -> WorstGroupThreshold:
    """The pairwise threshold for ``target_fmr`` chosen so that the *worst* group meets it.

    ``groups`` maps a group's name to its same-group impostor scores; ``overall``
    (optional) the impostor scores of every comparison, so the global promise holds
    too. FMR is non-increasing in the threshold, so the largest of the groups' own
    smallest-compliant thresholds is compliant for all of them and no smaller one is.
    A group with fewer than 1/target impostor comparisons cannot show the target:
    it is listed in ``unresolved`` (its threshold is then above its largest impostor score).
    """
    if not (0.0 < target_fmr < 1.0):
        raise EvaluationError("target FMR must be in (0, 1)")
    dists = dict(groups)
    if overall is not None:
        dists[ALL] = overall
    dists = {k: v for k, v in dists.items() if v.n > 0}
    if not dists:
        raise EvaluationError("no group has impostor comparisons")
    own: dict[str, float] = {}
    exact = True
    unresolved = []
    for name, d in dists.items():
        t, _fm, ex = d.fmr_threshold(target_fmr)
        own[name] = float(t)
        exact &= bool(ex)
        if d.n * target_fmr < 1.0 - 1e-9:
            unresolved.append(name)
    binding = max(own, key=lambda k: (own[k], k != ALL))
    return WorstGroupThreshold(target_fmr, own[binding], binding, own, exact, tuple(unresolved))


@dataclass(frozen=True)
class GroupPoint:
    """One group at one threshold: counts, Wilson and per-identity bootstrap intervals."""

    threshold: float
    genuine_comparisons: int
    false_non_matches: int
    impostor_comparisons: int
    false_matches: int
    bootstrap: "BootstrapInterval | None" = None

    def to_dict(self) -> dict:
        gn, fn, im, fm = self.genuine_comparisons, self.false_non_matches, self.impostor_comparisons, self.false_matches
        d = {"threshold": self.threshold,
             "fnmr": fn / gn if gn else None, "false_non_matches": fn, "genuine_comparisons": gn,
             "fnmr_ci95_wilson": list(wilson_interval(fn, gn)) if gn else None,
             "fmr": fm / im if im else None, "false_matches": fm, "impostor_comparisons": im,
             "fmr_ci95_wilson": list(wilson_interval(fm, im)) if im else None}
        d.update(self.bootstrap.to_dict() if self.bootstrap else
                 {"fnmr_ci95_bootstrap": None, "fmr_ci95_bootstrap": None})
        return d


@dataclass
class GroupDetail:
    """Everything measured for one group beyond the global-threshold counts."""

    attribute: str
    group: str
    own: dict  # target key -> OperatingPoint on the group's own comparisons
    at_global: GroupPoint
    at_worst: GroupPoint
    worst_by_target: dict  # target key -> GroupPoint (no bootstrap)
    curve: dict  # thresholds / false_matches / false_non_matches on the grid
    det: tuple  # (fmr, fnmr, threshold) arrays for the plot
    scores: "AllPairsScores" = field(repr=False, default=None)

    @property
    def key(self) -> str:
        return f"{self.attribute}={self.group}"

    def to_dict(self) -> dict:
        fmr, fnmr, _thr = self.det
        if fmr.size > DET_POINTS_JSON:
            idx = np.unique(np.linspace(0, fmr.size - 1, DET_POINTS_JSON).round().astype(np.int64))
            fmr, fnmr = fmr[idx], fnmr[idx]
        return {
            "fnmr_at_own_fmr_threshold": {k: op.to_dict() for k, op in self.own.items()},
            "at_global_threshold": self.at_global.to_dict(),
            "at_worst_group_threshold": self.at_worst.to_dict(),
            "at_worst_group_threshold_by_target": {k: p.to_dict() for k, p in self.worst_by_target.items()},
            "curve": self.curve,
            # rates only: the thresholds of DET points are scores of single comparisons
            "det": {"fmr": [float(f"{v:.5g}") for v in fmr], "fnmr": [float(f"{v:.5g}") for v in fnmr]},
        }


@dataclass(frozen=True)
class FairnessResult:
    target_fmr: float
    global_threshold: float
    worst: dict  # target key -> WorstGroupThreshold
    overall_at_global: tuple[int, int, int, int]  # genuine, false non-matches, impostors, false matches
    overall_at_worst: tuple[int, int, int, int]
    details: tuple[GroupDetail, ...]
    resamples: int
    seed: int
    global_source: str = ""  # how the global threshold was set: "FMR=1e-4" or "given"

    def detail(self, attribute: str, group: str) -> GroupDetail:
        return next(d for d in self.details if d.attribute == attribute and d.group == group)

    def to_dict(self) -> dict:
        from fr_pbd.eval.metrics import fmr_key

        def rates(c: tuple[int, int, int, int]) -> dict:
            gn, fn, im, fm = c
            return {"fnmr": fn / gn if gn else None, "fmr": fm / im if im else None, "genuine_comparisons": gn,
                    "false_non_matches": fn, "impostor_comparisons": im, "false_matches": fm}

        w = self.worst[fmr_key(self.target_fmr)]
        return {
            "target_fmr": self.target_fmr,
            "rule": "worst group: the smallest threshold at which every labelled group's same-group FMR and the "
                    "FMR over all comparisons are <= target (fr_pbd.eval.groups.worst_group_threshold)",
            "threshold": w.threshold,
            "binding": w.binding,
            "by_target": {k: v.to_dict() for k, v in self.worst.items()},
            "all_comparisons_at_global_threshold": rates(self.overall_at_global),
            "all_comparisons_at_worst_group_threshold": rates(self.overall_at_worst),
            "bootstrap": {"resamples": self.resamples, "seed": self.seed, "unit": "identity (resampled with "
                          "replacement within the group)", "interval": "percentile 95 %",
                          "note": "the threshold is held fixed: its own uncertainty is not included"},
            "curve_note": "curve: per group, counts at thresholds on a grid (multiples of 2^-10, exact) plus the "
                          "operating thresholds; accepted = score >= threshold. FMR at a threshold between grid "
                          "points is at most the FMR at the grid point below it (a conservative reading).",
        }


def _grid(lo: float, extra: Sequence[float]) -> np.ndarray:
    step = GRID_STEP
    while (1.0 - lo) / step > GRID_MAX_POINTS:
        step *= 2
    start = math.floor(lo / step) * step
    base = start + step * np.arange(int(round((1.0 - start) / step)) + 1)
    return np.unique(np.concatenate([base, np.asarray(extra, np.float64)]))


def _subset_scores(templates, identity, ok, members: np.ndarray, top_k: int):
    from fr_pbd.eval.allpairs import score_all_pairs

    idx = np.flatnonzero(members[identity])
    return idx, score_all_pairs(templates[idx], identity[idx], ok[idx], top_k=top_k)


def _accepted_pairs(templates, identity, ok, idx: np.ndarray, ap_g: "AllPairsScores", t: float):
    """Template indices (global) of the group's impostor comparisons accepted at t (exact)."""
    from fr_pbd.eval.allpairs import impostor_pairs_at_or_above

    imp = ap_g.impostors
    if imp.complete or t > imp.top_floor:
        sel = imp.top >= np.float64(t)
        return idx[imp.top_i[sel].astype(np.int64)], idx[imp.top_j[sel].astype(np.int64)]
    pi, pj = impostor_pairs_at_or_above(templates[idx], identity[idx], t, ok[idx])
    return idx[pi], idx[pj]


class _GroupCounter:
    """One group's exact counts at any threshold: per identity (for the bootstrap) and in total."""

    def __init__(self, x, identity, ok, img_ok, members: np.ndarray, idx: np.ndarray, ap_g: "AllPairsScores"):
        n_ids = members.size
        self.x, self.identity, self.ok, self.idx, self.ap_g = x, identity, ok, idx, ap_g
        self.codes = np.flatnonzero(members)  # identity codes of the group, local index = position
        self.local = np.full(n_ids, -1, np.int64)
        self.local[self.codes] = np.arange(self.codes.size)
        self.gen_total = _c2(np.bincount(identity, minlength=n_ids))[self.codes]
        self.failed = np.zeros(n_ids, np.int64)
        self.failed[:ap_g.genuine_failed_per_identity.size] = ap_g.genuine_failed_per_identity
        self.images = img_ok[self.codes]
        self.n_genuine = int(ap_g.genuine.size + ap_g.genuine_failed)

    def at(self, t: float) -> "tuple[IdentityCounts, GroupPoint]":
        from fr_pbd.eval.bootstrap import IdentityCounts

        ap_g, n = self.ap_g, self.codes.size
        rej = np.bincount(ap_g.genuine_identity[ap_g.genuine < np.float64(t)], minlength=self.local.size)
        rej = (rej + self.failed)[self.codes]
        a, b = _accepted_pairs(self.x, self.identity, self.ok, self.idx, ap_g, t)
        la, lb = self.local[self.identity[a]], self.local[self.identity[b]]
        key, cnt = np.unique(np.minimum(la, lb) * n + np.maximum(la, lb), return_counts=True)
        ic = IdentityCounts(self.gen_total, rej, self.images, key // n, key % n, cnt)
        return ic, GroupPoint(float(t), self.n_genuine, int(rej.sum()), int(ap_g.impostors.n), int(a.size))


def analyse_groups(
    table: GroupsTable,
    names: Sequence[str],
    identity: np.ndarray,
    acquired: np.ndarray,
    templates: np.ndarray,
    ap: "AllPairsScores",
    threshold: float,
    *,
    threshold_source: str,
    target_fmr: float,
    targets: Sequence[float],
    top_k: int = 2**17,
    resamples: int | None = None,
    seed: int | None = None,
) -> GroupsResult:
    """Per-group figures at the global ``threshold`` and at the worst-group threshold for
    ``target_fmr`` (and for each of ``targets``), with bootstrap intervals, a compact
    curve per group for the audit, and per-group DET data. Scores stay in memory."""
    from fr_pbd.eval import metrics
    from fr_pbd.eval.allpairs import impostor_pairs_at_or_above
    from fr_pbd.eval.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, identity_bootstrap

    resamples = DEFAULT_RESAMPLES if resamples is None else resamples
    seed = DEFAULT_SEED if seed is None else seed
    identity = np.asarray(identity, dtype=np.int64)
    ok = np.asarray(acquired, dtype=bool)
    x = np.asarray(templates)
    n_ids = len(names)
    imp = ap.impostors
    t_global = float(threshold)
    if imp.complete or t_global > imp.top_floor:
        sel = imp.top >= np.float64(t_global)
        pi, pj = imp.top_i[sel].astype(np.int64), imp.top_j[sel].astype(np.int64)
    else:
        pi, pj = impostor_pairs_at_or_above(x, identity, t_global, ok)
    base = demographic_differentials(table, names, identity, ok, ap, t_global, pi, pj,
                                     threshold_source=threshold_source)

    # every labelled group's own comparisons (a blocked pass over the group's templates)
    scored = []
    for ai, attr in enumerate(table.attributes):
        lab = [table.labels.get(n, {}).get(attr) for n in names]
        for gi, g in enumerate(sorted({v for v in lab if v is not None})):
            members = np.array([v == g for v in lab], dtype=bool)
            idx, ap_g = _subset_scores(x, identity, ok, members, top_k)
            scored.append((ai, gi, attr, g, members, idx, ap_g))
    targets = sorted(set(targets) | {target_fmr}, reverse=True)
    worst = {}
    for tf in targets:
        dists = {f"{attr}={g}": ap_g.impostors for _ai, _gi, attr, g, _m, _idx, ap_g in scored}
        worst[metrics.fmr_key(tf)] = worst_group_threshold(tf, dists, imp)
    t_worst = worst[metrics.fmr_key(target_fmr)].threshold

    g_sorted = np.sort(ap.genuine)
    n_gen = int(ap.genuine.size + ap.genuine_failed)

    def overall(t: float) -> tuple[int, int, int, int]:
        rej = int(np.searchsorted(g_sorted, np.float64(t), side="left")) + ap.genuine_failed
        if imp.complete or t > imp.top_floor:
            fm = int(imp.count_ge(t))
        else:
            fm = int(impostor_pairs_at_or_above(x, identity, t, ok)[0].size)
        return n_gen, rej, int(imp.n), fm

    lo = imp.fmr_threshold(1e-2)[0]
    extra = sorted({t_global, *(w.threshold for w in worst.values()),
                    *(t for w in worst.values() for t in w.own_thresholds.values())})
    details = []
    img_ok = np.bincount(identity[ok], minlength=n_ids)
    for ai, gi, attr, g, members, idx, ap_g in scored:
        counter = _GroupCounter(x, identity, ok, img_ok, members, idx, ap_g)
        point_counts = counter.at
        gs = np.sort(ap_g.genuine)
        n_g_gen = counter.n_genuine

        c_glob, p_glob = point_counts(t_global)
        c_worst, p_worst = point_counts(t_worst)
        b_glob, b_worst = identity_bootstrap([c_glob, c_worst], resamples=resamples, seed=[seed, ai, gi])
        p_glob = GroupPoint(**{**p_glob.__dict__, "bootstrap": b_glob})
        p_worst = GroupPoint(**{**p_worst.__dict__, "bootstrap": b_worst})
        by_target = {k: point_counts(w.threshold)[1] for k, w in worst.items()}
        own = metrics.fnmr_at_fmrs(ap_g.genuine, ap_g.impostors, targets, genuine_failed=ap_g.genuine_failed)
        # the curve: exact counts only (grid = histogram edges; extra thresholds where exact)
        gi_imp = ap_g.impostors
        grid = [t for t in _grid(lo, []) if t <= 1.0]
        grid += [t for t in extra if gi_imp.complete or t > gi_imp.top_floor]
        grid = np.unique(np.asarray(grid, np.float64))
        fm = [int(gi_imp.count_ge(float(t))) for t in grid]
        fnm = (np.searchsorted(gs, grid, side="left") + ap_g.genuine_failed).astype(np.int64)
        curve = {"impostor_comparisons": int(gi_imp.n), "genuine_comparisons": n_g_gen,
                 "thresholds": [float(t) for t in grid], "false_matches": fm,
                 "false_non_matches": [int(v) for v in fnm]}
        det = metrics.det_curve(ap_g.genuine, gi_imp, genuine_failed=ap_g.genuine_failed)
        details.append(GroupDetail(attr, g, own, p_glob, p_worst, by_target, curve, det, ap_g))
    fair = FairnessResult(target_fmr, t_global, worst, overall(t_global), overall(t_worst), tuple(details),
                          resamples, seed, threshold_source)
    return GroupsResult(base.threshold, base.threshold_source, base.attributes, base.source,
                        base.identities_not_in_data, fair)
