"""``fr-pbd eval lfw | pad``: accuracy and presentation-attack error rates by the book (library: :mod:`fr_pbd.eval`).

Progress goes to stderr and holds counts and times only (never a score).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import TextIO

from fr_pbd.cli._common import EXIT_OK, add_board, add_json, print_json, subcommands


class ProgressBar:
    """A one-line progress bar on stderr (a line per 10 % when not a terminal)."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.t0 = time.monotonic()
        self._last = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._decile = -1

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        final = done >= total
        if self._tty:
            if not final and now - self._last < 0.2:
                return
        else:
            decile = (10 * done) // max(1, total)
            if decile == self._decile and not final:
                return
            self._decile = decile
        self._last = now
        el = now - self.t0
        rate = done / el if el > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        filled = int(self.width * done / max(1, total))
        bar = "#" * filled + "." * (self.width - filled)
        line = f"{self.label} [{bar}] {done}/{total} {rate:.1f}/s ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        if self._tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def cmd_eval_lfw(args: argparse.Namespace) -> int:
    """Run the LFW evaluation and write the report folder."""
    from fr_pbd.errors import EvaluationError
    from fr_pbd.eval.groups import read_groups
    from fr_pbd.eval.lfw import DEFAULT_MODELS, evaluate_lfw, pipeline_embedder, protocol_labels
    from fr_pbd.eval.report import write_report

    data = Path(args.data)
    lfw_dir = data / "lfw" if (data / "lfw" / "pairs.txt").is_file() and not (data / "pairs.txt").is_file() else data
    pairs = Path(args.pairs)
    if pairs.is_absolute():
        pairs_path = pairs
    elif (lfw_dir / pairs).is_file():
        pairs_path = lfw_dir / pairs
    else:
        pairs_path = pairs
    if not pairs_path.is_file():
        raise EvaluationError(f"pairs file {pairs_path} not found")
    groups = read_groups(args.groups) if args.groups else None
    if args.limit is not None and args.limit < 2:
        raise EvaluationError("--limit must be at least 2")
    if not (0.0 < args.fmr < 1.0):
        raise EvaluationError("--fmr must be in (0, 1)")
    enrol, fusion, tx_threshold = _transactions_args(args)
    all_pairs = _all_pairs(args, pairs_path, bool(groups), bool(enrol))
    embed, model_id = pipeline_embedder(args.board) if args.board else pipeline_embedder()
    score_model = _score_model(args, model_id) if enrol else None
    bar = None if args.quiet else ProgressBar("templates")
    t0 = time.monotonic()
    tx_source = "given"
    res = evaluate_lfw(lfw_dir, pairs_path, embed, limit=args.limit, groups=groups, operating_fmr=args.fmr,
                       threshold=args.threshold, progress=bar, model_id=model_id,
                       enrol=enrol, enrol_threshold=tx_threshold,
                       enrol_threshold_source=tx_source, enrol_draws=args.enrol_draws, fusion=fusion,
                       enrol_progress=None if args.quiet or not enrol else ProgressBar("transactions"),
                       score_model=score_model, all_pairs=all_pairs)
    argv = ["fr-pbd", "eval", "lfw", "--data", str(args.data), "--pairs", str(args.pairs), "--out", str(args.out)]
    if args.groups:
        argv += ["--groups", str(args.groups)]
    if args.limit is not None:
        argv += ["--limit", str(args.limit)]
    if args.threshold is not None:
        argv += ["--threshold", repr(args.threshold)]
    if args.fmr != 1e-4:
        argv += ["--fmr", repr(args.fmr)]
    if args.board:
        argv += ["--board", str(args.board)]
    for v in args.enrol or ():
        argv += ["--enrol", str(v)]
    if args.fusion:
        argv += ["--fusion", args.fusion]
    if args.score_model:
        argv += ["--score-model", args.score_model]
    if args.enrol_draws != 5:
        argv += ["--enrol-draws", str(args.enrol_draws)]
    if args.all_pairs is not None:
        argv += ["--all-pairs" if args.all_pairs else "--no-all-pairs"]
    res.timings["total_s"] = time.monotonic() - t0
    used = DEFAULT_MODELS
    if args.board:  # an int8 board: the report names the int8 file (its templates carry the fp32 model id)
        from fr_pbd.pipeline import run_settings

        rs = run_settings(args.board)
        used = (DEFAULT_MODELS[0], rs.embedder + ("-int8" if rs.embedder_variant == "int8" else ""))
    files = write_report(res, args.out, models=used, command=shlex.join(argv), data_dir=lfw_dir,
                         pairs_path=pairs_path)
    tf, op = res.tenfold, res.operating_points.get("1e-4")
    pairs_label, every = protocol_labels(res)
    if args.json:  # the summary below as one object (aggregates only); report.json holds everything
        print_json({"report": str(files["report.json"].parent), "pairs": res.pairs, "pairs_failed": res.pairs_failed,
                    "protocols": {"pairs": pairs_label, "all_comparisons": every},
                    "tenfold_accuracy": None if tf is None else {"mean": tf.mean, "std": tf.std},
                    "accuracy_same_set_threshold": res.accuracy_same_set,
                    "fnmr_at_fmr_1e-4": None if op is None else {"fnmr": op.fnmr, "threshold": op.threshold,
                                                                 "impostor_comparisons": op.impostor_comparisons},
                    "eer": None if res.eer is None else res.eer.eer, "fta_images": res.fta_images,
                    "images": res.images, "groups": None if res.groups is None else res.groups.to_dict(),
                    "transactions": None if res.transactions is None else res.transactions.to_dict()})
        return EXIT_OK
    print(f"{pairs_label}, {res.pairs_failed} with a failed image:")
    if tf is not None:
        print(f"  10-fold accuracy {100 * tf.mean:.2f} % ± {100 * tf.std:.2f} % (std over {res.folds} folds)")
    elif res.accuracy_same_set is not None:
        print(f"  accuracy {100 * res.accuracy_same_set:.2f} % at the best threshold on the same pairs "
              "(no folds; optimistic)")
    else:
        print("  accuracy n/a (no pair could be scored)")
    if every is None:
        print("every comparison: not scored (only the images the pairs name were embedded; --all-pairs adds it)")
    else:
        print(f"{every}:")
    if op is not None:
        print(f"  FNMR {100 * op.fnmr:.3f} % at FMR 1e-4 (threshold {op.threshold:.4f}, "
              f"{op.impostor_comparisons:,} impostor comparisons)")
    if res.eer is not None:
        print(f"  EER {100 * res.eer.eer:.3f} %")
    if res.groups is not None:  # both thresholds and what each costs, per group
        from fr_pbd.eval.groups_report import summary_lines

        for line in summary_lines(res.groups.to_dict()):
            print(line)
    if res.transactions is not None:
        for line in _transactions_summary(res.transactions.to_dict()):
            print(line)
    print(f"FTA {res.fta_images} of {res.images} images")
    print(f"report: {files['report.json'].parent}")
    return EXIT_OK


def _all_pairs(args: argparse.Namespace, pairs_path: Path, groups: bool, enrol: bool) -> bool:
    """--all-pairs / --no-all-pairs, else on for LFW's View 2 pairs.txt or with --groups / --enrol (whole-set
    figures), off for any other pairs file (only the images its pairs name are embedded)."""
    from fr_pbd.errors import EvaluationError

    if args.all_pairs is False and (groups or enrol):
        raise EvaluationError("--groups and --enrol measure every comparison: they cannot run with --no-all-pairs")
    if args.all_pairs is not None:
        return args.all_pairs
    return pairs_path.name == "pairs.txt" or groups or enrol


def _transactions_args(args: argparse.Namespace) -> tuple[tuple[int, ...], str, float | None]:
    """--enrol, --fusion, --enrol-draws checked before any template is computed."""
    from fr_pbd.errors import EvaluationError
    from fr_pbd.eval.transactions import DEFAULT_FUSION, FUSIONS, parse_enrol
    from fr_pbd.match.score_model import NAMES as SCORE_MODELS

    if not args.enrol:
        if args.fusion or args.enrol_draws != 5 or args.score_model:
            raise EvaluationError("--fusion, --score-model and --enrol-draws need --enrol")
        return (), DEFAULT_FUSION, None
    fusion = args.fusion or DEFAULT_FUSION
    if fusion not in FUSIONS:
        raise EvaluationError(f"--fusion must be one of {', '.join(FUSIONS)}")
    if args.score_model not in (None, *SCORE_MODELS):
        raise EvaluationError(f"--score-model must be one of {', '.join(SCORE_MODELS)}")
    if args.score_model not in (None, "cosine") and args.fusion:
        raise EvaluationError("--fusion applies to --score-model cosine only")
    if not 1 <= args.enrol_draws <= 100:
        raise EvaluationError("--enrol-draws must be 1 to 100")
    return parse_enrol(args.enrol), fusion, args.threshold


def _score_model(args: argparse.Namespace, model_id: str) -> str:
    """--score-model, else the manifest's for the embedder (``cosine`` or ``plda``)."""
    from fr_pbd.errors import FrPbdError
    from fr_pbd.match.score_model import COSINE, PLDA, name_in_force

    if args.score_model:
        return args.score_model
    try:
        return COSINE if name_in_force(model_id) == COSINE else PLDA
    except FrPbdError:  # an embedder the manifest does not know (a test's): plain cosine
        return COSINE


def _transactions_summary(t: dict) -> list[str]:
    """What a user should expect: FRR per K at each FAR, and at the threshold in force."""
    out = []
    for k, r in t["K"].items():
        parts = ", ".join(f"{100 * v['frr']:.2f} % at FAR {key}" + ("" if v["resolvable"] else " (not resolved)")
                          for key, v in r["frr_at_far"].items())
        out.append(f"K={k} ({r['enrolled_users']:,} users, {r['genuine_attempts']:,} genuine and "
                   f"{r['impostor_attempts']:,} impostor attempts, {t['fusion']}): FRR {parts}")
    if t.get("score_model"):
        out.append(f"score model {t['score_model']['name']}; 2-fold identity-disjoint protocol, held-out halves pooled")
    if t["threshold"] is not None:
        src = "the manifest's default" if t["threshold_source"] == "manifest" else t["threshold_source"]
        for k, r in t["K"].items():
            a = r["at_threshold"]
            shown = ", ".join(f"{v:.5f}" for v in a["thresholds"]) if a.get("thresholds") else f"{t['threshold']:.5f}"
            out.append(f"at threshold {shown} ({src}), enrolled with {k} image(s): refused in "
                       f"{100 * a['frr']:.2f} % of attempts ({a['false_rejects']:,} of {a['genuine_attempts']:,}); "
                       f"impostors accepted {a['far']:.2e} ({a['false_accepts']:,} of {a['impostor_attempts']:,})")
    op = t.get("operating_point")
    if op:
        h = op["held_out_half"]["transactions"]["all"]
        out.append(f"operating point (transaction FAR <= {op['target_far']:g} at K={op['k']} in every group, "
                   f"chosen on half of the identities): {op['threshold']:.5f}; on the other half: FRR "
                   f"{100 * h['frr']:.2f} %, FAR {h['far']:.2e}")
        for key, v in op["held_out_half"]["transactions"].items():
            if key != "all" and v:
                out.append(f"  held-out {key}: FRR {100 * v['frr']:.2f} %, FAR {v['far']:.2e} "
                           f"({v['false_accepts']:,} of {v['impostor_attempts']:,})")
    return out


def cmd_eval_pad(args: argparse.Namespace) -> int:
    """Score attack and bona fide images, print the ISO/IEC 30107-3 table, optionally write JSON."""
    from fr_pbd.capture.liveness import DEFAULT_THRESHOLD
    from fr_pbd.errors import EvaluationError
    from fr_pbd.eval.pad import _spread, collect, evaluate_pad, format_report, pipeline_scorer

    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    if not 0.0 <= threshold <= 1.0:
        raise EvaluationError("--threshold must be in [0, 1]")
    attacks = _spread(collect(p for group in args.attacks for p in group), args.limit)
    bona = _spread(collect(p for group in args.bona_fide for p in group), args.limit)
    if not attacks or not bona:
        raise EvaluationError("need at least one attack image and one bona fide image")
    progress = None if args.quiet else ProgressBar("pad")
    res = evaluate_pad(attacks, bona, pipeline_scorer(args.select), threshold, progress)
    print(format_report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res.to_dict(), indent=2) + "\n")
        print(f"report: {args.json}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="measure accuracy by the book (ISO/IEC 19795-1, LFW protocol)")
    esub = subcommands(ev, "eval_command", "BENCHMARK")
    lf = esub.add_parser(
        "lfw",
        help="LFW: 10-fold accuracy, FNMR@FMR over all comparisons, DET, demographic differentials",
        description="Evaluate the capture pipeline on LFW. Templates are computed once per image and kept in "
                    "memory only; the report holds aggregates only.",
    )
    lf.add_argument("--data", required=True, help="the LFW folder (holding pairs.txt and NAME/NAME_NNNN.jpg)")
    lf.add_argument("--pairs", default="pairs.txt", help="pairs file, relative to --data (default pairs.txt)")
    lf.add_argument("--all-pairs", action=argparse.BooleanOptionalAction, default=None,
                    help="also embed every image of --data and score every comparison (FNMR@FMR, EER, DET); "
                         "default: on for pairs.txt or with --groups/--enrol, off for any other pairs file, "
                         "which embeds only the images its pairs name")
    lf.add_argument("--out", required=True, help="output folder for report.json, report.md and the plots")
    lf.add_argument("--groups", default=None, help="CSV identity,group[,...] for demographic differentials")
    lf.add_argument("--limit", type=int, default=None,
                    help="use only the first N images named by the pairs file (a quick, non-comparable run)")
    lf.add_argument("--fmr", type=float, default=1e-4,
                    help="target FMR of the operating threshold for per-group figures (default 1e-4)")
    lf.add_argument("--threshold", type=float, default=None,
                    help="use this operating threshold for per-group figures instead of the FMR one")
    lf.add_argument("--enrol", action="append", default=None, metavar="K",
                    help="transaction error rates with K enrolled images per user: K, K1-K2 or K1,K2 (repeatable; "
                         "e.g. --enrol 1-5); also chooses the operating point on half of the identities")
    lf.add_argument("--fusion", default=None, metavar="NAME",
                    help="with --enrol: how a probe meets a user's K templates: max, top2, mean or centroid "
                         "(default: fr_pbd.eval.transactions.DEFAULT_FUSION)")
    lf.add_argument("--score-model", default=None, metavar="NAME",
                    help="with --enrol: cosine or plda, learned (plda) and its threshold chosen on one seeded half "
                         "of the identities and reported on the other, both ways, pooled (default: the manifest's)")
    lf.add_argument("--enrol-draws", type=int, default=5, metavar="N",
                    help="with --enrol: seeded draws of which images are enrolled, pooled (default 5)")
    add_board(lf)
    lf.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json(lf, "the summary's figures (aggregates; report.json holds everything)")
    lf.set_defaults(func=cmd_eval_lfw)
    p = esub.add_parser(
        "pad", help="presentation-attack detection: APCER per attack type, worst case, BPCER (ISO/IEC 30107-3)",
        description="Run the PAD ensemble on attack and bona fide images. Attack type = sub-directory name under "
                    "--attacks, else the filename prefix (spoof_print_1.jpg -> print). Only aggregates are shown.")
    p.add_argument("--attacks", required=True, action="append", nargs="+", metavar="PATH",
                   help="attack images: directories (searched recursively) or files; repeatable")
    p.add_argument("--bona-fide", required=True, action="append", nargs="+", metavar="PATH", dest="bona_fide",
                   help="bona fide images: directories (searched recursively) or files; repeatable")
    p.add_argument("--threshold", type=float, default=None,
                   help="bona fide if p_real >= T (default: fr_pbd.capture.liveness.DEFAULT_THRESHOLD)")
    p.add_argument("--select", choices=("largest", "center"), default="largest",
                   help="which face to judge when there are several (largest: a device camera; center: LFW)")
    p.add_argument("--limit", type=int, default=None,
                   help="use N evenly spaced images of each side (a quick run)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the aggregates as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval_pad)
