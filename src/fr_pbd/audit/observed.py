"""The checks that watch the running product: its socket (C3), what leaves it (C3), its answers (C5)."""

from __future__ import annotations

import os
import stat
from collections import Counter
from pathlib import Path

from fr_pbd.audit import procfs, stats
from fr_pbd.audit.checks import FAIL, INCONCLUSIVE, PASS, TITLE_FROM_TABLE, Check, inconclusive
from fr_pbd.audit.network import NetworkFacts
from fr_pbd.audit.probe import CLASSES, LOCKED, ProbeResult

__all__ = ["c3_socket", "c3_network", "c5_answer", "c5_timing", "SOCKET_NEEDS", "FRAMES_NEEDS"]

SOCKET_NEEDS = "--socket PATH of the running daemon"
STRACE_NEEDS = ("strace (apt-get install strace) and the right to attach to the daemon: run the audit as root "
                "(or as the daemon's user, if the daemon is dumpable)")
FRAMES_NEEDS = ("--frames DIR (the directory the daemon reads its frames from) with --genuine IMG (an enrolled "
                "person), --impostor IMG (someone else) and --attack IMG (a photo of a photo); the no-face frame "
                "is made by the audit")
_ANY_WRITE = 0o022
PEER_NEEDS = ("--peer-uid UID (TARGET.toml: [probe] peer_uid): a second, unprivileged uid the product serves; the "
              "audit asks as it (setpriv, with the socket's group) and as root for the same frame; run it as root")


def _unreachable(cid: str, cond: str, title: str, res: ProbeResult | None, what: str) -> Check | None:
    if res is None:
        return inconclusive(cid, cond, title, f"no daemon was given: {what}", SOCKET_NEEDS)
    if res.error:
        return inconclusive(cid, cond, title, res.error, f"a daemon answering at {res.socket}",
                            res.notes + [a.describe() for a in res.answers])
    return None


# --------------------------------------------------------------------------------------
# C3.socket
# --------------------------------------------------------------------------------------
def c3_socket(sock: Path | None, res: ProbeResult | None) -> Check:
    title = TITLE_FROM_TABLE
    if sock is None and res is not None and res.shape != "socket":
        return Check("C3.socket", "C3", title, PASS,
                     "no socket: the product is a program run once per verification ([invoke]); it keeps nothing "
                     "listening that other users could connect to",
                     [f"{len(res.answers)} runs, each started by the audit and ended before the next"],
                     {"shape": "invoke"})
    if sock is None:
        return inconclusive("C3.socket", "C3", title, "no daemon was given: the socket was not checked", SOCKET_NEEDS)
    try:
        st = os.lstat(sock)
    except OSError as exc:
        return Check("C3.socket", "C3", title, FAIL, f"{sock}: {exc.strerror}")
    if not stat.S_ISSOCK(st.st_mode):
        return Check("C3.socket", "C3", title, FAIL, f"{sock} is not a socket")
    m = stat.S_IMODE(st.st_mode)
    uid = res.server_uid if res is not None else None
    bad, details = [], [f"{sock}: Unix socket, mode {m:04o}, owner uid {st.st_uid} (judged: the group and other "
                        "bits; others must have none)"]
    if res is not None:
        details += res.notes
    if m & 0o007:  # the owner's bits are the owner's business; connecting needs write permission
        bad.append(f"{sock} mode {m:04o} gives other users access (0{m & 0o007:o} for others; at most 0660: "
                   "owner and group)")
    if uid is not None and st.st_uid != uid:
        bad.append(f"{sock} is owned by uid {st.st_uid}, but the daemon runs as uid {uid} (SO_PEERCRED)")
    d = Path(os.path.abspath(sock)).parent
    while True:
        try:
            ds = os.stat(d)
        except OSError as exc:
            bad.append(f"cannot stat {d}: {exc.strerror}")
            break
        dm = stat.S_IMODE(ds.st_mode)
        trusted = {0} | ({uid} if uid is not None else set())
        line = f"{d}: mode {dm:04o}, owner uid {ds.st_uid}"
        if dm & _ANY_WRITE and not (dm & stat.S_ISVTX and ds.st_uid in trusted):
            bad.append(f"{line}: writable by {'others' if dm & 0o002 else 'its group'} without the sticky bit "
                       "of root or the daemon: they can replace the socket")
        elif ds.st_uid not in trusted and uid is not None:
            bad.append(f"{line}: owned by neither root nor the daemon's user, who can replace the socket")
        else:
            details.append(line + ": ok")
        if d.parent == d:
            break
        d = d.parent
    values = {"mode": f"{m:04o}", "owner_uid": st.st_uid, "daemon_uid": uid}
    if bad:
        return Check("C3.socket", "C3", title, FAIL, bad[0], bad + details, values)
    if uid is None:
        return inconclusive("C3.socket", "C3", title, "mode and directories are right, but the daemon did not answer, "
                            "so its user is unknown", f"a daemon answering at {sock}", details, values)
    return Check("C3.socket", "C3", title, PASS,
                 f"{sock}: mode {m:04o}, owned by the daemon's uid {uid}; no directory above it can be written by "
                 "others", details, values)


# --------------------------------------------------------------------------------------
# C3.network
# --------------------------------------------------------------------------------------
def _kernel_guard(res: ProbeResult) -> tuple[list[str], list[str]]:
    """fr-pbd's daemon runs under its kernel filter: every process of it must show ``Seccomp: 2`` (a filter) and
    ``NoNewPrivs: 1`` in /proc/PID/status, in every snapshot. (failures, evidence)."""
    bad, seen = [], {}
    for snap in res.snapshots:
        for pid, st in snap.status.items():
            if not st:
                continue
            seen[pid] = st
            if st.get("Seccomp") != "2" or st.get("NoNewPrivs") != "1":
                bad.append(f"pid {pid}: the kernel says Seccomp: {st.get('Seccomp', '?')}, NoNewPrivs: "
                           f"{st.get('NoNewPrivs', '?')} (fr-pbd's daemon runs under its seccomp filter: Seccomp: 2, "
                           "NoNewPrivs: 1): nothing in the kernel stops this process from opening a network socket")
    lines = [f"pid {p}: Seccomp: {s.get('Seccomp')}, NoNewPrivs: {s.get('NoNewPrivs')} (/proc/{p}/status)"
             for p, s in seen.items()]
    return list(dict.fromkeys(bad)), lines


def c3_network(res: ProbeResult | None, nf: NetworkFacts | None, strict: bool = False) -> Check:
    """``strict`` (an fr-pbd home): the daemon must also run under fr-pbd's kernel filter."""
    title = TITLE_FROM_TABLE
    early = _unreachable("C3.network", "C3", title, res, "its network use was not observed")
    if early:
        return early
    assert res is not None and nf is not None
    pid = res.server_pid
    if res.shape != "socket":
        details = [f"{sum(1 for a in res.answers if a.kind == 'live')} runs traced with strace -f -yy from their first "
                   "instruction, every process they started with them; the timing and lockout runs were not traced"]
    else:
        details = [f"daemon pid {pid} (from SO_PEERCRED), uid {res.server_uid}; processes inventoried: "
                   f"{len(res.polled_pids)}; kernel inventories: {len(res.snapshots)} snapshots + {res.polls} polls"]
        details += [f"serves the socket (traced and inventoried with its children): pid {p} ({procfs.comm(p)}), {why}"
                    for p, why in res.serving.items()]
        if res.served:
            details.append("the audit's connections the trace saw served (accepted and answered): " + ", ".join(
                f"pid {p} ({procfs.comm(p)}) {n}" for p, n in res.served.items()))
    if nf.traced:
        calls = ", ".join(f"{k} x{v}" for k, v in sorted(nf.calls.items())) or "none"
        fams = ", ".join(f"{k} x{v}" for k, v in sorted(nf.families.items())) or "none"
        details += [f"strace -f -yy {' '.join(f'-p {p}' for p in res.serving or [pid])}: traced calls: {calls}",
                    f"address families named: {fams}"]
        if nf.outputs:
            outs = [f"{o.label}: {len(o.data)} bytes in {o.calls} call(s)" for o in nf.outputs.values()]
            more = f"; and {len(outs) - 8} more" if len(outs) > 8 else ""
            details.append("data written (scanned by C3.plaintext-templates and C3.logs): "
                           + "; ".join(outs[:8]) + more)
    values = {"method": "strace" if nf.traced else "kernel inventory only", "pid": pid,
              "syscalls": dict(nf.calls), "families": dict(nf.families), "failures": len(nf.fail)}
    self_report = _egress_record(res)
    fail = list(nf.fail)
    if strict:
        guard_bad, guard_lines = _kernel_guard(res)
        fail += guard_bad
        details += guard_lines or ["no process status could be read (Seccomp, NoNewPrivs)"]
        values["kernel_guard"] = not guard_bad and bool(guard_lines)
        if not guard_lines:
            nf._once(nf.inconclusive, "the daemon's /proc/PID/status could not be read: its kernel filter is unknown")
    if fail:
        return Check("C3.network", "C3", title, FAIL, fail[0], fail + nf.inconclusive + nf.info + details,
                     values, self_report=self_report)
    if nf.inconclusive:
        return Check("C3.network", "C3", title, INCONCLUSIVE, nf.inconclusive[0],
                     nf.inconclusive + nf.info + details, values, needs=STRACE_NEEDS, self_report=self_report)
    if res.shape != "socket":
        return Check("C3.network", "C3", title, PASS,
                     f"the trace of {sum(1 for a in res.answers if a.kind == 'live')} runs, each from its first "
                     "instruction, saw no socket but Unix ones, no other local service and no data leave but the "
                     "exit status and the output streams (scanned as logs)",
                     nf.info + details, values, self_report=self_report)
    return Check("C3.network", "C3", title, PASS,
                 f"the kernel saw only Unix sockets in the daemon "
                 f"(pid {', '.join(map(str, res.serving or [pid]))}) and no child process; the trace saw no "
                 f"data leave except the answers, during {len(res.answers)} requests",
                 nf.info + details, values, self_report=self_report)


def _egress_record(res: ProbeResult) -> list[str]:
    import json

    from fr_pbd.egress import record_path

    if res.socket is None:
        return []
    path = record_path(res.socket)
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    non_unix = sum(n for fams in rec.get("seen", {}).values() for fam, n in fams.items()
                   if fam not in ("AF_UNIX", "no host"))
    return [f"{path} (the daemon's record about itself, pid {rec.get('pid')}): egress guard installed "
            f"{bool(rec.get('installed'))}, {non_unix} non-Unix socket event(s), {rec.get('refused_total', 0)} refused"]


# --------------------------------------------------------------------------------------
# C5
# --------------------------------------------------------------------------------------
def _peer_comparison(res: ProbeResult, strict: bool) -> tuple[list[str], list[str], list[str]]:
    """(problems, gaps, details) of the answers asked as a second, unprivileged uid beside root's."""
    problems, gaps, details = [], [], []
    if res.peer_uid is None:
        if strict:
            gaps.append("the answers were not also requested as a second, unprivileged uid, so a product that answers "
                        "other askers differently (a score to one uid, Y to root) is not excluded")
        return problems, gaps, details
    if res.peer_request is not None:
        named = res.peer_request != res.protocol.request
        details.append(f"root and uid {res.peer_uid} both asked {res.peer_request!r}" + (
            " (the question about that uid's own account: a product may verify an unprivileged asker only as "
            "itself)" if named else ""))
    for label, root, peer in res.peer_pairs:
        who = f"uid {res.peer_uid}"
        if peer.error:
            gaps.append(f"{label}: asked as {who}: no answer ({peer.error})")
        elif root.error:
            gaps.append(f"{label}: asked as root: no answer ({root.error})")
        elif peer.data != root.data:
            problems.append(f"{label}: {who} got a different answer from root's for the same frame ({peer.length} "
                            f"byte(s){', NOT a declared answer' if peer.outcome is None else ''} vs root's "
                            f"{root.length})")
        else:
            details.append(f"{label}: {who} and root got byte-identical answers ({root.length} byte(s), "
                           f"{root.outcome})")
    if not res.peer_pairs:
        gaps.append(f"no answer was requested as uid {res.peer_uid}")
    return problems, gaps, details


def c5_answer(res: ProbeResult | None, strict: bool = False) -> Check:
    """``strict`` (an fr-pbd home): the answers must also have been asked as a second uid, byte-identical."""
    proto = res.protocol if res is not None else None
    title = TITLE_FROM_TABLE
    early = _unreachable("C5.answer", "C5", title, res, "no answer was seen")
    if early:
        return early
    assert res is not None and proto is not None
    strict = strict and res.shape == "socket"  # a second asker is a daemon's question; the audit runs the others
    problems = []
    distinct = Counter(a.data for a in res.answers if not a.error and a.data)
    for a in res.answers:
        if a.error:
            problems.append(a.describe())
        elif a.kind == "malformed":
            if a.outcome == "yes":
                problems.append(f"{a.label}: answered the declared yes to a malformed request")
            elif a.outcome is None and not (proto.silent_close_ok and a.length == 0 and a.closed):
                problems.append(a.describe())
            elif not a.closed:
                problems.append(a.describe())
        elif a.outcome is None or not a.closed:
            problems.append(a.describe())
    if len(distinct) > 2:
        problems.append(f"{len(distinct)} different answers over {len(res.answers)} requests: more than yes and no")
    if res.alive_after_disconnect is False:
        problems.append("the daemon stopped answering after a client vanished mid-request")
    out = Counter(a.outcome or "undeclared" for a in res.answers if not a.error)
    lengths = Counter(a.length for a in res.answers if not a.error)
    values = {"requests": len(res.answers), "outcomes": dict(out), "lengths": {str(k): v for k, v in lengths.items()},
              "distinct_answers": len(distinct), "alive_after_disconnect": res.alive_after_disconnect}
    details = [proto.describe()] + [a.describe() for a in res.answers
                                    if a.kind != "timing" or a.outcome is None or a.error]
    details.append(f"{sum(1 for a in res.answers if a.kind == 'timing')} timed requests (see C5.timing)")
    peer_bad, peer_gaps, peer_lines = _peer_comparison(res, strict)
    problems += peer_bad
    details += peer_lines
    values["peer_uid"] = res.peer_uid
    if problems:
        return Check("C5.answer", "C5", title, FAIL, problems[0] + " (the extra bytes are not recorded here)",
                     problems + peer_gaps + details, values)
    if peer_gaps:
        return inconclusive("C5.answer", "C5", title, peer_gaps[0], PEER_NEEDS, peer_gaps + details, values)
    if res.shape != "socket":
        return Check("C5.answer", "C5", title, PASS,
                     f"{len(res.answers)} runs: every exit status a declared yes or no "
                     f"({', '.join(f'{k} {v}' for k, v in out.items())}), {len(distinct)} distinct "
                     "status(es); standard output and error are scanned as logs (C3.logs)", details, values)
    return Check("C5.answer", "C5", title, PASS,
                 f"{len(res.answers)} requests: every answer the declared yes or no "
                 f"({', '.join(f'{k} {v}' for k, v in out.items())}), then closed; malformed requests answered "
                 "no; alive after a client vanished mid-request",
                 details, values)


def _by_outcome(res: ProbeResult, close: bool) -> dict[str, dict[str, list[float]]]:
    """outcome -> probe class -> times (to the first byte, or to the close) of the timed answers with that outcome."""
    out: dict[str, dict[str, list[float]]] = {}
    for a in res.answers:
        t = a.close_seconds if close else a.seconds
        if a.kind == "timing" and a.cls and t is not None and not a.error and a.outcome:
            out.setdefault(a.outcome, {}).setdefault(a.cls, []).append(t)
    return out


def _judge_same_answer(groups: dict[str, dict[str, list[float]]]) -> tuple[stats.TimingVerdict | None, list[str],
                                                                            list[str]]:
    """The rule within each answer: only states that got the same answer are compared (the answer already
    tells yes from no). Returns the strongest verdict that tells apart (or the last one), its lines, the pairs."""
    found, lines, pairs = None, [], []
    for outcome in ("no", "yes"):
        per = {c: v for c, v in groups.get(outcome, {}).items() if len(v) >= stats.MIN_SAMPLES}
        names = list(per)
        pairs += [f"{a} vs {b} (both {outcome!r})" for i, a in enumerate(names) for b in names[i + 1:]]
        if len(per) < 2:
            continue
        v = stats.judge(per)
        lines += [f"answer {outcome!r}: {ln}" for ln in v.lines]
        if found is None or (v.tells_apart and not found.tells_apart) or (
                v.tells_apart == found.tells_apart and v.p < found.p):
            found = v
    return found, lines, pairs


def c5_timing(res: ProbeResult | None) -> Check:
    title = TITLE_FROM_TABLE
    early = _unreachable("C5.timing", "C5", title, res, "no answer was timed")
    if early:
        return early
    assert res is not None
    samples = res.timing
    v, lines, pairs = _judge_same_answer(_by_outcome(res, close=False))
    closes, close_lines, _ = _judge_same_answer(_by_outcome(res, close=True))  # the close can carry what the byte does not
    if closes is not None and closes.tells_apart and not (v is not None and v.tells_apart):
        v = closes
        lines = ["time to the close (the answer byte itself came at times that do not differ):"] + close_lines
    else:
        lines += ["time to the close: " + ln for ln in close_lines[:1]] or ["time to the close: not compared"]
    outcomes = {cls: Counter(a.outcome or "undeclared" for a in res.answers if a.cls == cls and not a.error)
                for cls in samples}
    details = [f"compared (only states that got the same answer: the answer itself already tells yes from no): "
               f"{'; '.join(pairs) if pairs else 'no pair'}"]
    details += lines + [f"{cls}: answers {dict(c)}" for cls, c in outcomes.items()]
    details.append(f"rule: within one answer, Kruskal-Wallis p < {stats.ALPHA}, |Cliff's delta| >= "
                   f"{stats.MIN_DELTA} and a median difference >= {stats.MIN_SHIFT_S * 1000:g} ms between two states "
                   "(docs/audit.md)")
    if res.lock_observed is False:
        details.append(f"the genuine frame was still accepted after {res.lock_attempts} failed attempts: no lockout "
                       "observed, so the locked-out state was not timed")
    values = {"kruskal_wallis_h": round(v.h, 3) if v else None, "p": v.p if v else None,
              "pair": list(v.pair) if v and v.pair else None, "cliffs_delta": round(v.delta, 3) if v else None,
              "median_difference_ms": round(v.shift_s * 1000, 3) if v else None,
              "samples": {k: len(s) for k, s in samples.items()}, "compared": pairs}
    wide = []
    for close, groups in ((False, _by_outcome(res, close=False)), (True, _by_outcome(res, close=True))):
        what = "close" if close else "answer"
        for outcome, per in groups.items():
            pooled = [t for ts in per.values() for t in ts]
            if len(pooled) < stats.MIN_SAMPLES:
                continue
            sp = stats.spread(pooled)
            values.setdefault("spread_ms", {})[f"{what} {outcome}"] = round(sp * 1000, 3)
            line = (f"spread of the {what} times of the answer {outcome!r} (n={len(pooled)}): interquartile range "
                    f"{sp * 1000:.2f} ms (a fixed deadline: at most {stats.MAX_SPREAD_S * 1000:g} ms)")
            if res.shape != "socket":  # every run starts processes: their start-up varies by more than the limit
                line += (" (not judged: each verification starts new processes, whose start-up time alone varies "
                         "by more; the states are still compared)")
            details.append(line)
            if sp > stats.MAX_SPREAD_S and res.shape == "socket":
                wide.append(line)
    if v is not None and v.tells_apart:
        assert v.pair is not None
        return Check("C5.timing", "C5", title, FAIL,
                     f"the answer time tells {v.pair[0]} from {v.pair[1]} apart, which got the same answer: median "
                     f"difference {v.shift_s * 1000:+.1f} ms, Cliff's delta {v.delta:+.2f}, Kruskal-Wallis "
                     f"p = {v.p:.2g}", details, values)
    if wide:
        return Check("C5.timing", "C5", title, FAIL,
                     f"the {wide[0].removeprefix('spread of the ')}: times that vary this much within one answer can "
                     "carry what the answer does not (a keyed channel looks like noise)", wide + details, values)
    missing = [c for c in CLASSES if len(samples.get(c, [])) < stats.MIN_SAMPLES]
    if missing:
        why = ("no probe frames were given" if res.frames_missing == list(CLASSES)
               else f"not timed: {', '.join(missing)}")
        return inconclusive("C5.timing", "C5", title, f"the answer times could not be compared: {why}",
                            FRAMES_NEEDS, details, values)
    if not any(a.outcome == "yes" for a in res.answers if a.cls == "genuine"):
        return inconclusive("C5.timing", "C5", title, "the genuine frame was never accepted, so the outcome "
                            "'yes' was not timed", "--genuine IMG showing a person enrolled in this installation",
                            details, values)
    if not pairs:
        return inconclusive("C5.timing", "C5", title, "no two states got the same answer often enough to be compared",
                            FRAMES_NEEDS, details, values)
    timed = [c for c in (*CLASSES, LOCKED) if c in samples]
    return Check("C5.timing", "C5", title, PASS,
                 f"{sum(len(s) for s in samples.values())} timed answers over {len(timed)} states "
                 f"({', '.join(timed)}): within each answer the time does not tell the states apart "
                 f"(p = {v.p:.2g})" if v else "", details, values)


# --------------------------------------------------------------------------------------
# SEC
# --------------------------------------------------------------------------------------
LOCKOUT_NEEDS = ("--frames with --genuine and --impostor (TARGET.toml: [probe] frames, genuine, impostor): the "
                 "genuine photo must be accepted before the failed attempts, for a refusal after them to mean a lock")


def sec_lockout(res: ProbeResult | None) -> Check:
    """After ``res.lock_attempts`` failed attempts in a row the genuine frame must be refused (every try).

    INCONCLUSIVE when the genuine frame was never accepted before (a refusal then proves nothing), when a
    "failed" attempt was accepted or unanswered (the failures were not in a row), or without the frames.
    """
    title = TITLE_FROM_TABLE
    early = _unreachable("SEC.lockout", "SEC", title, res, "no attempt was made")
    if early:
        return early
    assert res is not None
    n = res.lock_attempts
    seq = res.lock_sequence
    lines = [f"{label}: {outcome or ('no answer: ' + err if err else 'neither declared answer')}"
             for label, outcome, err in seq]
    values = {"attempts": n, "sequence": [o for _l, o, _e in seq]}
    if not seq:
        return inconclusive("SEC.lockout", "SEC", title, "the lockout was not tried: it needs a genuine and an "
                            "impostor (or attack) frame", LOCKOUT_NEEDS, values=values)
    genuine_before = [a for a in res.answers if a.cls == "genuine" and a.kind != "probe" and not a.error
                      and not a.label.startswith("genuine frame after")]
    if not any(a.outcome == "yes" for a in genuine_before):
        return inconclusive("SEC.lockout", "SEC", title, f"the genuine frame was not accepted at all before the "
                            f"failed attempts ({len(genuine_before)} tries): a refusal after them proves no lock",
                            LOCKOUT_NEEDS, lines, values)
    fails, tries = seq[:n], seq[n:]
    if any(o != "no" for _l, o, _e in fails):
        return inconclusive("SEC.lockout", "SEC", title, f"not {n} failures in a row: an attempt with the impostor "
                            "frame was not answered no", LOCKOUT_NEEDS, lines, values)
    accepted = [label for label, o, _e in tries if o == "yes"]
    if accepted:
        return Check("SEC.lockout", "SEC", title, FAIL, f"after {n} failed attempts in a row the genuine frame was "
                     f"accepted ({accepted[0]}): no lockout", lines, values)
    if any(o != "no" for _l, o, _e in tries):
        return inconclusive("SEC.lockout", "SEC", title, "a genuine try after the failures got no declared answer",
                            LOCKOUT_NEEDS, lines, values)
    return Check("SEC.lockout", "SEC", title, PASS, f"after {n} failed attempts in a row the genuine frame, accepted "
                 f"before, was refused {len(tries)} time(s) in a row", lines, values)
