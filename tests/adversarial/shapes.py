"""A small honest product with the habits of real ones, for the audit's black-box tests.

It keeps nothing but an opaque (random) file per user in its data directory, answers
``YES\\n`` or ``NO\\n`` and nothing else, opens no socket but its own and starts nothing. Each
option is a habit of real face logins that the audit once judged wrongly:

* ``--socket-mode 0700``: a socket only its owner may use (the owner's execute bit is no
  access for anyone else);
* ``--slow-no S``: yes at once, no after a timeout of S seconds (the answer already tells
  yes from no; only the states that got the same answer may be compared);
* ``--read-exact``: reads exactly the request's length, answers and closes: request bytes
  it did not read make the kernel reset the connection after the complete answer;
* ``--bind-after S``: a socket file left by an earlier run is there when it starts; it
  waits S seconds, removes it and binds (the audit must not connect to the stale file);
* ``--late-dir DIR``: a declared directory it makes only at its first verification;
* ``--helper PATH``: starts PATH at every verification, as real ones start a GUI helper (which
  may not be installed: the ``execve`` fails and nothing runs).

And one habit that is a finding: ``--keep IMG`` (repeatable) keeps a copy of IMG in its data
directory (``snapshots/``, mode 0600), the way real face logins keep a snapshot of an attempt;
``--no-record`` leaves out the opaque record, so that the snapshots are all it keeps.

It does no face recognition: the enrolled frame is the one whose bytes are ``--enroll``; with
``--recognise`` it recognises faces with fr-pbd's own pipeline and threshold but without
presentation-attack detection (``liveness=False``), like the many face logins that have none:
a replay of the enrolled person on a screen is accepted.

    python shapes.py --socket run/s.sock --frames frames --enroll IMG --data data [options]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time

REQUEST = b"VERIFY\n"


def read_request(conn: socket.socket, exact: bool) -> bytes:
    conn.settimeout(2)
    data = b""
    try:
        if exact:
            while len(data) < len(REQUEST):
                chunk = conn.recv(len(REQUEST) - len(data))
                if not chunk:
                    break
                data += chunk
            return data
        while b"\n" not in data and len(data) < 8192:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data


def main() -> int:
    ap = argparse.ArgumentParser()
    for opt in ("--socket", "--frames", "--enroll", "--data"):
        ap.add_argument(opt, required=True)
    ap.add_argument("--socket-mode", default="0660")
    ap.add_argument("--slow-no", type=float, default=0.0)
    ap.add_argument("--read-exact", action="store_true")
    ap.add_argument("--bind-after", type=float, default=0.0)
    ap.add_argument("--late-dir", default=None)
    ap.add_argument("--late-dir-mode", default="0700")
    ap.add_argument("--lifetime", type=float, default=300)
    ap.add_argument("--keep", action="append", default=[])
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--recognise", action="store_true")
    ap.add_argument("--helper", default=None, help="a program started at every verification (a GUI helper)")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    timer = threading.Timer(a.lifetime, lambda: os._exit(0))
    timer.daemon = True
    timer.start()
    os.umask(0o077)
    os.makedirs(a.data, exist_ok=True)
    if not a.no_record:
        with open(os.path.join(a.data, "obama.bin"), "wb") as f:
            f.write(os.urandom(4096))  # stands in for a record the product encrypted
    for i, img in enumerate(a.keep):
        os.makedirs(os.path.join(a.data, "snapshots"), exist_ok=True)
        with open(img, "rb") as src, open(os.path.join(a.data, "snapshots", f"attempt-{i}.jpg"), "wb") as f:
            f.write(src.read())
    enrolled = open(a.enroll, "rb").read()
    same = None
    if a.recognise:  # a real matcher, no presentation-attack detection
        from fr_pbd import models
        from fr_pbd.errors import FrPbdError
        from fr_pbd.pipeline import build_pipeline

        ext = build_pipeline(liveness=False).extractor
        reference = ext.template(a.enroll, "enrol").vector
        threshold = models.threshold(ext.model_id)

        def same(frame_path: str) -> bool:
            try:
                return float(ext.template(frame_path, "verify").vector @ reference) >= threshold
            except FrPbdError:
                return False
    if os.path.exists(a.socket):
        time.sleep(a.bind_after)
        os.unlink(a.socket)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(a.socket)
    os.chmod(a.socket, int(a.socket_mode, 8))
    srv.listen(8)
    while True:
        conn, _ = srv.accept()
        data = read_request(conn, a.read_exact)
        if data == REQUEST:
            if a.late_dir:
                if not os.path.isdir(a.late_dir):
                    os.mkdir(a.late_dir)
                    os.chmod(a.late_dir, int(a.late_dir_mode, 8))
            try:
                frame = open(os.path.join(a.frames, "current.jpg"), "rb").read()
            except OSError:
                frame = b""
            ok = same(os.path.join(a.frames, "current.jpg")) if same is not None else frame == enrolled
            if a.helper:  # real face logins start a helper to show the attempt; it may not be installed
                import subprocess

                try:
                    subprocess.run([a.helper], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=10, check=False)
                except OSError:
                    pass
            if not ok:
                time.sleep(a.slow_no)
            reply = b"YES\n" if ok else b"NO\n"
        else:
            reply = b"NO\n"
        try:
            conn.sendall(reply)
            if not a.read_exact:
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(1)
                while conn.recv(4096):
                    pass
        except OSError:
            pass
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
