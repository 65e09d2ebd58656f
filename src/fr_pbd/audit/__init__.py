"""``fr-pbd audit``: executable evidence for the five conditions of the household exemption.

Runs a conformance suite against an installation (``--home``, optionally a
running daemon ``--socket``) and writes ``audit.json`` (a ``checks`` list:
``id``, ``condition``, ``title``, ``status`` PASS/FAIL/INCONCLUSIVE,
``evidence``) and a self-contained ``audit.html``. The result is PASS only when
every check ran and passed; FAIL when any check fails; otherwise INCOMPLETE,
with the evidence that is missing and the option or tool that supplies it
(``missing_evidence``). What the product says about itself (its egress record,
its own log lines about itself) is shown as a self-report and decides nothing.

The checks do not take fr-pbd's word for anything: the store is parsed and
decrypted by an independent reader (:mod:`fr_pbd.audit.storefacts`), files are
scanned byte by byte (:mod:`fr_pbd.audit.scan`), the daemon is driven through
its socket and watched with ``strace`` (:mod:`fr_pbd.audit.probe`). Each check
is a row of one table (:mod:`fr_pbd.audit.table`: id, condition, title, the function on an
fr-pbd home, the black-box function); ``docs/conditions.md`` lists its condition, enforcing
module and test.

Side effects, on purpose and bounded: ``--verifications N`` (default 3) live
verifications through the daemon, which count towards the lockout like any
attempt when no enrolled face is in front of the camera; one wrong fallback PIN
checked read-only (nothing is written, no lockout counted).
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
from pathlib import Path
from typing import Any, Sequence

from fr_pbd.audit import files as _f
from fr_pbd.audit.checks import FAIL, INCONCLUSIVE, PASS, RESULT_FAIL, RESULT_INCOMPLETE, RESULT_PASS, Check, overall
from fr_pbd.audit.probe import FramePlan
from fr_pbd.audit.table import CHECKS, Context, run_checks
from fr_pbd.egress import record_path
from fr_pbd.errors import AuditError

__all__ = ["Check", "CHECKS", "run_audit", "run_target", "build_report", "write_reports", "overall", "DEFAULT_ROUNDS",
           "DEFAULT_VERIFICATIONS", "FramePlan", "PASS", "FAIL", "INCONCLUSIVE", "RESULT_PASS", "RESULT_FAIL",
           "RESULT_INCOMPLETE"]

DEFAULT_VERIFICATIONS = 3
#: Untraced timing rounds of every probe frame class (C5.timing).
DEFAULT_ROUNDS = 8


def run_audit(home: str | os.PathLike[str], *, socket_path: str | os.PathLike[str] | None = None,
              eval_report: str | os.PathLike[str] | None = None, logs: Sequence[str | os.PathLike[str]] = (),
              verifications: int = DEFAULT_VERIFICATIONS, passphrase: str | None = None,
              use_strace: bool = True, frames: FramePlan | None = None, rounds: int = DEFAULT_ROUNDS,
              peer_uid: int | None = None, attacks: Sequence[Any] = ()) -> list[Check]:
    """Run every check; never raises for a finding (a finding is a FAIL with evidence).

    ``frames``: how to show the daemon probe frames (its frames directory and the
    genuine/impostor/attack images), for C5.timing; without it that check is
    INCONCLUSIVE. ``peer_uid``: a second, unprivileged uid the daemon serves; the answers are also asked
    as it and must be byte-identical to root's (without it C5.answer is INCONCLUSIVE on an fr-pbd home).
    ``attacks``: :class:`fr_pbd.audit.pad.Attack` presentations of an enrolled person (SEC.presentation-attack).
    """
    from fr_pbd.audit.network import analyse
    from fr_pbd.audit.probe import FRPBD_PROTOCOL, probe
    from fr_pbd.audit.storefacts import read_store

    home_p = Path(home)
    if not home_p.is_dir():
        raise AuditError(f"{home_p} is not a directory (give the fr-pbd home with --home)")
    if verifications < 0 or verifications > 50:
        raise AuditError("--verifications must be between 0 and 50")
    if rounds < 0 or rounds > 100:
        raise AuditError("--timing-rounds must be between 0 and 100")
    sock = Path(socket_path) if socket_path else None
    if eval_report is not None and not Path(eval_report).is_file():
        raise AuditError(f"the evaluation report {eval_report} does not exist")
    facts = read_store(home_p, passphrase)
    result = probe(sock, FRPBD_PROTOCOL, verifications=verifications, use_strace=use_strace, frames=frames,
                   rounds=rounds, peer_uid=peer_uid, attacks=list(attacks)) if sock is not None else None
    nf = analyse(result) if result is not None and not result.error else None
    src = _f.gather([home_p], [Path(p) for p in logs], [], nf, _writable(result),
                    why_not_observed=_why_not_observed(result), also_allowed=_egress_record_of(sock))
    declared = [*map(str, logs), *([str(sock), str(record_path(sock))] if sock is not None else [])]
    ctx = Context(home=home_p, facts=facts, socket=sock, result=result, nf=nf, src=src,
                  eval_report=Path(eval_report) if eval_report else None, extra={"declared": declared})
    return run_checks(ctx)


def run_target(target: str | os.PathLike[str], *, verifications: int = DEFAULT_VERIFICATIONS,
               use_strace: bool = True, rounds: int = DEFAULT_ROUNDS) -> tuple[list[Check], dict[str, Any]]:
    """Black-box mode (:mod:`fr_pbd.audit.target`): every check that does not need fr-pbd's store format.

    Returns the checks and the description of the installation for the report.
    """
    from fr_pbd.audit import target as _t
    from fr_pbd.audit.invoke import probe_invoke
    from fr_pbd.audit.network import analyse
    from fr_pbd.audit.probe import probe
    from fr_pbd.audit.storefacts import read_store

    t = _t.load_target(target)
    home = t.home
    if t.eval_report is not None and not t.eval_report.is_file():
        raise AuditError(f"the evaluation report {t.eval_report} does not exist")
    facts = read_store(home) if home is not None else None
    run = _t.running(t)
    try:
        with run:
            if run.invoke is not None:  # a program run (or a PAM login) per verification, traced from its start
                result = probe_invoke(run.invoke, verifications=verifications, use_strace=use_strace,
                                      frames=t.frames, rounds=rounds, lock_attempts=t.lockout_after,
                                      logs=run.run_logs, daemon=t.socket if t.pam is not None else None,
                                      pam=t.pam is not None, attacks=t.attacks)
            else:
                result = probe(t.socket, t.protocol, verifications=verifications, use_strace=use_strace,
                               frames=t.frames, rounds=rounds, peer_uid=t.peer_uid, lock_attempts=t.lockout_after,
                               attacks=t.attacks)
            result.notes[:0] = run.notes
            result.declared_children = t.children
            nf = analyse(result) if not result.error else None
            src = _f.gather(t.data_dirs, [*t.log_files, *run.outputs], t.log_dirs, nf, _writable(result),
                            metadata=t.metadata, why_not_observed=_why_not_observed(result),
                            also_allowed=_egress_record_of(t.socket) if home is not None and t.socket else None)
            src.findings()  # scan while the product still runs (and before its temporary output goes)
            ctx = Context(home=home, facts=facts, socket=t.socket, result=result, nf=nf, src=src,
                          eval_report=t.eval_report, target=t, extra={"missing_dirs": run.missing_dirs,
                                                                    "declared": t.declared_in_home()})
            checks = run_checks(ctx)  # while the product runs: its socket and files are as it keeps them
    finally:
        run.cleanup()
    info = t.describe()
    info["live_verifications"] = verifications
    return checks, info


def _writable(result) -> list[str]:
    """Files open for writing, or mapped shared and writable, in any snapshot of the probe."""
    if result is None:
        return []
    return list(dict.fromkeys(p for snap in result.snapshots for p in snap.writable_files()))


def _egress_record_of(sock: Path | None):
    """fr-pbd's daemon writes its egress-guard record beside its socket (a temporary file, then a rename)."""
    if sock is None:
        return None
    folder, record = os.path.abspath(sock.parent), os.path.abspath(record_path(sock))

    def allowed(path: str) -> bool:
        p = os.path.abspath(path)
        return p == record or (os.path.dirname(p) == folder and os.path.basename(p).startswith(".fr-pbd-tmp-"))
    return allowed


def _why_not_observed(result) -> str | None:
    if result is None:
        return "no daemon was given"
    if result.error:
        return result.error
    if result.events is None:
        return result.trace_error
    return None


def build_report(checks: list[Check], *, home: Path | None = None, socket_path: Path | None = None,
                 eval_report: Path | None = None, verifications: int = 0,
                 installation: dict[str, Any] | None = None) -> dict[str, Any]:
    """audit.json's content. ``installation`` (black-box mode) replaces the fr-pbd home's description."""
    from fr_pbd._version import __version__

    counts = {s: sum(1 for c in checks if c.status == s) for s in (PASS, FAIL, INCONCLUSIVE)}
    if installation is None:
        installation = {
            "home": str(home), "socket": str(socket_path) if socket_path else None,
            "eval_report": str(eval_report) if eval_report else None,
            "live_verifications": verifications if socket_path else 0,
            "host": socket.gethostname(), "auditor_uid": os.getuid(),
        }
    return {
        "schema": "fr-pbd/audit/2",
        "tool": f"fr-pbd {__version__} audit",
        "created_utc": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "result": overall(checks),
        "counts": counts,
        "missing_evidence": [{"check": c.id, "needs": c.needs} for c in checks if c.status == INCONCLUSIVE],
        "installation": installation,
        "checks": [c.to_dict() for c in checks],
    }


def write_reports(report: dict[str, Any], checks: list[Check], out: str | os.PathLike[str]) -> tuple[Path, Path]:
    from fr_pbd.audit import report as _r

    out_p = Path(out)
    try:
        out_p.mkdir(parents=True, exist_ok=True)
        return _r.write_json(report, out_p), _r.write_html(report, checks, out_p)
    except OSError as exc:
        raise AuditError(f"cannot write the report to {out_p}: {exc.strerror or exc}") from None
