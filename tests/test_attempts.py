"""Multi-frame attempts: up to N frames within a time budget, yes at the first
frame that is live and matches, one lockout count per attempt; a recorded video stands in for
the camera (CLI and daemon).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fr_pbd.capture.image import load_image
from fr_pbd.store import Store
from fr_pbd.verify import Verifier
from tests.test_daemon import ask, read_log_until, wait_for_socket, write_config

W, H = 640, 480


def letterbox(img: np.ndarray) -> np.ndarray:
    """The photo scaled into a 640x480 camera frame (aspect kept, black borders)."""
    s = min(W / img.shape[1], H / img.shape[0])
    small = cv2.resize(img, (max(1, int(img.shape[1] * s)), max(1, int(img.shape[0] * s))))
    out = np.zeros((H, W, 3), np.uint8)
    y, x = (H - small.shape[0]) // 2, (W - small.shape[1]) // 2
    out[y:y + small.shape[0], x:x + small.shape[1]] = small
    return out


def frames_of(paths: list[Path]) -> list[np.ndarray]:
    return [letterbox(load_image(p)) for p in paths]


def write_video(path: Path, frames: list[np.ndarray]) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


class Pulls:
    """An iterator over frames that counts how many the verifier took."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames, self.taken = frames, 0

    def __iter__(self) -> "Pulls":
        return self

    def __next__(self) -> np.ndarray:
        if self.taken >= len(self.frames):
            raise StopIteration
        self.taken += 1
        return self.frames[self.taken - 1]


@pytest.fixture()
def verifier(home, extractor) -> Verifier:
    """Obama enrolled (two photos); liveness off here: these tests are about frames and counts."""
    with pytest.warns(UserWarning, match="presentation-attack detection is OFF"):
        return Verifier(home, extractor, liveness=False)


def failures(home: Path, user: str | None) -> int:
    return Store.open(home).read().lockout_of(user).failures


def test_yes_at_the_first_matching_frame_and_the_attempt_is_cleared(verifier, home, faces_dir):
    frames = Pulls(frames_of([faces_dir / "no_face_cat_chelsea.png", faces_dir / "biden.jpg",
                              faces_dir / "obama3.jpg", faces_dir / "obama4.jpg"]))
    outcome = verifier.verify_frames(frames, user="obama", max_frames=5)
    assert outcome and frames.taken == 3  # stopped at the first match: the 4th frame was never taken
    verifier.settle()  # the clear is written after the answer (docs/lockout.md)
    assert outcome.reason == "accepted" and failures(home, "obama") == 0


def test_an_impostor_attempt_of_five_frames_counts_once(verifier, home, faces_dir):
    frames = Pulls(frames_of([faces_dir / "biden.jpg", faces_dir / "biden2.jpg"] * 3))
    outcome = verifier.verify_frames(frames, user="obama", max_frames=5)
    assert not outcome and frames.taken == 5 and outcome.reason == "no_match"
    assert failures(home, "obama") == 1  # five frames compared, one attempt counted
    # five such attempts lock the claim, as five single-image attempts do
    for _ in range(4):
        verifier.verify_frames(Pulls(frames_of([faces_dir / "biden.jpg"] * 2)), user="obama", max_frames=2)
    assert Store.open(home).read().lockout_of("obama").is_locked()
    outcome = verifier.verify_frames(Pulls(frames_of([faces_dir / "obama3.jpg"])), user="obama", max_frames=5)
    assert not outcome and outcome.reason == "locked" and outcome.retry_after > 0


def test_frames_without_a_face_are_a_no_that_does_not_count(verifier, home, faces_dir):
    frames = Pulls(frames_of([faces_dir / "no_face_cat_chelsea.png", faces_dir / "no_face_coffee.png"]))
    outcome = verifier.verify_frames(frames, user="obama", max_frames=5)
    assert not outcome and frames.taken == 2 and outcome.reason == "no_face" and failures(home, "obama") == 0


def test_the_budget_stops_new_frames(verifier, home, faces_dir):
    frames = Pulls(frames_of([faces_dir / "biden.jpg"] * 5))
    assert not verifier.verify_frames(frames, user="obama", max_frames=5, until=time.monotonic())
    assert frames.taken == 1  # the first frame is always looked at; no second one past the budget
    assert failures(home, "obama") == 1


def test_a_claim_that_cannot_succeed_takes_no_frame(verifier, faces_dir):
    frames = Pulls(frames_of([faces_dir / "obama3.jpg"]))
    outcome = verifier.verify_frames(frames, user="nobody-enrolled", max_frames=5)
    assert not outcome and frames.taken == 0 and outcome.reason == "unknown_user"
    assert verifier.precheck("nobody-enrolled").reason == "unknown_user"
    assert verifier.precheck("obama") is None


def test_attack_frames_then_no_match_is_one_counted_attack(home, extractor, spoof_dir):
    v = Verifier(home, extractor, liveness=True)  # the real PAD models
    frames = Pulls(frames_of([spoof_dir / "spoof_print_F1.jpg", spoof_dir / "spoof_replay_F2.jpg"]))
    outcome = v.verify_frames(frames, max_frames=5)
    assert not outcome and frames.taken == 2 and outcome.reason == "presentation_attack"
    assert failures(home, None) == 1


def cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, FR_PBD_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "fr_pbd.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_cli_verify_camera_reads_frames_until_a_match(home, faces_dir, tmp_path):
    video = write_video(tmp_path / "cam.avi", frames_of([faces_dir / "no_face_cat_chelsea.png",
                                                         faces_dir / "no_face_coffee.png",
                                                         faces_dir / "obama3.jpg"]))
    p = cli("verify", "--camera", str(video), "--user", "obama", home=home)
    assert (p.stdout, p.returncode) == ("yes\n", 0), p.stderr
    (home / "config.toml").write_text("[capture]\nmax_frames = 2\n")
    os.chmod(home / "config.toml", 0o600)
    p = cli("verify", "--camera", str(video), "--user", "obama", home=home)
    assert (p.stdout, p.returncode) == ("no\n", 1)  # the face was in the 3rd frame: not looked at
    assert "no face" in p.stderr and failures(home, "obama") == 0


def test_daemon_camera_attempt_and_no_camera_for_an_unknown_claim(tmp_path, template_home, faces_dir):
    home = tmp_path / "home"
    shutil.copytree(template_home, home)
    write_config(home, deadline_ms=3000)
    video = write_video(tmp_path / "cam.avi", frames_of([faces_dir / "no_face_cat_chelsea.png",
                                                         faces_dir / "obama3.jpg"]))
    sock, log = tmp_path / "d.sock", tmp_path / "daemon.log"
    proc = subprocess.Popen([sys.executable, "-m", "fr_pbd.cli", "serve", "--home", str(home), "--socket",
                             str(sock), "--camera", str(video), "--log", str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_socket(sock, proc)
        assert ask(sock, "--user", "obama").stdout == "yes\n"
        video.unlink()  # no camera any more: an unknown claim must not even try to open it
        assert ask(sock, "--user", "mallory").stdout == "no\n"
        text = read_log_until(log, lambda t: "mallory" in t)
        assert "not accepted (unknown_user)" in text and "camera" not in text.split("mallory", 1)[1]
    finally:
        proc.terminate()
        proc.wait(timeout=15)


# --- the count beside the embedder (off the answer's path) -------------------------------------------
class SlowEmbedder:
    """A stand-in extractor whose 'embedder' watches the store: is the attempt already counted?"""

    def __init__(self, inner, home: Path, user: str) -> None:
        self.inner, self.home, self.user = inner, home, user
        self.model_id = inner.model_id
        self.counted_while_embedding: list[bool] = []

    def template(self, image, purpose="verify", check=None, hook=None, on_usable=None):
        if on_usable is not None:
            on_usable()  # the face passed the gate
        deadline = time.monotonic() + 5.0  # the embedder's run; bounded
        seen = False
        while not seen and time.monotonic() < deadline:
            seen = Store.open(self.home).read().lockout_of(self.user).failures == 1
            time.sleep(0.01)
        self.counted_while_embedding.append(seen)
        return self.inner.template(image, purpose, check, hook)


def test_the_attempt_is_counted_while_the_embedder_runs_and_before_the_comparison(tmp_path):
    from tests.test_login_attacks import stub_home, stub_verifier

    home = stub_home(tmp_path / "home")
    v = stub_verifier(home, 2)  # bob's face
    v._extractor = slow = SlowEmbedder(v._extractor, home, "alice")
    assert not v.verify(b"frame", user="alice")
    assert slow.counted_while_embedding == [True]  # on disk before the 'embedder' returned
    assert Store.open(home).read().lockout_of("alice").failures == 1


def test_an_attempt_of_several_usable_frames_is_counted_once(tmp_path):
    from tests.test_login_attacks import stub_home, stub_verifier

    home = stub_home(tmp_path / "home")
    v = stub_verifier(home, 2)
    assert not v.verify_frames(iter([b"a", b"b", b"c"]), user="alice", max_frames=3)
    assert Store.open(home).read().lockout_of("alice").failures == 1
    assert v.verify_frames(iter([b"a"]), user="bob")  # bob's own face: yes, and his count cleared
    v.settle()
    assert Store.open(home).read().lockout_of("bob").failures == 0
