"""Deployment profile: the one switch that decides what fr-pbd may be used for (condition 1).

The household exemption covers one use: a person unlocking their own device
with their own face. ``household-device-access`` is that use; it is the default
(no config file needed) and the only profile there is. A config naming any
other profile, or any key this module does not know, is refused with a
:class:`~fr_pbd.errors.ConfigError` instead of being half-understood: privacy
by default means an unknown setting can never quietly widen what fr-pbd does.

Features that would take a deployment outside the exemption (identifying
people who did not enrol, watching a scene, sending results anywhere) do not
exist, so there is no profile that turns them on. See ``docs/config.md``.

File: ``$FR_PBD_HOME/config.toml`` (optional)::

    profile = "household-device-access"
    board = "rpi4"               # optional: how the models run here (fr_pbd.boards); default: the defaults
    tpm = "device:/dev/tpmrm0"   # optional: the TPM 2.0 a tpm2 store uses ($FR_PBD_TPM overrides; docs/tpm.md)

    [daemon]
    allowed_uids = [1000, 0]     # peers (SO_PEERCRED) that may ask the daemon; default: the daemon's own uid
    allowed_gids = []            # groups whose members may ask; default: none
    socket = "/run/fr-pbd/fr-pbd.sock"
    daemon_uid = 998             # the uid `fr-pbd ask` requires of the daemon; default: the home's owner
    answer_deadline_ms = 1000    # every verification is answered this long after its request arrived
    max_connections_per_uid = 4  # open connections one uid may hold; more are answered N at once

    [pam]                        # where `fr-pbd ask --pam` may answer (fr_pbd.daemon.pam; docs/pam.md)
    services = ["login", "gdm-password", "sudo"]   # default: local logins, screen lockers, sudo; never sshd
    ttys = ["tty[0-9]", ":[0-9]"]                 # default: virtual consoles and local X displays

    [capture]
    max_frames = 5               # frames one camera attempt may look at (yes at the first live match)
    frame_budget_ms = 1000       # and the time they may take; the daemon also keeps its answer deadline

The home and every directory above it must be safe from other users
(:func:`check_home_parents`, as ssh's ``StrictModes``): whoever can rename a
parent can swap the store, the key or this file.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fr_pbd import fileio
from fr_pbd.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_ANSWER_DEADLINE_MS",
    "check_dir_chain",
    "check_home_parents",
    "PROFILE_HOUSEHOLD",
    "PROFILES",
    "CaptureConfig",
    "Config",
    "DaemonConfig",
    "config_path",
    "default_home",
    "load",
    "parse",
    "require_verification",
]

CONFIG_FILE = "config.toml"
PROFILE_HOUSEHOLD = "household-device-access"
#: Every profile fr-pbd knows. One on purpose: see the module docstring.
PROFILES = (PROFILE_HOUSEHOLD,)
MAX_CONFIG_BYTES = 64 * 1024
#: Arrays and inline tables nested deeper than this are refused before the TOML is parsed. fr-pbd's
#: own keys nest 1 deep (``services = [...]``); tomllib recurses once per level, so 3,000 levels
#: would end in RecursionError (an internal error) instead of a one-line ConfigError.
MAX_TOML_NESTING = 16
_MAX_ID = 2**32 - 2  # (uid_t)-1 is "no id"
_TOP_KEYS = {"profile", "board", "tpm", "daemon", "capture", "pam"}
_PAM_KEYS = {"services", "ttys"}
ENV_HOME = "FR_PBD_HOME"
_DAEMON_KEYS = {"allowed_uids", "allowed_gids", "socket", "daemon_uid", "answer_deadline_ms",
                "max_connections_per_uid"}
#: Default answer deadline. verify() per outcome on the 2-core x86 CI machine under load
#: (liveness on, 40 runs each): p95 47-132 ms, max 140 ms (genuine the slowest); a board
#: such as the Raspberry Pi 4 is several times slower and a real camera is opened per
#: request, so the default leaves room for both; docs/config.md has the figures.
DEFAULT_ANSWER_DEADLINE_MS = 1000
ANSWER_DEADLINE_RANGE_MS = (50, 10_000)
DEFAULT_MAX_CONNECTIONS_PER_UID = 4
MAX_CONNECTIONS_PER_UID_RANGE = (1, 64)
_CAPTURE_KEYS = {"max_frames", "frame_budget_ms"}
#: A camera attempt: up to 5 frames within 1 s, counted once (docs/lockout.md). One frame of
#: the pipeline takes 25-60 ms on x86 and about 4x that on a Raspberry Pi 4.
DEFAULT_MAX_FRAMES = 5
MAX_FRAMES_RANGE = (1, 30)
DEFAULT_FRAME_BUDGET_MS = 1000
FRAME_BUDGET_RANGE_MS = (50, 10_000)


@dataclass(frozen=True)
class DaemonConfig:
    """Who may ask the daemon (``SO_PEERCRED`` uid/gid allowlists) and where it listens.

    ``allowed_uids`` defaults to the uid of the process that loads the config
    (the daemon itself): nobody else may ask until the owner says so.
    """

    allowed_uids: tuple[int, ...] = field(default_factory=lambda: (os.getuid(),))
    allowed_gids: tuple[int, ...] = ()
    socket: Path | None = None
    daemon_uid: int | None = None  # None: the owner of the home (see fr_pbd.daemon.daemon_identity)
    answer_deadline_ms: int = DEFAULT_ANSWER_DEADLINE_MS
    max_connections_per_uid: int = DEFAULT_MAX_CONNECTIONS_PER_UID

    def allows(self, uid: int, gid: int) -> bool:
        """True iff a peer with this uid or primary gid is on the allowlist."""
        return uid in self.allowed_uids or gid in self.allowed_gids


#: The PAM service names (files of /etc/pam.d) of local logins: the console, the display
#: managers, the screen lockers and sudo. ``gdm-password`` also unlocks GNOME's lock screen.
DEFAULT_PAM_SERVICES: tuple[str, ...] = (
    "login",
    "gdm-password", "lightdm", "sddm", "xdm", "lxdm", "slim", "greetd", "ly",
    "kde", "xscreensaver", "i3lock", "swaylock", "hyprlock", "waylock", "physlock", "vlock",
    "cinnamon-screensaver", "mate-screensaver", "xfce4-screensaver", "gnome-screensaver", "kscreensaver",
    "sudo", "sudo-i",
)
#: Services that authenticate someone who is not (or need not be) in front of this camera: the
#: network logins, and the commands that switch from one account to another. Refused in
#: ``[pam] services`` (a config naming one does not load).
NEVER_PAM_SERVICES: tuple[str, ...] = (
    "sshd", "ssh", "dropbear", "telnet", "telnetd", "rlogin", "rsh", "rexec", "xrdp-sesman", "cockpit",
    "vnc", "ftp", "vsftpd", "proftpd", "pure-ftpd", "dovecot", "imap", "pop", "smtp", "samba", "openvpn",
    "ppp", "radius", "su", "su-l", "runuser", "runuser-l", "other",
)
#: Terminals a local person sits at: the virtual consoles and local X displays (the display
#: managers' PAM_TTY). Globs (fnmatch); an unset PAM_TTY is accepted too (screen lockers).
DEFAULT_PAM_TTYS: tuple[str, ...] = ("tty[0-9]", "tty[0-9][0-9]", "/dev/tty[0-9]", "/dev/tty[0-9][0-9]",
                                 ":[0-9]", ":[0-9][0-9]", ":[0-9].[0-9]")

@dataclass(frozen=True)
class PamPolicy:
    """The allow-lists of ``[pam]`` in the daemon's config.toml (checked by :mod:`fr_pbd.daemon.pam`)."""

    services: tuple[str, ...] = DEFAULT_PAM_SERVICES
    ttys: tuple[str, ...] = DEFAULT_PAM_TTYS


@dataclass(frozen=True)
class CaptureConfig:
    """How many camera frames one attempt may use, and for how long (one attempt for the lockout)."""

    max_frames: int = DEFAULT_MAX_FRAMES
    frame_budget_ms: int = DEFAULT_FRAME_BUDGET_MS


@dataclass(frozen=True)
class Config:
    """The parsed configuration; :func:`load` gives the defaults when there is no file."""

    profile: str = PROFILE_HOUSEHOLD
    board: str | None = None  # a board name (fr_pbd.boards); None = the built-in defaults
    tpm: str | None = None  # the TPM transport (fr_pbd.store.tpm.parse_transport); None = /dev/tpmrm0
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    pam: PamPolicy = field(default_factory=PamPolicy)
    path: Path | None = None  # the file it came from; None = built-in defaults

    @property
    def verification_enabled(self) -> bool:
        return self.profile == PROFILE_HOUSEHOLD


def default_home() -> Path:
    """``$FR_PBD_HOME``, else the user's XDG data directory."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "fr-pbd"


def config_path(home: str | os.PathLike[str]) -> Path:
    return Path(home) / CONFIG_FILE


def _int(value: Any, key: str, source: str, lo: int, hi: int, unit: str = "", table: str = "daemon") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{source}: [{table}] {key} must be an integer in {lo}..{hi}{unit}, not {value!r}")
    return value


def _ids(value: Any, key: str, source: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{source}: [daemon] {key} must be a list of numeric ids, e.g. {key} = [1000]")
    out = []
    for v in value:
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= _MAX_ID:
            raise ConfigError(f"{source}: [daemon] {key} holds {v!r}; ids are integers in 0..{_MAX_ID}")
        out.append(v)
    return tuple(dict.fromkeys(out))


def toml_nesting(text: str) -> tuple[int, int]:
    """The deepest nesting of arrays and inline tables in TOML ``text`` and the line where it is reached.

    One pass over the characters, O(len(text)), no recursion: strings (basic, literal, multi-line,
    with escapes) and comments are skipped, so a bracket inside them does not count. Table headers
    (``[t]``, ``[[t]]``) count as their brackets, which is at most 2. Meant for :func:`check_nesting`,
    before the parser sees the text.
    """
    depth = deepest = 0
    line = deepest_line = 1
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif c in "\"'":
            triple = text.startswith(c * 3, i)
            quote = c * 3 if triple else c
            i += len(quote)
            while i < n and not text.startswith(quote, i):
                if text[i] == "\\" and c == '"':
                    i += 1
                elif text[i] == "\n":
                    line += 1
                    if not triple:
                        break  # an unterminated string: the parser will say so
                i += 1
            i += len(quote)
            continue
        elif c in "[{":
            depth += 1
            if depth > deepest:
                deepest, deepest_line = depth, line
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return deepest, deepest_line


def check_nesting(text: str, source: str, limit: int = MAX_TOML_NESTING) -> None:
    """ConfigError if ``text`` nests arrays or inline tables deeper than ``limit`` (:func:`toml_nesting`).

    Checked before parsing rather than by catching the parser's RecursionError: the limit is then a
    property of the file (the same file is refused whatever the caller's stack depth, thread or
    ``sys.setrecursionlimit``), the parser never spends time and stack on it, and no RecursionError of
    some other cause is mistaken for a bad file.
    """
    deepest, line = toml_nesting(text)
    if deepest > limit:
        raise ConfigError(f"{source}: line {line} nests arrays or tables {deepest} deep; fr-pbd reads at most "
                          f"{limit}")


def parse(text: str, source: str = CONFIG_FILE) -> Config:
    """Parse config text. Unknown keys, wrong types and any profile but the household one are errors."""
    check_nesting(text, source)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None
    except RecursionError:  # not reached after check_nesting; kept so that it can never be an internal error
        raise ConfigError(f"{source} nests too deeply") from None
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; known: profile, board, tpm, [daemon], "
                          "[capture]")
    profile = doc.get("profile", PROFILE_HOUSEHOLD)
    if profile != PROFILE_HOUSEHOLD:
        raise ConfigError(
            f"{source}: profile {profile!r} does not exist; the only profile is {PROFILE_HOUSEHOLD!r} "
            "(fr-pbd has no mode outside the household exemption, see docs/config.md)"
        )
    board = doc.get("board")
    if board is not None and (not isinstance(board, str) or not board.replace("-", "").isalnum()):
        raise ConfigError(f"{source}: board must be a board name such as \"rpi4\" (see fr_pbd/_data/boards)")
    tpm = doc.get("tpm")
    if tpm is not None:
        tpm = _tpm_transport(tpm, source)
    raw = _table(doc, "daemon", _DAEMON_KEYS, source)
    kwargs: dict[str, Any] = {}
    if "allowed_uids" in raw:
        kwargs["allowed_uids"] = _ids(raw["allowed_uids"], "allowed_uids", source)
    if "allowed_gids" in raw:
        kwargs["allowed_gids"] = _ids(raw["allowed_gids"], "allowed_gids", source)
    if "socket" in raw:
        sock = raw["socket"]
        if not isinstance(sock, str) or not sock or "\x00" in sock or len(os.fsencode(sock)) > 107:
            raise ConfigError(f"{source}: [daemon] socket must be a path of 1..107 bytes")
        kwargs["socket"] = Path(sock)
    if "daemon_uid" in raw:
        kwargs["daemon_uid"] = _int(raw["daemon_uid"], "daemon_uid", source, 0, _MAX_ID)
    if "answer_deadline_ms" in raw:
        kwargs["answer_deadline_ms"] = _int(raw["answer_deadline_ms"], "answer_deadline_ms", source,
                                            *ANSWER_DEADLINE_RANGE_MS, " (milliseconds)")
    if "max_connections_per_uid" in raw:
        kwargs["max_connections_per_uid"] = _int(raw["max_connections_per_uid"], "max_connections_per_uid",
                                                 source, *MAX_CONNECTIONS_PER_UID_RANGE)
    return Config(profile=profile, board=board, tpm=tpm, daemon=DaemonConfig(**kwargs),
                  capture=_capture(doc, source), pam=_pam(doc, source), path=None)


def _table(doc: dict, name: str, known: set[str], source: str) -> dict:
    """The ``[name]`` table (empty if absent); a key it does not know is an error, never ignored."""
    raw = doc.get(name, {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {name} must be a table ([{name}])")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in [{name}]: {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    return raw


def _capture(doc: dict, source: str) -> CaptureConfig:
    raw = _table(doc, "capture", _CAPTURE_KEYS, source)
    kwargs = {}
    if "max_frames" in raw:
        kwargs["max_frames"] = _int(raw["max_frames"], "max_frames", source, *MAX_FRAMES_RANGE, table="capture")
    if "frame_budget_ms" in raw:
        kwargs["frame_budget_ms"] = _int(raw["frame_budget_ms"], "frame_budget_ms", source, *FRAME_BUDGET_RANGE_MS,
                                         " (milliseconds)", table="capture")
    return CaptureConfig(**kwargs)


def _names(value: Any, key: str, source: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v and len(v) <= 64 and v.isprintable()
                                              for v in value):
        raise ConfigError(f"{source}: [pam] {key} must be a list of names, e.g. {key} = [\"login\", \"sudo\"]")
    return tuple(dict.fromkeys(value))


def _pam(doc: dict, source: str) -> PamPolicy:
    raw = _table(doc, "pam", _PAM_KEYS, source)
    kwargs = {}
    if "services" in raw:
        services = _names(raw["services"], "services", source)
        never = sorted(set(services) & set(NEVER_PAM_SERVICES))
        if never:
            raise ConfigError(f"{source}: [pam] services names {', '.join(never)}: face login never answers a "
                              "network login or a switch to another account (docs/pam.md)")
        kwargs["services"] = services
    if "ttys" in raw:
        kwargs["ttys"] = _names(raw["ttys"], "ttys", source)
    return PamPolicy(**kwargs)


def _tpm_transport(value: Any, source: str) -> str:
    """``device:/dev/...`` or ``swtpm:path=/abs/socket``: never a TCP transport (no network)."""
    if (isinstance(value, str) and "\x00" not in value and "," not in value
            and ((value.startswith("device:/dev/") and len(value) > 12)
                 or (value.startswith("swtpm:path=/") and len(os.fsencode(value)) <= 111))):
        return value
    raise ConfigError(f"{source}: tpm must be \"device:/dev/tpmrm0\" (a TPM device node) or "
                      f"\"swtpm:path=/absolute/socket\" (a software TPM's Unix socket), not {value!r}; "
                      "TCP transports are refused (no network)")


def _check_file(path: Path, owner: int | None = None) -> None:
    """The allowlist decides who may ask for a face check: nobody else may be able to edit it."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{path} must be a regular file, not a link or anything else")
    if st.st_uid not in (os.getuid(), 0, owner):
        whose = "you or to root" if owner is None else f"you, root or the home's owner (uid {owner})"
        raise ConfigError(f"{path} is owned by uid {st.st_uid}; it must belong to {whose}")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                          "chmod go-w it")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes")


def load(home: str | os.PathLike[str] | None = None, *, owner: int | None = None) -> Config:
    """The config of ``home`` (default: the verifier's default home); defaults when there is no file.

    ``owner``: a uid whose config.toml is trusted besides yours and root's: ``fr-pbd ask``
    run by PAM (as root) reads the daemon's config, which belongs to the daemon's user.
    """
    if home is None:
        home = default_home()
    path = config_path(home)
    try:
        _check_file(path, owner)
    except FileNotFoundError:
        return Config()
    except OSError as exc:  # e.g. a home this user may not enter: never mistaken for "no config"
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}; run fr-pbd as the home's owner "
                          f"(or one its config names), or pass --home") from None
    try:
        data = fileio.read_limited(path, MAX_CONFIG_BYTES, follow=False)
        if data is None:
            raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes; refused unread")
        text = data.decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}; run fr-pbd as the home's owner "
                          f"(or one its config names), or pass --home") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    cfg = parse(text, str(path))
    return dataclasses.replace(cfg, path=path)


def _ancestors(path: Path) -> list[Path]:
    return [path, *path.parents]


def check_dir_chain(path: str | os.PathLike[str], trusted: set[int] | frozenset[int], what: str) -> None:
    """Refuse ``path`` if it or any directory above it could be changed by an untrusted user.

    Each existing directory on the way to ``/`` (both as written and with symbolic links
    resolved) must be owned by root or a ``trusted`` uid, and not writable by group or
    others unless it has the sticky bit (``/tmp``), where nobody can rename or delete
    another's entries; a symbolic link on the way must be owned by root or a trusted uid.
    This is what ssh's ``StrictModes`` asks of a home. ConfigError (one line) otherwise.
    """
    trusted = frozenset(trusted) | {0}
    lexical = Path(os.path.abspath(os.fspath(path)))
    resolved = Path(os.path.realpath(os.fspath(path)))
    for d in dict.fromkeys(_ancestors(lexical) + _ancestors(resolved)):
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            continue  # not there yet: the first existing directory above decides who could create it
        except OSError as exc:
            raise ConfigError(f"cannot check {d} ({what}): {exc.strerror or exc}") from None
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid not in trusted:
            raise ConfigError(f"{d} ({what}) is owned by uid {st.st_uid}, who could replace what lies below it; "
                              f"it must belong to root or uid {min(trusted - {0}, default=0)}")
        if stat.S_ISLNK(st.st_mode):
            continue  # the link cannot be changed by others (owner checked, its directory is on this list)
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{d} ({what}) is not a directory")
        if mode & (stat.S_IWGRP | stat.S_IWOTH) and not mode & stat.S_ISVTX:
            raise ConfigError(f"{d} ({what}) is writable by group or others without the sticky bit "
                              f"(mode {mode:04o}): anyone there could replace what lies below it; chmod go-w {d}")


def check_home_parents(path: str | os.PathLike[str], owner: int | None = None) -> None:
    """Refuse a home that another non-root user could swap (ssh ``StrictModes``); ConfigError otherwise.

    The home itself must not be writable by group or others, and every directory above
    it must pass :func:`check_dir_chain` for root and ``owner`` (default: the effective
    uid of this process, i.e. the user whose store it is).
    """
    uid = os.geteuid() if owner is None else owner
    home = Path(path)
    try:
        st = os.stat(home)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise ConfigError(f"cannot check the home {home}: {exc.strerror or exc}") from None
    if st is not None and stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"the home {home} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                          f"chmod go-w {home}")
    check_dir_chain(home.parent, {uid}, f"above the home {home}")


def require_verification(cfg: Config) -> Config:
    """Raise ConfigError unless the profile enables face verification (only the household profile does)."""
    if not cfg.verification_enabled:  # unreachable with parse(), kept for hand-built Config objects
        raise ConfigError(f"profile {cfg.profile!r} does not enable verification; use {PROFILE_HOUSEHOLD!r}")
    return cfg
