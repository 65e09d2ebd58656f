"""Honest products with real products' habits: the audit judges the habit, not the product's shape.

Each habit (``shapes.py``) once gave a wrong verdict: a 0700 socket failed C3.socket, a no
that waits for a timeout failed C5.timing (yes vs no), a reset after a complete answer failed
C5.answer, a stale socket file made the audit connect too early (every daemon check
INCONCLUSIVE), a declared directory the product makes later failed C3.file-modes. Here the
same honest product passes every check that can be made from outside, with each habit on; the
control beside it shows that the checks still fail what they must (a socket open to others,
a late directory open to others).
"""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

import pytest

from fr_pbd.audit import FAIL, PASS, run_target


def need_strace() -> None:
    if shutil.which("strace") is None:
        from tests.conftest import missing

        missing("strace is not installed (apt-get install strace)")

HERE = Path(__file__).resolve().parent
#: every check a black box can pass (the others need fr-pbd's store: INCONCLUSIVE by design)
OUTSIDE = ("C3.file-modes", "C3.plaintext-templates", "C3.face-images", "C3.socket", "C3.network", "C3.logs", "C4.ciphertext",
           "C5.answer", "C5.timing")


def write_target(root: Path, faces: Path, spoof: Path, options: list[str], dirs=("data",)) -> Path:
    (root / "frames").mkdir(exist_ok=True)
    (root / "run").mkdir(mode=0o700, exist_ok=True)
    shutil.copyfile(faces / "biden2.jpg", root / "frames" / "current.jpg")  # malformed requests meet a no
    cmd = ["{python}", str(HERE / "shapes.py"), "--socket", "run/s.sock", "--frames", "frames", "--enroll",
           str(faces / "obama3.jpg"), "--data", "data", *options]
    t = root / "target.toml"
    t.write_text(f'''name = "honest product with habits"
root = "{root}"
[socket]
path = "run/s.sock"
request = "VERIFY\\n"
[answer]
yes = "YES\\n"
no = "NO\\n"
[probe]
frames = "frames"
genuine = "{faces / 'obama3.jpg'}"
impostor = "{faces / 'biden2.jpg'}"
attack = "{spoof / 'spoof_print_F1.jpg'}"
[data]
dirs = {list(dirs)!r}
[process]
command = {cmd!r}
ready_timeout = 30
'''.replace("'", '"'))
    return t


def pad_target(root: Path, spoof: Path, faces: Path, attacks: str, extra: list[str]) -> Path:
    (root / "frames").mkdir(parents=True, exist_ok=True)
    (root / "run").mkdir(mode=0o700, exist_ok=True)
    shutil.copyfile(faces / "biden2.jpg", root / "frames" / "current.jpg")
    """A shapes.py product enrolled with the spoof samples' person (live_T1), declaring ``attacks`` (a TOML list;
    tests/adversarial/test_pad.py)."""
    cmd = ["{python}", str(HERE / "shapes.py"), "--socket", "run/s.sock", "--frames", "frames", "--enroll",
           str(spoof / "live_T1.jpg"), "--data", "data", *extra]
    t = root / "target.toml"
    t.write_text(f'''name = "a matcher without presentation-attack detection"
root = "{root}"
[socket]
path = "run/s.sock"
[answer]
yes = "YES\\n"
no = "NO\\n"
[probe]
frames = "frames"
genuine = "{spoof / 'live_T1.jpg'}"
impostor = "{faces / 'biden2.jpg'}"
attack = "{spoof / 'spoof_replay_F2.jpg'}"
attacks = {attacks}
[data]
dirs = ["data"]
[process]
command = {cmd!r}
ready_timeout = 60
'''.replace("'", '"'))
    return t


def audit(target: Path):
    checks, info = run_target(target, verifications=1, rounds=5)
    return {c.id: c for c in checks}


def explain(c) -> str:
    return f"{c.status}: {c.summary} | " + " | ".join(c.details[:8])


HABITS = {
    # habit: (options, the check it once failed, words its evidence now holds)
    "socket-0700": (["--socket-mode", "0700"], "C3.socket", "mode 0700"),
    "no-after-timeout": (["--slow-no", "0.25"], "C5.timing", "both 'no'"),
    "reset-after-answer": (["--read-exact"], "C5.answer", "connection was reset"),
    "stale-socket-file": (["--bind-after", "1.0"], "C3.socket", "a stale socket file"),
    "late-directory": (["--late-dir", "spool"], "C3.file-modes", "spool: did not exist when the audit began"),
}


@pytest.mark.parametrize("habit", sorted(HABITS))
def test_an_honest_habit_is_not_a_finding(habit, tmp_path, faces_dir, spoof_dir):
    need_strace()
    options, cid, words = HABITS[habit]
    dirs = ("data", "spool", "snapshots") if habit == "late-directory" else ("data",)
    if habit == "stale-socket-file":  # left by an earlier run: a socket file nobody listens on
        (tmp_path / "run").mkdir(mode=0o700)
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(tmp_path / "run" / "s.sock"))
        s.close()
    by_id = audit(write_target(tmp_path, faces_dir, spoof_dir, options, dirs))
    c = by_id[cid]
    assert c.status == PASS and words in c.summary + " ".join(c.details), explain(c)
    for other in OUTSIDE:
        assert by_id[other].status == PASS, explain(by_id[other])
    if habit == "late-directory":
        assert "snapshots: declared, but did not exist at any time of the audit" in " ".join(c.details)
    if habit == "no-after-timeout":
        compared = by_id["C5.timing"].values["compared"]
        assert compared and not any("genuine" in p for p in compared), compared


def test_the_controls_still_fail(tmp_path, faces_dir, spoof_dir):
    """The same product with its socket open to others, and a late directory open to others: FAIL, named."""
    need_strace()
    by_id = audit(write_target(tmp_path, faces_dir, spoof_dir, ["--socket-mode", "0702", "--late-dir", "spool",
                                                                "--late-dir-mode", "0755"], ("data", "spool")))
    assert by_id["C3.socket"].status == FAIL and "gives other users access" in by_id["C3.socket"].summary
    c = by_id["C3.file-modes"]
    assert c.status == FAIL and "spool mode 0755" in c.summary, explain(c)


def test_a_stale_socket_is_never_connected_to(tmp_path):
    """Nobody listens: the audit reports the file, does not connect, and removes nothing."""
    from fr_pbd.audit.probe import probe

    path = tmp_path / "s.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    res = probe(path, verifications=1)
    assert res.error and "stale socket file" in res.error and res.answers == [] and path.exists()
    assert sys.platform != "linux" or res.listeners == []
