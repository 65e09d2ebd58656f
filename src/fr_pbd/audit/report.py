"""audit.json and a self-contained audit.html (inline CSS, no script, no external resource)."""

from __future__ import annotations

import html
import json
from pathlib import Path
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
            items.append(f'<div class="check"><div class="row">{_badge(c.status)}<div>'
                         f'<span class="title">{e(c.title)}</span><span class="id">{e(c.id)}</span>'
                         f'<p class="ev">{e(c.summary)}</p>{needs}{det}{own}</div></div></div>')
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
