"""A small Howdy-like product, for the audit's black-box tests: how not to build face unlock.

Like Howdy it keeps plaintext templates as JSON (``models/<user>.dat``, a list of
128-number lists) in a world-readable file, logs every comparison with its
distance, and here, as a daemon, it even answers with the distance. It does no
face recognition: its "template" of a frame is derived from the frame's bytes,
and the enrolled frame is at distance 0.35, every other one at 0.6-0.9.

    python howdylike.py --socket run/howdy.sock --frames frames --enroll IMG --data data --log log/howdy.log
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time

import numpy as np


def template_of(frame: bytes) -> list[float]:
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(frame).digest()[:8], "little"))
    v = rng.normal(size=128) * 0.09
    return [round(float(x), 8) for x in v]


def main() -> int:
    ap = argparse.ArgumentParser()
    for opt in ("--socket", "--frames", "--enroll", "--data", "--log"):
        ap.add_argument(opt, required=True)
    ap.add_argument("--lifetime", type=float, default=300)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    timer = threading.Timer(a.lifetime, lambda: os._exit(0))
    timer.daemon = True
    timer.start()
    os.umask(0o022)  # everything readable by everyone, as Howdy's /usr/lib/security/howdy/models
    os.makedirs(os.path.join(a.data, "models"), exist_ok=True)
    os.makedirs(os.path.dirname(a.log) or ".", exist_ok=True)
    os.makedirs(os.path.dirname(a.socket) or ".", exist_ok=True)
    os.makedirs(a.frames, exist_ok=True)  # where its camera frame is put: its own, as every directory here
    with open(os.path.join(a.data, "config.ini"), "w") as f:
        f.write("[core]\ncertainty = 3.5\ndetection_notice = true\n")
    enrolled = open(a.enroll, "rb").read()
    model = [{"time": int(time.time()), "label": "Initial model", "id": 0, "data": [template_of(enrolled)]}]
    with open(os.path.join(a.data, "models", "obama.dat"), "w") as f:
        json.dump(model, f)
    log = open(a.log, "a", buffering=1)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(a.socket)
    os.chmod(a.socket, 0o666)
    srv.listen(8)
    while True:
        conn, _ = srv.accept()
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
        if data == b"VERIFY\n":
            try:
                frame = open(os.path.join(a.frames, "current.jpg"), "rb").read()
            except OSError:
                frame = b""
            dist = 0.35 if frame == enrolled else 0.6 + 0.3 * hashlib.sha256(frame).digest()[0] / 255
            ok = dist < 0.5
            log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} howdy: obama distance {dist:.4f} -> "
                      f"{'yes' if ok else 'no'}\n")
            reply = f"{'YES' if ok else 'NO'} {dist:.4f}\n".encode()
        else:
            reply = b"NO\n"
        try:
            conn.sendall(reply)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(4096):
                pass
        except OSError:
            pass
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
