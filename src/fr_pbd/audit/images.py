"""C3.face-images: no face image at rest in the product's files.

A face photo kept by a face login (a snapshot of each attempt, an enrolment photo) is
biometric data as much as a template. Every item the audit scans (:mod:`fr_pbd.audit.files`:
every file in the data and log directories or the home, every log, what the product wrote
while traced and the files it holds open for writing) is recognised as an image by its first
bytes with fr-pbd's own reader (:func:`fr_pbd.capture.image.image_format`), never by its name;
an image of a format fr-pbd reads is decoded within :data:`~fr_pbd.capture.image.MAX_PIXELS`
(:func:`~fr_pbd.capture.image.decode_image`) and searched with fr-pbd's face detector. A face
is a FAIL naming the file and the face's size in pixels, never its pixels or the detector's
score. An image of a format fr-pbd's reader refuses (TIFF, WebP, GIF, JPEG 2000, ...: the
formats of the image bombs) is decoded by OpenCV in a child process of its own, with 1 GiB of
address space beyond what it holds once loaded and a time limit, and only a PNG of at most
4096 pixels a side comes back: a bomb kills the child, not the audit. One that still cannot be
decoded may hold a face the audit cannot see: INCONCLUSIVE, named.

:func:`image_kind` is also what keeps an image out of C4.ciphertext's evidence: a JPEG
measures ~7.97 bits/byte, yet it is no ciphertext (it is readable as it is).

Inside archives: the members of a ZIP or tar file (also gzip/bzip2/xz-compressed) and the content
of a single gzip stream are searched the same way, two levels deep, within
:data:`MAX_MEMBERS` members and :data:`MAX_UNPACKED` bytes per item. Raw frame dumps (a camera's
frames written as bare pixels, no header) have no signature: a product that may keep them
declares their size (TARGET.toml ``[data] raw_frames = { width, height, format }``, format one
of :data:`RAW_FORMATS`), and every data or log file whose length is a whole number of such
frames has its first, middle and last frame searched.

Not searched: images inside databases or other containers, raw dumps of an undeclared size,
and steganography.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fr_pbd.audit.checks import FAIL, PASS, TITLE_FROM_TABLE, Check, inconclusive
from fr_pbd.errors import AuditError, FrPbdError

__all__ = ["image_kind", "c3_face_images", "RawFrames", "parse_raw_frames", "RAW_FORMATS"]

MAX_MEMBERS = 256
MAX_UNPACKED = 256 << 20
MAX_DEPTH = 2
#: raw pixel layouts a camera dump may have: bytes per pixel (NV12: 1.5)
RAW_FORMATS = {"gray": 1.0, "bgr24": 3.0, "rgb24": 3.0, "yuyv": 2.0, "nv12": 1.5}


@dataclass(frozen=True)
class RawFrames:
    """The declared size of a product's raw frame dumps."""

    width: int
    height: int
    format: str

    @property
    def frame_bytes(self) -> int:
        return int(self.width * self.height * RAW_FORMATS[self.format])

    def frame(self, data: bytes, index: int) -> np.ndarray:
        """Frame ``index`` of a dump as a BGR image."""
        import cv2

        n = self.frame_bytes
        buf = np.frombuffer(data[index * n:(index + 1) * n], np.uint8)
        w, h = self.width, self.height
        if self.format == "gray":
            return cv2.cvtColor(buf.reshape(h, w), cv2.COLOR_GRAY2BGR)
        if self.format == "bgr24":
            return buf.reshape(h, w, 3).copy()
        if self.format == "rgb24":
            return buf.reshape(h, w, 3)[:, :, ::-1].copy()
        if self.format == "yuyv":
            return cv2.cvtColor(buf.reshape(h, w, 2), cv2.COLOR_YUV2BGR_YUY2)
        return cv2.cvtColor(buf.reshape(h * 3 // 2, w), cv2.COLOR_YUV2BGR_NV12)


def parse_raw_frames(value: object, where: str) -> RawFrames:
    """``[data] raw_frames = { width = 640, height = 480, format = "yuyv" }``."""
    if not isinstance(value, dict) or set(value) != {"width", "height", "format"}:
        raise AuditError(f"{where}: [data] raw_frames must be a table of width, height and format")
    w, h, fmt = value["width"], value["height"], value["format"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and 16 <= v <= 8192 for v in (w, h)):
        raise AuditError(f"{where}: [data] raw_frames width and height must be pixels from 16 to 8192")
    if fmt not in RAW_FORMATS:
        raise AuditError(f"{where}: [data] raw_frames format must be one of {', '.join(RAW_FORMATS)}")
    if fmt in ("yuyv", "nv12") and (w % 2 or h % 2):
        raise AuditError(f"{where}: [data] raw_frames {fmt} needs an even width and height")
    return RawFrames(w, h, fmt)


def _members(data: bytes, label: str, depth: int = 0) -> Iterator[tuple[str, bytes]]:
    """(label, bytes) of what an archive or a compressed stream holds, bounded, recursively."""
    if depth >= MAX_DEPTH:
        return
    found: list[tuple[str, bytes]] = []
    budget = [MAX_UNPACKED]

    def take(name: str, blob: bytes) -> None:
        if len(found) < MAX_MEMBERS and len(blob) <= budget[0]:
            budget[0] -= len(blob)
            found.append((f"{label} > {name}", blob))

    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                for info in z.infolist()[:MAX_MEMBERS]:
                    if not info.is_dir() and info.file_size <= budget[0]:
                        take(f"zip member {info.filename}", z.read(info))
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError, RuntimeError):
            pass
    elif len(data) > 262 and data[257:262] == b"ustar" or data[:3] in (b"\x1f\x8b\x08", b"BZh", b"\xfd7z"):
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as t:
                for m in t.getmembers()[:MAX_MEMBERS]:
                    if m.isfile() and m.size <= budget[0]:
                        f = t.extractfile(m)
                        if f is not None:
                            take(f"tar member {m.name}", f.read(m.size))
        except (tarfile.TarError, OSError, EOFError, ValueError, lzma.LZMAError, zlib.error):
            if data[:3] == b"\x1f\x8b\x08":  # a single gzip stream, not a tar
                try:
                    take("gzip content", gzip.GzipFile(fileobj=io.BytesIO(data)).read(MAX_UNPACKED))
                except (OSError, EOFError):
                    pass
            elif data[:3] == b"BZh":
                try:
                    take("bzip2 content", bz2.BZ2Decompressor().decompress(data, max_length=MAX_UNPACKED))
                except (OSError, ValueError, EOFError):
                    pass
    for name, blob in found:
        yield name, blob
        yield from _members(blob, name, depth + 1)

# fr-pbd's reader is deliberately wide in what it refuses (a polyglot any decoder could claim is
# refused); to call a file an image the audit asks for the format's full signature.
_STRICT = {
    "GIF": re.compile(rb"GIF8[79]a", re.S),
    "WebP": re.compile(rb"RIFF....WEBP", re.S),
    "AVIF/HEIF": re.compile(rb"....ftyp(avif|avis|heic|heix|hevc|heim|heis|mif1|msf1)", re.S),
    "Radiance HDR": re.compile(rb"#\?(RADIANCE|RGBE)", re.S),
    "PAM": re.compile(rb"P7\n"),
    "PFM": re.compile(rb"P[fF][ \t\n\r]"),
    "BMP": re.compile(rb"BM....\x00\x00\x00\x00", re.S),  # the two reserved words are zero
}


def image_kind(data: bytes) -> str | None:
    """The image format of ``data`` by its signature (JPEG, PNG, BMP, PNM, TIFF, WebP, ...), or None."""
    from fr_pbd.capture.image import image_format

    fmt = image_format(data[:64])
    if fmt is None:
        return None
    strict = _STRICT.get(fmt)
    return fmt if strict is None or strict.match(data) else None


#: The isolated decoder: OpenCV under an address-space limit; a PNG no larger than 4096 px a side on stdout.
_BOX = r"""
import resource, sys
import cv2, numpy as np
vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))
img = cv2.imdecode(np.frombuffer(sys.stdin.buffer.read(), np.uint8), cv2.IMREAD_COLOR)
if img is None:
    sys.exit(3)
h, w = img.shape[:2]
f = min(1.0, 4096 / max(h, w))
if f < 1:
    img = cv2.resize(img, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA)
ok, buf = cv2.imencode(".png", img)
sys.stdout.buffer.write(buf.tobytes() if ok else b"")
"""
BOX_TIMEOUT_S = 30.0


def decode_in_a_box(data: bytes) -> tuple[np.ndarray | None, str]:
    """An image fr-pbd's reader refuses, decoded by OpenCV in a child process with bounded memory and time:
    (the image, or None, and what happened in words)."""
    import subprocess
    import sys

    from fr_pbd.capture.image import decode_image

    try:
        p = subprocess.run([sys.executable, "-I", "-c", _BOX], input=data, capture_output=True,
                           timeout=BOX_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return None, f"the isolated decoder ran past {BOX_TIMEOUT_S:g} s"
    except OSError as exc:
        return None, f"the isolated decoder could not start: {exc.strerror or exc}"
    if p.returncode != 0 or not p.stdout:
        return None, ("OpenCV cannot decode it" if p.returncode == 3 else
                      f"the isolated decoder failed (exit {p.returncode}: over 1 GiB, or a broken file)")
    try:
        return decode_image(p.stdout, "the isolated decoder's PNG"), "decoded in an isolated process"
    except FrPbdError as exc:
        return None, f"the isolated decoder's PNG could not be read ({exc})"


def _candidates(src, raw: RawFrames | None) -> Iterator[tuple[str, str, bytes | np.ndarray]]:
    """(label, format, encoded bytes or a decoded raw frame) of every image among the items, in archives too."""
    for it in src.items:
        for label, data in ((it.label, it.data), *_members(it.data, it.label)):
            fmt = image_kind(data)
            if fmt is not None:
                yield label, fmt, data
            elif raw is not None and data and len(data) % raw.frame_bytes == 0:
                n = len(data) // raw.frame_bytes
                for i in sorted({0, n // 2, n - 1}):
                    yield f"{label} (raw {raw.format} frame {i + 1} of {n})", f"raw {raw.format}", raw.frame(data, i)


def c3_face_images(src, raw: RawFrames | None = None) -> Check:
    """Every image among the scanned items (in archives too, and declared raw frames) searched for a face."""
    from fr_pbd.capture.image import MAX_PIXELS, decode_image

    title = TITLE_FROM_TABLE
    faces, undecoded, clean, seen = [], [], [], 0
    detector = None
    for label, fmt, data in _candidates(src, raw):
        seen += 1
        how = ""
        if isinstance(data, np.ndarray):
            img = data
        else:
            try:
                img = decode_image(data, label)
            except FrPbdError as exc:
                img, how = decode_in_a_box(data)
                if img is None:
                    undecoded.append(f"{label}: a {fmt} image fr-pbd cannot decode ({exc}; {how}): a face in it "
                                     "is not seen")
                    continue
                how = f", {how}"
        if detector is None:
            try:
                from fr_pbd.capture.detect import load_detector

                detector = load_detector()
            except FrPbdError as exc:
                return inconclusive("C3.face-images", "C3", title,
                                    f"{label} is a {fmt} image, and the face detector cannot be loaded: {exc}",
                                    "fr-pbd's detector models (FR_PBD_MODELS, `fr-pbd models fetch`)")
        found = detector.detect(img)
        h, w = img.shape[:2]
        if found:
            sizes = ", ".join(f"{round(float(f.box[2]))}x{round(float(f.box[3]))}" for f in found[:5])
            faces.append(f"{label}: a {fmt} image ({w}x{h}{how}) holding {len(found)} face(s) of {sizes} pixels")
        else:
            clean.append(f"{label}: a {fmt} image ({w}x{h}{how}), no face found")
    values = {"images": seen, "with_faces": len(faces), "undecoded": len(undecoded)}
    rule = (f"every image recognised by its signature (also inside ZIP, tar and compressed files), decoded within "
            f"{MAX_PIXELS / 1e6:.0f} MP, searched with YuNet"
            + (f"; raw frames of {raw.width}x{raw.height} {raw.format} as declared" if raw is not None else
               "; raw frame dumps not searched (no size declared: [data] raw_frames)"))
    if faces:
        return Check("C3.face-images", "C3", title, FAIL, f"a face image at rest: {faces[0]}",
                     faces[:50] + undecoded + clean[:20] + [rule], values)
    if undecoded:
        return inconclusive("C3.face-images", "C3", title, undecoded[0],
                            "a review by hand of the images listed (convert them to PNG or JPEG and run "
                            "`fr-pbd detect`)", undecoded + clean[:20] + [rule], values)
    summary = (f"{seen} image(s) among {len(src.items)} item(s), none with a face" if seen
               else f"no image among {len(src.items)} item(s) scanned")
    return Check("C3.face-images", "C3", title, PASS, summary, clean[:50] + [rule], values)
