"""The [invoke] shape: a comparator run once per verification, traced from its first instruction."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fr_pbd.audit.invoke import merged_events, parse_invoke, run_once
from fr_pbd.errors import AuditError

COMPARATOR = Path(__file__).resolve().parent / "adversarial" / "comparator.py"


def _spec(root: Path, faces: Path, **extra):
    (root / "frames").mkdir(exist_ok=True)
    table = {"command": ["{python}", "{target_dir}/comparator.py", "--frames", "frames", "--enroll",
                         str(faces / "obama3.jpg"), "--data", "data"], "timeout": 20, "yes_exit": [0], **extra}
    return parse_invoke(table, "target.toml", root=root, target_dir=COMPARATOR.parent)


def test_each_run_is_answered_by_its_exit_status_and_traced_from_its_start(tmp_path, faces_dir):
    if shutil.which("strace") is None:
        from tests.conftest import missing

        missing("strace is not installed (apt-get install strace)")
    spec = _spec(tmp_path, faces_dir, yes_stdout=r"certainty", no_stdout=r"certainty")
    runs = []
    for cls, photo in (("genuine", "obama3.jpg"), ("impostor", "biden2.jpg")):
        shutil.copyfile(faces_dir / photo, tmp_path / "frames" / "current.jpg")
        runs.append(run_once(spec, cls))
    assert [r.outcome for r in runs] == ["yes", "no"] and [r.status for r in runs] == [0, 1]
    first = runs[0].events[0]
    assert first.call == "execve" and "comparator.py" in first.text  # from its first instruction
    events, why = merged_events(runs)
    assert why is None
    # the audit's own start of each run is left out; the product's failed GUI helper is kept, as a failure
    assert not any(e.call == "execve" and "comparator.py" in e.text for e in events)
    helper = [e for e in events if e.call == "execve" and "gui-helper" in e.text]
    assert len(helper) == 2 and all(e.failed for e in helper)
    assert any("obama.dat" in e.text for e in events if e.call in ("open", "openat"))


def test_a_run_past_its_timeout_is_no(tmp_path):
    spec = parse_invoke({"command": ["sleep", "5"], "timeout": 0.5}, "t.toml", root=tmp_path, target_dir=tmp_path)
    run = run_once(spec, "slow", use_strace=False)
    assert run.timed_out and run.outcome == "no" and run.seconds < 4


def test_an_answer_the_output_contradicts_is_not_declared(tmp_path):
    spec = parse_invoke({"command": ["sh", "-c", "echo maybe; exit 0"], "yes_stdout": "^MATCH$"}, "t.toml",
                        root=tmp_path, target_dir=tmp_path)
    assert run_once(spec, "odd", use_strace=False).outcome is None


@pytest.mark.parametrize("table, words", [
    ({"command": []}, "non-empty list"),
    ({"command": ["x"], "yes_exit": [256]}, "yes_exit"),
    ({"command": ["x"], "timeout": 0}, "timeout"),
    ({"command": ["x"], "yes_stdout": "("}, "not a regular expression"),
    ({"command": ["x"], "shell": True}, "unknown key"),
])
def test_a_bad_invoke_table_is_a_one_line_error(tmp_path, table, words):
    with pytest.raises(AuditError, match=words):
        parse_invoke(table, "t.toml", root=tmp_path, target_dir=tmp_path)
