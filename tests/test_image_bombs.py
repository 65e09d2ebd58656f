"""Image bombs: every format is refused, or its size read and bounded, before OpenCV allocates.

The bombs are made here (tests/bomb_images.py), never committed. Beside them the unguarded
control: the same TIFF handed straight to ``cv2.imdecode`` asks for 2.7 GB (under an address-space
limit, so it fails fast instead of taking 5 GB and 17 s); and the genuine images still decode
to the same pixels.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fr_pbd.capture import image as image_mod
from fr_pbd.capture.image import ACCEPTED, MAX_PIXELS, image_format, load_image
from fr_pbd.errors import ImageError
from tests import bomb_images as bombs
from tests.test_daemon import daemon_env  # noqa: F401 - the fixture: a running daemon on a frames directory

REPO = Path(__file__).resolve().parent.parent
OPENCV_LIMITS = ("OPENCV_IO_MAX_IMAGE_PIXELS", "OPENCV_IO_MAX_IMAGE_WIDTH", "OPENCV_IO_MAX_IMAGE_HEIGHT")
TIFF_BYTES = 30_000 * 30_000 * 3  #: what OpenCV allocates for the TIFF bomb's image alone


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without OpenCV's size limits (the test process may have set them by importing fr_pbd)."""
    env = {k: v for k, v in os.environ.items() if k not in OPENCV_LIMITS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def small_face(faces_dir: Path) -> np.ndarray:
    return cv2.imread(str(faces_dir / "obama_small.jpg"))


def jpeg_bytes(img: np.ndarray, *params: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, list(params))
    assert ok
    return buf.tobytes()


# --------------------------------------------------------------------------------------
# the bombs, and what each must be refused as
# --------------------------------------------------------------------------------------
def _jpeg_bombs(face: np.ndarray) -> dict[str, tuple[bytes, str]]:
    base = jpeg_bytes(face)
    prog = jpeg_bytes(face, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    over = "= 900 MP by its JPEG header; the limit is 50 MP"
    out = {
        "JPEG SOF0 (baseline)": (bombs.jpeg_with_size(base, 30_000, 30_000), over),
        "JPEG SOF1 (extended)": (bombs.jpeg_with_size(base, 30_000, 30_000, 0xC1), over),
        "JPEG SOF2 (progressive)": (bombs.jpeg_with_size(prog, 30_000, 30_000), over),
        "JPEG SOF3 (lossless)": (bombs.jpeg_with_size(base, 30_000, 30_000, 0xC3), over),
        "JPEG SOF9 (arithmetic)": (bombs.jpeg_with_size(base, 30_000, 30_000, 0xC9), over),
        "JPEG SOF10 (progressive arithmetic)": (bombs.jpeg_with_size(prog, 30_000, 30_000, 0xCA), over),
        "JPEG SOF height 0 (DNL)": (bombs.jpeg_with_size(base, 640, 0), "zero size"),
    }
    # A second frame header after the first scan, declaring a huge image: every SOF counts.
    eoi = base.rindex(b"\xff\xd9")
    second_sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 30_000, 30_000, 1) + b"\x01\x11\x00"
    out["JPEG second SOF after the scan"] = (base[:eoi] + second_sof + base[eoi:], over)
    # Too many scans: a time bomb under the pixel budget.
    sos = prog.index(b"\xff\xda")
    scan = prog[sos:prog.index(b"\xff", sos + 2 + struct.unpack(">H", prog[sos + 2:sos + 4])[0])]
    out["JPEG with 1000 scans"] = (prog[:sos] + scan * 1000 + b"\xff\xd9", "more than 100 JPEG scans")
    return out


def all_bombs(faces_dir: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, a fragment of the one-line refusal)."""
    face = small_face(faces_dir)
    over = "= 900 MP by its {} header; the limit is 50 MP"
    named = {"BigTIFF": "TIFF", "JPEG 2000 codestream": "JPEG 2000"}
    out = {name: (data, f"is a {named.get(name, name)} image; fr-pbd reads only {ACCEPTED}")
           for name, data in bombs.OTHER_FORMATS.items()}
    out.update({
        "PNG 30000x30000": (bombs.png_bomb(), over.format("PNG")),
        "BMP RLE8 30000x-30000": (bombs.bmp_bomb(), over.format("BMP")),
        "BMP OS/2 32000x32000": (bombs.bmp_core_bomb(), "= 1024 MP by its BMP header"),
        "PPM 16-bit, comments": (bombs.pnm_bomb(b"P6"), over.format("PNM")),
        "PGM ASCII": (bombs.pnm_bomb(b"P2", maxval=255), over.format("PNM")),
        "PBM binary": (bombs.pnm_bomb(b"P4"), over.format("PNM")),
        "polyglot: JPEG magic + TIFF body": (b"\xff\xd8\xff" + bombs.tiff_bomb() + b"\xff\xd9",
                                              "corrupt (a JPEG segment of"),
        "polyglot: TIFF magic + JPEG body": (b"II*\x00" + jpeg_bytes(face), "is a TIFF image"),
        "polyglot: BMP magic + AVIF box": (b"BM\x00\x00ftypavif" + bytes(64), "is a AVIF/HEIF image"),
        "polyglot: PNG signature + TIFF body": (b"\x89PNG\r\n\x1a\n" + bombs.tiff_bomb() + b"IEND" + bytes(8),
                                                 "MP by its PNG header"),
        "polyglot: PNM magic + TIFF body": (b"P6 " + bombs.tiff_bomb(), "not a PNM fr-pbd can read"),
    })
    out.update(_jpeg_bombs(face))
    return out


CLI_BOMBS = ("TIFF", "WebP", "GIF", "PNG 30000x30000", "BMP RLE8 30000x-30000", "PPM 16-bit, comments",
             "JPEG SOF2 (progressive)", "polyglot: JPEG magic + TIFF body")


@pytest.fixture(scope="module")
def bomb_set(faces_dir) -> dict[str, tuple[bytes, str]]:
    return all_bombs(faces_dir)


@pytest.fixture()
def no_opencv(monkeypatch):
    """cv2.imdecode as fr-pbd calls it, replaced by a tripwire: a bomb must be refused before it."""
    calls: list[int] = []

    def tripwire(buf, flags):
        calls.append(len(buf))
        raise AssertionError("OpenCV was asked to decode a bomb")

    monkeypatch.setattr(image_mod.cv2, "imdecode", tripwire)
    return calls


# --------------------------------------------------------------------------------------
# the unguarded controls: what OpenCV alone does with the TIFF bomb
# --------------------------------------------------------------------------------------
CONTROL = r"""
import contextlib, io, json, resource, sys, time
if sys.argv[2] != "cv2":  # a real fr-pbd command first: the modules it loads, in its order
    import fr_pbd.cli
    with contextlib.redirect_stdout(io.StringIO()):
        assert fr_pbd.cli.main(sys.argv[2].split() + [sys.argv[1]]) == 0
import cv2, numpy as np
vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))  # 1 GB more than now
out = {}
for name, data in (("genuine", open(sys.argv[1], "rb").read()), ("bomb", sys.stdin.buffer.read())):
    t = time.perf_counter()
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        out[name] = None if img is None else list(img.shape)
    except cv2.error as exc:
        out[name] = str(exc).strip().splitlines()[-1]
    out[name + "_s"] = time.perf_counter() - t
print(json.dumps(out))
"""


def run_control(faces_dir: Path, mode: str, env: dict[str, str]) -> dict:
    p = subprocess.run([sys.executable, "-c", CONTROL, str(faces_dir / "obama_small.jpg"), mode],
                       input=bombs.tiff_bomb(), capture_output=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


def test_control_opencv_alone_allocates_the_tiff_bomb(faces_dir):
    """Unguarded: cv2.imdecode takes the 11 kB TIFF and asks for its whole 2.7 GB image; under an
    address-space limit of 1 GB more than the process holds, the allocation fails (unlimited, it
    took 5.3 GB and 17 s on this machine)."""
    out = run_control(faces_dir, "cv2", _clean_env())
    assert out["genuine"] == [240, 320, 3]  # the same limit leaves a real photo alone
    assert "Failed to allocate" in out["bomb"], out
    asked = int(re.search(r"allocate (\d+) bytes", out["bomb"]).group(1))
    assert asked >= TIFF_BYTES > 50 * MAX_PIXELS
    assert len(bombs.tiff_bomb()) < 12_000


@pytest.mark.parametrize("command", ["detect", "verify --image"])
def test_opencv_own_limit_is_in_force_in_fr_pbd_processes(command, faces_dir, models_env, home):
    """The second barrier: in a process that ran an fr-pbd command, OpenCV itself refuses the TIFF
    from its header (OPENCV_IO_MAX_IMAGE_PIXELS, set by fr_pbd.capture.image before cv2 loads)."""
    out = run_control(faces_dir, command, _clean_env(FR_PBD_MODELS=str(models_env), FR_PBD_HOME=str(home)))
    assert out["genuine"] == [240, 320, 3]
    assert "CV_IO_MAX_IMAGE_PIXELS" in out["bomb"], out
    assert out["bomb_s"] < 0.5


def test_a_lower_opencv_limit_is_kept(faces_dir):
    code = "import os, fr_pbd.capture.image as im; print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'], im.OPENCV_LIMIT_IN_FORCE)"
    for given, want in (("1000", "1000"), (str(10 * MAX_PIXELS), str(MAX_PIXELS)), ("junk", str(MAX_PIXELS))):
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           env=_clean_env(OPENCV_IO_MAX_IMAGE_PIXELS=given))
        assert p.stdout.split() == [want, "True"], p.stderr


# --------------------------------------------------------------------------------------
# every bomb refused before OpenCV is called (in process, with a tripwire on cv2.imdecode)
# --------------------------------------------------------------------------------------
def test_every_bomb_refused_before_opencv(bomb_set, no_opencv, tmp_path):
    for name, (data, fragment) in bomb_set.items():
        for source in (data, tmp_path / "frame.jpg"):  # bytes, and a file whose name says JPEG
            if isinstance(source, Path):
                source.write_bytes(data)
            t = time.perf_counter()
            with pytest.raises(ImageError) as info:
                load_image(source)
            message = str(info.value)
            assert fragment in message and "\n" not in message, (name, message)
            assert time.perf_counter() - t < 0.5, name
    assert no_opencv == []


def test_format_by_signature_never_by_name(tmp_path):
    assert image_format(bombs.tiff_bomb()) == "TIFF"
    assert image_format(b"\xff\xd8\xff\xe0") == "JPEG"
    assert image_format(b"P5\n") == "PNM" and image_format(b"P5x") is None
    assert image_format(b"BM") == "BMP" and image_format(b"\x89PNG\r\n\x1a\n") == "PNG"
    assert image_format(b"BM\x00\x00ftypheic") == "AVIF/HEIF"  # refused signatures win over accepted ones
    assert image_format(b"hello") is None


# --------------------------------------------------------------------------------------
# through the real CLI: exit 2, one line, bounded time and memory
# --------------------------------------------------------------------------------------
MEASURE = r"""
import json, os, resource, signal, subprocess, sys, threading, time
def limit():  # a net if the defence regresses: the bomb fails to allocate instead of taking 5 GB
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
t = time.perf_counter()
p = subprocess.Popen(sys.argv[2:], preexec_fn=limit)
killer = threading.Timer(60, lambda: os.kill(p.pid, signal.SIGKILL))
killer.start()
_, status, usage = os.wait4(p.pid, 0)
killer.cancel()
p.returncode = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as f:
    json.dump({"rc": p.returncode, "wall": time.perf_counter() - t, "rss_mb": usage.ru_maxrss / 1024}, f)
"""


def run_measured(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[int, str, str, float, float]:
    """(exit status, stdout, stderr, wall s, peak RSS MB) of one fr-pbd command.

    Measured by a small go-between process with wait4 (the command's own rusage): a child's
    ru_maxrss includes what its parent held when it forked, so the test process, which holds the
    models, must not be the command's parent.
    """
    out, err, res = tmp_path / "out", tmp_path / "err", tmp_path / "measure.json"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        subprocess.run([sys.executable, "-c", MEASURE, str(res), sys.executable, "-m", "fr_pbd.cli", *args],
                       stdout=fo, stderr=fe, env=env, timeout=120, check=True)
    m = json.loads(res.read_text())
    return m["rc"], out.read_text(), err.read_text(), m["wall"], m["rss_mb"]


@pytest.mark.parametrize("command", ["detect", "verify"])
def test_cli_refuses_each_bomb_in_bounded_time_and_memory(command, bomb_set, models_env, home, tmp_path):
    """Each bomb through ``fr-pbd detect`` and ``fr-pbd verify``: exit 2, one line naming the format
    or the budget, and it costs the command no more than refusing an empty file does (start-up and,
    for verify, the models it loads first): within 1 s and 50 MB of it; detect under 200 MB in all."""
    env = _clean_env(FR_PBD_MODELS=str(models_env), FR_PBD_HOME=str(home))

    def args(path: Path) -> list[str]:
        return ["detect", str(path)] if command == "detect" else ["verify", "--image", str(path)]

    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    rc, _, err, ref_wall, ref_rss = run_measured(args(empty), env, tmp_path)
    assert rc == 2 and "is empty" in err, err
    for name in CLI_BOMBS:
        data, fragment = bomb_set[name]
        path = tmp_path / "photo.jpg"
        path.write_bytes(data)
        rc, out, err, wall, rss = run_measured(args(path), env, tmp_path)
        assert rc == 2, (name, rc, err[-2000:])
        assert err.count("\n") == 1 and err.startswith("fr-pbd: error: ") and fragment in err, (name, err)
        assert "Traceback" not in err and out == ""
        assert wall < ref_wall + 1.0, (name, wall, ref_wall)
        assert rss < ref_rss + 50, (name, rss, ref_rss)
        if command == "detect":
            assert rss < 200, (name, rss)


# --------------------------------------------------------------------------------------
# the daemon: a bomb as the current frame is an N at the deadline, and the next request is normal
# --------------------------------------------------------------------------------------
def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_daemon_answers_n_at_its_deadline_for_a_tiff_bomb_frame(daemon_env, faces_dir):
    from tests.test_daemon import TEST_DEADLINE_MS, raw_request, read_log_until, set_frame

    home, frames, start = daemon_env
    d = start()
    assert raw_request(d.sock, b"VERIFY obama\n") == b"Y"  # warm: models loaded, a genuine frame
    before = _vm_hwm_mb(d.pid)
    bomb = frames / "bomb.tiff"
    bomb.write_bytes(bombs.tiff_bomb())
    set_frame(frames, bomb)
    t = time.perf_counter()
    assert raw_request(d.sock, b"VERIFY obama\n") == b"N"
    took = time.perf_counter() - t
    deadline = TEST_DEADLINE_MS / 1000
    assert deadline * 0.9 <= took < deadline + 0.5, took  # at its deadline, not after a 5 GB decode
    assert _vm_hwm_mb(d.pid) - before < 50
    set_frame(frames, faces_dir / "obama4.jpg")
    t = time.perf_counter()
    assert raw_request(d.sock, b"VERIFY obama\n") == b"Y"
    assert time.perf_counter() - t < deadline + 0.5
    log = read_log_until(d.log, lambda text: text.count("-> Y") >= 2)
    assert "is a TIFF image; fr-pbd reads only" in log


# --------------------------------------------------------------------------------------
# genuine images still decode, to the same pixels
# --------------------------------------------------------------------------------------
def bmp_by_hand(img: np.ndarray, core: bool, top_down: bool = False) -> bytes:
    """A 24-bit BMP with a 12-byte OS/2 header or a 40-byte one (optionally top-down)."""
    h, w = img.shape[:2]
    pitch = (w * 3 + 3) & ~3
    rows = img if top_down else img[::-1]
    pixels = b"".join(row.tobytes() + bytes(pitch - w * 3) for row in rows)
    if core:
        info = struct.pack("<IHHHH", 12, w, h, 1, 24)
    else:
        info = struct.pack("<IiiHHIIiiII", 40, w, -h if top_down else h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    offset = 14 + len(info)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + pixels


def test_genuine_faces_decode_as_opencv_reads_them(faces_dir):
    for path in sorted(faces_dir.glob("*.jpg")):
        assert np.array_equal(load_image(path), cv2.imread(str(path))), path.name


def test_genuine_reencodings_give_the_same_pixels(faces_dir, tmp_path):
    face = small_face(faces_dir)
    grey = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    grey3 = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    cases = {
        ".png": (face, face), ".bmp": (face, face), ".ppm": (face, face), ".pgm": (grey, grey3),
        "ascii .ppm": (face, face), "16-bit .pgm": (grey.astype(np.uint16) * 257, grey3),
        "progressive .jpg": (face, None),
    }
    for name, (src, want) in cases.items():
        ext = name.split()[-1]
        params = [cv2.IMWRITE_PXM_BINARY, 0] if name.startswith("ascii") else []
        if name.startswith("progressive"):
            params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
        ok, buf = cv2.imencode(ext, src, params)
        assert ok, name
        path = tmp_path / f"face{ext}"
        path.write_bytes(buf.tobytes())
        got = load_image(path)
        expected = cv2.imread(str(path)) if want is None else want
        assert np.array_equal(got, expected), name
    assert b"P3" == cv2.imencode(".ppm", face, [cv2.IMWRITE_PXM_BINARY, 0])[1].tobytes()[:2]
    for core, top_down in ((False, False), (False, True)):
        assert np.array_equal(load_image(bmp_by_hand(face, core, top_down)), face), (core, top_down)
    # OpenCV reads a 24-bit OS/2 BMP (12-byte header) as grey: the same pixels as its grey conversion.
    assert np.array_equal(load_image(bmp_by_hand(face, core=True)), grey3)


def test_pnm_header_as_opencv_reads_it(faces_dir):
    face = small_face(faces_dir)
    h, w = face.shape[:2]
    body = face[:, :, ::-1].tobytes()
    for head in (f"P6\n# a comment\n{w} # width\n# and height\n{h}\n255\n", f"P6 {w}\t{h}\r255 ",
                 f"P6\n#\n{w} {h}\n#c\r255\n"):
        assert np.array_equal(load_image(head.encode() + body), face), head
    for head, fragment in (("P6\n# no end", "does not hold its size"), (f"P6 {w} {h} 70000\n", "maxval 70000"),
                           (f"P6 {w} {h} 0\n", "maxval 0"), ("P6 99999999999 1 255\n", "over 2^31"),
                           (f"P6 0 {h} 255\n", "zero size"), (f"P6 {w} x {h} 255\n", "does not hold its size")):
        with pytest.raises(ImageError, match=re.escape(fragment)):
            load_image(head.encode() + body)


def test_pixel_budget_is_exact(no_opencv):
    """A header of exactly MAX_PIXELS reaches OpenCV; one pixel more does not (the tripwire shows which)."""
    for w, h, reaches in ((10_000, 5_000, True), (10_001, 5_000, False)):
        for data in (bombs.png_bomb(w, h), bombs.pnm_bomb(b"P5", w, h, 255), bombs.bmp_bomb(w, h)):
            before = len(no_opencv)
            with pytest.raises((AssertionError, ImageError)) as info:
                load_image(data)
            assert (len(no_opencv) > before) == reaches, (w, h, data[:2], info.value)


def test_jpeg_with_a_tiff_bomb_in_its_exif_is_just_a_small_jpeg(faces_dir):
    """A polyglot the other way round: a real JPEG whose EXIF block is the TIFF bomb decodes as the
    JPEG it is; OpenCV only reads EXIF tags, never the TIFF's strips."""
    face = small_face(faces_dir)
    plain = jpeg_bytes(face)
    exif = b"Exif\x00\x00" + bombs.tiff_bomb()
    with_exif = plain[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + plain[2:]
    assert np.array_equal(load_image(with_exif), load_image(plain))


def test_bmp_headers_opencv_does_not_read_are_refused(faces_dir):
    face = small_face(faces_dir)
    good = bytearray(bmp_by_hand(face, core=False))
    odd_header = bytes(good[:14]) + struct.pack("<i", 20) + bytes(good[18:])
    with pytest.raises(ImageError, match="20-byte header"):
        load_image(odd_header)
    odd_depth = bytes(good[:28]) + struct.pack("<H", 7) + bytes(good[30:])
    with pytest.raises(ImageError, match="7 bits per pixel"):
        load_image(odd_depth)
    int_min = bytes(good[:22]) + struct.pack("<i", -2**31) + bytes(good[26:])
    with pytest.raises(ImageError, match="zero or negative size"):
        load_image(int_min)
