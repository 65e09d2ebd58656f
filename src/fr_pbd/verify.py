"""The verifier: where the two phases meet, and where the answer becomes yes or no.

Phase (a) (:mod:`fr_pbd.capture`) turns an image into a Template; phase (b)
(:mod:`fr_pbd.store`, :mod:`fr_pbd.match`) compares it with the encrypted
gallery. This module is the only one that imports both, and what leaves it is a
:class:`Decision` holding one boolean: no score, no template, no matched user.

Lockout follows Android CDD 7.3.10 and NIST SP 800-63B: after 5 consecutive
failed attempts face verification is refused for 30 s, doubling with each
further failure; the state lives in the encrypted store, so it survives a
restart; only a success or the fallback credential clears it. While locked, no
image is even looked at.

Presentation-attack detection (:mod:`fr_pbd.capture.liveness`) is on by
default: it looks at the raw decoded frame and the chosen face before the
embedding is computed. An attack is a ``no`` and counts as a failed attempt
(it is a presentation to the lock, so repeated photos lead to the lockout).
It can be switched off only with ``Verifier(..., liveness=False)``, which the
CLI does not expose and which warns (research and tests only; docs/pad.md).

The models come from :func:`fr_pbd.pipeline.build_pipeline`: the board in force
(``board=`` here, else ``board`` in the home's ``config.toml``, else the defaults)
decides how they run, never what is decided.
"""

from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable

import numpy as np

from fr_pbd import models
from fr_pbd.config import default_home
from fr_pbd.capture.extractor import TemplateExtractor
from fr_pbd.capture.image import ImageSource
from fr_pbd.capture.liveness import LivenessDetector
from fr_pbd.capture.yunet import Face
from fr_pbd.errors import ConsentError, QualityError, StoreError
from fr_pbd.pipeline import Pipeline, build_pipeline
from fr_pbd.store import STORE_FILE, LockoutState, Store
from fr_pbd.timing import StageHook, stage

LOCKOUT_AFTER_FAILURES = 5
LOCKOUT_BASE_SECONDS = 30
LOCKOUT_MAX_SECONDS = 24 * 3600


@dataclass(frozen=True, slots=True)
class Decision:
    """The only thing verification returns: accepted or not."""

    accepted: bool

    def __bool__(self) -> bool:
        return self.accepted


@dataclass(frozen=True)
class Consent:
    """The user's explicit opt-in to enrolment: which consent text they confirmed, on which device."""

    text_version: str
    device_id: str = socket.gethostname() or "device"


def lock_seconds(failures: int) -> int:
    """30 s at the 5th consecutive failure, doubling with each further one (capped at a day)."""
    if failures < LOCKOUT_AFTER_FAILURES:
        return 0
    return min(LOCKOUT_MAX_SECONDS, LOCKOUT_BASE_SECONDS * 2 ** min(failures - LOCKOUT_AFTER_FAILURES, 20))


def _now() -> datetime:
    return datetime.now(timezone.utc)


def open_or_create_store(home: Path, model_id: str, dim: int) -> Store:
    """The store in ``home``; created (empty, with a fresh device key) only if there is none."""
    if not os.path.lexists(home / STORE_FILE):
        try:
            return Store.create(home, model_id=model_id, dim=dim)
        except StoreError:
            if not os.path.lexists(home / STORE_FILE):  # not a lost creation race: a real error
                raise
    return Store.open(home)


class _PresentationAttack(Exception):
    """Internal: the liveness check refused the face (never leaves :meth:`Verifier.verify`)."""


class Verifier:
    """Enrolment and verification against the store in one home directory."""

    def __init__(self, home: Path | None = None, extractor: TemplateExtractor | None = None,
                 liveness: bool | LivenessDetector = True, *, board: str | None = None,
                 stage_hook: StageHook | None = None) -> None:
        """``liveness``: True (default) loads the PAD models; a detector uses that one; False disables PAD.

        ``extractor`` injects a ready extractor (tests); otherwise the models come from
        :func:`~fr_pbd.pipeline.build_pipeline` for ``board`` (else the config's board).
        ``stage_hook`` receives each stage's duration (``fr-pbd bench``), never data.
        """
        self.home = Path(home) if home is not None else default_home()
        self._extractor = extractor
        self._injected = extractor is not None
        if liveness is False:
            warnings.warn("presentation-attack detection is OFF: a photo or a screen may be accepted "
                          "(research and tests only)", stacklevel=2)
        self._liveness: LivenessDetector | bool = liveness
        self._board = board
        self._pipeline: Pipeline | None = None
        self.stage_hook = stage_hook
        # Why the last verify() said what it said, for a daemon's own log only: "accepted",
        # "no_match", "presentation_attack", "locked_out" or a quality reason code. Never a score.
        self.last_reason: str | None = None

    @property
    def board(self) -> str:
        """The board in force: the explicit one, else ``board`` in the home's config.toml, else the defaults."""
        if self._board is None:
            from fr_pbd import config
            from fr_pbd.pipeline import DEFAULT_BOARD

            self._board = config.load(self.home).board or DEFAULT_BOARD
        return self._board

    @property
    def pipeline(self) -> Pipeline:
        """The assembled models for this verifier's board (built once per process and board)."""
        if self._pipeline is None:
            self._pipeline = build_pipeline(self.board, liveness=self._liveness is True)
        return self._pipeline

    @property
    def liveness(self) -> LivenessDetector | None:
        """The PAD detector, or None if it was switched off explicitly."""
        if self._liveness is False:
            return None
        if self._liveness is True:
            self._liveness = self.pipeline.liveness or False
        return self._liveness or None

    def _check_presentation(self, frame: np.ndarray, face: Face) -> None:
        pad = self.liveness
        if pad is not None and not pad.is_live(frame, face):
            raise _PresentationAttack()

    @property
    def extractor(self) -> TemplateExtractor:
        if self._extractor is None:
            self._extractor = self.pipeline.extractor
        return self._extractor

    def describe(self) -> str:
        """What runs here (board, embedder graph, liveness), for a log line: never what it saw."""
        if self._injected:
            return f"injected extractor ({self.extractor.model_id}); liveness {'on' if self.liveness else 'OFF'}"
        return self.pipeline.describe()

    @staticmethod
    def threshold(model_id: str) -> float:
        return models.threshold(model_id)

    def store(self) -> Store:
        return Store.open(self.home)

    def enroll(self, user: str, images: Iterable[ImageSource], consent: Consent | None) -> int:
        """Record the opt-in and add one template per image; all images must pass the enrolment gate.

        Nothing is written unless every image gives a template. Returns the user's template count.
        """
        if not isinstance(consent, Consent):
            raise ConsentError("enrolment needs the user's explicit consent (a Consent record)")
        images = list(images)
        if not images:
            raise ValueError("enrolment needs at least one image")
        ext = self.extractor
        templates = []
        for i, image in enumerate(images, 1):
            try:
                templates.append(ext.template(image, "enrol"))
            except QualityError as exc:
                where = image if isinstance(image, (str, Path)) else f"image {i}"
                raise QualityError(exc.reason, f"{where}: {exc}") from None
        store = open_or_create_store(self.home, ext.model_id, templates[0].dim)
        with store.transaction() as tx:
            if not tx.has_fallback:
                raise ConsentError("set a fallback PIN or passphrase first (fr-pbd fallback set): "
                                   "face verification must never be the only way in")
            tx.record_consent(user, text_version=consent.text_version, device_id=consent.device_id)
            return tx.add_templates(user, templates)

    def verify(self, image: ImageSource, user: str | None = None) -> Decision:
        """Yes or no. Locked out: no, without looking at the image. No usable face: no, not counted.

        A presentation attack: no, counted as a failed attempt.
        """
        hook = self.stage_hook
        with stage(hook, "store_read"):
            store = self.store()
            view = store.read()
        if view.lockout.is_locked(_now()):
            self.last_reason = "locked_out"
            return Decision(False)
        try:
            probe = self.extractor.template(image, "verify", check=self._check_presentation, hook=hook)
        except QualityError as exc:
            self.last_reason = exc.reason
            return Decision(False)
        except _PresentationAttack:
            accepted = False
            self.last_reason = "presentation_attack"
        else:
            with stage(hook, "match"):
                accepted = view.matcher().matches(probe, self.threshold(view.model_id), user)
            self.last_reason = "accepted" if accepted else "no_match"
        with stage(hook, "decide"), store.transaction() as tx:
            if accepted:
                tx.reset_lockout()
            else:
                failures = tx.lockout.failures + 1
                seconds = lock_seconds(failures)
                until = _now() + timedelta(seconds=seconds) if seconds else None
                tx.set_lockout(LockoutState(failures=failures, locked_until=until))
        return Decision(accepted)

    def set_fallback(self, secret: str, model_id: str | None = None, dim: int = 128) -> None:
        """Set the fallback PIN/passphrase (creating the store on first use)."""
        store = open_or_create_store(self.home, model_id or self.default_model_id(), dim)
        store.set_fallback(secret)

    def check_fallback(self, secret: str) -> bool:
        """The alternative to the face: always works, also while locked; success clears the lockout."""
        store = self.store()
        ok = store.check_fallback(secret)
        if ok:
            with store.transaction() as tx:
                tx.reset_lockout()
        return ok

    @staticmethod
    def default_model_id() -> str:
        from fr_pbd.capture import dlib_resnet

        return dlib_resnet.MODEL_ID
