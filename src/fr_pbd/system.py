"""``fr-pbd system install | uninstall``: the daemon set up for face login, and taken away again.

What :func:`install` puts on the machine (each path under ``root``, ``/`` unless a test or a
package build gives another prefix, as DESTDIR does), in this order:

1. the daemon's account ``fr-pbd`` (a system account, shell ``nologin``, home
   ``/var/lib/fr-pbd``), unless it exists;
2. its home ``/var/lib/fr-pbd`` (0700, the account's; every directory above must belong
   to root and be safe from other users, :func:`fr_pbd.config.check_dir_chain`), with a
   ``config.toml`` that lets PAM (uid 0) ask, puts the socket at ``/run/fr-pbd/fr-pbd.sock``
   and spells out the default ``[pam]`` policy (:mod:`fr_pbd.daemon.pam`);
3. the models the installing user has (``$FR_PBD_MODELS``, then the cache), each checked
   against the manifest's sha256 before and after the copy, in
   ``/usr/local/share/fr-pbd/models`` (root's, read-only to the daemon; the unit sets
   ``FR_PBD_MODELS`` to it);
4. ``/usr/local/bin/fr-pbd``, a link to the ``fr-pbd`` that runs the installer, which must
   lie where only root can change it (PAM runs it as root) and outside the directories the
   unit's ``ProtectHome=yes`` hides;
5. the shipped unit (``fr_pbd/_data/systemd/fr-pbd.service``) in ``/etc/systemd/system``;
6. where ``pam-auth-update`` exists (Debian, Ubuntu): the profile ``/usr/share/pam-configs/fr-pbd``
   (the face line before the password) and ``pam-auth-update --package --enable fr-pbd``;
   elsewhere nothing in the PAM configuration: the line to add is printed.

Before each change the previous state of the path (its bytes, mode and owner, or its
absence) goes into the record ``/var/lib/fr-pbd-install/record.json`` (root's, 0600), so that
:func:`uninstall` can put back every file byte for byte, also after an install that stopped
half-way. ``pam-auth-update`` rewrites files of its own (``/etc/pam.d/common-*``, its state in
``/var/lib/pam``, debconf's database): every file of ``/etc/pam.d``, ``/var/lib/pam`` and
``/var/cache/debconf`` it changed is recorded with its previous bytes. Uninstall runs
``pam-auth-update --package --remove fr-pbd`` and then puts back each such file that nobody
changed since the install; one changed since is left as it is and named.

The system home's store is crypto-shredded (:func:`fr_pbd.store.erase`, as the daemon's user)
unless ``keep_store``; then the home, its config and the account stay. Nothing here parses
arguments (:mod:`fr_pbd.cli.system` does) or starts a service.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

from fr_pbd import config, fileio, models
from fr_pbd.errors import ConfigError, FrPbdError, StoreError

__all__ = [
    "DAEMON_USER",
    "MODELS_DIR",
    "PAM_LINE",
    "PAM_PROFILE",
    "PROGRAM",
    "RECORD",
    "SOCKET",
    "SYSTEM_HOME",
    "UNIT",
    "InstallError",
    "enter_system_home",
    "install",
    "pam_profile_text",
    "system_config_text",
    "uninstall",
    "unit_text",
]

DAEMON_USER = "fr-pbd"
SYSTEM_HOME = Path("/var/lib/fr-pbd")
MODELS_DIR = Path("/usr/local/share/fr-pbd/models")
PROGRAM = Path("/usr/local/bin/fr-pbd")
UNIT = Path("/etc/systemd/system/fr-pbd.service")
PAM_PROFILE = Path("/usr/share/pam-configs/fr-pbd")
PAM_PROFILE_NAME = "fr-pbd"
RECORD = Path("/var/lib/fr-pbd-install/record.json")
SOCKET = Path("/run/fr-pbd/fr-pbd.sock")
#: The groups the unit gives the daemon (SupplementaryGroups=), where they exist: the camera, the TPM.
DAEMON_GROUPS = ("video", "tss")
#: pam_exec runs ``ask --pam`` (docs/pam.md); any exit but 0 falls through to the password.
PAM_LINE = f"pam_exec.so quiet {PROGRAM} ask --pam --home {SYSTEM_HOME}"
#: Above pam_unix's 256: pam-auth-update puts higher priorities first, so the face comes before the password.
PAM_PRIORITY = 288
#: Directories whose files pam-auth-update may rewrite; each file it changed is recorded.
PAM_TOOL_STATE = (Path("/etc/pam.d"), Path("/var/lib/pam"), Path("/var/cache/debconf"))
_NOLOGIN = ("/usr/sbin/nologin", "/sbin/nologin")
#: The unit's ProtectHome=yes hides these from the daemon: fr-pbd cannot run from under them.
_HIDDEN = (Path("/home"), Path("/root"), Path("/run/user"))


class InstallError(FrPbdError):
    """The system install cannot go on (not root, already installed, an unsafe path); one line."""


def unit_text() -> str:
    """The shipped unit, byte for byte what goes to /etc/systemd/system."""
    return resources.files("fr_pbd").joinpath("_data", "systemd", "fr-pbd.service").read_text(encoding="utf-8")


def _toml_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def system_config_text() -> str:
    """config.toml of the system home: PAM (root) may ask, the socket in /run/fr-pbd, the default [pam] policy."""
    text = (
        "# Written by `fr-pbd system install` (docs/pam.md, docs/config.md).\n"
        f'profile = "{config.PROFILE_HOUSEHOLD}"\n\n'
        "[daemon]\n"
        "allowed_uids = [0]   # PAM modules run as root in login, sudo and the display managers\n"
        f'socket = "{SOCKET}"\n\n'
        "[pam]                # where `fr-pbd ask --pam` may answer; sshd and su never can\n"
        f"services = {_toml_list(config.DEFAULT_PAM_SERVICES)}\n"
        f"ttys = {_toml_list(config.DEFAULT_PAM_TTYS)}\n"
    )
    config.parse(text)  # what we write must load
    return text


def pam_profile_text() -> str:
    """The pam-auth-update profile: the face line first (Primary), then pam_unix's password."""
    return (
        "Name: fr-pbd face login at the device (the password follows if it says no)\n"
        "Default: no\n"
        f"Priority: {PAM_PRIORITY}\n"
        "Auth-Type: Primary\n"
        "Auth:\n"
        f"\t[success=end default=ignore]\t{PAM_LINE}\n"
    )


# --------------------------------------------------------------------------------------
# small helpers: the prefix, accounts, file states
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


def _under(root: Path, path: Path) -> Path:
    return root / path.relative_to("/")


def _account(name: str, root: Path) -> Account | None:
    """``name`` in ``root``'s /etc/passwd (the running system's user database for /)."""
    if root == Path("/"):
        try:
            p = pwd.getpwnam(name)
        except KeyError:
            return None
        return Account(name, p.pw_uid, p.pw_gid)
    try:
        lines = (root / "etc" / "passwd").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        f = line.split(":")
        if len(f) >= 4 and f[0] == name:
            return Account(name, int(f[2]), int(f[3]))
    return None


def _group_ids(names: tuple[str, ...]) -> list[int]:
    import grp

    out = []
    for n in names:
        try:
            out.append(grp.getgrnam(n).gr_gid)
        except KeyError:
            continue
    return out


def _become(acct: Account) -> None:
    """This process is the daemon's user from now on (groups as the unit gives them), for good."""
    os.setgroups(_group_ids(DAEMON_GROUPS))
    os.setgid(acct.gid)
    os.setuid(acct.uid)
    if os.getuid() != acct.uid or os.geteuid() != acct.uid:  # pragma: no cover - the kernel said yes
        raise InstallError(f"could not become {acct.name}")


def _state(path: Path) -> dict | None:
    """What is at ``path`` now (bytes, mode, owner), or None where there is nothing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return {"link": os.readlink(path), "uid": st.st_uid, "gid": st.st_gid}
    if not stat.S_ISREG(st.st_mode):
        raise InstallError(f"{path} is there but is not a regular file; move it away first")
    return {"data": base64.b64encode(path.read_bytes()).decode("ascii"), "mode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid, "gid": st.st_gid}


def _sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except (FileNotFoundError, IsADirectoryError):
        return None


def _put_back(path: Path, before: dict | None) -> None:
    """Make ``path`` what ``before`` says it was: absent, a link, or these bytes with this mode and owner."""
    if before is None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    if "link" in before:
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(before["link"], path)
        os.lchown(path, before["uid"], before["gid"])
        return
    fileio.atomic_write(path, base64.b64decode(before["data"]), mode=before["mode"])
    os.chown(path, before["uid"], before["gid"])


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every regular file under the directories pam-auth-update may rewrite, by path."""
    out: dict[str, bytes] = {}
    for d in PAM_TOOL_STATE:
        base = _under(root, d)
        if not base.is_dir():
            continue
        for f in sorted(base.rglob("*")):
            if f.is_file() and not f.is_symlink():
                out[str(f)] = f.read_bytes()
    return out


def _pam_auth_update(root: Path) -> str | None:
    """The pam-auth-update to run for ``root``, or None where there is none (not Debian/Ubuntu)."""
    for cand in (root / "usr" / "sbin" / "pam-auth-update", root / "sbin" / "pam-auth-update"):
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand) if root == Path("/") else str(Path("/") / cand.relative_to(root))
    return None


def _run_pam_auth_update(root: Path, *args: str) -> None:
    tool = _pam_auth_update(root)
    argv = [tool or "pam-auth-update", "--package", *args]
    if root != Path("/"):
        argv[1:1] = ["--root", str(root)]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no message"])[-1]
        raise InstallError(f"{' '.join(argv)} failed (exit {r.returncode}): {last}")


def _program() -> Path:
    """The ``fr-pbd`` console script of the running installation (beside its Python)."""
    script = Path(sys.executable).with_name("fr-pbd")
    if not script.is_file():
        raise InstallError(f"no fr-pbd program beside {sys.executable}: install fr-pbd with pip into a virtual "
                           "environment that only root can change (e.g. /opt/fr-pbd), then run its fr-pbd")
    return script


def _check_program(script: Path) -> None:
    """PAM runs this program as root and the daemon runs it as its user: only root may change any of it."""
    for what, path in (("the fr-pbd program", script), ("its Python", Path(sys.executable)),
                       ("the fr_pbd package", Path(__file__).resolve().parent)):
        real = Path(os.path.realpath(path))
        for hidden in _HIDDEN:
            if real == hidden or hidden in real.parents:
                raise InstallError(f"{what} is at {real}, under {hidden}, which the unit's ProtectHome=yes hides "
                                   f"from the daemon: install fr-pbd elsewhere (e.g. a venv in /opt/fr-pbd)")
        st = os.stat(real)
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise InstallError(f"{what} {real} must belong to root and be writable by nobody else "
                               "(PAM runs fr-pbd as root)")
        try:
            config.check_dir_chain(real.parent if not real.is_dir() else real, set(), what)
        except ConfigError as exc:
            raise InstallError(f"{exc} (PAM runs fr-pbd as root: install it where only root can change it)") from None
        for d in [real, *real.parents]:
            m = os.stat(d).st_mode
            if stat.S_ISDIR(m) and not m & stat.S_IXOTH:
                raise InstallError(f"{d} (mode {stat.S_IMODE(m):04o}) keeps the daemon's user from reaching {what} "
                                   f"{real}: install fr-pbd where every user can read it (e.g. /opt/fr-pbd)")


# --------------------------------------------------------------------------------------
# the record and the steps
# --------------------------------------------------------------------------------------
@dataclass
class _Run:
    root: Path
    dry_run: bool
    say: Callable[[str], None]
    entries: list[dict] = field(default_factory=list)

    def p(self, path: Path) -> Path:
        return _under(self.root, path)

    def save(self) -> None:
        if self.dry_run:
            return
        rec = self.p(RECORD)
        fileio.atomic_write(rec, json.dumps({"format": 1, "root": str(self.root), "entries": self.entries},
                                            indent=1).encode(), mode=0o600)

    def note(self, entry: dict) -> None:
        """Record the previous state before the change is made (a stop half-way can still be undone)."""
        self.entries.append(entry)
        self.save()

    def mkdir(self, path: Path, mode: int, owner: Account | None = None) -> None:
        """``path`` and any missing parent, recorded as made here (removed by uninstall if empty)."""
        missing = [d for d in [path, *path.parents] if not os.path.lexists(self.p(d))][::-1]
        for d in missing:
            m, who = (mode, owner) if d == path else (0o755, None)
            self.say(f"create directory {self.p(d)} (mode {m:04o}, owner {who.name if who else 'root'})")
            if self.dry_run:
                continue
            os.mkdir(self.p(d), m)
            os.chmod(self.p(d), m)
            if who is not None:
                os.chown(self.p(d), who.uid, who.gid)
            self.note({"kind": "dir", "path": str(d)})  # an empty directory: recorded once it is there

    def write(self, path: Path, data: bytes, mode: int, owner: Account | None = None, why: str = "") -> None:
        target = self.p(path)
        before = _state(target)
        if before is not None and "data" in before and base64.b64decode(before["data"]) == data \
                and before["mode"] == mode and before["uid"] == (owner.uid if owner else 0):
            self.say(f"keep {target} (already as it should be)")
            return
        verb = "replace" if before is not None else "write"
        self.say(f"{verb} {target} (mode {mode:04o}, owner {owner.name if owner else 'root'}){why}")
        if self.dry_run:
            return
        self.note({"kind": "file", "path": str(path), "before": before,
                   "after_sha256": hashlib.sha256(data).hexdigest()})
        fileio.atomic_write(target, data, mode=mode)
        os.chown(target, owner.uid if owner else 0, owner.gid if owner else 0)


def _load_record(root: Path) -> dict | None:
    rec = _under(root, RECORD)
    try:
        doc = json.loads(rec.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InstallError(f"cannot read the install record {rec}: {exc}") from None
    if doc.get("format") != 1 or not isinstance(doc.get("entries"), list):
        raise InstallError(f"{rec} is not an install record of this fr-pbd")
    return doc


def _require_root() -> None:
    if os.geteuid() != 0:
        raise InstallError("fr-pbd system install/uninstall changes system files and accounts: run it as root "
                           "(sudo)")


def _verified_models() -> list[models.VerifiedModel]:
    """Every model the installing user has, checked against the manifest; the default pipeline's are required."""
    from fr_pbd.capture import liveness, yunet
    from fr_pbd.pipeline import DEFAULT_EMBEDDER

    out = []
    for name in sorted(models.manifest()):
        if models.status(name).path is not None:
            out.append(models.resolve(name))  # a file that does not match the manifest: an error, not skipped
    have = {m.spec.name for m in out}
    for name in (yunet.MODEL_NAME, DEFAULT_EMBEDDER, *liveness.MODEL_NAMES):
        if name not in have:
            models.resolve(name)  # raises ModelNotFoundError with the command that gets it
    return out


# --------------------------------------------------------------------------------------
# install
# --------------------------------------------------------------------------------------
def install(*, root: str | os.PathLike[str] = "/", dry_run: bool = False,
            say: Callable[[str], None] = print) -> dict:
    """Install the daemon for face login (module docstring); returns the record. Nothing changes with ``dry_run``."""
    _require_root()
    root = Path(os.path.abspath(root))
    run = _Run(root, dry_run, say)
    if _load_record(root) is not None:
        raise InstallError(f"fr-pbd is already installed here (record {run.p(RECORD)}); "
                           "run fr-pbd system uninstall first")
    script = _program()
    _check_program(script)
    found = _verified_models()
    config.check_dir_chain(run.p(SYSTEM_HOME).parent, set(), f"above the system home {SYSTEM_HOME}")

    run.mkdir(RECORD.parent, 0o700)
    run.save()

    # 1. the account
    acct = _account(DAEMON_USER, root)
    if acct is None:
        shell = next((s for s in _NOLOGIN if os.path.exists(run.p(Path(s)))), _NOLOGIN[0])
        argv = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", str(SYSTEM_HOME),
                "--shell", shell, "--comment", "fr-pbd face verification daemon", DAEMON_USER]
        if root != Path("/"):
            argv[1:1] = ["--prefix", str(root)]
        say(f"create the system account {DAEMON_USER} (home {SYSTEM_HOME}, shell {shell})")
        if not dry_run:
            run.note({"kind": "user", "name": DAEMON_USER})
            r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise InstallError(f"useradd failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
            acct = _account(DAEMON_USER, root)
            if acct is None:
                raise InstallError(f"useradd said yes but there is no account {DAEMON_USER}")
    else:
        say(f"keep the existing account {DAEMON_USER} (uid {acct.uid})")
    if acct is not None and acct.uid == 0:
        raise InstallError(f"the account {DAEMON_USER} has uid 0: the daemon must not run as root")
    shown = acct or Account(DAEMON_USER, -1, -1)

    # 2. the home and its config
    home = run.p(SYSTEM_HOME)
    if os.path.lexists(home):
        st = os.lstat(home)
        if not stat.S_ISDIR(st.st_mode) or (acct is not None and st.st_uid != acct.uid):
            raise InstallError(f"{home} exists and is not a directory of {DAEMON_USER}: move it away first")
        say(f"keep the existing home {home}")
    else:
        run.mkdir(SYSTEM_HOME, 0o700, shown)
    if not dry_run:
        config.check_home_parents(home, owner=acct.uid)
    cfg = run.p(SYSTEM_HOME / config.CONFIG_FILE)
    if os.path.lexists(cfg):
        say(f"keep the existing {cfg}")
    else:
        run.write(SYSTEM_HOME / config.CONFIG_FILE, system_config_text().encode(), 0o600, shown)

    # 3. the models
    run.mkdir(MODELS_DIR, 0o755)
    for m in found:
        run.write(MODELS_DIR / m.spec.file, m.data, 0o644, why=f" from {m.path} (sha256 matches the manifest)")
        if not dry_run and _sha(run.p(MODELS_DIR / m.spec.file)) != m.spec.sha256:
            raise InstallError(f"the copy of {m.spec.name} does not match the manifest: disk trouble?")

    # 4. the program
    link = run.p(PROGRAM)
    if os.path.lexists(link):
        if os.path.realpath(link) != os.path.realpath(script):
            raise InstallError(f"{link} exists and is not this fr-pbd ({script}): remove it, or run "
                               f"{link} system install")
        say(f"keep {link} (it is this fr-pbd)")
    else:
        run.mkdir(PROGRAM.parent, 0o755)
        say(f"link {link} -> {script}")
        if not dry_run:
            run.note({"kind": "file", "path": str(PROGRAM), "before": None, "after_sha256": None})
            os.symlink(script, link)

    # 5. the unit
    run.mkdir(UNIT.parent, 0o755)
    run.write(UNIT, unit_text().encode(), 0o644, why=" (the shipped unit)")

    # 6. PAM
    if _pam_auth_update(root) is not None:
        run.mkdir(PAM_PROFILE.parent, 0o755)
        run.write(PAM_PROFILE, pam_profile_text().encode(), 0o644, why=" (pam-auth-update profile)")
        say(f"run pam-auth-update --package --enable {PAM_PROFILE_NAME} (the face line first in common-auth)")
        if not dry_run:
            before = _snapshot(root)
            entry: dict = {"kind": "pam-auth-update", "enabled": False, "files": []}
            run.note(entry)
            _run_pam_auth_update(root, "--enable", PAM_PROFILE_NAME)
            after = _snapshot(root)
            for path in sorted(set(before) | set(after)):
                if before.get(path) != after.get(path):
                    entry["files"].append({
                        "path": path,
                        "before": None if path not in before else base64.b64encode(before[path]).decode("ascii"),
                        "after_sha256": None if path not in after else hashlib.sha256(after[path]).hexdigest()})
            entry["enabled"] = True
            run.save()
    else:
        say("no pam-auth-update here: add this line, before the password line, to the PAM file of each service "
            "that should offer face login (docs/pam.md):")
        say(f"    auth  [success=done default=ignore]  {PAM_LINE}")
        run.entries.append({"kind": "pam-lines", "written": False})
        run.save()
    say("done; start the daemon: systemctl daemon-reload && systemctl enable --now fr-pbd" if not dry_run
        else "dry run: nothing was changed")
    return {"format": 1, "root": str(root), "entries": run.entries}


# --------------------------------------------------------------------------------------
# uninstall
# --------------------------------------------------------------------------------------
def _processes_of(uid: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            for line in (d / "status").read_text().splitlines():
                if line.startswith("Uid:"):
                    if int(line.split()[1]) == uid:
                        pids.append(int(d.name))
                    break
        except (OSError, ValueError):
            continue
    return pids


def _as_user(acct: Account, func: Callable[[], None]) -> None:
    """Run ``func`` in a child process that is ``acct`` (the store only opens for its owner)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; its outcome is checked by the parent
        os.close(r)
        code = 0
        try:
            _become(acct)
            func()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent in one line
            os.write(w, (str(exc).splitlines() or [type(exc).__name__])[0].encode()[:1000])
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        message = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise StoreError(message or f"the child that erased the store as {acct.name} failed")


def uninstall(*, root: str | os.PathLike[str] = "/", dry_run: bool = False, keep_store: bool = False,
              say: Callable[[str], None] = print) -> None:
    """Undo :func:`install` from its record, newest change first (module docstring)."""
    _require_root()
    root = Path(os.path.abspath(root))
    doc = _load_record(root)
    if doc is None:
        raise InstallError(f"no install record at {_under(root, RECORD)}: nothing was installed by "
                           "fr-pbd system install here")
    if Path(doc.get("root", "/")) != root:
        raise InstallError(f"the record was made for --root {doc.get('root')}, not {root}")
    entries: list[dict] = doc["entries"]
    acct = _account(DAEMON_USER, root)
    if acct is not None and root == Path("/") and not keep_store:
        running = _processes_of(acct.uid)
        if running:
            raise InstallError(f"processes of {DAEMON_USER} are running (pid {', '.join(map(str, running[:5]))}): "
                               "stop the daemon first (systemctl disable --now fr-pbd)")
    home = _under(root, SYSTEM_HOME)
    kept_home = False

    # the store first: it is the one thing that must not outlive the uninstall by accident
    from fr_pbd.store import STORE_FILE

    if keep_store:
        say(f"keep {home}, its store and config, and the account {DAEMON_USER} (--keep-store)")
        kept_home = True
    elif os.path.lexists(home / STORE_FILE):
        say(f"erase the store in {home} (crypto-shredding: the data key, the key file and the store are destroyed)")
        if not dry_run:
            if acct is None:
                raise InstallError(f"the store in {home} has no account {DAEMON_USER} to open it as")
            from fr_pbd.store import erase

            _as_user(acct, lambda: erase(home))

    for entry in reversed(entries):
        kind = entry.get("kind")
        if kind == "dir" and entry["path"] == str(RECORD.parent):
            continue  # the record's own directory: removed last, with the record
        if kind == "pam-auth-update":
            _undo_pam_auth_update(root, entry, dry_run, say)
        elif kind == "file":
            path = _under(root, Path(entry["path"]))
            if kept_home and (path == home or home in path.parents):
                continue
            before = entry["before"]
            now = _sha(path) if not os.path.islink(path) else None
            if entry.get("after_sha256") and os.path.lexists(path) and now != entry["after_sha256"]:
                say(f"leave {path}: it changed since the install")
                continue
            say(f"{'remove' if before is None else 'restore'} {path}")
            if not dry_run:
                _put_back(path, before)
        elif kind == "dir":
            path = _under(root, Path(entry["path"]))
            if kept_home and (path == home or home in path.parents):
                continue
            if path == home and not dry_run:
                _clear_home(path, say)
            say(f"remove directory {path}")
            if not dry_run:
                try:
                    os.rmdir(path)
                except FileNotFoundError:
                    pass
                except OSError:
                    say(f"leave {path}: not empty ({', '.join(sorted(os.listdir(path))[:5])})")
        elif kind == "user":
            if keep_store:
                continue
            say(f"remove the account {DAEMON_USER} (the install created it)")
            if not dry_run:
                argv = ["userdel", DAEMON_USER] if root == Path("/") else ["userdel", "--prefix", str(root),
                                                                            DAEMON_USER]
                r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
                if r.returncode != 0:
                    raise InstallError(f"userdel failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    say(f"remove the install record {_under(root, RECORD)}")
    if not dry_run:
        os.unlink(_under(root, RECORD))
        try:
            os.rmdir(_under(root, RECORD.parent))
        except OSError:
            pass
    say("dry run: nothing was changed" if dry_run else "done")


def _clear_home(home: Path, say: Callable[[str], None]) -> None:
    """A home the install made, after its store was shredded: whatever is left goes with the account."""
    left = sorted(p.name for p in home.iterdir() if p.name != config.CONFIG_FILE)
    if left:
        say(f"remove what is left in {home} ({', '.join(left)})")
    for p in home.iterdir():
        if p.name == config.CONFIG_FILE:
            continue  # a recorded file: put back from its own entry
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _undo_pam_auth_update(root: Path, entry: dict, dry_run: bool, say: Callable[[str], None]) -> None:
    files = entry.get("files", [])
    untouched = {f["path"] for f in files if _sha(Path(f["path"])) == f["after_sha256"]}
    if entry.get("enabled"):
        say(f"run pam-auth-update --package --remove {PAM_PROFILE_NAME}")
        if not dry_run:
            _run_pam_auth_update(root, "--remove", PAM_PROFILE_NAME)
    for f in files:
        path = Path(f["path"])
        before = None if f["before"] is None else base64.b64decode(f["before"])
        if path.exists() and before is not None and path.read_bytes() == before:
            continue  # pam-auth-update put it back itself
        if f["path"] not in untouched:
            say(f"leave {path}: it changed since the install")
            continue
        say(f"{'remove' if before is None else 'restore'} {path} (as it was before the install)")
        if dry_run:
            continue
        if before is None:
            path.unlink(missing_ok=True)
        else:
            st = os.stat(path)
            fileio.atomic_write(path, before, mode=stat.S_IMODE(st.st_mode))
            os.chown(path, st.st_uid, st.st_gid)


# --------------------------------------------------------------------------------------
# the system home for the household commands (--system)
# --------------------------------------------------------------------------------------
def enter_system_home(home: str | os.PathLike[str] | None = None) -> Path:
    """Become the daemon's user and use its home and models: ``fr-pbd enroll --system`` and friends.

    Root only. From here on this process is the home's owner (the store only opens for its
    owner, and whatever it writes must belong to the daemon), with the groups the unit gives
    the daemon (the camera's ``video``), and it reads the models the daemon reads.
    """
    if home is not None:
        raise InstallError("give --system or --home, not both")
    if os.geteuid() != 0:
        raise InstallError(f"--system works in {SYSTEM_HOME} as its owner {DAEMON_USER}: run it as root (sudo)")
    try:
        st = os.lstat(SYSTEM_HOME)
    except FileNotFoundError:
        raise InstallError(f"there is no {SYSTEM_HOME}: run fr-pbd system install first") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid == 0:
        raise InstallError(f"{SYSTEM_HOME} is not the daemon's home (a directory of {DAEMON_USER}): "
                           "run fr-pbd system install")
    owner = pwd.getpwuid(st.st_uid)
    config.check_home_parents(SYSTEM_HOME, owner=owner.pw_uid)
    os.environ[models.ENV_MODELS] = str(MODELS_DIR)
    os.environ["HOME"] = str(SYSTEM_HOME)
    os.environ.pop("XDG_CACHE_HOME", None)
    os.environ.pop(config.ENV_HOME, None)
    _become(Account(owner.pw_name, owner.pw_uid, owner.pw_gid))
    return SYSTEM_HOME
