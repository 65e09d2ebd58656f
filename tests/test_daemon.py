"""The yes/no daemon as a real process: one byte per answer, right decisions, allowlist, robustness.

The daemon runs with ``--frames DIR``: every VERIFY reads ``DIR/current.jpg``
at that moment, so the test swaps real photos in between requests.

Attacks from another local user are kept here as tests that fail to get in:
a fake daemon of another uid, a socket in a directory others can change, another
account's face, answer times that tell the reason, idle connections that starve the
daemon. The ones that need a second uid run it with ``setpriv`` as an account the session
creates for itself (``peer_account`` in tests/conftest.py, never one the host may have) and need
root (CI runs as root; elsewhere they skip, in CI they fail: tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from fr_pbd.daemon import MAX_REQUEST, ProtocolError, claim_for, parse_request
from fr_pbd.errors import DaemonError
from tests.conftest import missing, need_root, need_tool
from tests.helpers import absent_uid

PIN = "correct horse battery"
GENUINE = ("obama3.jpg", "obama4.jpg")
IMPOSTOR = ("biden2.jpg", "astronaut.png")
#: Answer deadline of the test daemons (config answer_deadline_ms): above this machine's
#: verify() p95 under load (132 ms), so a test of 200 requests takes 30 s, not 200 s.
TEST_DEADLINE_MS = 150


# --------------------------------------------------------------------------------------
# helpers (also used by tests/test_audit.py)
# --------------------------------------------------------------------------------------
def make_enrolled_home(home: Path, faces_dir: Path, extractor=None) -> Path:
    """A correct installation: fallback PIN set, Obama enrolled with consent from two real photos."""
    from fr_pbd.verify import Consent, Verifier

    v = Verifier(home, extractor)
    v.set_fallback(PIN)
    v.enroll("obama", [faces_dir / "obama.jpg", faces_dir / "obama2.jpg"], Consent("1", "test-device"), fallback=PIN)
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


def write_config(home: Path, text: str = "", deadline_ms: int = TEST_DEADLINE_MS) -> None:
    """config.toml with the test deadline; ``text``: more ``[daemon]`` lines."""
    (home / "config.toml").write_text(f"[daemon]\nanswer_deadline_ms = {deadline_ms}\n{text}")
    os.chmod(home / "config.toml", 0o600)


@pytest.fixture()
def daemon_env(tmp_path, template_home, faces_dir):
    """A fresh copy of the enrolled home (test deadline), a frames dir showing obama3, a running daemon."""
    home = tmp_path / "home"
    shutil.copytree(template_home, home)
    write_config(home)
    frames = tmp_path / "frames"
    frames.mkdir()
    set_frame(frames, faces_dir / "obama3.jpg")
    started: list[RunningDaemon] = []

    def start(log: bool = True, sock: Path | None = None) -> RunningDaemon:
        d = RunningDaemon(home, sock or tmp_path / "d.sock", frames, tmp_path / "daemon.log" if log else None)
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
    and without a claimed user, and genuine frames claiming an unenrolled user. Failures
    count per scope (the claimed user, or "any enrolled user" without a claim), so runs of
    impostors are kept at <= 4 per scope and a genuine success in that scope resets them,
    except for one deliberate block of 5 impostors claiming obama: it must lock obama (the
    next genuine frame gets N, claimed or not), and the fallback PIN must unlock it.
    """
    from fr_pbd.store import Store
    from fr_pbd.verify import Verifier

    home, frames, start = daemon_env
    d = start()
    rng = random.Random(5)
    plan: list[tuple[str, str | None, bytes]] = []  # (image, claimed user, expected answer)
    run: dict[str | None, int] = {None: 0, "obama": 0}
    while len(plan) < 180:
        user = rng.choice([None, "obama"])
        if run[user] >= 4 or rng.random() < 0.45:
            img = rng.choice(GENUINE)
            if rng.random() < 0.1:
                plan.append((img, "biden", b"N"))  # the right face for another (unenrolled) claim
                continue
            plan.append((img, user, b"Y"))
            run[user] = 0
        else:
            plan.append((rng.choice(IMPOSTOR), user, b"N"))
            run[user] += 1
    # make sure the obama scope starts the lockout block at 0
    plan.append(("obama4.jpg", "obama", b"Y"))
    lock_block = [(IMPOSTOR[i % 2], "obama", b"N") for i in range(5)] + [("obama3.jpg", "obama", b"N"),
                                                                          ("obama4.jpg", None, b"N")]
    results: list[tuple[str, str | None, bytes, bytes]] = []

    def do(img: str, user: str | None) -> bytes:
        set_frame(frames, faces_dir / img)
        payload = b"VERIFY\n" if user is None else f"VERIFY {user}\n".encode()
        return raw_request(d.sock, payload)

    for img, user, want in plan + lock_block:
        results.append((img, user, want, do(img, user)))
    lock = Store.open(home).read().lockout_of("obama")
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
    assert "locked for" in log and log.count("-> Y") == n_yes
    assert not SCOREISH.search(log.replace(str(home), "").replace(str(d.sock), "").replace(str(frames), ""))


def test_peer_not_on_the_allowlist_gets_n(daemon_env):
    home, _frames, start = daemon_env
    write_config(home, f"allowed_uids = [{os.getuid() + 4242}]\n")
    d = start()
    assert raw_request(d.sock, b"VERIFY\n") == b"N"  # the right face, but not an allowed peer
    p = ask(d.sock)
    assert (p.stdout, p.returncode) == ("no\n", 1)
    assert "not on the allowlist" in read_log_until(d.log, lambda text: "not on the allowlist" in text)


def test_allowlist_by_group(daemon_env):
    home, _frames, start = daemon_env
    write_config(home, f"allowed_uids = [{os.getuid() + 4242}]\nallowed_gids = [{os.getgid()}]\n")
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
    time.sleep(1.5)  # the vanished verifications are answered (into the void) at their deadlines
    # a client that says nothing gets N after the read timeout: the answer deadline (at most 2 s)
    t0 = time.monotonic()
    assert raw_request(d.sock, b"", close_write=False) == b"N"
    assert TEST_DEADLINE_MS / 1e3 - 0.01 <= time.monotonic() - t0 < 10
    # stalled clients of one uid hold at most max_connections_per_uid (4) connections;
    # beyond that the same uid gets N at once, and nothing else is held
    stalled = []
    for _ in range(8):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(d.sock))
        stalled.append(s)
    t0 = time.monotonic()
    assert raw_request(d.sock, b"VERIFY\n") == b"N"  # busy: this uid already holds 4
    assert time.monotonic() - t0 < 0.1
    for s in stalled:
        s.close()
    time.sleep(0.3)
    assert raw_request(d.sock, b"VERIFY\n") == b"Y"
    assert d.proc.poll() is None
    assert raw_request(d.sock, b"VERIFY obama\n") == b"Y"
    assert "holds 4 (limit 4)" in read_log_until(d.log, lambda text: "holds 4" in text)
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
    for bad in (" bad", "b\u00f6b"):  # never sent as another name ("b?b")
        p = ask(d.sock, "--user", bad)
        assert p.returncode == 2 and "user name" in p.stderr and p.stderr.count("\n") == 1


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


def test_the_daemon_and_the_cli_are_not_dumpable_and_write_no_core(daemon_env):
    """PR_SET_DUMPABLE 0 and RLIMIT_CORE 0 in every real fr-pbd process (fr_pbd.hardening)."""
    _home, _frames, start = daemon_env
    d = start()
    limits = Path(f"/proc/{d.pid}/limits").read_text()
    assert re.search(r"Max core file size\s+0\s+0\s", limits), limits
    code = ("import sys, resource; from fr_pbd import cli, hardening; sys.argv = ['fr-pbd', 'ask', '--socket', "
            "'/nonexistent/s']; rc = cli.main(); print(rc, hardening.is_dumpable(), "
            "resource.getrlimit(resource.RLIMIT_CORE))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.stdout.split("\n")[0] == "2 False (0, 0)", p.stdout + p.stderr


# --------------------------------------------------------------------------------------
# attacks from another local user, each a test that fails to get in
# --------------------------------------------------------------------------------------
def peer_python(peer, gid: int | None = None) -> list[str]:
    """A command prefix that runs a stdlib-only Python as the account ``peer`` (gid ``gid``, default
    the peer's own; no other groups)."""
    need_root("running a process as another uid")
    setpriv = need_tool("setpriv", "util-linux")
    gid = peer.pw_gid if gid is None else gid
    for py in dict.fromkeys([os.path.realpath(sys.executable), "/usr/bin/python3", shutil.which("python3") or ""]):
        if not py:
            continue
        cmd = [setpriv, f"--reuid={peer.pw_uid}", f"--regid={gid}", "--clear-groups", py, "-I", "-S"]
        if subprocess.run([*cmd, "-c", "pass"], capture_output=True, timeout=30).returncode == 0:
            return cmd
    missing(f"no Python interpreter that uid {peer.pw_uid} can run")
    raise AssertionError  # unreachable: missing() fails or skips


@pytest.fixture()
def public_dir():
    """A directory where every user may create names (mode 1777, owned by root), as /tmp is."""
    d = Path(tempfile.mkdtemp(prefix="fr-pbd-pub-", dir="/tmp"))
    os.chmod(d, 0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


FAKE_DAEMON = textwrap.dedent("""
    import os, socket, sys
    path = sys.argv[1]
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    os.chmod(path, 0o666)
    srv.listen(8)
    srv.settimeout(60)
    print("ready", flush=True)
    while True:
        try:
            c, _ = srv.accept()
        except OSError:
            break
        c.settimeout(5)
        try:
            c.recv(300)
            c.sendall(b"Y")
        except OSError:
            pass
        c.close()
""")


def test_ask_refuses_a_fake_daemon_of_another_uid(tmp_path, public_dir, template_home, monkeypatch, peer_account):
    """Another local user binds the socket's name in a 1777 directory and answers Y.

    Before: root's `fr-pbd ask --socket ...` printed `yes`, exit 0 (pam_exec's success), and the
    real daemon refused to start ("another daemon already listens"). Now ask exits 2 with one
    line naming the impostor's uid, and the daemon refuses to start saying someone poses as it.
    """
    from fr_pbd import daemon
    from fr_pbd.daemon import client

    py = peer_python(peer_account)
    other = peer_account.pw_uid
    sock = public_dir / "d.sock"
    fake = subprocess.Popen([*py, "-c", FAKE_DAEMON, str(sock)], stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout is not None and fake.stdout.readline() == "ready\n"
        assert os.stat(sock).st_uid == other
        for env in ({}, {"PAM_USER": "root", "PAM_TYPE": "auth", "PAM_SERVICE": "login", "PAM_TTY": "tty1"}):
            p = subprocess.run([sys.executable, "-m", "fr_pbd.cli", "ask", "--socket", str(sock),
                                *(["--pam"] if env else [])], capture_output=True, text=True, timeout=60,
                               env={**os.environ, **env})
            assert (p.returncode, p.stdout) == (2, ""), p.stdout + p.stderr
            assert p.stderr.count("\n") == 1 and f"uid {other}" in p.stderr, p.stderr
        # the second line of defence: the kernel's word on who listens (SO_PEERCRED)
        monkeypatch.setattr(client, "check_socket", lambda path, uid: None)
        with pytest.raises(DaemonError, match=f"runs as uid {other}, not as the daemon's uid 0"):
            daemon.ask(sock, "root", daemon_uid=0)
        # the real daemon does not take over, and says why
        home = tmp_path / "home"
        shutil.copytree(template_home, home)
        frames = tmp_path / "frames"
        frames.mkdir()
        p = subprocess.run([sys.executable, "-m", "fr_pbd.cli", "serve", "--home", str(home), "--socket", str(sock),
                            "--frames", str(frames)], capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and f"a process of uid {other}" in p.stderr and "posing" in p.stderr, p.stderr
    finally:
        fake.kill()
        fake.wait()


def test_ask_refuses_a_socket_others_can_change(daemon_env, tmp_path):
    """A socket whose directory others may write (no sticky bit) or own could be swapped: exit 2."""
    home, _frames, start = daemon_env
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    d = start(sock=run / "d.sock")
    p = ask(d.sock, "--user", "obama")
    assert (p.stdout, p.returncode) == ("yes\n", 0), p.stderr
    os.chmod(run, 0o777)
    p = ask(d.sock, "--user", "obama")
    assert p.returncode == 2 and p.stdout == "" and "writable by group or others" in p.stderr, p.stderr
    os.chmod(run, 0o1777)  # sticky and root's (or the daemon's): nobody can rename the daemon's socket
    assert ask(d.sock, "--user", "obama").returncode == 0
    os.chmod(run, 0o755)
    if os.geteuid() == 0:
        someone = absent_uid()  # another uid: no account's, so none the host may have
        os.chown(run, someone, -1)
        p = ask(d.sock, "--user", "obama")
        assert p.returncode == 2 and f"owned by uid {someone}" in p.stderr, p.stderr
        os.chown(run, 0, -1)
    # the home names the daemon's uid: a daemon of another uid is not trusted
    write_config(home, f"daemon_uid = {os.getuid() + 4242}\n")
    p = ask(d.sock, "--user", "obama", "--home", str(home))
    assert p.returncode == 2 and f"not to the daemon's uid {os.getuid() + 4242}" in p.stderr, p.stderr
    write_config(home, f"daemon_uid = {os.getuid()}\n")
    assert ask(d.sock, "--user", "obama", "--home", str(home)).stdout == "yes\n"
    # and the daemon refuses to run as anyone else, or beside a directory others can change
    write_config(home, f"daemon_uid = {os.getuid() + 4242}\n")
    frames = tmp_path / "frames"
    for sock, needle in ((tmp_path / "s.sock", f"daemon_uid is {os.getuid() + 4242}"),
                         (run / "s.sock", "writable by group or others")):
        if needle.startswith("writable"):
            write_config(home)
            os.chmod(run, 0o777)
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "fr_pbd.cli", "serve", "--home", str(home), "--socket", str(sock),
                            "--frames", str(frames)], capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and needle in p.stderr and p.stderr.count("\n") == 1, p.stderr
        assert time.monotonic() - t0 < 30  # refused before the models load


def test_claim_for_binds_pam_to_pam_user():
    """`ask --pam` claims PAM_USER; run by PAM without it, ask refuses (else any enrolled face would open PAM_USER's account)."""
    pam = {"PAM_USER": "alice", "PAM_TYPE": "auth", "PAM_SERVICE": "sudo"}
    assert claim_for({}, None, False) is None and claim_for({}, "bob", False) == "bob"
    assert claim_for(pam, None, True) == "alice"
    assert claim_for(pam, "alice", False) == "alice"  # the old wrapper script: --user "$PAM_USER"
    for env, user, flag, needle in [
        (pam, None, False, "without --pam"),  # the old line: any enrolled face for any account
        (pam, "bob", False, "without --pam"),  # a fixed --user would open every PAM_USER with bob's face
        (pam, "bob", True, "do not give --user"),
        ({**pam, "PAM_TYPE": "account"}, None, True, "only PAM's auth stack"),
        ({"PAM_TYPE": "auth"}, None, True, "needs PAM_USER"),
        ({}, None, True, "not set"),
    ]:
        with pytest.raises(DaemonError, match=needle):
            claim_for(env, user, flag)


def _public_daemon(tmp_path, template_home, faces_dir, public_dir, allowed: str,
                   deadline_ms: int = TEST_DEADLINE_MS) -> tuple[RunningDaemon, Path]:
    """A daemon whose socket (0660, root's group) lies in a 1777 directory, so another local user can reach it."""
    home = tmp_path / "home"
    shutil.copytree(template_home, home)
    write_config(home, f"allowed_uids = [{allowed}]\n", deadline_ms=deadline_ms)
    frames = tmp_path / "frames"
    frames.mkdir()
    set_frame(frames, faces_dir / "obama3.jpg")
    return RunningDaemon(home, public_dir / "d.sock", frames, tmp_path / "daemon.log"), frames


def timed_request(sock: Path, payload: bytes) -> tuple[bytes, float]:
    """The answer and the seconds from the request's last byte to the answer's first."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    try:
        s.connect(str(sock))
        s.sendall(payload)
        t0 = time.perf_counter()
        first = s.recv(1)
        t1 = time.perf_counter()
        s.shutdown(socket.SHUT_WR)
        rest = b""
        while chunk := s.recv(4096):
            rest += chunk
        return first + rest, t1 - t0
    finally:
        s.close()


PEER_CLAIMS = textwrap.dedent("""
    import socket, sys, time
    def ask(line):
        s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(sys.argv[1]); s.sendall(line)
        t0 = time.perf_counter(); a = s.recv(8); t = time.perf_counter() - t0; s.close()
        return a.decode(), round(t * 1000)
    print(*ask(b"VERIFY obama\\n"), *ask(b"VERIFY\\n"))
""")


def test_a_peer_other_than_root_asks_only_for_its_own_account(tmp_path, template_home, faces_dir, public_dir,
                                                              peer_account):
    """A peer on the allowlist cannot have obama's face checked, and VERIFY alone means its own account."""
    py = peer_python(peer_account, gid=0)  # root's group: the socket is 0660 root:root
    uid, name = peer_account.pw_uid, peer_account.pw_name
    d, _frames = _public_daemon(tmp_path, template_home, faces_dir, public_dir, f"0, {uid}")
    try:
        p = subprocess.run([*py, "-c", PEER_CLAIMS, str(d.sock)], capture_output=True, text=True, timeout=60)
        other, t_other, own, t_own = p.stdout.split()
        assert (other, own) == ("N", "N"), p.stdout + p.stderr  # obama's face is in front of the camera
        assert int(t_other) < TEST_DEADLINE_MS  # refused from the request alone
        assert int(t_own) >= TEST_DEADLINE_MS - 1  # a real verification, against the peer's (no) templates
        log = read_log_until(d.log, lambda text: f"user '{name}'" in text)
        assert f"uid {uid} ({name}) may ask only for its own account, not for 'obama'" in log
        assert raw_request(d.sock, b"VERIFY obama\n") == b"Y"  # root may name the account
    finally:
        d.stop()


IDLE_PEER = textwrap.dedent("""
    import json, socket, sys, time
    conns = []
    for _ in range(int(sys.argv[2])):
        s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); conns.append(s)
    time.sleep(0.3)
    answered = held = 0
    for s in conns:
        s.setblocking(False)
        try:
            answered += s.recv(1) == b"N"
        except BlockingIOError:
            held += 1
    print(json.dumps({"answered_at_once": answered, "held": held}), flush=True)
    sys.stdin.readline()
""")


@pytest.mark.slow
@pytest.mark.parametrize("allowed", [True, False], ids=["idle-peer-on-the-allowlist", "idle-peer-refused"])
def test_idle_connections_of_one_uid_do_not_delay_another(tmp_path, template_home, faces_dir, public_dir, allowed,
                                                          peer_account):
    """Slots exhausted: 50 idle connections of another local user while root asks.

    Before: 20 idle connections delayed real requests by 4-5 s, 60 made `ask` fail. Now one uid
    holds at most max_connections_per_uid (4) connections, the rest get N at once, and root's
    answers come at the deadline (the default, 1 s: above any verification seen on a loaded
    2-core machine, 745 ms, so that a late answer can only be the idle peer's doing), not later.
    """
    deadline_ms = 1000
    py = peer_python(peer_account, gid=0)
    d, _frames = _public_daemon(tmp_path, template_home, faces_dir, public_dir,
                                f"0, {peer_account.pw_uid}" if allowed else "0",
                                deadline_ms=deadline_ms)
    idle = subprocess.Popen([*py, "-c", IDLE_PEER, str(d.sock), "50"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert idle.stdout is not None
        counts = json.loads(idle.stdout.readline())
        times = []
        with realtime_priority():  # a loaded machine must not delay the measuring client (it did: +69 ms)
            for _ in range(4):
                answer, seconds = timed_request(d.sock, b"VERIFY obama\n")
                assert answer == b"Y"
                times.append(seconds * 1e3)
        assert counts == ({"answered_at_once": 46, "held": 4} if allowed else {"answered_at_once": 50, "held": 0})
        log = read_log_until(d.log, lambda text: text.count("VERIFY user 'obama'") >= len(times))
        assert "holds 4 (limit 4)" in log if allowed else "not on the allowlist" in log
        # at the deadline; later only where the verification itself overran it (a loaded machine),
        # which the daemon logs: never because of the idle peer
        late = [t for t in times if t > deadline_ms + 50]
        assert len(late) <= log.count("overran the answer deadline"), (times, log)
        assert all(abs(t - deadline_ms * round(t / deadline_ms)) < 50 for t in times), times
    finally:
        assert idle.stdin is not None
        idle.stdin.close()
        idle.wait(timeout=30)
        d.stop()


@contextlib.contextmanager
def realtime_priority():
    """Measure at SCHED_FIFO 1 where allowed (root in CI), as a careful attacker would: a
    measuring thread that the scheduler wakes late would blur the daemon's own timing."""
    try:
        old = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (OSError, AttributeError):
        yield False
        return
    try:
        yield True
    finally:
        os.sched_setscheduler(0, *old)


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


@pytest.mark.slow
def test_answer_times_do_not_tell_the_reason(tmp_path, template_home, faces_dir, spoof_dir):
    """No timing side channel: every answer comes at the deadline, whatever the reason.

    Before (median answer through the daemon): locked 2 ms, no face 37 ms, attack 50 ms,
    no match 62 ms. Now genuine, impostor, no face, attack and locked answers lie within
    2 ms of each other at p50 and at p95, measured from the request's last byte. The kinds
    take turns, so a change in the machine's load falls on all of them alike; "locked" is
    the "any enrolled user" scope (VERIFY without a claim), locked for the whole run.
    """
    from datetime import datetime, timedelta, timezone

    from fr_pbd.store import LockoutState, Store

    deadline_ms = 250  # above this machine's slowest verify() under load (140 ms): no overrun
    home = tmp_path / "home"
    shutil.copytree(template_home, home)
    write_config(home, deadline_ms=deadline_ms)
    with Store.open(home).transaction() as tx:
        tx.set_lockout(LockoutState(failures=9, locked_until=datetime.now(timezone.utc) + timedelta(hours=1)))
    frames = tmp_path / "frames"
    frames.mkdir()
    d = RunningDaemon(home, tmp_path / "d.sock", frames, tmp_path / "daemon.log")
    obama = b"VERIFY obama\n"
    kinds = {"impostor": (faces_dir / "biden2.jpg", obama, b"N"), "genuine": (faces_dir / "obama3.jpg", obama, b"Y"),
             "no face": (faces_dir / "no_face_coffee.png", obama, b"N"),
             "attack": (spoof_dir / "spoof_print_F1.jpg", obama, b"N"),
             "locked": (faces_dir / "obama3.jpg", b"VERIFY\n", b"N")}
    # every failure of obama is followed by a success, so obama's own scope never locks
    order = ["impostor", "genuine", "no face", "attack", "genuine", "locked"]
    times: dict[str, list[float]] = {k: [] for k in kinds}
    try:
        with realtime_priority():
            for _ in range(36):
                for kind in order:
                    image, payload, want = kinds[kind]
                    set_frame(frames, image)
                    answer, seconds = timed_request(d.sock, payload)
                    assert answer == want, kind
                    times[kind].append(seconds * 1e3)
        log = read_log_until(d.log, lambda text: text.count("-> ") >= 36 * len(order))
    finally:
        d.stop()
    p50 = {k: _percentile(v, 0.5) for k, v in times.items()}
    p95 = {k: _percentile(v, 0.95) for k, v in times.items()}
    print("answer times (ms) p50", {k: round(v, 2) for k, v in p50.items()},
          "p95", {k: round(v, 2) for k, v in p95.items()}, "load", os.getloadavg())
    for reason in ("accepted", "no_match", "no_face", "presentation_attack", "locked for"):
        assert reason in log, reason  # each kind really took its own path
    # (an overrun, answered at twice the deadline, would show at p95 if it came with one kind)
    assert min(p50.values()) >= deadline_ms - 1
    assert max(p50.values()) - min(p50.values()) <= 2.0, p50
    assert max(p95.values()) - min(p95.values()) <= 2.0, p95


def test_a_verification_that_overruns_is_answered_at_a_multiple_and_logged(daemon_env, tmp_path):
    """A frame that takes longer than the deadline (here a 24 MP PNG, 50 ms): answered at k x 50 ms, logged."""
    import cv2
    import numpy as np

    home, frames, start = daemon_env
    write_config(home, deadline_ms=50)
    big = np.random.default_rng(0).integers(0, 256, (4000, 6000, 3), dtype=np.uint8)
    assert cv2.imwrite(str(tmp_path / "big.png"), big)
    set_frame(frames, tmp_path / "big.png")
    d = start()
    answer, seconds = timed_request(d.sock, b"VERIFY obama\n")
    ms = seconds * 1e3
    assert answer == b"N" and ms >= 99, ms
    assert abs(ms - 50 * round(ms / 50)) <= 5, ms  # at a multiple of the deadline, not when it was done
    log = read_log_until(d.log, lambda text: "overran" in text)
    assert re.search(r"verification overran the answer deadline \(\d+ ms > 50 ms\); answered at \d+ x", log), log


def test_a_refusal_written_before_the_question_was_read_is_still_a_no(tmp_path):
    """A daemon with every slot taken answers N and closes without reading the request; the client's write can
    then fail with EPIPE. Before, ``ask`` turned that into an error instead of the daemon's no."""
    import threading

    from fr_pbd.daemon.client import ask

    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    path = run / "d.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    os.chmod(path, 0o660)
    srv.listen(4)
    srv.settimeout(10)
    big = b"x" * (4 << 20)  # what a client might still be writing when the daemon has already closed

    def refuse_at_once() -> None:
        conn, _ = srv.accept()
        conn.sendall(b"N")
        conn.close()  # unread: the client's write fails with EPIPE, its N is in the buffer

    t = threading.Thread(target=refuse_at_once, daemon=True)
    t.start()
    import fr_pbd.daemon.client as client

    real = client.request_line
    client.request_line = lambda user: big  # a write long enough to meet the close (the kernel buffer is smaller)
    try:
        assert ask(path, None, timeout=10) is False
    finally:
        client.request_line = real
        t.join(timeout=5)
        srv.close()
