"""A product of two processes on one listening socket, for the audit's black-box tests.

The process that binds and listens (the decoy) answers the first connection and then
only waits; a second process, detached from it (double fork and ``setsid``: not its
descendant), inherited the same listening socket and serves every later connection. The
audit once took the decoy (the first answer's ``SO_PEERCRED``) for the whole product and
traced its quiet tree while the other process answered.

* ``--mode handoff``: the serving process answers ``YES\\n`` or ``NO\\n`` and nothing else
  leaves it (an odd but honest design);
* ``--mode leak``: the serving process opens a TCP connection to ``127.0.0.1:--port`` at start
  and writes one score line there per verification;
* ``--serve in-tree``: the serving process is a plain child of the decoy (no double fork, no
  ``setsid``), inside the tree the audit always traced: the control (``--serve detached``, the
  default, is the product);
* ``--serve detached-guarded``: detached, and a child of the serving process ptrace-seizes it, so
  that no other tracer (strace) can attach to it.

The decoy hands over by closing a pipe (``close`` moves no data). The serving process exits
when the decoy is gone, and both exit after ``--lifetime`` seconds. It does no face
recognition: the enrolled frame is the one whose bytes are ``--enroll``.

    python decoy.py --socket run/decoy.sock --frames frames --enroll IMG --data data --mode leak --port N
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import signal
import socket
import sys
import threading
import time


def read_request(conn: socket.socket) -> bytes:
    conn.settimeout(2)
    data = b""
    try:
        while b"\n" not in data and len(data) < 8192:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data


def answer(conn: socket.socket, reply: bytes) -> None:
    try:
        conn.sendall(reply)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(4096):
            pass
    except OSError:
        pass
    conn.close()


def hold_tracer_slot() -> None:
    """A child that ptrace-seizes its parent: no other tracer (strace) can attach to it."""
    parent = os.getpid()
    if os.fork():
        time.sleep(0.3)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    PTRACE_SEIZE, PTRACE_CONT = 0x4206, 7
    if libc.ptrace(PTRACE_SEIZE, parent, None, None) != 0:
        os._exit(1)
    while True:  # pass every signal on, so that the serving process runs as if untraced
        try:
            _, status = os.waitpid(parent, 0x40000000)  # __WALL
        except ChildProcessError:
            os._exit(0)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            os._exit(0)
        sig = os.WSTOPSIG(status) if os.WIFSTOPPED(status) else 0
        libc.ptrace(PTRACE_CONT, parent, None, ctypes.c_void_p(sig if sig != signal.SIGTRAP else 0))


def serve(srv: socket.socket, handed: int, decoy: int, a: argparse.Namespace) -> None:
    """The serving process: waits for the decoy's hand-over, then answers every connection."""
    if a.serve == "detached-guarded":
        hold_tracer_slot()
    peer = socket.create_connection(("127.0.0.1", a.port), timeout=5) if a.mode == "leak" else None

    def watch() -> None:  # never outlive the decoy (the audit stops the decoy only)
        while True:
            try:
                os.kill(decoy, 0)
            except ProcessLookupError:
                os._exit(0)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()
    while os.read(handed, 1):  # EOF: the decoy closed its end after the first contact
        pass
    os.close(handed)
    enrolled = open(a.enroll, "rb").read()
    while True:
        conn, _ = srv.accept()
        if read_request(conn) != b"VERIFY\n":
            answer(conn, b"NO\n")
            continue
        try:
            frame = open(os.path.join(a.frames, "current.jpg"), "rb").read()
        except OSError:
            frame = b""
        dist = 0.35 if frame == enrolled else 0.6 + 0.3 * hashlib.sha256(frame).digest()[0] / 255
        if peer is not None:
            try:
                peer.sendall(f"score {dist:.4f}\n".encode())
            except OSError:
                pass
        answer(conn, b"YES\n" if dist < 0.5 else b"NO\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    for opt in ("--socket", "--frames", "--enroll", "--data"):
        ap.add_argument(opt, required=True)
    ap.add_argument("--mode", choices=("handoff", "leak"), required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--serve", choices=("detached", "detached-guarded", "in-tree"),
                    default="detached")
    ap.add_argument("--lifetime", type=float, default=300)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    timer = threading.Timer(a.lifetime, lambda: os._exit(0))
    timer.daemon = True
    timer.start()
    os.makedirs(a.data, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(a.data, "record"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, os.urandom(32))  # opaque: what it keeps is nobody's business but its own
    os.close(fd)
    os.makedirs(os.path.dirname(a.socket) or ".", mode=0o700, exist_ok=True)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(a.socket)
    os.chmod(a.socket, 0o600)
    srv.listen(16)
    decoy = os.getpid()
    handed, hand_over = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(hand_over)
        if a.serve != "in-tree":
            os.setsid()
            if os.fork():
                os._exit(0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            serve(srv, handed, decoy, a)
        finally:
            os._exit(0)
    os.close(handed)
    if a.serve != "in-tree":
        os.waitpid(child, 0)  # the intermediate process: the serving one is now nobody's child here
    conn, _ = srv.accept()  # the first contact, and only that one
    answer(conn, b"NO\n")
    os.close(hand_over)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
