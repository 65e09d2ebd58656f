"""Soak of the yes/no daemon: many requests from several uids, parallel and idle clients, real frames.

    FR_PBD_MODELS=../shared/models FR_PBD_DATA=../shared/data \\
        .venv/bin/python benchmarks/soak_daemon.py --out RESULT.json [--requests 10000] [--parallel 4] \\
        [--idle 2] [--deadline-ms 200]

Needs root (it runs clients as other uids with ``setpriv`` and creates one Unix account with
``useradd``, removed at the end). tests/test_soak.py runs the same code for 300 requests.

What runs: a real ``fr-pbd serve --frames DIR`` on a home of its own, where ``obama`` (no Unix
account) and the soak's account are enrolled from obama.jpg and obama2.jpg. The askers, each
a process of its own that asks when told to:

* ``root`` (two clients): ``VERIFY obama``, ``VERIFY`` or ``VERIFY <account>``: root may ask for
  any account;
* ``account`` (the soak's account's uid): ``VERIFY`` or ``VERIFY <account>``, its own templates,
  and one time in ten ``VERIFY obama``, which the daemon refuses at once (a peer other than
  root asks only for its own account): N whatever the frame;
* ``no-account`` (a uid with no account): ``VERIFY``, refused at once (no account to check the
  face against): N whatever the frame;
* idle clients (another uid with no account): connect, say nothing, and are dropped with N at
  the daemon's read deadline (the answer deadline); they reconnect at once. Each must be held
  until that deadline: an N that came sooner means the daemon refused it as busy.

All uids are on the daemon's ``allowed_uids``. Requests go in rounds: the frame is set (a
genuine photo, obama3 or obama4; the impostor biden2; a photo without a face), every parallel
client sends one request at the same moment, and the next frame waits for every answer. So
each answer is known: Y for a verification of an enrolled claim on a genuine frame, N for
everything else; every answer is checked and each wrong one counted.

The lockout, accounted exactly: an impostor frame counts one failure in each scope verified
(the claimed account, or "any enrolled user" for root's bare ``VERIFY``), a genuine frame
clears the scopes it verifies, a frame without a face counts nothing. An impostor round is
only chosen while every scope it touches stays at 4 failures or fewer (5 lock), else the
round shows a genuine frame. At every sample, and once the daemon has stopped, the store's
count in each scope must equal the soak's own.

Samples: before the first request and every ``--sample-every`` (100) requests, the idle
clients pause, the daemon's connections close (the fd count is steady for 50 ms), and the
daemon process is read from /proc: VmRSS, open fds (and how many of them are sockets),
threads. The sample after the first 100 requests is the reference: by then the models have
run on every kind of frame and the allocator has its working set. The soak fails (exit 1)
unless every answer was right, the lockout counts match, the daemon logged no error, and the
maximum and the last sample stay within 5 % of the reference RSS, and within max(1, 5 %) of
the reference fds and threads. Why the +1 for counts: they are integers near 12, where 5 %
(0.6) would mean "equal"; a leak grows with the requests (one fd per 1,000 requests is +10
over 10,000), while +1 only absorbs a file or thread that exists at the sampling instant
(the egress record's atomic write, a lockout clear before its join) and hides no trend.

Nothing biometric is written: counts, answers (Y/N), times and the daemon's process figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "fr-pbd/soak-daemon/1"
PIN = "soak fallback passphrase"
ENROL = ("obama.jpg", "obama2.jpg")
FRAMES = {"genuine": ("obama3.jpg", "obama4.jpg"), "impostor": ("biden2.jpg",), "no_face": ("no_face_coffee.png",)}
FRAME_ODDS = {"genuine": 0.5, "impostor": 0.3, "no_face": 0.2}
LOCK_AFTER = 5  # failures that lock a scope (fr_pbd.attempts)
KINDS = ("root", "account", "no-account", "root", "account", "no-account")
ANY = "*"  # the "any enrolled user" scope: root's VERIFY without a name

# The client: stdlib only (run with -I -S, so any uid can run it), one process per asker.
# Commands on stdin: "ASK <line>" (one request, answered with [answer, ms]), "IDLE <n>" (n idle
# connections, each reconnecting as soon as it is dropped), "PAUSE" (end them, print their tally).
CLIENT = r'''
import json, socket, sys, threading, time
path = sys.argv[1]

def exchange(line):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    t0 = time.monotonic()  # before connect: the daemon may accept (and start its clock) before connect returns
    try:
        s.connect(path)
        if line:
            s.sendall(line)
        out = b""
        while True:
            chunk = s.recv(16)
            if not chunk:
                break
            out += chunk
        return out.decode("ascii", "replace"), (time.monotonic() - t0) * 1e3
    except OSError as exc:
        return "error: " + type(exc).__name__, 0.0
    finally:
        s.close()

class Idle:
    def __init__(self, n):
        self.stop, self.lock = threading.Event(), threading.Lock()
        self.answers, self.ms = {}, []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def run(self):
        while not self.stop.is_set():
            answer, ms = exchange(b"")
            with self.lock:
                self.answers[answer] = self.answers.get(answer, 0) + 1
                self.ms.append(ms)

    def pause(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        return {"answers": self.answers, "min_ms": min(self.ms, default=None), "max_ms": max(self.ms, default=None)}

idle = None
for line in sys.stdin:
    cmd, _, arg = line.rstrip("\n").partition(" ")
    if cmd == "ASK":
        answer, ms = exchange(arg.encode("ascii") + b"\n")
        print(json.dumps([answer, round(ms, 1)]), flush=True)
    elif cmd == "IDLE":
        idle = Idle(int(arg))
    elif cmd == "PAUSE":
        print(json.dumps(idle.pause() if idle else {}), flush=True)
        idle = None
    elif cmd == "QUIT":
        break
'''


@dataclass(frozen=True)
class SoakConfig:
    requests: int = 10_000
    parallel: int = 4  # clients asking at once, cycling root, account, no-account, root, ...
    idle: int = 2  # idle connections held at once (one uid)
    deadline_ms: int = 200
    sample_every: int = 100
    reference_after: int = 100
    rss_tolerance: float = 0.05
    count_tolerance: float = 0.05  # of fds and threads, at least 1 (see the module docstring)
    seed: int = 23

    def __post_init__(self) -> None:
        if not 3 <= self.parallel <= len(KINDS):
            raise ValueError(f"--parallel must be 3-{len(KINDS)} (root, account and no-account each ask)")
        if self.requests < self.reference_after:
            raise ValueError(f"--requests must be at least {self.reference_after} (the reference sample)")
        if self.reference_after % self.sample_every:
            raise ValueError("the reference must fall on a sample")


# --------------------------------------------------------------------------------------
# accounts, uids, the daemon
# --------------------------------------------------------------------------------------
def free_uids(n: int) -> list[int]:
    """``n`` uids that no account on this machine has (checked now), highest first below 65534."""
    taken = {p.pw_uid for p in pwd.getpwall()}
    return [uid for uid in range(65533, 1000, -1) if uid not in taken][:n]


@contextlib.contextmanager
def soak_account() -> Iterator[pwd.struct_passwd]:
    """A Unix account of this run's own (a system account, no home), removed at the end."""
    name = f"frpbd-soak{os.getpid()}"[:32]
    try:
        pwd.getpwnam(name)
        raise SystemExit(f"soak: an account {name!r} exists already (left over? userdel {name})")
    except KeyError:
        pass
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True, timeout=60)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=60, check=False)


def python_for(uid: int) -> list[str]:
    """A Python that ``uid`` (group 0, the socket's group) can run, without site-packages."""
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    prefix = [] if uid == 0 else [setpriv, f"--reuid={uid}", "--regid=0", "--clear-groups"]
    for py in dict.fromkeys([os.path.realpath(sys.executable), "/usr/bin/python3"]):
        cmd = [*prefix, py, "-I", "-S"]
        try:
            if subprocess.run([*cmd, "-c", "pass"], capture_output=True, timeout=30, check=False).returncode == 0:
                return cmd
        except OSError:
            continue
    raise RuntimeError(f"no Python interpreter that uid {uid} can run (setpriv: util-linux)")


def make_home(home: Path, faces: Path, account: str, extractor=None) -> None:
    """Fallback set; obama and ``account`` enrolled (with consent) from the same two photos."""
    from fr_pbd.verify import Consent, Verifier

    v = Verifier(home, extractor)
    v.set_fallback(PIN)
    for user in ("obama", account):
        v.enroll(user, [faces / f for f in ENROL], Consent("1", "soak"), fallback=PIN)


def write_config(home: Path, deadline_ms: int, uids: list[int]) -> None:
    (home / "config.toml").write_text(f"[daemon]\nanswer_deadline_ms = {deadline_ms}\n"
                                      f"allowed_uids = [{', '.join(map(str, uids))}]\n")
    os.chmod(home / "config.toml", 0o600)


def start_daemon(home: Path, sock: Path, frames: Path, log: Path, timeout: float = 180.0) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fr_pbd.cli", "serve", "--home", str(home), "--socket", str(sock),
           "--frames", str(frames), "--log", str(log)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + timeout
    while not sock.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode}: {proc.stderr.read().strip()}")
        if time.monotonic() > end:
            proc.kill()
            raise RuntimeError(f"the daemon did not listen within {timeout:.0f} s")
        time.sleep(0.05)
    return proc


def stop_daemon(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def set_frame(frames: Path, data: bytes) -> None:
    tmp = frames / ".next.jpg"
    tmp.write_bytes(data)
    os.replace(tmp, frames / "current.jpg")


# --------------------------------------------------------------------------------------
# the daemon's process, from /proc
# --------------------------------------------------------------------------------------
def proc_figures(pid: int) -> dict[str, int]:
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.split()
    fd_dir = Path(f"/proc/{pid}/fd")
    names = os.listdir(fd_dir)
    sockets = 0
    for name in names:
        with contextlib.suppress(OSError):
            sockets += os.readlink(fd_dir / name).startswith("socket:")
    return {"rss_kb": int(status["VmRSS"][0]), "fds": len(names), "sockets": sockets,
            "threads": int(status["Threads"][0])}


def settled_fds(pid: int, steady_s: float = 0.05, limit_s: float = 5.0) -> float:
    """Wait until the daemon's fd count is steady (its answered connections closed); seconds waited."""
    t0 = time.monotonic()
    last, since = -1, t0
    while time.monotonic() - t0 < limit_s:
        n = len(os.listdir(f"/proc/{pid}/fd"))
        now = time.monotonic()
        if n != last:
            last, since = n, now
        elif now - since >= steady_s:
            break
        time.sleep(0.01)
    return time.monotonic() - t0


# --------------------------------------------------------------------------------------
# clients and the plan
# --------------------------------------------------------------------------------------
class Client:
    def __init__(self, name: str, kind: str, uid: int, sock: Path) -> None:
        self.name, self.kind, self.uid = name, kind, uid
        self.proc = subprocess.Popen([*python_for(uid), "-c", CLIENT, str(sock)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def reply(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client {self.name} (uid {self.uid}) ended")
        return json.loads(line)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send("QUIT")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Plan:
    """Claims and expected answers, with the lockout counts the daemon must reach."""

    account: str
    rng: random.Random
    failures: dict[str, int] = field(default_factory=lambda: {ANY: 0, "obama": 0})
    switched: int = 0  # impostor rounds turned genuine to keep every scope below the lock
    peak: int = 0  # the most failures any scope reached

    def claim(self, kind: str) -> tuple[str | None, str | None]:
        """(the request's name or None, the scope it verifies or None when refused at once)."""
        r = self.rng.random()
        if kind == "root":
            return (("obama", "obama") if r < 0.4 else (None, ANY) if r < 0.7 else (self.account, self.account))
        if kind == "account":
            return (("obama", None) if r < 0.1 else (None, self.account) if r < 0.55 else
                    (self.account, self.account))
        return None, None  # no-account: refused, whatever it asks

    def frame_kind(self, scopes: list[str]) -> str:
        kind = self.rng.choices(list(FRAME_ODDS), weights=list(FRAME_ODDS.values()))[0]
        if kind == "impostor":
            for s in set(scopes):
                if self.failures.get(s, 0) + scopes.count(s) >= LOCK_AFTER:
                    self.switched += 1
                    kind = "genuine"
                    break
        for s in scopes:
            if kind == "impostor":
                self.failures[s] = self.failures.get(s, 0) + 1
            elif kind == "genuine":
                self.failures[s] = 0
        self.peak = max(self.peak, *self.failures.values())
        return kind


def _limit(ref: int, tolerance: float, at_least: int) -> float:
    return max(ref * tolerance, at_least)


def check_samples(samples: list[dict[str, Any]], cfg: SoakConfig) -> dict[str, Any]:
    """The reference (after ``reference_after`` requests), the max and the last, each figure within bounds."""
    ref = next(s for s in samples if s["requests"] >= cfg.reference_after)
    later = [s for s in samples if s["requests"] >= ref["requests"]]
    out: dict[str, Any] = {"reference_after_requests": ref["requests"]}
    for key, tol, at_least in (("rss_kb", cfg.rss_tolerance, 0), ("fds", cfg.count_tolerance, 1),
                               ("threads", cfg.count_tolerance, 1)):
        values = [s[key] for s in later]
        allowed = _limit(ref[key], tol, at_least)
        mx, last = max(values), values[-1]
        out[key] = {"reference": ref[key], "max": mx, "min": min(values), "last": last,
                    "first_sample": samples[0][key], "allowed_change": round(allowed, 1),
                    "max_change_pct": round(100 * (mx - ref[key]) / ref[key], 2),
                    "last_change_pct": round(100 * (last - ref[key]) / ref[key], 2),
                    "ok": mx - ref[key] <= allowed and abs(last - ref[key]) <= allowed}
    return out


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, round(q * (len(xs) - 1)))], 1)


# --------------------------------------------------------------------------------------
# the soak
# --------------------------------------------------------------------------------------
def run_soak(cfg: SoakConfig, faces: Path, account: pwd.struct_passwd, *, extractor=None,
             progress=print) -> dict[str, Any]:
    """Run one soak against a daemon of its own; returns the result (``result["ok"]``: every check held)."""
    uids = [0, account.pw_uid, *free_uids(2)]
    work = Path(tempfile.mkdtemp(prefix="fr-pbd-soak-", dir="/tmp"))
    try:
        return _soak_in(work, cfg, faces, account, uids, extractor, progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _soak_in(work: Path, cfg: SoakConfig, faces: Path, account: pwd.struct_passwd, uids: list[int], extractor,
             progress) -> dict[str, Any]:
    from fr_pbd.store import Store

    frame_bytes = {k: [(faces / f).read_bytes() for f in names] for k, names in FRAMES.items()}
    _root, _account, no_account_uid, idle_uid = uids
    os.chmod(work, 0o755)  # the other uids reach the socket (0660, group root: they run with group 0)
    home, frames, sock, log = work / "home", work / "frames", work / "d.sock", work / "daemon.log"
    frames.mkdir()
    make_home(home, faces, account.pw_name, extractor)
    write_config(home, cfg.deadline_ms, uids)
    set_frame(frames, frame_bytes["genuine"][0])
    load_before = [round(x, 2) for x in os.getloadavg()]
    daemon = start_daemon(home, sock, frames, log)
    clients: list[Client] = []
    t_start = time.monotonic()
    try:
        kind_uid = {"root": 0, "account": account.pw_uid, "no-account": no_account_uid}
        askers = [Client(f"{kind}-{i}", kind, kind_uid[kind], sock) for i, kind in enumerate(KINDS[:cfg.parallel])]
        clients += askers
        idler = Client("idle", "idle", idle_uid, sock) if cfg.idle else None
        if idler is not None:
            clients.append(idler)  # closed with the others, after them
        plan = Plan(account.pw_name, random.Random(cfg.seed))
        samples: list[dict[str, Any]] = []
        idle_tally: dict[str, Any] = {"answers": {}, "min_ms": None, "max_ms": None}
        wrong: list[dict[str, Any]] = []
        lockout_mismatch: list[int] = []  # the samples (requests done) at which the store's counts differed
        counts: dict[str, Any] = {"rounds": 0, "switched_to_genuine": 0, "by_frame": {k: 0 for k in FRAMES},
                                  "by_kind": {}, "answers": {}}
        times: dict[str, list[float]] = {"verified": [], "refused": []}

        def pause_idle() -> None:
            if idler is None:
                return
            idler.send("PAUSE")
            t = idler.reply()
            if not t:
                return  # not started yet
            for a, n in t["answers"].items():
                idle_tally["answers"][a] = idle_tally["answers"].get(a, 0) + n
            if t["min_ms"] is not None:
                lo, hi = idle_tally["min_ms"], idle_tally["max_ms"]
                idle_tally["min_ms"] = t["min_ms"] if lo is None else min(lo, t["min_ms"])
                idle_tally["max_ms"] = t["max_ms"] if hi is None else max(hi, t["max_ms"])

        def lockout_now() -> dict[str, int]:
            """The store's counts once they equal the plan's (a success's clear may land just after its answer)."""
            end = time.monotonic() + 3.0
            while True:
                view = Store.open(home).read()
                got = {s: view.lockout_of(None if s == ANY else s).failures for s in plan.failures}
                if got == plan.failures or time.monotonic() > end:
                    return got
                time.sleep(0.05)

        def sample(done: int) -> None:
            pause_idle()
            settle = settled_fds(daemon.pid)
            if lockout_now() != plan.failures:
                lockout_mismatch.append(done)
            s = {"requests": done, "t_s": round(time.monotonic() - t_start, 1), **proc_figures(daemon.pid),
                 "settle_ms": round(settle * 1e3), "load1": round(os.getloadavg()[0], 2)}
            samples.append(s)
            progress(f"soak: {done}/{cfg.requests} requests, {s['t_s']:.0f} s: RSS {s['rss_kb'] / 1024:.1f} MB, "
                     f"{s['fds']} fds ({s['sockets']} sockets), {s['threads']} threads; wrong {len(wrong)}; "
                     f"load {s['load1']}")
            if idler is not None and done < cfg.requests:
                idler.send(f"IDLE {cfg.idle}")

        sample(0)
        done = 0
        while done < cfg.requests:
            if daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited with {daemon.returncode} after {done} requests")
            active = askers[:min(len(askers), cfg.requests - done)]
            claims = [plan.claim(c.kind) for c in active]
            frame = plan.frame_kind([scope for _, scope in claims if scope is not None])
            set_frame(frames, plan.rng.choice(frame_bytes[frame]))
            for c, (user, _) in zip(active, claims):
                c.send("ASK VERIFY" + (f" {user}" if user else ""))
            for c, (user, scope) in zip(active, claims):
                got, ms = c.reply()
                want = "Y" if scope is not None and frame == "genuine" else "N"
                done += 1
                k = counts["by_kind"].setdefault(c.kind, {"requests": 0, "Y": 0, "N": 0, "other": 0})
                k["requests"] += 1
                k[got if got in ("Y", "N") else "other"] += 1
                counts["answers"][got] = counts["answers"].get(got, 0) + 1
                times["verified" if scope is not None else "refused"].append(ms)
                if got != want:
                    wrong.append({"request": done, "client": c.name, "claim": user, "frame": frame,
                                  "expected": want, "answer": got})
            counts["rounds"] += 1
            counts["by_frame"][frame] += 1
            if done % cfg.sample_every == 0 or done == cfg.requests:
                sample(done)
        counts["switched_to_genuine"] = plan.switched
        duration = time.monotonic() - t_start
    finally:
        for c in clients:
            c.close()
        daemon_exit = stop_daemon(daemon)
    load_after = [round(x, 2) for x in os.getloadavg()]
    log_text = log.read_text(errors="replace")
    view = Store.open(home).read()
    store_failures = {s: view.lockout_of(None if s == ANY else s).failures for s in plan.failures}
    pipeline_line = next((line.split(": ", 1)[1] for line in log_text.splitlines() if ": board " in line), "")

    idle_n = sum(idle_tally["answers"].values())
    idle_ok = (set(idle_tally["answers"]) <= {"N"}
               and (idle_tally["min_ms"] is None or idle_tally["min_ms"] >= cfg.deadline_ms - 5))
    errors_logged = [line for line in log_text.splitlines()
                     if "internal error" in line or ": error: " in line or "cannot write" in line]
    figures = check_samples(samples, cfg)
    checks = {
        "answers": not wrong,
        "idle_dropped_at_deadline_with_n": idle_ok,
        "lockout_counts_match": store_failures == plan.failures and not lockout_mismatch,
        "no_error_logged": not errors_logged,
        "daemon_exit_0": daemon_exit == 0,
        "yes_logged": log_text.count("-> Y") == counts["answers"].get("Y", 0),
        "rss": figures["rss_kb"]["ok"], "fds": figures["fds"]["ok"], "threads": figures["threads"]["ok"],
    }
    return {
        "schema": SCHEMA,
        "config": {"precision": "int8" if "-int8" in pipeline_line else "fp32",
                   "liveness": "liveness on" in pipeline_line,
                   "threads": None, "pipeline": pipeline_line, **asdict(cfg),
                   "clients": [c_kind for c_kind in KINDS[:cfg.parallel]],
                   "idle_uid_connections": cfg.idle, "frames": {k: list(v) for k, v in FRAMES.items()},
                   "frame_odds": FRAME_ODDS, "enrolled": ["obama", "the soak's account"], "max_frames": "default",
                   "uids": {"root": 0, "account": "created by useradd", "no-account": "free uid", "idle": "free uid"}},
        "ok": all(checks.values()),
        "checks": checks,
        "requests": done,
        "duration_s": round(duration, 1),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "counts": counts,
        "wrong": {"count": len(wrong), "first": wrong[:50]},
        "idle": {"connections": idle_n, **idle_tally},
        "answer_ms": {g: {"p50": _pct(v, 0.5), "p95": _pct(v, 0.95), "max": _pct(v, 1.0)} for g, v in times.items()},
        "lockout": {"expected_at_end": plan.failures, "store_at_end": store_failures, "lock_after": LOCK_AFTER,
                    "max_planned": plan.peak, "samples_that_differed": lockout_mismatch[:20]},
        "daemon_log": {"overruns": log_text.count("overran the answer deadline"), "errors": errors_logged[:10],
                       "yes_lines": log_text.count("-> Y")},
        "figures": figures,
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = SoakConfig()
    ap.add_argument("--out", type=Path, required=True, help="the JSON result to write")
    ap.add_argument("--requests", type=int, default=d.requests)
    ap.add_argument("--parallel", type=int, default=d.parallel)
    ap.add_argument("--idle", type=int, default=d.idle)
    ap.add_argument("--deadline-ms", type=int, default=d.deadline_ms)
    ap.add_argument("--seed", type=int, default=d.seed)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("soak: needs root (clients of other uids through setpriv, an account through useradd)", file=sys.stderr)
        return 2
    cfg = SoakConfig(requests=args.requests, parallel=args.parallel, idle=args.idle, deadline_ms=args.deadline_ms,
                     seed=args.seed)
    faces = Path(os.environ.get("FR_PBD_DATA", "../shared/data")) / "faces"
    with soak_account() as account:
        result = run_soak(cfg, faces, account, progress=lambda line: print(line, file=sys.stderr, flush=True))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    f = result["figures"]
    print(f"soak: {result['requests']} requests in {result['duration_s']:.0f} s, wrong {result['wrong']['count']}, "
          f"idle connections {result['idle']['connections']}; RSS {f['rss_kb']['reference'] / 1024:.1f} -> max "
          f"{f['rss_kb']['max'] / 1024:.1f}, last {f['rss_kb']['last'] / 1024:.1f} MB; fds {f['fds']['reference']} -> "
          f"{f['fds']['max']}/{f['fds']['last']}; threads {f['threads']['reference']} -> "
          f"{f['threads']['max']}/{f['threads']['last']}; checks {result['checks']}", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
