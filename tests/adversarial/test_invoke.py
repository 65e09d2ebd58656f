"""The [invoke] shape end to end: a per-login comparator (the commonest real face login) audited
through the command line, the way PAM runs it: once per verification, its exit status the answer.

Before the [invoke] shape, this product could not be audited at all (``[socket]`` was required:
"unknown key(s) invoke", exit 2, no report); declared as a daemon it ended with "the target's
command exited with status 0 before ...sock appeared". Now every check a black box can pass is
judged, each with evidence, and the controls beside it show that the same rules still fail a
helper that talks to the network and an exit status that carries the score.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from fr_pbd.audit import FAIL, PASS
from tests.adversarial.test_corpus import Collector, audit_target
from tests.test_audit import need_strace

HERE = Path(__file__).resolve().parent
TARGET = HERE / "targets" / "comparator.toml"


def _root(tmp_path: Path, data_dir: Path) -> Path:
    root = tmp_path / "product"
    (root / "frames").mkdir(parents=True)
    shutil.copyfile(data_dir / "faces" / "obama3.jpg", root / "frames" / "current.jpg")
    return root


def _variant(tmp_path: Path, *extra: str) -> str:
    """The shipped target with extra comparator options, written beside the shipped one's directory."""
    text = TARGET.read_text().replace('"--data", "data"]', '"--data", "data", ' + ", ".join(f'"{a}"' for a in extra)
                                      + "]")
    t = HERE / "targets" / f".comparator-{tmp_path.name}.toml"  # {target_dir} stays the shipped one's
    t.write_text(text)
    return t.name


def _evidence(c: dict) -> str:
    return c["evidence"]["summary"] + " | " + " | ".join(c["evidence"]["details"])


def test_the_per_login_comparator_is_audited_end_to_end_with_evidence(tmp_path, data_dir):
    need_strace()
    p, doc = audit_target("comparator.toml", _root(tmp_path, data_dir), tmp_path / "out", data_dir)
    assert p.returncode == 1, p.stdout + p.stderr
    by_id = {c["id"]: c for c in doc["checks"]}
    st = {k: c["status"] for k, c in by_id.items()}
    ev = {k: _evidence(c) for k, c in by_id.items()}
    assert doc["result"] == "FAIL" and doc["installation"]["shape"] == "invoke"
    assert st["C3.plaintext-templates"] == FAIL and "data/obama.dat" in ev["C3.plaintext-templates"]
    assert st["C3.file-modes"] == FAIL and "readable to other users" in ev["C3.file-modes"]
    assert st["C4.ciphertext"] == FAIL and "obama.dat" in ev["C4.ciphertext"]
    assert st["C3.logs"] == FAIL and "stdout.log: line 1: score-like text" in ev["C3.logs"]  # the certainty line
    assert st["SEC.lockout"] == FAIL and "no lockout" in ev["SEC.lockout"]
    # what a real comparator does and is not a leak: a GUI helper that is not installed started nothing
    assert st["C3.network"] == PASS, ev["C3.network"]
    assert "tried to start a program, which failed (nothing ran)" in ev["C3.network"] and "gui-helper" in ev["C3.network"]
    assert st["C3.socket"] == PASS and "no socket" in ev["C3.socket"]
    assert st["C5.answer"] == PASS and by_id["C5.answer"]["evidence"]["values"]["distinct_answers"] == 2
    assert st["C5.timing"] == PASS, ev["C5.timing"]


def network_helper(where: Path, port: int) -> Path:
    """A GUI helper that sends a certainty to a loopback TCP listener (the test's Collector)."""
    helper = where / "gui-helper"
    helper.write_text(f"#!{sys.executable}\nimport socket\n"
                      f"socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'certainty 0.31')\n")
    helper.chmod(0o755)
    return helper


def test_a_helper_that_talks_to_the_network_fails_c3_network(tmp_path, data_dir):
    """Control: the helper is started and traced with the product; what it does is judged."""
    need_strace()
    collector = Collector(tmp_path / "collector.sock")
    name = _variant(tmp_path, "--gui-helper", str(network_helper(tmp_path, collector.port)))
    try:
        p, doc = audit_target(name, _root(tmp_path, data_dir), tmp_path / "out", data_dir)
    finally:
        (HERE / "targets" / name).unlink(missing_ok=True)
        collector.close()
    by_id = {c["id"]: c for c in doc["checks"]}
    assert collector.received, "the helper never reached the listener: the control shows nothing"
    assert by_id["C3.network"]["status"] == FAIL, _evidence(by_id["C3.network"])
    assert "AF_INET" in _evidence(by_id["C3.network"])


def test_an_exit_status_that_carries_the_score_fails_c5_answer(tmp_path, data_dir):
    need_strace()
    name = _variant(tmp_path, "--exit-score")
    try:
        p, doc = audit_target(name, _root(tmp_path, data_dir), tmp_path / "out", data_dir)
    finally:
        (HERE / "targets" / name).unlink(missing_ok=True)
    c5 = {c["id"]: c for c in doc["checks"]}["C5.answer"]
    assert c5["status"] == FAIL and "more than yes and no" in _evidence(c5), _evidence(c5)


def test_face_snapshots_kept_by_the_comparator_fail_c3_face_images(tmp_path, data_dir):
    """The comparator's optional snapshots (each attempt's frame, the certainty drawn in, 0644): face images at
    rest, whatever their entropy says."""
    need_strace()
    name = _variant(tmp_path, "--snapshots", "data/snapshots")
    try:
        p, doc = audit_target(name, _root(tmp_path, data_dir), tmp_path / "out", data_dir)
    finally:
        (HERE / "targets" / name).unlink(missing_ok=True)
    by_id = {c["id"]: c for c in doc["checks"]}
    faces = by_id["C3.face-images"]
    assert faces["status"] == FAIL and "data/snapshots/" in faces["evidence"]["summary"], _evidence(faces)
    assert faces["evidence"]["values"]["with_faces"] >= 1
    assert by_id["C4.ciphertext"]["status"] == FAIL
