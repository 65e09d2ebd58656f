"""C3 at rest and in the product's output: no template and no score in any file or stream it writes.

What is scanned (:mod:`fr_pbd.audit.scan`):

* every file under the home (or the product's data directories), no symlink followed;
* every log: ``*.log`` and ``log/``/``logs/`` under those directories, the
  product's log directories, and ``--log FILE``;
* what the daemon wrote while the audit traced it, per destination (files,
  its standard output/error, terminals, log services), even if it deleted the
  file afterwards; and the files it had open for writing, or wrote, as they are
  after the probe.

Each file must be free of template data (any encoding) and of score-like
text. A small metadata file by name (``config.toml``, ``*.ini``, ``*.conf``,
``*.cfg``, at most 64 KiB, or one the target declares) may hold numbers such
as a threshold: it is still scanned for templates, not for score text. A file
of at least 1 KiB with >= 7.9 bits/byte counts as ciphertext, but is scanned
all the same (a score can hide in random padding; the scanners' rules for
binary data do not fire on random bytes). An image (recognised by its signature first,
:func:`fr_pbd.audit.images.image_kind`) never counts as ciphertext, whatever its entropy.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fr_pbd.audit import scan
from fr_pbd.audit.checks import FAIL, INCONCLUSIVE, PASS, TITLE_FROM_TABLE, Check
from fr_pbd.audit.images import image_kind
from fr_pbd.audit.network import NetworkFacts

__all__ = ["Sources", "gather", "c3_plaintext_templates", "c3_logs", "METADATA_MAX"]

MAX_FILE = 256 << 20
METADATA_MAX = 64 << 10
METADATA_SUFFIXES = (".ini", ".conf", ".cfg")
CIPHERTEXT_MIN = 1024
CIPHERTEXT_BITS = 7.9
OBSERVE_NEEDS = ("--socket PATH of the running daemon, and strace with the right to attach to it, so that what the "
                 "daemon writes outside the home is seen")


@dataclass
class Item:
    label: str
    kind: str  # "file" | "log" | "output"
    data: bytes = field(repr=False, default=b"")
    metadata: bool = False
    text_only: bool = False  # a log or log stream: anything but text is a place to hide a score


@dataclass
class Sources:
    items: list[Item] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # written outside the product's own places
    observed: bool = False  # the daemon's writes were traced
    why_not_observed: str | None = None
    _found: list[tuple[Item, list[scan.Finding]]] | None = field(default=None, repr=False)

    def findings(self) -> list[tuple[Item, list[scan.Finding]]]:
        """Every item scanned once (both checks read the same scan)."""
        if self._found is None:
            self._found = []
            for it in self.items:
                fs = scan.scan(it.data)
                if it.metadata:
                    fs = [f for f in fs if f.kind != "score"]
                self._found.append((it, fs))
        return self._found


def _is_metadata(path: Path, size: int, declared: tuple[str, ...]) -> bool:
    return size <= METADATA_MAX and (path.name == "config.toml" or path.suffix in METADATA_SUFFIXES
                                     or path.name in declared)


def _read(path: Path, src: Sources) -> bytes | None:
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            return None
        with open(path, "rb") as f:
            return f.read(MAX_FILE)
    except FileNotFoundError:
        return None
    except OSError as exc:
        src.unreadable.append(f"{path}: cannot be read by the audit ({exc.strerror}): run the audit as root")
        return None


def _walk(root: Path):
    for base, _dirs, files in os.walk(root, followlinks=False):
        for name in files:
            yield Path(base) / name


def _inside(path: str, places: list[Path]) -> bool:
    p = os.path.abspath(path)
    return any(p == os.path.abspath(q) or p.startswith(os.path.abspath(q).rstrip("/") + "/") for q in places)


def gather(data_dirs: list[Path], logs: list[Path], log_dirs: list[Path], nf: NetworkFacts | None,
           writable: list[str], *, metadata: tuple[str, ...] = (), why_not_observed: str | None = None,
           also_allowed: Callable[[str], bool] | None = None) -> Sources:
    """Everything to scan. ``also_allowed``: files the product may write besides its data and logs."""
    src = Sources(observed=nf is not None and nf.traced, why_not_observed=why_not_observed)
    seen: set[str] = set()
    places = [*data_dirs, *log_dirs, *logs]
    log_places = [*log_dirs, *logs]

    def expected(path: str) -> bool:
        return _inside(path, places) or (also_allowed is not None and also_allowed(path))

    def add(path: Path, kind: str, label: str | None = None) -> None:
        key = os.path.abspath(path)
        if key in seen:
            return
        seen.add(key)
        data = _read(path, src)
        if data is None:
            return
        is_log = kind == "log" or path.suffix == ".log" or path.parent.name in ("log", "logs")
        src.items.append(Item(label or str(path), "log" if is_log else kind, data,
                              not is_log and _is_metadata(path, len(data), metadata), text_only=is_log))

    for d in data_dirs:
        for p in _walk(d):
            add(p, "file")
    for d in log_dirs:
        for p in _walk(d):
            add(p, "log")
    for p in logs:
        if not Path(p).exists():
            src.unreadable.append(f"{p}: no such log file")
        add(Path(p), "log")
    if nf is not None:
        for out in nf.outputs.values():
            stream = out.kind != "file" or (out.path is not None and _inside(out.path, log_places))
            src.items.append(Item(f"written by the daemon during the probe: {out.label}", "output", bytes(out.data),
                                  text_only=stream))
            if out.kind == "file" and out.path and not expected(out.path):
                src.unexpected.append(f"the daemon wrote {len(out.data)} byte(s) to {out.path}, outside its data and "
                                      "logs: the audit cannot tell what they are")
        for p in nf.written_files:
            if not expected(p) and not any(p in u for u in src.unexpected):
                src.unexpected.append(f"the daemon wrote to {p}, outside its data and logs")
            add(Path(p), "file", f"{p} (written by the daemon during the probe)")
    for p in writable:
        add(Path(p), "file", f"{p} (open for writing by the daemon)")
    return src


def _summary(src: Sources) -> str:
    kinds = {k: sum(1 for i in src.items if i.kind == k) for k in ("file", "log", "output")}
    size = sum(len(i.data) for i in src.items)
    imgs = sum(1 for i in src.items if image_kind(i.data) is not None)
    ciph = sum(1 for i in src.items if len(i.data) >= CIPHERTEXT_MIN and image_kind(i.data) is None
               and scan.entropy_bits_per_byte(i.data[:1 << 20]) >= CIPHERTEXT_BITS)
    return (f"{kinds['file']} file(s), {kinds['log']} log(s), {kinds['output']} stream(s) the daemon wrote to, "
            f"{size:,} bytes ({ciph} of them ciphertext-like: >= {CIPHERTEXT_BITS} bits/byte"
            + (f"; {imgs} image(s), never counted as ciphertext" if imgs else "") + ")")


def _verdict(cid: str, title: str, src: Sources, kinds: tuple[str, ...], what: str, clean: str) -> Check:
    bad, opaque, explained = [], [], 0
    for it, fs in src.findings():
        if "score" in kinds and any(f.kind == "template" for f in fs):
            explained += 1  # its numbers are a template: C3.plaintext-templates reports it
            continue
        for f in fs:
            if f.kind in kinds:
                bad.append(f"{it.label}: {f.describe()}")
            elif f.kind == "opaque" and "template" in kinds:
                opaque.append(f"{it.label}: {f.describe()}")
    details = [_summary(src)] + [f"scanned: {it.label} ({len(it.data):,} bytes)" for it in src.items[:40]]
    if explained:
        details.insert(1, f"{explained} item(s) holding template data are reported by C3.plaintext-templates")
    if len(src.items) > 40:
        details.append(f"... and {len(src.items) - 40} more")
    values = {"items": len(src.items), "bytes": sum(len(i.data) for i in src.items), "findings": len(bad),
              "daemon_writes_observed": src.observed}
    if bad:
        return Check(cid, "C3", title, FAIL, f"{what} found: {bad[0]}", bad[:50] + src.unreadable + details, values)
    if "score" in kinds:
        for it, _fs in src.findings():
            if it.text_only and it.data and not scan.looks_like_text(it.data):
                opaque.append(f"{it.label}: {len(it.data)} bytes of a log that are not text (a score could hide "
                              "there in binary)")
    else:
        opaque += src.unexpected
    gaps = opaque + src.unreadable
    if not src.observed:
        gaps.append(f"what the daemon writes was not observed ({src.why_not_observed or 'no daemon given'})")
    if gaps:
        return Check(cid, "C3", title, INCONCLUSIVE, gaps[0], gaps + details, values,
                     needs=OBSERVE_NEEDS if not src.observed else
                     "read access to every file listed (run as root); files the product writes outside its data and "
                     "logs declared (--log FILE, or [data]/[logs] of a TARGET.toml); logs that are text")
    return Check(cid, "C3", title, PASS, f"{_summary(src)}: {clean}", details, values)


def c3_plaintext_templates(src: Sources) -> Check:
    return _verdict("C3.plaintext-templates", TITLE_FROM_TABLE, src,
                    ("template",), "template data",
                    f"no run of {scan.MIN_VALUES}-{scan.MAX_VALUES} numbers with a template's statistics in any "
                    "encoding (float16/32/64, int8, text, base64, hex, compressed, ZIP/NPZ, pickle, JSON, SQLite)")


def c3_logs(src: Sources) -> Check:
    return _verdict("C3.logs", TITLE_FROM_TABLE, src, ("score",),
                    "score-like text",
                    "no decimal fraction, percentage, exponent or score/conf/sim/dist/match key with a number")

