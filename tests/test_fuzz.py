"""Fuzzing the inputs fr-pbd parses: store files, images, daemon requests.

Each parser may answer malformed input only with its typed error (store:
StoreError subclasses; images: ImageError; daemon request line: ProtocolError),
never with another exception, and never slowly (hypothesis ``deadline``: 500 ms, 2 s for
images, where every example takes under 5 ms on a loaded 2-core machine, so only a real
slowdown trips it, not a scheduler pause; under ``CI=true`` the examples are derandomized
and no local example database is read, see tests/conftest.py). Example
counts are fixed so the whole file stays within CI's time budget; the counts are
in the ``settings`` of each test; ``FR_PBD_FUZZ_SCALE=10`` multiplies them for a
deeper local run. Inputs that once found a bug are kept as ``@example``
regression cases.
"""

from __future__ import annotations

import json
import os
import struct
import time
from datetime import timedelta

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fr_pbd.capture.image import ImageError, decode_image
from fr_pbd.errors import StoreError
from fr_pbd.store import Store
from fr_pbd.store import _format as fmt
from fr_pbd.store.keys import DeviceFileKeyProvider
from fr_pbd.store.store import _open_bytes, _State
from fr_pbd.template import Template
from tests.conftest import missing

FAST = dict(deadline=timedelta(milliseconds=500), suppress_health_check=[HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
SCALE = max(1, int(os.environ.get("FR_PBD_FUZZ_SCALE", "1")))
DIM = 16
MODEL_ID = "fuzz-model"


# --------------------------------------------------------------------------------------
# mutations
# --------------------------------------------------------------------------------------
@st.composite
def mutations(draw, size: int, focus: int | None = None, max_ops: int = 8):
    """A list of edits (flip/set/insert/delete/truncate), positions biased to the first ``focus`` bytes."""
    ops = []
    for _ in range(draw(st.integers(1, max_ops))):
        kind = draw(st.sampled_from(["set", "flip", "insert", "delete", "truncate", "dup"]))
        hi = max(0, (focus if focus and draw(st.booleans()) else size) - 1)
        pos = draw(st.integers(0, hi))
        ops.append((kind, pos, draw(st.integers(0, 255)), draw(st.integers(1, 64))))
    return ops


def apply(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for kind, pos, val, n in ops:
        if not b:
            break
        pos = min(pos, len(b) - 1)
        if kind == "set":
            b[pos] = val
        elif kind == "flip":
            b[pos] ^= 1 << (val % 8)
        elif kind == "insert":
            b[pos:pos] = bytes([val]) * n
        elif kind == "delete":
            del b[pos:pos + n]
        elif kind == "truncate":
            del b[pos:]
        elif kind == "dup":
            b[pos:pos] = b[pos:pos + n]
    return bytes(b)


# --------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store_home(tmp_path_factory):
    """A small valid store: fallback, two users with consent and templates, a lockout."""
    from fr_pbd.store import LockoutState

    home = tmp_path_factory.mktemp("fuzz") / "home"
    store = Store.create(home, model_id=MODEL_ID, dim=DIM)
    store.set_fallback("fuzz-pin-1234")
    rng = np.random.default_rng(0)
    with store.transaction() as tx:
        for u in ("alice", "bob"):
            tx.record_consent(u, text_version="1", device_id="fuzz")
            tx.add_templates(u, [Template(rng.standard_normal(DIM), MODEL_ID) for _ in range(2)])
        tx.set_lockout(LockoutState(failures=3))
    return home


@pytest.fixture(scope="module")
def store_parts(store_home):
    """(file bytes, header bytes, header, data key, plaintext payload) of the valid store."""
    store = Store.open(store_home)
    data = (store_home / "store.frpbd").read_bytes()
    with store._exclusive() as (hbytes, header, dek, state):
        payload = state.encode()
    return data, hbytes, header, dek, payload


@pytest.fixture(scope="module")
def provider(store_home):
    return DeviceFileKeyProvider.default(store_home)


def _typed_store_errors_only(fn, *args):
    try:
        fn(*args)
    except StoreError:
        pass  # StoreIntegrityError, WrongKeyError, KeyProviderError ... all StoreError


def test_valid_store_parts_round_trip(store_parts, provider):
    data, hbytes, header, dek, payload = store_parts
    _, _, _, state = _open_bytes(data, provider)
    assert sorted(state.users) == ["alice", "bob"]
    assert _State.decode(payload, header).lockout.failures == 3


@settings(max_examples=400 * SCALE, **FAST)
@given(st.binary(max_size=4096))
@example(b"")
@example(fmt.MAGIC)
@example(fmt.MAGIC + struct.pack("<HH", 1, 0xFFFF))
def test_store_random_bytes(provider, blob):
    _typed_store_errors_only(_open_bytes, blob, provider)


@settings(max_examples=300 * SCALE, **FAST)
@given(st.data())
def test_store_mutated_file(store_parts, provider, data):
    """Mutations of a real store file, mostly in the header (the body is authenticated)."""
    raw, hbytes = store_parts[0], store_parts[1]
    ops = data.draw(mutations(len(raw), focus=len(hbytes) + 32))
    _typed_store_errors_only(_open_bytes, apply(raw, ops), provider)


def _meta_and_rest(payload: bytes) -> tuple[dict, bytes]:
    (mlen,) = struct.unpack_from("<I", payload, 4)
    return json.loads(payload[8:8 + mlen]), payload


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40) | st.sampled_from(["2026-02-30T00:00:00Z", "9999-12-31T23:59:59Z", "ab" * 16,
                                              "scrypt", "alice", "", " x"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _replace(obj, path, value):
    if not path:
        return value
    obj = json.loads(json.dumps(obj))
    cur = obj
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return obj


def _payload_with_meta(payload: bytes, meta: object) -> bytes:
    """Re-serialise ``meta`` in place of the valid one, keeping the binary section and the bucket size."""
    (mlen,) = struct.unpack_from("<I", payload, 4)
    head_len = 8 + mlen + (-(8 + mlen) % 16)
    m = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("ascii")
    head = fmt.PAYLOAD_MAGIC + struct.pack("<I", len(m)) + m
    head += b"\x00" * (-len(head) % 16)
    body = head + payload[head_len:]
    return body[:len(payload)] + b"\x00" * max(0, len(payload) - len(body))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@settings(max_examples=300 * SCALE, **FAST)
@given(st.data())
def test_store_payload_structure_behind_authentication(store_home, store_parts, provider, data):
    """The decoder after AES-GCM: a structurally mutated payload, re-encrypted with the real key.

    Only someone holding the key can produce these, so this is defence in depth:
    even then, the decoder raises StoreIntegrityError and nothing else.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    raw, hbytes, header, dek, payload = store_parts
    meta, _ = _meta_and_rest(payload)
    paths = list(_paths(meta))
    path = data.draw(st.sampled_from(paths))
    mutated = _replace(meta, path, data.draw(json_values))
    body = _payload_with_meta(payload, mutated)
    if data.draw(st.booleans()):
        body = apply(body, data.draw(mutations(len(body), focus=8 + len(json.dumps(mutated)) + 16, max_ops=3)))
        body = (body + bytes(len(payload)))[:len(payload)]  # keep the bucket size: get past the length check
    nonce = os.urandom(fmt.NONCE_LEN)
    blob = hbytes + nonce + AESGCM(dek).encrypt(nonce, body, hbytes)
    _typed_store_errors_only(_open_bytes, blob, provider)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # huge rotation entries: still refused
@settings(max_examples=200 * SCALE, **FAST)
@given(st.data())
def test_store_payload_bytes_behind_authentication(store_parts, data):
    """Byte-level mutations of the plaintext payload straight into the decoder."""
    _, _, header, _, payload = store_parts
    (mlen,) = struct.unpack_from("<I", payload, 4)
    body = apply(payload, data.draw(mutations(len(payload), focus=8 + mlen + 16 + DIM * DIM * 8)))
    _typed_store_errors_only(_State.decode, body, header)


def test_store_open_on_damaged_files(store_home, store_parts, tmp_path):
    """The whole Store.open path (permissions, size checks, lock) on a few damaged copies."""
    import shutil

    raw = store_parts[0]
    rng = np.random.default_rng(1)
    for i in range(20):
        home = tmp_path / f"h{i}"
        shutil.copytree(store_home, home)
        cut = apply(raw, [("set", int(rng.integers(0, len(raw))), int(rng.integers(0, 256)), 1),
                          ("truncate", int(rng.integers(1, len(raw))) if i % 2 else len(raw), 0, 1)])
        (home / "store.frpbd").write_bytes(cut)
        os.chmod(home / "store.frpbd", 0o600)
        with pytest.raises(StoreError):
            Store.open(home)


# --------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_seeds(faces_dir, data_dir):
    """Small real files: a JPEG, the same photo as PNG, and a JPEG with an EXIF orientation."""
    jpg = (faces_dir / "obama_small.jpg").read_bytes()
    ok, png = cv2.imencode(".png", cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)[::2, ::2])
    assert ok
    exif = (data_dir / "spoof" / "live_T1.jpg").read_bytes()
    return {"jpeg": jpg, "png": png.tobytes(), "exif": exif}


def _decode_typed_only(blob: bytes) -> None:
    try:
        img = decode_image(blob)
    except ImageError:
        return
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.flags.c_contiguous


IMG = dict(deadline=timedelta(seconds=2), suppress_health_check=FAST["suppress_health_check"])


def test_image_edge_cases(image_seeds):
    """Hand-made seeds: SOI only, SOI+EOI, a SOF claiming 65535x65535, a cut JPEG, PNG IHDR extremes."""
    jpg, png = image_seeds["jpeg"], image_seeds["png"]
    for blob in (b"\xff\xd8", b"\xff\xd8\xff\xd9", jpg[:2] + b"\xff\xc0\x00\x11\x08\xff\xff\xff\xff" + jpg[13:],
                 jpg[:len(jpg) // 2] + b"\xff\xd9",
                 png[:16] + struct.pack(">II", 2**31 - 1, 2**31 - 1) + png[24:],
                 png[:16] + struct.pack(">II", 0, 10) + png[24:]):
        _decode_typed_only(blob)


@settings(max_examples=150 * SCALE, **IMG)
@given(st.data())
def test_jpeg_mutations(image_seeds, data):
    seed = image_seeds["jpeg"]
    _decode_typed_only(apply(seed, data.draw(mutations(len(seed), focus=700))))


# Found by test_png_mutations: one byte of the first IDAT chunk's length field set, so the
# 44 kB file declares a chunk of up to 4 GB. OpenCV 5's PNG reader allocated that length
# before reading: 1.2-8.6 s and up to 4 GB of memory per decode, before the chunk walk.
PNG_CHUNK_LENGTH_BOMBS = {
    "first IDAT length 0xFF......": [("set", 33, 0xFF, 1)],
    "first IDAT length 0x74......": [("set", 33, 116, 1)],
    "fuzz-found (13 s)": [("set", 73, 116, 17), ("delete", 3099, 177, 36), ("dup", 34719, 251, 57),
                          ("set", 5025, 3, 49), ("set", 33, 253, 49), ("dup", 21611, 160, 54)],
}


@pytest.mark.parametrize("ops", PNG_CHUNK_LENGTH_BOMBS.values(), ids=PNG_CHUNK_LENGTH_BOMBS.keys())
def test_png_chunk_length_past_the_end_is_refused_before_opencv(image_seeds, monkeypatch, ops):
    def never(*_args, **_kwargs):
        raise AssertionError("cv2.imdecode was called on a PNG whose chunk runs past the end of the file")

    blob = apply(image_seeds["png"], ops)
    monkeypatch.setattr("fr_pbd.capture.image.cv2.imdecode", never)
    t0 = time.perf_counter()
    with pytest.raises(ImageError, match="truncated or corrupt .PNG chunk 1 declares"):
        decode_image(blob)
    assert time.perf_counter() - t0 < 0.1


@settings(max_examples=100 * SCALE, **IMG)
@given(st.data())
def test_png_mutations(image_seeds, data):
    png = image_seeds["png"]
    _decode_typed_only(apply(png, data.draw(mutations(len(png), focus=128))))


@settings(max_examples=150 * SCALE, **IMG)
@given(st.data())
def test_exif_mutations(image_seeds, data):
    """The hand-written EXIF orientation parser: mutations in the APP1 segment only."""
    seed = image_seeds["exif"]
    _decode_typed_only(apply(seed, data.draw(mutations(len(seed), focus=400))))


@settings(max_examples=200 * SCALE, **FAST)
@given(st.binary(max_size=2048))
def test_random_bytes_as_image(blob):
    _decode_typed_only(blob)


# --------------------------------------------------------------------------------------
# the daemon's request line
# --------------------------------------------------------------------------------------
def _parser():
    try:
        from fr_pbd.daemon import MAX_REQUEST, MAX_USER, ProtocolError, parse_request
    except ImportError as exc:  # CI: the parser must exist; elsewhere a partial checkout skips
        missing(f"fr_pbd.daemon request parser not importable: {exc}")
    return parse_request, ProtocolError, MAX_REQUEST, MAX_USER


request_lines = st.one_of(
    st.binary(max_size=400),
    st.builds(lambda u, tail: b"VERIFY " + u + tail, st.binary(max_size=300), st.sampled_from([b"\n", b"", b"\r\n"])),
    st.builds(lambda u: b"VERIFY " + u.encode("utf-8", "surrogatepass") + b"\n", st.text(max_size=140)),
)


@settings(max_examples=3000 * SCALE, deadline=FAST["deadline"])
@given(request_lines)
@example(b"VERIFY\n")
@example(b"VERIFY \n")
@example(b"VERIFY  alice\n")
@example(b"VERIFY alice\n\n")
@example(b"VERIFY " + b"a" * 300 + b"\n")
@example(b"VERIFY \xc3\xa9\n")
@example(b"verify alice\n")
def test_daemon_request_parser(line):
    parse_request, ProtocolError, max_request, max_user = _parser()
    try:
        user = parse_request(line)
    except ProtocolError:
        return
    # accepted: a single short LF-terminated ASCII line, VERIFY or VERIFY <user>
    assert line.endswith(b"\n") and len(line) <= max_request and line.count(b"\n") == 1
    assert line.startswith(b"VERIFY")
    if user is not None:
        assert line == b"VERIFY " + user.encode("ascii") + b"\n"
        assert 1 <= len(user) <= max_user and user == user.strip() and user.isprintable()
