"""Issue 13, the store and verifier half: each attack, tried as an attacker would, now fails to get in.

* lockout race: parallel impostor attempts (CLI and API) compare exactly the 5 attempts left;
* PIN without limit: 5 wrong entries lock the PIN (30 s, doubling), the right one then waits,
  a face lockout stays; a face success does not clear the PIN's count; 6 characters minimum;
* unknown users lock everyone: bogus claimed names are a ``no`` that counts for nobody;
  one user's failures do not lock another;
* enrolment without proof: every enrolment needs the fallback PIN, before the consent text;
  another person's face is not added to an existing user; nothing is stored when refused;
* withdrawal does not re-key: a copy of the store taken before ``unenroll`` no longer opens;
* names bound to accounts: ``verify(user=...)`` compares only that user's templates, and a
  name opens only the Unix account (uid) it was bound to at enrolment;
* human messages: ``fr-pbd verify`` says on stderr why a ``no`` was not a comparison.

Stand-in templates (no models) where the attack is about the store; the real pipeline
where it goes through ``fr-pbd`` as a user would run it. The race drivers run in fresh
interpreters (``python tests/test_login_attacks.py --race ...``), all released at the same
instant, so the store's lock is what stands between them.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from fr_pbd.errors import ConsentError, StoreIntegrityError
from fr_pbd.store import LockoutState, Store
from fr_pbd.template import Template

PIN = "correct horse battery"
DIM = 128
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def cli(*args: str, home: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("FR_PBD_HOME", None)
    return subprocess.run([sys.executable, "-m", "fr_pbd.cli", *args, "--home", str(home)], capture_output=True,
                          text=True, env=env, input=stdin, timeout=300, cwd=ROOT)


def spawn(*args: str, home: Path, stdin: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("FR_PBD_HOME", None)
    p = subprocess.Popen([sys.executable, "-m", "fr_pbd.cli", *args, "--home", str(home)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    if stdin is not None:
        p.stdin.write(stdin)
    p.stdin.close()
    p.stdin = None  # communicate() must not touch it again
    return p


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


class StubExtractor:
    """Stands in for the capture pipeline: every image gives the same template."""

    def __init__(self, vector: np.ndarray) -> None:
        from fr_pbd.verify import Verifier

        self.model_id = Verifier.default_model_id()
        self.vector = vector

    def template(self, image, purpose="verify", check=None, hook=None, on_usable=None) -> Template:
        if on_usable is not None:  # as the real extractor: the face passed the gate, the count may start
            on_usable()
        return Template(self.vector, self.model_id)


def stub_home(home: Path, users=(("alice", 1), ("bob", 2))) -> Path:
    """A store with the real model id, a fallback PIN and stand-in templates (user ``name`` = seed ``s``).

    Each name is bound to the account it names on this machine now, or to none (as enrolment
    binds it), so the store holds on a host with accounts called alice and bob as on one without.
    """
    from fr_pbd.store.records import account_uid
    from fr_pbd.verify import Verifier

    store = Store.create(home, model_id=Verifier.default_model_id(), dim=DIM)
    store.set_fallback(PIN)
    with store.transaction() as tx:
        for name, seed in users:
            tx.record_consent(name, text_version="1", device_id="test", uid=account_uid(name))
            tx.add_templates(name, [Template(unit(seed), Verifier.default_model_id())])
    return home


def stub_verifier(home: Path, seed: int):
    import warnings

    from fr_pbd.verify import Verifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # liveness off: stand-in templates, no frames
        return Verifier(home, StubExtractor(unit(seed)), liveness=False)


def me() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


# --------------------------------------------------------------------------------------
# race driver (a fresh interpreter per attempt)
# --------------------------------------------------------------------------------------
def _race(home: str, start_at: float, user: str, seed: int, counter: str) -> None:
    from fr_pbd.store import protection

    real = protection.ProtectedMatcher.matches

    def counting(self, *a, **k):  # one byte per comparison actually made
        fd = os.open(counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, b"x")
        os.close(fd)
        return real(self, *a, **k)

    protection.ProtectedMatcher.matches = counting
    v = stub_verifier(Path(home), seed)
    time.sleep(max(0.0, start_at - time.time()))
    d = v.verify(b"frame", user=user or None)
    print(json.dumps({"accepted": d.accepted, "reason": d.reason}))


def race(home: Path, n: int, user: str | None, seed: int, tmp: Path) -> tuple[int, list[dict]]:
    counter = tmp / f"compared-{user}-{seed}"
    start_at = time.time() + 1.0 + 0.25 * n  # every interpreter is up and waiting by then (~0.5 s each)
    procs = [subprocess.Popen([sys.executable, __file__, "--race", str(home), repr(start_at), user or "", str(seed),
                               str(counter)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for _ in range(n)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-300:] for o in outs]
    compared = counter.stat().st_size if counter.exists() else 0
    return compared, [json.loads(o[0]) for o in outs]


# --------------------------------------------------------------------------------------
# 1. lockout race
# --------------------------------------------------------------------------------------
def test_ten_parallel_api_attempts_compare_exactly_five_per_scope(tmp_path):
    """10 impostors released at the same instant: 5 compared, 5 refused unseen; per scope."""
    home = stub_home(tmp_path / "home")
    for user in (None, "alice"):
        compared, answers = race(home, 10, user, seed=99, tmp=tmp_path)
        assert compared == 5, (user, compared)
        assert sorted(a["reason"] for a in answers) == ["locked"] * 5 + ["no_match"] * 5
        assert not any(a["accepted"] for a in answers)
        lock = Store.open(home).read().lockout_of(user)
        assert lock.failures == 5 and lock.is_locked()
    # The genuine face of a third person, bob, is not locked by either scope's attack.
    assert stub_verifier(home, 2).verify(b"frame", user="bob")


def test_ten_parallel_cli_impostors_compare_exactly_five(tmp_path, faces_dir, extractor):
    """The issue's attack: 10 ``fr-pbd verify`` of an impostor at once, with and without a claim."""
    home = tmp_path / "home"
    assert cli("fallback", "set", "--secret-stdin", home=home, stdin=PIN + "\n").returncode == 0
    p = cli("enroll", "--user", "obama", "--image", str(faces_dir / "obama.jpg"), "--consent", "--secret-stdin",
            home=home, stdin=PIN + "\n")
    assert p.returncode == 0, p.stderr
    claims = [None] * 10 + ["obama"] * 10
    procs = [spawn("verify", "--image", str(faces_dir / "biden2.jpg"), *(["--user", u] if u else []), home=home)
             for u in claims]
    outs = [(u, *p.communicate(timeout=300), p.returncode) for u, p in zip(claims, procs)]
    assert all((out, rc) == ("no\n", 1) for _u, out, _err, rc in outs), outs
    for scope in (None, "obama"):
        refused = sum(1 for u, _o, err, _rc in outs if u == scope and "locked for" in err)
        assert refused == 5, (scope, [e for u, _o, e, _rc in outs if u == scope])
        assert Store.open(home).read().lockout_of(scope).failures == 5


# --------------------------------------------------------------------------------------
# 2. PIN without limit
# --------------------------------------------------------------------------------------
def test_twelve_wrong_pins_then_the_right_one_is_refused_and_the_face_stays_locked(tmp_path):
    home = stub_home(tmp_path / "home")
    impostor = stub_verifier(home, 99)
    for _ in range(5):
        assert not impostor.verify(b"frame")
    assert Store.open(home).read().lockout.is_locked()
    t0 = time.monotonic()
    results = []
    for i in range(12):
        p = cli("fallback", "check", "--secret-stdin", home=home, stdin=f"{100000 + i}\n")
        results.append((p.stdout, p.returncode, "locked for" in p.stderr))
        if i == 4:
            t_locked = time.monotonic()  # the 5th wrong entry has locked the PIN by now
    elapsed = time.monotonic() - t0
    assert all(r[:2] == ("no\n", 1) for r in results)
    assert [r[2] for r in results] == [False] * 4 + [True] * 8  # the 5th wrong entry locks it
    p = cli("fallback", "check", "--secret-stdin", home=home, stdin=PIN + "\n")
    assert (p.stdout, p.returncode) == ("no\n", 1) and "locked for" in p.stderr and "nothing was compared" in p.stderr
    view = Store.open(home).read()
    since = time.monotonic() - t_locked  # a loaded machine makes the CLI calls slow: bound by what elapsed
    assert view.fallback_lockout.failures == 5 and 29 - since <= view.fallback_lockout.retry_after() <= 31
    assert view.lockout.is_locked()  # the right PIN during the PIN's lock did not clear the face lock
    print(f"12 wrong PINs + the right one in {elapsed:.1f} s: 5 compared, the right one refused")


def test_parallel_wrong_pins_compare_exactly_five(tmp_path):
    home = stub_home(tmp_path / "home")
    procs = [spawn("fallback", "check", "--secret-stdin", home=home, stdin=f"{200000 + i}\n") for i in range(10)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(o == "no\n" for o, _e in outs)
    assert sum("nothing was compared" in e for _o, e in outs) == 5
    assert Store.open(home).read().fallback_lockout.failures == 5


def test_a_face_success_does_not_clear_the_pin_count_and_the_pin_clears_after_its_lock(tmp_path):
    from fr_pbd.verify import Verifier

    home = stub_home(tmp_path / "home")
    v = Verifier(home)
    for _ in range(3):
        assert not v.check_fallback("wrong pin 1")
    assert stub_verifier(home, 1).verify(b"frame", user="alice")  # alice's face: yes
    assert Store.open(home).read().fallback_lockout.failures == 3  # still counted
    # A lock that has run out: the right PIN works again and clears the face lockouts too.
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    with Store.open(home).transaction() as tx:
        tx.set_fallback_lockout(LockoutState(6, past))
        tx.set_lockout(LockoutState(5, datetime.now(timezone.utc) + timedelta(hours=1)), "alice")
    assert v.check_fallback(PIN)
    view = Store.open(home).read()
    assert view.fallback_lockout == LockoutState() and view.lockout_of("alice") == LockoutState()
    # ... and after its lock, a wrong one locks it for 60 s at once (6th failure in a row, doubled).
    for _ in range(5):
        v.check_fallback("wrong pin 2")
    with Store.open(home).transaction() as tx:
        tx.set_fallback_lockout(LockoutState(5, past))
    check = v.check_fallback("wrong pin 3")
    assert not check and 55 <= Store.open(home).read().fallback_lockout.retry_after() <= 61 and check.retry_after >= 55


@pytest.mark.parametrize("pin", ["2468", "12345", "123456", "987654", "111111", "aaaaaaa"])
def test_a_short_or_trivial_pin_is_refused(tmp_path, pin):
    p = cli("fallback", "set", "--secret-stdin", home=tmp_path / "h", stdin=pin + "\n")
    assert p.returncode == 2 and "Traceback" not in p.stderr and pin not in p.stderr
    assert not (tmp_path / "h" / "store.frpbd").exists() or not Store.open(tmp_path / "h").read().has_fallback


def test_replacing_the_pin_needs_the_current_one(tmp_path):
    from fr_pbd.verify import Verifier

    home = stub_home(tmp_path / "home")
    v = Verifier(home)
    with pytest.raises(ConsentError, match="current"):
        v.set_fallback("new pin 97531")
    with pytest.raises(ConsentError, match="wrong"):
        v.set_fallback("new pin 97531", current="not the pin")
    assert Store.open(home).read().fallback_lockout.failures == 1  # counted like any entry
    p = cli("fallback", "set", "--secret-stdin", home=home, stdin="not the pin\n975318\n")
    assert p.returncode == 2 and "wrong" in p.stderr
    p = cli("fallback", "set", "--secret-stdin", home=home, stdin=f"{PIN}\n975318\n")
    assert p.returncode == 0, p.stderr
    assert v.check_fallback("975318") and not v.check_fallback(PIN)


# --------------------------------------------------------------------------------------
# 3. unknown users lock everyone
# --------------------------------------------------------------------------------------
def test_unknown_claimed_users_count_for_nobody(tmp_path):
    home = stub_home(tmp_path / "home")
    for name in ("../../etc/passwd", "root", "nobody", "x" * 200, "alice ", "carol") * 3:
        v = stub_verifier(home, 1)  # alice's face, but claimed as someone not enrolled
        assert (o := v.verify(b"frame", user=name)).reason == "unknown_user"
    view = Store.open(home).read()
    assert view.lockout == LockoutState() and all(view.lockout_of(u) == LockoutState() for u in view.users)
    assert stub_verifier(home, 1).verify(b"frame", user="alice")
    assert stub_verifier(home, 2).verify(b"frame")


def test_one_users_failures_do_not_lock_another(tmp_path):
    home = stub_home(tmp_path / "home")
    for _ in range(7):
        assert not stub_verifier(home, 99).verify(b"frame", user="alice")
    view = Store.open(home).read()
    assert view.lockout_of("alice").is_locked() and view.lockout_of("bob") == LockoutState()
    assert view.lockout == LockoutState()
    assert stub_verifier(home, 2).verify(b"frame", user="bob")
    assert stub_verifier(home, 2).verify(b"frame")
    # While alice is locked, her face does not get in without a claim either (left out), and
    # that attempt counts for "any enrolled user".
    v = stub_verifier(home, 1)
    assert (o := v.verify(b"frame")).reason == "no_match"
    assert (o := v.verify(b"frame", user="alice")).reason == "locked" and o.retry_after > 0


def test_unknown_users_through_the_cli_leave_obama_unlocked(tmp_path, faces_dir, extractor):
    """The issue's attack: bogus names 5 times and more; then obama's face still says yes."""
    from fr_pbd.verify import Consent, Verifier

    home = tmp_path / "home"
    v = Verifier(home, extractor)
    v.set_fallback(PIN)
    v.enroll("obama", [faces_dir / "obama.jpg"], Consent("1", "test"), fallback=PIN)
    for name in ("../../etc/passwd", "nobody1", "x", "y", "z", "root"):
        p = cli("verify", "--user", name, "--image", str(faces_dir / "biden2.jpg"), home=home)
        assert (p.stdout, p.returncode) == ("no\n", 1) and "not enrolled" in p.stderr
    p = cli("verify", "--user", "obama", "--image", str(faces_dir / "obama3.jpg"), home=home)
    assert (p.stdout, p.returncode) == ("yes\n", 0), p.stderr
    assert Store.open(home).read().lockout == LockoutState()


# --------------------------------------------------------------------------------------
# 4. enrolment without proof
# --------------------------------------------------------------------------------------
def _counts(home: Path) -> dict[str, int]:
    view = Store.open(home).read()
    return {u: view.template_count(u) for u in view.users}


def test_adding_another_face_to_an_existing_user_is_refused(tmp_path, faces_dir, extractor):
    """The issue's attack: ``enroll --user obama --image biden.jpg`` on an existing user."""
    home = tmp_path / "home"
    assert cli("fallback", "set", "--secret-stdin", home=home, stdin=PIN + "\n").returncode == 0
    base = ["enroll", "--user", "obama", "--consent", "--secret-stdin"]
    p = cli(*base, "--image", str(faces_dir / "obama.jpg"), "--image", str(faces_dir / "obama2.jpg"), home=home,
            stdin=PIN + "\n")
    assert p.returncode == 0, p.stderr
    before = _counts(home)
    # no PIN at all, a wrong PIN, the right PIN with Biden's face: each refused, nothing stored
    p = cli("enroll", "--user", "obama", "--consent", "--image", str(faces_dir / "biden.jpg"), home=home)
    assert p.returncode == 2 and "PIN" in p.stderr
    p = cli(*base, "--image", str(faces_dir / "biden.jpg"), home=home, stdin="wrong pin 5\n")
    assert p.returncode == 2 and "wrong fallback PIN" in p.stderr
    p = cli(*base, "--image", str(faces_dir / "biden.jpg"), home=home, stdin=PIN + "\n")
    assert p.returncode == 2 and "does not match obama's enrolled face" in p.stderr and "Traceback" not in p.stderr
    p = cli(*base, "--image", str(faces_dir / "obama3.jpg"), "--image", str(faces_dir / "biden.jpg"), home=home,
            stdin=PIN + "\n")
    assert p.returncode == 2 and "biden.jpg does not match" in p.stderr
    assert _counts(home) == before
    p = cli("verify", "--user", "obama", "--image", str(faces_dir / "biden2.jpg"), home=home)
    assert (p.stdout, p.returncode) == ("no\n", 1)
    # the same person, with the PIN: added
    p = cli(*base, "--image", str(faces_dir / "obama3.jpg"), home=home, stdin=PIN + "\n")
    assert p.returncode == 0 and "obama: 3 template(s)" in p.stdout, p.stderr


def test_the_pin_is_checked_before_the_consent_text_and_any_image(tmp_path, faces_dir):
    home = stub_home(tmp_path / "home")
    before = _counts(home)
    # a wrong PIN, no --consent, no terminal: the PIN is refused first; the consent text never shows
    p = cli("enroll", "--user", "carol", "--image", str(faces_dir / "obama.jpg"), "--secret-stdin", home=home,
            stdin="wrong pin 6\n")
    assert p.returncode == 2 and "wrong fallback PIN" in p.stderr and "consent" not in p.stderr.lower()
    p = cli("enroll", "--user", "carol", "--image", str(tmp_path / "missing.jpg"), "--secret-stdin", home=home,
            stdin=PIN + "\n")
    assert p.returncode == 2 and "no such image" in p.stderr
    p = cli("enroll", "--user", "../../etc/passwd", "--image", str(faces_dir / "obama.jpg"), "--secret-stdin",
            home=home, stdin=PIN + "\n")
    assert p.returncode == 2 and "user name" in p.stderr
    assert _counts(home) == before


def test_a_new_user_needs_the_pin_too_and_nothing_is_created_without_a_store(tmp_path, faces_dir):
    from fr_pbd.verify import Consent, Verifier

    home = stub_home(tmp_path / "home")
    v = stub_verifier(home, 5)
    with pytest.raises(TypeError):
        v.enroll("carol", [b"frame"], Consent("1"))  # the proof is not optional
    with pytest.raises(ConsentError, match="needs the fallback PIN"):
        v.enroll("carol", [b"frame"], Consent("1"), fallback="")
    with pytest.raises(ConsentError, match="wrong"):
        v.enroll("carol", [b"frame"], Consent("1"), fallback="wrong pin 7")
    assert "carol" not in Store.open(home).read().users
    assert v.enroll("carol", [b"frame"], Consent("1"), fallback=PIN) == 1
    # No store yet: refused, and nothing is created.
    with pytest.raises(ConsentError, match="fallback"):
        Verifier(tmp_path / "none", StubExtractor(unit(1))).enroll("carol", [b"f"], Consent("1"), fallback=PIN)
    assert not (tmp_path / "none").exists()


def test_a_locked_pin_refuses_enrolment_without_comparing(tmp_path):
    from fr_pbd.verify import Consent

    home = stub_home(tmp_path / "home")
    with Store.open(home).transaction() as tx:
        tx.set_fallback_lockout(LockoutState(5, datetime.now(timezone.utc) + timedelta(seconds=30)))
    with pytest.raises(ConsentError, match="locked for"):
        stub_verifier(home, 5).enroll("carol", [b"frame"], Consent("1"), fallback=PIN)
    assert "carol" not in Store.open(home).read().users


# --------------------------------------------------------------------------------------
# 5. withdrawal does not re-key
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["unenroll", "keys rotate"])
def test_a_copy_taken_before_withdrawal_does_not_open_afterwards(tmp_path, how):
    home = stub_home(tmp_path / "home")
    old_store = (home / "store.frpbd").read_bytes()
    old_key = (home / "keys" / "kek").read_bytes()
    p = cli(*how.split(), *(["--user", "alice"] if how == "unenroll" else []), home=home)
    assert p.returncode == 0, p.stderr
    assert (home / "keys" / "kek").read_bytes() != old_key
    view = Store.open(home).read()
    assert ("alice" in view.users) == (how != "unenroll") and "bob" in view.users
    # the attacker puts the old copy back: it does not open with the current key material
    (home / "store.frpbd").write_bytes(old_store)
    with pytest.raises(StoreIntegrityError):
        Store.open(home)


def test_withdrawal_renews_the_template_protection_and_keeps_decisions(tmp_path):
    home = stub_home(tmp_path / "home")
    before = Store.open(home).read().store_id
    assert Store.open(home).remove_user("alice")
    assert Store.open(home).read().store_id != before
    assert stub_verifier(home, 2).verify(b"frame", user="bob")
    assert not Store.open(home).remove_user("alice")  # nothing to withdraw: nothing written


# --------------------------------------------------------------------------------------
# names bound to accounts
# --------------------------------------------------------------------------------------
def test_a_claimed_user_is_compared_with_that_users_templates_only(tmp_path):
    home = stub_home(tmp_path / "home")
    alice_face = stub_verifier(home, 1)
    assert alice_face.verify(b"frame", user="alice")
    assert (o := alice_face.verify(b"frame", user="bob")).reason == "no_match"
    assert (o := alice_face.verify(b"frame", user="root")).reason == "unknown_user"


def test_enrolment_binds_the_name_to_its_account(tmp_path):
    from fr_pbd.verify import Consent
    from tests.helpers import absent_account  # (here: the race drivers run this file without the tests package)

    home = stub_home(tmp_path / "home")
    name = me()
    v = stub_verifier(home, 7)
    v.enroll(name, [b"frame"], Consent("1"), fallback=PIN)
    assert Store.open(home).read().uid_of(name) == os.getuid()
    nowhere = absent_account("none")
    v.enroll(nowhere, [b"frame"], Consent("1"), fallback=PIN)
    assert Store.open(home).read().uid_of(nowhere) is None  # no such account here: bound to none
    assert v.verify(b"frame", user=name)
    # another account on this machine (whichever there is), or a name that is none, is not opened by this face
    other = next((p.pw_name for p in pwd.getpwall() if p.pw_uid != os.getuid()), absent_account("other"))
    assert (o := v.verify(b"frame", user=other)).reason == "unknown_user"


def test_a_name_opens_only_the_account_it_was_bound_to(tmp_path, monkeypatch):
    from fr_pbd import attempts, verify
    from tests.helpers import absent_account

    newcomer = absent_account("new")
    home = stub_home(tmp_path / "home", users=((newcomer, 1), ("bob", 2)))
    real = verify.account_uid

    def accounts(table):  # the password database as the enrolment (verify) and the claim (attempts) see it
        for module in (verify, attempts):
            monkeypatch.setattr(module, "account_uid", lambda n: table.get(n) or real(n))

    # the name was no account at enrolment; an account of that name appears later
    accounts({newcomer: 4242})
    v = stub_verifier(home, 1)
    assert (o := v.verify(b"frame", user=newcomer)).reason == "account_changed"
    # a bound name whose account was deleted and re-created with another uid
    with Store.open(home).transaction() as tx:
        tx.record_consent("bob", text_version="1", device_id="test", uid=1234)
    accounts({"bob": 4321})
    v = stub_verifier(home, 2)
    assert (o := v.verify(b"frame", user="bob")).reason == "account_changed"
    assert Store.open(home).read().lockout_of("bob") == LockoutState()  # not counted
    with pytest.raises(ConsentError, match="not the one"):
        v.enroll("bob", [b"frame"], verify.Consent("1"), fallback=PIN)


# --------------------------------------------------------------------------------------
# human messages
# --------------------------------------------------------------------------------------
SCOREISH = re.compile(r"\d\.\d|score|distance|similar", re.I)


def test_verify_says_why_a_no_was_not_a_comparison(tmp_path, faces_dir, extractor):
    from fr_pbd.verify import Consent, Verifier

    home = tmp_path / "home"
    v = Verifier(home, extractor)
    v.set_fallback(PIN)
    v.enroll("obama", [faces_dir / "obama.jpg"], Consent("1", "test"), fallback=PIN)
    # (two_people.jpg is compared: verification takes the largest face, quality.POLICIES["verify"])
    cases = [("no_face_coffee.png", None, "no face"), ("obama3.jpg", "biden", "not enrolled"), ("biden2.jpg", None, "")]
    for image, user, said in cases:
        p = cli("verify", "--image", str(faces_dir / image), *(["--user", user] if user else []), home=home)
        assert (p.stdout, p.returncode) == ("no\n", 1), p.stderr
        assert (said in p.stderr) if said else p.stderr == "", (image, p.stderr)
        assert not SCOREISH.search(p.stderr)
    with Store.open(home).transaction() as tx:
        tx.set_lockout(LockoutState(5, datetime.now(timezone.utc) + timedelta(seconds=30)))
    p = cli("verify", "--image", str(faces_dir / "obama3.jpg"), home=home)
    assert (p.stdout, p.returncode) == ("no\n", 1)
    assert re.search(r"locked for \d+ s", p.stderr) and "fallback" in p.stderr and not SCOREISH.search(p.stderr)
    with Store.open(home).transaction() as tx:  # a camera that cannot be opened is a setup error, exit 2
        tx.reset_lockout()
    p = cli("verify", "--camera", str(tmp_path / "no-such-camera"), home=home)
    assert p.returncode == 2 and p.stdout == "" and "camera source" in p.stderr and "Traceback" not in p.stderr


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--race":
        _race(sys.argv[2], float(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6])
    else:
        sys.exit("usage: test_login_attacks.py --race HOME START_AT USER SEED COUNTER")
