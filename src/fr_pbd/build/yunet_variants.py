"""YuNet input-size variants, derived deterministically from the verified 640x640 file.

Why: YuNet's cost grows with its input area, and the released ONNX file declares a
fixed 1x3x640x640 input, so onnxruntime would letterbox a 640x480 camera frame into
640x640 (a third of the work on padding) and could never run a 320x240 detection.

What is fixed, and what this rewrites. The 2023mar graph is convolutional; its
size is fixed by (1) the declared input shape, (2) the declared output shapes
(anchor counts ``(W/s)*(H/s)`` per stride ``s``), (3) the ``value_info`` shape
annotations of every intermediate tensor, and (4) any ``Reshape`` target that
spells an anchor count out. Its two ``Resize`` nodes upsample by *scales* (x2),
which are size-free. The builder rewrites (1), (2) and (4) for the new size and
drops (3) (onnxruntime infers them again). In the 2023mar file the reshape
targets are already ``[1, -1, k]``, so (4) rewrites nothing there; the builder
still handles a file that spells counts out, and refuses one it does not
understand (a ``Resize`` by sizes, an unexpected input) rather than guess.

Width and height must be multiples of 32 (the coarsest stride; the FPN adds the
x2-upsampled stride-32 map to the stride-16 one, so odd maps would not line up).
4:3 sizes that are multiples of 32 are multiples of 128x96: 640x480 is one;
320x240 and 160x120 are not, so the variants for them are 320x256 and 160x128,
exactly the padded size ``cv2.FaceDetectorYN`` itself uses for those inputs.

Determinism: the source bytes are hash-checked against the manifest, no shape
inference is run (its output varies with the ``onnx`` version), and the message
is serialised with ``deterministic=True``: building twice, on any machine, gives
the same bytes, whose sha256 the manifest pins.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fr_pbd.errors import ModelBuildError

SOURCE_MODEL = "yunet-2023mar"
SOURCE_SIZE = (640, 640)  # (width, height) of the released file
STRIDES = (8, 16, 32)
BUILDER_VERSION = "build_yunet/1"


@dataclass(frozen=True)
class Variant:
    """One derived model: its manifest name, file name and input size (w, h)."""

    name: str
    file: str
    width: int
    height: int


def variant_name(width: int, height: int) -> str:
    return f"{SOURCE_MODEL}-{width}x{height}"


def variant_file(width: int, height: int) -> str:
    return f"face_detection_yunet_2023mar_{width}x{height}.onnx"


# The variants fr-pbd ships recipes (and manifest pins) for: a 640x480 frame at full
# resolution, and a 320x240 / 160x120 working size for slower boards (4:3 frames).
VARIANT_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (320, 256), (160, 128))
VARIANTS: dict[str, Variant] = {
    variant_name(w, h): Variant(variant_name(w, h), variant_file(w, h), w, h) for w, h in VARIANT_SIZES
}


def _check_size(width: int, height: int) -> None:
    for label, v in (("width", width), ("height", height)):
        if not isinstance(v, int) or v < 32 or v > 1920 or v % 32:
            raise ModelBuildError(f"YuNet variant {label} {v!r} must be a multiple of 32 between 32 and 1920")


def _anchors(width: int, height: int, stride: int) -> int:
    return (width // stride) * (height // stride)


def build_variant_bytes(source: bytes, width: int, height: int) -> bytes:
    """The 640x640 YuNet graph rewritten for a (width, height) input; deterministic bytes."""
    _check_size(width, height)
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:  # pragma: no cover - onnx is in the build and test extras
        raise ModelBuildError("building YuNet variants needs the onnx package: pip install 'fr-pbd[build]'") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(source)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError
        raise ModelBuildError("the YuNet source is not an ONNX model") from None
    graph = model.graph
    if len(graph.input) != 1 or [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] != [1, 3, 640, 640]:
        raise ModelBuildError("the YuNet source does not declare the expected 1x3x640x640 input")
    dims = graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = height, width

    old = {s: _anchors(*SOURCE_SIZE, s) for s in STRIDES}
    new = {s: _anchors(width, height, s) for s in STRIDES}
    outputs = {o.name: o for o in graph.output}
    for s in STRIDES:
        for kind in ("cls", "obj", "bbox", "kps"):
            o = outputs.get(f"{kind}_{s}")
            if o is None:
                raise ModelBuildError(f"the YuNet source lacks the output {kind}_{s}")
            d = o.type.tensor_type.shape.dim
            if len(d) != 3 or d[1].dim_value != old[s]:
                raise ModelBuildError(f"the YuNet output {kind}_{s} does not have {old[s]} anchors")
            d[1].dim_value = new[s]

    inits = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Resize":
            sizes = node.input[3] if len(node.input) > 3 else ""
            if sizes:
                raise ModelBuildError(f"Resize node {node.name} resizes to fixed sizes; cannot derive a variant")
        elif node.op_type == "Reshape":
            init = inits.get(node.input[1])
            if init is None:
                raise ModelBuildError(f"Reshape node {node.name} has a computed shape; cannot derive a variant")
            shape = numpy_helper.to_array(init).copy()
            # The stride is named by the output this reshape feeds (cls_8, ..., kps_32) or, for
            # the intermediate ones, cannot be told apart: only -1 is safe there.
            counts = [int(v) for v in shape if int(v) in old.values()]
            if counts:
                stride = next(s for s in STRIDES if old[s] == counts[0])
                shape[shape == old[stride]] = new[stride]
                init.CopyFrom(numpy_helper.from_array(shape, init.name))
    del graph.value_info[:]  # stale 640x640 annotations; onnxruntime infers shapes itself
    model.doc_string = (f"fr-pbd {BUILDER_VERSION}: YuNet 2023mar with input 1x3x{height}x{width}, "
                        "derived from the released 640x640 file")
    del model.metadata_props[:]
    for key, value in (("fr_pbd.builder", BUILDER_VERSION), ("fr_pbd.source_sha256", hashlib.sha256(source).hexdigest()),
                       ("fr_pbd.input_size", f"{width}x{height}")):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - onnx's ValidationError
        raise ModelBuildError(f"the rewritten YuNet graph is not valid ONNX: {str(exc).splitlines()[0]}") from None
    return model.SerializeToString(deterministic=True)


def write_model(path: Path, data: bytes) -> None:
    """Write a built model file atomically (0644: model files are public, not secrets)."""
    from fr_pbd.fileio import atomic_write

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, mode=0o644)
    except OSError as e:
        raise ModelBuildError(f"cannot write {path}: {e.strerror or e}") from None


def _smoke_test(data: bytes, width: int, height: int) -> None:
    """Run the variant once on zeros: the anchor counts must be the declared ones."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, 3, height, width), np.float32)})
    for meta, arr in zip(sess.get_outputs(), outs):
        stride = int(meta.name.rsplit("_", 1)[1])
        if arr.shape[1] != _anchors(width, height, stride):
            raise ModelBuildError(f"variant {width}x{height}: output {meta.name} has {arr.shape[1]} anchors")


def build_yunet_variants(out_dir: Path | None = None, names: list[str] | None = None) -> dict[str, Path]:
    """Build the manifest's YuNet variants from the verified 640x640 file; returns name -> path.

    Each result is checked against its manifest sha256 before it is kept; a mismatch
    removes the file and raises ModelBuildError (one line naming both hashes).
    """
    from fr_pbd import models

    source = models.resolve(SOURCE_MODEL)  # hash-checked; the fix command is in its error
    wanted = list(VARIANTS) if names is None else names
    unknown = [n for n in wanted if n not in VARIANTS]
    if unknown:
        raise ModelBuildError(f"unknown YuNet variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    target = Path(out_dir) if out_dir is not None else models.cache_dir()
    built: dict[str, Path] = {}
    for name in wanted:
        v = VARIANTS[name]
        spec = models.spec(name)
        data = build_variant_bytes(source.data, v.width, v.height)
        digest = hashlib.sha256(data).hexdigest()
        if digest != spec.sha256:
            raise ModelBuildError(f"the built {spec.file} has sha256 {digest}, the manifest pins {spec.sha256}; "
                                  "not written (is the onnx package's protobuf very old?)")
        _smoke_test(data, v.width, v.height)
        path = target / spec.file
        write_model(path, data)
        built[name] = path
    return built


def describe(data: bytes) -> dict[str, Any]:
    """Input size and provenance recorded in a variant's metadata (for doctor/bench)."""
    import onnx

    model = onnx.ModelProto()
    model.ParseFromString(data)
    return {p.key: p.value for p in model.metadata_props}
