"""The DPIA checks of a black box, from the model its TARGET.toml declares in ``[model]``.

A product that is not fr-pbd keeps its model and threshold to itself, so from
outside the DPIA checks have nothing to read. The auditor can declare them::

    [model]
    sha256 = "55533b28..."   # the weights file the product loads (or: id = "dlib-resnet-v1")
    metric = "euclidean"     # or "cosine"
    threshold = 0.35         # euclidean: match if distance < threshold; cosine: if similarity >= threshold
    unit_norm = false        # euclidean only: the product L2-normalises descriptors before the distance
    target_fmr = 1e-4        # the FMR the product claims (default: the manifest's claim for the model)

Where the declared model is one fr-pbd's manifest knows (by id, by the sha256 of
the file fr-pbd loads, or by the sha256 of the upstream weights file it was
converted from), the provenance check reads the manifest; where ``[dpia] eval``
gives an ``fr-pbd eval lfw --groups`` report of that model, the accuracy and
bias checks read it at the declared threshold, converted into the report's
units (cosine similarity of unit-length templates) only when the conversion is
exact. Euclidean distance d and cosine similarity s of two descriptors a, b obey
d^2 = |a|^2 + |b|^2 - 2|a||b|s: one distance is one cosine (s = 1 - d^2/2) only
when every descriptor has length 1. Otherwise the checks are INCONCLUSIVE and
say why; no figure is ever made up.

The report's curves give counts at thresholds on a grid; between grid points a
rate is read as a bracket (FMR falls, FNMR rises with the threshold), and a
verdict uses the side that over-states the FMR, as :func:`fr_pbd.audit.checks.dpia_bias` does.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fr_pbd.audit.checks import (
    FAIL,
    PASS,
    TITLE_FROM_TABLE,
    Check,
    _claim,
    inconclusive,
)
from fr_pbd.errors import AuditError

__all__ = ["RAW_NORMS", "DeclaredModel", "dpia_accuracy", "dpia_bias", "dpia_provenance", "parse_model"]

_KEYS = {"id", "sha256", "metric", "threshold", "unit_norm", "target_fmr"}
METRICS = ("cosine", "euclidean")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
#: What the report's units must be for a declared threshold to be read on its curves (fr_pbd.eval.report).
REPORT_SCORE = "cosine similarity of L2-normalised templates"
REPORT_DECISION = "accept if score >= threshold"
MODEL_NEEDS = ("a [model] table naming a model fr-pbd's manifest knows (id, or the sha256 of its weights file), or "
               "the vendor's licence, provenance and training-data statement reviewed by hand")
EVAL_NEEDS = ("[dpia] eval in the TARGET.toml: an `fr-pbd eval lfw --groups FILE.csv` report of the declared "
              "model")

#: Lengths of raw descriptors as a product gets them from the model's own library, measured, not assumed:
#: dlib 20.0.1 (dlib-bin) with face_recognition_models 0.3.0, Howdy's way (HOG detector, 5-point shape
#: predictor, ``compute_face_descriptor``), on the first image of every 97th identity of LFW deep-funneled
#: (sorted names; 60 faces). tests/test_audit_model.py measures them again with dlib and holds these figures.
RAW_NORMS: dict[str, dict[str, Any]] = {
    "dlib-resnet-v1": {"faces": 60, "min": 1.2236, "max": 1.5911, "mean": 1.4358,
                       "how": "dlib 20.0.1, face_recognition_models 0.3.0: HOG detector, 5-point shape, "
                              "compute_face_descriptor; first image of every 97th LFW identity"},
}


@dataclass(frozen=True)
class DeclaredModel:
    """The ``[model]`` table, checked, and the manifest entry it resolves to (``known``; None: unknown)."""

    metric: str
    threshold: float
    id: str | None = None
    sha256: str | None = None
    unit_norm: bool = False
    target_fmr: float | None = None
    known: str | None = None
    matched_by: str | None = None  # how the declaration met the manifest

    def describe(self) -> str:
        what = " and ".join(x for x in (f"id {self.id}" if self.id else "",
                                        f"sha256 {self.sha256}" if self.sha256 else "") if x)
        rule = ("match if Euclidean distance < " if self.metric == "euclidean" else "match if cosine similarity >= ")
        norm = (", descriptors L2-normalised by the product (declared)" if self.unit_norm else
                ", raw descriptors (not declared unit length)") if self.metric == "euclidean" else ""
        return f"declared in [model]: {what}; {rule}{self.threshold:g}{norm}"


def parse_model(table: object, where: str | os.PathLike[str]) -> DeclaredModel:
    """Check a ``[model]`` table and resolve it against fr-pbd's manifest; one-line AuditError if it is wrong."""
    w = f"{where}: [model]"
    if not isinstance(table, dict):
        raise AuditError(f"{w} must be a table")
    unknown = set(table) - _KEYS
    if unknown:
        raise AuditError(f"{w}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(_KEYS))})")
    metric = table.get("metric")
    if metric not in METRICS:
        raise AuditError(f"{w} metric must be \"cosine\" or \"euclidean\"")
    t = table.get("threshold")
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t):
        raise AuditError(f"{w} threshold must be a finite number")
    if metric == "cosine" and not -1.0 <= t <= 1.0:
        raise AuditError(f"{w} threshold must be a cosine similarity, from -1 to 1")
    if metric == "euclidean" and t < 0:
        raise AuditError(f"{w} threshold must be a distance (>= 0)")
    unit_norm = table.get("unit_norm", False)
    if not isinstance(unit_norm, bool):
        raise AuditError(f"{w} unit_norm must be true or false")
    fmr = table.get("target_fmr")
    if fmr is not None and (not isinstance(fmr, (int, float)) or isinstance(fmr, bool) or not 0 < fmr < 1):
        raise AuditError(f"{w} target_fmr must be a rate between 0 and 1 (e.g. 1e-4)")
    mid, sha = table.get("id"), table.get("sha256")
    if mid is None and sha is None:
        raise AuditError(f"{w} needs sha256 (of the weights file the product loads) or id (a manifest model)")
    if mid is not None and (not isinstance(mid, str) or not mid):
        raise AuditError(f"{w} id must be a model name")
    if sha is not None and (not isinstance(sha, str) or not _HEX64.match(sha)):
        raise AuditError(f"{w} sha256 must be 64 hexadecimal digits")
    sha = sha.lower() if sha else None
    known, how = _resolve(mid, sha, w)
    return DeclaredModel(metric=metric, threshold=float(t), id=mid, sha256=sha, unit_norm=unit_norm,
                         target_fmr=float(fmr) if fmr is not None else None, known=known, matched_by=how)


def _resolve(mid: str | None, sha: str | None, w: str) -> tuple[str | None, str | None]:
    from fr_pbd import models

    manifest = models.manifest()
    by_sha, how_sha = None, None
    if sha:
        for name, s in manifest.items():
            if s.sha256 == sha:
                by_sha, how_sha = name, f"sha256 of {s.file}, the file fr-pbd loads (manifest sha256)"
                break
        else:  # the upstream file a model was converted from (not another manifest model: a derived variant)
            for name, s in manifest.items():
                if s.extra.get("source_sha256") == sha and "source_file" in s.extra:
                    by_sha, how_sha = name, (f"sha256 of {s.extra['source_file']}, the upstream weights file "
                                             f"fr-pbd converts into {s.file} (manifest source_sha256)")
                    break
    if mid is not None and mid in manifest and sha and by_sha != mid:
        pinned = " and ".join(x for x in (manifest[mid].sha256, manifest[mid].extra.get("source_sha256")) if x)
        raise AuditError(f"{w} sha256 is not a file of {mid} (the manifest pins {pinned})")
    name = by_sha if by_sha else (mid if mid in manifest else None)
    if name is not None and manifest[name].role != "embedder":
        raise AuditError(f"{w} {name} is a {manifest[name].role}, not a face-recognition model (role embedder)")
    return name, (how_sha if by_sha else ("id, as declared (no file hashed)" if name else None))


# --------------------------------------------------------------------------------------
# DPIA.model-provenance
# --------------------------------------------------------------------------------------
def dpia_provenance(m: DeclaredModel) -> Check:
    """The manifest's licence, provenance and training-data statement of a known model, as for a home."""
    from fr_pbd import models

    title = TITLE_FROM_TABLE
    if m.known is None:
        names = ", ".join(n for n, s in models.manifest().items() if s.role == "embedder")
        return inconclusive("DPIA.model-provenance", "DPIA", title,
                            f"the declared model ({m.describe()}) is not in fr-pbd's manifest: its licence, provenance "
                            "and training data are unknown to the audit", MODEL_NEEDS,
                            [f"face-recognition models fr-pbd knows: {names}"])
    s = models.spec(m.known)
    details = [m.describe(), f"resolved to {m.known} by the {m.matched_by}",
               f"{m.known} ({s.role}, {s.licence}): provenance: {s.provenance}",
               f"{m.known}: training data: {s.training_data}",
               ("covers the face-recognition model only: any other model the product runs (a detector, a landmark "
                "predictor, a liveness model) is not declared and not reviewed here")]
    missing = [k for k in ("provenance", "training_data", "licence") if not str(getattr(s, k)).strip()]
    values = {m.known: {"role": s.role, "licence": s.licence, "sha256": s.sha256, "matched_by": m.matched_by}}
    if missing:
        return Check("DPIA.model-provenance", "DPIA", title, FAIL, f"model {m.known}: no {', '.join(missing)} "
                     "statement", details, values)
    return Check("DPIA.model-provenance", "DPIA", title, PASS,
                 f"the declared model is {m.known}: licence {s.licence}, provenance and training-data statement in "
                 "fr-pbd's manifest (read them: the people in the training data did not consent)", details, values)


# --------------------------------------------------------------------------------------
# reading an evaluation report at a declared threshold
# --------------------------------------------------------------------------------------
def _read_report(path: Path) -> tuple[dict | None, str | None]:
    """An eval report, bare or inside a result record (docs/results: ``{"schema": "fr-pbd/result-record/1",
    "result": {...}}``)."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"cannot read the evaluation report {path}: {exc}"
    if isinstance(d, dict) and str(d.get("schema", "")).startswith("fr-pbd/result-record") \
            and isinstance(d.get("result"), dict):
        d = d["result"]
    if not isinstance(d, dict) or not str(d.get("schema", "")).startswith("fr-pbd/eval"):
        return None, f"{path} is not an fr-pbd evaluation report (schema fr-pbd/eval-*)"
    return d, None


@dataclass(frozen=True)
class _Side:
    at: float  # the report's threshold this count was taken at
    errors: int
    trials: int

    @property
    def rate(self) -> float:
        return self.errors / self.trials


@dataclass(frozen=True)
class _Bracket:
    """A rate at the declared threshold between two of the report's points (None: no point on that side)."""

    lo: _Side | None
    hi: _Side | None

    def text(self, name: str, pct: bool = False) -> str:
        f = (lambda s: f"{100 * s.rate:.2f} %") if pct else (lambda s: f"{s.rate:.3g}")
        if self.exact:
            return f"{name} {f(self.lo)} ({self.lo.errors:,} of {self.lo.trials:,}, exact)"
        parts = [f"at least {f(self.lo)} ({self.lo.errors:,} of {self.lo.trials:,} at {self.lo.at:.6g})"
                 if self.lo else "no lower bound in the report",
                 f"at most {f(self.hi)} ({self.hi.errors:,} of {self.hi.trials:,} at {self.hi.at:.6g})"
                 if self.hi else "no upper bound in the report"]
        return f"{name} " + ", ".join(parts)

    @property
    def exact(self) -> bool:
        return bool(self.lo and self.hi and self.lo.rate == self.hi.rate)

    def value(self) -> dict[str, Any]:
        return {"at_least": self.lo.rate if self.lo else None, "at_most": self.hi.rate if self.hi else None,
                "exact": self.exact}


Point = tuple[float, int | None, int, int | None, int]  # threshold, FM, impostors, FNM, genuine


def _rates(points: list[Point], t: float, strict: bool, fm_floor: list[tuple[float, int, int]] = ()
           ) -> tuple[_Bracket, _Bracket]:
    """(FMR, FNMR) at ``t`` from points (threshold, false matches, impostors, false non-matches, genuine).

    The report accepts ``score >= threshold``. A point at or below t has at least the FMR and at most the
    FNMR of t; a point above t (at t too, unless the product's rule is strict, ``score > t``) the reverse.
    ``fm_floor``: (threshold, false matches, impostors) that only bound the FMR from below. Of several
    points on one side the tightest bound is taken.
    """
    below = [p for p in points if p[0] <= t]
    above = [p for p in points if (p[0] > t if strict else p[0] >= t)]

    def sides(ps: list, k: int) -> list[_Side]:
        return [_Side(float(p[0]), int(p[k]), int(p[k + 1])) for p in ps if p[k] is not None and p[k + 1]]

    def best(cands: list[_Side], pick) -> _Side | None:
        return pick(cands, key=lambda s: s.rate) if cands else None

    floor = [_Side(float(a), int(fm), int(n)) for a, fm, n in fm_floor if (a > t if strict else a >= t) and n]
    fmr = _Bracket(lo=best(sides(above, 1) + floor, max), hi=best(sides(below, 1), min))
    fnmr = _Bracket(lo=best(sides(below, 3), max), hi=best(sides(above, 3), min))
    return fmr, fnmr


def _curve_points(curve: dict) -> list[Point]:
    return [(float(t), int(fm), int(curve["impostor_comparisons"]), int(fnm), int(curve["genuine_comparisons"]))
            for t, fm, fnm in zip(curve["thresholds"], curve["false_matches"], curve["false_non_matches"])]


def _overall_points(d: dict) -> tuple[list[Point], list[tuple[float, int, int]], list[str]]:
    """Counts over all comparisons, and how they were found.

    The report's FMR targets and operating points give both rates. Where one attribute's groups hold every
    genuine comparison, their summed curves give the FNMR exactly, and their same-group false matches over
    all impostor comparisons a lower bound on the FMR (cross-group false matches are not in them).
    """
    pts: list[Point] = []
    floor: list[tuple[float, int, int]] = []
    notes = []
    keys = ("threshold", "false_matches", "impostor_comparisons", "false_non_matches", "genuine_comparisons")
    groups = d.get("groups") if isinstance(d.get("groups"), dict) else {}
    wg = groups.get("worst_group") or {}
    ops = [*(v for v in (d.get("fnmr_at_fmr") or {}).values() if isinstance(v, dict)),
           dict(wg.get("all_comparisons_at_global_threshold") or {}, threshold=groups.get("threshold")),
           dict(wg.get("all_comparisons_at_worst_group_threshold") or {}, threshold=wg.get("threshold"))]
    for op in ops:
        if all(isinstance(op.get(k), (int, float)) for k in keys):
            pts.append(tuple(op[k] for k in keys))  # type: ignore[arg-type]
    notes.append(f"over all comparisons, the report counts both errors at {len(pts)} thresholds (its FMR targets "
                 "and operating points)")
    n_imp, n_gen = d.get("impostor_comparisons"), d.get("genuine_comparisons")
    for attr, a in (groups.get("attributes") or {}).items():
        curves = [s.get("curve") for s in (a.get("groups") or {}).values()]
        if not curves or not all(isinstance(c, dict) for c in curves) or not isinstance(n_gen, int) \
                or not isinstance(n_imp, int) or sum(int(c["genuine_comparisons"]) for c in curves) != n_gen:
            continue
        for t in sorted(set.intersection(*(set(c["thresholds"]) for c in curves))):
            ks = [c["thresholds"].index(t) for c in curves]
            pts.append((float(t), None, n_imp, sum(int(c["false_non_matches"][k]) for c, k in zip(curves, ks)), n_gen))
            floor.append((float(t), sum(int(c["false_matches"][k]) for c, k in zip(curves, ks)), n_imp))
        notes.append(f"the {attr} groups hold all {n_gen:,} genuine comparisons: their summed curves give the FNMR "
                     f"at every grid point, and their same-group false matches over all {n_imp:,} impostor "
                     "comparisons a lower bound on the FMR")
        break
    return pts, floor, notes


# --------------------------------------------------------------------------------------
# DPIA.accuracy and DPIA.bias
# --------------------------------------------------------------------------------------
@dataclass
class _Reading:
    """What both checks need: the report, the declared threshold in its units, the claim, the evidence so far."""

    report: dict
    threshold: float  # in the report's units (cosine similarity; accept if >= threshold)
    strict: bool  # the product's rule excludes the threshold itself (d < D is s > t)
    target: float
    details: list[str]
    values: dict[str, Any]


def _prepare(cid: str, m: DeclaredModel, eval_path: Path | None) -> Check | _Reading:
    """The declared threshold in the report's units, or the INCONCLUSIVE check that says why it cannot be."""
    title = TITLE_FROM_TABLE
    base = [m.describe()]
    if m.known is None:
        return inconclusive(cid, "DPIA", title, "the declared model is not one fr-pbd knows, so no fr-pbd evaluation "
                            "of it exists", MODEL_NEEDS + "; then " + EVAL_NEEDS, base)
    if eval_path is None:
        return inconclusive(cid, "DPIA", title, f"no evaluation report was given for {m.known}", EVAL_NEEDS, base)
    d, err = _read_report(eval_path)
    if err:
        return inconclusive(cid, "DPIA", title, f"no usable evaluation report: {err}", EVAL_NEEDS, base)
    base.append(f"report {eval_path}: {d.get('schema')}, created {d.get('created_utc')}, model {d.get('model_id')}, "
                f"{(d.get('dataset') or {}).get('name')}, {d.get('images')} images of {d.get('identities')} identities")
    if d.get("model_id") != m.known:
        return inconclusive(cid, "DPIA", title, f"the report evaluates {d.get('model_id')}, but the declared model is "
                            f"{m.known}: no figures for it", EVAL_NEEDS, base)
    conv = d.get("conventions") or {}
    if not str(conv.get("score", "")).startswith(REPORT_SCORE) or conv.get("decision") != REPORT_DECISION:
        return inconclusive(cid, "DPIA", title, f"the report's score is {conv.get('score')!r} ({conv.get('decision')}),"
                            f" not the {REPORT_SCORE} this audit can convert a threshold into", EVAL_NEEDS, base)
    if m.metric == "cosine":
        t, strict = m.threshold, False
        base.append(f"threshold {t:g}: a cosine similarity, the report's own score (cosine does not depend on the "
                    "descriptors' length): no conversion")
    elif m.unit_norm:
        t, strict = 1.0 - m.threshold ** 2 / 2.0, True
        base.append(f"threshold {m.threshold:g} (Euclidean distance between descriptors the product L2-normalises, as "
                    f"declared): on unit vectors d^2 = 2 - 2s, so d < {m.threshold:g} is exactly cosine s > {t:.6g}")
    else:
        norms = RAW_NORMS.get(m.known)
        measured = (f"raw {m.known} descriptors are not unit length: measured {norms['min']:.2f} to "
                    f"{norms['max']:.2f} (mean {norms['mean']:.2f}) on {norms['faces']} LFW faces ({norms['how']})"
                    if norms else f"the length of raw {m.known} descriptors is not known to be 1")
        return inconclusive(
            cid, "DPIA", title,
            f"the declared Euclidean threshold {m.threshold:g} has no exact equivalent in the report's cosine units: "
            f"{measured}, and d^2 = |a|^2 + |b|^2 - 2|a||b|s, so one distance is a different cosine for every pair of "
            "lengths",
            "an evaluation of the product's own comparison (raw descriptors, Euclidean distance) on the same LFW "
            "protocol and groups file; or, if the product L2-normalises its descriptors before the distance, "
            "unit_norm = true in [model]", base + ["conversion: not exact, so no figure is read from the report"])
    det = ", ".join(x.get("name", "?") for x in d.get("models") or [] if x.get("role") == "detector") or "?"
    base.append(f"the report measures fr-pbd's own pipeline with {m.known} (detector {det}, fr-pbd's alignment and "
                "templates: docs/evaluation.md): a product that detects, aligns or averages otherwise scores the same "
                "photos differently, so these are the model's error rates at this threshold, not the product's")
    if m.target_fmr is not None:
        target = m.target_fmr
        base.append(f"claimed FMR <= {target:g} (target_fmr in [model])")
    else:
        _, target, why = _claim(m.known)
        if why or target is None:
            return inconclusive(cid, "DPIA", title, f"no claim to check: target_fmr is not declared in [model] and "
                                f"{why}", "target_fmr in [model]: the FMR the product claims", base)
        base.append(f"claimed FMR <= {target:g}: not declared in [model], so the manifest's target_fmr for "
                    f"{m.known}, the claim the checks of an fr-pbd home use")
    values = {"model_id": m.known, "declared_metric": m.metric, "declared_threshold": m.threshold,
              "report_threshold": t, "strict": strict, "target_fmr": target}
    return _Reading(d, t, strict, target, base, values)


def _rate_line(key: str, fmr: _Bracket, fnmr: _Bracket, t: float, impostors: str) -> str:
    return f"{key} at {t:.6g}: {fmr.text('FMR')} {impostors} impostor comparisons; {fnmr.text('FNMR', pct=True)}"


def _overall(r: _Reading) -> tuple[_Bracket, _Bracket, list[str]]:
    pts, floor, notes = _overall_points(r.report)
    fmr, fnmr = _rates(pts, r.threshold, r.strict, floor)
    return fmr, fnmr, [_rate_line("all comparisons", fmr, fnmr, r.threshold, "of all")] + notes


def dpia_accuracy(m: DeclaredModel, eval_path: Path | None) -> Check:
    """FMR and FNMR over all comparisons at the declared threshold; FAIL when the FMR is above the claim."""
    title = TITLE_FROM_TABLE
    r = _prepare("DPIA.accuracy", m, eval_path)
    if isinstance(r, Check):
        return r
    fmr, fnmr, lines = _overall(r)
    details = r.details + lines
    values = dict(r.values, fmr=fmr.value(), fnmr=fnmr.value())
    head = (f"at the declared threshold ({r.threshold:.6g} in the report's units): {fmr.text('FMR')}; "
            f"{fnmr.text('FNMR', pct=True)}")
    n = int(r.report.get("impostor_comparisons") or 0)
    if n * r.target < 1.0:
        return inconclusive("DPIA.accuracy", "DPIA", title, f"{n:,} impostor comparisons cannot show "
                            f"FMR {r.target:g}", "an evaluation with more impostor comparisons", details, values)
    if fmr.hi and fmr.hi.rate <= r.target:
        return Check("DPIA.accuracy", "DPIA", title, PASS, f"{head}: within the claimed {r.target:g}", details, values)
    if fmr.lo and fmr.lo.rate > r.target:
        return Check("DPIA.accuracy", "DPIA", title, FAIL, f"{head}: above the claimed {r.target:g}", details, values)
    return inconclusive("DPIA.accuracy", "DPIA", title, f"{head}: the report's overall counts do not decide whether it "
                        f"is within the claimed {r.target:g}", "an evaluation report with overall counts at this "
                        f"threshold: `fr-pbd eval lfw --groups FILE.csv --threshold {r.threshold:.6g}`",
                        details, values)


def dpia_bias(m: DeclaredModel, eval_path: Path | None) -> Check:
    """FAIL when a labelled group's same-group FMR at the declared threshold may be above the claim (read on the
    curve point at or below it, which over-states the FMR), or when the report has no per-group curve."""
    title = TITLE_FROM_TABLE
    r = _prepare("DPIA.bias", m, eval_path)
    if isinstance(r, Check):
        return r
    groups = r.report.get("groups")
    if not isinstance(groups, dict) or not groups.get("attributes"):
        return Check("DPIA.bias", "DPIA", title, FAIL, "the evaluation report has no per-group analysis: nothing shows "
                     "that every group gets the false-match rate the product promises (run `fr-pbd eval lfw --groups "
                     "FILE.csv`)", r.details, r.values)
    t, target = r.threshold, r.target
    details = r.details + [f"groups file {groups.get('groups_file')}; impostors: {groups.get('impostor_definition')}"]
    details += _overall(r)[2][:1]
    bad, unresolved, per, det = [], [], {}, {}
    for attr, a in groups["attributes"].items():
        for name, s in (a.get("groups") or {}).items():
            key = f"{attr}={name}"
            curve = s.get("curve")
            if not isinstance(curve, dict):
                bad.append(f"{key}: the report gives no per-group curve, so the FMR at {t:.6g} cannot be read")
                continue
            fmr, fnmr = _rates(_curve_points(curve), t, r.strict)
            details.append(_rate_line(key, fmr, fnmr, t, "of same-group"))
            im = int(curve["impostor_comparisons"])
            # fmr, fnmr: at the curve point at or below the threshold, as on a home (audit.html draws them)
            per[key] = {"fmr": fmr.hi.rate if fmr.hi else None, "fnmr": fnmr.lo.rate if fnmr.lo else None,
                        "curve_threshold": fmr.hi.at if fmr.hi else None, "impostor_comparisons": im,
                        "false_matches": fmr.hi.errors if fmr.hi else None,
                        "fmr_bracket": fmr.value(), "fnmr_bracket": fnmr.value()}
            if isinstance(s.get("det"), dict):
                det[key] = {"fmr": s["det"].get("fmr"), "fnmr": s["det"].get("fnmr"),
                            "point": [per[key]["fmr"], per[key]["fnmr"]]}
            if im * target < 1.0:
                unresolved.append(f"{key}: {im:,} impostor comparisons cannot show FMR {target:g}")
            elif fmr.lo and fmr.lo.rate > target:
                bad.append(f"{key}: FMR at least {fmr.lo.rate:.3g} at {t:.6g}, {fmr.lo.rate / target:.2f} times the "
                           f"claimed {target:g}")
            elif fmr.hi is None or fmr.hi.rate > target:
                bad.append(f"{key}: FMR at {t:.6g} cannot be shown within the claimed {target:g} "
                           + (f"(at most {fmr.hi.rate:.3g} on the curve point at or below it)" if fmr.hi
                              else "(the threshold is below the report's curve)"))
    values = dict(r.values, threshold=t, groups=per, det_per_group=det)
    if bad:
        return Check("DPIA.bias", "DPIA", title, FAIL, "; ".join(bad), details, values)
    if unresolved:
        return inconclusive("DPIA.bias", "DPIA", title, "; ".join(unresolved),
                            "an evaluation with more comparisons per group", details, values)
    return Check("DPIA.bias", "DPIA", title, PASS,
                 f"at the declared threshold ({t:.6g} in the report's units), every one of {len(per)} labelled "
                 f"group(s) has a same-group FMR <= the claimed {target:g} (read conservatively from the report's "
                 "curve)", details, values)
