"""Scanners for biometric data where there must be none: plaintext templates, scores in logs.

They look at bytes and text only; what they report is a location and a kind,
never the values they found (a found template or score is itself biometric data).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

__all__ = ["Finding", "float_runs", "decimal_runs", "score_lines", "entropy_bits_per_byte"]

#: A 128-d face template is 128 numbers; shorter runs can be anything (a matrix row, a table).
MIN_RUN = 128
MIN_TEXT_RUN = 64
_PLAUSIBLE_MIN, _PLAUSIBLE_MAX = 1e-6, 4.0


@dataclass(frozen=True)
class Finding:
    kind: str  # "float32-run", "float64-run", "decimal-run", "score"
    offset: int  # byte offset (binary) or line number (text)
    length: int  # values in the run, or 1

    def describe(self) -> str:
        if self.kind == "score":
            return f"line {self.offset}: a decimal number or the word score/similarity/distance"
        unit = "line" if self.kind == "decimal-run" else "byte offset"
        return f"{unit} {self.offset}: a run of {self.length} {self.kind.split('-')[0]} values (a plaintext template?)"


def _runs(mask: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """(start, length) of runs of True at least ``min_len`` long."""
    if mask.size < min_len:
        return []
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1)
    return [(int(s), int(e - s)) for s, e in zip(starts, ends) if e - s >= min_len]


def float_runs(data: bytes, min_run: int = MIN_RUN) -> list[Finding]:
    """Runs of >= ``min_run`` consecutive float32 (or float64) values that look like an embedding.

    Embedding components are finite, mostly non-zero and small (|x| in 1e-6..4).
    In random or encrypted bytes a word passes that test with probability ~0.06,
    so a run of 128 never happens by chance; zero padding fails it too.
    """
    out: list[Finding] = []
    for dtype, size, kind in (("<f4", 4, "float32-run"), ("<f8", 8, "float64-run")):
        for shift in range(size):
            n = (len(data) - shift) // size
            if n < min_run:
                continue
            x = np.frombuffer(data, dtype=dtype, count=n, offset=shift)
            with np.errstate(invalid="ignore", over="ignore"):
                a = np.abs(x.astype(np.float64))
                ok = np.isfinite(a) & (a >= _PLAUSIBLE_MIN) & (a <= _PLAUSIBLE_MAX)
            for start, length in _runs(ok, min_run):
                out.append(Finding(kind, shift + start * size, length))
    return out


_NUM = re.compile(rb"[-+]?(?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+)?")
_SEP = re.compile(rb"[\s,;\[\]]*")


def decimal_runs(data: bytes, min_run: int = MIN_TEXT_RUN) -> list[Finding]:
    """Runs of >= ``min_run`` decimal numbers separated only by commas/blanks/brackets (JSON, CSV, text).

    That is how Howdy keeps dlib templates (``models/<user>.dat``: JSON with 128-number lists).
    """
    out: list[Finding] = []
    run, start_line, prev_end, line_at = 0, 0, -1, 1
    last_pos = 0
    for m in _NUM.finditer(data):
        line_at += data.count(b"\n", last_pos, m.start())
        last_pos = m.start()
        joined = prev_end >= 0 and _SEP.fullmatch(data, prev_end, m.start()) is not None
        if joined:
            run += 1
        else:
            if run >= min_run:
                out.append(Finding("decimal-run", start_line, run))
            run, start_line = 1, line_at
        prev_end = m.end()
    if run >= min_run:
        out.append(Finding("decimal-run", start_line, run))
    return out


_SCOREISH = re.compile(r"(?<![\w.])[-+]?\d+\.\d+(?![\w.])|\b(?:score|similarity|distance|cosine|embedding)s?\b",
                       re.I)


def score_lines(text: str) -> list[Finding]:
    """Log lines holding a decimal number or a score-like word: fr-pbd's own log has neither."""
    return [Finding("score", i, 1) for i, line in enumerate(text.splitlines(), 1) if _SCOREISH.search(line)]


def entropy_bits_per_byte(data: bytes) -> float:
    """Shannon entropy of the byte histogram: ~8 for ciphertext, far less for plaintext floats or JSON."""
    if not data:
        return 0.0
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256).astype(np.float64)
    p = counts[counts > 0] / len(data)
    return float(-(p * np.log2(p)).sum()) if p.size else 0.0


def fmt_bits(h: float) -> str:
    return f"{math.floor(h * 1000) / 1000:.3f}"
