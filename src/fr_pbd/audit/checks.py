"""The conformance checks, one function per check; each returns a :class:`Check` with its evidence."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fr_pbd.audit import scan
from fr_pbd.audit.storefacts import StoreFacts
from fr_pbd.store.migration import JOURNAL_FILE

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
STATUSES = (PASS, FAIL, INCONCLUSIVE)
#: The overall results: every check PASS; any check FAIL; else some evidence missing.
RESULT_PASS, RESULT_FAIL, RESULT_INCOMPLETE = "PASS", "FAIL", "INCOMPLETE"
SCRYPT_MIN = {"log2_n": 17, "r": 8, "p": 1}
MIN_ENTROPY = 7.9
MAX_SCAN_BYTES = 256 * 1024 * 1024
KNOWN_CONSENT_VERSIONS = ("1",)
EVAL_NEEDS = "--eval REPORT.json (an `fr-pbd eval lfw --groups FILE.csv` report for the store's model)"


#: A check function's title until the table of checks (:mod:`fr_pbd.audit.table`), the one place that names
#: each check, stamps its own on the result.
TITLE_FROM_TABLE = ""


@dataclass
class Check:
    id: str
    condition: str  # C1..C5 or DPIA
    title: str
    status: str
    summary: str
    details: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    #: INCONCLUSIVE only: the evidence that is missing and the option or tool that supplies it.
    needs: str | None = None
    #: What the audited product says about itself: shown, never used for the verdict.
    self_report: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {"id": self.id, "condition": self.condition, "title": self.title, "status": self.status,
             "evidence": {"summary": self.summary, "details": self.details, "values": self.values}}
        if self.needs:
            d["needs"] = self.needs
        if self.self_report:
            d["self_report"] = self.self_report
        return d


def inconclusive(cid: str, cond: str, title: str, summary: str, needs: str, details: list[str] | None = None,
                 values: dict[str, Any] | None = None) -> Check:
    """A check that could not gather its evidence: never a PASS."""
    return Check(cid, cond, title, INCONCLUSIVE, summary, details or [], values or {}, needs=needs)


def overall(checks: list[Check]) -> str:
    """FAIL if any check fails; INCOMPLETE if none fails but one could not gather its evidence; else PASS."""
    if any(c.status == FAIL for c in checks):
        return RESULT_FAIL
    if any(c.status != PASS for c in checks):
        return RESULT_INCOMPLETE
    return RESULT_PASS


def _mode(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


# --------------------------------------------------------------------------------------
# C1
# --------------------------------------------------------------------------------------
def c1_profile(home: Path) -> Check:
    from fr_pbd import config
    from fr_pbd.errors import ConfigError

    title = TITLE_FROM_TABLE
    try:
        cfg = config.load(home)
    except ConfigError as exc:
        return Check("C1.profile", "C1", title, FAIL, f"the configuration is not acceptable: {exc}")
    src = str(cfg.path) if cfg.path else f"no {config.CONFIG_FILE} in the home: built-in defaults"
    ok = cfg.profile == config.PROFILE_HOUSEHOLD
    return Check("C1.profile", "C1", title, PASS if ok else FAIL,
                 f"profile {cfg.profile!r} from {src}",
                 [f"daemon allowlist: uids {list(cfg.daemon.allowed_uids)}, gids {list(cfg.daemon.allowed_gids)}",
                  "features outside the exemption (identifying people who did not enrol, watching a scene, "
                  "sending results anywhere) do not exist in fr-pbd: there is no profile or key to enable them"],
                 {"profile": cfg.profile, "config_file": str(cfg.path) if cfg.path else None,
                  "allowed_uids": list(cfg.daemon.allowed_uids), "allowed_gids": list(cfg.daemon.allowed_gids)})


# --------------------------------------------------------------------------------------
# C2
# --------------------------------------------------------------------------------------
def _no_store(cid: str, cond: str, title: str, facts: StoreFacts) -> Check | None:
    if facts.meta is not None:
        return None
    why = "; ".join(facts.problems) or facts.decrypt_error or "unreadable"
    if facts.decrypt_error and "passphrase" in facts.decrypt_error:
        return inconclusive(cid, cond, title, f"cannot read the store's contents: {why}",
                            "the store passphrase on standard input (--passphrase-stdin)")
    return Check(cid, cond, title, FAIL, f"cannot read the store's contents: {why}")


def c2_consent(facts: StoreFacts) -> Check:
    title = TITLE_FROM_TABLE
    early = _no_store("C2.consent", "C2", title, facts)
    if early:
        return early
    users = facts.meta.get("users") or []
    details, bad = [], []
    for u in users:
        name = u.get("name", "?") if isinstance(u, dict) else "?"
        n = u.get("templates", 0) if isinstance(u, dict) else 0
        c = u.get("consent") if isinstance(u, dict) else None
        if not isinstance(c, dict) or not c.get("time") or not c.get("text_version"):
            bad.append(f"user {name!r}: {n} template(s) and NO consent record")
            continue
        if str(c.get("text_version")) not in KNOWN_CONSENT_VERSIONS:
            bad.append(f"user {name!r}: consent record names unknown consent text v{c.get('text_version')}")
            continue
        details.append(f"user {name!r}: {n} template(s); consent text v{c['text_version']} given {c['time']} "
                       f"on {c.get('device_id', '?')}")
    if bad:
        return Check("C2.consent", "C2", title, FAIL, "; ".join(bad), bad + details, {"users": len(users)})
    summary = (f"{len(users)} enrolled user(s), each with a consent record" if users
               else "no enrolled users (nothing to consent to)")
    return Check("C2.consent", "C2", title, PASS, summary, details, {"users": len(users)})


def c2_fallback(home: Path, facts: StoreFacts) -> Check:
    title = TITLE_FROM_TABLE
    early = _no_store("C2.fallback", "C2", title, facts)
    if early:
        return early
    fb = facts.meta.get("fallback")
    if not isinstance(fb, dict):
        return Check("C2.fallback", "C2", title, FAIL,
                     "no fallback credential is set: face verification would be the only way in",
                     ["set one with: fr-pbd fallback set"])
    try:
        params = {k: int(fb[k]) for k in ("log2_n", "r", "p")}
        salt, want = bytes.fromhex(fb["salt"]), bytes.fromhex(fb["hash"])
    except (KeyError, ValueError, TypeError):
        return Check("C2.fallback", "C2", title, FAIL, "the fallback record is malformed")
    weak = [k for k, v in SCRYPT_MIN.items() if params[k] < v]
    if fb.get("kdf") != "scrypt" or weak or len(salt) != 16 or len(want) != 32:
        return Check("C2.fallback", "C2", title, FAIL,
                     f"the fallback hash is below the minimum (kdf {fb.get('kdf')}, {params})")
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    before = hashlib.sha256(facts.path.read_bytes()).hexdigest()
    wrong = "audit-" + secrets.token_hex(12)  # cannot be anyone's PIN
    got = Scrypt(salt=salt, length=32, n=1 << params["log2_n"], r=params["r"], p=params["p"]).derive(wrong.encode())
    refused = not secrets.compare_digest(got, want)
    details = [f"scrypt N=2^{params['log2_n']}, r={params['r']}, p={params['p']}, 128-bit salt",
               f"a random wrong PIN is refused by the stored hash: {'yes' if refused else 'NO'}"]
    product = None
    try:
        from fr_pbd.store import Store

        product = Store.open(home).read().check_fallback(wrong)
        details.append(f"fr-pbd's own check refuses it too: {'yes' if product is False else 'NO'}")
    except Exception as exc:  # noqa: BLE001 - evidence, not a crash
        details.append(f"fr-pbd's own reader could not open the store: {exc}")
    unchanged = hashlib.sha256(facts.path.read_bytes()).hexdigest() == before
    details.append("the wrong attempt changed nothing (store bytes unchanged; no lockout counted)"
                   if unchanged else "the store changed during the check")
    ok = refused and product is not True and unchanged
    return Check("C2.fallback", "C2", title, PASS if ok else FAIL,
                 "a fallback credential is set (scrypt) and a wrong one is refused" if ok
                 else "the fallback credential does not behave as it must", details,
                 {"kdf": "scrypt", **params})


# --------------------------------------------------------------------------------------
# C3
# --------------------------------------------------------------------------------------
#: What fr-pbd writes in a home (relative paths); a temporary file of an atomic write is ``.fr-pbd-tmp-*``.
#: ``keys/kek.next`` and the key-change journal exist only while a key change runs or after one was
#: cut short (the next command finishes or rolls it back: docs/tpm.md, "Migration journal").
HOME_FILES = ("store.frpbd", "store.lock", "keys", "keys/kek", "keys/kek.next", JOURNAL_FILE, "config.toml")
TMP_PREFIX = ".fr-pbd-tmp-"


def unknown_in_home(home: Path, declared: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Every file and directory in the home that fr-pbd does not write, nor the auditor declared
    (``declared``: absolute paths, e.g. the daemon's ``--log`` file or its socket in the home)."""
    allowed = {os.path.abspath(p) for p in declared}
    out = []
    for base, dirs, files in os.walk(home, followlinks=False):
        for name in sorted(dirs + files):
            p = Path(base) / name
            rel = p.relative_to(home).as_posix()
            if rel in HOME_FILES or name.startswith(TMP_PREFIX) or os.path.abspath(p) in allowed:
                continue
            st = _mode(p)
            out.append(f"{p}" + (f" (mode {stat.S_IMODE(st.st_mode):04o}, {st.st_size} bytes)" if st else ""))
    return out


def c3_file_modes(home: Path, declared: tuple[str, ...] | list[str] = ()) -> Check:
    """Modes and owners of the home, store and key; and nothing in the home that fr-pbd does not write
    (an unknown file in a home is a modified product), unless the auditor declared it (``declared``)."""
    title = TITLE_FROM_TABLE
    uid = os.getuid()
    want = [(home, 0o700, True, "home"), (home / "store.frpbd", 0o600, False, "store.frpbd"),
            (home / "store.lock", 0o600, False, "store.lock"), (home / "keys", 0o700, True, "keys/"),
            (home / "keys" / "kek", 0o600, False, "keys/kek")]
    details, bad = [], []
    for path, mode, is_dir, label in want:
        st = _mode(path)
        if st is None:
            if label in ("store.lock", "keys/", "keys/kek"):
                details.append(f"{label}: absent")
                continue
            bad.append(f"{label}: missing")
            continue
        m = stat.S_IMODE(st.st_mode)
        kind_ok = stat.S_ISDIR(st.st_mode) if is_dir else stat.S_ISREG(st.st_mode)
        line = f"{label}: mode {m:04o} (expected {mode:04o}), owner uid {st.st_uid}"
        if not kind_ok:
            bad.append(f"{label}: is a {'symbolic link' if stat.S_ISLNK(st.st_mode) else 'wrong file type'}")
        elif m & 0o077:
            bad.append(f"{label} mode {m:04o} is open to group/others (expected {mode:04o})")
        elif st.st_uid != uid:
            bad.append(f"{label} is owned by uid {st.st_uid}, not by the user (uid {uid})")
        else:
            details.append(line + ": ok")
    cfg = _mode(home / "config.toml")
    if cfg is not None:
        m = stat.S_IMODE(cfg.st_mode)
        if m & 0o022 or cfg.st_uid not in (uid, 0) or not stat.S_ISREG(cfg.st_mode):
            bad.append(f"config.toml mode {m:04o} owner {cfg.st_uid}: others could edit the allowlist")
        else:
            details.append(f"config.toml: mode {m:04o}, owner uid {cfg.st_uid}: ok (not writable by others)")
    for u in unknown_in_home(home, declared):
        bad.append(f"{u}: not a file fr-pbd writes (an unknown file in a home is a modified product)")
    details.append(f"fr-pbd writes only {', '.join(HOME_FILES)} (and {TMP_PREFIX}* while it writes) in a home"
                   + (f"; declared by the auditor: {', '.join(str(d) for d in declared)}" if declared else ""))
    if bad:
        return Check("C3.file-modes", "C3", title, FAIL, "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more"
                     if len(bad) > 3 else ""), bad + details)
    return Check("C3.file-modes", "C3", title, PASS, "home 0700, store and key 0600, all owned by the user; nothing "
                 "else in the home", details)


# --------------------------------------------------------------------------------------
# C4
# --------------------------------------------------------------------------------------
def c4_cipher(facts: StoreFacts) -> Check:
    title = TITLE_FROM_TABLE
    if not facts.header_ok:
        return Check("C4.cipher", "C4", title, FAIL, "; ".join(facts.problems) or "no store header")
    bad = []
    if facts.version != 1:
        bad.append(f"format version {facts.version}")
    if facts.aead_id != 1:
        bad.append(f"AEAD is {facts.aead_name}, not AES-256-GCM")
    if facts.wrapped_len != 40:
        bad.append(f"wrapped data key is {facts.wrapped_len} bytes, not a wrapped 256-bit key (40)")
    if facts.key_file_bits is not None and facts.key_file_bits != 256:
        bad.append(f"key file holds a {facts.key_file_bits}-bit key")
    if facts.decrypt_error and "passphrase" not in facts.decrypt_error:
        bad.append(facts.decrypt_error)
    details = [f"header: format v{facts.version}, AEAD id {facts.aead_id} = {facts.aead_name}, flags {facts.flags}",
               (f"data key: 256 bits, sealed by the TPM (the header's {facts.wrapped_len}-byte key field holds its "
                "authorisation value)" if facts.provider_id == 3 else
                f"data key: 256 bits, wrapped with RFC 3394 AES key wrap ({facts.wrapped_len} bytes)"),
               f"key-encryption key: {facts.provider_name}"
               + (f", {facts.key_file_bits} bits" if facts.key_file_bits else ""),
               "GCM tag verified with the device's key: " + ("yes" if facts.decrypted else "not checked"),
               f"model id in the header: {facts.model_id}"]
    values = {"aead": facts.aead_name, "aead_id": facts.aead_id, "format_version": facts.version,
              "data_key_bits": 256 if facts.wrapped_len == 40 else None, "key_provider": facts.provider_name,
              "authenticated": facts.decrypted}
    if bad:
        return Check("C4.cipher", "C4", title, FAIL, "; ".join(bad), details, values)
    return Check("C4.cipher", "C4", title, PASS, f"{facts.aead_name}, 256-bit data key, {facts.provider_name}",
                 details, values)


def c4_kdf(facts: StoreFacts) -> Check:
    title = TITLE_FROM_TABLE
    items, bad = [], []
    if facts.provider_id == 2 and facts.kdf:
        k = facts.kdf
        items.append(f"store passphrase: {k['kdf']} N=2^{k['log2_n']} r={k['r']} p={k['p']}")
        if k["kdf"] != "scrypt" or any(k[n] < v for n, v in SCRYPT_MIN.items()):
            bad.append("store passphrase KDF below scrypt N=2^17, r=8, p=1")
    elif facts.provider_id == 1:
        items.append("store key: a random 256-bit key file, no key derivation")
    elif facts.provider_id == 3:
        items.append("store key: a random 256-bit data key sealed by the TPM, no key derivation")
    fb = (facts.meta or {}).get("fallback")
    if isinstance(fb, dict):
        try:
            k = {n: int(fb[n]) for n in SCRYPT_MIN}
            items.append(f"fallback PIN hash: {fb.get('kdf')} N=2^{k['log2_n']} r={k['r']} p={k['p']}")
            if fb.get("kdf") != "scrypt" or any(k[n] < v for n, v in SCRYPT_MIN.items()):
                bad.append("fallback PIN hash below scrypt N=2^17, r=8, p=1")
        except (KeyError, ValueError, TypeError):
            bad.append("fallback PIN hash parameters unreadable")
    kdfs = (facts.provider_id == 2) or isinstance(fb, dict)
    details = items + ["minimum (OWASP): scrypt N=2^17, r=8, p=1"]
    if bad:
        return Check("C4.kdf", "C4", title, FAIL, "; ".join(bad), details)
    if not kdfs:
        return Check("C4.kdf", "C4", title, PASS, "no key derivation in use (random key file, no fallback hash)",
                     details)
    return Check("C4.kdf", "C4", title, PASS, "every KDF in use meets scrypt N=2^17, r=8, p=1", details)


def c4_ciphertext(facts: StoreFacts) -> Check:
    title = TITLE_FROM_TABLE
    if not facts.data:
        return Check("C4.ciphertext", "C4", title, FAIL, "no store file")
    h = scan.entropy_bits_per_byte(facts.data)
    runs = [f for f in scan.scan(facts.data, scores=False) if f.kind == "template"]
    plain = [w for w in (b'"consent"', b'"users"', b"FRPL") if w in facts.data]
    bad = []
    if h < MIN_ENTROPY:
        bad.append(f"entropy {scan.fmt_bits(h)} bits/byte (ciphertext is ~8)")
    bad += [f"store file {r.describe()}" for r in runs[:3]]
    bad += [f"plaintext metadata marker {w.decode()} in the file" for w in plain]
    details = [f"{facts.size:,} bytes, Shannon entropy {scan.fmt_bits(h)} bits/byte (threshold {MIN_ENTROPY})",
               f"template-like number runs in any encoding: {len(runs)}"]
    values = {"entropy_bits_per_byte": round(h, 4), "size_bytes": facts.size, "float_runs": len(runs)}
    if bad:
        return Check("C4.ciphertext", "C4", title, FAIL, "; ".join(bad), details, values)
    return Check("C4.ciphertext", "C4", title, PASS,
                 f"entropy {scan.fmt_bits(h)} bits/byte; no plaintext template runs", details, values)


#: Who holds the key-encryption key, and what that protects against (C4.key).
CUSTODY = {
    1: ("a key file beside the store (keys/kek, 0600), software only: a copy of the disk reveals the templates",
        "protects a copy of the store file made without the key (a backup, a synced folder); not a copy of the "
        "disk or home, and not anyone who can read the user's files: the user, root, malware running as the user"),
    2: ("derived from a passphrase with scrypt when the store is opened; not stored",
        "protects the store on a device that is off or stolen, against anyone without the passphrase, as strong "
        "as the passphrase (which the audit cannot measure); not against anyone on the running device who sees "
        "the passphrase typed or the key in memory"),
    3: ("sealed by the TPM 2.0 under its storage root key, which never leaves the TPM (hardware custody)",
        "protects the key against a copy of the whole disk (the sealed object opens on this TPM only, and not "
        "after a TPM clear); not against code running on the device that asks this TPM to unseal it"),
}
#: Whether restoring an older copy of the store is detected (a TPM NV counter; docs/tpm.md).
ROLLBACK = {3: "rollback detected: the store's generation is bound to a TPM NV monotonic counter"}
NO_ROLLBACK = ("rollback NOT detected: no TPM counter, so restoring an older copy of the store brings back "
               "old lockout counters and withdrawn users")
HARDWARE_CUSTODY = ("sealed by hardware (a TPM or secure element)", "protects the key even against a copy of the "
                    "whole disk; not against code running on the unlocked device that asks the hardware to unseal it")


def weak_key(k: bytes) -> str | None:
    """Why ``k`` is not a random key, or None. A random 32-byte key fails none of these but with
    probability far below 2^-100."""
    if not k:
        return "empty"
    if len(set(k)) == 1:
        return f"every byte is 0x{k[0]:02x}" + (" (an all-zero key)" if k[0] == 0 else "")
    for p in range(1, len(k) // 2 + 1):
        if all(k[i] == k[i % p] for i in range(len(k))):
            return f"a pattern of {p} byte(s), repeated"
    d = (k[1] - k[0]) % 256
    if all((k[i + 1] - k[i]) % 256 == d for i in range(len(k) - 1)):
        return "a counting sequence"
    if all(0x20 <= b < 0x7F for b in k):
        return "printable text (a password used as a key?)"
    if len(k) >= 32 and len(set(k)) < 16:
        return f"low entropy: only {len(set(k))} different byte values in {len(k)} bytes"
    return None


def c4_key(facts: StoreFacts) -> Check:
    title = TITLE_FROM_TABLE
    if facts.provider_id in CUSTODY:
        where, protects = CUSTODY[facts.provider_id]
    else:
        where, protects = (f"unknown key provider {facts.provider_id}", "unknown")
    rollback = ROLLBACK.get(facts.provider_id or -1, NO_ROLLBACK)
    details = [f"key-encryption key: {where}", f"what that protects against: {protects}", rollback]
    if facts.provider_id != 3:
        details.append(f"not in use here: {HARDWARE_CUSTODY[0]} ({HARDWARE_CUSTODY[1]})")
    values = {"custody": where, "provider_id": facts.provider_id, "hardware_custody": facts.provider_id == 3,
              "rollback_detected": facts.provider_id == 3, "superseded_key_files": facts.superseded_key_files}
    if facts.superseded_key_files:  # a key file beside a store it does not wrap: it opens the older copies
        return Check("C4.key", "C4", title, FAIL, f"the key file {', '.join(facts.superseded_key_files)} of the "
                     "store's earlier custody is still in the home and opens every older copy of the store (an "
                     "unfinished key migration): the header's key custody is not the only one", details, values)
    if not facts.decrypted:
        if facts.decrypt_error and "passphrase" in facts.decrypt_error:
            return Check("C4.key", "C4", title, INCONCLUSIVE, "the keys cannot be checked without the passphrase",
                         details, values, needs="the store passphrase on standard input (--passphrase-stdin)")
        return Check("C4.key", "C4", title, FAIL, "the store does not open with its key: "
                     + (facts.decrypt_error or "; ".join(facts.problems) or "unreadable"), details, values)
    bad = []
    if facts.provider_id == 1:
        why = weak_key(facts.kek)
        if why:
            bad.append(f"the key file's key is not random: {why}")
    why = weak_key(facts.dek)
    if why:
        bad.append(f"the data key is not random: {why}")
    if facts.dek and facts.dek == facts.kek:
        bad.append("the data key equals the key-encryption key")
    if facts.nonce and (len(set(facts.nonce)) == 1 or weak_key(facts.nonce)):
        bad.append("the GCM nonce is not random (" + (weak_key(facts.nonce) or "fixed") + "): a reused nonce "
                   "breaks AES-GCM")
    details.append("key file key, data key and nonce: " + ("; ".join(bad) if bad else "no sign of a non-random value "
                   "(all-equal bytes, a repeated pattern, a counting sequence, printable text, < 16 byte values)"))
    if bad:
        return Check("C4.key", "C4", title, FAIL, bad[0], bad + details, values)
    return Check("C4.key", "C4", title, PASS, f"keys and nonce look random; key custody: {where}; "
                 f"{rollback.split(':')[0]}", details, values)


# --------------------------------------------------------------------------------------
# DPIA
# --------------------------------------------------------------------------------------
def dpia_provenance(facts: StoreFacts) -> Check:
    from fr_pbd import models
    from fr_pbd.capture import liveness, yunet
    from fr_pbd.errors import FrPbdError

    title = TITLE_FROM_TABLE
    # Detector, the store's embedder, and the PAD ensemble (on by default in every verification).
    names = [yunet.MODEL_NAME] + ([facts.model_id] if facts.model_id else []) + list(liveness.MODEL_NAMES)
    details, bad, values = [], [], {}
    for name in names:
        try:
            spec = models.spec(name)
        except FrPbdError:
            bad.append(f"model {name!r} (in use) has no manifest entry: provenance unknown")
            continue
        try:
            verified = models.status(name).verified
        except Exception:  # noqa: BLE001
            verified = None
        missing = [k for k in ("provenance", "training_data", "licence") if not str(getattr(spec, k)).strip()]
        if missing:
            bad.append(f"model {name}: no {', '.join(missing)} statement")
        how = "verified against" if verified else "NOT verified against"
        details.append(f"{name} ({spec.role}, {spec.licence}; file {how}"
                       f" its pinned sha256): provenance: {spec.provenance}")
        details.append(f"{name}: training data: {spec.training_data}")
        values[name] = {"role": spec.role, "licence": spec.licence, "sha256": spec.sha256,
                        "file_verified": verified}
    if bad:
        return Check("DPIA.model-provenance", "DPIA", title, FAIL, "; ".join(bad), details, values)
    return Check("DPIA.model-provenance", "DPIA", title, PASS,
                 f"{len(names)} model(s) in use, each with licence, provenance and training-data statement "
                 "(read them: the people in the training data did not consent)", details, values)


def _load_eval(path: Path | None) -> tuple[dict | None, str | None]:
    if path is None:
        return None, None
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"cannot read the evaluation report {path}: {exc}"
    if not isinstance(d, dict) or not str(d.get("schema", "")).startswith("fr-pbd/eval"):
        return None, f"{path} is not an fr-pbd evaluation report (schema fr-pbd/eval-*)"
    return d, None


def dpia_accuracy(eval_path: Path | None, facts: StoreFacts) -> Check:
    title = TITLE_FROM_TABLE
    d, err = _load_eval(eval_path)
    if eval_path is None:
        return inconclusive("DPIA.accuracy", "DPIA", title, "no evaluation report was given", EVAL_NEEDS)
    if err:
        return Check("DPIA.accuracy", "DPIA", title, FAIL, err)
    details = [f"report {eval_path}: {d.get('schema')}, created {d.get('created_utc')}, model {d.get('model_id')}",
               f"data: {(d.get('dataset') or {}).get('name')}, {d.get('images')} images, "
               f"{d.get('identities')} identities"]
    for key, op in (d.get("fnmr_at_fmr") or {}).items():
        if isinstance(op, dict):
            details.append(f"FNMR at FMR {key}: {op.get('fnmr')} (threshold {op.get('threshold')}, "
                           f"{op.get('impostor_comparisons')} impostor comparisons"
                           f"{'' if op.get('resolvable', True) else ', NOT resolvable with this data'})")
    details.append(f"EER {d.get('eer')}; 10-fold accuracy {d.get('accuracy_10fold_mean')}; FTA {d.get('fta_rate')}")
    values = {k: d.get(k) for k in ("model_id", "eer", "accuracy_10fold_mean", "fta_rate", "images")}
    if facts.model_id and d.get("model_id") and d.get("model_id") != facts.model_id:
        return Check("DPIA.accuracy", "DPIA", title, FAIL,
                     f"the report evaluates {d.get('model_id')}, but the store uses {facts.model_id}", details, values)
    return Check("DPIA.accuracy", "DPIA", title, PASS,
                 f"evaluation report for {d.get('model_id')} with FNMR at target FMRs", details, values)


def _claim(model_id: str) -> tuple[float | None, float | None, str | None]:
    """(installation threshold, claimed pairwise FMR, why not) from the model manifest.

    fr-pbd has no per-installation threshold: every decision uses the manifest's
    ``default_threshold`` (fr_pbd.models.threshold); the claim is its ``target_fmr``.
    """
    from fr_pbd import models
    from fr_pbd.errors import FrPbdError

    try:
        spec = models.spec(model_id)
    except FrPbdError:
        return None, None, f"model {model_id!r} has no manifest entry"
    target = spec.extra.get("target_fmr")
    if spec.default_threshold is None:
        return None, None, f"the manifest gives no threshold for {model_id}"
    if not isinstance(target, (int, float)) or not 0 < float(target) < 1:
        return spec.default_threshold, None, f"the manifest entry of {model_id} claims no target_fmr"
    return float(spec.default_threshold), float(target), None


def _curve_point(curve: dict, threshold: float) -> tuple[float, int, int, int, int] | None:
    """The curve point at or just below ``threshold`` (over-states FMR), or None below the curve."""
    ts = curve.get("thresholds") or []
    best = None
    for k, t in enumerate(ts):
        if t <= threshold and (best is None or t > ts[best]):
            best = k
    if best is None:
        return None
    return (float(ts[best]), int(curve["false_matches"][best]), int(curve["impostor_comparisons"]),
            int(curve["false_non_matches"][best]), int(curve["genuine_comparisons"]))


def dpia_bias(eval_path: Path | None, facts: StoreFacts | None = None) -> Check:
    """FAIL when the installation's threshold gives any labelled group a same-group FMR above
    the target the manifest claims, or when the report has no per-group curve to show it."""
    title = TITLE_FROM_TABLE
    d, err = _load_eval(eval_path)
    if eval_path is None:
        return inconclusive("DPIA.bias", "DPIA", title, "no evaluation report was given", EVAL_NEEDS)
    if err:
        return inconclusive("DPIA.bias", "DPIA", title, f"no usable evaluation report: {err}", EVAL_NEEDS)
    groups = d.get("groups")
    if not isinstance(groups, dict) or not groups.get("attributes"):
        return Check("DPIA.bias", "DPIA", title, FAIL,
                     "the evaluation report has no per-group analysis: nothing shows that every group gets the "
                     "false-match rate the product promises (run `fr-pbd eval lfw --groups FILE.csv`)")
    model_id = (facts.model_id if facts is not None and facts.model_id else None) or d.get("model_id")
    if facts is not None and facts.model_id and d.get("model_id") and d.get("model_id") != facts.model_id:
        return inconclusive("DPIA.bias", "DPIA", title,
                            f"the report evaluates {d.get('model_id')}, but the store uses {facts.model_id}: "
                            "no per-group figures for the installed model", EVAL_NEEDS)
    if not model_id:
        return inconclusive("DPIA.bias", "DPIA", title, "neither the store nor the report names the model",
                            EVAL_NEEDS)
    threshold, target, why = _claim(str(model_id))
    if why:
        return inconclusive("DPIA.bias", "DPIA", title, f"no claim to check: {why}",
                            "a default_threshold and a target_fmr in the model's manifest entry")
    details = [f"installation: model {model_id}, threshold {threshold} (the manifest's default_threshold; fr-pbd "
               f"has no per-installation threshold); claimed FMR <= {target:g} for every labelled group "
               "(same-group impostors: both identities in the group)",
               f"report {eval_path}: groups file {groups.get('groups_file')}, created {d.get('created_utc')}"]
    wg = groups.get("worst_group") or {}
    if wg:
        details.append(f"the report's own operating points: global threshold {groups.get('threshold')} "
                       f"({groups.get('threshold_source')}), worst-group threshold {wg.get('threshold')} for FMR "
                       f"{wg.get('target_fmr')} (bound by {wg.get('binding')})")
    bad, unresolved, values_g, det = [], [], {}, {}
    for attr, a in groups["attributes"].items():
        for name, s in (a.get("groups") or {}).items():
            key = f"{attr}={name}"
            curve = s.get("curve")
            if not isinstance(curve, dict):
                bad.append(f"{key}: the report gives no per-group curve, so the FMR at {threshold} cannot be read "
                           "(a report made before per-group curves; run the evaluation again)")
                continue
            pt = _curve_point(curve, threshold)
            if pt is None:
                bad.append(f"{key}: the installation's threshold {threshold} is below the report's curve")
                continue
            t, fm, im, fnm, gn = pt
            fmr = fm / im if im else None
            fnmr = fnm / gn if gn else None
            line = (f"{key}: FMR {fmr:.3g} ({fm:,} of {im:,} same-group impostor comparisons), FNMR "
                    f"{'n/a' if fnmr is None else f'{100 * fnmr:.1f} %'} at {t:.6g}, the curve point at or below "
                    f"{threshold} (FMR there is at least the FMR at {threshold}: a conservative reading)"
                    if fmr is not None else f"{key}: no same-group impostor comparisons")
            boot = (s.get("at_worst_group_threshold") or {}).get("fmr_ci95_bootstrap")
            if boot and wg:
                line += (f"; per-identity bootstrap 95 % at the report's worst-group threshold: "
                         f"[{boot[0]:.3g}, {boot[1]:.3g}]")
            details.append(line)
            values_g[key] = {"curve_threshold": t, "fmr": fmr, "false_matches": fm, "impostor_comparisons": im,
                             "fnmr": fnmr}
            if isinstance(s.get("det"), dict):
                det[key] = {"fmr": s["det"].get("fmr"), "fnmr": s["det"].get("fnmr"), "point": [fmr, fnmr]}
            if fmr is None or im * target < 1.0:
                unresolved.append(f"{key}: {im:,} impostor comparisons cannot show FMR {target:g}")
            elif fmr > target:
                bad.append(f"{key}: FMR {fmr:.3g} at threshold {threshold} is {fmr / target:.2f} times the claimed "
                           f"{target:g}")
    values = {"model_id": model_id, "threshold": threshold, "target_fmr": target, "groups": values_g,
              "det_per_group": det}
    if bad:
        return Check("DPIA.bias", "DPIA", title, FAIL, "; ".join(bad), details, values)
    if unresolved:
        return inconclusive("DPIA.bias", "DPIA", title, "; ".join(unresolved),
                            "an evaluation with more comparisons per group", details, values)
    return Check("DPIA.bias", "DPIA", title, PASS,
                 f"at threshold {threshold}, every one of {len(values_g)} labelled group(s) has a same-group FMR "
                 f"<= the claimed {target:g} (read conservatively from the report's curve)", details, values)
