"""README command 1's main job, tools/demo.sh: run as a user runs it, it must end with its
six-line summary and exit 0 (it is also a smoke test of enrol, verify, PAD and audit)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import missing

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "tools" / "demo.sh"
IMAGES = ("faces/obama.jpg", "faces/obama2.jpg", "faces/obama4.jpg", "faces/obama3.jpg", "faces/biden2.jpg",
          "spoof/live_T1.jpg", "spoof/spoof_replay_F2.jpg")


def fr_pbd_executable() -> str:
    """The fr-pbd beside the Python that runs the tests (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "fr-pbd"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("fr-pbd")
    if not found:
        missing("no fr-pbd executable beside the test interpreter or on PATH (pip install -e .)")
    return found


@pytest.mark.slow
def test_demo_runs_and_summarises(data_dir, models_env, extractor):
    from fr_pbd.pipeline import build_pipeline

    try:
        build_pipeline()
    except Exception as exc:  # noqa: BLE001 - missing PAD models: fail in CI, skip elsewhere
        missing(f"MiniFASNet models: {exc}")
    for name in IMAGES:
        if not (data_dir / name).is_file():
            missing(f"{data_dir / name} is missing")
    env = dict(os.environ, FR_PBD=fr_pbd_executable(),
               FR_PBD_MODELS=str(models_env.resolve()), FR_PBD_DATA=str(data_dir.resolve()))
    env.pop("FR_PBD_HOME", None)

    proc = subprocess.run(["bash", str(DEMO)], capture_output=True, text=True, env=env,
                          timeout=300, check=False)

    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("enrolled: "))
    summary = lines[start:]  # the last six lines, as README says
    assert len(summary) == 6, summary
    assert summary[0] == "enrolled: 3 templates of obama + 1 of the sample person (consent recorded)"
    assert summary[1:4] == ["same person: yes", "another person: no",
                            "screen replay: no (presentation attack)"]
    assert summary[4].startswith("audit: PASS ") or summary[4].startswith("audit: INCOMPLETE "), summary[4]
    assert summary[5] == "(test data erased)" and "test data" in proc.stdout
    assert "demo FAILED" not in proc.stderr
    assert "Traceback" not in proc.stderr
