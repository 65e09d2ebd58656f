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

from fr_pbd.daemon.client import ASK_TIMEOUT_S, ask, check_socket, claim_for, daemon_identity, socket_from_config
from fr_pbd.daemon.listen import claimed_user
from fr_pbd.daemon.protocol import MAX_REQUEST, MAX_USER, ProtocolError, egress_record_path, parse_request
from fr_pbd.daemon.process import serve
from fr_pbd.daemon.server import READ_TIMEOUT_S

__all__ = [
    "ASK_TIMEOUT_S",
    "MAX_REQUEST",
    "MAX_USER",
    "READ_TIMEOUT_S",
    "ProtocolError",
    "ask",
    "check_socket",
    "claim_for",
    "claimed_user",
    "daemon_identity",
    "egress_record_path",
    "parse_request",
    "serve",
    "socket_from_config",
]
