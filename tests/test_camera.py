"""Camera sources, with a recorded video file standing in for a camera."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from fr_pbd.capture import camera
from fr_pbd.capture.camera import CameraSource
from fr_pbd.capture.detect import detect_faces
from fr_pbd.capture.image import load_image
from fr_pbd.errors import CameraError, CameraUnavailableError


@pytest.fixture()
def face_video(tmp_path, faces_dir):
    frame = cv2.resize(load_image(faces_dir / "obama4.jpg"), (640, 360))
    path = tmp_path / "camera.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 360))
    assert writer.isOpened()
    for _ in range(5):
        writer.write(frame)
    writer.release()
    return path


def test_video_file_stands_in_for_a_camera(face_video, models_env):
    with CameraSource(str(face_video), timeout_s=5) as cam:
        frames = [cam.read() for _ in range(5)]
        with pytest.raises(CameraError, match="stopped delivering"):
            cam.read()
    assert all(f.shape == (360, 640, 3) and f.dtype == np.uint8 for f in frames)
    assert len(detect_faces(frames[2])) == 1


def test_missing_source(tmp_path):
    with pytest.raises(CameraError, match="no such device or file"):
        CameraSource(str(tmp_path / "nocam.avi"))


def test_unopenable_source(tmp_path):
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CameraError, match="could not be opened"):
        CameraSource(str(junk))


class StallingCapture:
    """A device that delivers one frame and then blocks, as a hung USB camera does."""

    def __init__(self, frame):
        self.frame = frame
        self.reads = 0
        self.released = False

    def isOpened(self):
        return True

    def read(self):
        self.reads += 1
        if self.reads > 1:
            time.sleep(3)
        return True, self.frame

    def release(self):
        self.released = True


def test_stalled_camera_times_out(monkeypatch):
    fake = StallingCapture(np.zeros((48, 64, 3), np.uint8))
    monkeypatch.setattr(camera, "_open_capture", lambda source: fake)
    with CameraSource("0", timeout_s=0.5) as cam:
        assert cam.read().shape == (48, 64, 3)
        start = time.monotonic()
        with pytest.raises(CameraError, match="no frame within 0.5 s"):
            cam.read()
        assert time.monotonic() - start < 2.0
    assert fake.released


def test_a_still_image_is_not_a_camera(faces_dir, tmp_path):
    """A photo (any format OpenCV could read, by its bytes or its name) is refused before OpenCV opens it:
    FFmpeg would decode it without the image module's checks (tests/test_camera_bombs.py: the bombs)."""
    photo = faces_dir / "obama4.jpg"
    with pytest.raises(CameraUnavailableError, match=r"is a still image \(JPEG\), not a camera"):
        CameraSource(str(photo))
    renamed = tmp_path / "camera.avi"
    renamed.write_bytes(photo.read_bytes())
    with pytest.raises(CameraUnavailableError, match=r"still image \(JPEG\)"):
        CameraSource(str(renamed))
    by_name = tmp_path / "frame.tga"
    by_name.write_bytes(b"\0" * 100)
    with pytest.raises(CameraUnavailableError, match=r"still image \(a .tga file\)"):
        CameraSource(str(by_name))


class HugeCapture(StallingCapture):
    """A source that opens and reports frames larger than the pixel budget."""

    def get(self, prop):
        return {cv2.CAP_PROP_FRAME_WIDTH: 10_000.0, cv2.CAP_PROP_FRAME_HEIGHT: 8_000.0}.get(prop, 0.0)


def test_a_source_with_frames_over_the_budget_is_closed_before_its_first_read(monkeypatch):
    fake = HugeCapture(np.zeros((8, 8, 3), np.uint8))
    monkeypatch.setattr(camera, "_new_capture", lambda source: fake)
    with pytest.raises(CameraUnavailableError, match="gives 10000x8000 frames, more than the 50 MP"):
        CameraSource("0")
    assert fake.released and fake.reads == 0
