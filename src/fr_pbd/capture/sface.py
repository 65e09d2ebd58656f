"""SFace (OpenCV Zoo, 2021dec) on onnxruntime: pre- and post-processing only.

The optional second embedder, used when its file is present (``fr-pbd models
fetch sface-2021dec``). Its pre-processing is OpenCV's ``FaceRecognizerSF``
(modules/objdetect/src/face_recognize.cpp), since OpenCV's published cosine
threshold was set on that pre-processing:

* ``alignCrop``: a least-squares similarity (Umeyama, no reflection) from the
  five YuNet landmarks to the ArcFace 112x112 reference, then one
  ``warpAffine`` with INTER_LINEAR and a black border, *no* area pre-filter for
  large faces (dlib's chip has one; this one must not, or it stops matching).
* ``feature``: ``blobFromImage(chip, 1, (112, 112), 0, swapRB=True)``: float32
  NCHW, RGB, raw 0-255, no mean, no scaling.

tests/test_sface.py checks both against ``cv2.FaceRecognizerSF`` on real
photos. The network itself is not tested here (the file cannot be fetched on
the build machine). The caller passes a session made from bytes whose hash it
has checked against the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fr_pbd.errors import ImageError, ModelError

MODEL_ID = "sface-2021dec"
INPUT_SIZE = 112  # face chip side, pixels (FaceRecognizerSF::alignCrop: Size(112, 112))
EMBEDDING_DIM = 128
# What embed() takes and the network gets: blobFromImage(..., swapRB=true) on OpenCV's
# BGR chip, i.e. RGB. Raw 0-255 floats: scale 1, mean 0 (face_recognize.cpp feature()).
CHANNEL_ORDER = "RGB"
INPUT_SCALE = 1.0
INPUT_MEAN = (0.0, 0.0, 0.0)

# The ArcFace/insightface 112x112 five-point template, as FaceRecognizerSF's
# getSimilarityTransformMatrix hard-codes it. Its order (image-left eye, image-right
# eye, nose, image-left and image-right mouth corner) is YuNet's order (subject's
# right eye, left eye, nose, right and left mouth corner), which is how OpenCV feeds
# YuNet rows to alignCrop.
ALIGNMENT_REFERENCE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
# alignCrop is a plain warpAffine: no anti-aliasing pre-shrink of large faces.
AREA_PREFILTER = False
# OpenCV embeds the chip once; its threshold is for that, so no mirror averaging.
FLIP_AVERAGE = False

# Cosine similarity of the (normalised) features, accept if >= threshold: OpenCV's
# sample value (opencv_zoo face_recognition_sface), not re-measured by fr-pbd. The
# manifest records the same number.
DEFAULT_THRESHOLD = 0.363


class SFaceEmbedder:
    """Face chips in, raw SFace features out; one onnxruntime session per instance.

    Same contract as ``DlibResNetEmbedder``: the attributes tell the pipeline how to
    cut and order the chip, ``embed`` maps (N, 112, 112, 3) uint8 to (N, 128) float32.
    """

    model_id = MODEL_ID
    input_size = INPUT_SIZE
    embedding_dim = EMBEDDING_DIM
    alignment_reference = ALIGNMENT_REFERENCE
    channel_order = CHANNEL_ORDER
    flip_average = FLIP_AVERAGE
    area_prefilter = AREA_PREFILTER

    def __init__(self, session: Any) -> None:
        """Wrap an onnxruntime session made from verified bytes (``fr_pbd.runtime.create_session``).

        Names are taken from the graph rather than assumed; shapes are checked so a
        wrong file fails here, not with a cryptic onnxruntime error on the first face.
        """
        inputs = session.get_inputs()
        outputs = session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ModelError("the model is not an SFace model (expected one input)")
        shape = list(inputs[0].shape)
        if len(shape) != 4 or shape[1:] != [3, INPUT_SIZE, INPUT_SIZE]:
            raise ModelError(f"the model is not an SFace model (input shape {shape}, expected [N,3,112,112])")
        out_shape = list(outputs[0].shape)
        if not out_shape or out_shape[-1] != EMBEDDING_DIM:
            raise ModelError(f"the model is not an SFace model (output shape {out_shape}, expected [N,128])")
        self._session = session
        self._input_name = inputs[0].name
        self._output_name = outputs[0].name
        # opencv_zoo's graph has a fixed batch of 1; a dynamic one takes the batch at once.
        self._batch = shape[0] if isinstance(shape[0], int) else None

    @classmethod
    def from_path(
        cls,
        model_path: str | Path,
        session_options: Any | None = None,
        providers: Sequence[str] | None = None,
    ) -> "SFaceEmbedder":
        """For tools and tests that load a file outside the verified model store."""
        from fr_pbd.runtime import session_from_file  # imported here so importing fr_pbd.capture stays cheap

        return cls(session_from_file(model_path, session_options, providers, fix=f"fr-pbd models fetch {MODEL_ID}"))

    @staticmethod
    def to_input(chips: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) RGB uint8 -> the float32 NCHW tensor FaceRecognizerSF.feature builds."""
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
        return np.ascontiguousarray(arr.transpose(0, 3, 1, 2), dtype=np.float32)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """Raw features, float32 (N, 128), for one RGB uint8 chip or a batch (N, 112, 112, 3)."""
        x = self.to_input(chips)
        n = x.shape[0]
        if n == 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        step = self._batch or n
        outs = [
            self._session.run([self._output_name], {self._input_name: x[i:i + step]})[0]
            for i in range(0, n, step)
        ]
        return np.concatenate([np.asarray(o, np.float32).reshape(-1, EMBEDDING_DIM) for o in outs])
