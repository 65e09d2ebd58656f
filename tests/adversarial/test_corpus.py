"""The adversarial corpus: each dishonest product makes its own check FAIL, and the audit never says PASS.

Every trick is a small program (``dishonest_daemon.py``) or a planted file
(``plants.py``). Listeners are this module's, on 127.0.0.1 only, with timeouts;
every daemon exits by itself after a few minutes if the test does not stop it.
The honest control (the same program without a trick) must pass the checks the
tricks fail, so that a FAIL below is the trick's doing, not the program's.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from fr_pbd.audit import FAIL, INCONCLUSIVE, PASS, FramePlan, overall, run_audit
from fr_pbd.audit.probe import no_face_png
from tests.adversarial.plants import SCORE_PLANTS, TEMPLATE_PLANTS, WEAK_KEYS, rekey_store
from tests.test_audit import EVAL_REPORT, need_strace
from tests.test_daemon import wait_for_socket

HERE = Path(__file__).resolve().parent
ROUNDS = 6


def peer_uid() -> int:
    """The second, unprivileged asker: nobody (65534), which Debian and most systems have."""
    import pwd

    try:
        return pwd.getpwuid(65534).pw_uid
    except KeyError:
        from tests.conftest import missing

        missing("no account with uid 65534 (nobody) to ask as a second uid")
        raise


class Collector:
    """Loopback TCP and UDP listeners and a Unix listener that swallow what a dishonest daemon sends."""

    def __init__(self, unix_path: Path) -> None:
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.tcp.settimeout(0.2)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.tcp.getsockname()[1]))
        self.udp.settimeout(0.2)
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(str(unix_path))
        self.unix.listen(4)
        self.unix.settimeout(0.2)
        self.unix_path = unix_path
        self.port = self.tcp.getsockname()[1]
        self.received = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, args=(s,), daemon=True) for s in (self.tcp, self.unix)]
        self._threads.append(threading.Thread(target=self._udp, daemon=True))
        for t in self._threads:
            t.start()

    def _accept(self, srv: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        conn.settimeout(0.5)
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                self.received += len(chunk)

    def _udp(self) -> None:
        while not self._stop.is_set():
            try:
                self.received += len(self.udp.recv(4096))
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        for s in (self.tcp, self.udp, self.unix):
            s.close()


@pytest.fixture()
def eval_report(tmp_path) -> Path:
    p = tmp_path / "eval.json"
    p.write_text(json.dumps(EVAL_REPORT))
    return p


@pytest.fixture()
def dishonest(tmp_path, faces_dir, spoof_dir):
    """start(trick, out=None) -> (socket path, frame plan) of a running dishonest daemon."""
    need_strace()
    procs: list[subprocess.Popen] = []
    collector = Collector(tmp_path / "collector.sock")
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copyfile(faces_dir / "obama3.jpg", frames / "current.jpg")
    plan = FramePlan(frames, "current.jpg", {"genuine": (faces_dir / "obama3.jpg").read_bytes(),
                                             "impostor": (faces_dir / "biden2.jpg").read_bytes(),
                                             "attack": (spoof_dir / "spoof_print_F1.jpg").read_bytes(),
                                             "no-face": no_face_png()})

    sockdir = Path(tempfile.mkdtemp(prefix="fr-pbd-corpus-", dir="/tmp"))
    os.chmod(sockdir, 0o711)  # the second asker (another uid) reaches the socket through it

    def start(trick: str, out: Path | None = None, home: Path | None = None) -> tuple[Path, FramePlan]:
        sock = sockdir / f"{trick}.sock"
        port = collector.port
        if trick == "signal":  # a process of the test's that the daemon signals
            sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
            procs.append(sleeper)
            port = sleeper.pid
        cmd = [sys.executable, str(HERE / "dishonest_daemon.py"), "--socket", str(sock), "--frames", str(frames),
               "--genuine", str(faces_dir / "obama3.jpg"), "--trick", trick, "--port", str(port),
               "--out", str(out if out is not None else collector.unix_path)] + (["--home", str(home)] if home else [])
        p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        wait_for_socket(sock, p, timeout=20)
        return sock, plan

    yield start
    for p in procs:
        p.kill()
        p.wait(timeout=10)
    collector.close()
    shutil.rmtree(sockdir, ignore_errors=True)


def audit(home: Path, sock: Path, plan: FramePlan, **kw):
    kw.setdefault("peer_uid", peer_uid())
    checks = run_audit(home, socket_path=sock, frames=plan, rounds=ROUNDS, verifications=2, **kw)
    return {c.id: c for c in checks}, overall(checks)


def explain(c) -> str:
    return f"{c.status}: {c.summary} | " + " | ".join(c.details[:6])


# --------------------------------------------------------------------------------------
# the control: the same program, honest
# --------------------------------------------------------------------------------------
def test_the_honest_control_passes_what_the_tricks_fail(home, dishonest, eval_report):
    sock, plan = dishonest("honest")
    by_id, _ = audit(home, sock, plan, eval_report=eval_report)
    for cid in ("C3.network", "C3.socket", "C5.answer", "C5.timing", "C3.file-modes"):
        assert by_id[cid].status == PASS, explain(by_id[cid])
    assert "Seccomp: 2, NoNewPrivs: 1" in " ".join(by_id["C3.network"].details)
    assert "byte-identical" in " ".join(by_id["C5.answer"].details)
    # it has no lockout: the genuine frame, accepted before, is accepted right after 5 impostor attempts in a row
    lock = by_id["SEC.lockout"]
    assert lock.status == FAIL and "after 5 failed attempts in a row the genuine frame was accepted" in lock.summary \
        and "failed attempt 5 towards the lockout (impostor frame): no" in lock.details, explain(lock)


# --------------------------------------------------------------------------------------
# the blind corners of an fr-pbd home: each a dishonest product that once got PASS
# --------------------------------------------------------------------------------------
CORNERS = {
    # trick: (check, status now, words its evidence holds)
    "vendor-records": ("C3.file-modes", FAIL, ".vendor-cache (mode 0644"),  # a growing 0644 file of vendor records
    "no-seccomp": ("C3.network", FAIL, "Seccomp: 0"),
    "per-peer": ("C5.answer", FAIL, "different answer from root's for the same frame"),
    "shm": ("C3.network", INCONCLUSIVE, "/dev/shm/fr-pbd-corpus-"),
    "memfd": ("C3.network", INCONCLUSIVE, "/memfd:vendor-state"),
    "keyed-close": ("C5.timing", FAIL, "spread of the close times"),
}


@pytest.mark.parametrize("trick", sorted(CORNERS))
def test_a_blind_corner_of_the_home_is_no_longer_a_pass(trick, home, dishonest):
    cid, status, words = CORNERS[trick]
    sock, plan = dishonest(trick, home=home)
    by_id, result = audit(home, sock, plan)
    c = by_id[cid]
    assert c.status == status and words in c.summary + " ".join(c.details), explain(c)
    assert result != "PASS"


# --------------------------------------------------------------------------------------
# daemons: each trick fails its own check, and the audit never passes
# --------------------------------------------------------------------------------------
DAEMON_TRICKS = {
    # trick: (check that must fail, words its evidence must hold)
    "tcp-write": ("C3.network", "AF_INET/TCP socket"),  # pre-opened at start-up, then write(2)
    "tcp-send": ("C3.network", "byte(s) to a network socket"),  # send(): sendto(fd, ..., NULL, 0)
    "udp-sendto": ("C3.network", "sendto with address family AF_INET"),
    "udp-fresh": ("C3.network", "socket with address family AF_INET"),  # a new socket per request
    "child-net": ("C3.network", "started a child process"),  # (and it runs without the kernel filter)
    "local-relay": ("C3.network", "byte(s) over a Unix socket read by another process"),
    "pipe-relay": ("C3.network", "byte(s) into a pipe read by another process"),
    "extra-byte": ("C5.answer", "2 byte(s), NOT a declared yes/no answer"),
    "score-file": ("C3.logs", "outside/scores.txt"),  # a score file outside the home
    "score-home": ("C3.logs", "home/state/history"),  # score lines in the home, not in a *.log
    "template-out": ("C3.plaintext-templates", "outside/cache.bin"),  # the probe's template, outside the home
    "timing": ("C5.timing", "the answer time tells"),
    "close-delay": ("C5.timing", "time to the close"),  # the byte at once, the close after a score-long delay
    "signal": ("C3.network", "signals another process"),
}
#: tricks the audit cannot read to the end: never a PASS, and the check says why
UNREADABLE_TRICKS = {
    "binary-file": ("C3.plaintext-templates", "outside its data and logs"),  # 4-byte float scores, outside
    "binary-log": ("C3.logs", "that are not text"),  # 4-byte float scores appended to the daemon's log
    "tracer-aware": ("C3.network", "reads its own process status"),  # leaks only while untraced
}


@pytest.mark.parametrize("trick", sorted(DAEMON_TRICKS))
def test_a_dishonest_daemon_fails_its_check(trick, home, dishonest):
    cid, words = DAEMON_TRICKS[trick]
    sock, plan = dishonest(trick, _out(trick, home))
    by_id, result = audit(home, sock, plan)
    c = by_id[cid]
    assert c.status == FAIL, explain(c)
    assert words in c.summary + " ".join(c.details), explain(c)
    assert result == "FAIL"
    assert "0.9700" not in json.dumps([x.to_dict() for x in by_id.values()])  # the leaked score is not repeated


def _out(trick: str, home: Path) -> Path | None:
    out = {"score-file": home.parent / "outside" / "scores.txt", "template-out": home.parent / "outside" / "cache.bin",
           "score-home": home / "state" / "history", "binary-file": home.parent / "outside" / "s.bin",
           "binary-log": home / "daemon.log"}.get(trick)
    if out is not None:
        out.parent.mkdir(exist_ok=True)
    return out


def test_the_daemon_of_issue_12_fails_three_checks(home, dishonest):
    """Issue 12's measurement (audit PASS on main): TCP opened at start-up, the score write(2)n to it per request,
    a delay in proportion to the score, and "score"-like lines appended to a file in the home that is not *.log."""
    (home / "state").mkdir(mode=0o700)
    sock, plan = dishonest("tcp-write+timing+score-home", home / "state" / "history")
    by_id, result = audit(home, sock, plan)
    for cid in ("C3.network", "C5.timing", "C3.logs"):
        assert by_id[cid].status == FAIL, explain(by_id[cid])
    assert "write(" in " ".join(by_id["C3.network"].details) and result == "FAIL"


@pytest.mark.parametrize("trick", sorted(UNREADABLE_TRICKS))
def test_a_daemon_the_audit_cannot_read_to_the_end_is_never_a_pass(trick, home, dishonest):
    cid, words = UNREADABLE_TRICKS[trick]
    sock, plan = dishonest(trick, _out(trick, home))
    by_id, result = audit(home, sock, plan, logs=[home / "daemon.log"] if trick == "binary-log" else ())
    c = by_id[cid]
    assert c.status in (FAIL, INCONCLUSIVE) and words in c.summary + " ".join(c.details), explain(c)
    assert result != "PASS"


def test_a_daemon_that_keeps_the_tracer_out_is_never_a_pass(home, dishonest):
    sock, plan = dishonest("anti-trace")
    by_id, result = audit(home, sock, plan)
    c = by_id["C3.network"]
    # INCONCLUSIVE for what the tracer could not see; FAIL on a home, since it runs without fr-pbd's kernel filter
    assert c.status in (INCONCLUSIVE, FAIL) and "strace could not attach" in c.summary + " ".join(c.details), explain(c)
    assert "already traced by pid" in " ".join(c.details)
    assert result != "PASS"


# --------------------------------------------------------------------------------------
# stores: every template encoding, every score spelling, weak keys, no fallback
# --------------------------------------------------------------------------------------
def plant(home: Path, rel: str, data: bytes) -> Path:
    p = home / rel
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    p.write_bytes(data)
    p.chmod(0o600)
    return p


@pytest.mark.parametrize("name", sorted(TEMPLATE_PLANTS))
def test_a_template_in_any_encoding_fails_the_scan(name, home):
    rel, make = TEMPLATE_PLANTS[name]
    plant(home, rel, make())
    checks = run_audit(home)
    c = {x.id: x for x in checks}["C3.plaintext-templates"]
    assert c.status == FAIL and f"{home / rel}:" in c.summary and ("byte " in c.summary or "line " in c.summary), \
        explain(c)
    assert overall(checks) == "FAIL"


@pytest.mark.parametrize("name", sorted(SCORE_PLANTS))
def test_a_score_in_any_spelling_fails_the_log_scan(name, home):
    rel, text = SCORE_PLANTS[name]
    plant(home, rel, text.encode())
    checks = run_audit(home)
    c = {x.id: x for x in checks}["C3.logs"]
    assert c.status == FAIL and f"{home / rel}: line 1: score-like text" in c.summary, explain(c)
    assert "0.97" not in json.dumps(c.to_dict()) and "97%" not in json.dumps(c.to_dict())
    assert overall(checks) == "FAIL"


@pytest.mark.parametrize("name", sorted(WEAK_KEYS))
def test_a_weak_key_fails_the_key_check(name, home):
    rekey_store(home, WEAK_KEYS[name])
    checks = run_audit(home)
    by_id = {x.id: x for x in checks}
    assert by_id["C4.cipher"].status == PASS, explain(by_id["C4.cipher"])  # it still authenticates
    c = by_id["C4.key"]
    assert c.status == FAIL and "the key file's key is not random" in c.summary, explain(c)
    assert overall(checks) == "FAIL"


def test_a_passphrase_store_without_fallback_is_never_a_pass(tmp_path):
    from fr_pbd.store import Store
    from fr_pbd.store.keys import PassphraseKeyProvider

    home = tmp_path / "pp"
    secret = "correct horse battery staple"
    Store.create(home, model_id="dlib-resnet-v1", dim=128, key_provider=PassphraseKeyProvider(secret))
    checks = {c.id: c for c in run_audit(home)}
    assert checks["C2.fallback"].status == INCONCLUSIVE and "--passphrase-stdin" in checks["C2.fallback"].needs
    assert overall(list(checks.values())) != "PASS"
    checks = {c.id: c for c in run_audit(home, passphrase=secret)}
    assert checks["C2.fallback"].status == FAIL and "no fallback credential" in checks["C2.fallback"].summary
    assert checks["C4.key"].status == PASS and "passphrase" in checks["C4.key"].summary
    assert overall(list(checks.values())) == "FAIL"


# --------------------------------------------------------------------------------------
# black-box mode: a product that is not fr-pbd, end to end through the command line
# (fr-pbd's own daemon as a black box: tests/test_audit.py::test_fr_pbds_own_daemon_passes_as_a_black_box)
# --------------------------------------------------------------------------------------
def audit_target(name: str, root: Path, out: Path, data_dir: Path, **env_vars: str
                 ) -> tuple[subprocess.CompletedProcess, dict]:
    env = dict(os.environ, FR_PBD_TARGET_ROOT=str(root), FR_PBD_DATA=str(data_dir.resolve()), **env_vars)
    if env.get("FR_PBD_MODELS"):  # the product runs in its root: relative paths would not hold there
        env["FR_PBD_MODELS"] = str(Path(env["FR_PBD_MODELS"]).resolve())
    p = subprocess.run([sys.executable, "-m", "fr_pbd.cli", "audit", "--target", str(HERE / "targets" / name),
                        "--out", str(out), "--verifications", "1", "--timing-rounds", "5"],
                       capture_output=True, text=True, timeout=600, env=env, check=False)
    doc = json.loads((out / "audit.json").read_text()) if (out / "audit.json").exists() else {}
    return p, doc


def test_the_howdy_like_product_fails_with_evidence(tmp_path, data_dir):
    need_strace()
    (tmp_path / "frames").mkdir()
    shutil.copyfile(data_dir / "faces" / "obama3.jpg", tmp_path / "frames" / "current.jpg")
    p, doc = audit_target("howdylike.toml", tmp_path, tmp_path / "out", data_dir)
    assert p.returncode == 1, p.stdout + p.stderr
    by_id = {c["id"]: c for c in doc["checks"]}
    ev = {k: c["evidence"]["summary"] + " | " + " | ".join(c["evidence"]["details"]) for k, c in by_id.items()}
    st = {k: c["status"] for k, c in by_id.items()}
    assert doc["result"] == "FAIL" and doc["installation"]["store_format"] == "unknown (black box)"
    assert st["C3.plaintext-templates"] == FAIL and "data/models/obama.dat" in ev["C3.plaintext-templates"]
    assert st["C3.logs"] == FAIL and "log/howdy.log: line 1: score-like text" in ev["C3.logs"]
    assert st["C3.file-modes"] == FAIL and "readable to other users" in ev["C3.file-modes"]
    assert st["C3.socket"] == FAIL and "gives other users access" in ev["C3.socket"]
    assert st["C4.ciphertext"] == FAIL and "obama.dat" in ev["C4.ciphertext"]
    assert st["C5.answer"] == FAIL and "NOT a declared yes/no answer" in ev["C5.answer"]
    assert st["C3.network"] == PASS, ev["C3.network"]  # it keeps everything local: the audit says so
    # its answers carry the distance: no declared yes ever came, so a refusal would prove no lock
    assert st["SEC.lockout"] == INCONCLUSIVE and "not accepted at all" in ev["SEC.lockout"], ev["SEC.lockout"]
    for cid in ("C1.profile", "C2.consent", "C2.fallback", "C4.cipher", "C4.key", "DPIA.accuracy"):
        assert st[cid] == INCONCLUSIVE and "not fr-pbd's" in by_id[cid]["needs"]
    # its distances ("distance 0.3500", "YES 0.3500") are not repeated (a timing such as 0.35 s may appear)
    assert not re.search(r"(distance|YES|NO) 0\.\d{4}", json.dumps(doc)) and "0.3500" not in json.dumps(doc)



# --------------------------------------------------------------------------------------
# missing evidence is never a pass
# --------------------------------------------------------------------------------------
def test_without_strace_the_network_check_is_inconclusive(home, dishonest, eval_report):
    sock, plan = dishonest("honest")
    by_id, result = audit(home, sock, plan, eval_report=eval_report, use_strace=False)
    c = by_id["C3.network"]
    assert c.status == INCONCLUSIVE and "strace" in c.needs, explain(c)
    assert by_id["C3.logs"].status == INCONCLUSIVE and by_id["C3.plaintext-templates"].status == INCONCLUSIVE
    # nothing else fails, but for fr-pbd's own known DPIA.bias failure (tests/test_audit.known_product_failures)
    # and SEC.lockout: this honest control has no lockout, which the audit rightly fails
    failed = {cid for cid, chk in by_id.items() if chk.status == FAIL}
    assert by_id["SEC.lockout"].status == FAIL
    assert failed - {"SEC.lockout"} <= {"DPIA.bias"}
    assert all("times the claimed" in by_id[cid].summary for cid in failed - {"SEC.lockout"})
    assert result == ("FAIL" if failed else "INCOMPLETE")


def test_without_the_right_to_read_proc_the_evidence_is_missing_not_clean():
    """An auditor who is neither root nor the daemon's user: /proc/PID/fd and ptrace are refused, and said so."""
    from tests.conftest import need_root, need_tool
    from tests.helpers import absent_uid

    need_root("an auditor of another uid")
    setpriv = need_tool("setpriv", "util-linux")
    need_tool("strace", "strace")
    uid = absent_uid()  # someone else: a uid no account (and so no process of the host) has
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        code = ("from fr_pbd.audit import procfs, trace\n"
                f"s = procfs.snapshot({victim.pid}); t = trace.Tracer({victim.pid})\n"
                "print(s.gaps); print(t.start(), t.error)\n")
        p = subprocess.run([setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", sys.executable, "-c",
                            code], capture_output=True, text=True, timeout=60, check=False)
    finally:
        victim.kill()
        victim.wait()
    assert p.returncode == 0, p.stderr
    assert f"cannot list /proc/{victim.pid}/fd (Permission denied): run the audit as root" in p.stdout
    assert "False strace could not attach" in p.stdout
