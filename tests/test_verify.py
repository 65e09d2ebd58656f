"""The verifier and its CLI, with real faces: yes/no only, lockout, consent and fallback first."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from fr_pbd.errors import ConsentError, QualityError
from fr_pbd.store import LockoutState, Store
from fr_pbd.verify import LOCKOUT_AFTER_FAILURES, Consent, Decision, Verifier, lock_seconds

PIN = "correct horse battery"


@pytest.fixture()
def home(tmp_path):
    h = tmp_path / "home"
    return h


@pytest.fixture()
def enrolled(home, extractor, faces_dir):
    v = Verifier(home, extractor)
    v.set_fallback(PIN)
    assert v.enroll("obama", [faces_dir / "obama.jpg", faces_dir / "obama2.jpg"], Consent("1", "test-device"),
                    fallback=PIN) == 2
    return v


def test_decision_carries_a_reason_and_never_a_score():
    d = Decision(True, "accepted")
    assert [f for f in d.__dataclass_fields__] == ["accepted", "reason", "retry_after", "detail"]
    assert not hasattr(d, "__dict__")  # slots: nothing can be attached to it later
    assert bool(Decision(False, "no_match")) is False
    with pytest.raises(ValueError, match="unknown reason"):
        Decision(False, "score 0.98")
    with pytest.raises(ValueError, match="accepted exactly"):
        Decision(True, "no_match")


def test_enrolment_needs_consent_and_a_fallback_first(home, extractor, faces_dir):
    v = Verifier(home, extractor)
    with pytest.raises(ConsentError, match="consent"):
        v.enroll("obama", [faces_dir / "obama.jpg"], None, fallback=PIN)
    with pytest.raises(ConsentError, match="fallback"):
        v.enroll("obama", [faces_dir / "obama.jpg"], Consent("1"), fallback=PIN)
    assert not home.exists()  # a refused enrolment creates no store
    v.set_fallback(PIN)
    assert v.enroll("obama", [faces_dir / "obama.jpg"], Consent("1"), fallback=PIN) == 1


def test_enrolment_refuses_a_bad_photo_and_stores_nothing(home, extractor, faces_dir):
    v = Verifier(home, extractor)
    v.set_fallback(PIN)
    with pytest.raises(QualityError) as info:
        v.enroll("obama", [faces_dir / "obama.jpg", faces_dir / "two_people.jpg"], Consent("1"), fallback=PIN)
    assert info.value.reason == "multiple_faces" and "two_people.jpg" in str(info.value)
    assert v.store().read().users == ()


def test_verify_yes_for_the_user_no_for_others(enrolled, faces_dir):
    assert enrolled.verify(faces_dir / "obama3.jpg") == Decision(True, "accepted")
    assert enrolled.verify(faces_dir / "obama4.jpg", user="obama") == Decision(True, "accepted")
    assert enrolled.verify(faces_dir / "obama4.jpg", user="biden") == Decision(False, "unknown_user")
    assert enrolled.verify(faces_dir / "biden2.jpg") == Decision(False, "no_match")
    assert enrolled.verify(faces_dir / "astronaut.png") == Decision(False, "no_match")
    assert enrolled.verify(faces_dir / "no_face_coffee.png") == Decision(False, "no_face")


class CountingExtractor:
    """Wraps the real extractor and counts model runs."""

    def __init__(self, inner):
        self.inner = inner
        self.model_id = inner.model_id
        self.calls = 0

    def template(self, *a, **k):
        self.calls += 1
        return self.inner.template(*a, **k)


def test_lockout_after_five_failures_skips_the_model_and_survives_restart(home, extractor, faces_dir):
    v = Verifier(home, extractor)
    v.set_fallback(PIN)
    v.enroll("obama", [faces_dir / "obama.jpg"], Consent("1"), fallback=PIN)
    for _ in range(LOCKOUT_AFTER_FAILURES):
        assert not v.verify(faces_dir / "biden2.jpg")
    # A new process would build a new Verifier: the lock is in the encrypted store.
    counting = CountingExtractor(extractor)
    restarted = Verifier(home, counting)
    locked = restarted.verify(faces_dir / "obama3.jpg")  # the right face, but locked
    assert (locked.accepted, locked.reason) == (False, "locked") and 0 < locked.retry_after <= 31
    assert counting.calls == 0
    lock = Store.open(home).read().lockout
    assert lock.failures == 5 and lock.is_locked()
    assert 25 <= (lock.locked_until - datetime.now(timezone.utc)).total_seconds() <= 31
    # The fallback always works, also while locked, and clears the lock.
    assert restarted.check_fallback(PIN)
    assert restarted.verify(faces_dir / "obama3.jpg") == Decision(True, "accepted")
    assert counting.calls == 1


def test_lock_doubles_and_success_resets(home, extractor, faces_dir):
    assert [lock_seconds(n) for n in range(4, 9)] == [0, 30, 60, 120, 240]
    v = Verifier(home, extractor)
    v.set_fallback(PIN)
    v.enroll("obama", [faces_dir / "obama.jpg"], Consent("1"), fallback=PIN)
    store = Store.open(home)
    with store.transaction() as tx:  # five failures, lock already expired
        tx.set_lockout(LockoutState(failures=5, locked_until=datetime.now(timezone.utc) - timedelta(seconds=1)))
    assert not v.verify(faces_dir / "biden2.jpg")
    lock = store.read().lockout
    assert lock.failures == 6 and 55 <= (lock.locked_until - datetime.now(timezone.utc)).total_seconds() <= 61
    with store.transaction() as tx:
        tx.set_lockout(LockoutState(failures=3))
    assert v.verify(faces_dir / "obama4.jpg")
    v.settle()  # the clear is written after the answer (docs/lockout.md)
    assert store.read().lockout == LockoutState()


def test_wrong_fallback_is_no(enrolled):
    assert not enrolled.check_fallback("wrong pin 1234")


def run(*args, home, stdin=None):
    env = dict(os.environ, FR_PBD_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "fr_pbd.cli", *args], capture_output=True, text=True,
                          env=env, input=stdin, timeout=300)


def test_cli_enrol_verify_end_to_end(tmp_path, faces_dir, extractor):
    home = tmp_path / "cli-home"
    p = run("enroll", "--user", "obama", "--image", str(faces_dir / "obama.jpg"), "--consent", home=home)
    assert p.returncode == 2 and "fallback" in p.stderr and "Traceback" not in p.stderr
    assert run("fallback", "set", "--secret-stdin", home=home, stdin=PIN + "\n").returncode == 0
    p = run("enroll", "--user", "obama", "--image", str(faces_dir / "obama.jpg"),
            "--image", str(faces_dir / "obama2.jpg"), "--secret-stdin", home=home, stdin=PIN + "\n")
    assert p.returncode == 2 and "consent" in p.stderr  # no terminal, no --consent: refused
    p = run("enroll", "--user", "obama", "--image", str(faces_dir / "obama.jpg"),
            "--image", str(faces_dir / "obama2.jpg"), "--consent", "--secret-stdin", home=home, stdin=PIN + "\n")
    assert p.returncode == 0, p.stderr
    assert "obama is not a Unix account here" in p.stdout or "bound to the Unix account obama" in p.stdout
    for image, answer, code in (("obama3.jpg", "yes", 0), ("biden2.jpg", "no", 1), ("astronaut.png", "no", 1)):
        p = run("verify", "--image", str(faces_dir / image), home=home)
        assert (p.stdout, p.returncode) == (answer + "\n", code), (image, p.stderr)
    status = run("status", home=home)
    assert status.returncode == 0 and "obama: 2 template(s)" in status.stdout
    assert run("fallback", "check", "--secret-stdin", home=home, stdin="nope-nope\n").returncode == 1
    assert run("unenroll", "--user", "obama", home=home).returncode == 0
    p = run("verify", "--image", str(faces_dir / "obama3.jpg"), home=home)
    assert (p.stdout, p.returncode) == ("no\n", 1)
    p = run("erase", home=home)
    assert p.returncode == 2 and "--yes" in p.stderr
    assert run("erase", "--yes", home=home).returncode == 0
    p = run("status", home=home)
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_a_home_below_a_directory_others_may_write_is_refused(tmp_path):
    """ssh StrictModes for the store: another user could swap the home (and the key beside it)."""
    from fr_pbd.errors import ConfigError

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # writable by all, no sticky bit
    with pytest.raises(ConfigError, match="writable"):
        Verifier(shared / "home").set_fallback("correct horse battery")
    assert not (shared / "home").exists()  # refused before anything was created
    shared.chmod(0o1777)  # sticky, like /tmp: others cannot rename or delete our entries
    Verifier(shared / "home").set_fallback("correct horse battery")
    with pytest.raises(ConfigError, match="writable"):
        (shared / "home").chmod(0o770)
        Verifier(shared / "home").store()
