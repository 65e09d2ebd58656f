"""The store's share of a verification's latency: the pre-check's cache and the clear written after the answer.

The pre-check (claim and lockout, before a frame is looked at) is served from the
claims of the store file version last read (:meth:`fr_pbd.store.Store.claims`); every
change to the file, by this process or another, is seen by the next verification. A
stale pre-check can never let an attempt through: the count transaction re-checks the
claim and the lockout under the exclusive lock. A success's clear is written after the
answer, compare-and-set, and waited for by every later store operation and at exit.

Stand-in templates (tests/test_login_attacks.py): the attacks are on the store.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from fr_pbd.errors import StoreError, StoreIntegrityError
from fr_pbd.store import LockoutState, Store
from fr_pbd.store import envelope, protection
from fr_pbd.store import store as store_mod
from fr_pbd.store.records import account_uid
from fr_pbd.store.transaction import ClaimsView
from tests.test_login_attacks import PIN, stub_home, stub_verifier

ROOT = Path(__file__).resolve().parents[1]
LOCKED = LockoutState(5, datetime.now(timezone.utc) + timedelta(hours=1))


def other_process(code: str, home: Path) -> None:
    """Run ``code`` in a fresh interpreter (``home``, ``Store``, ``LockoutState``, ``datetime`` ... in scope)."""
    prelude = ("from pathlib import Path\nfrom datetime import datetime, timedelta, timezone\n"
               "from fr_pbd.store import Store, LockoutState\n"
               f"home = Path({str(home)!r})\n")
    p = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]


class Looks:
    """Counts full decryptions (envelope.open_bytes) and comparisons (ProtectedMatcher.matches)."""

    def __init__(self, monkeypatch) -> None:
        self.decrypts = self.compared = 0
        real_open, real_matches = store_mod.open_bytes, protection.ProtectedMatcher.matches

        def counting_open(*a, **k):
            self.decrypts += 1
            return real_open(*a, **k)

        def counting_matches(matcher, *a, **k):
            self.compared += 1
            return real_matches(matcher, *a, **k)

        monkeypatch.setattr(store_mod, "open_bytes", counting_open)
        monkeypatch.setattr(protection.ProtectedMatcher, "matches", counting_matches)


def failures(home: Path, user: str | None) -> int:
    return Store.open(home).read().lockout_of(user).failures


# --------------------------------------------------------------------------------------
# the cache itself
# --------------------------------------------------------------------------------------
def test_the_pre_check_is_served_from_memory_while_the_file_is_unchanged(tmp_path, monkeypatch):
    home = stub_home(tmp_path / "home")
    store = Store.open(home)
    looks = Looks(monkeypatch)
    first = store.claims()
    assert store.claims() is first and looks.decrypts == 0  # Store.open read it: nothing decrypted again
    with Store.open(home).transaction() as tx:  # another handle writes: a new version of the file
        tx.set_lockout(LOCKED, "alice")
    looks.decrypts = 0
    fresh = store.claims()
    assert looks.decrypts == 1 and fresh is not first and fresh.lockout_of("alice") == LOCKED
    assert store.claims() is fresh and looks.decrypts == 1
    with store.transaction() as tx:  # its own write: remembered, not read back
        tx.reset_lockout("alice")
    looks.decrypts = 0
    assert store.claims().lockout_of("alice") == LockoutState() and looks.decrypts == 0


def test_the_cache_holds_nothing_biometric_and_cannot_be_changed(tmp_path):
    home = stub_home(tmp_path / "home")
    view = Store.open(home).claims()
    assert isinstance(view, ClaimsView)
    assert view.template_count("alice") == 1 and view.uid_of("alice") == account_uid("alice") and view.template_count("eve") == 0
    held = [getattr(view, s) for s in ClaimsView.__slots__]
    stack, seen = list(held), 0
    while stack:  # every value reachable from the view: no array, no bytes (no template, rotation, hash or key)
        x = stack.pop()
        seen += 1
        assert not isinstance(x, (np.ndarray, bytes, bytearray, memoryview)), type(x)
        if isinstance(x, (tuple, list, frozenset, set)):
            stack.extend(x)
        elif hasattr(x, "items"):
            stack.extend(v for kv in x.items() for v in kv)
    assert seen > 10
    with pytest.raises(AttributeError):
        view.lockout = LockoutState()
    with pytest.raises(TypeError):
        view._users["alice"] = (1, 0, LockoutState())  # type: ignore[index]
    assert not hasattr(view, "__dict__")


def verified_then_overwritten(tmp_path, change) -> "Verifier":
    """A verifier that has answered once (its claims cached), then ``change(bytes) -> (offset, bytes)``
    written into the store file in place (same inode, same size) with its old times put back."""
    home = stub_home(tmp_path / "home")
    v = stub_verifier(home, 1)
    assert v.verify(b"frame", user="alice")
    v.settle()
    path = home / "store.frpbd"
    st = os.stat(path)
    offset, data = change(path.read_bytes())
    fd = os.open(path, os.O_WRONLY)
    os.pwrite(fd, data, offset)
    os.close(fd)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return v


def test_a_tampered_file_is_refused_by_the_next_pre_check_even_with_its_old_times(tmp_path):
    def flip(data: bytes) -> tuple[int, bytes]:
        tampered = bytearray(data)
        tampered[-100] ^= 1  # one bit of the ciphertext
        return 0, bytes(tampered)

    v = verified_then_overwritten(tmp_path, flip)
    with pytest.raises(StoreIntegrityError):
        v.verify(b"frame", user="alice")


# --------------------------------------------------------------------------------------
# a change by another process is seen by the next verification
# --------------------------------------------------------------------------------------
def test_a_lock_set_by_another_process_is_seen_without_a_look(tmp_path, monkeypatch):
    home = stub_home(tmp_path / "home")
    v = stub_verifier(home, 1)
    assert v.verify(b"frame", user="alice")
    other_process("with Store.open(home).transaction() as tx:\n"
                  "    tx.set_lockout(LockoutState(5, datetime.now(timezone.utc) + timedelta(hours=1)), 'alice')\n",
                  home)
    looks = Looks(monkeypatch)
    assert (o := v.verify(b"frame", user="alice")).reason == "locked" and o.retry_after > 3500
    assert looks.compared == 0 and looks.decrypts == 1


def test_a_user_removed_by_another_process_is_unknown_at_once(tmp_path, monkeypatch):
    home = stub_home(tmp_path / "home")
    v = stub_verifier(home, 1)
    assert v.verify(b"frame", user="alice")
    other_process("Store.open(home).remove_user('alice')\n", home)
    looks = Looks(monkeypatch)
    assert (o := v.verify(b"frame", user="alice")).reason == "unknown_user" and looks.compared == 0
    assert (o := v.verify(b"frame")).reason == "no_match"  # nor is alice in "any enrolled user"


def test_a_pin_that_clears_the_lock_in_another_process_lets_the_next_attempt_in(tmp_path):
    home = stub_home(tmp_path / "home")
    with Store.open(home).transaction() as tx:
        tx.set_lockout(LOCKED, "alice")
    v = stub_verifier(home, 1)
    assert (o := v.verify(b"frame", user="alice")).reason == "locked"
    other_process(f"assert Store.open(home).fallback_attempt({PIN!r}) == 'accepted'\n", home)
    assert (o := v.verify(b"frame", user="alice")).reason == "accepted"


def test_an_erased_store_is_seen_by_the_next_verification(tmp_path):
    home = stub_home(tmp_path / "home")
    v = stub_verifier(home, 1)
    assert v.verify(b"frame", user="alice")
    other_process("from fr_pbd.store.erasure import erase\nerase(home)\n", home)
    with pytest.raises(StoreError):
        v.verify(b"frame", user="alice")


def test_an_erase_interrupted_after_the_key_is_zeroed_is_seen(tmp_path):
    """erase's first step overwrites the wrapped key in place (same inode, same size)."""
    from fr_pbd.store import _format as fmt

    def zero_the_key(data: bytes) -> tuple[int, bytes]:
        return fmt.wrapped_dek_offset(fmt.parse_header(data)[1]), bytes(fmt.WRAPPED_DEK_LEN)

    v = verified_then_overwritten(tmp_path, zero_the_key)
    with pytest.raises(StoreIntegrityError, match="erased"):
        v.verify(b"frame", user="alice")


@pytest.mark.parametrize("how", ["copy", "copy with the old times", "in place"])
def test_a_restored_older_copy_is_what_the_next_verification_sees(tmp_path, monkeypatch, how):
    """The attacker's own restore: the copy from while alice was locked comes back after the PIN cleared it."""
    home = stub_home(tmp_path / "home")
    path = home / "store.frpbd"
    with Store.open(home).transaction() as tx:
        tx.set_lockout(LOCKED, "alice")
    saved = tmp_path / "saved"
    shutil.copy2(path, saved)
    v = stub_verifier(home, 1)
    other_process(f"assert Store.open(home).fallback_attempt({PIN!r}) == 'accepted'\n", home)
    assert v.verify(b"frame", user="alice")
    assert v.verify(b"frame", user="alice")  # the cleared state is in the verifier's cache now
    v.settle()
    if how == "in place":
        st = os.stat(path)
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.write(fd, saved.read_bytes())
        os.close(fd)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:
        tmp = home / "restored"
        (shutil.copy2 if how == "copy with the old times" else shutil.copyfile)(saved, tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    looks = Looks(monkeypatch)
    assert (o := v.verify(b"frame", user="alice")).reason == "locked" and looks.compared == 0


def test_keys_rotated_by_another_process_are_followed(tmp_path):
    home = stub_home(tmp_path / "home")
    v = stub_verifier(home, 1)
    assert v.verify(b"frame", user="alice")
    other_process("Store.open(home).rotate_key()\n", home)
    assert v.verify(b"frame", user="alice")
    v.settle()  # else the impostor's count comes between the yes and the clear, and both stay (compare-and-set)
    assert not stub_verifier(home, 99).verify(b"frame", user="alice")
    assert failures(home, "alice") == 1


# --------------------------------------------------------------------------------------
# a stale pre-check never lets an attempt through
# --------------------------------------------------------------------------------------
class ChangesWhileLooking:
    """An extractor that, while it 'looks at the frame', lets another process change the store."""

    def __init__(self, home: Path, code: str, seed: int) -> None:
        self.inner = stub_verifier(home, seed)._extractor
        self.model_id = self.inner.model_id
        self.home, self.code = home, code

    def template(self, image, purpose="verify", check=None, hook=None, on_usable=None):
        other_process(self.code, self.home)
        return self.inner.template(image, purpose, check, hook, on_usable)


@pytest.mark.parametrize("change,reason", [
    ("with Store.open(home).transaction() as tx:\n"
     "    tx.set_lockout(LockoutState(5, datetime.now(timezone.utc) + timedelta(hours=1)), 'alice')\n", "locked_out"),
    ("Store.open(home).remove_user('alice')\n", "unknown_user"),
])
def test_a_change_after_the_pre_check_is_caught_by_the_count(tmp_path, monkeypatch, change, reason):
    import warnings

    from fr_pbd.verify import Verifier

    home = stub_home(tmp_path / "home")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = Verifier(home, ChangesWhileLooking(home, change, seed=1), liveness=False)
    looks = Looks(monkeypatch)
    outcome = v.verify(b"frame", user="alice")  # alice's own face: the pre-check said yes, the count says no
    assert not outcome and outcome.reason == {"locked_out": "locked"}.get(reason, reason) and looks.compared == 0


def test_the_pre_check_waits_for_a_write_in_progress(tmp_path):
    """Under the shared lock: a transaction holding the exclusive lock is waited for, then seen."""
    home = stub_home(tmp_path / "home")
    v = stub_verifier(home, 1)
    assert v.verify(b"frame", user="alice")
    v.settle()
    entered, result = threading.Event(), {}
    other = Store.open(home)

    def late_verify():
        entered.wait()
        outcome = v.verify(b"frame", user="alice")
        result["accepted"], result["reason"] = bool(outcome), outcome.reason

    t = threading.Thread(target=late_verify)
    t.start()
    with other.transaction() as tx:
        tx.set_lockout(LOCKED, "alice")
        entered.set()
        time.sleep(0.3)
    t.join(10)
    assert result == {"accepted": False, "reason": "locked"}


# --------------------------------------------------------------------------------------
# the clear after a success
# --------------------------------------------------------------------------------------
def intercept_clears(monkeypatch, before) -> None:
    """``Store.transaction`` as it is, except in the clear's thread, which runs ``before()`` first."""
    real = Store.transaction

    def transaction(store, *a, **k):
        if threading.current_thread().name == "fr-pbd-lockout-clear":
            before()
        return real(store, *a, **k)

    monkeypatch.setattr(Store, "transaction", transaction)


def test_a_success_is_answered_before_its_clear_and_every_later_operation_waits_for_it(tmp_path, monkeypatch):
    home = stub_home(tmp_path / "home")
    v = stub_verifier(home, 1)
    assert not stub_verifier(home, 99).verify(b"frame", user="alice")
    release = threading.Event()
    intercept_clears(monkeypatch, lambda: release.wait(10))
    t0 = time.monotonic()
    assert v.verify(b"frame", user="alice")  # answered while the clear is held back
    assert time.monotonic() - t0 < 5
    assert failures(home, "alice") == 2  # meanwhile the count is one higher: the safe direction
    threading.Timer(0.3, release.set).start()
    assert v.store().claims().lockout_of("alice") == LockoutState()  # store() waited for the clear
    assert failures(home, "alice") == 0


def test_a_failure_counted_between_the_answer_and_the_clear_is_not_wiped(tmp_path, monkeypatch):
    home = stub_home(tmp_path / "home")
    v = stub_verifier(home, 1)
    release = threading.Event()
    intercept_clears(monkeypatch, lambda: release.wait(10))
    assert v.verify(b"frame", user="alice")
    other_process("from tests.test_login_attacks import stub_verifier\n"
                  "assert not stub_verifier(home, 99).verify(b'frame', user='alice')\n", home)
    release.set()
    v.settle()
    assert failures(home, "alice") == 2  # the impostor's attempt stays counted (and the success's own, safely)


def test_a_clear_that_cannot_be_written_leaves_the_count_and_says_so_once(tmp_path, monkeypatch):
    home = stub_home(tmp_path / "home")
    v = stub_verifier(home, 1)
    real = Store.transaction

    def disk_full() -> None:
        raise StoreError("disk full (test)")

    intercept_clears(monkeypatch, disk_full)
    assert v.verify(b"frame", user="alice")
    with pytest.raises(StoreError, match="disk full"):
        v.settle()
    v.settle()  # said once
    monkeypatch.setattr(Store, "transaction", real)
    assert failures(home, "alice") == 1


_EXIT_AFTER_YES = """
import os, sys, threading, time
from fr_pbd.store import Store
from tests.test_login_attacks import stub_verifier
real = Store.transaction
def slow_clear(store, *a, **k):
    if threading.current_thread().name == "fr-pbd-lockout-clear":
        time.sleep(float(sys.argv[3]))
    return real(store, *a, **k)
Store.transaction = slow_clear
v = stub_verifier(home, 1)
assert v.verify(b"frame", user="alice")
print("yes", flush=True)
if sys.argv[2] == "crash":
    os.kill(os.getpid(), 9)
"""


def test_process_exit_waits_for_the_clear(tmp_path):
    home = stub_home(tmp_path / "home")
    code = f"from pathlib import Path\nhome = Path({str(home)!r})\n" + _EXIT_AFTER_YES
    p = subprocess.run([sys.executable, "-c", code, "-", "exit", "0.5"], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert p.returncode == 0 and p.stdout == "yes\n", p.stderr[-2000:]
    assert failures(home, "alice") == 0


def test_a_crash_before_the_clear_leaves_the_count_one_higher_and_the_store_whole(tmp_path):
    home = stub_home(tmp_path / "home")
    code = f"from pathlib import Path\nhome = Path({str(home)!r})\n" + _EXIT_AFTER_YES
    seen = set()
    for delay in ("0.5", "0", "0.001", "0.002", "0.003"):
        before = failures(home, "alice")
        p = subprocess.run([sys.executable, "-c", code, "-", "crash", delay], capture_output=True, text=True,
                           cwd=ROOT, timeout=120)
        assert p.returncode == -signal.SIGKILL and p.stdout == "yes\n", p.stderr[-2000:]
        after = failures(home, "alice")  # the store opens and authenticates: never half-written
        assert after in (0, before + 1), (before, after)  # cleared, or the attempt stays counted; never less
        seen.add(after == 0)
    assert False in seen  # the 0.5 s clear was killed: counted


def test_threads_with_their_own_verifiers_race_and_compare_exactly_five(tmp_path, monkeypatch):
    home = stub_home(tmp_path / "home")
    looks = Looks(monkeypatch)
    verifiers = [stub_verifier(home, 99) for _ in range(10)]
    barrier = threading.Barrier(10)
    reasons = []

    def attempt(v):
        barrier.wait()
        reasons.append(v.verify(b"frame", user="alice").reason)

    threads = [threading.Thread(target=attempt, args=(v,)) for v in verifiers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert looks.compared == 5 and sorted(reasons) == ["locked"] * 5 + ["no_match"] * 5
    assert failures(home, "alice") == 5


def test_a_genuine_success_racing_impostors_never_lowers_their_count(tmp_path, monkeypatch):
    """Impostor threads and alice's own face at once: every impostor attempt compared stays counted."""
    home = stub_home(tmp_path / "home")
    looks = Looks(monkeypatch)
    impostors = [stub_verifier(home, 99) for _ in range(4)]
    alice = stub_verifier(home, 1)
    barrier = threading.Barrier(5)
    answers = {}

    def attempt(i, v):
        barrier.wait()
        outcome = v.verify(b"frame", user="alice")
        answers[i] = (bool(outcome), outcome.reason)

    threads = [threading.Thread(target=attempt, args=(i, v)) for i, v in enumerate(impostors + [alice])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    alice.settle()
    assert answers[4] == (True, "accepted")
    impostors_compared = sum(1 for i in range(4) if answers[i][1] == "no_match")
    assert looks.compared == impostors_compared + 1
    # the success clears only if no attempt was counted after its own; else every count stays
    assert failures(home, "alice") in (0, impostors_compared + 1)


def test_a_restored_copy_of_a_tpm_store_is_refused_by_the_next_pre_check(swtpm, monkeypatch, tmp_path):
    """With the TPM counter, a restored copy is stale: the cached claims are never served for it."""
    from fr_pbd.errors import StaleStoreError
    from fr_pbd.store.tpm import TpmKeyProvider
    from fr_pbd.template import Template
    from fr_pbd.verify import Verifier
    from tests.test_login_attacks import unit

    monkeypatch.setenv("FR_PBD_TPM", swtpm.transport)
    home = tmp_path / "home"
    store = Store.create(home, model_id=Verifier.default_model_id(), dim=128, key_provider=TpmKeyProvider())
    store.set_fallback(PIN)
    with store.transaction() as tx:
        tx.record_consent("alice", text_version="1", device_id="test", uid=account_uid("alice"))
        tx.add_templates("alice", [Template(unit(1), Verifier.default_model_id())])
    old = (home / "store.frpbd").read_bytes()
    impostor = stub_verifier(home, 99)
    for _ in range(5):
        assert not impostor.verify(b"frame", user="alice")
    assert (o := impostor.verify(b"frame", user="alice")).reason == "locked"
    (home / "store.frpbd").write_bytes(old)  # the copy from before the lockout
    looks = Looks(monkeypatch)
    with pytest.raises(StaleStoreError):
        impostor.verify(b"frame", user="alice")
    with pytest.raises(StaleStoreError):
        stub_verifier(home, 1).verify(b"frame", user="alice")
    assert looks.compared == 0
