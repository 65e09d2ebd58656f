"""fr-pbd: privacy-by-design, on-device face verification.

The public API is a handful of functions whose answers are booleans, counts
or face boxes. None returns a template, a score or a key: there is nothing to
export (condition 3) and nothing but yes or no to pass on (condition 5).

    import fr_pbd
    fr_pbd.set_fallback("my PIN")                                   # the alternative comes first
    fr_pbd.enroll("alice", ["alice1.jpg", "alice2.jpg"], fr_pbd.Consent("1"))
    fr_pbd.verify_face("frame.jpg").accepted                            # True or False
    fr_pbd.same_person("a.jpg", "b.jpg")                            # True or False
    fr_pbd.find_faces("group.jpg")                                  # boxes and landmarks
    fr_pbd.unenroll("alice")

Phase (a), capture -> template: :mod:`fr_pbd.capture`. Phase (b), template ->
match: :mod:`fr_pbd.store` (where templates are encrypted) and :mod:`fr_pbd.match`.
:mod:`fr_pbd.verify` joins them. :mod:`fr_pbd.daemon` is what leaves the process.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from fr_pbd._version import __version__

if TYPE_CHECKING:  # imports stay lazy: `import fr_pbd` loads no model and no numpy
    from fr_pbd.capture.image import ImageSource
    from fr_pbd.capture.yunet import Face
    from fr_pbd.verify import Consent, Decision

__all__ = ["Consent", "Decision", "find_faces", "enroll", "verify_face", "unenroll",
           "set_fallback", "check_fallback", "same_person", "__version__"]


def __getattr__(name: str):
    if name in ("Consent", "Decision"):
        import importlib

        return getattr(importlib.import_module("fr_pbd.verify"), name)
    raise AttributeError(name)


def find_faces(image: "ImageSource") -> "list[Face]":
    """Every face in an image (path, bytes or BGR array): box, five landmarks, detector score."""
    from fr_pbd.capture.detect import detect_faces

    return detect_faces(image)


def _verifier(home: str | Path | None):
    from fr_pbd.verify import Verifier

    return Verifier(Path(home) if home is not None else None)


def enroll(user: str, images: "Iterable[ImageSource]", consent: "Consent", home: str | Path | None = None) -> int:
    """Enrol ``user`` from photos, with their recorded consent; returns how many templates are stored."""
    return _verifier(home).enroll(user, images, consent)


def verify_face(image: "ImageSource", user: str | None = None, home: str | Path | None = None) -> "Decision":
    """Is this an enrolled user (or the claimed ``user``)? A Decision holding one boolean."""
    return _verifier(home).verify(image, user)


def unenroll(user: str, home: str | Path | None = None) -> bool:
    """Withdraw consent: delete the user's templates and consent record. False if unknown."""
    return _verifier(home).store().remove_user(user)


def set_fallback(secret: str, home: str | Path | None = None) -> None:
    """Set the PIN/passphrase that always works instead of the face (needed before enrolment)."""
    _verifier(home).set_fallback(secret)


def check_fallback(secret: str, home: str | Path | None = None) -> bool:
    """Check the fallback PIN/passphrase; a success clears a face lockout."""
    return _verifier(home).check_fallback(secret)


def same_person(image_a: "ImageSource", image_b: "ImageSource") -> bool:
    """Do two photos show the same person, at the default operating threshold (FMR 1e-4)?"""
    from fr_pbd import models
    from fr_pbd.pipeline import build_pipeline

    ext = build_pipeline(liveness=False).extractor  # two photos, not a presentation to a lock
    a, b = ext.template(image_a), ext.template(image_b)
    return bool(float(a.vector @ b.vector) >= models.threshold(ext.model_id))
