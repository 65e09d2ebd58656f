"""What a verification says: yes or no, and why, for the person in front of the device.

An :class:`Outcome` is a value (as Fernet's ``decrypt`` returns the plaintext or raises one
error): the verifier returns it instead of leaving its reason on the object for a caller to
read back. It holds no score, no template and no matched user. The reason is for the user's
own screen (a vendor's UI, the CLI's stderr) and the daemon's log; it never crosses the
daemon's socket, whose answer stays one byte.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = [
    "ACCEPTED",
    "ACCOUNT_CHANGED",
    "Comparison",
    "LOCKED",
    "LOW_QUALITY",
    "NO_FACE",
    "NO_MATCH",
    "PRESENTATION_ATTACK",
    "REASONS",
    "UNKNOWN_USER",
    "Outcome",
]

ACCEPTED = "accepted"
NO_FACE = "no_face"  # no face in any frame
LOW_QUALITY = "low_quality"  # a face, but none good enough to compare (``detail`` says what)
NO_MATCH = "no_match"  # compared, and not the enrolled face
PRESENTATION_ATTACK = "presentation_attack"  # a photo, a screen or a mask (liveness)
LOCKED = "locked"  # too many failed attempts: ``retry_after`` seconds, or the fallback PIN now
UNKNOWN_USER = "unknown_user"  # the claimed user is not enrolled: not looked at, not counted
ACCOUNT_CHANGED = "account_changed"  # the Unix account of that name is not the one enrolled
#: Every reason an Outcome can carry.
REASONS = (ACCEPTED, NO_FACE, LOW_QUALITY, NO_MATCH, PRESENTATION_ATTACK, LOCKED, UNKNOWN_USER, ACCOUNT_CHANGED)


@dataclass(frozen=True, slots=True)
class Outcome:
    """Accepted or not, the reason (one of :data:`REASONS`), and for ``locked`` the seconds left.

    ``detail`` refines ``low_quality`` with the quality gate's code (``too_blurred``, ...).
    Truthy only when accepted, so ``if verifier.verify(img):`` reads as a sentence.
    """

    accepted: bool
    reason: str
    retry_after: int = 0
    detail: str | None = None

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown reason {self.reason!r}")
        if self.accepted != (self.reason == ACCEPTED):
            raise ValueError("an outcome is accepted exactly when its reason is 'accepted'")

    def __bool__(self) -> bool:
        return self.accepted

    @classmethod
    def unusable(cls, quality: str | None, **fields: object) -> "Outcome":
        """No face to compare: ``no_face``, or ``low_quality`` with the quality gate's code as ``detail``."""
        if quality is None or quality == NO_FACE:
            return cls(False, NO_FACE, **fields)
        return cls(False, LOW_QUALITY, detail=quality, **fields)

    def to_dict(self) -> dict:
        """The fields as a JSON object (``fr-pbd verify --json``): no score, nothing about the face."""
        return asdict(self)

    def describe(self) -> str:
        """One line for a log or a screen: the reason, never a score."""
        if self.reason == LOCKED:
            return f"locked for {self.retry_after} s (too many failed attempts; the fallback PIN unlocks)"
        if self.detail:
            return f"{self.reason} ({self.detail})"
        return self.reason


@dataclass(frozen=True, slots=True)
class Comparison(Outcome):
    """Two photos, the same person? (:func:`fr_pbd.same_person`): an :class:`Outcome` whose reason is
    ``accepted``, ``no_match``, ``no_face`` or ``low_quality``, and, for the last two, which photo
    (``image``: ``"image_a"`` or ``"image_b"``, the parameter's name) had no usable face."""

    image: str | None = None
