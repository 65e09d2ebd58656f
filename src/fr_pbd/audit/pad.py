"""SEC.presentation-attack: attack presentations of an enrolled person must be refused.

ISO/IEC 30107-3 measures a system's presentation-attack detection by the impostor attack
presentation acceptance rate (IAPAR), per attack species (a print, a screen replay, a mask):
the share of attack presentations, made with an artefact of an enrolled person, that the
system accepted. The audit shows the product each declared species ``per_species`` times,
each followed by a bona fide photo of the same person (so a product that locks after a few
failures is unlocked again, and a refusal is shown to be the attack's, not the lock's), and
FAILs on any accept. An attack that does not show the person of its bona fide photo proves
nothing when refused: fr-pbd's own matcher (no liveness, its threshold) checks each pair
before it is presented, and such a species is INCONCLUSIVE.

    [probe]
    attacks = [{ species = "replay", image = "replay.jpg", genuine = "live.jpg" },
               "print.jpg"]                # a path alone: the species is its file name, genuine = [probe] genuine

Command line: ``--attack [SPECIES=]IMG`` (repeatable; the first is also C5.timing's attack
frame) with ``--attack-subject IMG`` (the bona fide photo of the person the attacks show;
default ``--genuine``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fr_pbd.audit.checks import FAIL, PASS, TITLE_FROM_TABLE, Check, inconclusive
from fr_pbd.errors import AuditError

__all__ = ["Attack", "PER_SPECIES", "parse_attacks", "same_subject", "present", "run_presentations",
           "sec_presentation_attack", "PAD_NEEDS"]

PER_SPECIES = 3
PAD_NEEDS = ("--attack [SPECIES=]IMG, repeatable (TARGET.toml: [probe] attacks): photos, prints or screen replays "
             "of a person enrolled in the product, with --attack-subject IMG, a bona fide photo of that person")


@dataclass(frozen=True)
class Attack:
    species: str
    image: bytes
    genuine: bytes  # a bona fide photo of the person the attack shows (enrolled in the product)
    source: str  # where the attack image came from, for the evidence (never its pixels)


def parse_attacks(value: object, where: str, *, path_of: Callable[[object, str], Path],
                  genuine: bytes | None) -> list[Attack]:
    """``[probe] attacks`` (a list of paths or ``{species, image, genuine}`` tables)."""
    if not isinstance(value, list) or not value:
        raise AuditError(f"{where}: [probe] attacks must be a non-empty list of images or tables")
    out: list[Attack] = []
    for i, item in enumerate(value, 1):
        if isinstance(item, str):
            item = {"image": item}
        if not isinstance(item, dict) or set(item) - {"species", "image", "genuine"} or "image" not in item:
            raise AuditError(f"{where}: [probe] attacks item {i} must be a path or a table with image (and "
                             "optionally species, genuine)")
        img = path_of(item["image"], f"[probe] attacks item {i} image")
        gen = path_of(item["genuine"], f"[probe] attacks item {i} genuine") if "genuine" in item else None
        species = item.get("species", img.stem)
        if not isinstance(species, str) or not species.strip() or len(species) > 64:
            raise AuditError(f"{where}: [probe] attacks item {i}: species must be a short name")
        try:
            data = img.read_bytes()
            bona = gen.read_bytes() if gen is not None else genuine
        except OSError as exc:
            raise AuditError(f"{where}: [probe] attacks item {i}: {exc.filename}: {exc.strerror}") from None
        if bona is None:
            raise AuditError(f"{where}: [probe] attacks item {i} needs genuine (or [probe] genuine): a bona fide "
                             "photo of the person the attack shows")
        out.append(Attack(species.strip(), data, bona, str(img)))
    if len({a.species for a in out}) != len(out):
        raise AuditError(f"{where}: [probe] attacks: each species once (give species = \"...\" to tell them apart)")
    return out


def same_subject(attacks: list[Attack]) -> dict[str, str | None]:
    """species -> None when the attack shows the person of its bona fide photo (fr-pbd's matcher, no liveness,
    at its threshold), else why its refusal would prove nothing."""
    import tempfile

    from fr_pbd import models
    from fr_pbd.errors import FrPbdError
    from fr_pbd.pipeline import build_pipeline

    try:
        ext = build_pipeline(liveness=False).extractor
    except FrPbdError as exc:
        return {a.species: f"the audit could not load fr-pbd's matcher to check the attack's subject: {exc}"
                for a in attacks}
    out: dict[str, str | None] = {}
    with tempfile.TemporaryDirectory(prefix="fr-pbd-audit-pad-") as tmp:
        for a in attacks:
            paths = []
            for name, data in (("attack", a.image), ("genuine", a.genuine)):
                p = Path(tmp) / f"{len(out)}-{name}.img"
                p.write_bytes(data)
                paths.append(p)
            try:
                va, vg = (ext.template(p, "verify").vector for p in paths)
            except FrPbdError as exc:
                out[a.species] = f"no usable face in the attack or its bona fide photo ({exc})"
                continue
            out[a.species] = None if float(va @ vg) >= models.threshold(ext.model_id) else (
                "the attack does not show the person of its bona fide photo (fr-pbd's matcher, no liveness, at its "
                "threshold): its refusal would prove nothing")
    return out


def present(attacks: list[Attack], valid: dict[str, str | None], show: Callable[[str, bytes], None],
            ask: Callable[[str], object], per_species: int = PER_SPECIES) -> list[tuple[str, str | None, str | None]]:
    """Show each valid species ``per_species`` times, each followed by its bona fide photo.

    ``show(label, image)`` puts a frame in front of the product; ``ask(label)`` asks it and returns an
    answer with ``outcome`` (``"yes"``, ``"no"`` or None). Returns (species, the attack's outcome, the
    following bona fide outcome) per presentation."""
    out = []
    for a in attacks:
        if valid.get(a.species) is not None:
            continue
        for i in range(per_species):
            show(f"attack {a.species}", a.image)
            atk = ask(f"presentation attack {a.species}, {i + 1}")
            show(f"bona fide of {a.species}'s subject", a.genuine)
            bona = ask(f"bona fide photo after attack {a.species}, {i + 1}")
            out.append((a.species, getattr(atk, "outcome", None), getattr(bona, "outcome", None)))
    return out


def run_presentations(res, attacks: list[Attack], frames, ask: Callable[[str], object],
                      per_species: int = PER_SPECIES) -> None:
    """Check each attack's subject, then show the valid ones through ``frames`` (a FramePlan) and ``ask``;
    the outcomes go to ``res.pad``, the species left out (and why) to ``res.pad_invalid``."""
    res.pad_invalid = same_subject(attacks)

    def show(_label: str, image: bytes) -> None:
        frames.images["pad"] = image
        frames.present("pad")

    res.pad = present(attacks, res.pad_invalid, show, ask, per_species)


def sec_presentation_attack(res) -> Check:
    title = TITLE_FROM_TABLE
    cid = "SEC.presentation-attack"
    if res is None or res.error:
        why = res.error if res is not None else "no product was asked"
        return inconclusive(cid, "SEC", title, f"attack presentations were not shown: {why}",
                            "a product the audit can ask (--socket or a TARGET.toml)")
    skipped = [f"{sp}: {why}" for sp, why in res.pad_invalid.items() if why]
    if not res.pad:
        return inconclusive(cid, "SEC", title, skipped[0] if skipped else
                            "no attack presentation of an enrolled person was declared", PAD_NEEDS, skipped)
    per: dict[str, dict[str, int]] = {}
    for species, atk, bona in res.pad:
        c = per.setdefault(species, {"presented": 0, "accepted": 0, "unanswered": 0, "bona_fide_accepted": 0})
        c["presented"] += 1
        c["accepted"] += atk == "yes"
        c["unanswered"] += atk is None
        c["bona_fide_accepted"] += bona == "yes"
    lines = [f"{sp}: IAPAR {c['accepted']}/{c['presented']} (attack presentations accepted), the bona fide photo "
             f"after each accepted {c['bona_fide_accepted']}/{c['presented']}" for sp, c in per.items()]
    lines.append("ISO/IEC 30107-3: IAPAR = attack presentations accepted / attack presentations, per species; "
                 "each attack followed by a bona fide photo of the same person")
    values = {"species": {sp: {**c, "iapar": c["accepted"] / c["presented"]} for sp, c in per.items()}}
    bad = [sp for sp, c in per.items() if c["accepted"]]
    if bad:
        c = per[bad[0]]
        return Check(cid, "SEC", title, FAIL, f"the product accepted {c['accepted']} of {c['presented']} "
                     f"{bad[0]} attack presentations of an enrolled person (IAPAR {c['accepted']}/{c['presented']})",
                     lines + skipped, values)
    unproven = [sp for sp, c in per.items() if c["bona_fide_accepted"] == 0 or c["unanswered"]]
    if unproven or skipped:
        why = (f"{unproven[0]}: the bona fide photo shown between the attacks was never accepted, or an attack "
               "went unanswered: a refusal then proves no detection" if unproven else skipped[0])
        return inconclusive(cid, "SEC", title, why, PAD_NEEDS, lines + skipped, values)
    return Check(cid, "SEC", title, PASS,
                 "every attack presentation refused, " + ", ".join(f"{sp} IAPAR 0/{c['presented']}"
                                                                 for sp, c in per.items())
                 + "; the bona fide photo between them accepted", lines, values)
