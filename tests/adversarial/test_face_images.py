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


def test_formats_fr_pbd_refuses_are_decoded_in_a_box_and_a_bomb_is_named_not_passed(faces_dir):
    """A face in TIFF, WebP or GIF (formats fr-pbd's reader refuses: the image bombs' formats) is decoded by
    OpenCV in a child process with bounded memory: FAIL. The 11 kB TIFF bomb (30000x30000) only kills that
    child: INCONCLUSIVE, named, never PASS. Before, every TIFF/WebP/GIF was INCONCLUSIVE, faces and all."""
    import resource

    from fr_pbd.audit.files import Item, Sources
    from fr_pbd.audit.images import c3_face_images
    from tests import bomb_images as bombs

    face = cv2.imread(str(faces_dir / "obama3.jpg"))
    for ext, fmt in ((".tiff", "TIFF"), (".webp", "WebP"), (".gif", "GIF")):
        ok, buf = cv2.imencode(ext, face)
        assert ok
        c = c3_face_images(Sources(items=[Item(f"snap{ext}", "file", buf.tobytes()),
                                          Item("notes.txt", "file", b"Pfoo, BM, GIF, RIFF: not images")]))
        assert c.status == FAIL and f"snap{ext}: a {fmt} image" in c.summary, c.summary
        assert "decoded in an isolated process" in c.summary and c.values["images"] == 1  # the text is no image
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c = c3_face_images(Sources(items=[Item("bomb.tif", "file", bombs.tiff_bomb())]))
    assert c.status == INCONCLUSIVE and "bomb.tif: a TIFF image fr-pbd cannot decode" in c.summary, c.summary
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB: the audit kept its memory


def test_fr_pbd_home_has_no_face_image(template_home):
    by_id = {c.id: c for c in run_audit(template_home, use_strace=False)}
    c = by_id["C3.face-images"]
    assert c.status == PASS and c.summary.startswith("no image among"), explain(c)


# --------------------------------------------------------------------------------------
# inside archives and raw frame dumps (issue 24 item 4)
# --------------------------------------------------------------------------------------
def _items(*pairs):
    from fr_pbd.audit.files import Item, Sources

    return Sources(items=[Item(label, "file", data) for label, data in pairs])


def test_a_face_inside_an_archive_fails(faces_dir, tmp_path):
    """Before, the audit looked only at an item's first bytes: a face JPEG in a ZIP, a tar.gz or a .gz was
    unseen (the control: the same check with archives left closed says no image at all)."""
    import gzip
    import io
    import tarfile
    import zipfile

    from fr_pbd.audit import images
    from fr_pbd.audit.images import c3_face_images

    jpg = (faces_dir / "obama3.jpg").read_bytes()
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("snapshots/attempt-7.jpg", jpg)
    t = io.BytesIO()
    with tarfile.open(fileobj=t, mode="w:gz") as f:
        info = tarfile.TarInfo("faces/obama.jpg")
        info.size = len(jpg)
        f.addfile(info, io.BytesIO(jpg))
    inner = io.BytesIO()  # a zip inside a tar.gz: two levels
    with tarfile.open(fileobj=inner, mode="w:gz") as f:
        info = tarfile.TarInfo("backup.zip")
        info.size = len(z.getvalue())
        f.addfile(info, io.BytesIO(z.getvalue()))
    for label, data, member in (("snaps.zip", z.getvalue(), "zip member snapshots/attempt-7.jpg"),
                                ("faces.tar.gz", t.getvalue(), "tar member faces/obama.jpg"),
                                ("last.jpg.gz", gzip.compress(jpg), "gzip content"),
                                ("nested.tgz", inner.getvalue(), "zip member snapshots/attempt-7.jpg")):
        c = c3_face_images(_items((label, data)))
        assert c.status == FAIL and f"{label} > " in c.summary and member in c.summary, c.summary
        # control: the same items with archives left closed (the audit before): no image seen
        saved = images._members
        images._members = lambda *_a, **_k: iter(())
        try:
            before = c3_face_images(_items((label, data)))
        finally:
            images._members = saved
        assert before.status == PASS and before.values["images"] == 0, before.summary


def test_a_raw_frame_dump_of_the_declared_size_fails(faces_dir):
    from fr_pbd.audit.images import RawFrames, c3_face_images

    bgr = cv2.imread(str(faces_dir / "obama3.jpg"))
    h, w = bgr.shape[:2]
    w -= w % 2
    h -= h % 2
    bgr = bgr[:h, :w].copy()
    dumps = {"bgr24": bgr.tobytes(), "gray": cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).tobytes(),
             "yuyv": _yuyv(bgr)}
    for fmt, frame in dumps.items():
        dump = frame * 3  # three frames in a row, as a camera ring buffer keeps them
        c = c3_face_images(_items(("frames.raw", dump)), RawFrames(w, h, fmt))
        assert c.status == FAIL and "frames.raw (raw " in c.summary and "frame 1 of 3" in c.summary, (fmt, c.summary)
        # control: without the declared size a raw dump has no signature, and nothing is searched
        c = c3_face_images(_items(("frames.raw", dump)))
        assert c.status == PASS and c.values["images"] == 0 and "raw frame dumps not searched" in " ".join(c.details)


def _yuyv(bgr):
    import numpy as np

    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)
    y, u, v = yuv[:, :, 0], yuv[:, :, 1], yuv[:, :, 2]
    out = np.empty((bgr.shape[0], bgr.shape[1] * 2), np.uint8)
    out[:, 0::2] = y
    out[:, 1::4] = u[:, 0::2]
    out[:, 3::4] = v[:, 0::2]
    return out.tobytes()


def test_a_bad_raw_frames_table_is_a_one_line_error():
    import pytest

    from fr_pbd.audit.images import parse_raw_frames
    from fr_pbd.errors import AuditError

    for table, words in (({"width": 640, "height": 480}, "width, height and format"),
                         ({"width": 8, "height": 480, "format": "gray"}, "pixels"),
                         ({"width": 640, "height": 480, "format": "mjpeg"}, "format must be"),
                         ({"width": 641, "height": 480, "format": "yuyv"}, "even")):
        with pytest.raises(AuditError, match=words):
            parse_raw_frames(table, "t.toml")
