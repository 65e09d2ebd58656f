"""Encrypted store: round trip, tamper/truncation detection, keys, permissions, concurrency, lockout."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from fr_pbd import fileio
from fr_pbd.errors import (
    ConsentError,
    KeyProviderError,
    StoreError,
    StoreIntegrityError,
    StorePermissionError,
    WrongKeyError,
)
from fr_pbd.store import (
    LOCK_FILE,
    STORE_FILE,
    DeviceFileKeyProvider,
    LockoutState,
    PassphraseKeyProvider,
    Store,
    erase,
)
from fr_pbd.store import _format as fmt
from fr_pbd.store import keys as keys_mod
from fr_pbd.store import store as store_mod
from fr_pbd.store.envelope import open_bytes
from fr_pbd.store.protection import protect_rows, random_rotation
from fr_pbd.template import Template

MODEL = "test-model-v1"
SRC = Path(__file__).resolve().parents[1] / "src"


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def templates(rng: np.random.Generator, n: int, d: int, model: str = MODEL) -> list[Template]:
    return [Template(v, model) for v in unit_rows(rng, n, d)]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def enrol(store: Store, user: str, tpls: list[Template]) -> None:
    with store.transaction() as tx:
        tx.record_consent(user, text_version="consent-v1", device_id="test-device")
        tx.add_templates(user, tpls)


def copy_home(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small populated store (dim 8, 3 users) and the raw templates, built once (scrypt is slow)."""
    root = tmp_path_factory.mktemp("base")
    os.chmod(root, 0o700)
    home = root / "home"
    rng = np.random.default_rng(1)
    st = Store.create(home, model_id=MODEL, dim=8)
    st.set_fallback("246813")
    raw = {}
    for u, n in (("alice", 3), ("bob", 1), ("carol", 5)):
        raw[u] = templates(rng, n, 8)
        enrol(st, u, raw[u])
    return home, raw


@pytest.fixture
def home(base, tmp_path):
    os.chmod(tmp_path, 0o700)
    return copy_home(base[0], tmp_path / "home")


# ------------------------------------------------------------------------------ basics
def test_round_trip(home, base):
    raw = base[1]
    view = Store.open(home).read()
    assert view.users == ("alice", "bob", "carol")
    assert [view.template_count(u) for u in view.users] == [3, 1, 5]
    assert view.model_id == MODEL and view.dim == 8
    rec = view.consent("alice")
    assert rec.user == "alice" and rec.text_version == "consent-v1" and rec.device_id == "test-device"
    assert rec.time.tzinfo is not None
    assert view.has_fallback
    assert view.lockout == LockoutState()
    m = view.matcher()
    assert m.users == ("alice", "bob", "carol")
    for u, tpls in raw.items():  # a user's templates are matched as one: their normalised sum
        c = np.sum([t.vector.astype(np.float64) for t in tpls], axis=0)
        probe = Template((c / np.linalg.norm(c)).astype(np.float32), MODEL)
        assert m.matches(probe, 0.999, user=u)
        assert m.matches(probe, 0.999)
        assert all(m.matches(probe, 0.999, user=o) is False for o in raw if o != u)


def test_create_layout_and_modes(tmp_path):
    os.chmod(tmp_path, 0o700)
    h = tmp_path / "h"
    Store.create(h, model_id=MODEL, dim=4)
    assert stat.S_IMODE(os.stat(h).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(h / STORE_FILE).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(h / LOCK_FILE).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(h / "keys").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(h / "keys" / "kek").st_mode) == 0o600
    assert sorted(os.listdir(h)) == sorted([STORE_FILE, LOCK_FILE, "keys"])


def test_missing_home_store_or_key_are_typed_errors(home, tmp_path):
    with pytest.raises(StoreError):
        Store.open(tmp_path / "nowhere")
    with pytest.raises(StoreError):
        erase(tmp_path / "nowhere")
    os.rename(home / "keys" / "kek", tmp_path / "kek-aside")
    with pytest.raises(KeyProviderError):
        Store.open(home)
    os.rename(tmp_path / "kek-aside", home / "keys" / "kek")
    os.rename(home / STORE_FILE, tmp_path / "store-aside")
    with pytest.raises(StoreError):
        Store.open(home)


def test_create_never_replaces(home):
    before = sha(home / STORE_FILE)
    with pytest.raises(StoreError):
        Store.create(home, model_id=MODEL, dim=8)
    (home / STORE_FILE).write_bytes(b"garbage")  # even a damaged one
    os.chmod(home / STORE_FILE, 0o600)
    with pytest.raises(StoreError):
        Store.create(home, model_id=MODEL, dim=8)
    assert (home / STORE_FILE).read_bytes() == b"garbage"
    del before


def test_padding_hides_enrolment_size(tmp_path):
    os.chmod(tmp_path, 0o700)
    h = tmp_path / "h"
    st = Store.create(h, model_id=MODEL, dim=128)
    empty = os.path.getsize(h / STORE_FILE)
    st.set_fallback("135724")
    rng = np.random.default_rng(0)
    enrol(st, "a", templates(rng, 5, 128))
    enrol(st, "b", templates(rng, 5, 128))
    assert os.path.getsize(h / STORE_FILE) == empty  # same bucket
    payload = empty - fmt.NONCE_LEN - fmt.TAG_LEN
    hdr = fmt.parse_header((h / STORE_FILE).read_bytes())[1]
    assert ((payload - hdr) & (payload - hdr - 1)) == 0 and payload - hdr >= fmt.MIN_BUCKET


def test_consent_and_fallback_required(tmp_path):
    os.chmod(tmp_path, 0o700)
    st = Store.create(tmp_path / "h", model_id=MODEL, dim=8)
    rng = np.random.default_rng(0)
    with pytest.raises(ConsentError):  # no fallback yet
        with st.transaction() as tx:
            tx.record_consent("a", text_version="1", device_id="d")
            tx.add_templates("a", templates(rng, 1, 8))
    assert st.read().users == ()  # the failed transaction wrote nothing
    st.set_fallback("9999-pin")
    with pytest.raises(ConsentError):  # no consent record
        st.add_templates("a", templates(rng, 1, 8))
    st.record_consent("a", text_version="1", device_id="d")
    with pytest.raises(StoreError):  # another model
        st.add_templates("a", templates(rng, 1, 8, model="other-model"))
    with pytest.raises(StoreError):  # another dimension
        st.add_templates("a", templates(rng, 1, 16))
    assert st.add_templates("a", templates(rng, 2, 8)) == 2
    with pytest.raises(StoreError):  # probe from another model
        st.read().matcher().matches(templates(rng, 1, 8, model="other-model")[0], 0.5)


def test_fallback_check(home):
    st = Store.open(home)
    assert st.check_fallback("246813")
    assert not st.check_fallback("246814")
    assert not st.check_fallback("")
    with pytest.raises(ValueError):
        st.set_fallback("12")
    st.set_fallback("new-passphrase")
    assert st.check_fallback("new-passphrase") and not st.check_fallback("246813")


def test_remove_user_atomic(home):
    st = Store.open(home)
    gen = st.read().generation
    assert st.remove_user("alice")
    v = st.read()
    assert v.users == ("bob", "carol") and v.consent("alice") is None and v.template_count("alice") == 0
    assert v.generation == gen + 1
    before = sha(home / STORE_FILE)
    assert not st.remove_user("nobody")
    assert sha(home / STORE_FILE) == before  # nothing changed, nothing written


def test_transaction_rollback_and_closed(home):
    st = Store.open(home)
    before = sha(home / STORE_FILE)
    with pytest.raises(RuntimeError):
        with st.transaction() as tx:
            tx.remove_user("alice")
            raise RuntimeError("boom")
    assert sha(home / STORE_FILE) == before
    with st.transaction() as tx:
        pass
    with pytest.raises(StoreError):
        tx.remove_user("bob")
    assert sha(home / STORE_FILE) == before


def test_lockout_persists_across_reopen(home):
    st = Store.open(home)
    until = datetime.now(timezone.utc) + timedelta(seconds=30, microseconds=1)
    with st.transaction() as tx:
        tx.set_lockout(LockoutState(failures=5, locked_until=until))
    v = Store.open(home).read()  # "restart"
    assert v.lockout.failures == 5
    assert v.lockout.locked_until >= until  # rounded up, never shortened
    assert v.lockout.is_locked()
    assert not v.lockout.is_locked(until + timedelta(seconds=2))
    with Store.open(home).transaction() as tx:
        tx.reset_lockout()
    assert Store.open(home).read().lockout == LockoutState()


def test_no_secrets_in_reprs(home, base):
    st = Store.open(home)
    v = st.read()
    text = " ".join(repr(x) for x in (st, v, v.matcher(), PassphraseKeyProvider("hunter22!"), st._provider))
    assert "hunter22" not in text
    for t in base[1]["alice"]:
        assert str(float(t.vector[0]))[:6] not in text
    import pickle

    for obj in (st, v, v.matcher()):
        with pytest.raises(TypeError):
            pickle.dumps(obj)


# ------------------------------------------------------------------------------ tamper
def _flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def test_every_header_nonce_tag_bit_flip_detected_on_disk(home):
    """Each flipped bit of header, nonce and tag, plus 600 body bits, through the real file path."""
    path = home / STORE_FILE
    orig = path.read_bytes()
    _, hlen = fmt.parse_header(orig)
    bits = list(range((hlen + fmt.NONCE_LEN) * 8)) + list(range((len(orig) - fmt.TAG_LEN) * 8, len(orig) * 8))
    rng = np.random.default_rng(7)
    bits += rng.integers((hlen + fmt.NONCE_LEN) * 8, (len(orig) - fmt.TAG_LEN) * 8, size=600).tolist()
    for bit in bits:
        bad = _flip(orig, bit)
        path.write_bytes(bad)
        with pytest.raises(StoreIntegrityError):
            Store.open(home)
        with pytest.raises(StoreIntegrityError):
            with Store(home, DeviceFileKeyProvider.default(home), store_mod._CONSTRUCT).transaction() as tx:
                tx.reset_lockout()
        assert path.read_bytes() == bad, "a store that failed to open was modified"
    path.write_bytes(orig)
    Store.open(home)


@pytest.mark.slow
def test_a_bit_flip_in_every_byte_detected(home):
    """One flipped bit in *every* byte of the file (in memory, same code path as open)."""
    orig = (home / STORE_FILE).read_bytes()
    prov = DeviceFileKeyProvider.default(home)
    open_bytes(orig, prov)  # sanity: the original opens
    for i in range(len(orig)):
        with pytest.raises(StoreIntegrityError):
            open_bytes(_flip(orig, 8 * i + (i * 5) % 8), prov)


def test_every_truncation_detected(home):
    path = home / STORE_FILE
    orig = path.read_bytes()
    prov = DeviceFileKeyProvider.default(home)
    for n in range(len(orig)):  # every prefix, in memory
        with pytest.raises(StoreIntegrityError):
            open_bytes(orig[:n], prov)
    for n in (0, 1, 12, 100, len(orig) // 2, len(orig) - 17, len(orig) - 1):  # and on disk
        path.write_bytes(orig[:n])
        with pytest.raises(StoreIntegrityError):
            Store.open(home)
        assert path.read_bytes() == orig[:n]
    path.write_bytes(orig + b"\x00")  # an appended byte too
    with pytest.raises(StoreIntegrityError):
        Store.open(home)


def test_other_homes_key_fails(base, tmp_path):
    os.chmod(tmp_path, 0o700)
    a = copy_home(base[0], tmp_path / "a")
    b = tmp_path / "b"
    Store.create(b, model_id=MODEL, dim=8)
    before = sha(a / STORE_FILE)
    with pytest.raises(WrongKeyError):
        Store.open(a, key_provider=DeviceFileKeyProvider.default(b))
    shutil.copy2(b / "keys" / "kek", a / "keys" / "kek")  # b's key file planted in a
    with pytest.raises(StoreIntegrityError):
        Store.open(a)
    assert sha(a / STORE_FILE) == before


def test_header_swap_between_stores_fails(tmp_path):
    os.chmod(tmp_path, 0o700)
    shared_key = DeviceFileKeyProvider(tmp_path / "k" / "kek")  # same KEK: only the header differs
    a, b = tmp_path / "a", tmp_path / "b"
    Store.create(a, model_id=MODEL, dim=8, key_provider=shared_key)
    Store.create(b, model_id=MODEL, dim=8, key_provider=shared_key)
    da, db = (a / STORE_FILE).read_bytes(), (b / STORE_FILE).read_bytes()
    ha, hb = fmt.parse_header(da)[1], fmt.parse_header(db)[1]
    assert ha == hb
    (a / STORE_FILE).write_bytes(db[:hb] + da[ha:])  # b's header on a's body
    with pytest.raises(StoreIntegrityError):
        Store.open(a, key_provider=shared_key)
    (a / STORE_FILE).write_bytes(da[:ha] + db[hb:])  # and a's header on b's body
    with pytest.raises(StoreIntegrityError):
        Store.open(a, key_provider=shared_key)
    # A *whole* file copied between two stores that share a KEK is a valid store (documented);
    # its store id says which one it is. With per-home keys (the default) it does not open at all:
    c, d = tmp_path / "c", tmp_path / "d"
    Store.create(c, model_id=MODEL, dim=8)
    Store.create(d, model_id=MODEL, dim=8)
    dc, dd = (c / STORE_FILE).read_bytes(), (d / STORE_FILE).read_bytes()
    hc = fmt.parse_header(dc)[1]
    (c / STORE_FILE).write_bytes(dd[: fmt.parse_header(dd)[1]] + dc[hc:])
    with pytest.raises(StoreIntegrityError):
        Store.open(c)
    (c / STORE_FILE).write_bytes(dd)
    with pytest.raises(StoreIntegrityError):
        Store.open(c)


def test_passphrase_provider(tmp_path):
    os.chmod(tmp_path, 0o700)
    h = tmp_path / "h"
    Store.create(h, model_id=MODEL, dim=8, key_provider=PassphraseKeyProvider("correct horse"))
    assert not (h / "keys").exists()
    before = sha(h / STORE_FILE)
    with pytest.raises(WrongKeyError):
        Store.open(h, key_provider=PassphraseKeyProvider("wrong horse"))
    with pytest.raises(KeyProviderError):  # WrongKeyError is both
        Store.open(h, key_provider=PassphraseKeyProvider("wrong horse"))
    with pytest.raises(WrongKeyError):
        Store.open(h)  # device key where a passphrase is needed
    assert sha(h / STORE_FILE) == before
    assert Store.open(h, key_provider=PassphraseKeyProvider("correct horse")).read().users == ()
    with pytest.raises(ValueError):
        PassphraseKeyProvider("short")
    # the header carries the KDF parameters; the salt is random per store
    hdr, _ = fmt.parse_header((h / STORE_FILE).read_bytes())
    p = fmt.ScryptParams.decode(hdr.provider_params)
    assert (p.log2_n, p.r, p.p) == (17, 8, 1)


@pytest.mark.parametrize("field,value", [("log2_n", 16), ("r", 7), ("p", 0), ("log2_n", 30)])
def test_reader_refuses_weak_or_huge_kdf_params(tmp_path, field, value, monkeypatch):
    os.chmod(tmp_path, 0o700)
    h = tmp_path / "h"
    Store.create(h, model_id=MODEL, dim=8, key_provider=PassphraseKeyProvider("correct horse"))
    data = (h / STORE_FILE).read_bytes()
    hdr, hlen = fmt.parse_header(data)
    p = fmt.ScryptParams.decode(hdr.provider_params)
    weak = fmt.ScryptParams(**{**p.__dict__, field: value})
    start = data.index(hdr.provider_params)
    (h / STORE_FILE).write_bytes(data[:start] + weak.encode() + data[start + len(hdr.provider_params) :])

    def no_derive(*a, **k):  # the refusal must come before any key derivation
        raise AssertionError("derived a key from refused parameters")

    monkeypatch.setattr(keys_mod, "scrypt_derive", no_derive)
    with pytest.raises(StoreIntegrityError):
        Store.open(h, key_provider=PassphraseKeyProvider("correct horse"))


# ------------------------------------------------------------------------------ no plaintext
def test_store_file_holds_no_plaintext_template(tmp_path):
    os.chmod(tmp_path, 0o700)
    h = tmp_path / "h"
    st = Store.create(h, model_id=MODEL, dim=128)
    st.set_fallback("1111-pin")
    rng = np.random.default_rng(3)
    raw = {u: templates(rng, 4, 128) for u in ("u1", "u2", "u3")}
    for u, t in raw.items():
        enrol(st, u, t)
    data = (h / STORE_FILE).read_bytes()
    state = open_bytes(data, DeviceFileKeyProvider.default(h))[3]
    vecs = [t.vector for ts in raw.values() for t in ts]
    vecs += [state.users[u].templates[i] for u in raw for i in range(4)]  # the protected ones too
    for v in vecs:
        for dtype in ("<f4", "<f8", ">f4"):
            b = np.asarray(v, dtype=dtype).tobytes()
            assert b not in data
            for k in range(0, len(b) - 16, 16 * (len(b) // 128)):  # 4-float windows
                assert b[k : k + 16] not in data
    assert b'"u1"' not in data and b"consent-v1" not in data  # metadata is encrypted too


# ------------------------------------------------------------------------------ permissions
@pytest.mark.parametrize("target,mode", [
    ("store", 0o640), ("store", 0o604), ("store", 0o620),
    ("kek", 0o640), ("kek", 0o604), ("keys", 0o750), ("keys", 0o705),
    ("home", 0o750), ("home", 0o701), ("home", 0o770),
])
def test_refuses_group_or_other_access(home, target, mode):
    path = {"store": home / STORE_FILE, "kek": home / "keys" / "kek", "keys": home / "keys", "home": home}[target]
    before = sha(home / STORE_FILE)
    os.chmod(path, mode)
    with pytest.raises(StorePermissionError):
        Store.open(home)
    with pytest.raises(StorePermissionError):
        Store.open(home)  # still refused, nothing "fixed" silently
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    os.chmod(path, 0o700 if path.is_dir() else 0o600)
    assert sha(home / STORE_FILE) == before
    Store.open(home)


def test_refuses_symlinked_store(home, tmp_path):
    real = tmp_path / "elsewhere"
    shutil.move(home / STORE_FILE, real)
    os.symlink(real, home / STORE_FILE)
    with pytest.raises(StorePermissionError):
        Store.open(home)


def test_files_written_private_even_with_open_umask(tmp_path):
    os.chmod(tmp_path, 0o700)
    old = os.umask(0)
    try:
        st = Store.create(tmp_path / "h", model_id=MODEL, dim=4)
        st.rotate_key()
    finally:
        os.umask(old)
    for p in (tmp_path / "h" / STORE_FILE, tmp_path / "h" / "keys" / "kek"):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600


# ------------------------------------------------------------------------------ rotation / renewal
def _decisions(store: Store, probes: list[Template], thresholds: np.ndarray, users) -> np.ndarray:
    m = store.read().matcher()
    return np.array([[m.matches(p, t, user=u) for p in probes for t in thresholds] for u in users])


def test_rotate_and_renew_preserve_every_decision(tmp_path):
    os.chmod(tmp_path, 0o700)
    h = tmp_path / "h"
    rng = np.random.default_rng(11)
    d = 32
    st = Store.create(h, model_id=MODEL, dim=d)
    st.set_fallback("0000-pin")
    raw = {f"u{i}": unit_rows(rng, 3, d) for i in range(8)}
    for u, v in raw.items():
        enrol(st, u, [Template(x, MODEL) for x in v])
    # probes: noisy copies of enrolled templates (genuine) and random ones (impostors)
    base_vecs = np.concatenate(list(raw.values()))
    noisy = base_vecs[rng.integers(0, len(base_vecs), 12)] + 0.3 * rng.standard_normal((12, d))
    pv = np.concatenate([noisy, rng.standard_normal((12, d))])
    probes = [Template(x, MODEL) for x in pv]
    # reference decisions on unprotected templates; thresholds well clear of every score
    cent = {u: v.sum(axis=0) / np.linalg.norm(v.sum(axis=0)) for u, v in raw.items()}  # the matcher's fusion
    scores = np.array([[float(p.vector @ cent[u]) for p in probes] for u in raw])
    grid = np.linspace(-0.5, 0.99, 200)
    thr = np.array([t for t in grid if np.abs(scores - t).min() > 1e-5])
    assert len(thr) > 100
    ref = np.array([[s >= t for s in row for t in thr] for row in scores])
    users = list(raw)
    assert (_decisions(st, probes, thr, users) == ref).all()
    assert ref.any() and not ref.all()
    old_state = open_bytes((h / STORE_FILE).read_bytes(), DeviceFileKeyProvider.default(h))[3]
    old_key = (h / "keys" / "kek").read_bytes()
    st.rotate_key()
    assert (h / "keys" / "kek").read_bytes() != old_key
    assert not (h / "keys" / "kek.next").exists()
    assert (_decisions(st, probes, thr, users) == ref).all()
    st.renew()
    assert (_decisions(st, probes, thr, users) == ref).all()
    new_state = open_bytes((h / STORE_FILE).read_bytes(), DeviceFileKeyProvider.default(h))[3]
    assert new_state.store_id != old_state.store_id
    # unlinkability: a protected template leaked before renewal no longer resembles its renewed version
    for u in users:
        c = np.abs(np.einsum("ij,ij->i", old_state.users[u].templates, new_state.users[u].templates))
        assert c.max() < 0.8
    st.rotate_key(PassphraseKeyProvider("a long passphrase"))
    assert not (h / "keys").exists()  # the old key file was destroyed
    st2 = Store.open(h, key_provider=PassphraseKeyProvider("a long passphrase"))
    assert (_decisions(st2, probes, thr, users) == ref).all()
    assert st2.check_fallback("0000-pin")


def test_rotation_interrupted_after_store_write_recovers(home, monkeypatch):
    st = Store.open(home)
    old_key = (home / "keys" / "kek").read_bytes()

    def crash(self):
        raise OSError("power cut")

    monkeypatch.setattr(keys_mod._StagedDeviceKey, "commit_rotation", crash)
    with pytest.raises(OSError):
        st.rotate_key()
    monkeypatch.undo()
    assert (home / "keys" / "kek.next").exists()
    assert (home / "keys" / "kek").read_bytes() == old_key
    assert Store.open(home).read().users == ("alice", "bob", "carol")  # opens with the staged key
    with Store.open(home).transaction():  # the next writer finishes the rotation
        pass
    assert not (home / "keys" / "kek.next").exists()
    assert (home / "keys" / "kek").read_bytes() != old_key
    Store.open(home)


def test_rotation_interrupted_before_store_write_keeps_old_key(home, monkeypatch):
    st = Store.open(home)
    before = sha(home / STORE_FILE)

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(fileio, "atomic_write", crash)
    with pytest.raises(OSError):
        st.rotate_key()
    monkeypatch.undo()
    assert not (home / "keys" / "kek.next").exists()
    assert sha(home / STORE_FILE) == before
    assert Store.open(home).read().template_count("carol") == 5


def test_withdrawal_interrupted_after_store_write_recovers_without_the_user(home, monkeypatch):
    old_copy = (home / STORE_FILE).read_bytes()

    def crash(self):
        raise OSError("power cut")

    monkeypatch.setattr(keys_mod._StagedDeviceKey, "commit_rotation", crash)
    with pytest.raises(OSError):
        Store.open(home).remove_user("bob")
    monkeypatch.undo()
    assert Store.open(home).read().users == ("alice", "carol")  # opens with the staged key
    with Store.open(home).transaction():  # the next writer finishes the swap
        pass
    assert not (home / "keys" / "kek.next").exists()
    (home / STORE_FILE).write_bytes(old_copy)
    with pytest.raises(StoreIntegrityError):  # the copy from before the withdrawal is dead
        Store.open(home)


def test_withdrawal_interrupted_before_store_write_changes_nothing(home, monkeypatch):
    before = sha(home / STORE_FILE)

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(fileio, "atomic_write", crash)
    with pytest.raises(OSError):
        Store.open(home).remove_user("bob")
    monkeypatch.undo()
    assert sha(home / STORE_FILE) == before and not (home / "keys" / "kek.next").exists()
    assert "bob" in Store.open(home).read().users


def test_per_user_and_fallback_lockouts_persist(home):
    until = datetime.now(timezone.utc) + timedelta(seconds=30)
    st = Store.open(home)
    with st.transaction() as tx:
        tx.set_lockout(LockoutState(failures=5, locked_until=until), "alice")
        tx.set_lockout(LockoutState(failures=2), "nobody")  # unknown user: no-op
        tx.set_fallback_lockout(LockoutState(failures=3))
    v = Store.open(home).read()
    assert v.lockout_of("alice").failures == 5 and v.lockout_of("alice").is_locked()
    assert v.lockout_of("bob") == LockoutState() and v.lockout == LockoutState()
    assert v.locked_users() == frozenset({"alice"})
    assert v.fallback_lockout == LockoutState(failures=3)
    with st.transaction() as tx:  # renewing consent keeps templates and lockout
        tx.record_consent("alice", text_version="consent-v1", device_id="test-device", uid=1000)
    v = Store.open(home).read()
    assert v.template_count("alice") == 3 and v.lockout_of("alice").failures == 5 and v.uid_of("alice") == 1000
    assert st.fallback_attempt("246813") == "accepted"
    v = Store.open(home).read()
    assert v.fallback_lockout == LockoutState() and v.lockout_of("alice") == LockoutState()


def test_lockout_policy():
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    s = LockoutState()
    for n in range(1, 5):
        s = s.after_failure(now)
        assert s == LockoutState(n) and not s.is_locked(now)
    s = s.after_failure(now)
    assert s.failures == 5 and s.retry_after(now) == 30
    assert s.after_failure(now).retry_after(now) == 60
    assert LockoutState(40).after_failure(now).retry_after(now) == 24 * 3600


# ------------------------------------------------------------------------------ erase
def test_erase_crypto_shreds(home):
    erase(home)
    assert os.listdir(home) == []


def test_erase_refuses_a_store_it_cannot_open(home, tmp_path):
    other = tmp_path / "other"
    Store.create(other, model_id=MODEL, dim=4)
    before = sha(home / STORE_FILE)
    with pytest.raises(StoreIntegrityError):
        erase(home, key_provider=DeviceFileKeyProvider.default(other))
    assert sha(home / STORE_FILE) == before
    assert (home / "keys" / "kek").exists() and (other / "keys" / "kek").exists()


def test_interrupted_erase_is_finished_and_store_dead(home, monkeypatch):
    def crash(self):
        raise OSError("power cut")

    monkeypatch.setattr(DeviceFileKeyProvider, "destroy", crash)
    with pytest.raises(OSError):
        erase(home)
    monkeypatch.undo()
    with pytest.raises(StoreIntegrityError):  # wrapped key already zeroed: nothing to recover
        Store.open(home)
    erase(home)
    assert os.listdir(home) == []


# ------------------------------------------------------------------------------ concurrency
_WORKER = textwrap.dedent(
    """
    import sys, time, numpy as np
    from pathlib import Path
    from fr_pbd.store import Store
    from fr_pbd.template import Template
    home, user, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    rng = np.random.default_rng(abs(hash(user)) % 2**32)
    tpls = [Template(v, "test-model-v1") for v in rng.standard_normal((2, 8))]
    st = Store.open(home)
    while not go.exists():
        time.sleep(0.005)
    with st.transaction() as tx:
        tx.record_consent(user, text_version="consent-v1", device_id="proc")
        time.sleep(0.3)  # widen the read-modify-write window
        tx.add_templates(user, tpls)
    print("ok")
    """
)


def test_two_processes_enrolling_concurrently_both_persist(home, tmp_path):
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(home), u, str(go)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for u in ("proc-user-1", "proc-user-2", "proc-user-3")
    ]
    time.sleep(0.5)
    go.touch()
    t0 = time.perf_counter()
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    assert time.perf_counter() - t0 >= 0.85  # the three transactions really were serialised
    v = Store.open(home).read()
    assert v.users == ("alice", "bob", "carol", "proc-user-1", "proc-user-2", "proc-user-3")
    assert all(v.template_count(f"proc-user-{i}") == 2 for i in (1, 2, 3))
    assert v.generation >= 3


def test_phase_separation_no_capture_import():
    code = "import sys, fr_pbd.store, fr_pbd.match; assert not [m for m in sys.modules if m.startswith('fr_pbd.capture')]"
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(SRC)}, check=True)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=30, deadline=None)
@given(d=st.sampled_from([2, 3, 16, 128]), seed=st.integers(0, 2**32 - 1))
def test_rotation_is_orthonormal_and_preserves_cosine(d, seed):
    r = random_rotation(d)
    assert np.abs(r @ r.T - np.eye(d)).max() < 1e-12
    rng = np.random.default_rng(seed)
    a, b = unit_rows(rng, 8, d), unit_rows(rng, 8, d)
    pa, pb = protect_rows(a, r), protect_rows(b, r)
    np.testing.assert_allclose(pa @ pb.T, a.astype(np.float64) @ b.T.astype(np.float64), atol=1e-6)
    assert np.abs(pa - a).max() > 0.05 or d <= 3  # it does move the vectors


def test_rotations_differ_between_stores():
    r1, r2 = random_rotation(128), random_rotation(128)
    assert np.abs(r1 - r2).max() > 0.1
