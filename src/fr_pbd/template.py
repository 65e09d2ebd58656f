"""The template: the one thing that crosses from phase (a) to phase (b).

It lives outside both ``fr_pbd.capture`` and ``fr_pbd.store``/``fr_pbd.match`` so
that neither phase imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class Template:
    """A face embedding, L2-normalised, tagged with the model that made it.

    Because the vector has unit length, cosine similarity is a plain dot
    product, and the Euclidean distance of two templates is
    ``sqrt(2 - 2 * cos)``. dlib's customary rule "same person if the distance
    of the *raw* descriptors is <= 0.6" therefore maps to a cosine threshold
    only approximately (raw dlib descriptors are not exactly unit length); fr-pbd
    uses the cosine threshold calibrated on LFW and recorded in the manifest.

    Biometric data: never pickled, never logged, and its ``repr`` shows no numbers.
    """

    vector: np.ndarray = field(repr=False)
    model_id: str

    def __post_init__(self) -> None:
        v = np.asarray(self.vector, dtype=np.float32)
        if v.ndim != 1 or v.size == 0:
            raise ValueError("a template is a non-empty 1-d vector")
        if not np.all(np.isfinite(v)):
            raise ValueError("a template must be finite")
        n = float(np.linalg.norm(v))
        if n == 0.0:
            raise ValueError("a template must not be the zero vector")
        v = (v / n).astype(np.float32)
        v.setflags(write=False)
        object.__setattr__(self, "vector", v)

    @property
    def dim(self) -> int:
        return int(self.vector.shape[0])

    def __repr__(self) -> str:
        return f"Template(model_id={self.model_id!r}, dim={self.dim})"

    __str__ = __repr__

    def __reduce__(self):  # no pickling of biometric data
        raise TypeError("templates are biometric data and cannot be pickled")
