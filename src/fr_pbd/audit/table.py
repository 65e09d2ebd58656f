"""The audit's checks, in one table: id, condition, title, the function on an fr-pbd home, the black-box function.

Every report lists the checks in this order; ``docs/audit.md``'s table of checks is
held to it by ``tests/test_audit_table.py``. A row's ``run`` is used where the
audit can read fr-pbd's store (``--home``, or a TARGET.toml with ``store =
"fr-pbd"``); ``black_box`` for any other product. ``black_box = None`` means the
check does not depend on the store format: ``run`` serves both. :data:`FROM_OUTSIDE`
marks a check that cannot be made from outside the product (INCONCLUSIVE, with
what would supply the evidence).

A row's function takes the :class:`Context` of one audit: what was gathered once
(the store read, the probe, the files) and is shared by every check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fr_pbd.audit import checks, files, images, model, observed, pad, target
from fr_pbd.audit.checks import Check

__all__ = ["Context", "CheckSpec", "CHECKS", "FROM_OUTSIDE", "ids", "spec", "run_checks"]


@dataclass
class Context:
    """What one audit gathered; every check reads it, none changes it."""

    home: Path | None = None  # an fr-pbd home (None: a black box)
    facts: Any = None  # storefacts.StoreFacts of the home's store
    socket: Path | None = None
    result: Any = None  # probe.ProbeResult, or None when no daemon was given
    nf: Any = None  # network.NetworkFacts
    src: Any = None  # files.Sources
    eval_report: Path | None = None
    target: Any = None  # target.Target (black-box mode)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def black_box(self) -> bool:
        return self.facts is None


def _outside(ctx: Context) -> Check:  # never called: a marker (see run_checks)
    raise AssertionError


#: The black-box function of a check that cannot be made from outside the product.
FROM_OUTSIDE: Callable[[Context], Check] = _outside


@dataclass(frozen=True)
class CheckSpec:
    id: str
    condition: str  # C1..C5, SEC or DPIA
    title: str
    run: Callable[[Context], Check]
    black_box: Callable[[Context], Check] | None = None
    black_box_title: str | None = None

    def evaluate(self, ctx: Context) -> Check:
        if ctx.black_box and self.black_box is FROM_OUTSIDE:
            return target.black_box(self.id, self.condition, self.black_box_title or self.title)
        fn = self.black_box if ctx.black_box and self.black_box is not None else self.run
        c = fn(ctx)
        title = self.black_box_title if ctx.black_box and self.black_box_title else self.title
        return replace(c, id=self.id, condition=self.condition, title=title)


def _c(name: str) -> Callable[..., Check]:
    return getattr(checks, name)


def _o(name: str) -> Callable[..., Check]:
    return getattr(observed, name)


def _f(name: str) -> Callable[..., Check]:
    return getattr(files, name)


def _t(name: str) -> Callable[..., Check]:
    return getattr(target, name)


def _declared(name: str) -> Callable[[Context], Check]:
    """A DPIA row's black-box function: read the model the TARGET.toml declares in [model]
    (:mod:`fr_pbd.audit.model`); without one, out of reach from outside, as every store check."""
    def run(ctx: Context) -> Check:
        declared = getattr(ctx.target, "model", None)
        if declared is None:
            c = target.black_box("", "DPIA", "")
            return replace(c, needs=f"{c.needs}; or a [model] table declaring the model, its metric and threshold")
        fn = getattr(model, name)
        return fn(declared) if name == "dpia_provenance" else fn(declared, ctx.eval_report)
    return run


def _server_uid(ctx: Context) -> int | None:
    return ctx.result.server_uid if ctx.result is not None else None


CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("C1.profile", "C1", "Deployment profile is household-device-access",
              lambda x: _c("c1_profile")(x.home), FROM_OUTSIDE),
    CheckSpec("C2.consent", "C2", "Every enrolled user has a consent record",
              lambda x: _c("c2_consent")(x.facts), FROM_OUTSIDE),
    CheckSpec("C2.fallback", "C2", "Fallback PIN/passphrase is set and works",
              lambda x: _c("c2_fallback")(x.home, x.facts), FROM_OUTSIDE),
    CheckSpec("C3.file-modes", "C3", "Home, store and key: private modes, owned by the user; nothing else in the home",
              lambda x: _c("c3_file_modes")(x.home, x.extra.get("declared", ())),
              lambda x: _t("c3_data_modes")(x.target, _server_uid(x), x.extra.get("missing_dirs", ())),
              "The product's data and logs: not readable by other users, owned by the product or root"),
    CheckSpec("C3.plaintext-templates", "C3", "No template data in any file or stream the product writes",
              lambda x: _f("c3_plaintext_templates")(x.src)),
    CheckSpec("C3.face-images", "C3", "No face image at rest: every image the product keeps, writes or holds open "
              "is decoded and searched for a face",
              lambda x: images.c3_face_images(x.src, getattr(x.target, "raw_frames", None))),
    CheckSpec("C3.socket", "C3", "Daemon socket: owned by the daemon's user, 0660 or stricter, in a directory "
              "others cannot write", lambda x: _o("c3_socket")(x.socket, x.result)),
    CheckSpec("C3.network", "C3", "Nothing leaves the daemon but its answer: no network socket, no child process, "
              "no other local process", lambda x: _o("c3_network")(x.result, x.nf, strict=not x.black_box)),
    CheckSpec("C3.logs", "C3", "No scores in logs or in any file or stream the product writes",
              lambda x: _f("c3_logs")(x.src)),
    CheckSpec("C4.cipher", "C4", "Store encrypted with AES-256-GCM under a 256-bit key",
              lambda x: _c("c4_cipher")(x.facts), FROM_OUTSIDE),
    CheckSpec("C4.kdf", "C4", "Key derivation parameters at or above the minimums",
              lambda x: _c("c4_kdf")(x.facts), FROM_OUTSIDE),
    CheckSpec("C4.ciphertext", "C4", "Store file looks like ciphertext: ~8 bits/byte, no plaintext floats",
              lambda x: _c("c4_ciphertext")(x.facts), lambda x: _t("c4_data_ciphertext")(x.target),
              "The product's data files look like ciphertext (~8 bits/byte)"),
    CheckSpec("C4.key", "C4", "Keys are random, nonces not fixed; key custody stated",
              lambda x: _c("c4_key")(x.facts), FROM_OUTSIDE),
    CheckSpec("C5.answer", "C5", "Every answer is the declared yes or the declared no (fr-pbd: one byte, Y or N), "
              "the same to every asker, and nothing else", lambda x: _o("c5_answer")(x.result, strict=not x.black_box)),
    CheckSpec("C5.timing", "C5", "The answer time (and the close) does not tell the reason apart, nor carry more than a fixed deadline",
              lambda x: _o("c5_timing")(x.result)),
    CheckSpec("SEC.lockout", "SEC", "After 5 failed attempts in a row (or the declared number) the genuine face is refused (a lockout)",
              lambda x: _o("sec_lockout")(x.result)),
    CheckSpec("SEC.presentation-attack", "SEC", "Attack presentations of an enrolled person (print, screen "
              "replay, ...) are refused: IAPAR per species (ISO/IEC 30107-3)",
              lambda x: pad.sec_presentation_attack(x.result)),
    CheckSpec("DPIA.model-provenance", "DPIA", "Model provenance and training data stated for every model in use",
              lambda x: _c("dpia_provenance")(x.facts), _declared("dpia_provenance")),
    CheckSpec("DPIA.accuracy", "DPIA", "Accuracy measured by the book (ISO/IEC 19795-1, FNMR at FMR)",
              lambda x: _c("dpia_accuracy")(x.eval_report, x.facts), _declared("dpia_accuracy")),
    CheckSpec("DPIA.bias", "DPIA", "Every labelled group within the claimed FMR at the installation's threshold "
              "(ISO/IEC 19795-10)", lambda x: _c("dpia_bias")(x.eval_report, x.facts), _declared("dpia_bias")),
)
_BY_ID = {s.id: s for s in CHECKS}


def ids() -> list[str]:
    return [s.id for s in CHECKS]


def spec(cid: str) -> CheckSpec:
    return _BY_ID[cid]


def run_checks(ctx: Context) -> list[Check]:
    """Every check of the table, in its order, on what ``ctx`` gathered."""
    return [s.evaluate(ctx) for s in CHECKS]
