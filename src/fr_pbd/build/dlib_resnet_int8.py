"""int8 variant of the dlib face descriptor network (onnxruntime static QDQ quantisation).

Why: on CPUs with 8-bit dot-product instructions (x86 VNNI, ARMv8.2 SDOT/UDOT) the
embedder is the largest stage of a verification, and int8 runs it several times
faster. It is kept only where it is both faster and as accurate (within 0.2 points of
fp32 on LFW pairsDevTest): see hardware/results/ and the board profiles.

Recipe (what was compared, in tests/test_int8.py and the closing note of issue 7):
static QDQ, per-channel int8 weights, uint8 activations, MinMax ranges calibrated
on LFW View-1 *training* images (pairsDevTrain.txt, the first 200 distinct images:
their fr-pbd chips and mirror images, 400 chips; none of them is in pairsDevTest).
Dynamic quantisation (weights only) was measured too and lost: see ``COMPARED``.

Determinism: calibration runs convolutions in float32, whose last bits differ between
CPUs, so the ranges are computed once (:func:`calibrate`, needs the LFW data) and
committed as ``dlib_resnet_int8_ranges.json`` (87 min/max pairs of activations,
aggregated over 400 chips: nothing about any one face). The build (:func:`build_dlib_int8`)
reads only the verified fp32 file and that table, so it needs no data and no network
and gives the same bytes everywhere -- for a given onnxruntime quantiser version,
which the manifest entry names; another version may write different bytes, and the
build then fails with both hashes instead of installing an unpinned file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fr_pbd.errors import ModelBuildError

SOURCE_MODEL = "dlib-resnet-v1"
INT8_MODEL = "dlib-resnet-v1-int8"
RANGES_FILE = Path(__file__).resolve().parent / "dlib_resnet_int8_ranges.json"
CALIBRATION_PAIRS = "pairsDevTrain.txt"
CALIBRATION_IMAGES = 200

# What was tried on this project's 2-core x86 (AVX-512 VNNI) machine, LFW pairsDevTest,
# accuracy at the best threshold (fp32: 98.60 %): static QDQ u8/s8 per-channel 98.70 %
# (kept), static s8/s8 per-channel 98.70 % but no faster than fp32 (no s8xs8 VNNI
# kernel), static per-tensor 98.60 %, dynamic (ConvInteger) per-channel: see the issue note.
COMPARED = ("static_u8s8_per_channel", "static_s8s8_per_channel", "static_u8s8_per_tensor",
            "static_percentile", "dynamic_per_channel")


def calibration_chips(lfw_dir: Path, n_images: int = CALIBRATION_IMAGES) -> np.ndarray:
    """RGB chips (and their mirrors) of the first ``n_images`` distinct pairsDevTrain images."""
    from fr_pbd.capture.image import load_image
    from fr_pbd.pipeline import build_pipeline
    from fr_pbd.errors import QualityError

    names: dict[Path, None] = {}
    lines = (Path(lfw_dir) / CALIBRATION_PAIRS).read_text().split("\n")[1:]
    for line in lines:
        parts = line.split()
        ids = ([(parts[0], parts[1]), (parts[0], parts[2])] if len(parts) == 3
               else [(parts[0], parts[1]), (parts[2], parts[3])] if len(parts) == 4 else [])
        for name, num in ids:
            names.setdefault(Path(lfw_dir) / name / f"{name}_{int(num):04d}.jpg", None)
        if len(names) >= n_images:
            break
    ext = build_pipeline(liveness=False).extractor
    chips = []
    for path in list(names)[:n_images]:
        try:
            chips.append(ext.capture(load_image(path), "verify", "center").chip_bgr[:, :, ::-1])
        except QualityError:
            continue
    if not chips:
        raise ModelBuildError(f"no calibration chips from {lfw_dir}")
    arr = np.stack(chips)
    return np.ascontiguousarray(np.concatenate([arr, arr[:, :, ::-1]]))


def calibrate(lfw_dir: Path, out: Path = RANGES_FILE, n_images: int = CALIBRATION_IMAGES) -> dict[str, Any]:
    """Compute the activation ranges on LFW View-1 training chips and write the table (maintainers only)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    from fr_pbd import models

    chips = calibration_chips(lfw_dir, n_images)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.i >= len(chips):
                return None
            x = np.ascontiguousarray(chips[self.i:self.i + 16].transpose(0, 3, 1, 2), dtype=np.float32)
            self.i += 16
            return {"input": x}

    fp32 = models.resolve(SOURCE_MODEL)
    with tempfile.TemporaryDirectory(prefix="fr-pbd-calib.") as tmp:
        src = Path(tmp) / "fp32.onnx"
        src.write_bytes(fp32.data)
        cal = create_calibrator(src, None, augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                calibrate_method=CalibrationMethod.MinMax)
        cal.collect_data(_Reader())
        data = cal.compute_data()
    ranges = {name: [float(np.float32(np.asarray(td.range_value[0]).reshape(-1)[0])),
                     float(np.float32(np.asarray(td.range_value[1]).reshape(-1)[0]))]
              for name, td in sorted(data.data.items())}
    table = {
        "about": "activation ranges (min, max) of dlib-resnet-v1 for static int8 quantisation; "
                 "fr_pbd.build.dlib_resnet_int8.calibrate",
        "source_sha256": fp32.spec.sha256,
        "calibration_set": f"LFW View-1 training ({CALIBRATION_PAIRS}), first {n_images} distinct images, "
                           f"{len(chips) // 2} chips + mirrors",
        "method": "MinMax",
        "ranges": ranges,
    }
    Path(out).write_text(json.dumps(table, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return table


def _load_ranges(path: Path) -> dict[str, tuple[float, float]]:
    try:
        table = json.loads(Path(path).read_text(encoding="utf-8"))
        return {k: (float(v[0]), float(v[1])) for k, v in table["ranges"].items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ModelBuildError(f"the int8 calibration table {path} is unreadable: {exc}") from None


class _PreprocessingAdvice(logging.Filter):
    """Drops onnxruntime's "Please consider (to run) pre-processing before quantization" warnings: the
    pinned bytes are those of the model as it is (pre-processing would change them); every other
    record, errors included, passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.getMessage().startswith("Please consider")
                    and "pre-processing before quantization" in record.getMessage())


@contextlib.contextmanager
def _without_preprocessing_advice():
    root, advice = logging.getLogger(), _PreprocessingAdvice()  # quantize.py warns on the root logger
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def build_int8_bytes(fp32: bytes, ranges: dict[str, tuple[float, float]]) -> bytes:
    """Static QDQ, per-channel s8 weights, u8 activations, from fixed ranges; deterministic bytes."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    td = TensorsData(CalibrationMethod.MinMax, {
        name: TensorData(lowest=np.array([lo], np.float32), highest=np.array([hi], np.float32))
        for name, (lo, hi) in sorted(ranges.items())
    })
    with tempfile.TemporaryDirectory(prefix="fr-pbd-int8.") as tmp:
        src, dst, cache = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx", Path(tmp) / "ranges.json"
        src.write_bytes(fp32)
        save_tensors_data(td, cache)
        with _without_preprocessing_advice():
            quantize_static(str(src), str(dst), None, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(cache))
        model = onnx.load(str(dst))
    model.producer_name, model.producer_version = "fr-pbd", "quantize/1"
    del model.metadata_props[:]
    for key, value in (("fr_pbd.source_sha256", hashlib.sha256(fp32).hexdigest()),
                       ("fr_pbd.quantisation", "static QDQ, per-channel s8 weights, u8 activations, MinMax")):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString(deterministic=True)


def build_dlib_int8(out_dir: Path | None = None, ranges_file: Path = RANGES_FILE) -> Path:
    """Build ``dlib-resnet-v1-int8`` from the verified fp32 file and the committed ranges; check its hash."""
    from fr_pbd import models
    from fr_pbd.build.yunet_variants import write_model

    fp32 = models.resolve(SOURCE_MODEL)  # hash-checked; its error names `fr-pbd models build dlib-resnet`
    spec = models.spec(INT8_MODEL)
    data = build_int8_bytes(fp32.data, _load_ranges(ranges_file))
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        import onnxruntime as ort

        raise ModelBuildError(
            f"the built {spec.file} has sha256 {digest}, the manifest pins {spec.sha256} "
            f"(pinned with onnxruntime {spec.extra.get('built_with_onnxruntime', '?')}, this is {ort.__version__}); "
            "not written")
    path = (Path(out_dir) if out_dir is not None else models.cache_dir()) / spec.file
    write_model(path, data)
    return path
