"""Image input: what is accepted, and every kind of bad input refused with a typed one-line error."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from fr_pbd.capture.image import MAX_PIXELS, load_image
from fr_pbd.errors import ImageError


def png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + chunk + iend


def expect_error(source, fragment: str) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_image(source)
    message = str(info.value)
    assert fragment in message, message
    assert "\n" not in message
    return info.value


def test_matches_cv2_imread_including_exif_rotation(spoof_dir, faces_dir):
    for path in [spoof_dir / "live_T1.jpg", spoof_dir / "spoof_print_F1.jpg", faces_dir / "obama.jpg"]:
        ours = load_image(path)
        ref = cv2.imread(str(path))
        assert ours.dtype == np.uint8 and ours.shape == ref.shape
        assert np.array_equal(ours, ref), path.name
    # The spoof samples are stored landscape with EXIF orientation 6: upright means portrait.
    assert load_image(spoof_dir / "live_T1.jpg").shape[:2] == (640, 480)


def test_rgba_png_matches_its_jpeg_twin(faces_dir):
    rgba = load_image(faces_dir / "obama2_rgba.png")
    jpg = load_image(faces_dir / "obama2.jpg")
    assert rgba.shape == jpg.shape == (1200, 626, 3)
    assert np.abs(rgba.astype(int) - jpg.astype(int)).mean() < 8


def test_grey_and_16_bit_arrays_and_bytes(faces_dir):
    bgr = load_image(faces_dir / "obama_small.jpg")
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    assert load_image(grey).shape == bgr.shape
    assert load_image(grey[:, :, None]).shape == bgr.shape
    wide = bgr.astype(np.uint16) * 257
    assert np.array_equal(load_image(wide), bgr)
    ok, png16 = cv2.imencode(".png", wide)
    assert ok and np.array_equal(load_image(png16.tobytes()), bgr)
    assert np.array_equal(load_image((faces_dir / "obama_small.jpg").read_bytes()), bgr)


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.jpg", "no such file")


def test_directory(tmp_path):
    expect_error(tmp_path, "not a regular file")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    expect_error(p, "empty")


def test_not_an_image(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a picture\n" * 20)
    expect_error(p, "not an image fr-pbd can decode (it reads JPEG, PNG, BMP, PNM (PBM/PGM/PPM))")


def test_truncated_jpeg_and_png(tmp_path, faces_dir):
    data = (faces_dir / "obama_small.jpg").read_bytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    expect_error(p, "truncated")
    png = (faces_dir / "astronaut.png").read_bytes()
    q = tmp_path / "cut.png"
    q.write_bytes(png[: len(png) - 100])
    expect_error(q, "truncated")


def test_decompression_bomb_refused_from_header(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(png_header_only(10_000, 10_000))
    expect_error(p, "is 10000x10000 = 100 MP by its PNG header; the limit is 50 MP")
    assert 10_000 * 10_000 > MAX_PIXELS


def test_zero_size_and_bad_arrays():
    expect_error(np.zeros((0, 10, 3), np.uint8), "zero size")
    expect_error(np.zeros((10, 0), np.uint8), "zero size")
    expect_error(np.zeros((10, 10, 3), np.float32), "dtype float32")
    expect_error(np.zeros((10, 10, 2), np.uint8), "2 channels")
    expect_error(np.zeros((2, 10, 10, 3), np.uint8), "shape")
    expect_error(np.zeros(10, np.uint8), "shape")
    expect_error(12345, "cannot read an image from a int")
