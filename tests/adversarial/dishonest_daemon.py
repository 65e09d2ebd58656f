"""A daemon that speaks fr-pbd's protocol (``VERIFY\\n`` -> one byte Y or N) and cheats with one trick (or more).

For the audit's adversarial corpus only (tests/adversarial/test_corpus.py). It does
no face recognition: its "score" is 0.97 for the frame whose bytes are the
``--genuine`` image, 0 for a frame that is not a JPEG (the audit's no-face frame
is a PNG), and a value in 0.2-0.6 derived from the bytes for any other frame;
it says Y above 0.9. Every trick sends that score (or a template derived from the
frame) somewhere it must not go. Listeners are the test's, on loopback only; the
daemon exits by itself after ``--lifetime`` seconds.

    python dishonest_daemon.py --socket S --frames DIR --genuine IMG --trick NAME [--port P] [--out PATH]
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import mmap
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

TRICKS = ("honest", "tcp-write", "tcp-send", "udp-sendto", "udp-fresh", "child-net", "score-file", "score-home",
          "timing", "close-delay", "extra-byte", "local-relay", "pipe-relay", "anti-trace", "template-out",
          "binary-file", "binary-log", "signal", "tracer-aware",
          # the blind corners of an fr-pbd home (issue 22 item 6)
          "no-seccomp", "per-peer", "vendor-records", "shm", "memfd", "keyed-close")
#: tricks the kernel filter would stop (or that are about its absence): the daemon runs without it. Every other
#: trick, and the honest control, installs fr-pbd's own filter as fr-pbd's daemon does (Seccomp: 2, NoNewPrivs: 1).
UNFILTERED = {"udp-fresh", "child-net", "tracer-aware", "anti-trace", "no-seccomp"}
#: the key of the vendor's own encryption (AES-GCM), which the audit does not have
VENDOR_KEY = hashlib.sha256(b"vendor key").digest()


def vendor_encrypt(data: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    return nonce + AESGCM(VENDOR_KEY).encrypt(nonce, data, None)


def keyed_delay(score: float) -> float:
    """((score bucket - keyed hash of the second) mod 32) ms: uniform to anyone without the key, and the same
    spread for every kind of frame; a client with the key reads 5 bits of the score from each close."""
    second = int(time.time())
    h = hashlib.sha256(VENDOR_KEY + second.to_bytes(8, "little")).digest()[0]
    return ((int(score * 31) - h) % 32) / 1000


def score_of(frame: bytes, genuine: bytes) -> float:
    if frame == genuine:
        return 0.97
    if not frame.startswith(b"\xff\xd8"):
        return 0.0
    return 0.2 + 0.4 * hashlib.sha256(frame).digest()[0] / 255


def template_of(frame: bytes) -> bytes:
    """128 float32 values that look like a face template, derived from the frame."""
    seed = hashlib.sha256(frame).digest()
    vals = []
    for i in range(128):
        h = hashlib.sha256(seed + bytes([i])).digest()
        vals.append(((h[0] - 127.5) + (h[1] - 127.5)) / 2048.0)
    return struct.pack("<128f", *vals)


def read_request(conn: socket.socket) -> bytes:
    conn.settimeout(2)
    data = b""
    try:
        while b"\n" not in data and len(data) < 300:
            chunk = conn.recv(512)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data


def answer(conn: socket.socket, payload: bytes, close_after: float = 0.0) -> None:
    try:
        conn.sendall(payload)
        time.sleep(close_after)
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(1)
        while conn.recv(4096):
            pass
    except OSError:
        pass
    conn.close()


def hold_tracer_slot() -> None:
    """A child that ptrace-seizes its parent: no other tracer (strace) can attach to the daemon."""
    parent = os.getpid()
    if os.fork():
        time.sleep(0.3)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    PTRACE_SEIZE, PTRACE_CONT = 0x4206, 7
    if libc.ptrace(PTRACE_SEIZE, parent, None, None) != 0:
        os._exit(1)
    while True:  # pass every signal on, so that the daemon runs as if untraced
        try:
            _, status = os.waitpid(parent, 0x40000000)  # __WALL
        except ChildProcessError:
            os._exit(0)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            os._exit(0)
        sig = os.WSTOPSIG(status) if os.WIFSTOPPED(status) else 0
        libc.ptrace(PTRACE_CONT, parent, None, ctypes.c_void_p(sig if sig not in (signal.SIGTRAP,) else 0))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--frames", required=True)
    ap.add_argument("--genuine", required=True)
    ap.add_argument("--trick", required=True, help="one of TRICKS, or several joined by '+'")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--out", default=None, help="file or Unix socket the trick writes to")
    ap.add_argument("--lifetime", type=float, default=240)
    ap.add_argument("--home", default=None, help="the fr-pbd home it serves (vendor-records writes there)")
    a = ap.parse_args()
    genuine = open(a.genuine, "rb").read()
    tricks = set(a.trick.split("+"))
    if not tricks <= set(TRICKS):
        ap.error(f"unknown trick(s): {', '.join(sorted(tricks - set(TRICKS)))}")
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    timer = threading.Timer(a.lifetime, lambda: os._exit(0))
    timer.daemon = True  # a crash of the main loop ends the process
    timer.start()

    tcp = udp = relay = pipe = None
    if "tcp-write" in tricks or "tcp-send" in tricks:
        tcp = socket.create_connection(("127.0.0.1", a.port), timeout=5)  # opened at start-up
    if "udp-sendto" in tricks:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if "local-relay" in tricks:
        relay = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        relay.connect(a.out)
    if "pipe-relay" in tricks:
        pipe = subprocess.Popen([sys.executable, "-c", "import sys\nfor _ in sys.stdin.buffer: pass"],
                                stdin=subprocess.PIPE)
    if "anti-trace" in tricks:
        hold_tracer_slot()
    shared = None
    if "shm" in tricks:  # a mapping another process can read: writes there need no system call
        fd = os.open(f"/dev/shm/fr-pbd-corpus-{os.getpid()}", os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(fd, 4096)
        shared = mmap.mmap(fd, 4096, mmap.MAP_SHARED)
    if "memfd" in tricks:
        fd = os.memfd_create("vendor-state")
        os.ftruncate(fd, 4096)
        shared = mmap.mmap(fd, 4096, mmap.MAP_SHARED)
    if not tricks & UNFILTERED:
        from fr_pbd import egress

        if not egress.install_kernel_filter():
            print("the kernel filter did not load", file=sys.stderr)
            return 3

    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    srv.bind(a.socket)
    os.umask(old)
    os.chmod(a.socket, 0o660)
    srv.listen(16)
    while True:
        conn, _ = srv.accept()
        data = read_request(conn)
        if not re.fullmatch(rb"VERIFY( [!-~]{1,128})?\n", data):  # fr-pbd's two requests (any account)
            answer(conn, b"N")
            continue
        try:
            frame = open(os.path.join(a.frames, "current.jpg"), "rb").read()
        except OSError:
            answer(conn, b"N")
            continue
        score = score_of(frame, genuine)
        msg = f"score {score:.4f}\n".encode()
        yes = score > 0.9
        if "tcp-write" in tricks:
            os.write(tcp.fileno(), msg)
        if "tcp-send" in tricks:
            tcp.send(msg)
        if "udp-sendto" in tricks:
            udp.sendto(msg, ("127.0.0.1", a.port))
        if "udp-fresh" in tricks:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.sendto(msg, ("127.0.0.1", a.port))
        if "child-net" in tricks:
            if os.fork() == 0:
                try:
                    with socket.create_connection(("127.0.0.1", a.port), timeout=2) as c:
                        c.sendall(msg)
                finally:
                    os._exit(0)
        if "score-file" in tricks:
            with open(a.out, "a") as f:
                f.write(f"2026-11-29 verify: conf={score:.4f}\n".replace(".", ","))
        if "score-home" in tricks:
            with open(a.out, "a") as f:
                f.write(f"match {round(score * 100)}%\n")
        if "timing" in tricks:
            time.sleep(0.002 + 0.05 * score)
        if "local-relay" in tricks:
            relay.sendall(msg)
        if "pipe-relay" in tricks:
            pipe.stdin.write(msg)
            pipe.stdin.flush()
        if "template-out" in tricks:
            with open(a.out, "ab") as f:
                f.write(template_of(frame))
        if "binary-file" in tricks or "binary-log" in tricks:
            with open(a.out, "ab") as f:
                f.write(struct.pack("<f", score))
        if "signal" in tricks:
            os.kill(a.port, signal.SIGCONT)  # the test's sleeping process: harmless, but a channel
        if "tracer-aware" in tricks:  # leaks only while nobody traces it
            with open("/proc/self/status") as f:
                traced = any(ln.startswith("TracerPid:") and ln.split()[1] != "0" for ln in f)
            if not traced:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.sendto(msg, ("127.0.0.1", a.port))
        if "vendor-records" in tricks:  # a record per verification, encrypted with the vendor's key, mode 0644
            path = os.path.join(a.home, ".vendor-cache")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.fchmod(fd, 0o644)
            os.write(fd, vendor_encrypt(struct.pack("<f", score)))
            os.close(fd)
        if shared is not None:
            rec = vendor_encrypt(struct.pack("<f", score))
            shared[:len(rec)] = rec
        reply = (b"Y" if yes else b"N") + (bytes([int(score * 255)]) if "extra-byte" in tricks else b"")
        if "per-peer" in tricks:  # root (a PAM login, the auditor) gets the declared answer; anyone else more
            _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid != 0:
                reply += f" {score + 0.013593:.6f}".encode()
        delay = 0.002 + 0.05 * score if "close-delay" in tricks else keyed_delay(score) if "keyed-close" in tricks \
            else 0.0
        answer(conn, reply, delay)


if __name__ == "__main__":
    sys.exit(main())
