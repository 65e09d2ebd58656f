"""``fr-pbd bench``: per-stage and end-to-end latency on real frames, in a JSON boards can be compared by.

Why a fixed recipe: a figure from a Raspberry Pi means something only next to one from
another board measured the same way. The frames, the store, the stages and the JSON
schema are fixed here and documented in hardware/results/README.md.

Frames: the faces/ test photos (except obama.jpg, which is enrolled) and the first 20
distinct images of LFW pairsDevTest, each cropped to 4:3 around its largest face (the
middle if none), scaled to 640x480 and
JPEG-encoded (quality 90) in memory, as a camera's MJPEG stream delivers them.

Store: a real encrypted store in a temporary directory (device key file, fallback PIN
set): obama.jpg enrolled through the real enrolment path, plus 5 household members with
5 stand-in templates each (random unit vectors: a household-sized gallery of 26
templates, no other person's face needed). The directory is deleted afterwards.

Stages of one verification, timed inside the real ``Verifier.verify`` through its
stage hook (:mod:`fr_pbd.timing`; nothing is copied here):
``decode`` (JPEG bytes -> BGR), ``detect`` (YuNet: letterbox, inference, decoding, NMS),
``align`` (face choice, similarity transform, chip warp), ``quality`` (measures and
gate), ``liveness`` (both MiniFASNet models), ``embed`` (chip + mirror through the
embedder, template), ``liveness_embed`` (the wall time of those two: liveness starts in one of
:mod:`fr_pbd.runtime`'s lanes as soon as the face is chosen and runs beside ``align``,
``quality`` and ``embed``, so the stages overlap and do not add up), ``store_read`` (the pre-check of
claim and lockout: the store's cached claims after a check that the file is the version they were read from;
a full read, unwrap, decrypt and parse when it is not), ``match`` (protected gallery, best score per user,
threshold), ``decide`` (what of the lockout is on the answer's path: waiting for the attempt's count
before the comparison; on a success, starting the clear), ``count`` (the attempt counted under the
exclusive lock, one fsync'd write, by a thread started when the face passed the quality gate: it runs
beside the embedder, so only what outlasts the embedder is in ``decide``), ``clear`` (a success's
clear, written after the answer by another thread: not in ``end_to_end``; the next store operation waits
for it, here the lockout reset between frames). A frame that stops early (no usable face, attack)
has no sample for the later stages. ``end_to_end`` is the real ``Verifier.verify`` on
the JPEG bytes: frame -> yes/no, the same call that gave the stage times. The lockout
is reset between frames, outside the timings, so that impostor frames keep being looked at.

The models come from :func:`fr_pbd.pipeline.build_pipeline` for the board asked for,
as for ``fr-pbd verify`` and the daemon on that board.

Nothing biometric is written: no scores, no templates; only timings and counts.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from fr_pbd.errors import ConfigError, FrPbdError
from fr_pbd.machine import MACHINE_KEYS, machine_info

STAGES = ("decode", "detect", "align", "quality", "liveness", "embed", "liveness_embed", "store_read", "match",
          "decide", "count", "clear")
FRAME_SIZE = (640, 480)
JPEG_QUALITY = 90
LFW_FRAMES = 20
HOUSEHOLD_USERS = 5
TEMPLATES_PER_USER = 5
ENROLLED = "obama.jpg"
SCHEMA = 2  # 2: "board" (was "profile" in 1); both are read

if TYPE_CHECKING:  # numpy is imported where it is used: `fr-pbd --help` stays cheap
    import numpy as np


# ----------------------------------------------------------------------------------- frames
@dataclass
class Frame:
    label: str
    jpeg: bytes = field(repr=False)


def to_camera_frame(img: np.ndarray, size: tuple[int, int] = FRAME_SIZE,
                    centre: tuple[float, float] | None = None) -> np.ndarray:
    """Crop to the frame's aspect (around ``centre``, default the middle) and scale: a 640x480 camera frame."""
    import cv2

    h, w = img.shape[:2]
    tw, th = size
    cx, cy = centre if centre is not None else (w / 2, h / 2)
    if w * th > h * tw:  # too wide
        cw = h * tw // th
        x0 = int(min(max(cx - cw / 2, 0), w - cw))
        img = img[:, x0:x0 + cw]
    else:
        ch = w * th // tw
        y0 = int(min(max(cy - ch / 2, 0), h - ch))
        img = img[y0:y0 + ch]
    interp = cv2.INTER_AREA if img.shape[1] > tw else cv2.INTER_LINEAR
    return cv2.resize(img, size, interpolation=interp)


def build_frames(data_dir: Path, n_lfw: int = LFW_FRAMES) -> list[Frame]:
    """The fixed frame set (module docstring), as JPEG bytes."""
    import cv2

    from fr_pbd.capture.image import load_image

    faces = data_dir / "faces"
    lfw = data_dir / "lfw"
    if not faces.is_dir() or not (lfw / "pairsDevTest.txt").is_file():
        raise ConfigError(f"bench needs {faces} and {lfw}/pairsDevTest.txt (set --data or FR_PBD_DATA)")
    paths = [p for p in sorted(faces.iterdir()) if p.suffix in (".jpg", ".png") and p.name != ENROLLED]
    seen: dict[Path, None] = {}
    for line in (lfw / "pairsDevTest.txt").read_text().split("\n")[1:]:
        parts = line.split()
        ids = ([(parts[0], parts[1]), (parts[0], parts[2])] if len(parts) == 3
               else [(parts[0], parts[1]), (parts[2], parts[3])] if len(parts) == 4 else [])
        for name, num in ids:
            seen.setdefault(lfw / name / f"{name}_{int(num):04d}.jpg", None)
        if len(seen) >= n_lfw:
            break
    from fr_pbd.capture.detect import load_detector

    det = load_detector()
    frames = []
    for p in paths + list(seen)[:n_lfw]:
        img = load_image(p)
        faces = det.detect(img)  # keep the largest face in the crop, as a user faces the camera
        centre = None
        if faces:
            f = max(faces, key=lambda f: float(f.box[2] * f.box[3]))
            centre = (float(f.box[0] + f.box[2] / 2), float(f.box[1] + f.box[3] / 2))
        ok, buf = cv2.imencode(".jpg", to_camera_frame(img, centre=centre), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if ok:
            frames.append(Frame(p.name, buf.tobytes()))
    return frames


# ----------------------------------------------------------------------------------- statistics
def summary(samples_s: list[float]) -> dict[str, float]:
    """p50/p95/p99/mean in ms (linear interpolation between order statistics)."""
    import numpy as np

    if not samples_s:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "mean": float("nan"), "n": 0}
    a = np.asarray(samples_s) * 1e3
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3),
            "mean": round(float(a.mean()), 3), "n": int(a.size)}


class _Clock:
    """The stage hook: collects each stage's durations (names and seconds only)."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {s: [] for s in STAGES}

    def __call__(self, stage: str, seconds: float) -> None:
        self.samples.setdefault(stage, []).append(seconds)


# ----------------------------------------------------------------------------------- the run
def _make_store(home: Path, pipeline: Any, data_dir: Path, hook: Callable[[str, float], None],
                key_provider: str = "file") -> Any:
    """The temporary household store (module docstring): real enrolment plus stand-in members.

    ``key_provider="tpm2"``: the store is created sealed by the TPM ($FR_PBD_TPM / config), so
    ``store_read`` and ``decide`` include the TPM's unseal and counter commands.
    """
    import numpy as np

    from fr_pbd.template import Template
    from fr_pbd.verify import Consent, Verifier

    v = Verifier(home=home, extractor=pipeline.extractor,
                 liveness=pipeline.liveness if pipeline.liveness is not None else False, stage_hook=hook)
    if key_provider == "tpm2":
        from fr_pbd.store import Store
        from fr_pbd.store.tpm import TpmKeyProvider

        Store.create(home, model_id=v.model_of_record().model_id, dim=v.model_of_record().dim,
                     key_provider=TpmKeyProvider())
    pin = "bench-0000-" + os.urandom(4).hex()
    v.set_fallback(pin)
    consent = Consent(text_version="bench", device_id="bench")
    v.enroll("obama", [data_dir / "faces" / ENROLLED], consent, fallback=pin)
    rng = np.random.default_rng(7)
    with v.store().transaction() as tx:
        for u in range(HOUSEHOLD_USERS):
            tx.record_consent(f"member{u}", text_version="bench", device_id="bench")
            vecs = rng.standard_normal((TEMPLATES_PER_USER, v.model_of_record().dim)).astype(np.float32)
            tx.add_templates(f"member{u}", [Template(x / np.linalg.norm(x), v.extractor.model_id) for x in vecs])
    return v


def _reset_lockout(v: Any) -> None:
    with v.store().transaction() as tx:
        if tx.lockout.failures:
            tx.reset_lockout()


def run_bench(board: str | None = None, data_dir: Path | None = None, rounds: int = 10,
              liveness: bool = True, progress: Callable[[str], None] | None = None,
              key_provider: str = "file") -> dict[str, Any]:
    """Measure; return the result document (schema in hardware/results/README.md)."""
    import onnxruntime as ort

    from fr_pbd._version import __version__

    say = progress or (lambda s: None)
    where = data_dir or os.environ.get("FR_PBD_DATA")
    if not where:
        raise ConfigError("bench needs the test data (faces/ and lfw/): give --data DIR or set FR_PBD_DATA")
    data = Path(where)
    load_before = os.getloadavg()
    from fr_pbd.pipeline import build_pipeline, run_settings

    settings = run_settings(board)
    t0 = time.perf_counter()
    pipeline = build_pipeline(settings, liveness=liveness)
    load_ms = (time.perf_counter() - t0) * 1e3
    ext, pad = pipeline.extractor, pipeline.liveness
    clock = _Clock()
    recording = False

    def hook(stage: str, seconds: float) -> None:
        if recording:
            clock(stage, seconds)

    frames = build_frames(data)
    home = Path(tempfile.mkdtemp(prefix="fr-pbd-bench."))
    try:
        os.chmod(home, 0o700)
        v = _make_store(home, pipeline, data, hook, key_provider)
        t0 = time.perf_counter()
        v.verify(frames[0].jpeg)
        first_ms = (time.perf_counter() - t0) * 1e3
        _reset_lockout(v)
        say(f"{len(frames)} frames x {rounds} rounds, board {settings.board}")
        for f in frames:  # warm-up round: every input size and code path once
            v.verify(f.jpeg)
            _reset_lockout(v)
        e2e: list[float] = []
        recording = True
        decisions = {"yes": 0, "no": 0}
        reasons: dict[str, int] = {}
        inputs: dict[str, int] = {}
        t_all = 0.0
        for r in range(rounds):
            for f in frames:
                t0 = time.perf_counter()
                d = v.verify(f.jpeg)
                dt = time.perf_counter() - t0
                e2e.append(dt)
                t_all += dt
                decisions["yes" if d.accepted else "no"] += 1
                reasons[d.reason] = reasons.get(d.reason, 0) + 1
                size = getattr(ext.detector, "last_input_size", None)
                if size:
                    inputs[f"{size[0]}x{size[1]}"] = inputs.get(f"{size[0]}x{size[1]}", 0) + 1
                _reset_lockout(v)
            say(f"round {r + 1}/{rounds}: e2e p50 {summary(e2e)['p50']:.1f} ms")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    load_after = os.getloadavg()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_bytes = rss if sys.platform == "darwin" else rss * 1024
    sessions = {"detector": ext.detector.detectors[(640, 640)]._session.get_providers(),
                "embedder": ext.embedder._session.get_providers()}
    return {
        "schema": SCHEMA,
        "tool": f"fr-pbd {__version__} bench",
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_info(),
        "load": {"loadavg_before": [round(x, 2) for x in load_before],
                 "loadavg_after": [round(x, 2) for x in load_after],
                 "note": "1/5/15-minute load averages; above the core count, other processes shared the CPU"},
        "board": {"name": settings.board, "threads": settings.threads or os.cpu_count(),
                  "providers": list(settings.providers), "providers_used": sessions,
                  "detector_input": list(settings.detector_input), "detector_graphs": [
                      f"{w}x{h}" for w, h in ext.detector.input_sizes],
                  "missing_detector_variants": list(ext.detector.missing_variants),
                  "embedder": settings.embedder + ("-int8" if settings.embedder_variant == "int8" else ""),
                  "precision": settings.embedder_variant,
                  "liveness": pad is not None, "notes": list(settings.notes),
                  "onnxruntime": ort.__version__},
        "workload": {"frames": len(frames), "rounds": rounds, "frame_size": list(FRAME_SIZE),
                     "frame_format": f"JPEG q{JPEG_QUALITY}", "enrolled": 1,
                     "gallery_users": 1 + HOUSEHOLD_USERS,
                     "gallery_templates": 1 + HOUSEHOLD_USERS * TEMPLATES_PER_USER,
                     "store_key": key_provider,
                     "decisions": decisions, "reasons": reasons, "detector_inputs_used": inputs},
        "cold_start_ms": {"models_load": round(load_ms, 1), "first_decision": round(first_ms, 1)},
        "end_to_end_ms": summary(e2e),
        "stages": {s: summary(clock.samples[s]) for s in STAGES},
        "throughput_fps": round(len(e2e) / t_all, 2) if t_all else None,
        "peak_rss_bytes": int(rss_bytes),
    }


# ----------------------------------------------------------------------------------- schema
_PCT = ("p50", "p95", "p99")
REQUIRED = {
    "schema": int, "tool": str, "created": str, "machine": dict, "load": dict,
    "workload": dict, "cold_start_ms": dict, "end_to_end_ms": dict, "stages": dict,
    "throughput_fps": (int, float), "peak_rss_bytes": int,
}
# Keys that schema 1 files (before the machine description gained cpu_flags) already had.
_MACHINE_KEYS_V1 = tuple(k for k in MACHINE_KEYS if k != "cpu_flags")


def validate_result(doc: Any) -> None:
    """Check a result file against hardware/results/README.md; ConfigError naming the first problem."""
    if not isinstance(doc, dict):
        raise ConfigError("bench result: not a JSON object")
    for key, typ in REQUIRED.items():
        if not isinstance(doc.get(key), typ):
            raise ConfigError(f"bench result: {key} is missing or has the wrong type")
    if doc["schema"] not in (1, SCHEMA):
        raise ConfigError(f"bench result: schema {doc['schema']} is not 1 or {SCHEMA}")
    where = "board" if doc["schema"] >= 2 else "profile"
    if not isinstance(doc.get(where), dict):
        raise ConfigError(f"bench result: {where} is missing or has the wrong type")
    for key in (MACHINE_KEYS if doc["schema"] >= 2 else _MACHINE_KEYS_V1):
        if key not in doc["machine"]:
            raise ConfigError(f"bench result: machine.{key} is missing")
    if not isinstance(doc["load"].get("loadavg_before"), list):
        raise ConfigError("bench result: load.loadavg_before is missing")
    blocks = {"end_to_end_ms": doc["end_to_end_ms"], **{f"stages.{k}": v for k, v in doc["stages"].items()}}
    for stage in ("decode", "detect", "align", "quality", "embed", "match", "decide"):
        if stage not in doc["stages"]:
            raise ConfigError(f"bench result: stages.{stage} is missing")
    for where, block in blocks.items():
        if not isinstance(block, dict) or not all(isinstance(block.get(p), (int, float)) for p in _PCT):
            raise ConfigError(f"bench result: {where} needs p50, p95 and p99 in ms")
    for key in ("models_load", "first_decision"):
        if not isinstance(doc["cold_start_ms"].get(key), (int, float)):
            raise ConfigError(f"bench result: cold_start_ms.{key} is missing")


# ----------------------------------------------------------------------------------- session options
SWEEP = {
    "default": {},
    "threads=1": {"threads": 1},
    "graph_optimization=basic": {"graph_optimization": "basic"},
    "graph_optimization=disable": {"graph_optimization": "disable"},
    "cpu_mem_arena=off": {"cpu_mem_arena": False},
    "mem_pattern=off": {"mem_pattern": False},
    "execution_mode=parallel": {"parallel": True},
    "spinning=on": {"spinning": True},  # faster alone, slower in the pipeline: see fr_pbd.runtime
}


def sweep_session_options(runs: int = 40, models_: tuple[str, ...] | None = None) -> dict[str, dict[str, float]]:
    """Median ms per run of each model under each option set (one change from the default at a time).

    Inputs are allocated once per model and reused, as the wrappers do.
    """
    import numpy as np

    import dataclasses

    from fr_pbd import models
    from fr_pbd.runtime import DEFAULT_TUNING, create_session

    shapes = {
        "yunet-2023mar-640x480": (1, 3, 480, 640),
        "yunet-2023mar": (1, 3, 640, 640),
        "dlib-resnet-v1": (2, 3, 150, 150),
        "dlib-resnet-v1-int8": (2, 3, 150, 150),
        "minifasnet-v2": (1, 3, 80, 80),
    }
    rng = np.random.default_rng(0)
    out: dict[str, dict[str, float]] = {}
    for name in models_ or tuple(shapes):
        try:
            vm = models.resolve(name)
        except FrPbdError:
            continue
        x = (rng.random(shapes[name], dtype=np.float32) * 255).astype(np.float32)
        out[name] = {}
        for label, change in SWEEP.items():
            tuning = dataclasses.replace(DEFAULT_TUNING, **change)
            sess = create_session(vm, tuning=tuning)
            feed = {sess.get_inputs()[0].name: x}
            for _ in range(5):
                sess.run(None, feed)
            t = []
            for _ in range(runs):
                t0 = time.perf_counter()
                sess.run(None, feed)
                t.append(time.perf_counter() - t0)
            out[name][label] = round(float(np.median(t)) * 1e3, 3)
    return out
