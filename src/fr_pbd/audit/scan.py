"""Scanners for biometric data where there must be none: templates in any common encoding, scores in text.

They look at bytes only; what they report is a location and a kind, never the
values they found (a found template or score is itself biometric data).

Templates (a face template is 64-1024 numbers) are looked for

* as binary numbers: float16/float32/float64 in either byte order, also with
  one tag byte before each value (msgpack, CBOR, pickle), and int8/uint8
  (quantised) blocks;
* as text: lists of numbers (JSON, CSV, Python reprs, with decimal points or
  commas), and numbers that follow each other with keys between them;
* inside base64, base32, base85/ascii85, hex text and hex dumps with spaces, compressed streams (gzip, zlib, bzip2, xz),
  ZIP/NPZ members, pickles, JSON values and SQLite tables: decoded and scanned
  again (depth :data:`MAX_DEPTH`). A zstd or lz4 stream cannot be decoded
  here: it is reported as opaque, which is never a pass.

A run of numbers counts as a template only with a template's statistics
(:func:`template_like`): both signs, similar magnitudes (a unit vector scaled
by any factor), many distinct values, not sorted. Random bytes, ciphertext,
text read as numbers, zero padding, counters and tables of sorted numbers fail
that test; ``tests/test_audit.py`` holds the scanners to it on real files.

Scores are looked for as text: decimal fractions (``0.97``, ``0,9761``),
exponents (``9761e-4``), percentages (``97%``), and ``score``/``conf``/``sim``/
``dist``/``match``-like keys followed by a number. In text files every rule
applies; in binary files only the key rule (a key word is 4+ letters that
random bytes do not spell).
"""

from __future__ import annotations

import base64
import binascii
import bz2
import io
import json
import lzma
import math
import re
import zipfile
import zlib
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["Finding", "Budget", "scan", "template_like", "score_findings", "entropy_bits_per_byte", "fmt_bits",
           "looks_like_text", "MIN_VALUES", "MAX_VALUES"]

MIN_VALUES = 64
MAX_VALUES = 1024
MAX_DEPTH = 4
STRIDED_MAX = 1 << 20  # bytes: tagged-value layouts are looked for in the first MiB
INT8_MAX = 1 << 20  # bytes: quantised blocks are looked for in the first MiB
MAX_DECODED = 64 << 20
_WINDOW = 64
_INT8_WINDOW = 128


@dataclass(frozen=True)
class Finding:
    kind: str  # "template" | "score" | "opaque"
    what: str  # the encoding, e.g. "float32 little-endian", "int8 block", "score text: a percentage"
    offset: int  # byte offset in the outermost data (of the container that holds it)
    count: int = 1  # values in the run
    where: str = ""  # inside a container: "zip member a.npy", "base64 text", ...
    line: int | None = None

    def describe(self) -> str:
        at = f"line {self.line}" if self.line is not None else f"byte {self.offset}"
        inside = f" (in {self.where})" if self.where else ""
        if self.kind == "template":
            return f"{at}{inside}: {self.count} {self.what} values with a face template's statistics"
        if self.kind == "opaque":
            return f"{at}{inside}: {self.what} the audit cannot decode"
        return f"{at}{inside}: {self.what}"


@dataclass
class Budget:
    """Bounds the work on one file: decoded bytes and containers opened."""

    decoded: int = 0
    containers: int = 0

    def take(self, n: int) -> bool:
        self.decoded += n
        self.containers += 1
        return self.decoded <= 4 * MAX_DECODED and self.containers <= 4096


# --------------------------------------------------------------------------------------
# the statistics of a template
# --------------------------------------------------------------------------------------
def template_like(v: np.ndarray) -> bool:
    """Do these numbers look like a face template (or a scaled / quantised one)?

    Components of an embedding are roughly normal around 0: both signs (20-80 %
    negative), a mean near 0, magnitudes of one order (the 90th percentile of
    |x| within 40 times the 10th, the largest within 100 times the median), few
    zeros, many distinct values, no order. uint8 data centred on 128 is centred
    first. (For a normal sample the two ratios are about 13 and 5.)
    """
    v = np.asarray(v, dtype=np.float64)
    if v.size < MIN_VALUES or not np.all(np.isfinite(v)):
        return False
    integer = bool(np.all(v == np.round(v)))
    if integer and v.min() >= 0 and v.max() <= 255 and 64 <= np.median(v) <= 192:
        v = v - 128.0
    if np.mean(v == 0) > 0.25:
        return False
    if not 0.2 <= np.mean(v < 0) <= 0.8:
        return False
    sd = float(v.std())
    if sd == 0 or abs(float(v.mean())) > 0.5 * sd:
        return False
    a = np.abs(v[v != 0])
    q10, med, q90 = np.percentile(a, (10, 50, 90))
    if q10 <= 0 or math.log10(q90 / q10) > 1.6 or math.log10(a.max() / med) > 2.0:
        return False
    if len(np.unique(v)) < (0.3 if integer else 0.6) * v.size:
        return False
    up = np.mean(np.diff(v) > 0)
    return 0.2 <= up <= 0.8


def _windows_hit(v: np.ndarray, width: int = _WINDOW) -> int | None:
    """Index of the first window of ``width`` values (step width/2) that is template-like, or None."""
    if v.size < width:
        return None
    for start in range(0, v.size - width + 1, width // 2):
        if template_like(v[start:start + width]):
            return start
    return None


def _runs(mask: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    if mask.size < min_len:
        return []
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return [(int(s), int(e - s)) for s, e in zip(starts, ends, strict=True) if e - s >= min_len]


# --------------------------------------------------------------------------------------
# binary numbers
# --------------------------------------------------------------------------------------
_FLOATS = (("<f2", 2, "float16 little-endian", 6e-5), (">f2", 2, "float16 big-endian", 6e-5),
           ("<f4", 4, "float32 little-endian", 1e-6), (">f4", 4, "float32 big-endian", 1e-6),
           ("<f8", 8, "float64 little-endian", 1e-6), (">f8", 8, "float64 big-endian", 1e-6))


def float_runs(data: bytes) -> list[Finding]:
    """Template-like runs of binary floats, contiguous or with one tag byte before each value."""
    out: list[Finding] = []
    buf = np.frombuffer(data, dtype=np.uint8)
    for dtype, size, name, lo in _FLOATS:
        for stride in (size, size + 1):
            for shift in range(stride):
                n = ((len(data) if stride == size else min(len(data), STRIDED_MAX)) - shift - (stride - size)) // stride
                if n < MIN_VALUES:
                    continue
                if stride == size:
                    x = np.frombuffer(data, dtype=dtype, count=n, offset=shift)
                else:  # a tag byte, then the value
                    rows = np.lib.stride_tricks.as_strided(buf[shift + 1:], shape=(n, size), strides=(stride, 1))
                    x = rows.copy().view(dtype).reshape(n)
                with np.errstate(invalid="ignore", over="ignore"):
                    a = np.abs(x.astype(np.float64))
                    ok = np.isfinite(a) & (a >= lo) & (a <= 1e4)
                for start, length in _runs(ok, MIN_VALUES):
                    hit = _windows_hit(x[start:start + length].astype(np.float64))
                    if hit is not None:
                        label = name if stride == size else f"{name} (each after a tag byte)"
                        out.append(Finding("template", label, shift + (start + hit) * stride, length))
                        break
                if len(out) >= 8:
                    return out
    return out


def int8_runs(data: bytes) -> list[Finding]:
    """Blocks of 128 bytes that read as a quantised template (int8, or uint8 around 128)."""
    out: list[Finding] = []
    data = data[:INT8_MAX]
    n = len(data)
    if n < _INT8_WINDOW:
        return out
    raw = np.frombuffer(data, dtype=np.uint8)
    w = _INT8_WINDOW
    for signed in (True, False):
        x = raw.view(np.int8).astype(np.float64) if signed else raw.astype(np.float64) - 128.0
        c1 = np.concatenate([[0.0], np.cumsum(x)])
        c2 = np.concatenate([[0.0], np.cumsum(x * x)])
        c3 = np.concatenate([[0.0], np.cumsum(x ** 3)])
        c4 = np.concatenate([[0.0], np.cumsum(x ** 4)])
        cz = np.concatenate([[0], np.cumsum(x == 0)])
        s1, s2, s3, s4 = (c[w:] - c[:-w] for c in (c1, c2, c3, c4))
        zeros = (cz[w:] - cz[:-w]) / w
        m = s1 / w
        var = s2 / w - m * m
        with np.errstate(invalid="ignore", divide="ignore"):
            sd = np.sqrt(np.maximum(var, 0))
            m4 = (s4 - 4 * m * s3 + 6 * m * m * s2) / w - 3 * m ** 4
            kurt = m4 / (var * var) - 3
        cand = (sd >= 4) & (sd <= 55) & (np.abs(m) <= 0.25 * sd) & (zeros <= 0.2) & (kurt >= -0.9) & (kurt <= 1.5)
        runs = _runs(cand, min(8, len(cand)))
        covered = np.zeros(n, dtype=bool)
        for start, length in runs:
            covered[start:start + length + w - 1] = True
        # Quantised templates are what such a blob holds, not a stretch inside an image, a program or a
        # database page (whose tables and headers can look alike for a few hundred bytes).
        if covered.mean() < 0.5:
            continue
        for start, _length in runs:
            if template_like(x[start:start + w]):
                out.append(Finding("template", "int8 (quantised)" if signed else "uint8 (quantised, around 128)",
                                   start, int(covered.sum())))
                break
    return out


# --------------------------------------------------------------------------------------
# numbers in text
# --------------------------------------------------------------------------------------
_NUM_DOT = re.compile(rb"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
_SEP_DOT = re.compile(rb"[\s,;\[\]()]*")
_NUM_COMMA = re.compile(rb"[-+]?\d+(?:,\d+)?(?:[eE][-+]?\d+)?")
_SEP_COMMA = re.compile(rb"[\s;\[\]()]*")
_FRACTION = re.compile(rb"(?<![\w.])[-+]?(?:\d+[.,]\d+|[.,]\d+)(?:[eE][-+]?\d+)?(?![\w.])")


def _strict_runs(data: bytes, num: re.Pattern, sep: re.Pattern, comma: bool) -> list[tuple[int, list[float]]]:
    runs: list[tuple[int, list[float]]] = []
    cur: list[float] = []
    start, prev_end = 0, -1
    for m in num.finditer(data):
        joined = prev_end >= 0 and sep.fullmatch(data, prev_end, m.start()) is not None
        if not joined:
            if len(cur) >= MIN_VALUES:
                runs.append((start, cur))
            cur, start = [], m.start()
        tok = m.group(0).replace(b",", b".") if comma else m.group(0)
        try:
            cur.append(float(tok))
        except ValueError:
            cur.append(float("nan"))
        prev_end = m.end()
        if len(runs) > 64:
            break
    if len(cur) >= MIN_VALUES:
        runs.append((start, cur))
    return runs


def text_number_runs(data: bytes) -> list[Finding]:
    """Lists of numbers in text (JSON, CSV, reprs), and fractions that follow each other with keys between."""
    out: list[Finding] = []
    for num, sep, comma, what in ((_NUM_DOT, _SEP_DOT, False, "numbers in text"),
                                  (_NUM_COMMA, _SEP_COMMA, True, "numbers in text (decimal commas)")):
        for start, values in _strict_runs(data, num, sep, comma):
            hit = _windows_hit(np.asarray(values))
            if hit is not None:
                out.append(Finding("template", what, start, len(values)))
    if out:
        return out
    # fractions with anything short between them: {"a0": 0.12, "a1": -0.03, ...}, YAML lists, key=value lines
    pos, vals = [], []
    for m in _FRACTION.finditer(data):
        pos.append(m.start())
        vals.append(float(m.group(0).replace(b",", b".")))
    if len(vals) >= MIN_VALUES:
        p = np.asarray(pos)
        gaps = np.diff(p) <= 64
        for start, length in _runs(np.concatenate([gaps, [False]]), MIN_VALUES - 1):
            seq = np.asarray(vals[start:start + length + 1])
            hit = _windows_hit(seq)
            if hit is not None:
                out.append(Finding("template", "fractions in text (with keys between)", int(p[start + hit]), len(seq)))
                break
    return out


# --------------------------------------------------------------------------------------
# score text
# --------------------------------------------------------------------------------------
_KEY = (r"(?:score|scores|conf|confidence|sim|similarity|dist|distance|match|matching|cos|cosine|prob|probability|"
        r"likelihood|thresh|threshold|euclid|euclidean|l2|margin|liveness|spoof)")
_SCORE_RULES = (
    ("a score-like key with a number",
     re.compile(rf"(?i)(?<![a-z]){_KEY}(?![a-z])[\"']?(?:\s*[:=]\s*|\s+)[\"']?[-+]?\.?\d")),
    ("a percentage", re.compile(r"(?<![\w.,])\d{1,3}(?:[.,]\d+)?\s?%")),
    ("a number with an exponent", re.compile(r"(?<![\w.,])[-+]?\d+(?:[.,]\d+)?[eE][-+]?\d+(?![\w.,])")),
    ("a decimal fraction", re.compile(r"(?<![\w.,:/-])[-+]?\d*\.\d+(?![\w.,])")),
    ("a decimal fraction with a comma", re.compile(r"(?<![\w.,:/-])[-+]?\d{1,2},\d{2,}(?![\w.,])")),
)
_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e]{8,}")
#: in binary data: a long key word and a decimal fraction (random bytes spell that once in ~2^60 positions)
_BINARY_KEY = re.compile(r"(?i)(?<![a-z])(?:score|scores|similarity|distance|confidence|match|matching|cosine|"
                         r"threshold|probability|likelihood|euclidean|margin|liveness|spoof)(?![a-z])"
                         r"[\W_]{0,3}[-+]?\d*[.,]\d")


def looks_like_text(data: bytes) -> bool:
    head = data[:65536]
    if not head:
        return True
    try:
        s = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:
            return False
        s = head[:exc.start].decode("utf-8")
    return sum(c.isprintable() or c in "\n\r\t" for c in s) >= 0.95 * max(len(s), 1)


def score_findings(data: bytes, text: bool | None = None) -> list[Finding]:
    """Score-like text: every rule in text, the key rule only in printable runs of binary data."""
    out: list[Finding] = []
    if text is None:
        text = looks_like_text(data)
    if text:
        s = data.decode("utf-8", "replace")
        for i, line in enumerate(s.splitlines(), 1):
            for what, rx in _SCORE_RULES:
                if rx.search(line):
                    out.append(Finding("score", f"score-like text: {what}", 0, 1, line=i))
                    break
            if len(out) >= 16:
                break
        return out
    for m in _PRINTABLE_RUN.finditer(data):
        if _BINARY_KEY.search(m.group(0).decode("ascii")):
            out.append(Finding("score", f"score-like text: {_SCORE_RULES[0][0]}", m.start()))
            if len(out) >= 16:
                break
    return out


# --------------------------------------------------------------------------------------
# encodings and containers
# --------------------------------------------------------------------------------------
_B64 = re.compile(rb"(?:[A-Za-z0-9+/_-]{4}[\r\n]*){22,}(?:[A-Za-z0-9+/_-]{2,4}={0,2})?")
_HEX = re.compile(rb"(?:[0-9a-fA-F]{2}){64,}")
_OPAQUE = ((b"\x28\xb5\x2f\xfd", "a zstd stream"), (b"\x04\x22\x4d\x18", "an lz4 stream"))


def _decompress(kind: str, data: bytes) -> bytes | None:
    try:
        if kind == "gzip":
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif kind == "zlib":
            d = zlib.decompressobj()
        elif kind == "deflate":
            d = zlib.decompressobj(-zlib.MAX_WBITS)
        elif kind == "bzip2":
            return bz2.BZ2Decompressor().decompress(data, max_length=MAX_DECODED)
        else:
            return lzma.LZMADecompressor().decompress(data, max_length=MAX_DECODED)
        return d.decompress(data, MAX_DECODED)
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError):
        return None


def _streams(data: bytes) -> list[tuple[str, int]]:
    """Compressed streams by their magic numbers (a few per kind)."""
    found: list[tuple[str, int]] = []
    for magic, kind in ((b"\x1f\x8b\x08", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz")):
        for m in re.finditer(re.escape(magic), data[:MAX_DECODED]):
            found.append((kind, m.start()))
            if len(found) > 16:
                break
    for m in re.finditer(rb"\x78[\x01\x5e\x9c\xda]", data[:MAX_DECODED]):
        found.append(("zlib", m.start()))
        if len(found) > 48:
            break
    return found


def _pickle_numbers(data: bytes) -> tuple[list[float], list[bytes]] | None:
    import pickletools

    nums: list[float] = []
    blobs: list[bytes] = []
    try:
        for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
            if op.name in ("BINFLOAT", "FLOAT", "BININT", "BININT1", "BININT2", "INT", "LONG1") and \
                    isinstance(arg, (int, float)) and not isinstance(arg, bool):
                nums.append(float(arg))
            elif isinstance(arg, (bytes, bytearray)) and len(arg) >= MIN_VALUES:
                blobs.append(bytes(arg))
            if op.name == "STOP":
                break
    except Exception:  # noqa: BLE001 - not a pickle after all (genops never executes anything)
        return None
    return nums, blobs


def _json_numbers(obj: object, out: list[list[float]], strings: list[str], depth: int = 0) -> None:
    if depth > 64:
        return
    if isinstance(obj, list):
        flat = [float(x) for x in obj if isinstance(x, (int, float)) and not isinstance(x, bool)]
        if len(flat) >= MIN_VALUES:
            out.append(flat)
        for x in obj:
            _json_numbers(x, out, strings, depth + 1)
    elif isinstance(obj, dict):
        vals = [float(x) for x in obj.values() if isinstance(x, (int, float)) and not isinstance(x, bool)]
        if len(vals) >= MIN_VALUES:
            out.append(vals)
        for x in obj.values():
            _json_numbers(x, out, strings, depth + 1)
    elif isinstance(obj, str) and len(obj) >= 88:
        strings.append(obj)


def _containers(data: bytes, depth: int, budget: Budget, where: str) -> list[Finding]:
    out: list[Finding] = []

    def inner(blob: bytes, label: str, offset: int) -> None:
        if blob and budget.take(len(blob)):
            for f in scan(blob, depth=depth + 1, budget=budget, where=f"{where} > {label}" if where else label):
                out.append(Finding(f.kind, f.what, offset, f.count, f.where, f.line))

    for magic, what in _OPAQUE:
        i = data.find(magic)
        if i >= 0:
            out.append(Finding("opaque", what, i, 1, where))
    if b"PK\x03\x04" in data[:MAX_DECODED]:
        start = data.find(b"PK\x03\x04")
        for base in dict.fromkeys((0, start)):
            try:
                with zipfile.ZipFile(io.BytesIO(data[base:])) as z:
                    for info in z.infolist()[:256]:
                        if info.file_size <= MAX_DECODED:
                            inner(z.read(info), f"zip member {info.filename}", base + info.header_offset)
                break
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError, RuntimeError):
                continue
    for kind, off in _streams(data):
        blob = _decompress(kind, data[off:])
        if blob and len(blob) >= MIN_VALUES:
            inner(blob, f"{kind} stream", off)
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        got = _pickle_numbers(data)
        if got is not None:
            nums, blobs = got
            hit = _windows_hit(np.asarray(nums)) if len(nums) >= MIN_VALUES else None
            if hit is not None:
                out.append(Finding("template", "numbers in a pickle", 0, len(nums), where))
            for b in blobs[:64]:
                inner(b, "bytes in a pickle", 0)
    if data.startswith(b"SQLite format 3\x00"):
        out += _sqlite(data, depth, budget, where)
    stripped = data.lstrip()[:1]
    if stripped in (b"{", b"[") and len(data) <= MAX_DECODED:
        docs = []
        try:
            docs.append(json.loads(data))
        except (ValueError, UnicodeDecodeError, RecursionError):
            for line in data.splitlines()[:10000]:  # JSON lines
                try:
                    docs.append(json.loads(line))
                except (ValueError, UnicodeDecodeError, RecursionError):
                    continue
        seqs: list[list[float]] = []
        strings: list[str] = []
        for d in docs:
            _json_numbers(d, seqs, strings)
        for seq in seqs:
            if _windows_hit(np.asarray(seq)) is not None:
                out.append(Finding("template", "numbers in JSON", 0, len(seq), where))
                break
        for s in strings[:256]:
            inner(s.encode("utf-8", "replace"), "a JSON string", 0)
    if data.startswith(b"\x93NUMPY"):
        pass  # .npy: header then raw numbers, which the binary scan reads
    return out


def _sqlite(data: bytes, depth: int, budget: Budget, where: str) -> list[Finding]:
    import sqlite3

    out: list[Finding] = []
    if len(data) > 19 and data[18:20] == b"\x02\x02":  # WAL mode: read it as a rollback-journal file
        data = data[:18] + b"\x01\x01" + data[20:]
    try:
        con = sqlite3.connect(":memory:")
        con.deserialize(data)
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for t in tables[:64]:
            cols: dict[int, list[float]] = {}
            q = 'SELECT * FROM "' + t.replace('"', '""') + '" LIMIT 200000'
            for row in con.execute(q):
                for i, v in enumerate(row):
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        cols.setdefault(i, []).append(float(v))
                    elif isinstance(v, (bytes, str)) and len(v) >= MIN_VALUES:
                        blob = v if isinstance(v, bytes) else v.encode("utf-8", "replace")
                        if budget.take(len(blob)):
                            label = f"{where} > " if where else ""
                            for f in scan(blob, depth=depth + 1, budget=budget, where=f"{label}SQLite table {t}"):
                                out.append(Finding(f.kind, f.what, 0, f.count, f.where, f.line))
            for seq in cols.values():
                if len(seq) >= MIN_VALUES and _windows_hit(np.asarray(seq)) is not None:
                    out.append(Finding("template", f"numbers in SQLite table {t}", 0, len(seq), where))
                    break
        con.close()
    except sqlite3.Error:
        out.append(Finding("opaque", "an SQLite database", 0, 1, where))
    return out


_B32 = re.compile(rb"(?:[A-Z2-7]{8}[\r\n]*){40,}(?:[A-Z2-7]{2,8}={0,6})?")
_B85 = re.compile(rb"[0-9A-Za-z!#$%&()*+\-;<=>?@^_`{|}~]{320,}")
_A85 = re.compile(rb"(?:<~)?[!-u\s]{320,}(?:~>)?")
_DUMP_LINE = re.compile(rb"^\s*(?:[0-9a-fA-F]{4,16}:?\s+)?((?:[0-9a-fA-F]{2,4}(?:\s+|$))+)")


def _hex_dump(data: bytes) -> bytes:
    """The bytes of a hex dump with spaces (``3f 80 00 00 ...``, ``xxd``, ``hexdump -C``, ``od -x``): per line, an
    optional offset, then groups of 2 or 4 hex digits; the ASCII column is ignored."""
    out = bytearray()
    for line in data.splitlines()[:200000]:
        m = _DUMP_LINE.match(line)
        if not m:
            continue
        for tok in m.group(1).split():
            out += bytes.fromhex(tok.decode()) if len(tok) in (2, 4) else b""
    return bytes(out)


def _encoded(data: bytes, depth: int, budget: Budget, where: str) -> list[Finding]:
    out: list[Finding] = []

    def inner(blob: bytes, label: str, offset: int) -> None:
        if blob and len(blob) >= MIN_VALUES and budget.take(len(blob)):
            for f in scan(blob, depth=depth + 1, budget=budget, where=f"{where} > {label}" if where else label):
                out.append(Finding(f.kind, f.what, offset, f.count, f.where, f.line))

    if looks_like_text(data):
        dump = _hex_dump(data)
        if len(dump) >= 4 * MIN_VALUES:
            inner(dump, "hex dump with spaces", 0)
        for m in list(_B32.finditer(data))[:64]:
            try:
                inner(base64.b32decode(re.sub(rb"\s", b"", m.group(0)) + b"=" * (-len(re.sub(rb"\s", b"",
                                                                                             m.group(0))) % 8)),
                      "base32 text", m.start())
            except (binascii.Error, ValueError):
                continue
        for rx, dec, label in ((_B85, base64.b85decode, "base85 text"), (_A85, base64.a85decode, "ascii85 text")):
            for m in list(rx.finditer(data))[:64]:
                tok = m.group(0).strip()
                try:
                    blob = dec(tok, adobe=tok.startswith(b"<~")) if dec is base64.a85decode else dec(tok)
                except (binascii.Error, ValueError):
                    continue
                inner(blob, label, m.start())
    hexes = 0
    for m in _HEX.finditer(data):
        hexes += 1
        if hexes > 256:
            break
        blob = binascii.unhexlify(m.group(0)[: len(m.group(0)) // 2 * 2])
        if budget.take(len(blob)):
            for f in scan(blob, depth=depth + 1, budget=budget, where=f"{where} > hex text" if where else "hex text"):
                out.append(Finding(f.kind, f.what, m.start(), f.count, f.where, f.line))
    b64s = 0
    for m in _B64.finditer(data):
        tok = re.sub(rb"\s", b"", m.group(0))
        if _HEX.fullmatch(tok) or tok.isdigit():
            continue
        b64s += 1
        if b64s > 256:
            break
        for alt in (b"+/", b"-_"):
            try:
                blob = base64.b64decode(tok + b"=" * (-len(tok) % 4), altchars=alt)
            except (binascii.Error, ValueError):
                continue
            if budget.take(len(blob)):
                label = f"{where} > base64 text" if where else "base64 text"
                for f in scan(blob, depth=depth + 1, budget=budget, where=label):
                    out.append(Finding(f.kind, f.what, m.start(), f.count, f.where, f.line))
            break
    return out


def scan(data: bytes, *, depth: int = 0, budget: Budget | None = None, where: str = "",
         scores: bool = True) -> list[Finding]:
    """Every finding in ``data``: templates in any encoding above, score-like text, opaque streams."""
    budget = budget if budget is not None else Budget()
    data = bytes(data[:MAX_DECODED])
    text = looks_like_text(data)
    out: list[Finding] = []
    if text:  # text cannot hold binary numbers of both signs (their high bytes are not UTF-8)
        out += text_number_runs(data)
    else:
        out += float_runs(data)
        out += int8_runs(data)
    if depth < MAX_DEPTH:
        if text or len(data) <= STRIDED_MAX:
            out += _encoded(data, depth, budget, where)
        out += _containers(data, depth, budget, where)
        if depth == 0 and not text and entropy_bits_per_byte(data[:1 << 20]) > 7.5 and len(data) >= 256:
            blob = _decompress("deflate", data)  # a raw deflate stream has no magic number
            if blob and len(blob) >= MIN_VALUES and budget.take(len(blob)):
                out += [Finding(f.kind, f.what, 0, f.count, (f"{where} > " if where else "") + "deflate stream",
                                f.line) for f in scan(blob, depth=depth + 1, budget=budget)]
    if scores:
        out += score_findings(data, text)
    return [replace(f, where=where) if where and not f.where else f for f in out]


def entropy_bits_per_byte(data: bytes) -> float:
    """Shannon entropy of the byte histogram: ~8 for ciphertext, far less for plaintext floats or JSON."""
    if not data:
        return 0.0
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256).astype(np.float64)
    p = counts[counts > 0] / len(data)
    return float(-(p * np.log2(p)).sum()) if p.size else 0.0


def fmt_bits(h: float) -> str:
    return f"{math.floor(h * 1000) / 1000:.3f}"

