"""Which fusion of a probe against a user's K templates? Decided on LFW View 1 training identities only.

    FR_PBD_MODELS=../shared/models .venv/bin/python benchmarks/fusion_view1.py ../shared/data/lfw --out FILE.json [--board B]

Images: every image of the identities named by ``pairsDevTrain.txt`` (View 1 training; no
``pairsDevTest.txt`` identity, none of View 2's folds is looked at separately). The transaction
protocol of ``fr-pbd eval lfw --enrol`` (fr_pbd.eval.transactions) runs on them for K = 1..5
and each fusion: max (what fr_pbd.match.Gallery does), the mean of the two best, the mean
score, and the probe against the L2-normalised mean template (centroid). The JSON holds
aggregates only (FRR at each FAR with counts, EER, attempts).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fr_pbd.eval import transactions as tx
from fr_pbd.eval.lfw import _embed_all, list_images, parse_pairs, pipeline_embedder
from fr_pbd.machine import machine_info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lfw", type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--board", default=None)
    ap.add_argument("--ks", default="1-5")
    ap.add_argument("--draws", type=int, default=tx.DEFAULT_DRAWS)
    a = ap.parse_args()
    pf = parse_pairs(a.lfw / "pairsDevTrain.txt")
    keep = {p.name1 for p in pf.pairs} | {p.name2 for p in pf.pairs}
    listing = [(n, k, p) for n, k, p in list_images(a.lfw) if n in keep]
    names = sorted(keep)
    code = {n: i for i, n in enumerate(names)}
    ids = np.array([code[n] for n, _, _ in listing], dtype=np.int64)
    embed, model_id = pipeline_embedder(a.board) if a.board else pipeline_embedder()
    t0 = time.perf_counter()
    x, ok, reasons = _embed_all([p for _, _, p in listing], embed, None)
    t_embed = time.perf_counter() - t0
    ks = tx.parse_enrol([a.ks])
    out: dict = {}
    for k in ks:
        out[str(k)] = {}
        for f in tx.FUSIONS:
            r = tx.summarise(tx.score_transactions(x, ids, ok, k, draws=a.draws, fusion=f))
            d = r.to_dict()
            out[str(k)][f] = {key: d[key] for key in ("enrolled_users", "genuine_attempts", "genuine_attempts_failed",
                                                     "impostor_attempts", "frr_at_far", "eer",
                                                     "frr_per_draw_at_pooled_threshold")}
    best = {}
    for k, per in out.items():
        best[k] = {key: min(per, key=lambda f: per[f]["frr_at_far"][key]["frr"])
                   for key in next(iter(per.values()))["frr_at_far"]}
    from fr_pbd.pipeline import run_settings

    precision = run_settings(a.board).embedder_variant if a.board else "fp32"
    res = {
        "what": "fusion of a probe against K enrolled templates, LFW View 1 training identities (pairsDevTrain.txt)",
        "data": {"pairs_file": "pairsDevTrain.txt", "identities": len(names), "images": len(listing),
                 "fta_images": int((~ok).sum()), "fta_reasons": reasons},
        "protocol": "fr_pbd.eval.transactions (as fr-pbd eval lfw --enrol)",
        "draws": a.draws,
        "seed": tx.DEFAULT_SEED,
        "fusions": list(tx.FUSIONS),
        "K": out,
        "lowest_frr": best,
        "model_id": model_id,
        "board": a.board,
        "config": {"precision": precision, "liveness": False},
        "timings_s": {"templates_s": round(t_embed, 1), "total_s": round(time.perf_counter() - t0, 1)},
        "machine": machine_info(),
    }
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    for k, per in out.items():
        print(f"K={k}: " + "; ".join(f"{f} " + " ".join(f"{100 * v['frr']:.2f}%" for v in r["frr_at_far"].values())
                                     for f, r in per.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
