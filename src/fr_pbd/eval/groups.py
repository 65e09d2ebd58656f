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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from fr_pbd.errors import EvaluationError
from fr_pbd.eval.metrics import wilson_interval

if TYPE_CHECKING:
    from fr_pbd.eval.allpairs import AllPairsScores

__all__ = ["GroupsTable", "read_groups", "GroupStats", "AttributeResult", "GroupsResult", "demographic_differentials"]


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

    def to_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "groups_file": self.source,
            "identities_in_file_not_in_data": self.identities_not_in_data,
            "impostor_definition": "same-group impostors: both identities in the group",
            "ci": "Wilson score 95 %; assumes independent comparisons, which impostor comparisons are not "
                  "(shared images and identities): the FMR intervals are too narrow",
            "attributes": {a.attribute: a.to_dict() for a in self.attributes},
        }


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
