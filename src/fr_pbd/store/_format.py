"""On-disk format of the store (header version 1, payload format 2): pure bytes <-> objects, parsed defensively.

Byte-by-byte description: ``docs/store-format.md``. Everything here is a pure
function of its inputs (no I/O, no keys), so the parsers can be fuzzed. Every
malformed input raises :class:`~fr_pbd.errors.StoreIntegrityError` (never an
``IndexError``, ``struct.error``, ``ValueError``...). Messages name the field,
never its content.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from fr_pbd.errors import StoreIntegrityError

MAGIC = b"FRPBDSTR"
FORMAT_VERSION = 1  # the header's version: its layout has not changed
#: The payload's ``format``: 2 adds accounts, per-user and fallback lockouts (docs/store-format.md, section 3).
PAYLOAD_FORMAT = 2
#: Payload formats a reader accepts: 1 is read as 2 (records.StoreState.decode); writes are always 2.
PAYLOAD_FORMATS = (1, 2)
AEAD_AES256GCM = 1
NONCE_LEN = 12
TAG_LEN = 16
STORE_ID_LEN = 16
KEY_ID_LEN = 16
MAX_HEADER_LEN = 4096
MIN_BUCKET = 64 * 1024
MAX_BUCKET = 2**34  # 16 GiB of payload: far above any gallery we write

PROVIDER_DEVICE_FILE = 1
PROVIDER_PASSPHRASE = 2
PROVIDER_TPM2 = 3
KNOWN_PROVIDERS = (PROVIDER_DEVICE_FILE, PROVIDER_PASSPHRASE, PROVIDER_TPM2)

KDF_SCRYPT = 1
SCRYPT_PARAMS_LEN = 1 + 1 + 4 + 4 + 16  # kdf id, log2(N), r, p, salt
# Minimums (OWASP password storage cheat sheet): N=2^17, r=8, p=1.
SCRYPT_MIN_LOG2_N = 17
SCRYPT_MIN_R = 8
SCRYPT_MIN_P = 1
# Maximums a reader accepts, so a planted header cannot make us allocate
# unbounded memory: 128 * r * N <= 1 GiB, p <= 16.
SCRYPT_MAX_LOG2_N = 20
SCRYPT_MAX_R = 32
SCRYPT_MAX_P = 16
SCRYPT_MAX_MEM = 2**30

WRAPPED_DEK_LEN = 40  # RFC 3394 AES key wrap of a 32-byte key

_MODEL_ID_RE = re.compile(r"[A-Za-z0-9._+\-]{1,64}")

PAYLOAD_MAGIC = b"FRPL"
MAX_META_LEN = 64 * 1024 * 1024
_ALIGN = 16


def _bad(what: str) -> StoreIntegrityError:
    return StoreIntegrityError(f"the store file is damaged or not an fr-pbd store ({what})")


def check_model_id(model_id: str) -> str:
    if not isinstance(model_id, str) or not _MODEL_ID_RE.fullmatch(model_id):
        raise ValueError("model id must be 1-64 characters of [A-Za-z0-9._+-]")
    return model_id


# --------------------------------------------------------------------------------------
# scrypt parameters (used by the passphrase key provider and the fallback credential)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScryptParams:
    log2_n: int
    r: int
    p: int
    salt: bytes = b""

    def acceptable(self) -> bool:
        """True iff at or above the minimums and within the reader's memory cap."""
        return (
            SCRYPT_MIN_LOG2_N <= self.log2_n <= SCRYPT_MAX_LOG2_N
            and SCRYPT_MIN_R <= self.r <= SCRYPT_MAX_R
            and SCRYPT_MIN_P <= self.p <= SCRYPT_MAX_P
            and 128 * self.r * (1 << self.log2_n) <= SCRYPT_MAX_MEM
            and len(self.salt) == 16
        )

    def encode(self) -> bytes:
        return struct.pack("<BBII16s", KDF_SCRYPT, self.log2_n, self.r, self.p, self.salt)

    @classmethod
    def decode(cls, raw: bytes) -> "ScryptParams":
        if len(raw) != SCRYPT_PARAMS_LEN:
            raise _bad("key-derivation parameters")
        kdf, log2_n, r, p, salt = struct.unpack("<BBII16s", raw)
        if kdf != KDF_SCRYPT:
            raise _bad("unknown key-derivation function")
        params = cls(log2_n, r, p, salt)
        if not params.acceptable():
            raise StoreIntegrityError(
                "the store header asks for key-derivation parameters outside the accepted range "
                "(weaker than the minimum, or too large); refusing to open it"
            )
        return params


# --------------------------------------------------------------------------------------
# TPM 2.0 provider parameters (docs/store-format.md, section 2.2; docs/tpm.md)
# --------------------------------------------------------------------------------------
TPM_PARAMS_VERSION = 1
TPM_FLAG_PCR_POLICY = 1
TPM_NV_FIRST = 0x01800000  # the owner range of NV indices (TCG "Registry of Reserved TPM 2.0 Handles")
TPM_NV_LAST = 0x01BFFFFF
TPM_AUTH_LEN = 32
TPM_MAX_NAME = 66  # TPM2B_NAME of a SHA-512 name
TPM_MAX_BLOB = 1024
_TPM_FIXED = struct.Struct("<BBHIIqH")  # version, flags, pcr bank, pcr mask, nv index, nv base, name length


@dataclass(frozen=True)
class TpmParams:
    """What the TPM provider keeps in the header: the sealed data key and the rollback counter.

    ``public``/``private`` are the marshalled TPM2B_PUBLIC / TPM2B_PRIVATE of the sealed
    object (the private part is encrypted by the TPM's storage root key and useless
    without that TPM); ``srk_name`` the name of the storage root key it was sealed under;
    ``nv_index``/``nv_auth``/``nv_base`` the NV counter (0: none yet) with the invariant
    ``counter == nv_base + generation`` after every committed write.
    """

    pcr_bank: int
    pcr_mask: int
    nv_index: int
    nv_auth: bytes
    nv_base: int
    srk_name: bytes
    public: bytes
    private: bytes

    @property
    def pcrs(self) -> tuple[int, ...]:
        return tuple(i for i in range(24) if self.pcr_mask >> i & 1)

    def encode(self) -> bytes:
        flags = TPM_FLAG_PCR_POLICY if self.pcr_mask else 0
        out = _TPM_FIXED.pack(TPM_PARAMS_VERSION, flags, self.pcr_bank, self.pcr_mask, self.nv_index,
                              self.nv_base, len(self.srk_name))
        return b"".join([out, self.srk_name, self.nv_auth, struct.pack("<H", len(self.public)), self.public,
                         struct.pack("<H", len(self.private)), self.private])

    @classmethod
    def decode(cls, raw: bytes) -> "TpmParams":
        r = _Reader(bytes(raw), 0, len(raw))
        version, flags, bank, mask, nv_index, nv_base, nlen = _TPM_FIXED.unpack(r.take(_TPM_FIXED.size, "TPM fields"))
        if version != TPM_PARAMS_VERSION or flags & ~TPM_FLAG_PCR_POLICY:
            raise _bad("TPM parameters version")
        if bool(flags) != bool(mask) or mask >> 24 or (mask and bank == 0):
            raise _bad("TPM PCR selection")
        if nv_index and not TPM_NV_FIRST <= nv_index <= TPM_NV_LAST:
            raise _bad("TPM counter index")
        if not 0 < nlen <= TPM_MAX_NAME:
            raise _bad("TPM storage key name")
        name = r.take(nlen, "TPM storage key name")
        nv_auth = r.take(TPM_AUTH_LEN, "TPM counter authorisation")
        blobs = []
        for what in ("TPM sealed public part", "TPM sealed private part"):
            n = r.u16(what)
            if not 0 < n <= TPM_MAX_BLOB:
                raise _bad(what)
            blobs.append(r.take(n, what))
        if r.pos != r.end:
            raise _bad("TPM parameters length")
        return cls(bank, mask, nv_index, nv_auth, nv_base, name, blobs[0], blobs[1])


# --------------------------------------------------------------------------------------
# header
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Header:
    store_id: bytes
    model_id: str
    provider_id: int
    provider_params: bytes
    key_id: bytes
    wrapped_dek: bytes

    def encode(self) -> bytes:
        mid = self.model_id.encode("ascii")
        body = b"".join(
            [
                struct.pack("<BB", AEAD_AES256GCM, 0),
                self.store_id,
                struct.pack("<B", len(mid)),
                mid,
                struct.pack("<BH", self.provider_id, len(self.provider_params)),
                self.provider_params,
                self.key_id,
                struct.pack("<H", len(self.wrapped_dek)),
                self.wrapped_dek,
            ]
        )
        total = len(MAGIC) + 4 + len(body)
        if total > MAX_HEADER_LEN:
            raise ValueError("header too long")
        return MAGIC + struct.pack("<HH", FORMAT_VERSION, total) + body


class _Reader:
    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytes, pos: int, end: int) -> None:
        self.buf, self.pos, self.end = buf, pos, end

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise _bad(f"{what} runs past the header")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(out)

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return struct.unpack("<H", self.take(2, what))[0]


def parse_header(data: bytes) -> tuple[Header, int]:
    """Parse the header at the start of ``data``; return it and its length ``H``.

    ``data[:H]`` is the AEAD associated data. Raises StoreIntegrityError on
    anything malformed, unknown or out of range.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("data must be bytes")
    data = bytes(data[:MAX_HEADER_LEN])
    if len(data) < len(MAGIC) + 4:
        raise _bad("too short")
    if data[: len(MAGIC)] != MAGIC:
        raise _bad("magic")
    version, hlen = struct.unpack_from("<HH", data, len(MAGIC))
    if version != FORMAT_VERSION:
        raise StoreIntegrityError(
            f"unsupported store format version {version} (this fr-pbd reads version {FORMAT_VERSION})"
        )
    if hlen > len(data) or hlen > MAX_HEADER_LEN or hlen < len(MAGIC) + 4:
        raise _bad("header length")
    r = _Reader(data, len(MAGIC) + 4, hlen)
    aead = r.u8("cipher")
    flags = r.u8("flags")
    if aead != AEAD_AES256GCM:
        raise _bad("unknown cipher")
    if flags != 0:
        raise _bad("flags")
    store_id = r.take(STORE_ID_LEN, "store id")
    mlen = r.u8("model id length")
    mid_raw = r.take(mlen, "model id")
    try:
        model_id = check_model_id(mid_raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise _bad("model id") from None
    provider_id = r.u8("key provider")
    if provider_id not in KNOWN_PROVIDERS:
        raise _bad("unknown key provider")
    plen = r.u16("key provider parameters length")
    params = r.take(plen, "key provider parameters")
    if provider_id == PROVIDER_DEVICE_FILE and plen != 0:
        raise _bad("key provider parameters")
    if provider_id == PROVIDER_PASSPHRASE:
        ScryptParams.decode(params)  # validates, incl. the minimums
    if provider_id == PROVIDER_TPM2:
        TpmParams.decode(params)
    key_id = r.take(KEY_ID_LEN, "key id")
    wlen = r.u16("wrapped key length")
    if wlen != WRAPPED_DEK_LEN:
        raise _bad("wrapped key length")
    wrapped = r.take(wlen, "wrapped key")
    if r.pos != hlen:
        raise _bad("header length")
    return Header(store_id, model_id, provider_id, params, key_id, wrapped), hlen


def wrapped_dek_offset(header_len: int) -> int:
    """Offset of the wrapped data key inside a header of length ``header_len``."""
    return header_len - WRAPPED_DEK_LEN


def bucket_size(n: int) -> int:
    """Padded payload size for ``n`` bytes: the next power of two, at least 64 KiB."""
    size = MIN_BUCKET
    while size < n:
        size *= 2
    if size > MAX_BUCKET:
        raise ValueError("store payload too large")
    return size


def check_body_length(body_len: int) -> None:
    """``body_len`` = file size - H: nonce + ciphertext + tag; the payload must be a bucket."""
    ct = body_len - NONCE_LEN - TAG_LEN
    if ct < MIN_BUCKET or ct > MAX_BUCKET or (ct & (ct - 1)) != 0:
        raise _bad("truncated or padded to an impossible size")


# --------------------------------------------------------------------------------------
# payload (plaintext, after authentication)
# --------------------------------------------------------------------------------------
_META_KEYS_V1 = {"format", "model_id", "store_id", "dim", "generation", "users", "fallback", "lockout"}
_META_KEYS = _META_KEYS_V1 | {"fallback_lockout"}
_USER_KEYS_V1 = {"name", "templates", "consent"}
_USER_KEYS = _USER_KEYS_V1 | {"uid", "lockout"}
_CONSENT_KEYS = {"time", "text_version", "device_id"}
_FALLBACK_KEYS_V1 = {"kdf", "log2_n", "r", "p", "salt", "hash"}
_FALLBACK_KEYS = _FALLBACK_KEYS_V1 | {"min_len"}
_LOCKOUT_KEYS = {"failures", "locked_until"}
MAX_UID = 2**32 - 2  # (uid_t)-1 is "no id"
_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_HEX_RE = re.compile(r"[0-9a-f]*")
MAX_DIM = 4096
MAX_TEXT = 128


def check_text(value: object, what: str, max_len: int = MAX_TEXT) -> str:
    """A printable, non-empty, stripped string of at most ``max_len`` characters."""
    if (
        not isinstance(value, str)
        or not value
        or len(value) > max_len
        or not value.isprintable()
        or value.strip() != value
    ):
        raise ValueError(f"{what} must be 1-{max_len} printable characters without surrounding spaces")
    return value


def encode_payload(meta: dict, rotation: np.ndarray, templates: np.ndarray) -> bytes:
    """Serialise, then zero-pad to the bucket size. ``meta`` must already be valid."""
    m = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
    head = PAYLOAD_MAGIC + struct.pack("<I", len(m)) + m
    head += b"\x00" * (-len(head) % _ALIGN)
    rot = np.ascontiguousarray(rotation, dtype="<f8").tobytes()
    tpl = np.ascontiguousarray(templates, dtype="<f4").tobytes()
    used = len(head) + len(rot) + len(tpl)
    size = bucket_size(used)
    out = bytearray(size)
    out[: len(head)] = head
    out[len(head) : len(head) + len(rot)] = rot
    out[len(head) + len(rot) : used] = tpl
    return bytes(out)


def _req(cond: bool, what: str) -> None:
    if not cond:
        raise _bad(what)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _hex(v: object, nbytes: int, what: str) -> bytes:
    _req(isinstance(v, str) and len(v) == 2 * nbytes and _HEX_RE.fullmatch(v) is not None, what)
    return bytes.fromhex(v)  # type: ignore[arg-type]


TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# The usual case, "YYYY-MM-DDTHH:MM:SSZ" in ASCII digits: fields by position, checked by datetime() itself,
# which refuses exactly what strptime refuses for such a string (tests/test_store_format.py compares the two
# over every value of every field). Anything else (other digits than ASCII) takes strptime, as before.
_TIME_ASCII_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def parse_time(v: object, what: str) -> datetime:
    """A stored time (UTC, whole seconds) as an aware datetime; StoreIntegrityError naming ``what`` if malformed."""
    if type(v) is str and len(v) == 20 and v.isascii() and _TIME_ASCII_RE.fullmatch(v) is not None:
        try:
            return datetime(int(v[0:4]), int(v[5:7]), int(v[8:10]), int(v[11:13]), int(v[14:16]), int(v[17:19]),
                            tzinfo=timezone.utc)
        except ValueError:
            raise _bad(what) from None
    _req(isinstance(v, str) and _TIME_RE.fullmatch(v) is not None, what)
    try:
        return datetime.strptime(v, TIME_FORMAT).replace(tzinfo=timezone.utc)  # type: ignore[arg-type]
    except ValueError:
        raise _bad(what) from None


def _time(v: object, what: str) -> str:
    parse_time(v, what)
    return v  # type: ignore[return-value]


def _check_lockout(lo: object, what: str) -> None:
    _req(isinstance(lo, dict) and set(lo) == _LOCKOUT_KEYS, what)
    _req(_is_int(lo["failures"]) and 0 <= lo["failures"] < 2**31, what)  # type: ignore[index]
    if lo["locked_until"] is not None:  # type: ignore[index]
        _time(lo["locked_until"], what)  # type: ignore[index]


def _no_constants(_name: str):
    raise ValueError("non-finite number")


def decode_payload(data: bytes) -> tuple[dict, np.ndarray, np.ndarray]:
    """Parse an authenticated payload into (validated meta, rotation (D,D) f64, templates (N,D) f32)."""
    try:
        return _decode_payload(bytes(data))
    except StoreIntegrityError:
        raise
    except (ValueError, TypeError, KeyError, RecursionError, OverflowError, MemoryError, struct.error):
        raise _bad("payload") from None


def _decode_payload(data: bytes) -> tuple[dict, np.ndarray, np.ndarray]:
    _req(len(data) >= 8 and data[:4] == PAYLOAD_MAGIC, "payload magic")
    (mlen,) = struct.unpack_from("<I", data, 4)
    _req(mlen <= MAX_META_LEN and 8 + mlen <= len(data), "metadata length")
    raw = data[8 : 8 + mlen]
    _req(raw.isascii(), "metadata encoding")
    meta = json.loads(raw.decode("ascii"), parse_constant=_no_constants)
    _req(isinstance(meta, dict) and "format" in meta, "metadata keys")
    version = meta["format"]
    _req(_is_int(version) and version in PAYLOAD_FORMATS, "payload version")
    v1 = version == 1
    _req(set(meta) == (_META_KEYS_V1 if v1 else _META_KEYS), "metadata keys")
    _req(isinstance(meta["model_id"], str) and _MODEL_ID_RE.fullmatch(meta["model_id"]) is not None, "model id")
    _hex(meta["store_id"], STORE_ID_LEN, "store id")
    dim = meta["dim"]
    _req(_is_int(dim) and 1 <= dim <= MAX_DIM, "dimension")
    _req(_is_int(meta["generation"]) and 0 <= meta["generation"] < 2**63, "generation")
    users = meta["users"]
    _req(isinstance(users, list), "users")
    names = []
    total = 0
    for u in users:
        _req(isinstance(u, dict) and set(u) == (_USER_KEYS_V1 if v1 else _USER_KEYS), "user record")
        try:
            check_text(u["name"], "user")
        except ValueError:
            raise _bad("user name") from None
        names.append(u["name"])
        n = u["templates"]
        _req(_is_int(n) and 0 <= n <= 2**31, "template count")
        total += n
        c = u["consent"]
        _req(isinstance(c, dict) and set(c) == _CONSENT_KEYS, "consent record")
        _time(c["time"], "consent time")
        try:
            check_text(c["text_version"], "consent text version")
            check_text(c["device_id"], "device id")
        except ValueError:
            raise _bad("consent record") from None
        if not v1:
            uid = u["uid"]
            _req(uid is None or (_is_int(uid) and 0 <= uid <= MAX_UID), "user account")
            _check_lockout(u["lockout"], "user lockout")
    _req(names == sorted(names) and len(set(names)) == len(names), "user order")
    fb = meta["fallback"]
    if fb is not None:
        _req(isinstance(fb, dict) and set(fb) == (_FALLBACK_KEYS_V1 if v1 else _FALLBACK_KEYS), "fallback record")
        _req(fb["kdf"] == "scrypt", "fallback kdf")
        _req(all(_is_int(fb[k]) for k in ("log2_n", "r", "p")), "fallback parameters")
        salt = _hex(fb["salt"], 16, "fallback salt")
        _hex(fb["hash"], 32, "fallback hash")
        _req(ScryptParams(fb["log2_n"], fb["r"], fb["p"], salt).acceptable(), "fallback parameters below minimum")
        if not v1:
            _req(_is_int(fb["min_len"]) and 0 <= fb["min_len"] <= MAX_TEXT, "fallback minimum length")
    _check_lockout(meta["lockout"], "lockout record")
    if not v1:
        _check_lockout(meta["fallback_lockout"], "fallback lockout record")
    # binary section
    off = 8 + mlen
    pad = -off % _ALIGN
    _req(off + pad <= len(data) and not any(data[off : off + pad]), "metadata padding")
    off += pad
    rot_len = dim * dim * 8
    tpl_len = total * dim * 4
    end = off + rot_len + tpl_len
    _req(end <= len(data), "binary section length")
    rotation = np.frombuffer(data, dtype="<f8", count=dim * dim, offset=off).reshape(dim, dim).astype(np.float64)
    templates = (
        np.frombuffer(data, dtype="<f4", count=total * dim, offset=off + rot_len).reshape(total, dim).astype(np.float32)
    )
    _req(data[end:] == bytes(len(data) - end), "padding")
    _req(bool(np.isfinite(rotation).all()) and bool(np.isfinite(templates).all()), "non-finite numbers")
    # the rotation must be orthonormal, the templates unit length
    _req(math.isclose(float(np.abs(rotation @ rotation.T - np.eye(dim)).max()), 0.0, abs_tol=1e-9), "rotation")
    if total:
        norms = np.einsum("ij,ij->i", templates, templates, dtype=np.float64)
        _req(float(np.abs(norms - 1.0).max()) < 1e-3, "template norms")
    return meta, rotation, templates
