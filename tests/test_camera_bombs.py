"""A still image is not a camera: ``--camera FILE`` never hands an image bomb to FFmpeg's decoders.

OpenCV opens a camera file through FFmpeg, which reads stills too, with none of
``fr_pbd.capture.image``'s checks. Before: a 1 kB BMP RLE8 declaring 16000 x 16000 given to
``fr-pbd verify --camera`` took 1.9 GB and 6.4 s on this project's machine (decoded at open, then
at the first read), and answered no only because the frame came after the 5 s camera timeout.
Each bomb is made in the test (``tests/bomb_images.py``); each refusal is measured beside the
same command refusing a camera file that does not exist (start-up and the models it loads).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from fr_pbd.capture.image import MAX_PIXELS, load_image
from tests import bomb_images as bombs
from tests.test_image_bombs import _clean_env, run_measured

SIDE = 12_000  #: 12000 x 12000 = 144 MP, nearly 3 times the pixel budget


def qoi_bomb(w: int = SIDE, h: int = SIDE) -> bytes:
    """*Real*: a QOI image (a format FFmpeg recognises by content and fr-pbd does not know) whose few
    run-length codes FFmpeg's decoder stretches over a whole w x h RGB frame."""
    return b"qoif" + struct.pack(">IIBB", w, h, 3, 0) + bytes([0xC0 | 61]) * 1000 + b"\0" * 7 + b"\1"


def y4m_header_only(w: int, h: int) -> bytes:
    """A YUV4MPEG2 video (a real video container) declaring w x h frames, with one truncated frame."""
    return f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode() + b"FRAME\n" + b"\x80" * 1000


#: name -> (file name, bytes, what the one-line refusal says)
CAMERA_BOMBS = {
    "bmp": ("camera.bmp", lambda: bombs.bmp_bomb(SIDE, -SIDE), "still image (BMP)"),
    "bmp named as a video": ("camera.avi", lambda: bombs.bmp_bomb(SIDE, -SIDE), "still image (BMP)"),
    "tiff named as a video": ("camera.mp4", lambda: bombs.tiff_bomb(SIDE, SIDE), "still image (TIFF)"),
    "png": ("camera.mkv", lambda: bombs.png_bomb(SIDE, SIDE), "still image (PNG)"),
    "ppm": ("camera.mov", lambda: bombs.pnm_bomb(b"P6", SIDE, SIDE), "still image (PNM)"),
    "webp": ("camera.webm", lambda: bombs.webp_bomb(), "still image (WebP)"),
    "gif": ("camera", lambda: bombs.gif_bomb(), "still image (GIF)"),
    "by name alone": ("camera.tga", lambda: b"\0" * 64, "still image (a .tga file)"),
    "qoi, unknown to fr-pbd": ("camera.cam", lambda: qoi_bomb(), f"gives {SIDE}x{SIDE} frames"),
    "a video of oversized frames": ("camera.y4m", lambda: y4m_header_only(10_000, 10_000),
                                    "gives 10000x10000 frames"),
}

CONTROL = r"""
import json, resource, sys, time
import cv2
vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (3 << 30), vm + (3 << 30)))  # a net: 3 GB more than now
hwm = lambda: next(int(l.split()[1]) // 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
before, t = hwm(), time.perf_counter()
cap = cv2.VideoCapture(sys.argv[1])
out = {"opened": cap.isOpened(), "size": [cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)]}
try:
    ok, frame = cap.read()
    out["frame"] = list(frame.shape) if ok else None
except cv2.error as exc:
    out["frame"] = str(exc).strip().splitlines()[-1]
out["grew_mb"], out["s"] = hwm() - before, time.perf_counter() - t
print(json.dumps(out))
"""


@pytest.mark.parametrize("name", ["bmp", "qoi, unknown to fr-pbd"])
def test_control_opencv_alone_decodes_the_still_as_a_camera(name, tmp_path):
    """Unguarded: cv2.VideoCapture opens the still through FFmpeg and decodes the whole frame (at least
    432 MB for 12000 x 12000 BGR; the BMP at 16000 x 16000 took 1.75 GB and 4.5 s here)."""
    file_name, make, _ = CAMERA_BOMBS[name]
    path = tmp_path / file_name
    path.write_bytes(make())
    p = subprocess.run([sys.executable, "-c", CONTROL, str(path)], capture_output=True, text=True,
                       env=_clean_env(), timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["opened"] and out["size"] == [SIDE, SIDE], out
    assert out["frame"] == [SIDE, SIDE, 3], out
    assert out["grew_mb"] > SIDE * SIDE * 3 / 2**20, out  # the frame itself, and more
    assert len(path.read_bytes()) < 2_000


@pytest.fixture()
def refuse_env(models_env, home):
    return _clean_env(FR_PBD_MODELS=str(models_env), FR_PBD_HOME=str(home))


def test_verify_refuses_each_camera_bomb_in_bounded_time_and_memory(refuse_env, tmp_path):
    """``fr-pbd verify --camera FILE``: exit 2, one line, within 1 s and 50 MB of refusing a missing
    camera file (so far under the 432 MB one 12000 x 12000 frame needs)."""
    rc, out, err, ref_wall, ref_rss = run_measured(["verify", "--camera", str(tmp_path / "none.avi")], refuse_env,
                                                   tmp_path)
    assert rc == 2 and "no such device or file" in err, err
    for name, (file_name, make, fragment) in CAMERA_BOMBS.items():
        path = tmp_path / file_name
        path.write_bytes(make())
        rc, out, err, wall, rss = run_measured(["verify", "--camera", str(path)], refuse_env, tmp_path)
        path.unlink()
        assert rc == 2 and out == "", (name, rc, out, err[-2000:])
        if name == "a video of oversized frames":  # FFmpeg's own line about the truncated frame comes first
            err = err.split("\n", 1)[1] if err.startswith("Truncating packet") else err
        assert err.count("\n") == 1 and err.startswith("fr-pbd: error: camera source ") and fragment in err, \
            (name, err)
        assert "nothing was read" in err and "Traceback" not in err
        assert wall < ref_wall + 1.0, (name, wall, ref_wall)
        assert rss < ref_rss + 50, (name, rss, ref_rss)


def test_the_pixel_budget_is_the_image_budget():
    assert 10_000 * 10_000 > MAX_PIXELS and SIDE * SIDE > MAX_PIXELS


def _record(path: Path, fourcc: str, frame) -> bool:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (frame.shape[1], frame.shape[0]))
    if not writer.isOpened():
        return False
    for _ in range(10):
        writer.write(frame)
    writer.release()
    return True


def test_a_real_video_still_works_as_a_camera(refuse_env, faces_dir, tmp_path):
    """The genuine case: a real short video (as a webcam recording) made from a photo of the enrolled
    person; its frames reach the verifier, which says yes. AVI's container is RIFF, as WebP's is, and
    MP4's is ISO-BMFF (ftyp), as AVIF's is: only RIFF....WEBP and an image brand are stills."""
    frame = cv2.resize(load_image(faces_dir / "obama4.jpg"), (640, 360))  # its own aspect ratio
    avi = tmp_path / "recording.avi"
    assert _record(avi, "MJPG", frame)
    assert avi.read_bytes()[:4] == b"RIFF" and avi.read_bytes()[8:12] == b"AVI "
    rc, out, err, _, _ = run_measured(["verify", "--camera", str(avi)], refuse_env, tmp_path)
    assert (rc, out) == (0, "yes\n"), err
    mp4 = tmp_path / "recording.mp4"
    if not _record(mp4, "mp4v", frame):
        pytest.skip("this OpenCV build cannot write MPEG-4")
    assert mp4.read_bytes()[4:8] == b"ftyp"
    rc, out, err, _, _ = run_measured(["verify", "--camera", str(mp4)], refuse_env, tmp_path)
    assert (rc, out) == (0, "yes\n"), err
