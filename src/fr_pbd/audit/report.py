"""audit.json and a self-contained audit.html (inline CSS, no script, no external resource)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from statistics import NormalDist
from typing import Any

from fr_pbd.audit.checks import FAIL, INCONCLUSIVE, PASS, RESULT_FAIL, RESULT_PASS, Check

CONDITIONS = [
    ("C1", "Private use", "Access to the user's own device only: the household-device-access profile, "
     "no feature that identifies, watches or reports."),
    ("C2", "Voluntary, with an alternative", "Explicit, recorded opt-in for every enrolled user; a PIN or "
     "passphrase that always works."),
    ("C3", "No third-party access", "Nothing leaves the device: private files, no plaintext templates, no "
     "network use, no scores in logs."),
    ("C4", "Encrypted on the device", "State-of-the-art authenticated encryption, keys and KDFs at or above "
     "the minimums."),
    ("C5", "Only yes or no", "Across the process boundary, the daemon passes on one byte, Y or N, and "
     "nothing else."),
    ("SEC", "Verification security", "Attempts are limited: after five failed attempts in a row the genuine face "
     "is refused for a while (a lockout)."),
    ("DPIA", "DPIA risks", "Model provenance and consent of training subjects; accuracy and bias measured "
     "by the book."),
]

CSS = """
body{font:15px/1.5 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1d2330;
background:#f4f6f9;margin:0}
main{max-width:1000px;margin:0 auto;padding:28px 24px 60px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:0}
.sub{color:#5b6577;margin:0 0 18px}
.verdict{border-radius:10px;padding:16px 20px;margin:0 0 22px;color:#fff;font-size:18px;font-weight:600}
.verdict.pass{background:#1f7a4d}.verdict.fail{background:#b3261e}.verdict.incomplete{background:#8a5a00}
.verdict small{display:block;font-weight:400;font-size:14px;opacity:.92}
table{border-collapse:collapse;width:100%}
.summary{background:#fff;border-radius:10px;box-shadow:0 1px 3px #0001;margin-bottom:26px}
.summary th,.summary td{padding:9px 14px;text-align:left;border-bottom:1px solid #e7eaf0}
.summary th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#5b6577}
.summary a{color:#1d2330;text-decoration:none;font-weight:600}
section{background:#fff;border-radius:10px;box-shadow:0 1px 3px #0001;margin:0 0 22px;padding:18px 22px}
section>header{display:flex;align-items:baseline;gap:12px;border-bottom:1px solid #e7eaf0;padding-bottom:10px;
margin-bottom:6px}
section>header .tag{font-weight:700;color:#fff;background:#35405a;border-radius:6px;padding:1px 8px}
section>p.what{color:#5b6577;margin:6px 0 10px}
.check{border-top:1px solid #eef0f4;padding:12px 0}
.check:first-of-type{border-top:0}
.row{display:flex;gap:12px;align-items:flex-start}
.badge{flex:0 0 auto;font-size:12px;font-weight:700;border-radius:5px;padding:2px 8px;min-width:46px;
text-align:center;letter-spacing:.03em}
.PASS{background:#dff3e8;color:#14653e;border:1px solid #9fd8b9}
.FAIL{background:#fde4e1;color:#9c1c13;border:1px solid #f2a79f}
.INCONCLUSIVE{background:#fff1d6;color:#7a4b00;border:1px solid #efc877}
.needs{margin:4px 0 0;color:#7a4b00}.self{margin:6px 0 0;font-size:13px;color:#5b6577}
.title{font-weight:600}.id{color:#7a8499;font:12px ui-monospace,Menlo,Consolas,monospace;margin-left:6px}
.ev{margin:4px 0 0;color:#2c3445}
details{margin:6px 0 0 0}summary{cursor:pointer;color:#35405a;font-size:13px}
ul.d{margin:6px 0 0;padding-left:20px;font-size:13.5px;color:#3a4355}ul.d li{margin:2px 0;word-break:break-word}
.meta{font-size:13px;color:#5b6577}.meta td{padding:2px 12px 2px 0;vertical-align:top}
footer{color:#7a8499;font-size:12.5px;margin-top:24px}
"""


def write_json(report: dict[str, Any], out: Path) -> Path:
    path = out / "audit.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    return path


def _badge(status: str) -> str:
    return f'<span class="badge {status}">{status}</span>'


#: Exit codes of `fr-pbd audit` by result (fr_pbd.cli._common: 0 ok, 1 no, 3 incomplete).
EXIT_CODES = {RESULT_PASS: 0, RESULT_FAIL: 1}
INCOMPLETE_EXIT = 3


def verdict_words(result: str, checks: list[Check]) -> str:
    """The verdict in words, for the HTML banner and the terminal."""
    failed = [c for c in checks if c.status == FAIL]
    missing = [c for c in checks if c.status == INCONCLUSIVE]
    if result == RESULT_PASS:
        return "Every check ran and passed: the installation meets the five conditions as far as this audit can show."
    if result == RESULT_FAIL:
        s = (f"{len(failed)} check(s) fail: the installation does not meet "
             f"{', '.join(sorted({c.condition for c in failed}))}.")
        if missing:
            s += f" {len(missing)} more could not gather their evidence."
        return s
    return (f"No check failed, but {len(missing)} check(s) could not gather their evidence, so this audit "
            "cannot say that the installation meets the conditions. This is not a pass. Missing: "
            + "; ".join(f"{c.id}: {c.needs}" for c in missing) + ".")


_GROUP_COLOURS = ("#c2185b", "#1f5aa6", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def bias_figure(values: dict[str, Any]) -> str:
    """DPIA.bias as a picture: an inline SVG DET plot, one curve per labelled group, each group's
    point at the installation's threshold, the claimed FMR as a line, and a table under it.

    Drawn here from the evaluation report's aggregates (no image file, no script, no external
    resource: the report stays one self-contained file; the audit does not import fr_pbd.eval).
    """
    det = values.get("det_per_group") or {}
    groups = values.get("groups") or {}
    target = values.get("target_fmr")
    if not det or not groups:
        return ""
    e = html.escape
    nd = NormalDist()
    x_lo, x_hi, y_lo, y_hi = 1e-7, 0.5, 2e-3, 0.95
    w, h, ml, mr, mt, mb = 560, 380, 64, 14, 14, 52

    def px(p: float) -> float:
        p = min(max(p, x_lo), x_hi)
        return ml + (nd.inv_cdf(p) - nd.inv_cdf(x_lo)) / (nd.inv_cdf(x_hi) - nd.inv_cdf(x_lo)) * (w - ml - mr)

    def py(p: float) -> float:
        p = min(max(p, y_lo), y_hi)
        return h - mb - (nd.inv_cdf(p) - nd.inv_cdf(y_lo)) / (nd.inv_cdf(y_hi) - nd.inv_cdf(y_lo)) * (h - mt - mb)

    parts = [f'<rect x="{ml}" y="{mt}" width="{w - ml - mr}" height="{h - mt - mb}" fill="#fff" stroke="#9aa3b2"/>']
    for t in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.5):
        x = px(t)
        parts.append(f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{h - mb}" stroke="#e7eaf0"/>'
                     f'<text x="{x:.1f}" y="{h - mb + 14}" font-size="10" text-anchor="middle">{t:g}</text>')
    for t in (0.005, 0.01, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9):
        y = py(t)
        parts.append(f'<line x1="{ml}" y1="{y:.1f}" x2="{w - mr}" y2="{y:.1f}" stroke="#e7eaf0"/>'
                     f'<text x="{ml - 5}" y="{y + 3:.1f}" font-size="10" text-anchor="end">{100 * t:g}%</text>')
    parts.append(f'<text x="{(ml + w - mr) / 2}" y="{h - 12}" font-size="11" text-anchor="middle">'
                 'false match rate, same-group impostors (normal-deviate scale)</text>'
                 f'<text x="14" y="{(mt + h - mb) / 2}" font-size="11" text-anchor="middle" '
                 f'transform="rotate(-90 14 {(mt + h - mb) / 2})">false non-match rate</text>')
    if isinstance(target, (int, float)) and x_lo < target < x_hi:
        x = px(target)
        parts.append(f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{h - mb}" stroke="#5b6577" '
                     f'stroke-dasharray="5 4"/><text x="{x + 4:.1f}" y="{mt + 12}" font-size="10" '
                     f'fill="#5b6577">claimed FMR {target:g}</text>')
    rows = []
    for k, (name, d) in enumerate(det.items()):
        colour = _GROUP_COLOURS[k % len(_GROUP_COLOURS)]
        fmr, fnmr = d.get("fmr") or [], d.get("fnmr") or []
        pts = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(fmr, fnmr)
                       if isinstance(a, (int, float)) and isinstance(b, (int, float)))
        if pts:
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        pt = d.get("point") or [None, None]
        if all(isinstance(v, (int, float)) for v in pt):
            parts.append(f'<circle cx="{px(pt[0]):.1f}" cy="{py(pt[1]):.1f}" r="5" fill="{colour}" '
                         f'stroke="#fff" stroke-width="1.5"/>')
        parts.append(f'<text x="{w - mr - 8}" y="{mt + 16 + 14 * k}" font-size="11" text-anchor="end" '
                     f'fill="{colour}">{e(name)}</text>')
        g = groups.get(name) or {}
        fm, fn = g.get("fmr"), g.get("fnmr")
        over = isinstance(fm, (int, float)) and isinstance(target, (int, float)) and fm > target
        rows.append(f'<tr><td style="color:{colour};font-weight:600">{e(name)}</td>'
                    f'<td>{"n/a" if fm is None else f"{fm:.3g}"}</td><td>{"n/a" if fn is None else f"{100 * fn:.1f} %"}'
                    f'</td><td>{g.get("impostor_comparisons", 0):,}</td><td>{"above the claim" if over else "within"}'
                    f'</td></tr>')
    svg = (f'<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
           f'aria-label="DET curve per group" font-family="sans-serif">{"".join(parts)}</svg>')
    return (f'<div class="fig">{svg}<table class="meta"><tr><td><b>group</b></td><td><b>FMR</b></td>'
            f'<td><b>FNMR</b></td><td><b>impostor comparisons</b></td><td><b>claim</b></td></tr>{"".join(rows)}'
            f'</table><p class="self">Dots: each group at the installation\'s threshold {values.get("threshold")} '
            f'(read at the report\'s curve point at or below it, which over-states FMR). Curves: the '
            f'evaluation report\'s per-group DET.</p></div>')


def render_html(report: dict[str, Any], checks: list[Check]) -> str:
    e = html.escape
    result = report["result"]
    words = verdict_words(result, checks)
    counts = {s: sum(1 for c in checks if c.status == s) for s in (PASS, FAIL, INCONCLUSIVE)}
    exit_code = EXIT_CODES.get(result, INCOMPLETE_EXIT)
    meta = report["installation"]
    rows = []
    for cond, name, _ in CONDITIONS:
        cs = [c for c in checks if c.condition == cond]
        st = (FAIL if any(c.status == FAIL for c in cs) else
              INCONCLUSIVE if any(c.status == INCONCLUSIVE for c in cs) or not cs else PASS)
        rows.append(f'<tr><td>{_badge(st)}</td><td><a href="#{cond}">{e(cond)} · {e(name)}</a></td>'
                    f'<td>{sum(1 for c in cs if c.status == PASS)} pass, {sum(1 for c in cs if c.status == FAIL)} '
                    f'fail, {sum(1 for c in cs if c.status == INCONCLUSIVE)} inconclusive</td></tr>')
    sections = []
    for cond, name, what in CONDITIONS:
        items = []
        for c in (c for c in checks if c.condition == cond):
            det = ""
            if c.details:
                lis = "".join(f"<li>{e(d)}</li>" for d in c.details)
                det = f"<details open><summary>evidence ({len(c.details)})</summary><ul class=d>{lis}</ul></details>"
            needs = f'<p class="needs">Missing evidence; supply it with: {e(c.needs)}</p>' if c.needs else ""
            own = ""
            if c.self_report:
                lis = "".join(f"<li>{e(d)}</li>" for d in c.self_report)
                own = (f'<div class="self">Self-report of the audited product (shown, not used for the verdict):'
                       f'<ul class=d>{lis}</ul></div>')
            fig = bias_figure(c.values) if c.id == "DPIA.bias" else ""
            items.append(f'<div class="check"><div class="row">{_badge(c.status)}<div>'
                         f'<span class="title">{e(c.title)}</span><span class="id">{e(c.id)}</span>'
                         f'<p class="ev">{e(c.summary)}</p>{needs}{fig}{det}{own}</div></div></div>')
        sections.append(f'<section id="{cond}"><header><span class="tag">{e(cond)}</span><h2>{e(name)}</h2></header>'
                        f'<p class="what">{e(what)}</p>{"".join(items)}</section>')
    meta_rows = "".join(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in meta.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>fr-pbd audit: {e(result)}</title><style>{CSS}</style></head>
<body><main>
<h1>fr-pbd conformance audit</h1>
<p class="sub">Household exemption (GDPR art. 2(2)(c); Dutch DPA's five conditions) · {e(report['created_utc'])}</p>
<div class="verdict {e(result.lower())}">{e(result)}: {e(words)}
<small>{counts[PASS]} passed · {counts[FAIL]} failed · {counts[INCONCLUSIVE]} inconclusive ·
exit code {exit_code}</small></div>
<table class="summary"><tr><th>status</th><th>condition</th><th>checks</th></tr>{''.join(rows)}</table>
{''.join(sections)}
<section><header><span class="tag">i</span><h2>Installation and method</h2></header>
<table class="meta">{meta_rows}</table></section>
<footer>Generated by {e(report['tool'])}. Evidence never contains a template, a score or an image: where the audit
finds one, it reports where and what kind, not the values. Machine-readable: audit.json (same checks).</footer>
</main></body></html>
"""


def write_html(report: dict[str, Any], checks: list[Check], out: Path) -> Path:
    path = out / "audit.html"
    path.write_text(render_html(report, checks), encoding="utf-8")
    return path
