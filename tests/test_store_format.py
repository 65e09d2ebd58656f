"""The store's parsers on hostile input: only typed errors, ever (hypothesis)."""

from __future__ import annotations

import json
import os
import struct
from datetime import datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fr_pbd.errors import StoreIntegrityError
from fr_pbd.store import DeviceFileKeyProvider, Store
from fr_pbd.store import _format as fmt
from fr_pbd.store import store as store_mod
from fr_pbd.store.envelope import open_bytes

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _header(**kw) -> fmt.Header:
    base = dict(
        store_id=bytes(range(16)),
        model_id="dlib-resnet-v1",
        provider_id=fmt.PROVIDER_DEVICE_FILE,
        provider_params=b"",
        key_id=b"k" * 16,
        wrapped_dek=b"w" * 40,
    )
    base.update(kw)
    return fmt.Header(**base)


def test_header_round_trip():
    for h in (
        _header(),
        _header(provider_id=fmt.PROVIDER_PASSPHRASE, provider_params=fmt.ScryptParams(17, 8, 1, b"s" * 16).encode()),
    ):
        raw = h.encode()
        parsed, n = fmt.parse_header(raw + b"tail")
        assert parsed == h and n == len(raw)
        assert raw[:8] == b"FRPBDSTR" and struct.unpack_from("<HH", raw, 8) == (1, len(raw))


def test_documented_header_offsets():
    raw = _header().encode()
    assert raw[12] == fmt.AEAD_AES256GCM and raw[13] == 0
    assert raw[14:30] == bytes(range(16))
    assert raw[30] == len("dlib-resnet-v1") and raw[31:45] == b"dlib-resnet-v1"
    o = 45
    assert raw[o] == 1 and raw[o + 1 : o + 3] == b"\x00\x00"
    assert raw[o + 3 : o + 19] == b"k" * 16
    assert raw[o + 19 : o + 21] == b"\x28\x00" and raw[o + 21 :] == b"w" * 40
    assert len(raw) == 31 + 14 + 1 + 2 + 0 + 16 + 2 + 40


@SETTINGS
@given(st.binary(max_size=600))
def test_random_bytes_header(data):
    try:
        fmt.parse_header(data)
    except StoreIntegrityError:
        pass


@SETTINGS
@given(st.binary(max_size=300), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_random_header_after_valid_magic(tail, version, hlen):
    data = fmt.MAGIC + struct.pack("<HH", version, hlen) + tail
    try:
        fmt.parse_header(data)
    except StoreIntegrityError:
        pass


@SETTINGS
@given(st.data())
def test_mutated_valid_header(data):
    raw = bytearray(_header().encode())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        fmt.parse_header(bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw))
    except StoreIntegrityError:
        pass


def test_bucket_sizes():
    assert fmt.bucket_size(0) == 65536 and fmt.bucket_size(65536) == 65536
    assert fmt.bucket_size(65537) == 131072
    for bad in (0, 65535 + 28, 65536 + 28 + 1, 3 * 65536 + 28):
        with pytest.raises(StoreIntegrityError):
            fmt.check_body_length(bad)
    fmt.check_body_length(65536 + 28)


def _valid_payload(dim=4, users=(("a", 2), ("b", 1))) -> tuple[dict, bytes]:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    n = sum(c for _, c in users)
    t = rng.standard_normal((n, dim))
    t = (t / np.linalg.norm(t, axis=1, keepdims=True)).astype(np.float32)
    meta = {
        "format": 1, "model_id": "m", "store_id": "00" * 16, "dim": dim, "generation": 3,
        "users": [{"name": u, "templates": c, "consent": {"time": "2025-01-02T03:04:05Z",
                   "text_version": "1", "device_id": "d"}} for u, c in users],
        "fallback": None, "lockout": {"failures": 0, "locked_until": None},
    }
    return meta, fmt.encode_payload(meta, q, t)


def test_payload_round_trip():
    meta, raw = _valid_payload()
    assert len(raw) == 65536
    m2, rot, tpl = fmt.decode_payload(raw)
    assert m2 == meta and rot.shape == (4, 4) and tpl.shape == (3, 4)


@SETTINGS
@given(st.binary(max_size=2000))
def test_random_bytes_payload(data):
    for d in (data, fmt.PAYLOAD_MAGIC + struct.pack("<I", len(data)) + data):
        try:
            fmt.decode_payload(d)
        except StoreIntegrityError:
            pass


@SETTINGS
@given(st.data())
def test_mutated_valid_payload(data):
    meta, raw = _valid_payload()
    raw = bytearray(raw)
    mlen = struct.unpack_from("<I", raw, 4)[0]
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, 8 + mlen + 200))  # metadata and the start of the binary section
        raw[i] = data.draw(st.integers(0, 255))
    try:
        fmt.decode_payload(bytes(raw))
    except StoreIntegrityError:
        pass


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=5),
    max_leaves=25,
)


@SETTINGS
@given(st.data())
def test_hostile_metadata(data):
    meta, _ = _valid_payload()
    key = data.draw(st.sampled_from(sorted(meta) + ["users.0", "users.0.consent", "lockout", "fallback"]))
    value = data.draw(_json)
    parts = key.split(".")
    tgt = meta
    for p in parts[:-1]:
        tgt = tgt[int(p)] if isinstance(tgt, list) else tgt[p]
    last = parts[-1]
    if isinstance(tgt, list):
        tgt[int(last)] = value
    else:
        tgt[last] = value
    m = json.dumps(meta).encode("ascii")
    raw = fmt.PAYLOAD_MAGIC + struct.pack("<I", len(m)) + m
    raw += b"\x00" * (65536 - len(raw))
    try:
        fmt.decode_payload(raw)
    except StoreIntegrityError:
        pass


def test_deeply_nested_json_is_a_typed_error():
    m = b"[" * 100000 + b"]" * 100000
    raw = fmt.PAYLOAD_MAGIC + struct.pack("<I", len(m)) + m
    with pytest.raises(StoreIntegrityError):
        fmt.decode_payload(raw + bytes(-len(raw) % 65536))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=70000))
def test_random_store_file_opens_only_with_typed_errors(tmp_path_factory, data):
    home = tmp_path_factory.getbasetemp() / "rand-home"
    if not (home / store_mod.STORE_FILE).exists():
        os.makedirs(home, mode=0o700, exist_ok=True)
        os.chmod(home.parent, 0o700)
        Store.create(home, model_id="m", dim=4)
    prov = DeviceFileKeyProvider.default(home)
    for d in (data, fmt.MAGIC + data):
        with pytest.raises(StoreIntegrityError):
            open_bytes(d, prov)


def test_payload_format_2_round_trip():
    meta, _ = _valid_payload()
    meta["format"] = 2
    meta["fallback_lockout"] = {"failures": 2, "locked_until": None}
    for u, uid in zip(meta["users"], (1000, None)):
        u["uid"] = uid
        u["lockout"] = {"failures": 5, "locked_until": "2030-01-01T00:00:00Z"}
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    t = rng.standard_normal((3, 4))
    t = (t / np.linalg.norm(t, axis=1, keepdims=True)).astype(np.float32)
    raw = fmt.encode_payload(meta, q, t)
    assert fmt.decode_payload(raw)[0] == meta
    for bad in ({"uid": -1}, {"uid": 2**32 - 1}, {"uid": True}, {"uid": "0"},
                {"lockout": {"failures": -1, "locked_until": None}}, {"lockout": None}):
        m = json.loads(json.dumps(meta))
        m["users"][0].update(bad)
        with pytest.raises(StoreIntegrityError):
            fmt.decode_payload(fmt.encode_payload(m, q, t))
    for key in ("fallback_lockout",):  # a format-2 payload without a format-2 key, a format-1 one with it
        m = json.loads(json.dumps(meta))
        del m[key]
        with pytest.raises(StoreIntegrityError):
            fmt.decode_payload(fmt.encode_payload(m, q, t))
    m, _ = _valid_payload()
    m["fallback_lockout"] = {"failures": 0, "locked_until": None}
    with pytest.raises(StoreIntegrityError):
        fmt.decode_payload(fmt.encode_payload(m, q, t))
    m, _ = _valid_payload()
    m["format"] = 3
    with pytest.raises(StoreIntegrityError, match="payload version"):
        fmt.decode_payload(fmt.encode_payload(m, q, t))


def test_a_format_1_store_opens_and_is_written_as_format_2(tmp_path):
    """A store written before accounts and per-user lockouts: opens, binds login names, upgrades on write."""
    import pwd

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from tests.helpers import absent_account

    nowhere = absent_account("nowhere")  # a name that is no account on this machine (checked)

    from fr_pbd.store import LockoutState
    from fr_pbd.store.fallback import hash_fallback

    me = pwd.getpwuid(os.getuid()).pw_name
    home = tmp_path / "home"
    os.chmod(tmp_path, 0o700)
    store = Store.create(home, model_id="m", dim=4)
    with store._exclusive() as (hbytes, header, dek, state):
        rot = state.rotation
        dek = bytes(dek)  # the store overwrites its own buffer when the block ends
    fb = hash_fallback("246813")
    del fb["min_len"]
    meta = {
        "format": 1, "model_id": "m", "store_id": header.store_id.hex(), "dim": 4, "generation": 9,
        "users": [{"name": n, "templates": 1, "consent": {"time": "2025-01-02T03:04:05Z", "text_version": "1",
                   "device_id": "d"}} for n in sorted([me, nowhere])],
        "fallback": fb, "lockout": {"failures": 2, "locked_until": None},
    }
    t = np.eye(4, dtype=np.float32)[:2]
    nonce = os.urandom(fmt.NONCE_LEN)
    payload = fmt.encode_payload(meta, rot, t)
    (home / "store.frpbd").write_bytes(hbytes + nonce + AESGCM(dek).encrypt(nonce, payload, hbytes))
    view = Store.open(home).read()
    assert view.uid_of(me) == os.getuid() and view.uid_of(nowhere) is None
    assert view.lockout == LockoutState(2) and view.fallback_lockout == LockoutState()
    assert view.fallback_min_len == 0 and view.check_fallback("246813")
    with store.transaction() as tx:
        tx.set_lockout(LockoutState())
    with store._exclusive() as (_h, _hd, _d, state):
        assert fmt.decode_payload(state.encode())[0]["format"] == 2
    assert Store.open(home).read().uid_of(me) == os.getuid()


# --------------------------------------------------------------------------------------
# stored times: the fast parser (strptime was slow on the answer's path) refuses exactly what strptime refused
# --------------------------------------------------------------------------------------
def _strptime_reference(v: object):
    """The parser before the fast one: the shape regex, then strptime; None where it refused."""
    import re
    from datetime import timezone

    if not isinstance(v, str) or re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", v) is None:
        return None
    try:
        return datetime.strptime(v, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _fast(v: object):
    try:
        return fmt.parse_time(v, "time")
    except StoreIntegrityError:
        return None


def _same(v: object) -> None:
    want, got = _strptime_reference(v), _fast(v)
    assert want == got, v
    if got is not None:
        assert got.tzinfo is not None and got.utcoffset().total_seconds() == 0


def test_every_value_of_every_time_field_is_accepted_or_refused_as_strptime_did():
    base = ["2024", "02", "29", "12", "30", "45"]
    spans = [(0, 4), (5, 7), (8, 10), (11, 13), (14, 16), (17, 19)]
    for i, (a, b) in enumerate(spans):
        for n in range(10 ** (b - a) if b - a == 2 else 0):  # every 2-digit value of the field
            parts = list(base)
            parts[i] = f"{n:02d}"
            _same("{}-{}-{}T{}:{}:{}Z".format(*parts))
    for year in ("0000", "0001", "1900", "1970", "2000", "2023", "2024", "2100", "9999"):  # leap years, month ends
        for month in range(0, 14):
            for day in range(0, 33):
                _same(f"{year}-{month:02d}-{day:02d}T23:59:59Z")
    for bad in ("", "2024-01-01T00:00:00", "2024-01-01 00:00:00Z", "2024-01-01T00:00:00z", " 2024-01-01T00:00:00Z",
                "2024-01-01T00:00:00Z\n", "2024-1-01T00:00:00Z", "+024-01-01T00:00:00Z", "2024-01-01T00:00:0Z",
                "\u0662\u0660\u0662\u0664-01-01T00:00:00Z", "2024-\u0660\u0661-01T00:00:00Z", None, 2024, b"x"):
        _same(bad)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="0123456789-TZ:\u0660\u0662\u0669 x", min_size=18, max_size=22))
def test_random_time_strings_are_accepted_or_refused_as_strptime_did(v):
    _same(v)


@settings(max_examples=500, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)))
def test_written_times_read_back(t):
    s = t.strftime("%Y-%m-%dT%H:%M:%SZ")
    if len(s) == 20:
        _same(s)
        assert fmt.parse_time(s, "time").replace(tzinfo=None) == t.replace(microsecond=0)
