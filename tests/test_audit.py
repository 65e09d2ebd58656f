"""`fr-pbd audit`: passes on a correct installation and fails exactly the targeted check on broken ones."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from fr_pbd.audit import CHECKS, FAIL, INCONCLUSIVE, PASS, overall, run_audit, scan
from tests.conftest import need_tool
from tests.test_daemon import RunningDaemon, set_frame, write_config

# The daemon's answer deadline in these tests: every answer still comes at one fixed time
# (what C5.timing checks), but 400 ms instead of the default 1 s keeps the suite short; it
# stays well above a verification's time on a loaded 2-core machine, so none overruns.
AUDIT_DEADLINE_MS = 400

# The committed `fr-pbd eval lfw --groups` report behind README's figures (aggregates only).
EVAL_REPORT = json.loads((Path(__file__).resolve().parent.parent / "docs" / "results" / "lfw-eval-fp32.json")
                         .read_text(encoding="utf-8"))["result"]


def failing(checks) -> dict[str, str]:
    return {c.id: c.summary + " | " + " | ".join(c.details) for c in checks if c.status == FAIL}


#: Checks that need the running daemon: without --socket they are INCONCLUSIVE, never PASS.
NOT_OBSERVED_WITHOUT_DAEMON = {"C3.plaintext-templates", "C3.socket", "C3.network", "C3.logs", "C5.answer",
                               "C5.timing"}
ALL_CHECKS = [s.id for s in CHECKS]  # the one table of checks, in report order


def need_strace() -> None:
    need_tool("strace", "strace")


# --------------------------------------------------------------------------------------
# helpers that break an installation
# --------------------------------------------------------------------------------------
def rewrite_store_meta(home: Path, change) -> None:
    """Decrypt the store with its key, let ``change`` edit the metadata JSON, re-encrypt (same key).

    This is how a vendor's modified build could write a store that fr-pbd's own
    writer never would (templates without consent, no fallback).
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

    from fr_pbd.audit.storefacts import read_store

    facts = read_store(home)
    assert facts.decrypted
    data = facts.data
    hlen = facts.header_len
    dek = aes_key_unwrap((home / "keys" / "kek").read_bytes()[12:], facts.wrapped)
    payload = AESGCM(dek).decrypt(data[hlen:hlen + 12], data[hlen + 12:], data[:hlen])
    (mlen,) = struct.unpack_from("<I", payload, 4)
    meta = json.loads(payload[8:8 + mlen])
    change(meta)
    old_a = (8 + mlen + 15) // 16 * 16
    new_meta = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    head = b"FRPL" + struct.pack("<I", len(new_meta)) + new_meta
    head += bytes(-len(head) % 16)
    new = (head + payload[old_a:])[: len(payload)]
    new += bytes(len(payload) - len(new))
    nonce = os.urandom(12)
    out = data[:hlen] + nonce + AESGCM(dek).encrypt(nonce, new, data[:hlen])
    tmp = home / "store.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(out)
    os.replace(tmp, home / "store.frpbd")


# --------------------------------------------------------------------------------------
# a correct installation
# --------------------------------------------------------------------------------------
def audit_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fr_pbd.cli", "audit", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def known_product_failures(by_id: dict) -> dict[str, str]:
    """Failures of fr-pbd's own daemon that the audit finds rightly, until the product is fixed (reported):

    * C3.network: onnxruntime's native telemetry (1DS) resolves a host name over UDP port 53 from inside the
      daemon some seconds after a session is made; the egress guard (a Python audit hook) cannot see it, the
      kernel can. Only such DNS traffic is accepted as this known failure, nothing else.
    * C5.timing: a daemon without a fixed answer time tells outcomes apart by its answer time.
    * DPIA.bias: the manifest's threshold (FMR 1e-4 over all LFW comparisons) gives women 4.65 times the
      claimed FMR; only a claim broken by a labelled group is accepted as this known failure, until the
      threshold is re-derived by the worst-group rule (issues 15 and 17).
    """
    known = {}
    net = by_id.get("C3.network", {})
    if net.get("status") == FAIL:
        lines = [d for d in net["evidence"]["details"] if d.startswith(("while the probe", "before the probe",
                 "during the probe", "after:", "socket with", "connect with", "sendto with", "sendmmsg with",
                 "sendmsg with", "wrote "))]
        dns = all("UDP" in d or "SOCK_DGRAM" in d or "htons(53)" in d for d in lines)
        if lines and dns and any(":53 " in d or "htons(53)" in d for d in lines):
            known["C3.network"] = ("fr-pbd's daemon sent a DNS query (onnxruntime telemetry, native code): "
                                   + net["evidence"]["summary"])
    bias = by_id.get("DPIA.bias", {})
    if bias.get("status") == FAIL and "times the claimed" in bias["evidence"]["summary"]:
        known["DPIA.bias"] = "the shipped threshold breaks the claimed FMR for a group: " + bias["evidence"]["summary"]
    if by_id.get("C5.timing", {}).get("status") == FAIL:
        known["C5.timing"] = "the daemon's answer time tells outcomes apart: " + by_id["C5.timing"]["evidence"][
            "summary"]
    return known


def enrol_peer(home: Path, faces_dir: Path, extractor, peer) -> None:
    """The genuine person enrolled also under ``peer``'s account: fr-pbd's daemon verifies a non-root asker only
    against its own account, so the second asker's and root's answers are about the same templates."""
    from fr_pbd.verify import Consent, Verifier
    from tests.test_daemon import PIN

    Verifier(home, extractor).enroll(peer.pw_name, [faces_dir / "obama.jpg", faces_dir / "obama2.jpg"],
                                     Consent("1", "test-device"), fallback=PIN)


def enrol_pad_subject(home: Path, spoof_dir: Path, extractor) -> None:
    """The person of the spoof samples enrolled too (from the bona fide ``live_T1.jpg``), so that the screen
    replay ``spoof_replay_F2.jpg`` is an attack on an enrolled person (SEC.presentation-attack)."""
    from fr_pbd.verify import Consent, Verifier
    from tests.test_daemon import PIN

    Verifier(home, extractor).enroll("pad-subject", [spoof_dir / "live_T1.jpg"], Consent("1", "test-device"),
                                     fallback=PIN)


def assert_peer_agrees(c5: dict, peer) -> None:
    """Root and the second asker asked about the peer's account: both Y for the genuine frame, both N for the
    impostor."""
    text = " | ".join(c5["evidence"]["details"])
    assert f"both asked b'VERIFY {peer.pw_name}\\n'" in text, text
    assert f"genuine frame: uid {peer.pw_uid} and root got byte-identical answers (1 byte(s), yes)" in text, text
    assert f"impostor frame: uid {peer.pw_uid} and root got byte-identical answers (1 byte(s), no)" in text, text


def test_correct_installation_passes_every_check(tmp_path, home, faces_dir, spoof_dir, extractor, peer_account):
    """With the daemon, its frames, the probe photos and an evaluation report, every check runs and passes."""
    need_strace()
    frames = tmp_path / "frames"
    frames.mkdir()
    set_frame(frames, faces_dir / "obama3.jpg")
    enrol_peer(home, faces_dir, extractor, peer_account)
    enrol_pad_subject(home, spoof_dir, extractor)
    peer = peer_account.pw_uid  # the second asker: on the allowlist, reaching the socket through its group
    write_config(home, f"allowed_uids = [0, {peer}]\n", deadline_ms=AUDIT_DEADLINE_MS)
    run = Path(tempfile.mkdtemp(prefix="fr-pbd-audit-", dir="/tmp"))
    os.chmod(run, 0o711)
    d = RunningDaemon(home, run / "d.sock", frames, home / "daemon.log")
    report = tmp_path / "report.json"
    report.write_text(json.dumps(EVAL_REPORT))
    try:
        p = audit_cli("--home", str(home), "--socket", str(d.sock), "--eval", str(report),
                      "--out", str(tmp_path / "out"),
                      "--frames", str(frames), "--genuine", str(faces_dir / "obama3.jpg"),
                      "--impostor", str(faces_dir / "biden2.jpg"),
                      "--attack", f"replay={spoof_dir / 'spoof_replay_F2.jpg'}",  # of an enrolled person:
                      "--attack-subject", str(spoof_dir / "live_T1.jpg"),  # enrol_pad_subject
                      "--verifications", "1", "--timing-rounds", "5", "--peer-uid", str(peer),
                      "--log", str(home / "daemon.log"))
    finally:
        d.stop()
        shutil.rmtree(run, ignore_errors=True)
    doc = json.loads((tmp_path / "out" / "audit.json").read_text())
    statuses = {c["id"]: c["status"] for c in doc["checks"]}
    by_id = {c["id"]: c for c in doc["checks"]}
    known = known_product_failures(by_id)
    if known and {k for k, v in statuses.items() if v != PASS} == set(known):
        pytest.xfail("; ".join(known.values()))
    assert p.returncode == 0, p.stdout + p.stderr
    assert set(statuses.values()) == {PASS}, statuses
    assert doc["result"] == PASS and doc["missing_evidence"] == [] and len(doc["checks"]) == len(ALL_CHECKS)
    assert [c["id"] for c in doc["checks"]] == ALL_CHECKS
    for c in doc["checks"]:
        assert {"id", "condition", "status", "evidence"} <= set(c) and c["condition"] in (
            "C1", "C2", "C3", "C4", "C5", "SEC", "DPIA")
    assert by_id["C4.cipher"]["evidence"]["values"]["aead"] == "AES-256-GCM"
    assert by_id["C4.ciphertext"]["evidence"]["values"]["entropy_bits_per_byte"] > 7.9
    net = by_id["C3.network"]["evidence"]["values"]
    assert net["method"] == "strace" and set(net["families"]) <= {"AF_UNIX"} and net["failures"] == 0
    # it contacts nothing at all, not even the name-service cache a host may run (fr_pbd.accounts)
    assert net["syscalls"].get("connect", 0) == 0, net["syscalls"]
    assert_peer_agrees(by_id["C5.answer"], peer_account)
    c5 = by_id["C5.answer"]["evidence"]["values"]
    assert c5["outcomes"]["yes"] >= 1 and c5["outcomes"]["no"] >= 8 and set(c5["lengths"]) == {"1"}
    lock = by_id["SEC.lockout"]["evidence"]
    assert lock["values"]["sequence"][:5] == ["no"] * 5 and set(lock["values"]["sequence"][5:]) == {"no"}, lock
    timing = by_id["C5.timing"]["evidence"]["values"]["samples"]
    assert set(timing) == {"genuine", "impostor", "no-face", "attack", "locked-out"}, timing
    html = (tmp_path / "out" / "audit.html").read_text()
    for cond in ("C1", "C2", "C3", "C4", "C5", "SEC", "DPIA"):
        assert f'id="{cond}"' in html
    assert 'class="verdict pass"' in html and "exit code 0" in html
    assert "<script" not in html and "src=" not in html and "http" not in html.split("<body>")[1].split("Generated")[0]


def test_fr_pbds_own_daemon_passes_as_a_black_box(template_home, data_dir, faces_dir, extractor, peer_account):
    need_strace()
    tmp_path = Path(tempfile.mkdtemp(prefix="fr-pbd-audit-", dir="/tmp"))  # the second asker reaches run/
    os.chmod(tmp_path, 0o711)
    shutil.copytree(template_home, tmp_path / "home")
    enrol_peer(tmp_path / "home", faces_dir, extractor, peer_account)
    enrol_pad_subject(tmp_path / "home", data_dir / "spoof", extractor)
    write_config(tmp_path / "home", f"allowed_uids = [0, {peer_account.pw_uid}]\n", deadline_ms=AUDIT_DEADLINE_MS)
    (tmp_path / "frames").mkdir()
    shutil.copyfile(data_dir / "faces" / "obama3.jpg", tmp_path / "frames" / "current.jpg")
    (tmp_path / "run").mkdir(mode=0o711)
    (tmp_path / "eval.json").write_text(json.dumps(EVAL_REPORT))
    from tests.adversarial.test_corpus import audit_target

    p, doc = audit_target("fr-pbd.toml", tmp_path, tmp_path / "out", data_dir,
                          FR_PBD_PEER_UID=str(peer_account.pw_uid))
    by_id = {c["id"]: c for c in doc["checks"]}
    known = known_product_failures(by_id)
    if known and {k for k, c in by_id.items() if c["status"] != PASS} == set(known):
        pytest.xfail("; ".join(known.values()))
    assert p.returncode == 0, p.stdout + p.stderr
    assert doc["result"] == "PASS" and doc["installation"]["store_format"] == "fr-pbd"
    assert {c["status"] for c in doc["checks"]} == {PASS}
    assert by_id["C3.network"]["evidence"]["values"]["syscalls"].get("connect", 0) == 0  # not even nscd
    assert_peer_agrees(by_id["C5.answer"], peer_account)
    assert set(by_id["C5.timing"]["evidence"]["values"]["samples"]) == {"genuine", "impostor", "no-face", "attack",
                                                                        "locked-out"}


def test_without_a_daemon_the_audit_is_incomplete_never_pass(home, tmp_path):
    checks = run_audit(home)
    status = {c.id: c.status for c in checks}
    assert failing(checks) == {}
    assert NOT_OBSERVED_WITHOUT_DAEMON <= {k for k, v in status.items() if v == INCONCLUSIVE}
    assert all(c.needs for c in checks if c.status == INCONCLUSIVE)
    assert overall(checks) == "INCOMPLETE"
    p = subprocess.run([sys.executable, "-m", "fr_pbd.cli", "audit", "--home", str(home), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 3, p.stdout + p.stderr
    assert p.stdout.splitlines()[-1].startswith("audit: INCOMPLETE (") and "needs: --socket PATH" in p.stdout
    doc = json.loads((tmp_path / "o" / "audit.json").read_text())
    assert doc["result"] == "INCOMPLETE"
    assert {m["check"] for m in doc["missing_evidence"]} >= NOT_OBSERVED_WITHOUT_DAEMON
    html = (tmp_path / "o" / "audit.html").read_text()
    assert 'class="verdict incomplete"' in html and "This is not a pass." in html and "exit code 3" in html


# --------------------------------------------------------------------------------------
# broken installations: exactly the targeted check fails, and its evidence says why
# --------------------------------------------------------------------------------------
def test_world_readable_store_fails_file_modes(home):
    os.chmod(home / "store.frpbd", 0o644)
    bad = failing(run_audit(home))
    assert list(bad) == ["C3.file-modes"] and "store.frpbd mode 0644" in bad["C3.file-modes"]


def test_group_readable_key_dir_fails_file_modes(home):
    os.chmod(home / "keys", 0o750)
    bad = failing(run_audit(home))
    assert list(bad) == ["C3.file-modes"] and "keys/ mode 0750" in bad["C3.file-modes"]


def _howdy_json(rng) -> bytes:
    vec = (rng.normal(size=128) * 0.09).round(8).tolist()
    return json.dumps([{"time": 1700000000, "label": "Initial model", "id": 0, "data": [vec]}]).encode()


def _raw_float32(rng) -> bytes:
    v = rng.normal(size=128)
    return (v / np.linalg.norm(v)).astype("<f4").tobytes()


@pytest.mark.parametrize("name, make", [("models/obama.dat", _howdy_json), ("cache/probe.bin", _raw_float32)])
def test_plaintext_template_file_fails_the_scan(home, name, make):
    path = home / name
    path.parent.mkdir(mode=0o700)
    path.write_bytes(make(np.random.default_rng(1)))
    os.chmod(path, 0o600)
    bad = failing(run_audit(home))
    # and the file itself is no file fr-pbd writes: an unknown file in a home is a modified product
    assert set(bad) == {"C3.plaintext-templates", "C3.file-modes"} and name in bad["C3.plaintext-templates"]
    assert f"{home / name}" in bad["C3.file-modes"]


def test_enrolled_without_consent_fails_consent(home):
    from fr_pbd.errors import StoreIntegrityError
    from fr_pbd.store import Store

    rewrite_store_meta(home, lambda m: m["users"][0].pop("consent"))
    bad = failing(run_audit(home))
    assert list(bad) == ["C2.consent"] and "'obama': 2 template(s) and NO consent record" in bad["C2.consent"]
    with pytest.raises(StoreIntegrityError):  # fr-pbd's own reader refuses such a store as well
        Store.open(home)


def test_no_fallback_fails_fallback(home):
    rewrite_store_meta(home, lambda m: m.update(fallback=None))
    checks = run_audit(home)
    bad = failing(checks)
    assert list(bad) == ["C2.fallback"] and "no fallback credential is set" in bad["C2.fallback"]


def test_a_score_in_a_log_fails_logs(home, tmp_path):
    (home / "daemon.log").write_text("2026-11-23T10:00:00+0000 verify obama -> Y (similarity 0.9731)\n")
    os.chmod(home / "daemon.log", 0o600)
    bad = failing(run_audit(home))  # a log in the home that nobody declared is an unknown file, too
    assert set(bad) == {"C3.logs", "C3.file-modes"} and "daemon.log: line 1" in bad["C3.logs"]
    bad = failing(run_audit(home, logs=[home / "daemon.log"]))  # declared (the daemon's --log): only the score
    assert list(bad) == ["C3.logs"] and "daemon.log: line 1" in bad["C3.logs"]
    outside = tmp_path / "vendor.log"
    outside.write_text("ok\nmatch distance=0.41\n")
    bad = failing(run_audit(home, logs=[outside]))
    assert "vendor.log: line 2" in bad["C3.logs"]


def test_another_profile_fails_c1(home):
    (home / "config.toml").write_text('profile = "scene-monitoring"\n')
    os.chmod(home / "config.toml", 0o600)
    bad = failing(run_audit(home))
    assert list(bad) == ["C1.profile"] and "scene-monitoring" in bad["C1.profile"]


def test_an_eval_report_for_another_model_fails_accuracy(home, tmp_path):
    report = tmp_path / "r.json"
    report.write_text(json.dumps(dict(EVAL_REPORT, model_id="sface-2021dec")))
    bad = failing(run_audit(home, eval_report=report))
    assert list(bad) == ["DPIA.accuracy"] and "sface-2021dec" in bad["DPIA.accuracy"]


def test_cli_errors_are_one_line_exit_2(tmp_path, home):
    p = subprocess.run([sys.executable, "-m", "fr_pbd.cli", "audit", "--home", str(tmp_path / "nope"), "--out",
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "fr_pbd.cli", "audit", "--home", str(home), "--eval",
                        str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "does not exist" in p.stderr
    os.chmod(home / "store.frpbd", 0o640)
    p = subprocess.run([sys.executable, "-m", "fr_pbd.cli", "audit", "--home", str(home), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "FAIL" in p.stdout
    assert json.loads((tmp_path / "o" / "audit.json").read_text())["result"] == FAIL


# --------------------------------------------------------------------------------------
# the scanners
# --------------------------------------------------------------------------------------
def test_scanners_find_templates_and_not_noise():
    rng = np.random.default_rng(0)  # seeded: the same bytes on every run (os.urandom made this flaky)
    noise = rng.bytes(1 << 18)
    assert scan.scan(noise) == []
    assert scan.entropy_bits_per_byte(noise) > 7.99
    t = _raw_float32(rng)
    hidden = rng.bytes(1001) + t + rng.bytes(999)
    runs = [f for f in scan.scan(hidden) if f.kind == "template"]
    assert runs and runs[0].what == "float32 little-endian"
    # the finding lies on the planted template (random bytes around it may look like a few floats)
    assert runs[0].offset < 1001 + len(t) and runs[0].offset + 4 * runs[0].count > 1001
    assert scan.scan(bytes(4096)) == []  # zero padding is not a template
    assert scan.scan(np.linspace(-1, 1, 256).astype("<f4").tobytes()) == []  # sorted numbers: a table, not a face
    assert [f.count for f in scan.scan(_howdy_json(rng)) if f.kind == "template"][0] == 128
    assert scan.scan(b"1.5, 2.5, 3.5") != [] and all(f.kind == "score" for f in scan.scan(b"1.5, 2.5, 3.5"))
    assert scan.score_findings(b"fr-pbd 0.1.0 started\nuid 0 -> N\nno match or no usable face -> N\n") == []
    assert [f.line for f in scan.score_findings(b"a\nscore 0.9\nx=0.5\n97%\n")] == [2, 3, 4]


def test_the_scanners_stay_quiet_on_real_files(faces_dir, spoof_dir, home):
    """No false alarm on what an honest home or log holds, nor on images, programs and compiled Python."""
    import glob

    files = [home / "store.frpbd", home / "keys" / "kek", *sorted(faces_dir.glob("*.jpg")), *sorted(faces_dir.glob(
        "*.png")), *sorted(spoof_dir.glob("*.jpg")), Path(sys.executable).resolve(),
        # compiled Python, but not the scanner's own: its constants are the magic numbers it looks for
        *sorted(Path(p) for p in glob.glob(str(Path(scan.__file__).parent / "__pycache__" / "*.pyc"))
                if not Path(p).name.startswith("scan."))]
    for f in files:
        found = [x for x in scan.scan(f.read_bytes()[: 4 << 20]) if x.kind != "score"]
        assert found == [], (f, [x.describe() for x in found])
    log = ("2026-11-29T13:38:44+0000 fr-pbd serve[22202]: board default: embedder dlib-resnet-v1 fp32, detector "
           "graphs 640x480, 640x640, liveness on\n2026-11-29T13:38:44+0000 fr-pbd serve[22202]: pid 22193 uid 0 "
           "gid 0: VERIFY any enrolled user: not accepted (no match or no usable face) -> N\n").encode()
    assert scan.scan(log) == []


@pytest.mark.parametrize("spelling", ["match 97%", "conf=0,9761", "9761e-4", "score 0.97", '{"similarity": 0.97}',
                                      "distance: .41", "cosine 0.88", "p=0.97"])
def test_every_score_spelling_is_found(spelling):
    assert scan.score_findings(spelling.encode()), spelling


def test_a_socket_the_kernel_refused_is_evidence_but_no_leak(tmp_path):
    """fr-pbd's kernel filter turns onnxruntime's telemetry socket() into -1 EACCES: shown, not a FAIL.

    The same call that succeeds (a descriptor came back) still FAILs C3.network.
    """
    from fr_pbd.audit import network
    from fr_pbd.audit.probe import FRPBD_PROTOCOL, ProbeResult
    from fr_pbd.audit.trace import parse

    def facts(result: str):
        res = ProbeResult(socket=tmp_path / "s", protocol=FRPBD_PROTOCOL, server_pid=os.getpid())
        res.events = parse(f"{os.getpid()} socket(AF_INET, SOCK_DGRAM|SOCK_CLOEXEC|SOCK_NONBLOCK, IPPROTO_IP) = {result}\n")
        return network.analyse(res)

    refused = facts("-1 EACCES (Permission denied)")
    assert not refused.fail and any("refused attempt" in line and "AF_INET" in line for line in refused.info)
    opened = facts("14")
    assert opened.fail and "AF_INET" in opened.fail[0]
