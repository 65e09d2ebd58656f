"""Face images at rest: C3.face-images finds them; C4.ciphertext no longer calls a JPEG ciphertext.

The product is the honest one of ``shapes.py`` with one habit of real face logins: it keeps a
snapshot of an attempt in its data directory (``--keep IMG``, mode 0600, nothing else wrong). A
face photo is biometric data: FAIL naming the file and the face's size. The same product keeping
a JPEG without a face passes. A product keeping only face JPEGs (``--no-record``) once got
C4.ciphertext PASS because a JPEG measures ~7.97 bits/byte; the control runs the old rule (the
entropy rule alone) on the same file and shows it still says "ciphertext".
"""

from __future__ import annotations

from pathlib import Path

import cv2

from fr_pbd.audit import FAIL, INCONCLUSIVE, PASS, run_audit, scan
from tests.adversarial.test_shapes import audit, explain, need_strace, write_target


def _no_face_jpeg(faces: Path, where: Path) -> Path:
    img = cv2.imread(str(faces / "no_face_coffee.png"))
    assert img is not None
    out = where / "coffee.jpg"
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    out.write_bytes(buf.tobytes())
    return out


def test_a_face_snapshot_at_rest_fails_and_is_no_ciphertext(tmp_path, faces_dir, spoof_dir):
    need_strace()
    root = tmp_path / "product"
    root.mkdir()
    snap = root / "data" / "snapshots" / "attempt-0.jpg"
    by_id = audit(write_target(root, faces_dir, spoof_dir, ["--keep", str(faces_dir / "obama3.jpg"),
                                                            "--no-record"]))
    c = by_id["C3.face-images"]
    assert c.status == FAIL and str(snap) in c.summary and "face(s) of" in c.summary, explain(c)
    assert c.values["with_faces"] == 1
    # the file is named and its face measured; none of its bytes is in the evidence
    pixels = snap.read_bytes() if snap.exists() else (faces_dir / "obama3.jpg").read_bytes()
    assert not any(pixels[i:i + 16].hex() in " ".join(c.details) for i in range(0, 4096, 512))
    k = by_id["C4.ciphertext"]
    assert k.status == FAIL and "a JPEG image, readable as it is: not ciphertext" in k.summary, explain(k)
    assert "each >= 7.9 bits/byte" not in k.summary
    # control: the old rule (entropy alone) on the same bytes calls the face photo ciphertext
    data = (faces_dir / "obama3.jpg").read_bytes()
    assert scan.entropy_bits_per_byte(data[:1 << 20]) >= 7.9 and len(data) >= 1024


def test_a_snapshot_without_a_face_passes(tmp_path, faces_dir, spoof_dir):
    need_strace()
    root = tmp_path / "product"
    root.mkdir()
    coffee = _no_face_jpeg(faces_dir, tmp_path)
    by_id = audit(write_target(root, faces_dir, spoof_dir, ["--keep", str(coffee)]))
    c = by_id["C3.face-images"]
    assert c.status == PASS and c.values == {"images": 1, "with_faces": 0, "undecoded": 0}, explain(c)
    assert "attempt-0.jpg: a JPEG image (600x400), no face found" in " ".join(c.details)
    # an image is never ciphertext, even without a face
    assert by_id["C4.ciphertext"].status == FAIL and "JPEG image" in by_id["C4.ciphertext"].summary


def test_an_image_fr_pbd_cannot_decode_is_named_not_passed(tmp_path, faces_dir):
    """A TIFF of a face: fr-pbd refuses TIFF, so the audit cannot look inside: INCONCLUSIVE, never PASS."""
    from fr_pbd.audit.files import Item, Sources
    from fr_pbd.audit.images import c3_face_images

    ok, tif = cv2.imencode(".tiff", cv2.imread(str(faces_dir / "obama3.jpg")))
    assert ok
    c = c3_face_images(Sources(items=[Item("snap.tif", "file", tif.tobytes()),
                                      Item("notes.txt", "file", b"Pfoo, BM, GIF, RIFF: not images")]))
    assert c.status == INCONCLUSIVE and "snap.tif: a TIFF image fr-pbd cannot decode" in c.summary, c.summary
    assert c.values["images"] == 1  # the text file that starts like a PFM header is no image


def test_fr_pbd_home_has_no_face_image(template_home):
    by_id = {c.id: c for c in run_audit(template_home, use_strace=False)}
    c = by_id["C3.face-images"]
    assert c.status == PASS and c.summary.startswith("no image among"), explain(c)
