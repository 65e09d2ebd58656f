"""Render README.md's figures table from the result files in docs/results/.

    python tools/readme_figures.py            # rewrite the table in README.md
    python tools/readme_figures.py --check    # exit 1, with a diff, if README.md differs

No figure in README.md is typed by hand: every number in the table is read from a result
record (``docs/results/*.json``, written by ``benchmarks/record_result.py``), and each row
names the record it comes from. A second table gives each record's command and
configuration (embedder precision, liveness, threads, BLAS, CPU and its flags, date,
commit, load). Only the text between ``<!-- figures:begin -->`` and
``<!-- figures:end -->`` is generated; the rest of README.md is left as it is.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path("docs/results")
BEGIN = "<!-- figures:begin -->"
END = "<!-- figures:end -->"
CONFIG_KEYS = ("precision", "liveness", "threads", "blas", "cpu_model", "cpu_flags")
RECORD_KEYS = ("schema", "command", "date_utc", "git", "config", "load", "result")


def pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f} %"


def count(n: int) -> str:
    return f"{n:,}"


def sci(x: float, digits: int = 1) -> str:
    """2.8e-05 -> '2.8e-5' (the exponent as the docs write it)."""
    mant, exp = f"{x:.{digits}e}".split("e")
    return f"{mant}e{int(exp)}"


def millions(n: int) -> str:
    return f"{n / 1e6:.2f} M"


# ----------------------------------------------------------------------------------- the rows
def _eval_accuracy(r: dict[str, Any]) -> tuple[str, str]:
    return ("LFW `pairs.txt`, 10-fold accuracy",
            f"{pct(r['accuracy_10fold_mean'])} ± {pct(r['accuracy_10fold_std'])}")


def _eval_fnmr(r: dict[str, Any]) -> tuple[str, str]:
    a, b = r["fnmr_at_fmr"]["1e-4"], r["fnmr_at_fmr"]["1e-5"]
    return (f"FNMR at FMR 1e-4 / 1e-5, every comparison of LFW ({millions(r['impostor_comparisons'])} impostor "
            f"comparisons of acquired images, {count(r['genuine_comparisons'])} genuine)",
            f"{pct(a['fnmr'], 1)} / {pct(b['fnmr'], 1)}")


def _eval_eer_fta(r: dict[str, Any]) -> tuple[str, str]:
    return ("EER; FTA (images without a template)",
            f"{pct(r['eer'])}; {count(r['fta_images'])} of {count(r['images'])} images")


def _transactions_k3(r: dict[str, Any]) -> tuple[str, str]:
    t = r["transactions"]
    k = t["K"]["3"]
    a, b = k["frr_at_far"]["1e-4"], k["frr_at_far"]["2e-5"]
    return (f"Transaction FRR at FAR 1e-4 / 2e-5, 3 enrolled images per user ({t['fusion']} fusion), one photo per "
            f"attempt: {count(k['enrolled_users'])} LFW users, {count(k['genuine_attempts'])} genuine and "
            f"{millions(k['impostor_attempts'])} impostor attempts, {t['draws']} enrolment draws",
            f"{pct(a['frr'], 1)} / {pct(b['frr'], 1)}")


def _transactions_operating_point(r: dict[str, Any]) -> tuple[str, str]:
    op = r["transactions"]["operating_point"]
    h = op["held_out_half"]["transactions"]
    groups = "; ".join(f"{key.split('=', 1)[1]}: FRR {pct(v['frr'], 1)}, FAR {sci(v['far'])}"
                       for key, v in h.items() if key != "all" and v)
    return (f"Default threshold {op['threshold']:.5f}: transaction FAR <= {sci(op['target_far'], 0)} at K = {op['k']} "
            "for every group (and pairwise FMR <= 1e-4), chosen on half of the identities; on the other, "
            "held-out half",
            f"FRR {pct(h['all']['frr'], 1)}, FAR {sci(h['all']['far'])} ({groups})")


def _two_fold_what(r: dict[str, Any]) -> str:
    k = r["transactions"]["K"]["3"]
    return (f"3 enrolled images, one photo per attempt, 2-fold identity-disjoint (score model and threshold "
            f"learned on one half of LFW's identities, FRR on the other, both ways, pooled: "
            f"{count(k['genuine_attempts'])} genuine and {millions(k['impostor_attempts'])} impostor attempts)")


def _platform(name: str, bar: str, far: str, frr_max: float, strict: bool) -> Callable[[dict[str, Any]], tuple[str, str]]:
    """A platform's bar beside fr-pbd's measured transaction FRR at the platform's FAR."""
    def render(r: dict[str, Any]) -> tuple[str, str]:
        t = r["transactions"]
        v = t["K"]["3"]["frr_at_far"][far]
        met = v["frr"] < frr_max if strict else v["frr"] <= frr_max
        return (f"**{name}**: {bar}. fr-pbd's FRR at FAR {far}, {t['score_model']['name']} score model, "
                + _two_fold_what(r),
                f"{pct(v['frr'], 1)} ({'meets' if met else 'misses'} the bar)")
    return render


def _score_model_side(r: dict[str, Any]) -> tuple[str, str]:
    t = r["transactions"]
    f = t["K"]["3"]["frr_at_far"]
    return (f"The same attempts with the {t['score_model']['name'].replace('plda', 'PLDA')} score model: FRR at FAR 1e-4 / 2e-5 / 1e-5 "
            "(FIDO / Android class 1 / Windows Hello); LFW 10-fold accuracy with it",
            f"{pct(f['1e-4']['frr'], 1)} / {pct(f['2e-5']['frr'], 1)} / {pct(f['1e-5']['frr'], 1)}; "
            f"{pct(r['accuracy_10fold_mean'])} ± {pct(r['accuracy_10fold_std'])}")


def _pairs_side_by_side(r: dict[str, Any]) -> tuple[str, str]:
    f, d = r["fr-pbd"], r["dlib"]
    return (f"LFW `{r['pairs_file']}` 10-fold, fr-pbd vs dlib's own pipeline (HOG + 5-point + the same network), "
            "one run; median time per image, decode to descriptor",
            f"{pct(f['accuracy_10fold_mean'])} ± {pct(f['accuracy_10fold_std'])} vs "
            f"{pct(d['accuracy_10fold_mean'])} ± {pct(d['accuracy_10fold_std'])}; "
            f"FTA {f['fta_images']} vs {d['fta_images']} of {count(r['images'])} images; "
            f"{f['median_ms_per_image']:.1f} vs {d['median_ms_per_image']:.1f} ms per image")


def _devtest_side_by_side(r: dict[str, Any]) -> tuple[str, str]:
    f, d = r["fr-pbd"], r["dlib"]
    return (f"LFW `{r['pairs_file']}` ({count(r['pairs'])} pairs), best single threshold: "
            "fr-pbd vs dlib's own pipeline",
            f"{pct(f['accuracy_best_threshold'])} vs {pct(d['accuracy_best_threshold'])} "
            f"(dlib at its customary 0.6: {pct(d['accuracy_at_0.6'])}); "
            f"FTA {f['fta_images']} vs {d['fta_images']} of {count(r['images'])}")


def _bench(r: dict[str, Any]) -> tuple[str, str]:
    e, w = r["end_to_end_ms"], r["workload"]
    return (f"frame → yes/no, {w['frame_size'][0]}×{w['frame_size'][1]} JPEG, p50 / p95 "
            f"(`Verifier.verify`: liveness and the encrypted store included; {w['frames']} frames × "
            f"{w['rounds']} rounds)",
            f"{e['p50']:.1f} / {e['p95']:.1f} ms")


def _frames_side_by_side(r: dict[str, Any]) -> tuple[str, str]:
    t, q = r["timings_ms"], r["ratios"]
    return ("vs dlib's pipeline (HOG + 5-point + ResNet) on the same 640×480 frames, p50 per frame: "
            "fr-pbd's full verification (liveness, encrypted store) / fr-pbd doing only dlib's job",
            f"{q['dlib_over_fr_pbd_verify']:.1f}× / {q['dlib_over_fr_pbd_core']:.1f}× faster "
            f"({t['fr-pbd verify']['p50']:.1f} / {t['fr-pbd core']['p50']:.1f} vs {t['dlib']['p50']:.1f} ms)")


@dataclass(frozen=True)
class Row:
    file: str
    render: Callable[[dict[str, Any]], tuple[str, str]]


ROWS = (
    Row("lfw-eval-fp32.json", _eval_accuracy),
    Row("lfw-eval-fp32.json", _eval_fnmr),
    Row("lfw-eval-fp32.json", _eval_eer_fta),
    Row("lfw-transactions-fp32.json", _transactions_k3),
    Row("lfw-transactions-fp32.json", _transactions_operating_point),
    Row("lfw-transactions-2fold-cosine-fp32.json",
        _platform("Android CDD 7.3.10 class 1 (strong)", "FAR below 2e-5, FRR below 10 % recommended", "2e-5", 0.10,
                  True)),
    Row("lfw-transactions-2fold-cosine-fp32.json",
        _platform("Windows Hello", "FAR below 1e-5, FRR below 5 % (below 10 % with anti-spoofing)", "1e-5", 0.05,
                  True)),
    Row("lfw-transactions-2fold-cosine-fp32.json",
        _platform("FIDO biometric certification", "FRR at most 3 % at FAR 1e-4", "1e-4", 0.03, False)),
    Row("lfw-transactions-2fold-plda-fp32.json", _score_model_side),
    Row("lfw-pairs-side-by-side-fp32.json", _pairs_side_by_side),
    Row("lfw-devtest-side-by-side-fp32.json", _devtest_side_by_side),
    Row("bench-fp32.json", _bench),
    Row("frames-side-by-side-fp32.json", _frames_side_by_side),
)


# ----------------------------------------------------------------------------------- rendering
def load_record(results: Path, name: str) -> dict[str, Any]:
    path = results / name
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"readme_figures: cannot read {path}: {exc}") from None
    missing = [k for k in RECORD_KEYS if k not in rec] + [f"config.{k}" for k in CONFIG_KEYS
                                                          if k not in rec.get("config", {})]
    if missing:
        raise SystemExit(f"readme_figures: {path} lacks {', '.join(missing)}")
    return rec


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# bench_side_by_side's runners are fixed in its code: liveness only inside Verifier.verify
# (results written before it stated liveness_by_runner itself).
SIDE_BY_SIDE_LIVENESS = {"dlib": False, "fr-pbd core": False, "fr-pbd verify": True}


def liveness_cell(rec: dict[str, Any]) -> str:
    """on / off; per runner for a side-by-side result."""
    own = rec["result"].get("config") or {}
    per = own.get("liveness_by_runner")
    if per is None and rec["result"].get("benchmark") == "bench_side_by_side":
        per = SIDE_BY_SIDE_LIVENESS
    if isinstance(per, dict):
        return "; ".join(f"{name}: {'on' if on else 'off'}" for name, on in per.items())
    return "on" if rec["config"]["liveness"] else "off"


def config_cells(rec: dict[str, Any]) -> list[str]:
    c, g, load = rec["config"], rec["git"], rec["load"]
    flags = ", ".join(c["cpu_flags"]) or "none of those checked"
    dirty = [Path(d["path"] if isinstance(d, dict) else d).name for d in g.get("dirty", [])]
    commit = g["commit"][:10] + (f" + uncommitted {', '.join(dirty)}" if dirty else "")
    return [
        f"`{cell(rec['command'])}`",
        c["precision"],
        liveness_cell(rec),
        str(c["threads"]),
        cell(c["blas"]),
        cell(f"{c['cpu_model']} ({flags})"),
        f"{rec['date_utc'][:10]}, {commit}",
        f"{load['loadavg_before'][0]:.2f} → {load['loadavg_after'][0]:.2f}",
    ]


def render(results: Path) -> str:
    """The markdown between the markers (the markers excluded)."""
    records: dict[str, dict[str, Any]] = {}
    lines = ["<!-- generated by tools/readme_figures.py from docs/results/*.json; "
             "edit those, not this table -->", "",
             "| what | figure | result file |", "|---|---|---|"]
    for row in ROWS:
        rec = records.setdefault(row.file, load_record(results, row.file))
        what, figure = row.render(rec["result"])
        link = f"[{row.file}]({RESULTS.as_posix()}/{row.file})"
        lines.append(f"| {cell(what)} | {cell(figure)} | {link} |")
    lines += ["", "Each result file holds the command's output and the configuration it ran in:", "",
              "| result file | command (from the repository root) | embedder | liveness | threads | BLAS "
              "| CPU (flags) | date, commit | load avg. 1 min, before → after |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, rec in records.items():
        lines.append(f"| {name} | " + " | ".join(config_cells(rec)) + " |")
    return "\n".join(lines) + "\n"


def splice(readme: str, table: str) -> str:
    try:
        head, rest = readme.split(BEGIN + "\n", 1)
        _, tail = rest.split(END, 1)
    except ValueError:
        raise SystemExit(f"readme_figures: README.md needs the lines {BEGIN} and {END}") from None
    return head + BEGIN + "\n" + table + END + tail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="do not write; exit 1 with a diff if README.md differs")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--results", type=Path, default=ROOT / RESULTS)
    args = ap.parse_args(argv)
    old = args.readme.read_text(encoding="utf-8")
    new = splice(old, render(args.results))
    if args.check:
        if new == old:
            return 0
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                                   f"{args.readme} (as committed)",
                                                   f"{args.readme} (from {args.results})"))
        print(f"\nreadme_figures: {args.readme} differs from its result files; run python tools/readme_figures.py",
              file=sys.stderr)
        return 1
    if new != old:
        args.readme.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
