"""Presentation-attack detection error rates, ISO/IEC 30107-3 style (``fr-pbd eval pad``).

Metrics (ISO/IEC 30107-3:2017, clause 13):

- **APCER per PAI species** (attack type): the share of attack presentations of
  that type that the PAD subsystem classifies as bona fide (``score >= threshold``);
- **worst-case APCER**: the largest of those (the standard's APCER for an attack
  potential level is the maximum over species);
- **BPCER**: the share of bona fide presentations classified as attacks;
- images where no face was found (or that cannot be decoded) get no PAD
  decision: they are left out of the APCER/BPCER denominators and reported as
  non-responses (APNRR / BPNRR), with their counts.

Attack type of an image: the name of the first sub-directory under the
``--attacks`` directory that holds it (``attacks/print/x.jpg`` -> ``print``);
for an image directly in that directory, or given as a file, its filename
prefix: the stem split at ``_``, a leading ``spoof`` or ``attack`` word
skipped, then the first word (``spoof_print_F1.jpg`` -> ``print``,
``replay-3.jpg`` -> ``replay-3``, as there is no ``_``).

Privacy: a PAD score is derived from a face image. Only aggregates (counts and
rates) are printed or written; no per-image score, name or path is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from fr_pbd.errors import EvaluationError, FrPbdError

__all__ = ["PadResult", "attack_type", "collect", "evaluate_pad", "format_report", "pipeline_scorer"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".pnm")  # the formats capture.image accepts
SPOOF_WORDS = ("spoof", "attack")
SWEEP_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)

# A scorer maps an image to its PAD score (probability of bona fide), or None when
# no face was found / the image is unusable (a non-response).
Scorer = Callable[[Path], "float | None"]


def attack_type(path: Path, root: Path | None) -> str:
    """PAI species of an attack image: its sub-directory under ``root``, else its filename prefix."""
    if root is not None:
        try:
            rel = path.relative_to(root)
        except ValueError:
            rel = None
        if rel is not None and len(rel.parts) > 1:
            return rel.parts[0]
    words = path.stem.split("_")
    if len(words) > 1 and words[0].lower() in SPOOF_WORDS:
        words = words[1:]
    return words[0] or "unknown"


def collect(paths: Iterable[str | Path]) -> list[tuple[Path, Path | None]]:
    """Every image under the given files/directories, sorted, each with the directory it was found under."""
    out: list[tuple[Path, Path | None]] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out += [(f, p) for f in sorted(p.rglob("*")) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        elif p.is_file():
            out.append((p, None))
        else:
            raise EvaluationError(f"{p} is neither an image file nor a directory")
    return out


def _spread(items: list, limit: int | None) -> list:
    """``limit`` evenly spaced items (all of them if limit is None or larger)."""
    if limit is None or limit >= len(items):
        return items
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in idx]


@dataclass
class Group:
    """Aggregate of one PAI species (or of the bona fide presentations); scores stay in memory only."""

    presented: int = 0
    no_response: int = 0
    scores: list[float] = field(default_factory=list, repr=False)

    @property
    def decided(self) -> int:
        return len(self.scores)

    def passed(self, threshold: float) -> int:
        """How many were classified bona fide."""
        return int(np.count_nonzero(np.asarray(self.scores) >= threshold)) if self.scores else 0


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


@dataclass
class PadResult:
    threshold: float
    attacks: dict[str, Group]
    bona_fide: Group

    def apcer(self, species: str, threshold: float | None = None) -> float | None:
        g = self.attacks[species]
        return _rate(g.passed(self.threshold if threshold is None else threshold), g.decided)

    def worst_apcer(self, threshold: float | None = None) -> tuple[str | None, float | None]:
        rates = [(s, self.apcer(s, threshold)) for s in sorted(self.attacks)]
        rates = [(s, r) for s, r in rates if r is not None]
        return max(rates, key=lambda sr: sr[1]) if rates else (None, None)

    def bpcer(self, threshold: float | None = None) -> float | None:
        g = self.bona_fide
        return _rate(g.decided - g.passed(self.threshold if threshold is None else threshold), g.decided)

    def apnrr(self) -> float | None:
        n = sum(g.presented for g in self.attacks.values())
        return _rate(sum(g.no_response for g in self.attacks.values()), n)

    def bpnrr(self) -> float | None:
        return _rate(self.bona_fide.no_response, self.bona_fide.presented)

    def to_dict(self) -> dict:
        """Aggregates only: counts and rates, never a per-image score."""
        t = self.threshold
        worst_s, worst = self.worst_apcer()
        return {
            "standard": "ISO/IEC 30107-3 (APCER per PAI species, worst case, BPCER; APNRR/BPNRR for no face)",
            "threshold": t,
            "decision_rule": "bona fide if p_real (averaged MiniFASNetV2+V1SE softmax) >= threshold",
            "attacks": {
                s: {"presented": g.presented, "no_response": g.no_response, "decided": g.decided,
                    "classified_bona_fide": g.passed(t), "apcer": self.apcer(s)}
                for s, g in sorted(self.attacks.items())
            },
            "apcer_worst_case": {"species": worst_s, "apcer": worst},
            "bona_fide": {"presented": self.bona_fide.presented, "no_response": self.bona_fide.no_response,
                          "decided": self.bona_fide.decided,
                          "classified_attack": self.bona_fide.decided - self.bona_fide.passed(t),
                          "bpcer": self.bpcer()},
            "apnrr": self.apnrr(),
            "bpnrr": self.bpnrr(),
            "sweep": [{"threshold": s, "apcer_worst_case": self.worst_apcer(s)[1], "bpcer": self.bpcer(s)}
                      for s in SWEEP_THRESHOLDS],
        }


def evaluate_pad(attacks: Sequence[tuple[Path, Path | None]], bona_fide: Sequence[tuple[Path, Path | None]],
                 scorer: Scorer, threshold: float,
                 progress: Callable[[int, int], None] | None = None) -> PadResult:
    """Score every image once; group attacks by species. An unreadable image is a non-response."""
    total = len(attacks) + len(bona_fide)
    done = 0
    groups: dict[str, Group] = {}
    bf = Group()

    def one(path: Path, g: Group) -> None:
        nonlocal done
        g.presented += 1
        try:
            s = scorer(path)
        except FrPbdError:  # not decodable, or no usable face: no PAD decision
            s = None
        if s is None:
            g.no_response += 1
        else:
            g.scores.append(float(s))
        done += 1
        if progress is not None:
            progress(done, total)

    for path, root in attacks:
        one(path, groups.setdefault(attack_type(path, root), Group()))
    for path, _ in bona_fide:
        one(path, bf)
    return PadResult(float(threshold), groups, bf)


def pipeline_scorer(select: str = "largest", board: str | None = None) -> Scorer:
    """The verifier's detector and minimum face score, its face choice, then the PAD ensemble."""
    from fr_pbd.capture import quality
    from fr_pbd.capture.extractor import choose_face
    from fr_pbd.capture.image import load_image
    from fr_pbd.pipeline import build_pipeline

    pipeline = build_pipeline(board)
    detector, pad = pipeline.extractor.detector, pipeline.liveness
    min_score = quality.POLICIES["verify"].min_face_score

    def score(path: Path) -> float | None:
        frame = load_image(path)  # the raw decoded frame: nothing enhances it before PAD
        faces = [f for f in detector.detect(frame) if f.score >= min_score]
        if not faces:
            return None
        return pad.score(frame, choose_face(faces, frame.shape, select))  # type: ignore[arg-type,union-attr]

    return score


def _pct(r: float | None) -> str:
    return "n/a" if r is None else f"{100 * r:.2f} %"


def format_report(res: PadResult) -> str:
    t = res.threshold
    lines = [f"PAD evaluation (ISO/IEC 30107-3), threshold p_real >= {t:g}", "",
             f"{'attack type':<16} {'presented':>9} {'no face':>8} {'passed':>7} {'APCER':>10}"]
    for s, g in sorted(res.attacks.items()):
        lines.append(f"{s:<16} {g.presented:>9} {g.no_response:>8} {g.passed(t):>4}/{g.decided:<3}"
                     f"{_pct(res.apcer(s)):>10}")
    ws, w = res.worst_apcer()
    bf = res.bona_fide
    lines += ["", f"APCER worst case: {_pct(w)}" + (f" ({ws})" if ws else ""),
              f"BPCER: {_pct(res.bpcer())} ({bf.decided - bf.passed(t)} of {bf.decided} bona fide refused; "
              f"{bf.no_response} of {bf.presented} with no face)",
              f"APNRR {_pct(res.apnrr())}, BPNRR {_pct(res.bpnrr())} (no face: no PAD decision, not in the rates)",
              "", f"{'threshold':>9} {'APCER worst':>12} {'BPCER':>10}"]
    for s in SWEEP_THRESHOLDS:
        lines.append(f"{s:>9g} {_pct(res.worst_apcer(s)[1]):>12} {_pct(res.bpcer(s)):>10}")
    return "\n".join(lines)
