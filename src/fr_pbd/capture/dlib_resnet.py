"""dlib's face descriptor network (ResNet, 128-d) on onnxruntime: pre- and post-processing only.

The ONNX file is the one ``fr_pbd.build.dlib_resnet`` converts from dlib's
``dlib_face_recognition_resnet_model_v1.dat`` (Davis King, CC0). The graph is
self-contained: it subtracts dlib's channel means and divides by 256 itself, so
this module only turns RGB uint8 chips into a float32 NCHW batch. The caller
passes a path whose hash it has already checked against the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fr_pbd.errors import ImageError, ModelError

MODEL_ID = "dlib-resnet-v1"
INPUT_SIZE = 150  # face chip side, pixels (dlib.get_face_chip(size=150, padding=0.25))
EMBEDDING_DIM = 128
INPUT_NAME = "input"  # float32 [N, 3, 150, 150], RGB, raw 0-255, NCHW
OUTPUT_NAME = "embedding"  # float32 [N, 128], raw dlib descriptor (not normalised)

# dlib's input_rgb_image_sized: x = (pixel - mean) / 256, per channel. Read from the
# .dat (float32 values). Documentation only: the ONNX graph applies them.
MEAN_RED = 122.782
MEAN_GREEN = 117.001
MEAN_BLUE = 104.298
INPUT_SCALE = 1.0 / 256.0

# Where YuNet's five landmarks (right eye, left eye, nose tip, right and left mouth
# corner) must land in the 150x150 chip so that fr-pbd's chip has the geometry of
# dlib's own get_face_chip(size=150, padding=0.25) on dlib's 5-point shape, the
# geometry the network was trained on. Measured, not guessed, by
# tools/calibrate_dlib_alignment.py: on the first image of 1,000 LFW View-1 training
# identities, dlib's exact image->chip mapping (recovered from chipping a coordinate
# ramp image) applied to YuNet's landmarks, then averaged. Per-point s.d. 2-6 px.
ALIGNMENT_REFERENCE = np.array(
    [
        [48.016, 45.128],
        [101.592, 45.314],
        [75.236, 77.317],
        [51.531, 103.059],
        [97.721, 103.096],
    ],
    dtype=np.float32,
)
CHANNEL_ORDER = "RGB"

# Test-time augmentation: the template is the normalised mean of the descriptors of
# the chip and of its mirror image. On LFW pairsDevTest it raised accuracy at the best
# threshold from 98.4 % to 98.6 % (benchmarks/lfw_devtest_side_by_side.py); it costs a
# second forward pass, batched with the first.
FLIP_AVERAGE = True

# Large faces are shrunk with area averaging before the warp (align.warp_chip), as
# dlib's get_face_chip does with its image pyramid.
AREA_PREFILTER = True

# dlib's customary decision rule on raw descriptors: same person if the Euclidean
# distance is <= 0.6 (also the loss's distance_threshold stored in the .dat).
DLIB_DISTANCE_THRESHOLD = 0.6


class DlibResNetEmbedder:
    """Face chips in, raw dlib descriptors out; one onnxruntime session per instance."""

    model_id = MODEL_ID
    input_size = INPUT_SIZE
    embedding_dim = EMBEDDING_DIM
    # What the pipeline reads to cut and order chips for this model (same names in sface.py).
    alignment_reference = ALIGNMENT_REFERENCE
    channel_order = CHANNEL_ORDER
    flip_average = FLIP_AVERAGE
    area_prefilter = AREA_PREFILTER

    def __init__(self, session: Any) -> None:
        """Wrap an onnxruntime session made from verified bytes (``fr_pbd.runtime.create_session``)."""
        inputs = session.get_inputs()
        outputs = session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in outputs]:
            raise ModelError("the model is not the dlib ResNet model (unexpected input/output names)")
        self._session = session

    @classmethod
    def from_path(
        cls,
        model_path: str | Path,
        session_options: Any | None = None,
        providers: Sequence[str] | None = None,
    ) -> "DlibResNetEmbedder":
        """For tools and tests that load a freshly built, not yet installed file."""
        from fr_pbd.runtime import session_from_file  # imported here so importing fr_pbd.capture stays cheap

        return cls(session_from_file(model_path, session_options, providers))

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """Raw descriptors, float32 (N, 128), for one RGB uint8 chip or a batch (N, 150, 150, 3)."""
        arr = np.asarray(chips)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ImageError(
                f"expected an RGB face chip of {INPUT_SIZE}x{INPUT_SIZE}x3 or a batch of them, "
                f"got shape {tuple(np.shape(chips))}"
            )
        if arr.dtype != np.uint8:
            raise ImageError(f"expected uint8 pixels, got {arr.dtype}")
        if arr.shape[0] == 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        x = np.ascontiguousarray(arr.transpose(0, 3, 1, 2), dtype=np.float32)
        (out,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: x})
        return np.asarray(out, dtype=np.float32).reshape(arr.shape[0], EMBEDDING_DIM)
