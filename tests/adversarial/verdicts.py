"""Every check's verdict for every product of the corpus: the table of a closing note, before and after a change.

Runs the audit of the checkout it is imported from (put another checkout's ``src`` first on
``PYTHONPATH`` to get that one's verdicts) on every corpus product: each trick of
``dishonest_daemon.py`` against a correct fr-pbd home, fr-pbd's own daemon, the Howdy-like
target and the honest product with real products' habits (``shapes.py``). Prints one JSON
object per product ({"product": ..., "checks": {id: status}}) as it goes.

    FR_PBD_MODELS=... FR_PBD_DATA=... python tests/adversarial/verdicts.py [--only NAME ...] > verdicts.jsonl
    python tests/adversarial/verdicts.py --table before.jsonl after.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the repository root: tests.* importable

TRICKS_OLD = ("honest", "tcp-write", "tcp-send", "udp-sendto", "udp-fresh", "child-net", "score-file", "score-home",
              "timing", "close-delay", "extra-byte", "local-relay", "pipe-relay", "anti-trace", "template-out",
              "binary-file", "binary-log", "signal", "tracer-aware")


def _kw(fn, **kw):
    names = inspect.signature(fn).parameters
    return {k: v for k, v in kw.items() if k in names}


def _wait_listening(sock: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"product exited {proc.returncode}")
        if sock.exists():
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(sock))
                    return
            except OSError:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"{sock} not listening")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--table", nargs=2, metavar=("BEFORE", "AFTER"))
    ap.add_argument("--peer-uid", type=int, default=None,
                    help="the second asker's uid (default: an account made for the run, removed after)")
    a = ap.parse_args()
    if a.table:
        return table(*a.table)
    with contextlib.ExitStack() as stack:
        if a.peer_uid is None:  # never an account the host may or may not have (nobody, daemon, ...)
            from tests.helpers import own_account_name, own_accounts

            a.peer_uid = stack.enter_context(own_accounts(own_account_name("vpeer")))[0].pw_uid
        return run(a)


def run(a: argparse.Namespace) -> int:
    from fr_pbd.audit import FramePlan, run_audit, run_target
    from fr_pbd.audit.probe import no_face_png
    from fr_pbd.pipeline import build_pipeline
    from tests.adversarial import dishonest_daemon
    from tests.test_daemon import make_enrolled_home, write_config

    data = Path(os.environ["FR_PBD_DATA"])
    faces, spoof = data / "faces", data / "spoof"
    work = Path(tempfile.mkdtemp(prefix="fr-pbd-verdicts-", dir="/tmp"))
    os.chmod(work, 0o711)
    template = make_enrolled_home(work / "template-home", faces, build_pipeline(liveness=False).extractor)
    tricks = [t for t in dishonest_daemon.TRICKS if t != "anti-trace"]
    want = set(a.only) if a.only else None
    peer = {"peer_uid": a.peer_uid}
    sink = socket.create_server(("127.0.0.1", 0))  # for the tricks that connect at start-up (never read)

    def emit(name: str, checks) -> None:
        print(json.dumps({"product": name, "checks": {c.id: c.status for c in checks}}), flush=True)

    def fresh_home(name: str) -> Path:
        h = work / name / "home"
        h.parent.mkdir(mode=0o711)
        shutil.copytree(template, h)
        return h

    def frames_for(root: Path) -> FramePlan:
        fr = root / "frames"
        fr.mkdir()
        shutil.copyfile(faces / "obama3.jpg", fr / "current.jpg")
        return FramePlan(fr, "current.jpg", {"genuine": (faces / "obama3.jpg").read_bytes(),
                                             "impostor": (faces / "biden2.jpg").read_bytes(),
                                             "attack": (spoof / "spoof_print_F1.jpg").read_bytes(),
                                             "no-face": no_face_png()})

    # fr-pbd's own daemon, on its home
    if want is None or "fr-pbd daemon" in want:
        home = fresh_home("frpbd")
        write_config(home, f"allowed_uids = [0, {a.peer_uid}]\nallowed_gids = [0]\n", deadline_ms=400)
        pad = {}
        try:  # a screen replay of an enrolled person (SEC.presentation-attack), where the audit has the check
            from fr_pbd.audit.pad import Attack
            from fr_pbd.verify import Consent, Verifier
            from tests.test_daemon import PIN

            Verifier(home, build_pipeline(liveness=False).extractor).enroll(
                "pad-subject", [spoof / "live_T1.jpg"], Consent("1", "verdicts"), fallback=PIN)
            pad = {"attacks": [Attack("replay", (spoof / "spoof_replay_F2.jpg").read_bytes(),
                                      (spoof / "live_T1.jpg").read_bytes(), "spoof_replay_F2.jpg")]}
        except ImportError:
            pass
        plan = frames_for(home.parent)
        run = home.parent / "run"
        run.mkdir(mode=0o711)
        sock = run / "d.sock"
        p = subprocess.Popen([sys.executable, "-m", "fr_pbd.cli", "serve", "--home", str(home), "--socket", str(sock),
                              "--frames", str(plan.directory), "--log", str(home / "daemon.log")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_listening(sock, p)
            emit("fr-pbd daemon", run_audit(home, socket_path=sock, frames=plan, rounds=5, verifications=1,
                                            logs=[home / "daemon.log"], **_kw(run_audit, **peer, **pad)))
        finally:
            p.kill()
            p.wait()
    for trick in tricks:
        if want is not None and trick not in want:
            continue
        home = fresh_home(f"trick-{trick}")
        plan = frames_for(home.parent)
        sock = home.parent / "d.sock"
        out = home.parent / "out.bin"
        cmd = [sys.executable, str(HERE / "dishonest_daemon.py"), "--socket", str(sock), "--frames",
               str(plan.directory), "--genuine", str(faces / "obama3.jpg"), "--trick", trick, "--port", str(sink.getsockname()[1]),
               "--out", str(out), "--home", str(home)]
        relay = None
        if trick == "local-relay":  # it connects to --out, a local service of this process that reads what comes
            relay = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            relay.bind(str(out))
            relay.listen(4)
            relay.settimeout(120)

            def drain(srv: socket.socket = relay) -> None:
                try:
                    conn, _ = srv.accept()
                    conn.settimeout(120)
                    while conn.recv(4096):
                        pass
                except OSError:
                    pass
            threading.Thread(target=drain, daemon=True).start()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_listening(sock, p)
            emit(f"dishonest daemon: {trick}", run_audit(home, socket_path=sock, frames=plan, rounds=5,
                                                         verifications=2, **_kw(run_audit, **peer)))
        except RuntimeError as exc:
            print(json.dumps({"product": f"dishonest daemon: {trick}", "error": str(exc)}), flush=True)
        finally:
            p.kill()
            p.wait()
            if relay is not None:
                relay.close()
    os.environ["FR_PBD_TARGET_ROOT"] = ""
    if want is None or "howdy-like" in want:
        root = work / "howdy"
        (root / "frames").mkdir(parents=True)
        shutil.copyfile(faces / "obama3.jpg", root / "frames" / "current.jpg")
        os.environ["FR_PBD_TARGET_ROOT"] = str(root)
        checks, _ = run_target(HERE / "targets" / "howdylike.toml", verifications=1, rounds=5)
        emit("howdy-like", checks)
    from tests.adversarial.test_shapes import HABITS, write_target

    for habit, (options, _cid, _w) in HABITS.items():
        if want is not None and habit not in want:
            continue
        root = work / f"shape-{habit}"
        root.mkdir()
        dirs = ("data", "spool", "snapshots") if habit == "late-directory" else ("data",)
        if habit == "stale-socket-file":
            (root / "run").mkdir(mode=0o700)
            s = socket.socket(socket.AF_UNIX)
            s.bind(str(root / "run" / "s.sock"))
            s.close()
        try:
            checks, _ = run_target(write_target(root, faces, spoof, options, dirs), verifications=1, rounds=5)
            emit(f"honest product, habit: {habit}", checks)
        except Exception as exc:  # noqa: BLE001 - the old audit may refuse to run it at all
            print(json.dumps({"product": f"honest product, habit: {habit}", "error": str(exc)}), flush=True)
    # the decoy pair (issue 24 item 2): a quiet decoy answers first contact, a detached process serves the rest
    for mode, serve in (("leak", "detached"), ("handoff", "detached"), ("leak", "detached-guarded"),
                        ("leak", "in-tree")):
        name = f"decoy pair: {mode}, {serve}"
        if want is not None and name not in want:
            continue
        root = work / f"decoy-{mode}-{serve}"
        (root / "frames").mkdir(parents=True)
        (root / "run").mkdir(mode=0o700)
        shutil.copyfile(faces / "obama3.jpg", root / "frames" / "current.jpg")
        os.environ.update(FR_PBD_TARGET_ROOT=str(root), FR_PBD_DECOY_MODE=mode, FR_PBD_DECOY_SERVE=serve,
                          FR_PBD_DECOY_PORT=str(sink.getsockname()[1]))
        try:
            checks, _ = run_target(HERE / "targets" / "decoy.toml", verifications=1, rounds=5)
            emit(name, checks)
        except Exception as exc:  # noqa: BLE001
            print(json.dumps({"product": name, "error": str(exc)}), flush=True)
    # a real matcher without presentation-attack detection (shapes.py --recognise) and a screen replay
    if want is None or "matcher without PAD, screen replay" in want:
        from tests.adversarial.test_shapes import pad_target

        name = "matcher without PAD, screen replay"
        attacks = f'[{{ species = "replay", image = "{spoof / "spoof_replay_F2.jpg"}" }}]'
        try:
            checks, _ = run_target(pad_target(work / "nopad", spoof, faces, attacks, ["--recognise"]),
                                   verifications=1, rounds=5)
            emit(name, checks)
        except Exception as exc:  # noqa: BLE001
            print(json.dumps({"product": name, "error": str(exc)}), flush=True)
    # the per-verification shapes (issue 24): a per-login comparator ([invoke]) and its two controls, the same
    # comparator behind pam_exec ([pam]), and fr-pbd's own PAM line with its daemon ([pam] socket)
    comparator = {"comparator [invoke]": [], "comparator [invoke], exit status = certainty": ["--exit-score"]}
    for name, extra in comparator.items():
        if want is not None and name not in want:
            continue
        root = work / name.replace(" ", "-").replace("[", "").replace("]", "").replace(",", "").replace("=", "")
        (root / "frames").mkdir(parents=True)
        shutil.copyfile(faces / "obama3.jpg", root / "frames" / "current.jpg")
        os.environ["FR_PBD_TARGET_ROOT"] = str(root)
        t = root / "comparator.toml"
        t.write_text((HERE / "targets" / "comparator.toml").read_text().replace(
            "{target_dir}/../comparator.py", str(HERE / "comparator.py")).replace(
            '"--data", "data"]', '"--data", "data"' + "".join(f', "{x}"' for x in extra) + "]"))
        try:
            checks, _ = run_target(t, verifications=1, rounds=5)
            emit(name, checks)
        except Exception as exc:  # noqa: BLE001 - the old audit refuses the shape
            print(json.dumps({"product": name, "error": str(exc)}), flush=True)
    if want is None or "comparator behind pam_exec [pam]" in want:
        name = "comparator behind pam_exec [pam]"
        root = work / "pam-comparator"
        (root / "frames").mkdir(parents=True)
        shutil.copyfile(faces / "obama3.jpg", root / "frames" / "current.jpg")
        os.environ["FR_PBD_TARGET_ROOT"] = str(root)
        try:
            checks, _ = run_target(HERE / "targets" / "comparator-pam.toml", verifications=1, rounds=5)
            emit(name, checks)
        except Exception as exc:  # noqa: BLE001
            print(json.dumps({"product": name, "error": str(exc)}), flush=True)
    if want is None or "fr-pbd PAM line [pam]" in want:
        import compileall

        from fr_pbd.verify import Consent, Verifier
        from tests.helpers import own_account_name, own_accounts
        from tests.test_daemon import PIN

        import fr_pbd
        compileall.compile_dir(Path(fr_pbd.__file__).parent, quiet=1)  # as installed: no bytecode written at login
        name = "fr-pbd PAM line [pam]"
        root = work / "pam-frpbd"
        root.mkdir(mode=0o711)
        with own_accounts(own_account_name("vpam")) as (acct,):
            home = root / "home"
            shutil.copytree(template, home)
            Verifier(home, build_pipeline(liveness=False).extractor).enroll(
                acct.pw_name, [spoof / "live_T1.jpg"], Consent("1", "verdicts"), fallback=PIN)
            write_config(home, f'socket = "{root}/run/fr-pbd.sock"\nallowed_uids = [0]\n', deadline_ms=400)
            (root / "frames").mkdir()
            shutil.copyfile(spoof / "live_T1.jpg", root / "frames" / "current.jpg")
            (root / "run").mkdir(mode=0o711)
            try:
                from tests.test_audit import EVAL_REPORT
            except ImportError:  # an older checkout (tests.test_audit needs this one's audit): it refuses [pam]
                EVAL_REPORT = {}  # before it would read the report
            (root / "eval.json").write_text(json.dumps(EVAL_REPORT))
            os.environ["FR_PBD_TARGET_ROOT"] = str(root)
            os.environ["FR_PBD_PAM_USER"] = acct.pw_name
            try:
                checks, _ = run_target(HERE / "targets" / "fr-pbd-pam.toml", verifications=1, rounds=5)
                emit(name, checks)
            except Exception as exc:  # noqa: BLE001
                print(json.dumps({"product": name, "error": str(exc)}), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def table(before: str, after: str) -> int:
    def load(p: str) -> dict:
        return {d["product"]: d for d in map(json.loads, Path(p).read_text().splitlines()) if d}
    b, a = load(before), load(after)
    short = {"PASS": "P", "FAIL": "F", "INCONCLUSIVE": "I"}
    ids = list(dict.fromkeys(k for d in (*b.values(), *a.values()) for k in d.get("checks", {})))
    print("| product | " + " | ".join(ids) + " |")
    print("|---|" + "---|" * len(ids))
    for prod in dict.fromkeys([*b, *a]):
        cells = []
        for cid in ids:
            x = short.get(b.get(prod, {}).get("checks", {}).get(cid, ""), "-")
            y = short.get(a.get(prod, {}).get("checks", {}).get(cid, ""), "-")
            cells.append(x if x == y else f"{x}→{y}")
        err = [f"{w}: {d['error']}" for w, d in (("before", b.get(prod, {})), ("after", a.get(prod, {})))
               if "error" in d]
        print(f"| {prod} | " + " | ".join(cells) + " |" + (f" {'; '.join(err)}" if err else ""))
    print("\nP pass, F fail, I inconclusive, - not run; X→Y: before → after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
