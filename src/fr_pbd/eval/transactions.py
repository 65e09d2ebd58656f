"""Transaction error rates (ISO/IEC 19795-1): how often an enrolled user is refused, and an impostor let in.

A comparison is one image against one image; a *transaction* here is one attempt
(one probe image) against one enrolled user who holds K templates. The protocol,
for each K and each of ``draws`` seeded draws:

* every identity with at least K+1 images is an enrolled user; K of its images,
  drawn at random (seeded per (seed, K, draw), so a K's figures do not depend on
  which other Ks were run), are its enrolment;
* each of its other images is a genuine attempt against it;
* every image of every other identity is an impostor attempt against it.

The probe's scores against the user's K templates are fused into one score
(:data:`FUSIONS`; :data:`DEFAULT_FUSION` is what the matcher should do, chosen on View 1).

Failures to acquire are handled as in :mod:`fr_pbd.eval.lfw` (a failed template
scores "-inf"): a failed enrolment image contributes nothing to the fusion; a
user none of whose K images gave a template has failed to enrol, so each of its
genuine attempts is a false reject at every threshold and impostor attempts
against it cannot be accepted (left out of FAR, counted as failed); a failed
probe image is a false reject when genuine and left out of FAR when an impostor.

Draws are pooled: FRR and FAR are over all attempts of all draws (genuine scores
exactly, impostor scores in a :class:`~fr_pbd.eval.metrics.StreamedScores`), and
FRR@FAR uses the same rule and resolvability flags as ``fnmr_at_fmr``. Per-draw
FRRs at the pooled thresholds show how much the choice of enrolment images moves it.

LFW photos are independent shots, not frames of one attempt: one attempt here is
one photo, and nothing here simulates multi-frame attempts.

Scores stay in this process: nothing here writes or logs them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fr_pbd.errors import EvaluationError
from fr_pbd.eval import metrics
from fr_pbd.eval.allpairs import score_all_pairs
from fr_pbd.eval.metrics import StreamedScores
from fr_pbd.match.score_model import Cosine, PldaModel

ScoreModel = Cosine | PldaModel

__all__ = [
    "TARGET_FARS",
    "DEFAULT_K",
    "DEFAULT_DRAWS",
    "FUSIONS",
    "DEFAULT_FUSION",
    "parse_enrol",
    "TransactionScores",
    "score_transactions",
    "TransactionResult",
    "summarise",
    "OperatingPointChoice",
    "choose_operating_point",
    "TransactionsReport",
    "evaluate_transactions",
]

#: Transaction FARs reported: 2e-5 is Android CDD 7.3.10's bar for a strong biometric.
TARGET_FARS: tuple[float, ...] = (1e-3, 1e-4, 2e-5, 1e-5)
#: Images enrolled per user by default (`fr-pbd enroll` asks for 3 captures).
DEFAULT_K = 3
#: The FAR the default threshold promises at DEFAULT_K, and the pairwise FMR it must also keep.
OPERATING_FAR = 2e-5
OPERATING_PAIRWISE_FMR = 1e-4
DEFAULT_DRAWS = 5
DEFAULT_SEED = 0
#: How a probe's scores against one user's K templates become one score.
FUSIONS = ("max", "top2", "mean", "centroid")
#: Chosen on View 1 (pairsDevTrain identities only; docs/evaluation.md, docs/results/lfw-fusion-view1-fp32.json):
#: the probe against the user's mean template (L2-normalised) beats the per-user maximum at every K >= 2.
DEFAULT_FUSION = "centroid"
MAX_K = 50

Progress = Callable[[int, int], None]


def parse_enrol(values: Sequence[str]) -> tuple[int, ...]:
    """``["1-5"]``, ``["3"]``, ``["1,3", "5"]`` -> sorted distinct Ks (typed error, one line, otherwise)."""
    ks: set[int] = set()
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not m:
                raise EvaluationError(f"--enrol takes K, K1-K2 or K1,K2 (K >= 1), not {part!r}")
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
            if lo < 1 or hi < lo or hi > MAX_K:
                raise EvaluationError(f"--enrol {part}: K must be 1 to {MAX_K}, ranges ascending")
            ks.update(range(lo, hi + 1))
    if not ks:
        raise EvaluationError("--enrol needs at least one K")
    return tuple(sorted(ks))


# --- scoring ------------------------------------------------------------------------------------
def _fuse(s3: np.ndarray, mask: np.ndarray, n_acq: np.ndarray, fusion: str) -> np.ndarray:
    """(B, U, K) scores -> (B, U) fused; ``mask`` (U, K) True where the template was acquired."""
    if fusion == "max":
        return np.where(mask[None], s3, -np.inf).max(axis=2).astype(np.float32)
    if fusion == "mean":
        tot = np.where(mask[None], s3, 0).sum(axis=2, dtype=np.float32)
        return (tot / np.maximum(n_acq, 1).astype(np.float32)[None]).astype(np.float32)
    if fusion == "top2":
        srt = np.sort(np.where(mask[None], s3, -np.inf), axis=2)
        best = srt[:, :, -1]
        if s3.shape[2] < 2:
            return best.astype(np.float32)
        two = (srt[:, :, -1] + srt[:, :, -2]) / np.float32(2)
        return np.where((n_acq >= 2)[None], two, best).astype(np.float32)
    raise EvaluationError(f"unknown fusion {fusion!r} (one of {', '.join(FUSIONS)})")


@dataclass
class TransactionScores:
    """Every attempt of one K, pooled over draws (in memory only)."""

    k: int
    fusion: str
    draws: int
    users: int  # enrolled users per draw
    genuine: np.ndarray = field(repr=False)  # float32 fused scores of acquired genuine attempts
    genuine_user: np.ndarray = field(repr=False)  # identity code of the user of each
    genuine_draw: np.ndarray = field(repr=False)
    failed_user: np.ndarray = field(repr=False)  # identity code of each failed genuine attempt
    failed_draw: np.ndarray = field(repr=False)
    impostors: StreamedScores = field(repr=False)
    impostor_failed: int
    enrolment_failed: int  # (user, draw)s with no template among the K
    group_impostors: dict[str, dict[str, StreamedScores]] = field(repr=False, default_factory=dict)
    group_of_identity: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    @property
    def genuine_failed(self) -> int:
        return int(self.failed_user.size)

    @property
    def genuine_attempts(self) -> int:
        return int(self.genuine.size + self.failed_user.size)


GroupCodes = dict[str, tuple[tuple[str, ...], np.ndarray]]  # attribute -> (group names, group code per identity, -1 none)


def _enrolment(identity: np.ndarray, k: int, rng: np.random.Generator, eligible: np.ndarray) -> np.ndarray:
    """A mask of the images enrolled: K drawn at random from each eligible identity's images."""
    keys = rng.random(identity.size)
    order = np.lexsort((keys, identity))
    lab = identity[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]]) if lab.size else np.zeros(0, np.int64)
    run_start = np.repeat(starts, np.diff(np.r_[starts, lab.size]))
    rank = np.arange(lab.size) - run_start
    enrolled = np.zeros(identity.size, dtype=bool)
    enrolled[order[(rank < k) & eligible[lab]]] = True
    return enrolled


def _add(dist: StreamedScores, sub: np.ndarray, keep: np.ndarray, probe_id: np.ndarray, user_id: np.ndarray) -> None:
    """Count ``sub[keep]``; the top scores keep (probe identity, user identity), for the pair count at a threshold."""
    vals = sub[keep]
    if vals.size == 0:
        return
    dist.add_hist(vals)
    floor = dist.top_floor
    sel = vals > floor if math.isfinite(floor) else np.ones(vals.size, dtype=bool)
    if sel.any():
        ri, ci = np.nonzero(keep)
        dist.add_top(vals[sel], probe_id[ri[sel]], user_id[ci[sel]])


def _cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def score_transactions(
    templates: np.ndarray,
    identity: np.ndarray,
    acquired: np.ndarray,
    k: int,
    *,
    draws: int = DEFAULT_DRAWS,
    seed: int = DEFAULT_SEED,
    fusion: str = DEFAULT_FUSION,
    groups: GroupCodes | None = None,
    block_rows: int = 2048,
    bins: int = 2**20,
    top_k: int = 2**17,
    progress: Progress | None = None,
    model: ScoreModel | None = None,
) -> TransactionScores:
    """Score every genuine and impostor attempt of the protocol for one K (see the module docstring).

    ``templates`` (N, D) unit rows (failed rows may hold anything), ``identity`` (N,)
    non-negative codes, ``acquired`` (N,) flags. ``groups`` gives, per attribute, the
    group code of each identity code; impostor attempts whose probe and user are in
    the same group are also kept per group (same-group impostors). ``model`` (default: cosine)
    scores a probe against a user's K templates (:mod:`fr_pbd.match.score_model`); a model
    other than cosine takes the K templates whole, and ``fusion`` must stay the default.
    """
    model = Cosine() if model is None else model
    if model.name != "cosine" and fusion != DEFAULT_FUSION:
        raise EvaluationError(f"--fusion applies to the cosine score model only, not to {model.name}")
    lo, hi = model.score_range
    x = np.asarray(templates, dtype=np.float32)
    ids = np.asarray(identity)
    ok = np.asarray(acquired, dtype=bool)
    if x.ndim != 2 or ids.shape != (x.shape[0],) or ok.shape != ids.shape:
        raise EvaluationError("templates must be (N, D) with one identity code and one acquired flag per row")
    if ids.size and (ids.dtype.kind not in "iu" or ids.min() < 0):
        raise EvaluationError("identity codes must be non-negative integers")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise EvaluationError("K must be a positive integer")
    if fusion not in FUSIONS:
        raise EvaluationError(f"unknown fusion {fusion!r} (one of {', '.join(FUSIONS)})")
    if draws < 1:
        raise EvaluationError("draws must be at least 1")
    ids = ids.astype(np.int64)
    n_codes = int(ids.max()) + 1 if ids.size else 0
    per_id = np.bincount(ids, minlength=n_codes)
    eligible = per_id >= k + 1
    user_ids = np.flatnonzero(eligible)
    u = int(user_ids.size)
    if u == 0:
        raise EvaluationError(f"no identity has the {k + 1} images that K = {k} needs (K enrolled, one to probe)")
    user_of = np.full(n_codes, -1, np.int64)
    user_of[user_ids] = np.arange(u)
    xs = np.where(ok[:, None], x, 0).astype(np.float32)
    if not np.all(np.isfinite(xs)):
        raise EvaluationError("acquired templates must be finite")

    imp = StreamedScores(bins=bins, lo=lo, hi=hi, top_k=top_k)
    gimp: dict[str, dict[str, StreamedScores]] = {}
    gcodes: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
    for attr, (names, of_id) in (groups or {}).items():
        of_id = np.asarray(of_id, dtype=np.int64)
        if of_id.ndim != 1 or of_id.size < n_codes:
            raise EvaluationError("group codes must give one code per identity code")
        gcodes[attr] = (tuple(names), of_id)
        gimp[attr] = {g: StreamedScores(bins=bins, lo=lo, hi=hi, top_k=top_k) for g in names}
    gen_s, gen_u, gen_d, f_u, f_d = [], [], [], [], []
    imp_total = 0
    enrol_failed = 0
    n = ids.size
    total_steps = draws * max(1, math.ceil(n / block_rows))
    step = 0
    for d in range(draws):
        rng = np.random.default_rng([int(seed), int(k), int(d)])
        enrolled = _enrolment(ids, k, rng, eligible)
        # enrolment templates, user-major: row u * K + j
        erows = np.flatnonzero(enrolled)
        erows = erows[np.argsort(user_of[ids[erows]], kind="stable")]
        emask = ok[erows].reshape(u, k)
        n_acq = emask.sum(axis=1)
        user_ok = n_acq > 0
        enrol_failed += int((~user_ok).sum())
        whole = fusion == "centroid" or model.name != "cosine"
        if whole:  # the score model meets the K templates (the matcher's own code: fr_pbd.match.score_model)
            scorer = model.enrolled(xs[erows].reshape(u, k, -1), emask)
        else:
            et = np.ascontiguousarray(xs[erows].T)
        for r0 in range(0, n, block_rows):
            r1 = min(n, r0 + block_rows)
            if whole:
                fused = scorer.scores(xs[r0:r1])
            else:
                fused = _fuse((xs[r0:r1] @ et).reshape(r1 - r0, u, k), emask, n_acq, fusion)
            own = user_of[ids[r0:r1]]
            pok = ok[r0:r1]
            # genuine: a user's images not enrolled in this draw
            gen = (own >= 0) & ~enrolled[r0:r1]
            good = gen & pok & np.where(own >= 0, user_ok[np.maximum(own, 0)], False)
            bad = gen & ~good
            rg = np.flatnonzero(good)
            gen_s.append(fused[rg, own[rg]].astype(np.float32))
            gen_u.append(ids[r0:r1][rg])
            gen_d.append(np.full(rg.size, d, np.int32))
            f_u.append(ids[r0:r1][bad])
            f_d.append(np.full(int(bad.sum()), d, np.int32))
            # impostor: every (probe, other user)
            imp_total += (r1 - r0) * u - int((own >= 0).sum())
            rows = np.flatnonzero(pok)
            cols = np.flatnonzero(user_ok)
            if rows.size and cols.size:
                sub = fused[np.ix_(rows, cols)]
                keep = np.ones(sub.shape, dtype=bool)
                col_of = np.full(u, -1, np.int64)
                col_of[cols] = np.arange(cols.size)
                ro = own[rows]
                hit = np.flatnonzero((ro >= 0) & (col_of[np.maximum(ro, 0)] >= 0))
                keep[hit, col_of[ro[hit]]] = False
                p_id, u_id = ids[r0:r1][rows], user_ids[cols]
                _add(imp, sub, keep, p_id, u_id)
                for attr, (names, of_id) in gcodes.items():
                    gp, gu = of_id[p_id], of_id[u_id]
                    for gi, g in enumerate(names):
                        rr, cc = np.flatnonzero(gp == gi), np.flatnonzero(gu == gi)
                        if rr.size and cc.size:
                            _add(gimp[attr][g], sub[np.ix_(rr, cc)], keep[np.ix_(rr, cc)], p_id[rr], u_id[cc])
            step += 1
            if progress is not None:
                progress(step, total_steps)
    return TransactionScores(
        k=int(k), fusion=fusion if model.name == "cosine" else model.name, draws=int(draws), users=u,
        genuine=_cat(gen_s, np.float32), genuine_user=_cat(gen_u, np.int64), genuine_draw=_cat(gen_d, np.int32),
        failed_user=_cat(f_u, np.int64), failed_draw=_cat(f_d, np.int32),
        impostors=imp, impostor_failed=int(imp_total - imp.n), enrolment_failed=enrol_failed,
        group_impostors=gimp, group_of_identity={a: c for a, (_n, c) in gcodes.items()},
    )


# --- figures -----------------------------------------------------------------------------------
def _tx_dict(op: metrics.OperatingPoint) -> dict:
    """An OperatingPoint in transaction words (FRR, FAR, attempts)."""
    return {
        "frr": op.fnmr,
        "threshold": op.threshold,
        "impostor_attempts": op.impostor_comparisons,
        "resolvable": op.resolvable,
        "rule_of_three": op.rule_of_three,
        "min_impostor_attempts": op.min_comparisons,
        "far_observed": op.fmr,
        "false_accepts": op.false_matches,
        "false_rejects": op.false_non_matches,
        "genuine_attempts": op.genuine_comparisons,
        "threshold_exact": op.exact,
    }


def _at(genuine: np.ndarray, failed: int, imp: StreamedScores, t: float) -> dict:
    """FRR and FAR at one threshold, with counts."""
    total = genuine.size + failed
    rej = int(np.count_nonzero(genuine < np.float64(t))) + failed
    fa = imp.count_ge(t) if imp.n else 0
    exact = bool(imp.complete or (imp.top.size and t > float(imp.top[-1])))
    pairs = most = None
    if exact and fa:  # which (impostor identity, user) pairs the false accepts come from: a few lookalikes?
        hit = imp.top >= np.float64(t)
        _, per_pair = np.unique(np.stack([imp.top_i[hit], imp.top_j[hit]]), axis=1, return_counts=True)
        pairs, most = int(per_pair.size), int(per_pair.max())
    return {
        "threshold": float(t),
        "frr": rej / total if total else None,
        "false_rejects": rej,
        "genuine_attempts": int(total),
        "far": fa / imp.n if imp.n else None,
        "false_accepts": int(fa),
        "impostor_attempts": int(imp.n),
        "far_exact": exact,
        "false_accept_identity_pairs": pairs,  # distinct (impostor identity, enrolled user) pairs behind them
        "false_accepts_of_one_pair_max": most,
    }


@dataclass
class TransactionResult:
    """One K's aggregates (what report.json holds) and its DET points (for the plot only)."""

    k: int
    fusion: str
    draws: int
    seed: int
    users: int
    enrolment_failed: int
    genuine_attempts: int
    genuine_failed: int
    impostor_attempts: int
    impostor_failed: int
    operating_points: dict[str, metrics.OperatingPoint]
    eer: metrics.EER
    frr_per_draw: dict[str, list[float]]
    at_threshold: dict | None
    groups: dict | None
    det: tuple[np.ndarray, np.ndarray] = field(repr=False)

    def to_dict(self) -> dict:
        return {
            "k": self.k,
            "fusion": self.fusion,
            "draws": self.draws,
            "seed": self.seed,
            "enrolled_users": self.users,
            "enrolments_failed": self.enrolment_failed,
            "genuine_attempts": self.genuine_attempts,
            "genuine_attempts_failed": self.genuine_failed,
            "impostor_attempts": self.impostor_attempts,
            "impostor_attempts_failed": self.impostor_failed,
            "frr_at_far": {key: _tx_dict(op) for key, op in self.operating_points.items()},
            "frr_per_draw_at_pooled_threshold": self.frr_per_draw,
            "eer": self.eer.eer,
            "eer_threshold": self.eer.threshold,
            "at_threshold": self.at_threshold,
            "groups": self.groups,
        }


def summarise(
    ts: TransactionScores,
    *,
    seed: int = DEFAULT_SEED,
    targets: Sequence[float] = TARGET_FARS,
    threshold: float | None = None,
) -> TransactionResult:
    """FRR@FAR, EER, per-draw spread, per-group figures and (optionally) the rates at ``threshold``."""
    if ts.impostors.n == 0 or ts.genuine_attempts == 0:
        raise EvaluationError(f"K = {ts.k} yields no impostor or no genuine attempt")
    ops = metrics.fnmr_at_fmrs(ts.genuine, ts.impostors, targets, genuine_failed=ts.genuine_failed)
    e = metrics.eer(ts.genuine, ts.impostors, genuine_failed=ts.genuine_failed)
    fmr, fnmr, _ = metrics.det_curve(ts.genuine, ts.impostors, genuine_failed=ts.genuine_failed)
    per_draw: dict[str, list[float]] = {}
    for key, op in ops.items():
        vals = []
        for d in range(ts.draws):
            g = ts.genuine[ts.genuine_draw == d]
            f = int(np.count_nonzero(ts.failed_draw == d))
            vals.append((int(np.count_nonzero(g < np.float64(op.threshold))) + f) / max(1, g.size + f))
        per_draw[key] = vals
    at = _at(ts.genuine, ts.genuine_failed, ts.impostors, threshold) if threshold is not None else None
    return TransactionResult(
        k=ts.k, fusion=ts.fusion, draws=ts.draws, seed=seed, users=ts.users,
        enrolment_failed=ts.enrolment_failed, genuine_attempts=ts.genuine_attempts,
        genuine_failed=ts.genuine_failed, impostor_attempts=ts.impostors.n, impostor_failed=ts.impostor_failed,
        operating_points=ops, eer=e, frr_per_draw=per_draw, at_threshold=at,
        groups=_groups(ts, targets, threshold), det=(fmr, fnmr),
    )


def _groups(ts: TransactionScores, targets: Sequence[float], threshold: float | None) -> dict | None:
    """Per attribute and group: users' genuine attempts against same-group impostor attempts."""
    if not ts.group_impostors:
        return None
    out: dict = {}
    for attr, per in ts.group_impostors.items():
        of_id = ts.group_of_identity[attr]
        res = {}
        for gi, (g, imp) in enumerate(per.items()):
            mine_g = of_id[ts.genuine_user] == gi
            mine_f = int(np.count_nonzero(of_id[ts.failed_user] == gi))
            gen = ts.genuine[mine_g]
            entry: dict = {"genuine_attempts": int(gen.size + mine_f), "impostor_attempts": int(imp.n)}
            if gen.size + mine_f and imp.n:
                entry["frr_at_far"] = {metrics.fmr_key(t): _tx_dict(metrics.fnmr_at_fmr(gen, imp, t, genuine_failed=mine_f))
                                       for t in targets}
                if threshold is not None:
                    entry["at_threshold"] = _at(gen, mine_f, imp, threshold)
            res[g] = entry
        out[attr] = res
    return out


# --- the operating point ------------------------------------------------------------------------
def group_codes(table, names: Sequence[str]) -> GroupCodes:
    """Per attribute of a :class:`~fr_pbd.eval.groups.GroupsTable`: (group names, code per identity code)."""
    out: GroupCodes = {}
    for attr in table.attributes:
        lab = [table.labels.get(n, {}).get(attr) for n in names]
        gs = tuple(sorted({g for g in lab if g is not None}))
        code = {g: i for i, g in enumerate(gs)}
        out[attr] = (gs, np.array([code[g] if g is not None else -1 for g in lab], dtype=np.int64))
    return out


def _round_up(t: float, digits: int = 5) -> float:
    """The manifest's threshold: rounded up, so the promise of the exact one still holds."""
    q = 10**digits
    return math.ceil(t * q - 1e-9) / q


@dataclass
class OperatingPointChoice:
    """The default threshold, chosen on one seeded half of the identities and reported on the other."""

    k: int
    target_far: float
    target_pairwise_fmr: float
    split_seed: int
    selection: dict
    threshold_exact: float
    threshold: float  # rounded up to 5 decimals: the manifest's value
    held_out: dict
    swapped: bool = False  # the second half was the selection half
    model: ScoreModel | None = field(default=None, repr=False)  # the score model (trained on the selection half)
    held_out_scores: TransactionScores | None = field(default=None, repr=False)  # K = k on the held-out half

    def to_dict(self) -> dict:
        return {
            "rule": (f"the largest of: per group (same-group impostors), the smallest threshold with transaction "
                     f"FAR <= {metrics.fmr_key(self.target_far)} at K = {self.k} and the smallest with pairwise "
                     f"FMR <= {metrics.fmr_key(self.target_pairwise_fmr)}; also over all attempts/comparisons of "
                     "the selection half; rounded up to 5 decimals"),
            "k": self.k,
            "target_far": self.target_far,
            "target_pairwise_fmr": self.target_pairwise_fmr,
            "split": f"identities shuffled with seed {self.split_seed}; selection = "
                     f"{'second' if self.swapped else 'first'} half, held out = the other "
                     "(identity-disjoint: no person is in both)",
            "selection_half": self.selection,
            "threshold_exact": self.threshold_exact,
            "threshold": self.threshold,
            "held_out_half": self.held_out,
        }


def pair_features(model: ScoreModel | None, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(left, right) rows whose dot product is the model's image-vs-image score (None: cosine, ``x . x``).

    PLDA with K = 1: ``u_i' A_2 u_j + h_i + h_j`` with ``h = 1/2 u' (A_2 - A_1) u + const_1 / 2``,
    i.e. ``[sqrt(A_2) u_i, h_i, 1] . [sqrt(A_2) u_j, 1, h_j]`` (``A_2 >= 0``).
    """
    if model is None or model.name == "cosine":
        return None
    p = model.prepared
    u = p.transform(x)
    a2, a1 = p.a(2), p.a(1)
    h = 0.5 * (u * u) @ (a2 - a1) + 0.5 * float(p.const(1))
    g = u * np.sqrt(a2)
    one = np.ones((u.shape[0], 1))
    return np.hstack([g, h[:, None], one]), np.hstack([g, one, h[:, None]])


def _pairwise(x, ids, ok, mask, t_target: float | None, at: float | None, model: ScoreModel | None = None) -> dict:
    """Pairwise (image vs image) FMR threshold and/or rates at a threshold, over the images in ``mask``."""
    feats = pair_features(model, x[mask])
    ap = score_all_pairs(x[mask], ids[mask], ok[mask], features=feats,
                         score_range=model.score_range if model is not None else (-1.0, 1.0))
    out: dict = {"impostor_comparisons": int(ap.impostors.n),
                 "genuine_comparisons": int(ap.genuine.size + ap.genuine_failed)}
    if ap.impostors.n == 0:
        return out
    if t_target is not None:
        t, fm, exact = ap.impostors.fmr_threshold(t_target)
        out.update({"threshold": t, "false_matches": fm, "threshold_exact": exact,
                    "resolvable": ap.impostors.n * t_target >= 1.0 - 1e-9})
    if at is not None:
        r = _at(ap.genuine, ap.genuine_failed, ap.impostors, at)
        out.update({"fmr": r["far"], "false_matches_at": r["false_accepts"], "fnmr": r["frr"],
                    "false_non_matches": r["false_rejects"], "fmr_exact": r["far_exact"]})
    return out


def half_a_rows(ids: np.ndarray, split_seed: int) -> np.ndarray:
    """Rows whose identity is in half A: the identities shuffled with ``split_seed``, the first half."""
    present = np.unique(ids)
    perm = np.random.default_rng([int(split_seed), 2]).permutation(present)
    half_a = np.zeros(int(ids.max()) + 1, dtype=bool)
    half_a[perm[: present.size // 2]] = True
    return half_a[ids]


def choose_operating_point(
    templates: np.ndarray,
    identity: np.ndarray,
    acquired: np.ndarray,
    *,
    groups: GroupCodes | None = None,
    k: int = DEFAULT_K,
    target_far: float = OPERATING_FAR,
    target_pairwise_fmr: float = OPERATING_PAIRWISE_FMR,
    split_seed: int = DEFAULT_SEED,
    draws: int = DEFAULT_DRAWS,
    seed: int = DEFAULT_SEED,
    fusion: str = DEFAULT_FUSION,
    progress: Progress | None = None,
    model: ScoreModel | None = None,
    train: Callable[[np.ndarray, np.ndarray], ScoreModel] | None = None,
    swap: bool = False,
) -> OperatingPointChoice:
    """Choose the threshold on one half of the identities, report it on the other (see :meth:`to_dict`).

    ``train(x, identity)``, if given, makes the score model from the selection half's acquired
    templates (``model`` is then ignored); ``swap`` makes the second half the selection half
    (the other fold of :mod:`fr_pbd.eval.twofold`).
    """
    x = np.asarray(templates, dtype=np.float32)
    ids = np.asarray(identity).astype(np.int64)
    ok = np.asarray(acquired, dtype=bool)
    present = np.unique(ids)
    if present.size < 4:
        raise EvaluationError("choosing an operating point needs at least 4 identities (two per half)")
    in_a = half_a_rows(ids, split_seed)
    halves = {"selection": ~in_a if swap else in_a, "held_out": in_a if swap else ~in_a}
    if train is not None:
        m = halves["selection"] & ok
        model = train(x[m], ids[m])
    kw = dict(draws=draws, seed=seed, fusion=fusion, groups=groups, model=model)

    # selection half: every candidate threshold
    m = halves["selection"]
    ts = score_transactions(x[m], ids[m], ok[m], k, progress=progress, **kw)
    cand: dict[str, float] = {}
    sel: dict = {"identities": int(np.unique(ids[m]).size), "images": int(m.sum()), "enrolled_users": ts.users,
                 "transactions": {}, "pairwise": {}}
    t, fa, exact = ts.impostors.fmr_threshold(target_far)
    sel["transactions"]["all"] = {"threshold": t, "false_accepts": fa, "impostor_attempts": ts.impostors.n,
                                  "threshold_exact": exact, "resolvable": ts.impostors.n * target_far >= 1 - 1e-9,
                                  "rule_of_three": ts.impostors.n * target_far >= metrics.RULE_OF_THREE - 1e-9}
    cand["transactions/all"] = t
    sel["pairwise"]["all"] = _pairwise(x, ids, ok, m, target_pairwise_fmr, None, model)
    if "threshold" in sel["pairwise"]["all"]:
        cand["pairwise/all"] = sel["pairwise"]["all"]["threshold"]
    for attr, per in ts.group_impostors.items():
        names, of_id = groups[attr]  # type: ignore[index]
        for gi, g in enumerate(names):
            imp = per[g]
            key = f"{attr}={g}"
            if imp.n:
                t, fa, exact = imp.fmr_threshold(target_far)
                sel["transactions"][key] = {
                    "threshold": t, "false_accepts": fa, "impostor_attempts": imp.n, "threshold_exact": exact,
                    "resolvable": imp.n * target_far >= 1 - 1e-9,
                    "rule_of_three": imp.n * target_far >= metrics.RULE_OF_THREE - 1e-9}
                cand[f"transactions/{key}"] = t
            pw = _pairwise(x, ids, ok, m & (of_id[ids] == gi), target_pairwise_fmr, None, model)
            sel["pairwise"][key] = pw
            if "threshold" in pw:
                cand[f"pairwise/{key}"] = pw["threshold"]
    binding = max(cand, key=lambda c: cand[c])
    t_exact = cand[binding]
    t_round = _round_up(t_exact)
    sel["binding_candidate"] = binding
    del ts

    # held-out half: the figures at the (rounded) threshold
    m = halves["held_out"]
    ts = score_transactions(x[m], ids[m], ok[m], k, progress=progress, **kw)
    r = summarise(ts, seed=seed, threshold=t_round)
    held: dict = {"identities": int(np.unique(ids[m]).size), "images": int(m.sum()), "enrolled_users": ts.users,
                  "transactions": {"all": r.at_threshold},
                  "pairwise": {"all": _pairwise(x, ids, ok, m, None, t_round, model)}}
    for attr, per in (r.groups or {}).items():
        names, of_id = groups[attr]  # type: ignore[index]
        for gi, g in enumerate(names):
            key = f"{attr}={g}"
            held["transactions"][key] = per[g].get("at_threshold")
            held["pairwise"][key] = _pairwise(x, ids, ok, m & (of_id[ids] == gi), None, t_round, model)
    return OperatingPointChoice(k=k, target_far=target_far, target_pairwise_fmr=target_pairwise_fmr,
                                split_seed=split_seed, selection=sel, threshold_exact=t_exact, threshold=t_round,
                                held_out=held, swapped=swap, model=model, held_out_scores=ts)


# --- the whole evaluation -----------------------------------------------------------------------
@dataclass
class TransactionsReport:
    """What ``fr-pbd eval lfw --enrol`` adds to the report."""

    results: dict[int, TransactionResult]
    threshold: float | None
    threshold_source: str
    choice: OperatingPointChoice | None
    choice_note: str | None
    draws: int
    seed: int
    fusion: str
    timings: dict[str, float]

    def to_dict(self) -> dict:
        return {
            "protocol": ("ISO/IEC 19795-1 transactions: per K, every identity with >= K+1 images is an enrolled "
                         "user (K images drawn at random per draw); each of its other images is a genuine attempt; "
                         "every image of every other identity is an impostor attempt against it. One attempt = one "
                         "photo (LFW photos are independent shots, not frames of one attempt). Draws pooled."),
            "fusion": self.fusion,
            "draws": self.draws,
            "seed": self.seed,
            "failures": ("an image without a template: as a probe, a false reject at every threshold (genuine) or "
                         "left out of FAR (impostor); as an enrolment image, left out of the fusion; a user none of "
                         "whose K images gave a template has failed to enrol: its genuine attempts are false "
                         "rejects, impostor attempts against it are left out of FAR"),
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "K": {str(k): r.to_dict() for k, r in sorted(self.results.items())},
            "operating_point": self.choice.to_dict() if self.choice else None,
            "operating_point_note": self.choice_note,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


def evaluate_transactions(
    templates: np.ndarray,
    identity: np.ndarray,
    acquired: np.ndarray,
    names: Sequence[str],
    ks: Sequence[int],
    *,
    groups=None,
    threshold: float | None = None,
    threshold_source: str = "given",
    choose: bool = True,
    draws: int = DEFAULT_DRAWS,
    seed: int = DEFAULT_SEED,
    fusion: str = DEFAULT_FUSION,
    progress: Progress | None = None,
) -> TransactionsReport:
    """Every K of ``ks``, the operating point chosen on half of the identities (``choose``), and the
    rates at ``threshold`` (the installed one; else the chosen one)."""
    import time

    codes = group_codes(groups, names) if groups is not None else None
    x = np.asarray(templates, dtype=np.float32)
    t0 = time.perf_counter()
    choice, note = None, None
    if choose:
        try:
            choice = choose_operating_point(x, identity, acquired, groups=codes, draws=draws, seed=seed,
                                            fusion=fusion)
        except EvaluationError as exc:  # too small a set to split (a --limit run): the rest still stands
            note = f"no operating point chosen: {exc}"
    t1 = time.perf_counter()
    if threshold is None and choice is not None:
        threshold, threshold_source = choice.threshold, "chosen on the selection half (operating_point)"
    results = {}
    for k in ks:
        ts = score_transactions(x, identity, acquired, int(k), draws=draws, seed=seed, fusion=fusion,
                                groups=codes, progress=progress)
        results[int(k)] = summarise(ts, seed=seed, threshold=threshold)
        del ts
    t2 = time.perf_counter()
    return TransactionsReport(results=results, threshold=threshold, threshold_source=threshold_source,
                              choice=choice, choice_note=note, draws=draws, seed=seed, fusion=fusion,
                              timings={"operating_point_s": t1 - t0, "per_k_s": t2 - t1})


# --- report parts (called by fr_pbd.eval.report) ------------------------------------------------
def markdown(d: dict) -> list[str]:
    """report.md lines for report.json's ``transactions``."""
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f} %"

    lines = ["", f"## Transactions: K enrolled images, one photo per attempt (fusion: {d['fusion']}, "
             f"{d['draws']} draws pooled)", "",
             "| K | users | genuine attempts | impostor attempts | " + " | ".join(f"FRR @ FAR {k}" for k in
                                                                            next(iter(d["K"].values()))["frr_at_far"])
             + " | EER |",
             "|---:|---:|---:|---:|" + "---:|" * (len(next(iter(d["K"].values()))["frr_at_far"]) + 1)]
    for k, r in d["K"].items():
        cells = []
        for v in r["frr_at_far"].values():
            flag = "" if v["resolvable"] else " (not resolved)"
            cells.append(f"{pct(v['frr'])} ({v['false_rejects']:,}; t {v['threshold']:.4f}){flag}")
        lines.append(f"| {k} | {r['enrolled_users']:,} | {r['genuine_attempts']:,} | {r['impostor_attempts']:,} | "
                     + " | ".join(cells) + f" | {pct(r['eer'])} |")
    if d["threshold"] is not None:
        lines += ["", f"At threshold {d['threshold']:.5f} ({d['threshold_source']}):", ""]
        for k, r in d["K"].items():
            a = r["at_threshold"]
            lines.append(f"- K = {k}: FRR {pct(a['frr'])} ({a['false_rejects']:,} of {a['genuine_attempts']:,}), "
                         f"FAR {a['far']:.2e} ({a['false_accepts']:,} of {a['impostor_attempts']:,})")
    op = d.get("operating_point")
    if op:
        lines += ["", f"Operating point: **{op['threshold']:.5f}** ({op['rule']}; binding: "
                  f"{op['selection_half']['binding_candidate']}). Held-out half at it:", ""]
        for key, v in op["held_out_half"]["transactions"].items():
            if v:
                lines.append(f"- transactions {key}: FRR {pct(v['frr'])} ({v['false_rejects']:,} of "
                             f"{v['genuine_attempts']:,}), FAR {v['far']:.2e} ({v['false_accepts']:,} of "
                             f"{v['impostor_attempts']:,})")
    lines += ["", "![DET per K](det-transactions.png)"]
    return lines


def det_plot(rep: TransactionsReport, out: Path, title: str) -> list[Path]:
    """One DET curve per K on probit axes, the FAR targets marked (resolvable ones only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fr_pbd.eval.metrics import probit

    fig, ax = plt.subplots(figsize=(7.5, 6.2), dpi=150)
    x_lo = min(1e-6, min(0.5 / max(1, r.impostor_attempts) for r in rep.results.values()))
    y_lo = 1e-4
    cmap = plt.get_cmap("viridis")
    ks = sorted(rep.results)
    for n, k in enumerate(ks):
        r = rep.results[k]
        fmr, fnmr = r.det
        c = cmap(n / max(1, len(ks) - 1) * 0.9)
        ax.plot(probit(np.clip(fmr, x_lo, 1 - 1e-12)), probit(np.clip(fnmr, y_lo, 1 - 1e-12)), color=c, lw=1.8,
                label=f"K = {k} ({r.users:,} users)")
        for key, op in r.operating_points.items():
            if op.resolvable:
                ax.plot([probit(op.target_fmr)], [probit(min(max(op.fnmr, y_lo), 0.99))], marker="o", ms=4.5,
                        color=c, ls="none")
    for t in TARGET_FARS:
        ax.axvline(probit(t), color="0.75", ls=":", lw=0.9)
    xt = [t for t in (1e-6, 1e-5, 2e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.5) if t >= x_lo]
    yt = [t for t in (1e-4, 1e-3, 1e-2, 0.02, 0.05, 0.1, 0.2, 0.5, 0.8) if t >= y_lo]
    ax.set_xticks(probit(np.array(xt)), [f"{100 * t:g}%" for t in xt])
    ax.set_yticks(probit(np.array(yt)), [f"{100 * t:g}%" for t in yt])
    ax.set_xlim(probit(x_lo), probit(0.5))
    ax.set_ylim(probit(y_lo), probit(0.9))
    ax.tick_params(axis="x", labelrotation=35, labelsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(True, color="0.88", lw=0.7)
    ax.set_xlabel("False accept rate (FAR) per attempt, normal-deviate scale")
    ax.set_ylabel("False reject rate (FRR) per attempt, normal-deviate scale")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower left", fontsize=8, framealpha=0.95)
    fig.text(0.01, 0.005, f"fusion {rep.fusion}; {rep.draws} seeded enrolment draws pooled; dots: FAR "
             + ", ".join(metrics.fmr_key(t) for t in TARGET_FARS) + "; one attempt = one photo",
             fontsize=6.5, color="0.35")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    paths = [out / "det-transactions.png", out / "det-transactions.svg"]
    for p in paths:
        fig.savefig(p, metadata={"Date": None} if p.suffix == ".svg" else None)
    plt.close(fig)
    return paths
