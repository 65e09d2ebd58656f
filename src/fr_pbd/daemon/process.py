"""The daemon's process: hardened, guarded against egress, its log opened, then :class:`Daemon` until a signal.

``fr-pbd serve`` calls :func:`serve`. Everything here happens once, before the first
request: the process is made non-dumpable and its memory locked where allowed
(:mod:`fr_pbd.hardening`), the egress guard is installed (:mod:`fr_pbd.egress`), the home,
its config and the socket's place are checked, and SIGTERM/SIGINT stop the server cleanly.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from fr_pbd import config as _config
from fr_pbd import egress, hardening
from fr_pbd.capture.frames import FrameSource
from fr_pbd.daemon.listen import check_socket_dir
from fr_pbd.daemon.server import Daemon
from fr_pbd.errors import DaemonError

__all__ = ["serve"]


def _make_logger(log_path: str | None) -> logging.Logger:
    """The daemon's own log: decisions and reasons, never a score, a template or an image."""
    logger = logging.getLogger(f"fr_pbd.daemon.{os.getpid()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o600)
        stream = os.fdopen(fd, "a", buffering=1, encoding="utf-8")
        handler: logging.Handler = logging.StreamHandler(stream)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s fr-pbd serve[%(process)d]: %(message)s",
                                           datefmt="%Y-%m-%dT%H:%M:%S%z"))
    logger.addHandler(handler)
    return logger


def serve(*, home: str | os.PathLike[str] | None, socket_path: str | os.PathLike[str] | None,
          frames: FrameSource, log_path: str | None = None, board: str | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT. Hardens the process and installs the egress guard first.

    ``board`` (else ``board`` in config.toml) decides how the models run (fr_pbd.boards).
    """
    problems = hardening.harden_process()
    egress.install()
    home_p = Path(home) if home is not None else _config.default_home()
    _config.check_home_parents(home_p)
    cfg = _config.require_verification(_config.load(home_p))
    if cfg.daemon.daemon_uid is not None and cfg.daemon.daemon_uid != os.geteuid():
        raise DaemonError(f"{cfg.path}: daemon_uid is {cfg.daemon.daemon_uid} but this process runs as uid "
                          f"{os.geteuid()}; `fr-pbd ask` would refuse every answer")
    sock = socket_path if socket_path is not None else cfg.daemon.socket
    if sock is None:
        raise DaemonError("no socket path: give --socket or set [daemon] socket in config.toml")
    check_socket_dir(Path(sock))  # before the models load: a bad place fails at once
    log = _make_logger(log_path)
    unlocked = hardening.lock_all_memory()
    for problem in [*problems, *([unlocked] if unlocked else [])]:
        log.info("hardening: %s", problem)
    # The answer thread must get the interpreter within ~1 ms of its deadline, even while the
    # worker runs Python code (default switch interval: 5 ms).
    sys.setswitchinterval(0.0005)
    daemon = Daemon(home=home_p, socket_path=Path(sock), frames=frames, cfg=cfg, log=log, board=board)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.stop())
    daemon.start()
    daemon.serve_forever()
    return 0
