"""Planted files for the adversarial corpus: templates in every encoding, scores in every spelling, weak keys.

Each function returns the bytes a dishonest product could keep on disk (the
vectors are random unit vectors: test data, not anyone's face). The corpus
plants them in a correct fr-pbd home and expects C3.plaintext-templates (or
C3.logs, or C4.key) to fail with the file and offset named.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import io
import json
import lzma
import pickle
import sqlite3
import struct
import zlib

import numpy as np


def unit(seed: int = 7, dim: int = 128) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim)
    return v / np.linalg.norm(v)


def _sqlite(rows: bool) -> bytes:
    con = sqlite3.connect(":memory:")
    if rows:  # one row per component, as REAL
        con.execute("CREATE TABLE emb (user TEXT, i INTEGER, v REAL)")
        con.executemany("INSERT INTO emb VALUES (?, ?, ?)", [("obama", i, float(x)) for i, x in enumerate(unit())])
    else:
        con.execute("CREATE TABLE faces (user TEXT, template BLOB)")
        con.execute("INSERT INTO faces VALUES (?, ?)", ("obama", unit().astype("<f4").tobytes()))
    con.commit()
    data = con.serialize()
    con.close()
    return data


def _npz() -> bytes:
    b = io.BytesIO()
    np.savez_compressed(b, obama=np.stack([unit(1), unit(2)]).astype(np.float32))
    return b.getvalue()


def _int8(t: np.ndarray) -> bytes:
    return b"FACE" + struct.pack("<H", t.size) + np.round(t / np.abs(t).max() * 127).astype(np.int8).tobytes()


#: name -> (relative path in the home, bytes): one template encoding each (issue 12, item 3)
def _hexdump(data: bytes) -> bytes:
    """``hexdump -C``'s layout: offset, 16 bytes in spaced hex, the ASCII column."""
    lines = []
    for i in range(0, len(data), 16):
        row = data[i:i + 16]
        hexes = " ".join(f"{b:02x}" for b in row)
        lines.append(f"{i:08x}  {hexes:<47}  |{''.join(chr(b) if 32 <= b < 127 else '.' for b in row)}|")
    return ("\n".join(lines) + "\n").encode()


TEMPLATE_PLANTS = {
    # the blind corners of issue 22 item 6: plain templates in base85, base32 and a spaced hex dump
    "base85": ("cache/t.b85", lambda: base64.b85encode(unit().astype("<f4").tobytes())),
    "ascii85": ("cache/t.a85", lambda: base64.a85encode(unit().astype("<f4").tobytes(), adobe=True)),
    "base32": ("cache/t.b32", lambda: base64.b32encode(unit().astype("<f4").tobytes())),
    "hex-dump-spaced": ("cache/t.hex", lambda: _hexdump(unit().astype("<f4").tobytes())),
    "float32": ("cache/probe.bin", lambda: unit().astype("<f4").tobytes()),
    "float16": ("cache/face.f16", lambda: unit().astype("<f2").tobytes()),
    "float64-big-endian": ("cache/face.f64", lambda: unit().astype(">f8").tobytes()),
    "float32-times-100": ("cache/scaled.bin", lambda: (unit() * 100).astype("<f4").tobytes()),
    "int8-quantised": ("models/obama.q8", lambda: _int8(unit())),
    "uint8-quantised": ("models/obama.u8", lambda: np.round((unit() / np.abs(unit()).max() + 1) * 127.5)
                        .astype(np.uint8).tobytes()),
    "base64-of-float32": ("state/face.txt", lambda: base64.b64encode(unit().astype("<f4").tobytes())),
    "hex-of-float32": ("state/face.hex", lambda: unit().astype("<f4").tobytes().hex().encode()),
    "base64-in-json": ("state/user.json", lambda: json.dumps(
        {"user": "obama", "blob": base64.b64encode(unit().astype("<f4").tobytes()).decode()}).encode()),
    "json-list": ("models/obama.dat", lambda: json.dumps(
        [{"time": 1700000000, "label": "Initial model", "id": 0, "data": [unit().round(8).tolist()]}]).encode()),
    "json-with-keys": ("models/obama.json", lambda: json.dumps(
        {f"d{i:03d}": round(float(x), 6) for i, x in enumerate(unit())}).encode()),
    "integer-json": ("models/obama.ints", lambda: json.dumps([int(x * 10000) for x in unit()]).encode()),
    "csv-decimal-commas": ("export/obama.csv", lambda: ";".join(f"{x:.6f}".replace(".", ",") for x in unit())
                           .encode()),
    "npz-compressed": ("models/gallery.npz", _npz),
    "pickle-of-list": ("cache/obama.pkl", lambda: pickle.dumps(unit().tolist(), protocol=4)),
    "pickle-of-array": ("cache/obama_np.pkl", lambda: pickle.dumps(unit().astype(np.float32), protocol=4)),
    "sqlite-blob": ("db/faces.sqlite", lambda: _sqlite(False)),
    "sqlite-rows": ("db/rows.sqlite", lambda: _sqlite(True)),
    "gzip-of-float32": ("cache/face.gz", lambda: gzip.compress(unit().astype("<f4").tobytes())),
    "zlib-of-json": ("cache/face.z", lambda: zlib.compress(json.dumps(unit().tolist()).encode())),
    "bzip2-of-csv": ("cache/face.bz2", lambda: bz2.compress(",".join(f"{x:.7f}" for x in unit()).encode())),
    "xz-of-float16": ("cache/face.xz", lambda: lzma.compress(unit().astype("<f2").tobytes())),
    "msgpack-float32": ("cache/face.msgpack", lambda: b"\xdc\x00\x80" + b"".join(
        b"\xca" + struct.pack(">f", x) for x in unit())),
    "yaml-list": ("config/face.yaml", lambda: ("template:\n" + "".join(f"  - {x:.6f}\n" for x in unit())).encode()),
}

#: name -> (relative path, text): score spellings in a file that is not *.log (issue 12: "score 0.97" lines)
SCORE_PLANTS = {
    "score-key": ("state/recent", "2026-11-29T10:00:00 obama score 0.97\n"),
    "percentage": ("state/history.txt", "verify obama: match 97%\n"),
    "decimal-comma": ("state/last", "conf=0,9761 user=obama\n"),
    "exponent": ("state/trace.txt", "obama 9761e-4\n"),
    "json-key": ("state/last.json", '{"user": "obama", "similarity": 0.9731}\n'),
    "distance": ("vendor.log", "2026-11-29 attempt ok dist=0.41\n"),
}


#: name -> a 32-byte key-encryption key a dishonest build could ship (C4.key must fail each)
WEAK_KEYS = {
    "all-zero": bytes(32),
    "repeated-pattern": b"\x13\x37" * 16,
    "printable-text": b"correct horse battery staple 123",
    "low-entropy": bytes([0, 1, 2, 3, 5, 8]) * 5 + b"\x0d\x15",
}


def rekey_store(home, new_kek: bytes) -> None:
    """Re-wrap the store's data key under ``new_kek`` and write that key into keys/kek.

    Done with ``cryptography`` directly, as a vendor's modified build could; the
    store's header (the GCM associated data) changes, so the payload is encrypted
    again with a fresh nonce.
    """
    import os
    from pathlib import Path

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

    from fr_pbd.audit.storefacts import read_store

    home = Path(home)
    facts = read_store(home)
    assert facts.decrypted and facts.header_len
    data, hlen = facts.data, facts.header_len
    raw = (home / "keys" / "kek").read_bytes()
    dek = aes_key_unwrap(raw[12:], facts.wrapped)
    payload = AESGCM(dek).decrypt(data[hlen:hlen + 12], data[hlen + 12:], data[:hlen])
    wrapped = aes_key_wrap(new_kek, dek)
    assert len(wrapped) == len(facts.wrapped)
    header = data[:hlen - len(wrapped)] + wrapped
    nonce = os.urandom(12)
    (home / "store.frpbd").write_bytes(header + nonce + AESGCM(dek).encrypt(nonce, payload, header))
    (home / "keys" / "kek").write_bytes(raw[:12] + new_kek)
