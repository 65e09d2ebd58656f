"""The 2-fold identity-disjoint protocol: a score model and its operating point learned on one
half of the identities, reported on the other, both ways, pooled.

The identities are shuffled with the split seed into two halves, A and B (A is the selection
half of :func:`fr_pbd.eval.transactions.choose_operating_point`). Fold 1 trains the score model
on A (PLDA; cosine has nothing to train), chooses the threshold on A by the documented rule,
and scores every attempt of B; fold 2 does the same with the halves swapped. Impostor attempts
are within a half (an attempt never meets a person the model was trained on). The table per K
pools both held-out halves: genuine attempts concatenated, impostor scores merged; every
model ("cosine", "plda") is scored on exactly the same attempts (same draws, same halves).

The held-out rates at the chosen threshold are each fold's own threshold on its held-out half,
counts added (per group too). Fold 1's model and threshold are the ones a manifest takes (its
model was trained on A only, so fold 1's held-out half is untouched by both).

Scores stay in this process: nothing here writes or logs them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fr_pbd.errors import EvaluationError
from fr_pbd.eval import transactions as tx
from fr_pbd.eval.metrics import StreamedScores
from fr_pbd.match.score_model import COSINE, NAMES, PLDA, Cosine, PldaModel

__all__ = ["trainer", "merge_scores", "evaluate_two_fold", "TwoFoldReport"]

PROTOCOL = ("2-fold, identity-disjoint: identities shuffled with the split seed into halves A and B; fold 1 learns "
            "the score model and the threshold on A and is reported on B, fold 2 the other way round; impostor "
            "attempts within a half; FRR@FAR over both held-out halves pooled (same attempts for every score "
            "model); rates at the chosen threshold: each fold's threshold on its held-out half, counts added")


def trainer(name: str):
    """``train(x, identity) -> model`` for a score-model name (cosine: nothing to learn)."""
    if name == COSINE:
        return lambda x, ids: Cosine()
    if name == PLDA:
        return lambda x, ids: PldaModel.train(x, ids, trained_on=f"{np.unique(ids).size} identities, "
                                                                   f"{x.shape[0]} templates (one half)")
    raise EvaluationError(f"unknown score model {name!r} (one of {', '.join(NAMES)})")


def _merge_streams(a: StreamedScores, b: StreamedScores) -> StreamedScores:
    out = StreamedScores(bins=a.bins, lo=a.lo, hi=a.hi, top_k=a.top_k)
    out.merge(a)
    out.merge(b)
    return out


def merge_scores(a: tx.TransactionScores, b: tx.TransactionScores) -> tx.TransactionScores:
    """Two halves' attempts of one K as one (identity codes are global, so nothing collides)."""
    if (a.k, a.draws) != (b.k, b.draws):
        raise EvaluationError("only the same K and draws can be pooled")
    cat = np.concatenate
    return tx.TransactionScores(
        k=a.k, fusion=a.fusion, draws=a.draws, users=a.users + b.users,
        genuine=cat([a.genuine, b.genuine]), genuine_user=cat([a.genuine_user, b.genuine_user]),
        genuine_draw=cat([a.genuine_draw, b.genuine_draw]), failed_user=cat([a.failed_user, b.failed_user]),
        failed_draw=cat([a.failed_draw, b.failed_draw]), impostors=_merge_streams(a.impostors, b.impostors),
        impostor_failed=a.impostor_failed + b.impostor_failed, enrolment_failed=a.enrolment_failed + b.enrolment_failed,
        group_impostors={attr: {g: _merge_streams(per[g], b.group_impostors[attr][g]) for g in per}
                         for attr, per in a.group_impostors.items()},
        group_of_identity=a.group_of_identity,
    )


def _add_at(parts: list[dict | None]) -> dict | None:
    """Rates at each fold's threshold, counts added."""
    parts = [p for p in parts if p]
    if not parts:
        return None
    fr = sum(p["false_rejects"] for p in parts)
    ga = sum(p["genuine_attempts"] for p in parts)
    fa = sum(p["false_accepts"] for p in parts)
    ia = sum(p["impostor_attempts"] for p in parts)
    ts = [p["threshold"] for p in parts]
    return {"threshold": ts[0] if len(set(ts)) == 1 else None, "thresholds": ts, "frr": fr / ga if ga else None, "false_rejects": fr,
            "genuine_attempts": ga, "far": fa / ia if ia else None, "false_accepts": fa, "impostor_attempts": ia,
            "far_exact": all(p["far_exact"] for p in parts)}


@dataclass
class TwoFoldReport(tx.TransactionsReport):
    """:class:`~fr_pbd.eval.transactions.TransactionsReport` of the 2-fold protocol: the same shape, plus the
    score model, both folds' operating points, and the per-fold held-out rates."""

    score_model: dict | None = None
    folds: list | None = None

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["protocol_split"] = PROTOCOL
        d["score_model"] = self.score_model
        d["folds"] = self.folds
        return d


def evaluate_two_fold(
    templates: np.ndarray,
    identity: np.ndarray,
    acquired: np.ndarray,
    names: Sequence[str],
    ks: Sequence[int],
    *,
    score_model: str = COSINE,
    groups=None,
    draws: int = tx.DEFAULT_DRAWS,
    seed: int = tx.DEFAULT_SEED,
    split_seed: int = tx.DEFAULT_SEED,
    fusion: str = tx.DEFAULT_FUSION,
    threshold: float | None = None,
    progress: tx.Progress | None = None,
) -> TwoFoldReport:
    """Every K of ``ks`` on the 2-fold protocol (module docstring) with the named score model.

    ``threshold``: report the held-out rates at this one threshold instead of each fold's chosen one.
    """
    codes = tx.group_codes(groups, names) if groups is not None else None
    x = np.asarray(templates, dtype=np.float32)
    ids = np.asarray(identity).astype(np.int64)
    ok = np.asarray(acquired, dtype=bool)
    train = trainer(score_model)
    t0 = time.perf_counter()
    choices = []
    for swap in (False, True):
        choices.append(tx.choose_operating_point(x, ids, ok, groups=codes, draws=draws, seed=seed, fusion=fusion,
                                                 split_seed=split_seed, train=train, swap=swap, progress=progress))
    t1 = time.perf_counter()
    results: dict[int, tx.TransactionResult] = {}
    fold_rates: list[dict] = [{"K": {}} for _ in choices]
    for k in ks:
        per_fold = []
        for f, ch in enumerate(choices):
            held = tx.half_a_rows(ids, split_seed) == ch.swapped  # the half not selected
            if k == ch.k and ch.held_out_scores is not None:
                ts = ch.held_out_scores
            else:
                ts = tx.score_transactions(x[held], ids[held], ok[held], int(k), draws=draws, seed=seed,
                                           fusion=fusion, groups=codes, model=ch.model, progress=progress)
            r = tx.summarise(ts, seed=seed, threshold=ch.threshold if threshold is None else threshold)
            fold_rates[f]["K"][str(k)] = {"at_threshold": r.at_threshold,
                                          "frr_at_far": {key: tx._tx_dict(op) for key, op in
                                                         r.operating_points.items()},
                                          "groups_at_threshold": {a: {g: v.get("at_threshold") for g, v in
                                                                      per.items()} for a, per in
                                                                  (r.groups or {}).items()}}
            per_fold.append((ts, r))
        pooled = tx.summarise(merge_scores(per_fold[0][0], per_fold[1][0]), seed=seed)
        pooled.at_threshold = _add_at([r.at_threshold for _, r in per_fold])
        if pooled.groups:
            for attr, per in pooled.groups.items():
                for g, entry in per.items():
                    entry["at_threshold"] = _add_at([(r.groups or {}).get(attr, {}).get(g, {}).get("at_threshold")
                                                     for _, r in per_fold])
        results[int(k)] = pooled
    for ch in choices:
        ch.held_out_scores = None
    t2 = time.perf_counter()
    first = choices[0]
    folds = []
    for ch, rates in zip(choices, fold_rates):
        d = ch.to_dict()
        d["score_model"] = ch.model.describe() if ch.model is not None else None
        d["held_out_half_per_k"] = rates["K"]
        folds.append(d)
    return TwoFoldReport(
        results=results, threshold=first.threshold if threshold is None else threshold,
        threshold_source=("given" if threshold is not None else
                          "each fold's own, chosen on its training half (operating_point: fold 1, trained on half A)"),
        choice=first, choice_note=None, draws=draws, seed=seed, fusion=results[min(results)].fusion if results else
        fusion, timings={"operating_points_s": t1 - t0, "held_out_s": t2 - t1},
        score_model={"name": score_model, **(first.model.describe() if first.model is not None else {})},
        folds=folds)
