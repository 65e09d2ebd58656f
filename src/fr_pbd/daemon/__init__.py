"""The verification daemon: yes or no across a process boundary, and nothing else (condition 5).

``fr-pbd serve --socket PATH (--camera SRC | --frames DIR)`` owns the camera, the store and
its key. Other processes (a PAM module, a screen locker) never see a frame, a template, a
score or the key: they connect to a Unix-domain socket and get one byte. By role:

* :mod:`~fr_pbd.daemon.protocol`: the wire (``VERIFY [user]`` in, ``Y``/``N`` out), shared by both sides;
* :mod:`~fr_pbd.daemon.server`: the fixed-time server;
* :mod:`~fr_pbd.daemon.process`: the process set-up (:func:`serve`: hardening, egress guard, log, signals);
* :mod:`~fr_pbd.daemon.listen`: where the server listens and whose questions it takes;
* :mod:`~fr_pbd.daemon.turns`: who an asker is (root: per login session), its slots and its turn;
* :mod:`~fr_pbd.daemon.client`: ``fr-pbd ask``, which asks only the real daemon;
* :mod:`~fr_pbd.daemon.pam`: where a PAM login may be answered by a face at all.

The frames come from :mod:`fr_pbd.capture.frames` (a camera, or a file standing in for one).
What leaves the process: one byte per request on the socket, the log's decision lines (never
a score, template or image), and the egress record (counts, no addresses) beside the socket.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names re-exported from the role modules, loaded on first use: `fr-pbd --help` and `fr-pbd ask`
# must not pay for the server's imports (OpenCV, numpy) to reach the client.
_WHERE = {
    "ASK_TIMEOUT_S": "client", "ask": "client", "check_socket": "client", "claim_for": "client",
    "daemon_identity": "client", "socket_from_config": "client",
    "claimed_user": "listen",
    "MAX_REQUEST": "protocol", "MAX_USER": "protocol", "ProtocolError": "protocol",
    "egress_record_path": "protocol", "parse_request": "protocol",
    "serve": "process",
    "READ_TIMEOUT_S": "server",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"fr_pbd.daemon.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'fr_pbd.daemon' has no attribute {name!r}")
