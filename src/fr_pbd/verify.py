"""The verifier: where the two phases meet, and where the answer becomes yes or no.

Phase (a) (:mod:`fr_pbd.capture`) turns an image into a Template; phase (b)
(:mod:`fr_pbd.store`, :mod:`fr_pbd.match`) compares it with the encrypted
gallery. This module is the only one that imports both, and what leaves it is a
:class:`Decision` holding one boolean: no score, no template, no matched user.

Lockout (``docs/lockout.md``) follows Android CDD 7.3.10 and NIST SP 800-63B:
after 5 consecutive failed attempts a scope is refused for 30 s, doubling with
each further failure. A scope is one enrolled user (``verify(image, user=...)``,
what the daemon does for PAM_USER) or "any enrolled user" (no claim). The
attempt is counted under the store's exclusive lock *before* the comparison
and cleared only by a success in its scope (or the fallback credential), so no
number of parallel attempts compares more than the attempts left; a success's
clear is written just after the yes is returned (:meth:`Verifier.settle`). A claimed
user that is not enrolled (or whose Unix account changed) is a ``no`` that is
neither looked at nor counted: it cannot lock anyone out. Without a claim,
users whose own lockout is in force are left out of the comparison. While
locked, no image is even looked at. The state lives in the encrypted store, so
it survives a restart.

Accounts: an enrolled name that is a Unix account here is bound to that
account's uid at enrolment; ``verify(user=name)`` matches only that user's
templates, and only while the name still resolves to the same uid. A name that
was no account at enrolment can never open one: if an account of that name
appears later, claims of it are refused.

Presentation-attack detection (:mod:`fr_pbd.capture.liveness`) is on by
default: it looks at the raw decoded frame and the chosen face before the
embedding is computed. An attack is a ``no`` and counts as a failed attempt
(it is a presentation to the lock, so repeated photos lead to the lockout).
It can be switched off only with ``Verifier(..., liveness=False)``, which the
CLI does not expose and which warns (research and tests only; docs/pad.md).

The models come from :func:`fr_pbd.pipeline.build_pipeline`: the board in force
(``board=`` here, else ``board`` in the home's ``config.toml``, else the defaults)
decides how they run, never what is decided. Its embedder is the model of record
(:func:`fr_pbd.pipeline.model_of_record`): a store is created for it (model id and
dimension), and a store made for another model is refused, in one line naming both,
before any image is looked at or any attempt counted; the fallback PIN still works.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from fr_pbd import models
from fr_pbd.config import check_home_parents, default_home
from fr_pbd.attempts import AttemptProtocol, Counted
from fr_pbd.capture.extractor import TemplateExtractor
from fr_pbd.capture.frames import FrameSource
from fr_pbd.capture.image import ImageSource
from fr_pbd.capture.liveness import LivenessDetector
from fr_pbd.capture.yunet import Face
from fr_pbd.capture.quality import NO_FACE as _QUALITY_NO_FACE
from fr_pbd.errors import CameraError, ConsentError, KeyProviderError, QualityError, StoreError
from fr_pbd.outcome import ACCEPTED, LOW_QUALITY, NO_FACE, NO_MATCH, PRESENTATION_ATTACK, Outcome
from fr_pbd.pipeline import ModelOfRecord, Pipeline, build_pipeline, model_of_record
from fr_pbd.store import STORE_FILE, Store
from fr_pbd.store.fallback import check_strength
from fr_pbd.store.transaction import ClaimsView
from fr_pbd.store.records import (
    LOCKOUT_AFTER_FAILURES,
    LOCKOUT_BASE_SECONDS,
    LOCKOUT_MAX_SECONDS,
    account_uid,
    lock_seconds,
)
from fr_pbd.timing import StageHook, stage

__all__ = ["Verifier", "Decision", "Outcome", "FallbackCheck", "Consent", "lock_seconds", "open_or_create_store",
           "check_user_name", "LOCKOUT_AFTER_FAILURES", "LOCKOUT_BASE_SECONDS", "LOCKOUT_MAX_SECONDS"]

#: Names a new enrolment may use: the portable Unix login-name characters (POSIX), at most 32.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


#: The public API's name for a verification's outcome (:class:`fr_pbd.outcome.Outcome`).
Decision = Outcome


@dataclass(frozen=True, slots=True)
class FallbackCheck:
    """A fallback PIN entry: right or not, and whether (and for how long) the PIN is locked."""

    accepted: bool
    locked: bool = False
    retry_after: int = 0

    def __bool__(self) -> bool:
        return self.accepted


@dataclass(frozen=True)
class Consent:
    """The user's explicit opt-in to enrolment: which consent text they confirmed, on which device."""

    text_version: str
    device_id: str = socket.gethostname() or "device"


def check_user_name(user: object) -> str:
    """``user`` if it may be enrolled: 1-32 of ``[A-Za-z0-9._-]``, not starting with ``-`` (ValueError)."""
    if (not isinstance(user, str) or not 1 <= len(user) <= 32 or not set(user) <= _NAME_CHARS
            or user.startswith("-") or user in (".", "..")):
        raise ValueError("a user name must be 1-32 characters of A-Z a-z 0-9 . _ - (not starting with -): "
                         "the Unix login name, for PAM")
    return user


def open_or_create_store(home: Path, model_id: str, dim: int) -> Store:
    """The store in ``home``; created (empty, with a fresh device key) only if there is none."""
    check_home_parents(home)  # a home another user could swap is refused before it is created
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
        self._home_checked = False
        self._store: Store | None = None
        self._attempts = AttemptProtocol(self.threshold)  # docs/lockout.md: count, refuse, clear
        if liveness is False:
            warnings.warn("presentation-attack detection is OFF: a photo or a screen may be accepted "
                          "(research and tests only)", stacklevel=2)
        self._liveness: LivenessDetector | bool = liveness
        self._board = board
        self._pipeline: Pipeline | None = None
        self._record: ModelOfRecord | None = None
        self.stage_hook = stage_hook

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

    def load_models(self) -> None:
        """Load the embedder and the PAD models now (a camera attempt's time budget is for frames).

        A store that is there must be one made for this embedder (StoreError naming both otherwise).
        """
        _ = self.extractor, self.liveness
        if os.path.lexists(self.home / STORE_FILE):
            self._read()

    def model_of_record(self) -> ModelOfRecord:
        """The model this verifier's templates come from: what a store it creates records, and what
        decides (an injected extractor's model, else the board's embedder; no model is loaded)."""
        if self._record is None:
            self._record = (model_of_record(embedder=self.extractor.model_id) if self._injected
                            else model_of_record(self.board))
        return self._record

    def _check_model(self, model_id: str, dim: int) -> None:
        """StoreError, naming both, unless the store was made for this verifier's model and dimension."""
        mine = self.model_of_record()
        if (model_id, dim) != (mine.model_id, mine.dim):
            raise StoreError(f"the store in {self.home} holds {model_id} templates ({dim}-d), but the pipeline "
                             f"in force runs {mine.model_id} ({mine.dim}-d): templates of two models are never "
                             f"compared; use a board whose embedder is {model_id}, or erase the store and enrol "
                             f"again under {mine.model_id}")

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
        """The store handle, opened once; waits for a success's clear still being written (:meth:`settle`).

        The handle keeps no template and no key between operations: only the claims and
        lockouts of the file version it last read (:meth:`fr_pbd.store.Store.claims`).
        """
        self.settle()
        if self._store is None:
            if not self._home_checked:  # ssh StrictModes: nobody else may swap the home or a directory above it
                check_home_parents(self.home)
                self._home_checked = True
            self._store = Store.open(self.home)
        return self._store

    def settle(self) -> None:
        """Wait until the lockout clears of this verifier's successes are written (docs/lockout.md).

        Called by every store operation of this verifier, and to be called before a daemon
        stops (process exit waits for them anyway). A clear that could not be written (the
        count stays one higher, the safe direction) raises its error here, once.
        """
        self._attempts.settle()

    def _read(self) -> "tuple[Store, ClaimsView]":
        """The handle and the claims and lockouts now (from the store's cache while the file is unchanged).

        The handle is opened afresh once if the key custody changed.
        """
        store = self.store()
        try:
            view = store.claims()
        except KeyProviderError:
            if not os.path.lexists(self.home / STORE_FILE):
                raise
            self._store = None  # e.g. `fr-pbd keys migrate` in another process: the header names a new provider
            store = self.store()
            view = store.claims()
        self._check_model(view.model_id, view.dim)
        return store, view

    def _open_for_enrolment(self) -> Store:
        if not os.path.lexists(self.home / STORE_FILE):
            raise ConsentError("set a fallback PIN or passphrase first (fr-pbd fallback set): "
                               "face verification must never be the only way in")
        store = self.store()
        view = store.read()
        if not view.has_fallback:
            raise ConsentError("set a fallback PIN or passphrase first (fr-pbd fallback set): "
                               "face verification must never be the only way in")
        self._check_model(view.model_id, view.dim)
        return store

    def _prove(self, store: Store, fallback: object, what: str) -> None:
        """The fallback credential, rate limited like every entry; ConsentError if it is not given right."""
        if not isinstance(fallback, str) or not fallback:
            raise ConsentError(f"{what} needs the fallback PIN or passphrase (proof that the household agrees)")
        result = store.fallback_attempt(fallback)
        if result == "locked":
            left = store.read().fallback_lockout.retry_after()
            raise ConsentError(f"the fallback PIN is locked for {left} s after too many wrong "
                               f"entries; nothing was changed")
        if result != "accepted":
            raise ConsentError("wrong fallback PIN or passphrase; nothing was changed")

    def check_enrolment(self, user: str, fallback: str | None = None) -> None:
        """Everything :meth:`enroll` checks before it looks at a face: name, store, account, and the proof.

        Without ``fallback`` all but the proof (so the CLI can say "set a fallback
        first" before it asks for one). The CLI calls it before it shows the consent
        text: no image is read before consent. Raises ValueError / ConsentError;
        writes nothing but the PIN's attempt count.
        """
        check_user_name(user)
        store = self._open_for_enrolment()
        self._binding(store.read(), user)
        if fallback is not None:
            self._prove(store, fallback, "enrolment")

    @staticmethod
    def _binding(view, user: str) -> int | None:
        """The uid to bind ``user`` to (None: no account of that name); ConsentError if it changed."""
        uid = account_uid(user)
        if view.template_count(user) and view.uid_of(user) != uid:
            raise ConsentError(f"the Unix account {user!r} is not the one {user!r} was enrolled for "
                               f"(deleted, re-created or created since): unenroll {user!r} first")
        return uid

    def enroll(self, user: str, images: Iterable[ImageSource], consent: Consent | None, *, fallback: str) -> int:
        """Record the opt-in and add one template per image; returns the user's template count.

        Proof first (``docs/lockout.md``): the store's fallback PIN/passphrase,
        ``fallback``, must be given right (rate limited: 5 wrong entries lock it
        30 s, doubling) before any image is looked at. Every image must pass the
        enrolment gate, and for a user who already has templates every new image
        must match them at the verification threshold (as phones ask for the
        passcode and the enrolled face before adding an appearance). The name is
        bound to the Unix account of that name (its uid) if there is one.
        Nothing is written unless all of this holds (but the PIN's attempt count).
        """
        if not isinstance(consent, Consent):
            raise ConsentError("enrolment needs the user's explicit consent (a Consent record)")
        check_user_name(user)
        images = list(images)
        if not images:
            raise ValueError("enrolment needs at least one image")
        store = self._open_for_enrolment()
        self._prove(store, fallback, "enrolment")
        uid = self._binding(store.read(), user)
        ext = self.extractor
        templates = []
        for i, image in enumerate(images, 1):
            try:
                templates.append(ext.template(image, "enrol"))
            except QualityError as exc:
                raise QualityError(exc.reason, f"{_where(image, i)}: {exc}") from None
        with store.transaction() as tx:
            if not tx.has_fallback:
                raise ConsentError("set a fallback PIN or passphrase first (fr-pbd fallback set): "
                                   "face verification must never be the only way in")
            if self._binding(tx, user) != uid:
                raise ConsentError(f"the Unix account {user!r} changed during enrolment; nothing was stored")
            self._check_model(tx.model_id, tx.dim)  # the store may have been made anew meanwhile
            if tx.template_count(user):
                matcher = tx.matcher()
                thr = self.threshold(tx.model_id)
                for i, (image, t) in enumerate(zip(images, templates), 1):
                    if not matcher.matches(t, thr, user):
                        raise ConsentError(f"{_where(image, i)} does not match {user}'s enrolled face: only the "
                                           f"same person can be added to {user}; nothing was stored")
            tx.record_consent(user, text_version=consent.text_version, device_id=consent.device_id, uid=uid)
            return tx.add_templates(user, templates)

    def precheck(self, user: str | None = None) -> Outcome | None:
        """The no an attempt for ``user`` would get before any frame is taken, else None.

        ``unknown_user``, ``account_changed`` or ``locked`` (with ``retry_after``): a
        claim that cannot succeed never costs a frame, and is not counted.
        """
        _store, view = self._read()
        return self._attempts.precheck(view, user)

    def verify(self, image: ImageSource, user: str | None = None) -> Outcome:
        """Yes or no for one image, and why. ``user``: that user's templates only; None: any enrolled user's.

        Locked out, or a claimed user that is not enrolled (or whose account
        changed): no, without looking at the image, not counted. No usable face:
        no, not counted. Otherwise the attempt is counted as a failure under the
        exclusive lock before the comparison and cleared if it succeeds (the
        clear is written after the answer: :meth:`settle`). A presentation
        attack: no, counted.
        """
        return self.verify_frames(iter((image,)), user)

    def attempt(self, source: FrameSource, user: str | None = None, *, max_frames: int = 1,
                until: float | None = None) -> Outcome:
        """One camera attempt (the daemon's and ``fr-pbd verify --camera``'s): the claim and the lock are
        checked first, and only then is the source opened, for this attempt only."""
        with stage(self.stage_hook, "store_read"):
            store, view = self._read()
        refused = self._attempts.precheck(view, user)
        if refused is not None:
            return refused
        with source.attempt() as frames:
            return self._attempt(frames, user, max_frames, until, store)

    def verify_frames(self, frames: Iterator[ImageSource], user: str | None = None, *,
                      max_frames: int = 1, until: float | None = None) -> Outcome:
        """One attempt over up to ``max_frames`` frames: yes at the first frame that is live and matches.

        The camera path (``docs/lockout.md``): a user who blinked or turned away in
        the first frame is not refused for it. Each frame goes through liveness and
        the embedder; the attempt is counted once, under the exclusive lock, before
        the first comparison (so a multi-frame attempt is one attempt for the
        lockout); it is cleared if a frame matches (after the answer). A presentation
        attack in any frame, with no frame matching, is a counted no. No new frame is
        started once ``until`` (``time.monotonic()``) would be passed by a frame as slow
        as the slowest so far. A source that fails after the first frame ends the
        attempt; one that fails on the first frame raises (CameraError).
        """
        with stage(self.stage_hook, "store_read"):
            store, view = self._read()
        refused = self._attempts.precheck(view, user)
        if refused is not None:
            return refused
        return self._attempt(frames, user, max_frames, until, store)

    def _attempt(self, frames: Iterator[ImageSource], user: str | None, max_frames: int, until: float | None,
                 store: Store) -> Outcome:
        """The frames of one attempt, after its pre-check (docs/lockout.md: count, compare, clear)."""
        if max_frames < 1:
            raise ValueError("an attempt needs at least one frame")
        hook = self.stage_hook
        counting: list[Future] = []  # the count, started beside the embedder of the first usable frame

        def usable() -> None:
            if not counting:
                counting.append(self._attempts.start_count(store, user, hook))

        def counted() -> Counted | Outcome:
            return counting[0].result() if counting else self._attempts.count(store, user)

        try:
            return self._frames(frames, user, max_frames, until, store, usable, counted)
        finally:
            for f in counting:  # an error on the way: the count still lands before the next store operation
                f.exception()

    def _frames(self, frames: Iterator[ImageSource], user: str | None, max_frames: int, until: float | None,
                store: Store, usable: Callable[[], None], counted: Callable[[], "Counted | Outcome"]) -> Outcome:
        hook = self.stage_hook
        count: Counted | None = None  # set when the attempt is counted (before the first comparison)
        attack, quality, decide, slowest = False, None, 0.0, 0.0
        for k in range(max_frames):
            t_frame = time.monotonic()
            if k and until is not None and t_frame + slowest > until:
                break
            try:
                image = next(frames)
            except StopIteration:
                break
            except CameraError:
                if k == 0:
                    raise
                break
            try:
                probe = self.extractor.template(image, "verify", check=self._check_presentation, hook=hook,
                                                on_usable=usable)
            except QualityError as exc:
                quality = exc.reason
                slowest = max(slowest, time.monotonic() - t_frame)
                continue
            except _PresentationAttack:
                attack = True
                slowest = max(slowest, time.monotonic() - t_frame)
                continue
            if count is None:
                t0 = time.perf_counter()
                result = counted()
                decide += time.perf_counter() - t0
                if isinstance(result, Outcome):  # locked, or the claim went away, since the pre-check
                    return self._decided(hook, decide, result)
                count = result
            with stage(hook, "match"):
                accepted = count.matcher.matches(probe, count.threshold, user)
            if accepted:
                written, count = count.written, None
                t0 = time.perf_counter()
                self._attempts.clear_after_answer(store, user, written, hook)
                decide += time.perf_counter() - t0
                return self._decided(hook, decide, Outcome(True, ACCEPTED))
            slowest = max(slowest, time.monotonic() - t_frame)
        if attack and count is None:  # an attack is a presentation to the lock: it counts
            t0 = time.perf_counter()
            result = counted()
            decide += time.perf_counter() - t0
            if isinstance(result, Outcome):
                return self._decided(hook, decide, result)
            count = result
        if count is not None and hook is not None:
            hook("decide", decide)
        if attack:
            return Outcome(False, PRESENTATION_ATTACK)
        if count is not None:
            return Outcome(False, NO_MATCH)
        if quality is None or quality == _QUALITY_NO_FACE:
            return Outcome(False, NO_FACE)
        return Outcome(False, LOW_QUALITY, detail=quality)

    @staticmethod
    def _decided(hook: StageHook | None, decide: float, outcome: Outcome) -> Outcome:
        if hook is not None:
            hook("decide", decide)
        return outcome

    def set_fallback(self, secret: str, *, current: str | None = None) -> None:
        """Set the fallback PIN/passphrase (creating the store on first use); replacing it needs ``current``.

        A store created here records the model of record (:meth:`model_of_record`).

        At least 6 characters (a PIN of 6 digits or more), not one character
        repeated, not a straight run of digits. ``current`` is checked like any
        entry (rate limited) before anything changes.
        """
        check_strength(secret)
        self.settle()
        record = self.model_of_record()
        store = open_or_create_store(self.home, record.model_id, record.dim)
        if store.read().has_fallback:
            if current is None:
                raise ConsentError("a fallback credential is already set: give the current one to replace it")
            self._prove(store, current, "replacing the fallback credential")
        store.set_fallback(secret)

    def check_fallback(self, secret: str) -> FallbackCheck:
        """The alternative to the face: works while the face is locked, and a right entry clears every face lockout.

        Rate limited on its own (5 wrong entries, then 30 s doubling; counted
        before the comparison); a face success does not clear it. While it is
        locked the entry is not compared: not accepted, ``locked``, with ``retry_after``.
        """
        store = self.store()
        result = store.fallback_attempt(secret)
        if result == "accepted":
            self._attempts.forget_lock(None)
            return FallbackCheck(True)
        return FallbackCheck(False, locked=result != "wrong",
                             retry_after=store.read().fallback_lockout.retry_after())

    @staticmethod
    def default_model_id() -> str:
        """The default board's embedder (for tests that build a store by hand); a store made by a
        verifier records :meth:`model_of_record`, the embedder of the board in force."""
        from fr_pbd.pipeline import DEFAULT_EMBEDDER

        return DEFAULT_EMBEDDER


def _where(image: object, i: int) -> str:
    return str(image) if isinstance(image, (str, Path)) else f"image {i}"
