"""The yes/no daemon as a real process: one byte per answer, right decisions, allowlist, robustness.

The daemon runs with ``--frames DIR``: every VERIFY reads ``DIR/current.jpg``
at that moment, so the test swaps real photos in between requests.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fr_pbd.daemon import MAX_REQUEST, ProtocolError, parse_request
from tests.conftest import missing

PIN = "correct horse battery"
GENUINE = ("obama3.jpg", "obama4.jpg")
IMPOSTOR = ("biden2.jpg", "astronaut.png")


# --------------------------------------------------------------------------------------
# helpers (also used by tests/test_audit.py)
# --------------------------------------------------------------------------------------
def make_enrolled_home(home: Path, faces_dir: Path, extractor=None) -> Path:
    """A correct installation: fallback PIN set, Obama enrolled with consent from two real photos."""
    from fr_pbd.verify import Consent, Verifier

    v = Verifier(home, extractor)
    v.set_fallback(PIN)
    v.enroll("obama", [faces_dir / "obama.jpg", faces_dir / "obama2.jpg"], Consent("1", "test-device"))
    return home


def set_frame(frames: Path, src: Path) -> None:
    """Swap the daemon's current frame atomically."""
    tmp = frames / ".next.jpg"
    shutil.copyfile(src, tmp)
    os.replace(tmp, frames / "current.jpg")


def raw_request(sock_path: Path, payload: bytes, *, close_write: bool = True, timeout: float = 30.0) -> bytes:
    """Send bytes, read everything the daemon sends until it closes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(sock_path))
        if payload:
            s.sendall(payload)
        if close_write:
            s.shutdown(socket.SHUT_WR)
        out = bytearray()
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return bytes(out)
            out += chunk
    finally:
        s.close()


def wait_for_socket(path: Path, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        if path.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"daemon did not create {path} in {timeout} s")


class RunningDaemon:
    """``python -m fr_pbd.daemon serve`` as a subprocess, stopped with SIGTERM."""

    def __init__(self, home: Path, sock: Path, frames: Path, log: Path | None = None) -> None:
        self.sock, self.log = sock, log
        cmd = [sys.executable, "-m", "fr_pbd.cli", "serve", "--home", str(home), "--socket", str(sock),
               "--frames", str(frames)]
        if log is not None:
            cmd += ["--log", str(log)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_socket(sock, self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def read_log_until(path: Path, done, timeout: float = 5.0) -> str:
    """The daemon's log once ``done(text)`` holds (or after ``timeout``): it writes after answering."""
    deadline = time.monotonic() + timeout
    text = path.read_text()
    while not done(text) and time.monotonic() < deadline:
        time.sleep(0.05)
        text = path.read_text()
    return text


@pytest.fixture(scope="module")
def template_home(tmp_path_factory, extractor, faces_dir) -> Path:
    return make_enrolled_home(tmp_path_factory.mktemp("daemon-template") / "home", faces_dir, extractor)


@pytest.fixture()
def daemon_env(tmp_path, template_home, faces_dir):
    """A fresh copy of the enrolled home, a frames dir showing obama3, a running daemon."""
    home = tmp_path / "home"
    shutil.copytree(template_home, home)
    frames = tmp_path / "frames"
    frames.mkdir()
    set_frame(frames, faces_dir / "obama3.jpg")
    started: list[RunningDaemon] = []

    def start(log: bool = True) -> RunningDaemon:
        d = RunningDaemon(home, tmp_path / "d.sock", frames, tmp_path / "daemon.log" if log else None)
        started.append(d)
        return d

    yield home, frames, start
    for d in started:
        d.stop()


def ask(sock: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fr_pbd.cli", "ask", "--socket", str(sock), *args],
                          capture_output=True, text=True, timeout=60)


SCOREISH = re.compile(r"(?<![\w.])[-+]?\d+\.\d+(?![\w.])|score|similarity|distance|cosine", re.I)


# --------------------------------------------------------------------------------------
# protocol parser (no process)
# --------------------------------------------------------------------------------------
def test_parse_request_accepts_only_verify_lines():
    assert parse_request(b"VERIFY\n") is None
    assert parse_request(b"VERIFY obama\n") == "obama"
    assert parse_request(b"VERIFY Jane Doe\n") == "Jane Doe"
    bad = [b"", b"VERIFY", b"VERIFY \n", b"VERIFY  x\n", b"VERIFY x \n", b"verify\n", b"HELLO\n",
           b"VERIFY\r\n", b"VERIFY\nVERIFY\n", b"VERIFY \xc3\xa9\n", b"VERIFY " + b"a" * 129 + b"\n",
           b"VERIFY " + b"a" * MAX_REQUEST + b"\n", b"VERIFY\x00\n"]
    for data in bad:
        with pytest.raises(ProtocolError):
            parse_request(data)


# --------------------------------------------------------------------------------------
# the daemon as a process
# --------------------------------------------------------------------------------------
def test_200_verifications_one_byte_each_and_right(daemon_env, faces_dir):
    """200 real verifications through the socket: each answer is exactly b'Y' or b'N' and correct.

    Requests mix genuine (obama3/obama4) and impostor (biden2/astronaut) frames, with
    and without a claimed user, and genuine frames claiming an unenrolled user. Impostor
    runs are kept at <= 4 so a genuine success resets the counter, except for one
    deliberate block of 5 impostors: it must lock face verification (the next genuine
    frame gets N), and the fallback PIN must unlock it (then Y again).
    """
    from fr_pbd.store import Store
    from fr_pbd.verify import Verifier

    home, frames, start = daemon_env
    d = start()
    rng = random.Random(5)
    plan: list[tuple[str, str | None, bytes]] = []  # (image, claimed user, expected answer)
    run = 0
    while len(plan) < 180:
        kind = rng.random()
        if run >= 4 or kind < 0.45:
            img, user = rng.choice(GENUINE), rng.choice([None, "obama"])
            if run < 4 and rng.random() < 0.1:
                plan.append((img, "biden", b"N"))  # the right face for another (unenrolled) claim
                run += 1
                continue
            plan.append((img, user, b"Y"))
            run = 0
        else:
            plan.append((rng.choice(IMPOSTOR), rng.choice([None, "obama"]), b"N"))
            run += 1
    # make sure the run before the lockout block ends with a success
    plan.append(("obama4.jpg", None, b"Y"))
    lock_block = [(IMPOSTOR[i % 2], None, b"N") for i in range(5)] + [("obama3.jpg", "obama", b"N")]
    results: list[tuple[str, str | None, bytes, bytes]] = []

    def do(img: str, user: str | None) -> bytes:
        set_frame(frames, faces_dir / img)
        payload = b"VERIFY\n" if user is None else f"VERIFY {user}\n".encode()
        return raw_request(d.sock, payload)

    for img, user, want in plan + lock_block:
        results.append((img, user, want, do(img, user)))
    lock = Store.open(home).read().lockout
    assert lock.failures == 5 and lock.is_locked()
    assert Verifier(home).check_fallback(PIN)  # the alternative always works and clears the lock
    tail = [("obama3.jpg", None, b"Y"), ("astronaut.png", None, b"N")]
    while len(plan) + len(lock_block) + len(tail) < 200:
        tail.append((GENUINE[len(tail) % 2], "obama", b"Y"))
    for img, user, want in tail:
        results.append((img, user, want, do(img, user)))

    assert len(results) == 200
    assert all(len(got) == 1 and got in (b"Y", b"N") for *_, got in results)
    wrong = [(img, user, want, got) for img, user, want, got in results if got != want]
    assert wrong == []
    n_yes = sum(1 for *_, got in results if got == b"Y")
    assert 80 <= n_yes <= 140  # genuinely mixed
    assert d.proc.poll() is None
    # The daemon logs after it has answered: wait for the last line rather than race it.
    log = read_log_until(d.log, lambda text: text.count("-> Y") >= n_yes)
    assert "locked out" in log and log.count("-> Y") == n_yes
    assert not SCOREISH.search(log.replace(str(home), "").replace(str(d.sock), "").replace(str(frames), ""))


def test_peer_not_on_the_allowlist_gets_n(daemon_env):
    home, _frames, start = daemon_env
    (home / "config.toml").write_text(f"[daemon]\nallowed_uids = [{os.getuid() + 4242}]\n")
    os.chmod(home / "config.toml", 0o600)
    d = start()
    assert raw_request(d.sock, b"VERIFY\n") == b"N"  # the right face, but not an allowed peer
    p = ask(d.sock)
    assert (p.stdout, p.returncode) == ("no\n", 1)
    assert "not on the allowlist" in read_log_until(d.log, lambda text: "not on the allowlist" in text)


def test_allowlist_by_group(daemon_env):
    home, _frames, start = daemon_env
    (home / "config.toml").write_text(f"[daemon]\nallowed_uids = [{os.getuid() + 4242}]\n"
                                      f"allowed_gids = [{os.getgid()}]\n")
    os.chmod(home / "config.toml", 0o600)
    d = start()
    assert raw_request(d.sock, b"VERIFY\n") == b"Y"


def test_bad_requests_get_one_byte_n_and_do_not_count(daemon_env, faces_dir):
    from fr_pbd.store import Store

    home, _frames, start = daemon_env
    d = start()
    assert stat.S_IMODE(os.stat(d.sock).st_mode) == 0o660 and stat.S_ISSOCK(os.stat(d.sock).st_mode)
    bad = [b"VERIFY " + b"a" * 400 + b"\n", b"VERIFY " + b"a" * 5000, b"HELLO\n", b"\xff\xfe\xfd\n",
           b"VERIFY obama\r\n", b"VERIFY\nVERIFY\n", b"", b"VERIFY", b"verify\n", b"VERIFY  obama\n"]
    for payload in bad:
        assert raw_request(d.sock, payload) == b"N", payload
    assert Store.open(home).read().lockout.failures == 0  # never looked at the camera
    assert raw_request(d.sock, b"VERIFY obama\n") == b"Y"
    assert "malformed request" in read_log_until(d.log, lambda text: "malformed request" in text)


def test_clients_that_vanish_or_stall_do_not_hurt_the_daemon(daemon_env):
    _home, _frames, start = daemon_env
    d = start()
    # disconnect mid-request, many times
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(d.sock))
        s.sendall(b"VERI")
        s.close()
    # send a full request and vanish before the answer
    for _ in range(3):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(d.sock))
        s.sendall(b"VERIFY\n")
        s.close()
    time.sleep(2.5)  # let the pile above drain (beyond 16 in flight the daemon answers N at once: busy)
    # a client that says nothing gets N after the 2 s read timeout
    t0 = time.monotonic()
    assert raw_request(d.sock, b"", close_write=False) == b"N"
    assert 1.5 <= time.monotonic() - t0 < 10
    # stalled clients occupy slots, but the daemon keeps answering
    stalled = []
    for _ in range(8):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(d.sock))
        stalled.append(s)
    time.sleep(2.5)
    assert raw_request(d.sock, b"VERIFY\n") == b"Y"
    for s in stalled:
        s.close()
    assert d.proc.poll() is None
    assert raw_request(d.sock, b"VERIFY obama\n") == b"Y"
    assert d.stop() == 0 and not d.sock.exists()


def test_ask_client_exit_codes(daemon_env, faces_dir, tmp_path):
    _home, frames, start = daemon_env
    d = start()
    p = ask(d.sock, "--user", "obama")
    assert (p.stdout, p.returncode) == ("yes\n", 0), p.stderr
    set_frame(frames, faces_dir / "biden2.jpg")
    p = ask(d.sock)
    assert (p.stdout, p.returncode) == ("no\n", 1)
    p = ask(tmp_path / "nobody.sock")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    p = ask(d.sock, "--user", " bad")
    assert p.returncode == 2 and "user name" in p.stderr


def test_egress_record_published_and_clean(daemon_env):
    import json

    _home, _frames, start = daemon_env
    d = start()
    assert raw_request(d.sock, b"VERIFY\n") == b"Y"
    rec = json.loads(Path(str(d.sock) + ".egress.json").read_text())
    assert rec["installed"] and rec["refused_total"] == 0 and rec["pid"] == d.pid
    assert set(rec["seen"]["socket.__new__"]) == {"AF_UNIX"}


def test_serve_refuses_a_bad_config_and_a_missing_store(tmp_path, template_home):
    home = tmp_path / "home"
    shutil.copytree(template_home, home)
    (home / "config.toml").write_text('profile = "scene-monitoring"\n')
    os.chmod(home / "config.toml", 0o600)
    frames = tmp_path / "f"
    frames.mkdir()
    cmd = [sys.executable, "-m", "fr_pbd.cli", "serve", "--home", str(home), "--socket",
           str(tmp_path / "s.sock"), "--frames", str(frames)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "scene-monitoring" in p.stderr and p.stderr.count("\n") == 1
    assert not (tmp_path / "s.sock").exists()
    p = subprocess.run([*cmd[:4], str(tmp_path / "empty"), *cmd[5:]], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    (tmp_path / "s.sock").write_text("not a socket")
    os.unlink(home / "config.toml")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "not a socket" in p.stderr


# --------------------------------------------------------------------------------------
# PAM: a real PAM stack with pam_exec calling `fr-pbd ask` (needs pamtester, as root)
# --------------------------------------------------------------------------------------
def _pam_exec_module() -> bool:
    for d in ("/lib/x86_64-linux-gnu/security", "/usr/lib/x86_64-linux-gnu/security", "/lib/security",
              "/usr/lib/security", "/lib/aarch64-linux-gnu/security", "/usr/lib/aarch64-linux-gnu/security",
              "/usr/lib64/security"):
        if os.path.exists(os.path.join(d, "pam_exec.so")):
            return True
    return False


def test_pam_exec_with_pamtester(daemon_env, faces_dir):
    # CI runs as root with pamtester installed (.ci/run): anything less fails there, skips elsewhere.
    if shutil.which("pamtester") is None or not _pam_exec_module():
        missing("pamtester or pam_exec.so not installed (apt-get install pamtester)")
    if os.getuid() != 0 or not os.access("/etc/pam.d", os.W_OK):
        missing("writing a PAM service file in /etc/pam.d needs root")
    _home, frames, start = daemon_env
    d = start()
    service = f"fr-pbd-test-{os.getpid()}"
    path = Path("/etc/pam.d") / service
    path.write_text(
        f"auth     required pam_exec.so quiet {sys.executable} -m fr_pbd.daemon ask --socket {d.sock}\n"
        "account  required pam_permit.so\n"
    )
    try:
        def pam() -> subprocess.CompletedProcess:
            return subprocess.run(["pamtester", service, "root", "authenticate"], capture_output=True, text=True,
                                  timeout=60, stdin=subprocess.DEVNULL)

        p = pam()
        assert p.returncode == 0 and "successfully authenticated" in p.stdout + p.stderr, p.stdout + p.stderr
        set_frame(frames, faces_dir / "biden2.jpg")
        p = pam()
        assert p.returncode != 0, p.stdout + p.stderr
        d.stop()
        p = pam()  # no daemon: authentication fails (PAM falls through to the next method in a real stack)
        assert p.returncode != 0
    finally:
        path.unlink()
