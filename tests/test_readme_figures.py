"""README.md's figures table is what tools/readme_figures.py makes of docs/results/*.json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "readme_figures.py"
RESULTS = ROOT / "docs" / "results"
sys.path.insert(0, str(ROOT))

from benchmarks.record_result import biometric_keys  # noqa: E402
from tools.readme_figures import BEGIN, CONFIG_KEYS, END, ROWS  # noqa: E402


def check(readme: Path, results: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), "--check", "--readme", str(readme), "--results", str(results)],
                          capture_output=True, text=True, timeout=60)


def test_readme_table_is_generated_from_the_result_files():
    p = check(ROOT / "README.md", RESULTS)
    assert p.returncode == 0, p.stdout + p.stderr


def test_every_row_names_a_committed_result_file_with_its_configuration():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split(BEGIN, 1)[1].split(END, 1)[0]
    for row in ROWS:
        rec = json.loads((RESULTS / row.file).read_text(encoding="utf-8"))
        assert f"docs/results/{row.file}" in table
        assert set(CONFIG_KEYS) <= set(rec["config"]), row.file
        assert rec["config"]["precision"] in ("fp32", "int8") and isinstance(rec["config"]["liveness"], bool)
        assert rec["command"] and len(rec["git"]["commit"]) == 40 and rec["date_utc"]
        assert len(rec["load"]["loadavg_before"]) == 3 and len(rec["load"]["loadavg_after"]) == 3


def test_result_files_hold_no_biometric_data():
    for path in sorted(RESULTS.glob("*.json")):
        rec = json.loads(path.read_text(encoding="utf-8"))
        assert biometric_keys(rec) == [], path.name
        assert path.stat().st_size < 256 * 1024, path.name


def test_a_changed_figure_fails_the_check(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    rec_path = results / "bench-fp32.json"
    rec = json.loads(rec_path.read_text(encoding="utf-8"))
    rec["result"]["end_to_end_ms"]["p50"] += 1.0
    rec_path.write_text(json.dumps(rec), encoding="utf-8")
    p = check(readme, results)
    assert p.returncode == 1 and "bench-fp32.json" in p.stdout and "differs" in p.stderr
    # writing mode brings README back in line, touching only the generated section
    before = readme.read_text(encoding="utf-8")
    subprocess.run([sys.executable, str(TOOL), "--readme", str(readme), "--results", str(results)], check=True,
                   timeout=60)
    after = readme.read_text(encoding="utf-8")
    assert check(readme, results).returncode == 0
    assert before.split(BEGIN)[0] == after.split(BEGIN)[0] and before.split(END)[1] == after.split(END)[1]
