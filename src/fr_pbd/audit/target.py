"""Black-box mode: audit a product that is not fr-pbd, described by a TARGET.toml.

Every check that does not need fr-pbd's store format runs against it: its
socket, what leaves its process (kernel inventory and trace), its answers and
their timing, every file in its data and log directories and everything it
writes, the modes of its data, and whether its data files are ciphertext.
The checks that read fr-pbd's store (consent records, fallback, cipher, keys,
the model in use) run only for ``store = "fr-pbd"``; for any other product they
are INCONCLUSIVE, so a product the audit cannot read inside is never a PASS.

The file (docs/audit.md has a commented example)::

    name = "Howdy-like"
    root = "${FR_PBD_TARGET_ROOT}"        # relative paths below; default: this file's directory
    [socket]
    path = "run/howdy.sock"
    request = "VERIFY\\n"
    request_for_user = "VERIFY {user}\\n"   # optional: the request about one account (the second asker's)
    [answer]                               # exactly one yes and one no (or yes_regex / no_regex)
    yes = "YES\\n"
    no = "NO\\n"
    malformed = "generic"                  # or "fr-pbd" (its protocol's malformed requests)
    [probe]                                # how a probe frame is shown: the file it reads its frame from
    frames = "frames"
    frame_name = "current.jpg"
    genuine = "${FR_PBD_DATA}/faces/obama3.jpg"
    peer_uid = 1001                        # or "${VAR}": a second uid, asked beside root (C5.answer)
    attacks = [{ species = "replay", image = "replay.jpg", genuine = "live.jpg" }]   # SEC.presentation-attack
    lockout_after = 5                      # failed attempts in a row before the genuine face is refused
    impostor = "${FR_PBD_DATA}/faces/biden2.jpg"
    attack = "${FR_PBD_DATA}/spoof/spoof_print_F1.jpg"
    [data]
    dirs = ["data"]
    metadata = ["config.ini"]              # small files that may hold numbers such as a threshold
    store = "fr-pbd"                       # only for fr-pbd: dirs[0] is its home
    raw_frames = { width = 640, height = 480, format = "yuyv" }   # raw camera dumps it may keep (C3.face-images)
    [logs]
    dirs = ["log"]
    files = []
    [process]                              # how to start it (else it must be running)
    command = ["{python}", "{target_dir}/howdylike.py", "--socket", "run/howdy.sock"]
    ready_timeout = 60
    children = ["/usr/lib/face-login/gui-helper"]   # programs it may start: traced with it, judged by what they do
    [dpia]
    eval = "eval.json"                     # store = "fr-pbd" only

A product that PAM or a login program starts once per verification (a per-login comparator:
its exit status is the answer) declares ``[invoke]`` in place of ``[socket]``, ``[answer]`` and
``[process]`` (:mod:`fr_pbd.audit.invoke`): every run is traced from its first instruction,
every process it starts with it, and its standard output and error are scanned as logs::

    [invoke]
    command = ["{python}", "{target_dir}/comparator.py", "--user", "alice"]
    timeout = 10                           # seconds; past it the run is killed and counts as no
    yes_exit = [0]                         # every other status, a signal or the timeout is no
    yes_stdout = "^MATCH"                  # optional: what a yes (no_stdout: a no) prints

Strings may use ``${VAR}`` from the environment; in ``command``, ``{python}`` is
this Python and ``{target_dir}`` the directory of the TARGET.toml.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from fr_pbd.audit import scan
from fr_pbd.audit.checks import FAIL, PASS, Check, TITLE_FROM_TABLE, inconclusive
from fr_pbd.audit.images import RawFrames, image_kind, parse_raw_frames
from fr_pbd.audit.invoke import InvokeSpec, parse_invoke
from fr_pbd.audit.model import DeclaredModel, parse_model
from fr_pbd.audit.pad import Attack, parse_attacks
from fr_pbd.audit.pamshape import PamSpec, login_spec, parse_pam, private_pam_dir
from fr_pbd.audit.probe import FRPBD_MALFORMED, FramePlan, Protocol, no_face_png
from fr_pbd.errors import AuditError

__all__ = ["Target", "load_target", "running", "GENERIC_MALFORMED", "black_box", "c3_data_modes",
           "c4_data_ciphertext"]

GENERIC_MALFORMED: tuple[tuple[str, bytes | None, bool], ...] = (  # None: the request, twice
    ("oversized request (4 KiB)", b"V" * 4096 + b"\n", True),
    ("non-ASCII bytes", b"\xc3\xa9\xff\xfe\n", True),
    ("unknown command", b"HELLO\n", True),
    ("empty request", b"", True),
    ("control bytes", b"\x00\x01\x02\n", True),
    ("the request twice", None, True),
)
_KEYS = {"name", "root", "socket", "invoke", "pam", "answer", "probe", "data", "logs", "process", "dpia", "model"}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
NOT_FROM_OUTSIDE = ("a review by hand of the product's source and store (its store format is not fr-pbd's; for "
                    "an fr-pbd home declare store = \"fr-pbd\" in the TARGET.toml)")


@dataclass
class Target:
    path: Path
    name: str
    root: Path
    socket: Path | None  # None: the [invoke] shape
    protocol: Protocol
    frames: FramePlan | None
    data_dirs: list[Path]
    metadata: tuple[str, ...]
    store: str | None
    log_dirs: list[Path]
    log_files: list[Path]
    command: list[str] | None
    ready_timeout: float
    eval_report: Path | None
    problems: list[str] = field(default_factory=list)
    peer_uid: int | None = None
    #: failed attempts in a row after which the product claims to lock (SEC.lockout; default 5)
    lockout_after: int = 5
    #: attack presentations of an enrolled person (SEC.presentation-attack; :mod:`fr_pbd.audit.pad`)
    attacks: list[Attack] = field(default_factory=list)
    #: the declared size of the product's raw frame dumps (C3.face-images searches them)
    raw_frames: RawFrames | None = None
    #: programs the daemon may start ([process] children: a path, or a bare program name): traced with it
    children: tuple[str, ...] = ()
    #: the [invoke] shape: a program the audit runs once per verification (None: a daemon, [socket])
    invoke: InvokeSpec | None = None
    #: the [pam] shape: a PAM service the audit logs into with pamtester (socket: the daemon it asks, if any)
    pam: PamSpec | None = None
    #: the [model] table: the model, metric and threshold the auditor declares (DPIA checks; None: not declared)
    model: DeclaredModel | None = None

    def declared_in_home(self) -> list[str]:
        """Files of an fr-pbd home the target declares besides what fr-pbd writes: its logs, socket and record."""
        from fr_pbd.egress import record_path

        if self.socket is None:
            return [str(p) for p in self.log_files]
        return [str(p) for p in (*self.log_files, self.socket)] + [str(record_path(self.socket))]

    @property
    def home(self) -> Path | None:
        return self.data_dirs[0] if self.store == "fr-pbd" and self.data_dirs else None

    def describe(self) -> dict:
        return {"target": str(self.path), "name": self.name, "shape": "invoke" if self.invoke else "pam" if self.pam else "socket",
                "socket": str(self.socket) if self.socket is not None else None,
                "protocol": self.protocol.describe() if self.protocol is not None else
                f"logins to PAM service {self.pam.service!r} as {self.pam.user!r} with pamtester; PAM's success is "
                "the yes" if self.pam is not None else "", "data_dirs": [str(d) for d in self.data_dirs],
                "log_dirs": [str(d) for d in self.log_dirs], "log_files": [str(f) for f in self.log_files],
                "store_format": self.store or "unknown (black box)",
                "started_by_audit": self.command is not None, "host": socket.gethostname(),
                "auditor_uid": os.getuid()}


def _expand(value: str, where: str) -> str:
    def var(m: re.Match) -> str:
        if m.group(1) not in os.environ:
            raise AuditError(f"{where}: ${{{m.group(1)}}} is not set in the environment")
        return os.environ[m.group(1)]
    return _VAR.sub(var, value)


def _bytes(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise AuditError(f"{where} must be a string")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def load_target(path: str | os.PathLike[str]) -> Target:
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AuditError(f"cannot read the target {p}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AuditError(f"{p} is not valid TOML: {exc}") from None
    unknown = set(doc) - _KEYS
    if unknown:
        raise AuditError(f"{p}: unknown key(s) {', '.join(sorted(unknown))}")
    tdir = p.resolve().parent
    root = Path(_expand(str(doc.get("root", tdir)), "root"))
    root = root if root.is_absolute() else tdir / root

    def path_of(value: object, where: str) -> Path:
        if not isinstance(value, str) or not value:
            raise AuditError(f"{p}: {where} must be a path")
        q = Path(_expand(value, where))
        return q if q.is_absolute() else root / q

    sock = doc.get("socket") or {}
    ans = doc.get("answer") or {}
    if sum(k in doc for k in ("socket", "invoke", "pam")) != 1:
        raise AuditError(f"{p}: declare the product's shape: [socket] (a daemon), [invoke] (a program run once "
                         "per verification) or [pam] (a PAM service), exactly one")
    if "invoke" in doc:
        return _invoke_target(doc, p, tdir, root, path_of)
    if "pam" in doc:
        return _pam_target(doc, p, root, path_of)
    if "path" not in sock:
        raise AuditError(f"{p}: [socket] path is required")
    request = _bytes(sock.get("request", "VERIFY\n"), "[socket] request")
    rx = {k: re.compile(_bytes(ans[k], f"[answer] {k}")) for k in ("yes_regex", "no_regex") if k in ans}
    lit = {k: _bytes(ans[k], f"[answer] {k}") for k in ("yes", "no") if k in ans}
    if not (("yes" in lit or "yes_regex" in rx) and ("no" in lit or "no_regex" in rx)):
        raise AuditError(f"{p}: [answer] needs yes (or yes_regex) and no (or no_regex)")
    kind = ans.get("malformed", "generic")
    if kind == "fr-pbd":
        malformed = FRPBD_MALFORMED
    elif kind == "generic":
        malformed = tuple((lbl, pl if pl is not None else request * 2, cw) for lbl, pl, cw in GENERIC_MALFORMED)
    else:
        raise AuditError(f"{p}: [answer] malformed must be \"generic\" or \"fr-pbd\"")
    protocol = Protocol(f"{doc.get('name', p.stem)} (declared in {p.name})", request, lit.get("yes"), lit.get("no"),
                        rx.get("yes_regex"), rx.get("no_regex"), malformed,
                        silent_close_ok=bool(ans.get("silent_close_ok", kind == "generic")),
                        request_for_user=_bytes(sock["request_for_user"], "[socket] request_for_user")
                        if "request_for_user" in sock else None)
    if protocol.request_for_user is not None and b"{user}" not in protocol.request_for_user:
        raise AuditError(f"{p}: [socket] request_for_user must hold {{user}} where the account name goes")
    common = _common(doc, p, path_of)
    return Target(path=p, name=str(doc.get("name", p.stem)), root=root, socket=path_of(sock["path"], "[socket] path"),
                  protocol=protocol, **common)


def _common(doc: dict, p: Path, path_of) -> dict:
    """What every shape declares alike: probe frames, data, logs, the start command, the DPIA report."""
    tdir = p.resolve().parent
    probe = doc.get("probe") or {}
    frames = None
    if "frames" in probe:
        frames = FramePlan(path_of(probe["frames"], "[probe] frames"), str(probe.get("frame_name", "current.jpg")),
                           {"no-face": no_face_png()})
        for cls in ("genuine", "impostor", "attack"):
            if cls in probe:
                img = path_of(probe[cls], f"[probe] {cls}")
                try:
                    frames.images[cls] = img.read_bytes()
                except OSError as exc:
                    raise AuditError(f"{p}: [probe] {cls} {img}: {exc.strerror or exc}") from None
    attacks = []
    if "attacks" in probe:  # SEC.presentation-attack: attack presentations of an enrolled person
        if frames is None:
            raise AuditError(f"{p}: [probe] attacks need [probe] frames (how a frame is shown to the product)")
        attacks = parse_attacks(probe["attacks"], str(p), path_of=path_of, genuine=frames.images.get("genuine"))
    data = doc.get("data") or {}
    logs = doc.get("logs") or {}
    proc = doc.get("process") or {}
    command = None
    if "command" in proc:
        if not isinstance(proc["command"], list) or not all(isinstance(a, str) for a in proc["command"]):
            raise AuditError(f"{p}: [process] command must be a list of strings")
        command = [_expand(a, "[process] command").replace("{python}", sys.executable).replace("{target_dir}",
                                                                                            str(tdir))
                   for a in proc["command"]]
    store = data.get("store")
    if store not in (None, "fr-pbd"):
        raise AuditError(f"{p}: [data] store can only be \"fr-pbd\" (leave it out for any other product)")
    dpia = doc.get("dpia") or {}
    return dict(
        frames=frames,
        data_dirs=[path_of(d, "[data] dirs") for d in data.get("dirs", [])],
        metadata=tuple(str(m) for m in data.get("metadata", [])), store=store,
        log_dirs=[path_of(d, "[logs] dirs") for d in logs.get("dirs", [])],
        log_files=[path_of(f, "[logs] files") for f in logs.get("files", [])],
        command=command, ready_timeout=float(proc.get("ready_timeout", 60)),
        children=_children(proc.get("children", []), p),
        eval_report=path_of(dpia["eval"], "[dpia] eval") if "eval" in dpia else None,
        model=parse_model(doc["model"], p) if "model" in doc else None, attacks=attacks,
        raw_frames=parse_raw_frames(data["raw_frames"], str(p)) if "raw_frames" in data else None,
        peer_uid=_uid(probe.get("peer_uid"), p), lockout_after=_lockout_after(probe.get("lockout_after", 5), p))


def _expanded(table: object, where: str) -> object:
    """``${VAR}`` in a shape table's strings and lists of strings, as everywhere else in the file."""
    if not isinstance(table, dict):
        return table
    return {k: ([_expand(a, f"{where} {k}") if isinstance(a, str) else a for a in v] if isinstance(v, list)
                else _expand(v, f"{where} {k}") if isinstance(v, str) else v) for k, v in table.items()}


def _pam_target(doc: dict, p: Path, root: Path, path_of) -> Target:
    """A TARGET.toml of the [pam] shape: logins through a PAM service; [process] may start its daemon."""
    if "answer" in doc:
        raise AuditError(f"{p}: [answer] belongs to a daemon ([socket]); a [pam] product answers by PAM's result")
    name = str(doc.get("name", p.stem))
    spec = parse_pam(_expanded(doc["pam"], "[pam]"), str(p), root=root, target_dir=p.resolve().parent)
    common = _common(doc, p, path_of)
    if common["peer_uid"] is not None:
        raise AuditError(f"{p}: [probe] peer_uid asks a daemon as a second user; a [pam] product is logged into "
                         "by the audit (leave peer_uid out)")
    if common["command"] is not None and spec.socket is None:
        raise AuditError(f"{p}: [process] starts a daemon: name the socket the PAM module asks in [pam] socket")
    return Target(path=p, name=name, root=root, socket=spec.socket, protocol=None,  # type: ignore[arg-type]
                  pam=spec, **common)


def _invoke_target(doc: dict, p: Path, tdir: Path, root: Path, path_of) -> Target:
    """A TARGET.toml of the [invoke] shape: no socket, no [answer] (the exit status answers), no [process]."""
    for key in ("answer", "process"):
        if key in doc:
            raise AuditError(f"{p}: [{key}] belongs to a daemon ([socket]); an [invoke] product answers by its exit "
                             "status (yes_exit, yes_stdout, no_stdout) and is started by the audit once per "
                             "verification")
    name = str(doc.get("name", p.stem))
    spec = parse_invoke(_expanded(doc["invoke"], "[invoke]"), str(p), root=root, target_dir=tdir, name=name)
    common = _common(doc, p, path_of)
    if common["peer_uid"] is not None:
        raise AuditError(f"{p}: [probe] peer_uid asks a daemon as a second user; an [invoke] product is run by "
                         "the audit (leave peer_uid out)")
    return Target(path=p, name=name, root=root, socket=None, protocol=spec, invoke=spec,  # type: ignore[arg-type]
                  **common)


def _children(value: object, p: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(c, str) and c.strip() and "\x00" not in c for c in value):
        raise AuditError(f"{p}: [process] children must be a list of programs (paths, or bare program names)")
    return tuple(_expand(c, "[process] children") for c in value)


def _lockout_after(value: object, p: Path) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 20:
        raise AuditError(f"{p}: [probe] lockout_after must be a number of attempts from 1 to 20")
    return value


def _uid(value: object, p: Path) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):  # "${VAR}": a uid the auditor's environment gives (an account made for the audit)
        text = _expand(value, "[probe] peer_uid")
        value = int(text) if text.isdigit() else text
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**31:
        raise AuditError(f"{p}: [probe] peer_uid must be a uid number other than 0")
    return value


class running:
    """Start the target's command (if it has one) and stop it afterwards; its stdout/stderr become logs."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.proc: subprocess.Popen | None = None
        self.tmp: str | None = None
        self.outputs: list[Path] = []
        self.notes: list[str] = []
        #: declared data and log directories that did not exist when the audit began (watched, judged if they appear)
        self.missing_dirs: list[Path] = []
        #: [invoke] and [pam]: what each run is, and the files its output streams are appended to
        self.invoke: InvokeSpec | None = None
        self.run_logs: tuple[Path, Path] | None = None

    def __enter__(self) -> running:
        from fr_pbd.audit import procfs

        t = self.target
        self.missing_dirs = [d for d in (*t.data_dirs, *t.log_dirs) if not os.path.lexists(d)]
        if t.invoke is not None or t.pam is not None:  # the audit runs the product (or logs in) per verification
            self.tmp = tempfile.mkdtemp(prefix="fr-pbd-audit-target-")
            self.run_logs = (Path(self.tmp) / "runs-stdout.log", Path(self.tmp) / "runs-stderr.log")
            self.outputs = list(self.run_logs)
            for f in self.outputs:
                f.touch(mode=0o600)
            self.invoke = t.invoke
            if t.pam is not None:
                try:
                    self.invoke = login_spec(t.pam, private_pam_dir(t.pam, Path(self.tmp)), cwd=t.root, name=t.name)
                except OSError as exc:
                    raise AuditError(f"cannot make the private PAM directory: {exc.strerror or exc}") from None
            if t.socket is None:
                return self
        stale = None
        if t.socket.exists() and not procfs.listeners(t.socket):
            st = os.stat(t.socket)
            stale = (st.st_dev, st.st_ino)
            self.notes.append(f"{t.socket} existed before the audit with no process listening on it (a stale socket "
                              "file): reported, not removed, not connected to")
        if t.command is None:
            if not t.socket.exists():
                raise AuditError(f"{t.socket} does not exist: start the product, or give [process] command")
            return self
        self.tmp = self.tmp or tempfile.mkdtemp(prefix="fr-pbd-audit-target-")
        daemon_logs = [Path(self.tmp) / "stdout.log", Path(self.tmp) / "stderr.log"]
        self.outputs += daemon_logs
        with open(daemon_logs[0], "wb") as out, open(daemon_logs[1], "wb") as err:
            try:
                self.proc = subprocess.Popen(t.command, cwd=t.root, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                             start_new_session=True)
            except OSError as exc:
                raise AuditError(f"cannot start the target: {exc.strerror or exc}") from None
        end = time.monotonic() + t.ready_timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.__exit__()
                raise AuditError(f"the target's command exited with status {code} before {t.socket} appeared "
                                 f"(run it by hand in {t.root} to see why)")
            if procfs.listeners(t.socket):  # a process holds the socket's inode, listening: not a stale file
                if stale is not None:
                    self.notes.append(f"the product replaced the stale file and listens on {t.socket} "
                                      f"{time.monotonic() - (end - t.ready_timeout):.1f} s after it was started")
                return self
            time.sleep(0.05)
        self.__exit__()
        raise AuditError(f"no process listened on {t.socket} within {t.ready_timeout:g} s of starting the target"
                         + (" (the file there is a stale socket that nobody listens on)" if t.socket.exists() else ""))

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cleanup(self) -> None:
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------
# checks that read fr-pbd's store, made generic or declared out of reach
# --------------------------------------------------------------------------------------
def black_box(cid: str, cond: str, title: str) -> Check:
    return inconclusive(cid, cond, title, "black-box target: its store is not fr-pbd's, so this cannot be checked "
                        "from outside", NOT_FROM_OUTSIDE)


def _walk(dirs: list[Path]):
    for d in dirs:
        yield d
        for base, dnames, files in os.walk(d, followlinks=False):
            for n in dnames + files:
                yield Path(base) / n


def c3_data_modes(t: Target, product_uid: int | None, missing_at_start: tuple[Path, ...] | list[Path] = ()
                  ) -> Check:
    """The product's data: no file or directory readable or writable by others, none writable by its group.

    A declared directory that does not exist is no failure: it is watched (``missing_at_start``:
    absent when the audit began) and judged like the others if the product made it meanwhile.
    """
    title = TITLE_FROM_TABLE
    bad, checked, notes = [], 0, []
    present = []
    for d in t.data_dirs + t.log_dirs:
        if os.path.lexists(d):
            present.append(d)
            if d in missing_at_start:
                notes.append(f"{d}: did not exist when the audit began; the product made it during the audit: judged")
        else:
            notes.append(f"{d}: declared, but did not exist at any time of the audit"
                         if d in missing_at_start else f"{d}: declared, but does not exist")
    for p in _walk(present):
        try:
            st = os.lstat(p)
        except OSError as exc:
            bad.append(f"{p}: {exc.strerror}")
            continue
        checked += 1
        m = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            bad.append(f"{p} is a symbolic link (it can point anywhere)")
        elif m & 0o006 or m & 0o020:
            bad.append(f"{p} mode {m:04o}: {'readable' if m & 0o004 else 'open'} to other users")
        elif product_uid is not None and st.st_uid not in (product_uid, 0):
            bad.append(f"{p} is owned by uid {st.st_uid}, neither the product's uid {product_uid} nor root")
    if not t.data_dirs:
        return inconclusive("C3.file-modes", "C3", title, "the target declares no data directory",
                            "[data] dirs in the TARGET.toml")
    if bad:
        return Check("C3.file-modes", "C3", title, FAIL, bad[0], bad[:50] + notes, {"checked": checked})
    if not any(os.path.lexists(d) for d in t.data_dirs):
        return inconclusive("C3.file-modes", "C3", title, "no declared data directory exists: nothing was judged",
                            "the product's data directories as it makes them (run it, enrol, then audit)", notes)
    return Check("C3.file-modes", "C3", title, PASS, f"{checked} files and directories: none open to other users",
                 notes, values={"checked": checked})


def c4_data_ciphertext(t: Target) -> Check:
    """Every data file that is not declared metadata is ciphertext: >= 7.9 bits/byte over >= 1 KiB.

    An image (JPEG, PNG, ... by its signature) is recognised first and is never ciphertext: compressed
    pixels measure nearly 8 bits/byte and are readable by anyone.
    """
    title = TITLE_FROM_TABLE
    bad, small, details = [], [], []
    for p in _walk(t.data_dirs):
        if not p.is_file() or p.is_symlink():
            continue
        size = p.stat().st_size
        if size == 0 or (p.name in t.metadata and size <= 64 << 10):
            continue
        try:
            with open(p, "rb") as f:
                data = f.read(1 << 20)
        except OSError as exc:
            bad.append(f"{p}: cannot be read ({exc.strerror})")
            continue
        fmt = image_kind(data)
        if fmt is not None:  # recognised before any entropy rule: a JPEG measures ~7.97 bits/byte
            bad.append(f"{p}: a {fmt} image, readable as it is: not ciphertext, whatever its entropy "
                       f"({scan.fmt_bits(scan.entropy_bits_per_byte(data))} bits/byte)")
            continue
        h = scan.entropy_bits_per_byte(data)
        if size < 1024:
            small.append(f"{p}: {size} bytes, too small to tell ciphertext from plaintext")
        elif h < 7.9:
            bad.append(f"{p}: {scan.fmt_bits(h)} bits/byte: not ciphertext")
        else:
            details.append(f"{p}: {scan.fmt_bits(h)} bits/byte")
    if bad:
        return Check("C4.ciphertext", "C4", title, FAIL, bad[0], bad + small + details)
    if small:
        return inconclusive("C4.ciphertext", "C4", title, small[0], "declare small metadata files in [data] "
                            "metadata, or review them by hand", small + details)
    if not details:
        return inconclusive("C4.ciphertext", "C4", title, "no data file found", "[data] dirs in the TARGET.toml")
    return Check("C4.ciphertext", "C4", title, PASS, f"{len(details)} data file(s), each >= 7.9 bits/byte", details)
