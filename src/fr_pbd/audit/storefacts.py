"""An independent reader of the store, for the audit.

The audit must not trust the code it audits: this module parses the header
byte by byte (docs/store-format.md), unwraps the data key and decrypts the
payload with ``cryptography`` directly, and reads the metadata JSON without
fr-pbd's strict validation, so a store that fr-pbd itself would refuse (say,
templates without a consent record, written by a vendor's modified build) is
still inspected and reported instead of hiding behind an exception.
It reads only; it never writes.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

MAGIC = b"FRPBDSTR"
AEAD_NAMES = {1: "AES-256-GCM"}
PROVIDER_NAMES = {1: "device key file", 2: "passphrase (scrypt)", 3: "TPM 2.0 (sealed data key)"}
KEYFILE_MAGIC = b"FRPBDKEK"
NONCE_LEN, TAG_LEN = 12, 16


@dataclass
class StoreFacts:
    path: Path
    size: int = 0
    data: bytes = field(default=b"", repr=False)
    header_ok: bool = False
    problems: list[str] = field(default_factory=list)
    version: int | None = None
    header_len: int | None = None
    aead_id: int | None = None
    flags: int | None = None
    model_id: str | None = None
    provider_id: int | None = None
    kdf: dict[str, Any] | None = None
    wrapped_len: int | None = None
    wrapped: bytes = field(default=b"", repr=False)
    provider_params: bytes = field(default=b"", repr=False)
    key_id: bytes = field(default=b"", repr=False)
    key_file_bits: int | None = None
    #: fr-pbd key files (keys/kek, keys/kek.next) beside a store whose header names another provider (C4.key)
    superseded_key_files: list[str] = field(default_factory=list)
    #: key material, in memory only, for the key checks (C4.key); never reported
    kek: bytes = field(default=b"", repr=False)
    dek: bytes = field(default=b"", repr=False)
    nonce: bytes = field(default=b"", repr=False)
    decrypted: bool = False
    decrypt_error: str | None = None
    meta: dict[str, Any] | None = None

    @property
    def aead_name(self) -> str:
        return AEAD_NAMES.get(self.aead_id or -1, f"unknown AEAD id {self.aead_id}")

    @property
    def provider_name(self) -> str:
        return PROVIDER_NAMES.get(self.provider_id or -1, f"unknown provider id {self.provider_id}")


def _parse_header(f: StoreFacts) -> None:
    d = f.data
    try:
        if d[:8] != MAGIC:
            f.problems.append("no fr-pbd store magic at offset 0")
            return
        f.version, f.header_len = struct.unpack_from("<HH", d, 8)
        f.aead_id, f.flags = d[12], d[13]
        pos = 30
        mlen = d[pos]
        f.model_id = d[pos + 1: pos + 1 + mlen].decode("ascii", "replace")
        pos += 1 + mlen
        f.provider_id = d[pos]
        (plen,) = struct.unpack_from("<H", d, pos + 1)
        params = d[pos + 3: pos + 3 + plen]
        pos += 3 + plen
        if f.provider_id == 2 and len(params) == 26:
            kdf_id, log2_n, r, p = struct.unpack_from("<BBII", params, 0)
            f.kdf = {"kdf": "scrypt" if kdf_id == 1 else f"id {kdf_id}", "log2_n": log2_n, "r": r, "p": p,
                     "salt": params[10:26]}
        f.provider_params = params
        f.key_id = d[pos: pos + 16]
        pos += 16  # key id
        (f.wrapped_len,) = struct.unpack_from("<H", d, pos)
        f.wrapped = d[pos + 2: pos + 2 + f.wrapped_len]
        if pos + 2 + f.wrapped_len != f.header_len:
            f.problems.append("header length field does not match the parsed header")
            return
        f.header_ok = True
    except (IndexError, struct.error):
        f.problems.append("truncated header")


def _kek(home: Path, f: StoreFacts, passphrase: str | None) -> bytes | None:
    if f.provider_id == 1:
        raw = (home / "keys" / "kek").read_bytes()
        if len(raw) != 44 or raw[:8] != KEYFILE_MAGIC:
            f.decrypt_error = "the key file is not an fr-pbd key file"
            return None
        f.key_file_bits = 8 * (len(raw) - 12)
        return raw[12:]
    if f.provider_id == 2:
        if passphrase is None or f.kdf is None:
            f.decrypt_error = "the store is protected by a passphrase; give it to the audit to check the contents"
            return None
        import unicodedata

        kdf = Scrypt(salt=f.kdf["salt"], length=32, n=1 << f.kdf["log2_n"], r=f.kdf["r"], p=f.kdf["p"])
        return kdf.derive(unicodedata.normalize("NFC", passphrase).encode())
    if f.provider_id == 3:
        return None  # no key-encryption key outside the TPM: read_store asks the TPM for the data key
    f.decrypt_error = f"unknown key provider {f.provider_id}"
    return None


def _is_key_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == KEYFILE_MAGIC
    except OSError:
        return False


def _tpm_unseal(home: Path, f: StoreFacts) -> bytes | None:
    """The data key unsealed by the TPM (only the TPM can); the payload is then decrypted here, independently."""
    from fr_pbd.errors import FrPbdError
    from fr_pbd.store.keys import WrappedKey
    from fr_pbd.store.tpm import TpmKeyProvider

    try:
        return TpmKeyProvider.for_home(home).unwrap(WrappedKey(3, f.provider_params, f.key_id, f.wrapped))
    except FrPbdError as exc:
        f.decrypt_error = f"the TPM did not unseal the data key: {exc}"
        return None


def read_store(home: str | os.PathLike[str], passphrase: str | None = None) -> StoreFacts:
    """Parse and, if the key is at hand, decrypt the store in ``home``; problems are recorded, not raised."""
    home = Path(home)
    f = StoreFacts(path=home / "store.frpbd")
    try:
        f.data = f.path.read_bytes()
    except OSError as exc:
        f.problems.append(f"cannot read {f.path}: {exc.strerror or exc}")
        return f
    f.size = len(f.data)
    _parse_header(f)
    if not f.header_ok:
        return f
    if f.provider_id != 1:
        f.superseded_key_files = [f"keys/{n}" for n in ("kek", "kek.next") if _is_key_file(home / "keys" / n)]
    try:
        kek = _kek(home, f, passphrase)
    except OSError as exc:
        f.decrypt_error = f"cannot read the key: {exc.strerror or exc}"
        return f
    if kek is None and f.provider_id != 3:
        return f
    f.kek = kek or b""
    f.nonce = f.data[(f.header_len or 0): (f.header_len or 0) + NONCE_LEN]
    try:
        dek = aes_key_unwrap(kek, f.wrapped) if kek is not None else _tpm_unseal(home, f)
        if dek is None:
            return f
        f.dek = dek
        hlen = f.header_len or 0
        payload = AESGCM(dek).decrypt(f.data[hlen: hlen + NONCE_LEN], f.data[hlen + NONCE_LEN:], f.data[:hlen])
    except (InvalidUnwrap, InvalidTag, ValueError):
        f.decrypt_error = "the store does not authenticate with its key (wrong key, tampered or truncated)"
        return f
    f.decrypted = True
    try:
        if payload[:4] != b"FRPL":
            raise ValueError("payload magic")
        (mlen,) = struct.unpack_from("<I", payload, 4)
        f.meta = json.loads(payload[8: 8 + mlen].decode("utf-8"))
        if not isinstance(f.meta, dict):
            raise ValueError("metadata is not an object")
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        f.meta = None
        f.decrypt_error = f"decrypted payload is not readable metadata ({exc})"
    return f
