"""The LFW protocol (View 2, pairs.txt) plus all-comparisons FNMR@FMR over the whole set.

Two protocols, named apart in every report: the pairs of a pairs file (accuracy), and
every comparison of the image set (FNMR@FMR, EER, DET); :func:`protocol_labels` words them.

The embedder is injected (``embed(path) -> unit vector | None``, or raise
:class:`~fr_pbd.errors.QualityError`), so this module does not depend on the
capture pipeline and is tested with synthetic embeddings. Each image is embedded
once; templates live in one in-memory matrix and are never written anywhere.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fr_pbd.errors import EvaluationError, ImageError, QualityError
from fr_pbd.eval import metrics
from fr_pbd.eval.allpairs import AllPairsScores, score_all_pairs
from fr_pbd.eval.groups import GroupsTable, GroupsResult, analyse_groups
from fr_pbd.eval.transactions import DEFAULT_DRAWS, DEFAULT_FUSION, TransactionsReport, evaluate_transactions

__all__ = ["Pair", "PairsFile", "parse_pairs", "image_path", "list_images", "LfwResult", "evaluate_lfw",
           "protocol_labels"]

Embedder = Callable[[Path], "np.ndarray | None"]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Pair:
    name1: str
    n1: int
    name2: str
    n2: int

    @property
    def same(self) -> bool:
        return self.name1 == self.name2

    def images(self) -> tuple[tuple[str, int], tuple[str, int]]:
        return (self.name1, self.n1), (self.name2, self.n2)


@dataclass(frozen=True)
class PairsFile:
    """A parsed LFW pairs file: ``sets`` of ``per_set`` matched then ``per_set`` mismatched pairs.

    ``pairs.txt`` (View 2): header ``10 300``, 10 folds. ``pairsDevTrain.txt`` /
    ``pairsDevTest.txt`` (View 1): header ``1100`` / ``500``, one set, no folds.
    """

    sets: tuple[tuple[Pair, ...], ...]
    per_set: int

    @property
    def folded(self) -> bool:
        return len(self.sets) > 1

    @property
    def pairs(self) -> list[Pair]:
        return [p for s in self.sets for p in s]

    def __len__(self) -> int:
        return sum(len(s) for s in self.sets)


def parse_pairs(path: Path | str) -> PairsFile:
    """Parse and validate an LFW pairs file (typed error with the line number when malformed)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EvaluationError(f"cannot read pairs file {path}: {exc.strerror}") from None
    lines = [(k + 1, ln.split()) for k, ln in enumerate(text.splitlines())]
    lines = [(k, t) for k, t in lines if t]
    if not lines:
        raise EvaluationError(f"{path.name}: empty pairs file")
    head = lines[0][1]
    try:
        nums = [int(v) for v in head]
    except ValueError:
        raise EvaluationError(f"{path.name}: line 1: header must be 'SETS PER_SET' or 'PER_SET'") from None
    if len(nums) == 2:
        n_sets, per = nums
    elif len(nums) == 1:
        n_sets, per = 1, nums[0]
    else:
        raise EvaluationError(f"{path.name}: line 1: header must be 'SETS PER_SET' or 'PER_SET'")
    if n_sets < 1 or per < 1:
        raise EvaluationError(f"{path.name}: line 1: counts must be positive")
    body = lines[1:]
    if len(body) != n_sets * 2 * per:
        raise EvaluationError(
            f"{path.name}: the header announces {n_sets} x (2 x {per}) pairs, the file holds {len(body)}")
    sets = []
    for s in range(n_sets):
        chunk = body[s * 2 * per:(s + 1) * 2 * per]
        out = []
        for idx, (lineno, t) in enumerate(chunk):
            matched = idx < per
            try:
                if matched and len(t) == 3:
                    out.append(Pair(t[0], int(t[1]), t[0], int(t[2])))
                    continue
                if not matched and len(t) == 4:
                    if t[0] == t[2]:
                        raise EvaluationError(f"{path.name}: line {lineno}: a mismatched pair names one person")
                    out.append(Pair(t[0], int(t[1]), t[2], int(t[3])))
                    continue
            except ValueError:
                raise EvaluationError(f"{path.name}: line {lineno}: image numbers must be integers") from None
            kind = "matched (NAME N1 N2)" if matched else "mismatched (NAME1 N1 NAME2 N2)"
            raise EvaluationError(f"{path.name}: line {lineno}: expected a {kind} pair")
        sets.append(tuple(out))
    return PairsFile(tuple(sets), per)


def image_path(lfw_dir: Path, name: str, number: int) -> Path:
    return Path(lfw_dir) / name / f"{name}_{number:04d}.jpg"


def list_images(lfw_dir: Path) -> list[tuple[str, int, Path]]:
    """Every ``NAME/NAME_NNNN.jpg`` under ``lfw_dir`` as (name, number, path), sorted."""
    out = []
    root = Path(lfw_dir)
    if not root.is_dir():
        raise EvaluationError(f"{root} is not a directory")
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(d.glob(f"{d.name}_*.jpg")):
            stem = f.stem[len(d.name) + 1:]
            if stem.isdigit():
                out.append((d.name, int(stem), f))
    return out


def _interleaved(pf: PairsFile) -> list[tuple[int, Pair]]:
    """(set, pair) in an order where every prefix is spread over all sets and both halves."""
    out = []
    for k in range(pf.per_set):
        for s, pairs in enumerate(pf.sets):
            out.append((s, pairs[k]))
            out.append((s, pairs[pf.per_set + k]))
    return out


@dataclass
class LfwResult:
    """Everything an LFW evaluation measured; aggregates only leave through :mod:`report`."""

    pairs_file: str
    pairs: int
    pairs_failed: int
    folds: int
    tenfold: metrics.TenFoldResult | None
    accuracy_same_set: float | None  # single-set files: threshold chosen on the same pairs (optimistic)
    images: int
    identities: int
    fta_images: int
    fta_reasons: dict[str, int]
    all_pairs: AllPairsScores | None = field(repr=False)
    operating_points: dict[str, metrics.OperatingPoint]
    eer: metrics.EER | None
    operating_fmr: float
    operating_threshold: float | None
    groups: GroupsResult | None
    limited: bool
    timings: dict[str, float]
    model_id: str | None = None
    transactions: TransactionsReport | None = None  # --enrol: fr_pbd.eval.transactions
    score_model: str | None = None  # --score-model: the 10-fold accuracy's and the transactions' score model


def embed_images(paths: Sequence[Path], embed: Embedder, progress: Progress | None = None):
    """Templates of ``paths`` as the evaluation computes them: (N, D) unit rows, acquired flags, failure reasons.

    In memory only; ``fr-pbd models build plda`` trains on them.
    """
    return _embed_all(paths, embed, progress)


def _embed_all(paths: Sequence[Path], embed: Embedder, progress: Progress | None):
    vecs: list[np.ndarray | None] = []
    reasons: Counter[str] = Counter()
    dim = None
    for k, p in enumerate(paths):
        try:
            v = embed(p)
        except QualityError as exc:
            v = None
            reasons[exc.reason] += 1
        except ImageError:
            v = None
            reasons["unreadable_image"] += 1
        else:
            if v is None:
                reasons["no_template"] += 1
            else:
                v = np.asarray(getattr(v, "vector", v), dtype=np.float32).ravel()
                if dim is None:
                    dim = v.size
                if v.size != dim or not np.all(np.isfinite(v)):
                    raise EvaluationError("the embedder returned templates of different sizes or non-finite values")
                nrm = float(np.linalg.norm(v))
                if nrm == 0.0:
                    raise EvaluationError("the embedder returned a zero vector")
                v = v / nrm
        vecs.append(v)
        if progress is not None:
            progress(k + 1, len(paths))
    dim = dim or 1
    x = np.zeros((len(paths), dim), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    for k, v in enumerate(vecs):
        if v is not None:
            x[k] = v
            ok[k] = True
    return x, ok, dict(sorted(reasons.items()))


def evaluate_lfw(
    lfw_dir: Path | str,
    pairs_file: Path | str,
    embed: Embedder,
    *,
    limit: int | None = None,
    groups: GroupsTable | None = None,
    operating_fmr: float = 1e-4,
    threshold: float | None = None,
    targets: Sequence[float] = metrics.TARGET_FMRS,
    all_pairs: bool = True,
    progress: Progress | None = None,
    top_k: int = 2**17,
    model_id: str | None = None,
    group_resamples: int | None = None,
    enrol: Sequence[int] = (),
    enrol_threshold: float | None = None,
    enrol_threshold_source: str = "given",
    enrol_draws: int = DEFAULT_DRAWS,
    fusion: str = DEFAULT_FUSION,
    enrol_progress: Progress | None = None,
    score_model: str | None = None,
) -> LfwResult:
    """Run the LFW protocol and the all-comparisons metrics.

    Images: every image under ``lfw_dir`` (``limit=None``); with ``all_pairs=False``, only
    the images the pairs file names (the pairs protocol needs no other); or, for a quick run,
    the first ``limit`` images named by the pairs file, taken across all folds
    alike; then only the pairs whose two images are among them are scored.
    ``all_pairs``: also score every comparison of those images (FNMR@FMR, EER, DET, groups).
    A pair with a failed image is an error at every threshold; a genuine
    comparison with a failed image is a false non-match at every threshold.
    With ``groups``, per-group figures at the global threshold and at the worst-group
    threshold for ``operating_fmr`` (:func:`fr_pbd.eval.groups.analyse_groups`), with
    ``group_resamples`` per-identity bootstrap resamples (default 1,000).
    With ``score_model`` (``"cosine"`` or ``"plda"``), the transactions follow the 2-fold
    identity-disjoint protocol (:mod:`fr_pbd.eval.twofold`) with that model, and the 10-fold
    accuracy uses it too (a learned model is trained, per fold, on the identities that fold's
    pairs do not contain: :func:`_tenfold_scores`); the image-vs-image sections stay cosine.
    """
    lfw_dir = Path(lfw_dir)
    pf_path = Path(pairs_file)
    if not pf_path.is_absolute() and not pf_path.exists():
        pf_path = lfw_dir / pf_path
    pf = parse_pairs(pf_path)
    t0 = time.perf_counter()

    if enrol and not all_pairs:
        raise EvaluationError("--enrol measures every image of the set: it needs the all-pairs run")
    if limit is None and all_pairs:
        listing = list_images(lfw_dir)
        if not listing:
            raise EvaluationError(f"no LFW images under {lfw_dir}")
        keep_pairs = [(s, p) for s, pairs in enumerate(pf.sets) for p in pairs]
    elif limit is None:  # the pairs protocol alone: only the images the pairs name
        keep_pairs = [(s, p) for s, pairs in enumerate(pf.sets) for p in pairs]
        named = sorted({im for _s, p in keep_pairs for im in p.images()})
        listing = [(n, k, image_path(lfw_dir, n, k)) for n, k in named]
        for n, k, path in listing:
            if not path.is_file():
                raise EvaluationError(f"image {n} {k} named by {pf_path.name} is not in {lfw_dir}")
    else:
        if limit < 2:
            raise EvaluationError("--limit must be at least 2 images")
        chosen: dict[tuple[str, int], None] = {}
        keep_pairs = []
        for s, p in _interleaved(pf):
            new = [im for im in p.images() if im not in chosen]
            if len(chosen) + len(new) > limit:
                break
            for im in new:
                chosen[im] = None
            keep_pairs.append((s, p))
        listing = [(n, k, image_path(lfw_dir, n, k)) for n, k in sorted(chosen)]
    index = {(n, k): i for i, (n, k, _) in enumerate(listing)}
    for _s, p in keep_pairs:
        for im in p.images():
            if im not in index:
                raise EvaluationError(f"image {im[0]} {im[1]} named by {pf_path.name} is not in {lfw_dir}")

    names = sorted({n for n, _, _ in listing})
    code = {n: c for c, n in enumerate(names)}
    identity = np.array([code[n] for n, _, _ in listing], dtype=np.int64)
    if enrol:  # before the templates: a K no identity can serve is an error now, not in ten minutes
        most = int(np.bincount(identity).max()) if identity.size else 0
        if max(enrol) + 1 > most:
            raise EvaluationError(f"--enrol {max(enrol)}: no identity has {max(enrol) + 1} images "
                                  f"(the most any has is {most}, so K can be at most {most - 1})")

    x, ok, reasons = _embed_all([p for _, _, p in listing], embed, progress)
    t_embed = time.perf_counter() - t0

    # --- the pairs protocol
    a = np.array([index[p.images()[0]] for _, p in keep_pairs], dtype=np.int64)
    b = np.array([index[p.images()[1]] for _, p in keep_pairs], dtype=np.int64)
    same = np.array([p.same for _, p in keep_pairs], dtype=bool)
    fold = np.array([s for s, _ in keep_pairs], dtype=np.int64)
    pair_ok = ok[a] & ok[b]
    scores = np.full(a.size, np.nan)
    scores[pair_ok] = np.einsum("ij,ij->i", x[a[pair_ok]], x[b[pair_ok]]).astype(np.float64)
    if score_model not in (None, "cosine"):
        scores = _tenfold_scores(score_model, x, ok, identity, a, b, fold, pair_ok)
    tenfold = None
    acc_same = None
    if pf.folded and np.unique(fold).size >= 2:
        tenfold = metrics.kfold_accuracy(scores, same, fold)
    elif a.size and pair_ok.any():
        t = metrics.best_threshold(scores[pair_ok], same[pair_ok])
        acc_same = float(np.sum((scores[pair_ok] >= t) == same[pair_ok]) / a.size)
    t_pairs = time.perf_counter() - t0 - t_embed

    # --- every comparison
    ap = None
    ops: dict[str, metrics.OperatingPoint] = {}
    the_eer = None
    op_threshold = threshold
    gres = None
    if all_pairs:
        ap = score_all_pairs(x, identity, ok, top_k=top_k)
        if ap.impostors.n == 0 or ap.genuine.size + ap.genuine_failed == 0:
            raise EvaluationError("the image set yields no impostor or no genuine comparison")
        ops = metrics.fnmr_at_fmrs(ap.genuine, ap.impostors, targets, genuine_failed=ap.genuine_failed)
        the_eer = metrics.eer(ap.genuine, ap.impostors, genuine_failed=ap.genuine_failed)
        if op_threshold is None:
            op_threshold = metrics.fnmr_at_fmr(
                ap.genuine, ap.impostors, operating_fmr, genuine_failed=ap.genuine_failed).threshold
        if groups is not None:  # counts at the global threshold, the worst-group threshold, intervals, curves
            gres = analyse_groups(
                groups, names, identity, ok, x, ap, op_threshold, target_fmr=operating_fmr, targets=targets,
                top_k=top_k, resamples=group_resamples,
                threshold_source=("given" if threshold is not None else f"FMR={metrics.fmr_key(operating_fmr)}"))
    t_all = time.perf_counter() - t0 - t_embed - t_pairs
    tx = None
    if enrol and score_model is not None:  # the 2-fold protocol, the named score model
        from fr_pbd.eval.twofold import evaluate_two_fold

        tx = evaluate_two_fold(x, identity, ok, names, enrol, score_model=score_model, groups=groups,
                               draws=enrol_draws, fusion=fusion, threshold=enrol_threshold, progress=enrol_progress)
    elif enrol:  # the same template matrix: templates are computed once
        tx = evaluate_transactions(x, identity, ok, names, enrol, groups=groups, threshold=enrol_threshold,
                                   threshold_source=enrol_threshold_source,
                                   draws=enrol_draws, fusion=fusion, progress=enrol_progress)
    return LfwResult(
        pairs_file=pf_path.name,
        pairs=int(a.size),
        pairs_failed=int((~pair_ok).sum()),
        folds=int(np.unique(fold).size) if pf.folded else 0,
        tenfold=tenfold,
        accuracy_same_set=acc_same,
        images=len(listing),
        identities=len(names),
        fta_images=int((~ok).sum()),
        fta_reasons=reasons,
        all_pairs=ap,
        operating_points=ops,
        eer=the_eer,
        operating_fmr=operating_fmr,
        operating_threshold=op_threshold,
        groups=gres,
        limited=limit is not None,
        timings={"templates_s": t_embed, "pairs_protocol_s": t_pairs, "all_comparisons_s": t_all,
                 "per_image_ms": 1000.0 * t_embed / max(1, len(listing))},
        model_id=model_id,
        transactions=tx,
        score_model=score_model,
    )


def protocol_labels(res: LfwResult) -> tuple[str, str | None]:
    """The two protocols in words, for titles and summaries: the pairs one, and the all-comparisons
    one (None when it was not run)."""
    pairs = f"pairs of {res.pairs_file} ({res.pairs:,} pairs{', limited' if res.limited else ''})"
    ap = res.all_pairs
    if ap is None:
        return pairs, None
    n_gen = ap.genuine.size + ap.genuine_failed
    where = f"the {res.images:,} images (limited)" if res.limited else "LFW"
    return pairs, f"every comparison of {where} ({ap.impostors.n:,} impostor, {n_gen:,} genuine)"


def _tenfold_scores(name, x, ok, identity, a, b, fold, pair_ok) -> np.ndarray:
    """Pair scores under a learned score model: the pairs of fold s are scored by a model trained on
    every acquired image of the identities that no pair of fold s names (LFW's folds are
    identity-disjoint, so no test pair's person is in its model)."""
    from fr_pbd.eval.transactions import pair_features
    from fr_pbd.eval.twofold import trainer

    train = trainer(name)
    scores = np.full(a.size, np.nan)
    for s in np.unique(fold):
        sel = (fold == s) & pair_ok
        if not sel.any():
            continue
        held = np.zeros(int(identity.max()) + 1, dtype=bool)
        held[identity[a[fold == s]]] = True
        held[identity[b[fold == s]]] = True
        m = ok & ~held[identity]
        model = train(x[m], identity[m])
        left, right = pair_features(model, x)
        scores[sel] = np.einsum("ij,ij->i", left[a[sel]], right[b[sel]])
    return scores


# The pipeline fr-pbd evaluates by default: detector + embedder from the manifest.
DEFAULT_MODELS = ("yunet-2023mar", "dlib-resnet-v1")


def pipeline_embedder(board: str | None = None) -> tuple[Embedder, str]:
    """The capture pipeline as an embedder: LFW images hold one subject near the centre,
    other faces at the edges, so the face nearest the centre is taken."""
    from fr_pbd.pipeline import build_pipeline

    ex = build_pipeline(board, liveness=False).extractor  # photos, not presentations: no PAD here

    def embed(path: Path) -> np.ndarray:
        return ex.template(path, purpose="verify", select="center").vector

    return embed, ex.model_id
