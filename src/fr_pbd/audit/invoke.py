"""The ``[invoke]`` shape: a product run once per verification (a comparator PAM starts per login).

Each run is started under ``strace -f -yy`` (no attach: it is traced from its first
instruction, every descendant with it); its exit status, and optionally its standard output,
is the answer. The evidence of all runs is merged (:func:`merged_events`); the first
``execve`` of each run is the audit starting the product and is left out.

    [invoke]
    command = ["{python}", "{target_dir}/comparator.py", "--user", "alice"]
    cwd = "."                      # relative to the target's root
    env = { LANG = "C" }           # added to a minimal environment (PATH, HOME)
    timeout = 10                   # seconds; past it the run is killed and counts as no
    yes_exit = [0]                 # every other status, a signal or the timeout is no
    yes_stdout = "^MATCH"          # optional regexes (search) on its standard output
    no_stdout = "^NO MATCH"

:func:`probe_invoke` asks as :func:`fr_pbd.audit.probe.probe` asks a daemon (live verifications
and one round of every probe frame traced; untraced timing rounds; the lockout sequence) and
gives the same :class:`~fr_pbd.audit.probe.ProbeResult`, with ``shape = "invoke"``: the exit
status is the answer, each run's standard output and error are logs the scanners read, and no
socket is left for other users to connect to.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fr_pbd.audit.probe import (CLASSES, LOCK_ATTEMPTS, Answer, FramePlan, ProbeResult, _lookup_holders,
                                lockout_sequence)
from fr_pbd.audit import procfs
from fr_pbd.audit.trace import CALLS, MAX_STRING, MAX_TRACE, Event, Tracer, parse
from fr_pbd.errors import AuditError

__all__ = ["InvokeSpec", "InvokeRun", "parse_invoke", "run_once", "merged_events", "probe_invoke"]

MAX_STDOUT = 1 << 20


@dataclass(frozen=True)
class InvokeSpec:
    command: tuple[str, ...]
    cwd: Path
    env: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0
    yes_exit: tuple[int, ...] = (0,)
    yes_stdout: re.Pattern[bytes] | None = None
    no_stdout: re.Pattern[bytes] | None = None
    name: str = "the product"
    #: what the checks written for a daemon's protocol read: a run has no request to malform
    malformed: tuple = ()
    silent_close_ok: bool = False
    #: argv the audit puts before each run, outside the trace (the [pam] shape's private /etc/pam.d)
    wrapper: tuple[str, ...] = ()

    def describe(self) -> str:
        rx = "".join(f", {k} {getattr(self, k).pattern!r}" for k in ("yes_stdout", "no_stdout")
                     if getattr(self, k) is not None)
        return (f"{self.name}: run once per verification ([invoke] {' '.join(self.command)[:160]}); yes = exit "
                f"status {', '.join(map(str, self.yes_exit))}{rx}; any other status, a signal or the "
                f"{self.timeout:g} s timeout is no")

    def outcome(self, status: int | None, stdout: bytes) -> str | None:
        """yes, no, or None (the exit status says one thing, the declared output does not follow)."""
        if status is not None and status in self.yes_exit:
            return "yes" if self.yes_stdout is None or self.yes_stdout.search(stdout) else None
        return "no" if self.no_stdout is None or self.no_stdout.search(stdout) else None


@dataclass
class InvokeRun:
    label: str
    status: int | None = None  # exit status; None: killed by a signal or the timeout
    signal: int | None = None
    timed_out: bool = False
    seconds: float | None = None
    stdout: bytes = field(default=b"", repr=False)  # in memory only: never reported
    outcome: str | None = None
    events: list[Event] | None = None
    trace_error: str | None = None
    trace_truncated: bool = False
    root_pid: int | None = None


def parse_invoke(table: object, where: str, *, root: Path, target_dir: Path, name: str = "the product"
                 ) -> InvokeSpec:
    """``[invoke]`` of a TARGET.toml (strings already ``${VAR}``-expanded by the caller where it wants)."""
    if not isinstance(table, dict):
        raise AuditError(f"{where}: [invoke] must be a table")
    unknown = set(table) - {"command", "cwd", "env", "timeout", "yes_exit", "yes_stdout", "no_stdout"}
    if unknown:
        raise AuditError(f"{where}: unknown key(s) in [invoke]: {', '.join(sorted(unknown))}")
    cmd = table.get("command")
    if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str) for a in cmd):
        raise AuditError(f"{where}: [invoke] command must be a non-empty list of strings")
    cmd = [a.replace("{python}", sys.executable).replace("{target_dir}", str(target_dir)) for a in cmd]
    cwd = Path(str(table.get("cwd", ".")))
    env = table.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise AuditError(f"{where}: [invoke] env must be a table of strings")
    timeout = table.get("timeout", 10)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 300:
        raise AuditError(f"{where}: [invoke] timeout must be a number of seconds from 0 to 300")
    yes_exit = table.get("yes_exit", [0])
    if not isinstance(yes_exit, list) or not yes_exit or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= 255 for s in yes_exit):
        raise AuditError(f"{where}: [invoke] yes_exit must be a list of exit statuses (0-255)")
    rx = {}
    for k in ("yes_stdout", "no_stdout"):
        if k in table:
            if not isinstance(table[k], str):
                raise AuditError(f"{where}: [invoke] {k} must be a string (a regular expression)")
            try:
                rx[k] = re.compile(table[k].encode("utf-8"), re.M)
            except re.error as exc:
                raise AuditError(f"{where}: [invoke] {k} is not a regular expression: {exc}") from None
    return InvokeSpec(tuple(cmd), cwd if cwd.is_absolute() else root / cwd, tuple(sorted(env.items())),
                      float(timeout), tuple(yes_exit), rx.get("yes_stdout"), rx.get("no_stdout"), name)


def run_once(spec: InvokeSpec, label: str, *, use_strace: bool = True, logs: tuple[Path, Path] | None = None
             ) -> InvokeRun:
    """One verification: the command started (under strace, from its first instruction), its answer read.

    ``logs``: files its standard output and error are appended to, for the scanners (C3.logs)."""
    run = InvokeRun(label)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           **dict(spec.env)}
    argv = list(spec.command)
    r = w = None
    exe = shutil.which("strace") if use_strace else None
    if exe is not None:
        r, w = os.pipe()
        argv = [exe, "-f", "-yy", "-xx", "-qq", "-s", str(MAX_STRING), "-e", "trace=" + ",".join(CALLS),
                "-o", f"/dev/fd/{w}", "--", *argv]
    else:
        run.trace_error = "strace is not installed (apt-get install strace)" if use_strace else \
            "strace was not used (--no-strace)"
    argv = [*spec.wrapper, *argv]
    chunks: list[bytes] = []
    size = [0]

    def drain() -> None:
        assert r is not None
        with os.fdopen(r, "rb", buffering=0) as f:
            while chunk := f.read(1 << 16):
                if size[0] + len(chunk) > MAX_TRACE:
                    run.trace_truncated = True
                    continue
                chunks.append(chunk)
                size[0] += len(chunk)

    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(argv, cwd=spec.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True,
                                pass_fds=(w,) if w is not None else ())
    except OSError as exc:
        if r is not None:
            os.close(r)
            os.close(w)  # type: ignore[arg-type]
        raise AuditError(f"cannot start the target's [invoke] command: {exc.strerror or exc}") from None
    reader = None
    if w is not None:
        os.close(w)
        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
    try:
        out, err = proc.communicate(timeout=spec.timeout)
    except subprocess.TimeoutExpired:
        run.timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    run.seconds = time.monotonic() - t0
    run.stdout = out[:MAX_STDOUT]
    if logs is not None:
        for path, data in zip(logs, (out, err)):
            with open(path, "ab") as f:
                f.write(data[:MAX_STDOUT])
    if proc.returncode is not None and proc.returncode < 0:
        run.signal = -proc.returncode
    elif not run.timed_out:
        run.status = proc.returncode
    run.outcome = "no" if run.timed_out or run.signal else spec.outcome(run.status, run.stdout)
    if reader is not None:
        reader.join(timeout=10)
        events = parse(b"".join(chunks).decode("ascii", "replace"))
        execs = [e for e in events if e.call in ("execve", "execveat")]
        run.root_pid = execs[0].pid if execs else None
        run.events = events
        if run.timed_out:
            run.trace_error = f"{label}: killed after the {spec.timeout:g} s timeout: its trace may be incomplete"
    return run


def merged_events(runs: list[InvokeRun]) -> tuple[list[Event] | None, str | None]:
    """The events of every run, without the audit's own start of each (the root's first execve).

    None with the reason when any run was not traced: a hole in one run is a hole in the evidence.
    """
    out: list[Event] = []
    for run in runs:
        if run.events is None:
            return None, run.trace_error or f"{run.label}: not traced"
        first = next((e for e in run.events if e.call in ("execve", "execveat") and e.pid == run.root_pid
                      and not e.failed), None)
        out += [e for e in run.events if e is not first]
    return out, None


def _answer_bytes(run: InvokeRun) -> bytes:
    """What C5.answer counts as one answer: the exit status (a product that exits with more than two
    statuses tells more than yes and no)."""
    if run.timed_out:
        return b"timeout"
    if run.signal is not None:
        return f"signal {run.signal}".encode()
    return f"exit {run.status}".encode()


def probe_invoke(spec: InvokeSpec, *, verifications: int = 3, use_strace: bool = True,
                 frames: FramePlan | None = None, rounds: int = 8, lock_attempts: int = LOCK_ATTEMPTS,
                 logs: tuple[Path, Path] | None = None, daemon: Path | None = None, pam: bool = False,
                 attacks: list | None = None) -> ProbeResult:
    """Every verification the audit runs, in the order :func:`fr_pbd.audit.probe.probe` asks a daemon.

    The live verifications and one round of every probe frame are traced; the timing rounds and the
    lockout sequence are not (strace would slow every run by its own cost). ``daemon``: the socket
    of a daemon the runs ask ([pam] socket): it is part of the product, inventoried before, during
    and after, and traced (attached) while the traced runs go. ``pam``: each run is a PAM login (shape "pam")."""
    res = ProbeResult(socket=daemon, protocol=spec, lock_attempts=lock_attempts,  # type: ignore[arg-type]
                      shape="pam" if pam or daemon is not None else "invoke")
    res.server_uid, res.server_gid = os.geteuid(), os.getegid()
    runs: list[InvokeRun] = []
    tracer = None
    if daemon is not None:
        held = procfs.listeners(daemon)
        if not held:
            res.error = (f"no process listens on {daemon}: " + ("a stale socket file; the audit neither connects to "
                         "it nor removes it" if daemon.exists() else "it does not exist"))
            return res
        res.listeners = held
        pid = res.server_pid = held[0][0]
        try:
            res.server_uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            res.server_uid = None
        res.before = procfs.snapshot(pid)
        if use_strace:
            tracer = Tracer(pid, [p for p in res.before.pids if p != pid])
            if not tracer.start():
                res.trace_error = tracer.error
                tracer = None

    def verify(label: str, cls: str | None, kind: str, traced: bool) -> Answer:
        if cls is not None and frames is not None:
            frames.present(cls)
        run = run_once(spec, label, use_strace=use_strace and traced, logs=logs)
        if traced:
            runs.append(run)
        a = Answer(label, kind, _answer_bytes(run), run.outcome, closed=True, seconds=run.seconds,
                   close_seconds=run.seconds, cls=cls)
        res.answers.append(a)
        return a

    classes = [c for c in CLASSES if frames is not None and c in frames.images]
    res.frames_missing = [c for c in CLASSES if c not in classes]
    try:
        for i in range(verifications):
            verify(f"live verification {i + 1} (the frame the product sees now)", None, "live", True)
        for cls in classes:
            verify(f"{cls} frame (traced round)", cls, "live", True)
        if daemon is not None and res.server_pid is not None:
            res.during.append(procfs.snapshot(res.server_pid,
                                              ignore_tracer=tracer.proc.pid if tracer and tracer.proc else None))
        if use_strace:
            daemon_error = res.trace_error
            res.events, res.trace_error = merged_events(runs)
            if daemon is not None:
                if tracer is None:
                    res.events, res.trace_error = None, daemon_error or "the product's daemon was not traced"
                else:
                    text = tracer.stop()
                    res.trace_truncated = tracer.truncated
                    if res.events is not None:
                        res.events = parse(text) + res.events
                        _lookup_holders(res)  # who holds what the daemon wrote to, while it still runs
                    if tracer.detached_early:
                        res.trace_error = "strace lost the product's daemon before the end of the traced logins"
                    tracer = None
            res.trace_truncated = res.trace_truncated or any(r.trace_truncated for r in runs)
            timed_out = [r.trace_error for r in runs if r.timed_out and r.trace_error]
            if timed_out and res.trace_error is None:
                res.trace_error = timed_out[0]
        else:
            res.trace_error = "strace was not used (--no-strace)"
        for r in range(rounds):
            for cls in classes:
                verify(f"timing round {r + 1}, {cls} frame", cls, "timing", False)
        if attacks and frames is not None:  # SEC.presentation-attack, before the lockout sequence
            from fr_pbd.audit.pad import run_presentations

            run_presentations(res, attacks, frames, lambda label: verify(label, None, "pad", False))
        lockout_sequence(res, classes, lock_attempts, rounds,
                         lambda label, cls, kind: verify(label, cls, kind, False))
    finally:
        if tracer is not None and tracer.proc is not None and tracer.proc.poll() is None:
            tracer.stop()
        if frames is not None:
            frames.restore()
    if daemon is not None and res.server_pid is not None:
        res.after = procfs.snapshot(res.server_pid)
    return res
