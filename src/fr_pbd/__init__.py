"""fr-pbd: privacy-by-design, on-device face verification.

The public API is a handful of functions whose answers are booleans, counts,
face boxes or decisions (yes or no, and a reason for the user's own screen:
docs/reasons.md). None returns a template, a score or a key: there is nothing to
export (condition 3) and nothing but yes or no to pass on (condition 5).

    import fr_pbd
    fr_pbd.set_fallback("my PIN 2468")                              # the alternative comes first
    fr_pbd.enroll("alice", ["alice1.jpg", "alice2.jpg"], fr_pbd.Consent("1"),
                  fallback="my PIN 2468")                           # proof: the fallback, every time
    fr_pbd.verify_face("frame.jpg", user="alice").accepted          # True or False
    fr_pbd.same_person("a.jpg", "b.jpg").accepted                   # True or False (and why)
    fr_pbd.find_faces("group.jpg")                                  # boxes and landmarks
    fr_pbd.unenroll("alice")

Phase (a), capture -> template: :mod:`fr_pbd.capture`. Phase (b), template ->
match: :mod:`fr_pbd.store` (where templates are encrypted) and :mod:`fr_pbd.match`.
:mod:`fr_pbd.verify` joins them. :mod:`fr_pbd.daemon` is what leaves the process.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

# Before any fr_pbd module can load onnxruntime, which reads it once, when it is loaded: otherwise
# its telemetry keeps a persistent device id and an event database in the user's home
# (fr_pbd.runtime's docstring says more).
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

from fr_pbd.limits import set_native_limits  # noqa: E402 - after the variable above

set_native_limits()  # OpenCV's own image-size limit, before any module of fr_pbd imports cv2

from fr_pbd._version import __version__  # noqa: E402 - after the variables above

if TYPE_CHECKING:  # imports stay lazy: `import fr_pbd` loads no model and no numpy
    from fr_pbd.capture.image import ImageSource
    from fr_pbd.capture.yunet import Face
    from fr_pbd.outcome import Comparison
    from fr_pbd.verify import Consent, Decision

__all__ = ["Comparison", "Consent", "Decision", "find_faces", "enroll", "verify_face", "unenroll",
           "set_fallback", "check_fallback", "same_person", "__version__"]


def __getattr__(name: str):
    if name in ("Comparison", "Consent", "Decision"):
        import importlib

        return getattr(importlib.import_module("fr_pbd.outcome" if name == "Comparison" else "fr_pbd.verify"), name)
    raise AttributeError(name)


def _typed(func):
    """A full disk, a read-only home or a permission refused reaches the caller as
    :class:`fr_pbd.errors.StorageError` (an :class:`OSError` too), with the cause, the path and what
    to do; never as a raw OSError. The store's own helpers raise it already; this catches the rest."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except OSError as exc:
            from fr_pbd.fileio import storage_error

            err = storage_error(exc)
            if err is exc:
                raise
            raise err from exc
    return wrapper


@_typed
def find_faces(image: "ImageSource") -> "list[Face]":
    """Every face in an image (path, bytes or BGR array): box, five landmarks, detector score."""
    from fr_pbd.capture.detect import detect_faces

    return detect_faces(image)


def _verifier(home: str | Path | None):
    from fr_pbd.verify import Verifier

    return Verifier(Path(home) if home is not None else None)


@_typed
def enroll(user: str, images: "Iterable[ImageSource]", consent: "Consent", home: str | Path | None = None, *,
           fallback: str) -> int:
    """Enrol ``user`` from photos, with their recorded consent; returns how many templates are stored.

    ``fallback``: the store's PIN/passphrase, the proof every enrolment needs (rate
    limited). Adding to a user who has templates needs photos that match them.
    ``user`` is bound to the Unix account of that name, if there is one.
    """
    return _verifier(home).enroll(user, images, consent, fallback=fallback)


@_typed
def verify_face(image: "ImageSource", user: str | None = None, home: str | Path | None = None) -> "Decision":
    """Is this an enrolled user (or the claimed ``user``, compared with that user's templates only)?

    A Decision: ``accepted``, and ``reason`` for the user's own screen (``no_face``,
    ``low_quality``, ``no_match``, ``presentation_attack``, ``locked`` with ``retry_after``,
    ``unknown_user``, ``account_changed``); never a score. Five failures in a row lock face
    verification for that user (or, without ``user``, for "any enrolled user") for 30 s, doubling.
    """
    v = _verifier(home)
    outcome = v.verify(image, user)
    v.settle()  # a success's count is cleared before it is returned (StorageError if it cannot be)
    return outcome


@_typed
def unenroll(user: str, home: str | Path | None = None) -> bool:
    """Withdraw consent: delete the user's templates and consent record and re-key the store. False if unknown."""
    return _verifier(home).store().remove_user(user)


@_typed
def set_fallback(secret: str, home: str | Path | None = None, *, current: str | None = None) -> None:
    """Set the PIN/passphrase that always works instead of the face (needed before enrolment).

    At least 6 characters; replacing one needs the ``current`` one.
    """
    _verifier(home).set_fallback(secret, current=current)


@_typed
def check_fallback(secret: str, home: str | Path | None = None) -> bool:
    """Check the fallback PIN/passphrase (5 wrong entries lock it 30 s, doubling); a success clears face lockouts."""
    return bool(_verifier(home).check_fallback(secret))


@_typed
def same_person(image_a: "ImageSource", image_b: "ImageSource") -> "Comparison":
    """Do two photos show the same person, at the default operating threshold (FMR 1e-4)?

    A :class:`Comparison`, truthy only for the same person, so ``if same_person(a, b):`` reads as
    a sentence and fails closed. Like :func:`verify_face`, a photo without a usable face is an
    answer, not an exception: ``reason`` ``no_face`` or ``low_quality`` (``detail``: the quality
    gate's code), with ``image`` naming the photo; otherwise ``accepted`` or ``no_match``. Both
    functions answer the same question the same way, one ``if`` handles both, and a UI reads one
    table of reasons (docs/reasons.md). A file that is no image is still an error (ImageError).
    """
    from fr_pbd import models
    from fr_pbd.errors import QualityError
    from fr_pbd.outcome import ACCEPTED, NO_MATCH, Comparison
    from fr_pbd.pipeline import build_pipeline

    ext = build_pipeline(liveness=False).extractor  # two photos, not a presentation to a lock
    vectors = []
    for name, image in (("image_a", image_a), ("image_b", image_b)):
        try:
            vectors.append(ext.template(image, "verify").vector)
        except QualityError as exc:
            return Comparison.unusable(exc.reason, image=name)
    if float(vectors[0] @ vectors[1]) >= models.threshold(ext.model_id):
        return Comparison(True, ACCEPTED)
    return Comparison(False, NO_MATCH)
