"""Egress guard: a process that holds faces cannot open a network connection (condition 3).

:func:`install` adds a :func:`sys.addaudithook` hook. From then on, in this
process:

* creating a socket of any family but ``AF_UNIX`` raises :class:`EgressError`
  (``socket.__new__``; also a socket built from a bare file descriptor, whose
  family Python does not know yet);
* ``connect``/``connect_ex``/``sendto``/``sendmsg``/``bind`` to any address that
  is not a Unix-domain path raises :class:`EgressError`. IP addresses count as
  non-local *including loopback*: a port on 127.0.0.1 can be a proxy to anywhere;
* name resolution (``getaddrinfo`` with a host, ``gethostbyname``,
  ``gethostbyaddr``, ``getnameinfo``) raises :class:`EgressError`: a DNS query
  is itself a message to a third party.

Why an audit hook: CPython raises these events from C, below every library
(``socket``, ``ssl``, ``urllib``, ``http``, ``asyncio``), and an audit hook
cannot be removed once added. The hook keeps its state in a closure and reads
no module global, so rebinding names in this module does not disable it.

What it cannot see: native code that calls the C library directly (a C
extension, ``ctypes``) and child processes (which start without the hook). The
audit (``fr-pbd audit``) therefore also watches the daemon's real system calls
with ``strace``. Every fr-pbd process installs the guard except
``fr-pbd models fetch``, the one command that downloads.

The hook records what it saw, as counts per event and address family (never an
address or a payload), for the audit: :func:`record`.
"""

from __future__ import annotations

import socket as _socket
import sys
import threading
from typing import Any, Callable

from fr_pbd.errors import EgressError

__all__ = ["install", "installed", "record", "EgressError"]

# Set once by install(); reading them is for reporting only: the hook never looks here.
_record_fn: Callable[[], dict[str, Any]] | None = None
_installed = False
_install_lock = threading.Lock()

_ADDRESS_EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg", "socket.bind"})
_RESOLVER_EVENTS = frozenset({"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
                              "socket.getnameinfo"})


def _make_hook() -> tuple[Callable[[str, tuple], None], Callable[[], dict[str, Any]]]:
    """Build the hook and its reporter; everything they use is bound here, in the closure."""
    af_unix = int(_socket.AF_UNIX)
    lock = threading.Lock()
    seen: dict[str, dict[str, int]] = {}
    refused: dict[str, dict[str, int]] = {}
    error = EgressError
    address_events = _ADDRESS_EVENTS
    resolver_events = _RESOLVER_EVENTS
    family_names = {int(f): f.name for f in _socket.AddressFamily}

    def family_name(family: Any) -> str:
        try:
            return family_names.get(int(family), f"family {int(family)}")
        except (TypeError, ValueError):
            return "unknown"

    def note(table: dict[str, dict[str, int]], event: str, family: str) -> None:
        with lock:
            per = table.setdefault(event, {})
            per[family] = per.get(family, 0) + 1

    def sock_family(sock: Any) -> str:
        try:
            return family_name(sock.family)
        except Exception:  # noqa: BLE001 - a half-built socket: report, never crash here
            return "unknown"

    def hook(event: str, args: tuple) -> None:
        if not event.startswith("socket."):
            return
        if event == "socket.__new__":
            family = args[1] if len(args) > 1 else -1
            name = family_name(family)
            note(seen, event, name)
            if family != af_unix:
                note(refused, event, name)
                raise error(f"network access is disabled in this process: refused to create a socket of family "
                            f"{name} (fr-pbd only talks over local Unix sockets; see fr_pbd.egress)")
            return
        if event in address_events:
            address = args[1] if len(args) > 1 else None
            name = sock_family(args[0]) if args else "unknown"
            note(seen, event, name)
            if event == "socket.sendmsg" and address is None:
                return  # sendmsg on a connected socket: its peer was checked at connect
            if isinstance(address, (str, bytes, bytearray)):
                return  # a Unix-domain path (or abstract name): stays on this machine
            note(refused, event, name)
            verb = event.split(".", 1)[1]
            raise error(f"network access is disabled in this process: refused {verb} to a non-local "
                        f"{name} address (only Unix-domain sockets are allowed)")
        if event in resolver_events:
            if event == "socket.getaddrinfo" and args and args[0] is None:
                note(seen, event, "no host")
                return
            note(seen, event, "lookup")
            note(refused, event, "lookup")
            raise error("network access is disabled in this process: refused a host name lookup")

    def report() -> dict[str, Any]:
        with lock:
            return {
                "installed": True,
                "seen": {e: dict(v) for e, v in seen.items()},
                "refused": {e: dict(v) for e, v in refused.items()},
                "refused_total": sum(sum(v.values()) for v in refused.values()),
            }

    return hook, report


def install() -> None:
    """Install the guard in this process (idempotent). It cannot be removed afterwards."""
    global _record_fn, _installed
    with _install_lock:
        if _installed:
            return
        hook, report = _make_hook()
        sys.addaudithook(hook)
        _record_fn = report
        _installed = True


def installed() -> bool:
    """True once :func:`install` ran in this process."""
    return _installed


def record() -> dict[str, Any]:
    """What the guard saw: counts per socket event and address family, refusals; no addresses, no data."""
    if _record_fn is None:
        return {"installed": False, "seen": {}, "refused": {}, "refused_total": 0}
    return _record_fn()
