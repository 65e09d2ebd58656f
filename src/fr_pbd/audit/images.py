"""C3.face-images: no face image at rest in the product's files.

A face photo kept by a face login (a snapshot of each attempt, an enrolment photo) is
biometric data as much as a template. Every item the audit scans (:mod:`fr_pbd.audit.files`:
every file in the data and log directories or the home, every log, what the product wrote
while traced and the files it holds open for writing) is recognised as an image by its first
bytes with fr-pbd's own reader (:func:`fr_pbd.capture.image.image_format`), never by its name;
an image of a format fr-pbd reads is decoded within :data:`~fr_pbd.capture.image.MAX_PIXELS`
(:func:`~fr_pbd.capture.image.decode_image`) and searched with fr-pbd's face detector. A face
is a FAIL naming the file and the face's size in pixels, never its pixels or the detector's
score. An image fr-pbd cannot decode (TIFF, WebP, GIF, ..., or one over the pixel budget) may
hold a face the audit cannot see: INCONCLUSIVE, named.

:func:`image_kind` is also what keeps an image out of C4.ciphertext's evidence: a JPEG
measures ~7.97 bits/byte, yet it is no ciphertext (it is readable as it is).

Not searched: images inside archives, databases or other containers, raw frame dumps, and
steganography.
"""

from __future__ import annotations

import re

from fr_pbd.audit.checks import FAIL, PASS, TITLE_FROM_TABLE, Check, inconclusive
from fr_pbd.errors import FrPbdError

__all__ = ["image_kind", "c3_face_images"]

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


def c3_face_images(src) -> Check:
    """Every image among the scanned items decoded and searched for a face."""
    from fr_pbd.capture.image import MAX_PIXELS, decode_image

    title = TITLE_FROM_TABLE
    faces, undecoded, clean, seen = [], [], [], 0
    detector = None
    for it in src.items:
        fmt = image_kind(it.data)
        if fmt is None:
            continue
        seen += 1
        try:
            img = decode_image(it.data, it.label)
        except FrPbdError as exc:
            undecoded.append(f"{it.label}: a {fmt} image fr-pbd cannot decode ({exc}): a face in it is not seen")
            continue
        if detector is None:
            try:
                from fr_pbd.capture.detect import load_detector

                detector = load_detector()
            except FrPbdError as exc:
                return inconclusive("C3.face-images", "C3", title,
                                    f"{it.label} is a {fmt} image, and the face detector cannot be loaded: {exc}",
                                    "fr-pbd's detector models (FR_PBD_MODELS, `fr-pbd models fetch`)")
        found = detector.detect(img)
        h, w = img.shape[:2]
        if found:
            sizes = ", ".join(f"{round(float(f.box[2]))}x{round(float(f.box[3]))}" for f in found[:5])
            faces.append(f"{it.label}: a {fmt} image ({w}x{h}) holding {len(found)} face(s) of {sizes} pixels")
        else:
            clean.append(f"{it.label}: a {fmt} image ({w}x{h}), no face found")
    values = {"images": seen, "with_faces": len(faces), "undecoded": len(undecoded)}
    rule = f"every image recognised by its signature, decoded within {MAX_PIXELS / 1e6:.0f} MP, searched with YuNet"
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
