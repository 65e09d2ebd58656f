"""Reasons for a vendor's UI (docs/reasons.md): every reason a verification can give, reached with
real images through the API (``fr_pbd.verify_face``, ``fr_pbd.same_person``) and through
``fr-pbd verify --json``; every command's ``--json`` output parses and holds nothing score-like;
every command's ``--json`` error is one JSON object on stdout with the stderr line's message and
the same exit status.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import fr_pbd
from fr_pbd.outcome import REASONS
from tests.test_cli import run
from tests.test_daemon import PIN, SCOREISH

VERIFY_KEYS = ["accepted", "reason", "retry_after", "detail"]


def _scoreless(text: str, *paths: Path) -> bool:
    for p in paths:
        text = text.replace(str(p), "")
    return not SCOREISH.search(text)


@pytest.fixture(scope="module")
def poor(tmp_path_factory, faces_dir) -> dict[str, Path]:
    """Photos the quality gate refuses, made here from obama3.jpg (2333x1434): shrunk to 5 % the
    face is too small; shrunk to 10 % and blurred (15x15 Gaussian) it is too blurred."""
    import cv2

    d = tmp_path_factory.mktemp("poor")
    img = cv2.imread(str(faces_dir / "obama3.jpg"))
    small = cv2.resize(img, None, fx=0.1, fy=0.1, interpolation=cv2.INTER_AREA)
    made = {"face_too_small": cv2.resize(img, None, fx=0.05, fy=0.05, interpolation=cv2.INTER_AREA),
            "too_blurred": cv2.GaussianBlur(small, (15, 15), 0)}
    out = {}
    for code, pixels in made.items():
        out[code] = d / f"{code}.png"
        cv2.imwrite(str(out[code]), pixels)
    return out


def _lock(home: Path, user: str, seconds: int) -> None:
    """Lock ``user``'s face verification through the store's own API, as five failures would."""
    from fr_pbd.store import LockoutState, Store

    until = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    with Store.open(home).transaction() as tx:
        tx.set_lockout(LockoutState(failures=5, locked_until=until), user=user)


def _rebind(home: Path, user: str) -> None:
    """Record ``user`` as bound to a uid that is not the account of that name here (deleted and
    re-created with another uid): whatever this host's accounts are."""
    from fr_pbd.store import Store
    from fr_pbd.verify import account_uid

    uid = 4243 if account_uid(user) == 4242 else 4242
    with Store.open(home).transaction() as tx:
        tx.record_consent(user, text_version="1", device_id="test-device", uid=uid)


# reason (and detail): the image, the claimed user, what is done to the home first
CASES = {
    "accepted": ("obama3.jpg", None, None),
    "no_match": ("biden2.jpg", None, None),
    "no_face": ("no_face_coffee.png", None, None),
    "low_quality/face_too_small": ("face_too_small", None, None),
    "low_quality/too_blurred": ("too_blurred", None, None),
    "presentation_attack/replay": ("spoof:spoof_replay_F2.jpg", None, None),
    "presentation_attack/print": ("spoof:spoof_print_F1.jpg", None, None),
    "locked": ("obama3.jpg", "obama", lambda h: _lock(h, "obama", 120)),
    "unknown_user": ("obama3.jpg", "carol", None),
    "account_changed": ("obama3.jpg", "obama", lambda h: _rebind(h, "obama")),
}


def _case(name: str, home: Path, faces_dir: Path, spoof_dir: Path, poor: dict) -> tuple[Path, str | None]:
    image, user, setup = CASES[name]
    if setup is not None:
        setup(home)
    if image.startswith("spoof:"):
        return spoof_dir / image[6:], user
    return (poor[image] if image in poor else faces_dir / image), user


def _check(name: str, got: dict) -> None:
    reason, _, detail = name.partition("/")
    assert list(got) == VERIFY_KEYS
    assert got["reason"] == reason and got["accepted"] is (reason == "accepted")
    assert got["detail"] == (detail if reason == "low_quality" else None)
    if reason == "locked":
        assert 100 <= got["retry_after"] <= 121  # whole seconds, rounded up
    else:
        assert got["retry_after"] == 0


def test_every_reason_is_covered():
    assert {n.partition("/")[0] for n in CASES} == set(REASONS)


@pytest.mark.parametrize("name", list(CASES))
def test_reason_through_the_api(name, home, faces_dir, spoof_dir, poor):
    image, user = _case(name, home, faces_dir, spoof_dir, poor)
    decision = fr_pbd.verify_face(image, user=user, home=home)
    _check(name, decision.to_dict())
    assert bool(decision) is decision.accepted


@pytest.mark.parametrize("name", list(CASES))
def test_reason_through_verify_json(name, home, faces_dir, spoof_dir, poor):
    image, user = _case(name, home, faces_dir, spoof_dir, poor)
    proc = run("verify", "--home", str(home), "--image", str(image), "--json", *(["--user", user] if user else []))
    assert proc.returncode == (0 if name == "accepted" else 1), proc.stderr
    assert proc.stdout.count("\n") == 1 and proc.stderr == ""  # the reason is in the object, nothing beside it
    _check(name, json.loads(proc.stdout))
    assert _scoreless(proc.stdout, home)


# --------------------------------------------------------------------------------------
# same_person: the same reasons as verify_face, and which photo
# --------------------------------------------------------------------------------------
def test_same_person_answers_no_face_as_verify_face_does(faces_dir, poor, extractor, home):
    obama = faces_dir / "obama.jpg"
    same = fr_pbd.same_person(obama, faces_dir / "obama3.jpg")
    other = fr_pbd.same_person(obama, faces_dir / "biden2.jpg")
    assert (same.accepted, same.reason, bool(same)) == (True, "accepted", True)
    assert (other.accepted, other.reason, bool(other)) == (False, "no_match", False)
    noface_b = fr_pbd.same_person(obama, faces_dir / "no_face_coffee.png")
    noface_a = fr_pbd.same_person(faces_dir / "no_face_coffee.png", obama)
    assert (noface_b.reason, noface_b.image, bool(noface_b)) == ("no_face", "image_b", False)
    assert (noface_a.reason, noface_a.image) == ("no_face", "image_a")
    # the same photo gives verify_face the same reason
    assert fr_pbd.verify_face(faces_dir / "no_face_coffee.png", home=home).reason == noface_b.reason
    for code, path in poor.items():
        c = fr_pbd.same_person(obama, path)
        assert (c.accepted, c.reason, c.detail, c.image) == (False, "low_quality", code, "image_b")
    # an unreadable file is still an error, not an answer
    from fr_pbd.errors import ImageError

    with pytest.raises(ImageError):
        fr_pbd.same_person(obama, faces_dir / "SHA256SUMS")


def test_compare_json_is_same_persons_answer(faces_dir, extractor):
    proc = run("compare", str(faces_dir / "obama.jpg"), str(faces_dir / "no_face_coffee.png"), "--json")
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout) == fr_pbd.same_person(faces_dir / "obama.jpg",
                                                         faces_dir / "no_face_coffee.png").to_dict()
    same = run("compare", str(faces_dir / "obama.jpg"), str(faces_dir / "obama3.jpg"), "--json")
    assert (same.returncode, json.loads(same.stdout)["reason"]) == (0, "accepted")
    assert _scoreless(proc.stdout + same.stdout)
    # a score is never in JSON: --show-score and --json exclude each other
    both = run("compare", str(faces_dir / "obama.jpg"), str(faces_dir / "obama3.jpg"), "--json", "--show-score")
    assert both.returncode == 2 and json.loads(both.stdout)["error"]["type"] == "UsageError"


# --------------------------------------------------------------------------------------
# --json on enroll, status, doctor, audit, eval
# --------------------------------------------------------------------------------------
def _enroll(home: Path, *images: Path, pin: str = PIN, user: str = "obama") -> subprocess.CompletedProcess:
    args = ["enroll", "--home", str(home), "--user", user, "--consent", "--secret-stdin", "--json"]
    for image in images:
        args += ["--image", str(image)]
    return subprocess.run([sys.executable, "-m", "fr_pbd.cli", *args], input=pin + "\n", capture_output=True,
                          text=True, timeout=120)


def test_enroll_json(home, faces_dir):
    ok = _enroll(home, faces_dir / "obama3.jpg")
    assert ok.returncode == 0, ok.stderr
    got = json.loads(ok.stdout)
    from fr_pbd.verify import account_uid

    assert got == {"user": "obama", "templates": 3, "uid": account_uid("obama")}
    # a refusal: the typed error, the photo's quality reason, exit 2, nothing stored
    noface = _enroll(home, faces_dir / "no_face_coffee.png")
    assert noface.returncode == 2
    err = json.loads(noface.stdout)["error"]
    assert (err["type"], err["reason"]) == ("QualityError", "no_face") and "no_face_coffee.png" in err["message"]
    assert noface.stderr.strip().splitlines()[-1] == f"fr-pbd: error: {err['message']}"
    wrong = _enroll(home, faces_dir / "obama4.jpg", pin="not the PIN")
    assert wrong.returncode == 2 and json.loads(wrong.stdout)["error"]["type"] == "ConsentError"
    assert "reason" not in json.loads(wrong.stdout)["error"]
    for proc in (ok, noface, wrong):
        assert proc.stdout.count("\n") == 1 and _scoreless(proc.stdout, home)


def test_status_json_shows_lockouts_and_no_biometric_data(home):
    _lock(home, "obama", 90)
    proc = run("status", "--home", str(home), "--json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert set(got) == {"home", "model", "key", "fallback", "any_user", "users"}
    assert got["key"]["provider"] == "file" and got["key"]["rollback_protection"] is False
    assert got["fallback"] == {"set": True, "locked": False, "retry_after": 0, "failures": 0, "below_minimum": False}
    assert got["any_user"] == {"locked": False, "retry_after": 0, "failures": 0}
    [user] = got["users"]
    assert (user["user"], user["templates"], user["consent"]["text_version"]) == ("obama", 2, "1")
    assert user["face"]["locked"] is True and user["face"]["failures"] == 5 and 70 <= user["face"]["retry_after"] <= 91
    assert _scoreless(proc.stdout, home)
    assert "template" not in json.dumps(user).replace('"templates"', "")  # a count, never a template


def test_doctor_json(home):
    proc = run("doctor", "--home", str(home), "--json")
    got = json.loads(proc.stdout)
    assert proc.returncode == (0 if got["ready"] else 2)
    names = [c["check"] for c in got["checks"]]
    assert {"model yunet-2023mar", "model dlib-resnet-v1", "tpm", "store key"} <= set(names)
    assert got["ready"] == all(c["ok"] for c in got["checks"] if c["required"])
    key = got["checks"][names.index("store key")]
    assert key["ok"] is True and key["rollback_protection"] is False
    # the checks hold nothing score-like (versions, elsewhere in the object, are dotted numbers by nature)
    assert _scoreless(json.dumps(got["checks"]), home)


def test_audit_json_is_the_summary(home, tmp_path):
    out = tmp_path / "audit"
    proc = run("audit", "--home", str(home), "--out", str(out), "--no-strace", "--json")
    got = json.loads(proc.stdout)
    assert set(got) == {"result", "counts", "exit", "report"}
    assert proc.returncode == got["exit"] == {"PASS": 0, "FAIL": 1}.get(got["result"], 3)
    report = json.loads((out / "audit.json").read_text())
    assert (got["result"], got["counts"]) == (report["result"], report["counts"])
    assert got["report"] == {"json": str(out / "audit.json"), "html": str(out / "audit.html")}
    assert _scoreless(proc.stdout, out)


def test_eval_json_is_the_summary(lfw_dir, models_env, tmp_path):
    proc = run("eval", "lfw", "--data", str(lfw_dir), "--limit", "40", "--out", str(tmp_path / "e"), "--quiet",
               "--json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert got["images"] == 40 and got["pairs"] > 0 and got["fta_images"] == report["fta_images"]
    assert 0 <= got["tenfold_accuracy"]["mean"] <= 1 and got["groups"] is None
    # aggregates only: the figures the text summary prints, no list of comparisons
    assert set(got) == {"report", "pairs", "pairs_failed", "tenfold_accuracy", "fnmr_at_fmr_1e-4", "eer",
                        "fta_images", "images", "groups", "transactions", "protocols",
                        "accuracy_same_set_threshold"}
    assert set(got["protocols"]) == set(report["protocols"])  # each figure named by its protocol


# --------------------------------------------------------------------------------------
# errors under --json: one object on stdout, the stderr line, the same exit status
# --------------------------------------------------------------------------------------
ERRORS = {
    "verify": (["verify", "--image", "{missing}", "--json"], "StoreError"),  # no home: fr-pbd fallback set first
    "enroll": (["enroll", "--user", "obama", "--image", "{missing}", "--consent", "--json"], "ImageError"),
    "status": (["status", "--home", "{nohome}", "--json"], "StoreError"),
    "doctor": (["doctor", "--board", "no-such-board", "--json"], "ConfigError"),
    "audit": (["audit", "--target", "{missing}", "--home", "{nohome}", "--out", "{nohome}", "--json"], "AuditError"),
    "eval": (["eval", "lfw", "--data", "{nohome}", "--pairs", "{missing}", "--out", "{nohome}", "--json"],
             "EvaluationError"),
    "compare": (["compare", "{missing}", "{missing}", "--json"], "ImageError"),
    "usage": (["verify", "--json"], "UsageError"),
}


@pytest.mark.parametrize("command", list(ERRORS))
def test_json_error_path(command, tmp_path, models_env):
    argv, kind = ERRORS[command]
    argv = [a.format(missing=tmp_path / "missing.jpg", nohome=tmp_path / "nohome") for a in argv]
    proc = run(*argv, env_extra={"FR_PBD_HOME": str(tmp_path / "nohome")})
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout.count("\n") == 1 and "Traceback" not in proc.stderr
    err = json.loads(proc.stdout)["error"]
    assert err["type"] == kind, err
    assert proc.stderr.strip().splitlines()[-1] == f"fr-pbd: error: {err['message']}"


def test_without_json_nothing_changes(home, faces_dir):
    """The text answers stay as they were: yes/no on stdout, the reason on stderr."""
    proc = run("verify", "--home", str(home), "--image", str(faces_dir / "no_face_coffee.png"))
    assert (proc.stdout, proc.returncode) == ("no\n", 1)
    assert proc.stderr == "no face in the image: nothing was compared\n"
    err = run("status", "--home", str(home / "nohome"))
    assert err.returncode == 2 and err.stdout == ""
