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

    [daemon]
    allowed_uids = [1000, 0]     # peers (SO_PEERCRED) that may ask the daemon; default: the daemon's own uid
    allowed_gids = []            # groups whose members may ask; default: none
    socket = "/run/fr-pbd/fr-pbd.sock"
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fr_pbd.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "CONFIG_FILE",
    "PROFILE_HOUSEHOLD",
    "PROFILES",
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
_MAX_ID = 2**32 - 2  # (uid_t)-1 is "no id"
_TOP_KEYS = {"profile", "board", "daemon"}
ENV_HOME = "FR_PBD_HOME"
_DAEMON_KEYS = {"allowed_uids", "allowed_gids", "socket"}


@dataclass(frozen=True)
class DaemonConfig:
    """Who may ask the daemon (``SO_PEERCRED`` uid/gid allowlists) and where it listens.

    ``allowed_uids`` defaults to the uid of the process that loads the config
    (the daemon itself): nobody else may ask until the owner says so.
    """

    allowed_uids: tuple[int, ...] = field(default_factory=lambda: (os.getuid(),))
    allowed_gids: tuple[int, ...] = ()
    socket: Path | None = None

    def allows(self, uid: int, gid: int) -> bool:
        """True iff a peer with this uid or primary gid is on the allowlist."""
        return uid in self.allowed_uids or gid in self.allowed_gids


@dataclass(frozen=True)
class Config:
    """The parsed configuration; :func:`load` gives the defaults when there is no file."""

    profile: str = PROFILE_HOUSEHOLD
    board: str | None = None  # a board name (fr_pbd.boards); None = the built-in defaults
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
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


def _ids(value: Any, key: str, source: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{source}: [daemon] {key} must be a list of numeric ids, e.g. {key} = [1000]")
    out = []
    for v in value:
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= _MAX_ID:
            raise ConfigError(f"{source}: [daemon] {key} holds {v!r}; ids are integers in 0..{_MAX_ID}")
        out.append(v)
    return tuple(dict.fromkeys(out))


def parse(text: str, source: str = CONFIG_FILE) -> Config:
    """Parse config text. Unknown keys, wrong types and any profile but the household one are errors."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; known: profile, board, [daemon]")
    profile = doc.get("profile", PROFILE_HOUSEHOLD)
    if profile != PROFILE_HOUSEHOLD:
        raise ConfigError(
            f"{source}: profile {profile!r} does not exist; the only profile is {PROFILE_HOUSEHOLD!r} "
            "(fr-pbd has no mode outside the household exemption, see docs/config.md)"
        )
    board = doc.get("board")
    if board is not None and (not isinstance(board, str) or not board.replace("-", "").isalnum()):
        raise ConfigError(f"{source}: board must be a board name such as \"rpi4\" (see fr_pbd/_data/boards)")
    raw = doc.get("daemon", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: daemon must be a table ([daemon])")
    unknown = sorted(set(raw) - _DAEMON_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in [daemon]: {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(_DAEMON_KEYS))}")
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
    return Config(profile=profile, board=board, daemon=DaemonConfig(**kwargs), path=None)


def _check_file(path: Path) -> None:
    """The allowlist decides who may ask for a face check: nobody else may be able to edit it."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{path} must be a regular file, not a link or anything else")
    if st.st_uid not in (os.getuid(), 0):
        raise ConfigError(f"{path} is owned by uid {st.st_uid}; it must belong to you or to root")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                          "chmod go-w it")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes")


def load(home: str | os.PathLike[str] | None = None) -> Config:
    """The config of ``home`` (default: the verifier's default home); defaults when there is no file."""
    if home is None:
        home = default_home()
    path = config_path(home)
    try:
        _check_file(path)
    except FileNotFoundError:
        return Config()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    cfg = parse(text, str(path))
    return Config(profile=cfg.profile, board=cfg.board, daemon=cfg.daemon, path=path)


def require_verification(cfg: Config) -> Config:
    """Raise ConfigError unless the profile enables face verification (only the household profile does)."""
    if not cfg.verification_enabled:  # unreachable with parse(), kept for hand-built Config objects
        raise ConfigError(f"profile {cfg.profile!r} does not enable verification; use {PROFILE_HOUSEHOLD!r}")
    return cfg
