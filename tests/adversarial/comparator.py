"""A per-login comparator with a real face login's habits, for the audit's ``[invoke]`` shape.

PAM starts it once per login; its exit status is the answer (0 yes, 1 no). Like real ones it
keeps its models as plaintext JSON (128 numbers per user, mode 0644), tries to start a GUI
helper that is not installed (the ``execve`` fails: nothing runs) and prints a certainty line
on its standard output; with ``--snapshots DIR`` it keeps each attempt's frame there with the
certainty drawn into the pixels (0644). It does no face recognition: the enrolled frame is the one whose bytes
are ``--enroll``.

    python comparator.py --frames frames --enroll IMG --data data
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    for opt in ("--frames", "--enroll", "--data"):
        ap.add_argument(opt, required=True)
    ap.add_argument("--gui-helper", default="/usr/lib/face-login/gui-helper")  # not installed: execve fails
    ap.add_argument("--exit-score", action="store_true", help="exit with the certainty as status (a side channel)")
    ap.add_argument("--snapshots", default=None, help="keep each attempt's frame here, the certainty drawn in (0644)")
    a = ap.parse_args()
    os.makedirs(a.data, exist_ok=True)
    model = os.path.join(a.data, "obama.dat")
    if not os.path.exists(model):
        rng = random.Random(7)
        with open(model, "w") as f:
            json.dump([{"time": 0, "label": "Initial model", "data": [[rng.gauss(0, 0.09) for _ in range(128)]]}], f)
        os.chmod(model, 0o644)
    try:  # a GUI helper real comparators start to show the snapshot; not installed here (execve fails)
        subprocess.run([a.gui_helper], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=10, check=False)
    except OSError:
        pass
    try:
        frame = open(os.path.join(a.frames, "current.jpg"), "rb").read()
    except OSError:
        frame = b""
    ok = frame == open(a.enroll, "rb").read()
    certainty = 0.31 if ok else 0.62 + (len(frame) % 7) / 100
    print(f"Winning model: 0 (certainty {certainty:.2f})", flush=True)
    if a.snapshots and frame:  # real comparators keep a snapshot of the attempt, the match certainty in its pixels
        import cv2
        import numpy as np

        img = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR)
        if img is not None:
            cv2.putText(img, f"certainty {certainty:.2f}", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 0), 2)
            os.makedirs(a.snapshots, exist_ok=True)
            path = os.path.join(a.snapshots, f"{len(os.listdir(a.snapshots)):04d}.jpg")
            cv2.imwrite(path, img)
            os.chmod(path, 0o644)
    if a.exit_score:  # no is any status but 0: the status itself carries the certainty
        return 0 if ok else int(certainty * 100)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
