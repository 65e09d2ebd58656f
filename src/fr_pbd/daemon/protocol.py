"""The wire protocol, shared by both sides: one ASCII line in, one byte out, credentials from the kernel.

Version 1, one request per connection::

    client: "VERIFY\\n"  or  "VERIFY <user>\\n"   ASCII, at most 256 bytes with the LF
    daemon: "Y" or "N"                           exactly one byte, then it closes

Both ends learn who the other is from the kernel (``SO_PEERCRED``), never from the
other's words.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from fr_pbd.egress import record_path
from fr_pbd.errors import DaemonError

__all__ = ["MAX_REQUEST", "MAX_USER", "NO", "YES", "ProtocolError", "egress_record_path", "parse_request",
           "peer_credentials", "request_line"]

MAX_REQUEST = 256  # bytes, including the LF
MAX_USER = 128
YES, NO = b"Y", b"N"
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class ProtocolError(DaemonError):
    """A request that is not one well-formed ``VERIFY`` line; the reason is for the log only."""


def parse_request(data: bytes) -> str | None:
    """The claimed user of a ``VERIFY [user]`` line (None = any enrolled user); ProtocolError otherwise."""
    if len(data) > MAX_REQUEST:
        raise ProtocolError(f"request longer than {MAX_REQUEST} bytes")
    if not data.endswith(b"\n"):
        raise ProtocolError("request not terminated by LF (client gone or too slow)")
    line = data[:-1]
    if b"\n" in line:
        raise ProtocolError("more than one line")
    if any(b < 0x20 or b > 0x7E for b in line):
        raise ProtocolError("request holds non-ASCII or control bytes")
    text = line.decode("ascii")
    if text == "VERIFY":
        return None
    if not text.startswith("VERIFY "):
        raise ProtocolError("unknown request (only VERIFY and VERIFY <user>)")
    user = text[len("VERIFY "):]
    if not 1 <= len(user) <= MAX_USER or user != user.strip():
        raise ProtocolError(f"user name must be 1-{MAX_USER} printable characters without surrounding spaces")
    return user


def request_line(user: str | None) -> bytes:
    """The request for ``user`` (None: any enrolled user); DaemonError for a name the protocol cannot carry."""
    try:  # strict: a replaced character could turn one name into another
        line = b"VERIFY\n" if user is None else b"VERIFY " + user.encode("ascii") + b"\n"
        parse_request(line)
    except UnicodeEncodeError:
        raise DaemonError("invalid user name: only printable ASCII") from None
    except ProtocolError as exc:
        raise DaemonError(f"invalid user name: {exc}") from None
    return line


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the other end, from the kernel (``SO_PEERCRED``), never from the peer's words."""
    pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return pid, uid, gid


def egress_record_path(socket_path: str | Path) -> Path:
    """Where the daemon publishes its egress guard's counts (no addresses), read by ``fr-pbd audit``
    (:func:`fr_pbd.egress.record_path`: the audit may not import the daemon)."""
    return record_path(socket_path)
