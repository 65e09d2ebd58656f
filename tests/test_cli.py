"""The fr-pbd command, run as a user runs it: a real process, real files."""

from __future__ import annotations

import argparse

import json
import os
import subprocess
import sys

import pytest


def run(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "fr_pbd.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def assert_clean_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines and fragment in lines[-1], proc.stderr
    assert len(lines) <= 2  # the error line, at most preceded by a usage line


def test_detect_json(faces_dir, models_env):
    proc = run("detect", str(faces_dir / "two_people.jpg"), "--json")
    assert proc.returncode == 0, proc.stderr
    faces = json.loads(proc.stdout)
    assert len(faces) == 2
    for face in faces:
        assert set(face) == {"box", "landmarks", "score"}
        assert len(face["box"]) == 4 and len(face["landmarks"]) == 5
        assert all(len(p) == 2 for p in face["landmarks"])
        assert 0.9 <= face["score"] <= 1


def test_detect_text(faces_dir, models_env):
    proc = run("detect", str(faces_dir / "no_face_coffee.png"))
    assert proc.returncode == 0 and proc.stdout.startswith("0 face(s)")


@pytest.mark.parametrize("make, fragment", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_text("hello"), "not an image"),
])
def test_detect_bad_input_is_one_line(tmp_path, models_env, make, fragment):
    p = tmp_path / "in.jpg"
    make(p)
    assert_clean_error(run("detect", str(p)), fragment)


def test_missing_model_is_one_line_with_fix(tmp_path, faces_dir):
    proc = run("detect", str(faces_dir / "obama.jpg"),
               env_extra={"FR_PBD_MODELS": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "c")})
    assert_clean_error(proc, "fr-pbd models fetch yunet-2023mar")


def test_models_list_shows_yunet_verified(models_env):
    proc = run("models", "list", "--json")
    assert proc.returncode == 0
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["yunet-2023mar"]["state"] == "verified"
    assert rows["yunet-2023mar"]["where"].startswith(str(models_env))


def test_models_list_flags_tampered_copy(tmp_path, models_env):
    data = bytearray((models_env / "face_detection_yunet_2023mar.onnx").read_bytes())
    data[100] ^= 0xFF
    (tmp_path / "face_detection_yunet_2023mar.onnx").write_bytes(bytes(data))
    proc = run("models", "list", env_extra={"FR_PBD_MODELS": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "c")})
    assert proc.returncode == 0
    line = next(l for l in proc.stdout.splitlines() if l.startswith("yunet-2023mar"))
    assert "HASH MISMATCH" in line


def test_usage_error_exits_2():
    proc = run("detect")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_doctor_fails_without_models(tmp_path):
    proc = run("doctor", env_extra={"FR_PBD_MODELS": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "c")})
    assert proc.returncode == 2
    assert "pipeline: NOT ready" in proc.stdout


def test_doctor_without_the_variable_says_where_it_looked_and_suggests_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FR_PBD_MODELS"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "c"), FR_PBD_HOME=str(tmp_path / "h"))
    proc = subprocess.run([sys.executable, "-m", "fr_pbd.cli", "doctor"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(tmp_path / "c" / "fr-pbd" / "models") in proc.stdout  # where it looked
    hint = next(line for line in proc.stdout.splitlines() if "FR_PBD_MODELS" in line)
    assert "before downloading" in hint
    assert proc.stdout.index(hint) < proc.stdout.index("pipeline: NOT ready")
    assert "board: default " in proc.stdout


def test_every_command_group_is_a_module_of_the_cli_package():
    """One entry point; each command lives in fr_pbd/cli/<group>.py, and none in a library."""
    from fr_pbd.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        funcs = {sub.get_default("func")}
        for action in sub._actions:  # sub-commands (keys rotate, models list, eval lfw, ...)
            if not isinstance(action, argparse._SubParsersAction):
                continue  # an option with choices
            for leaf in action.choices:
                funcs.add(action.choices[leaf].get_default("func"))
        for f in funcs - {None}:
            assert f.__module__.startswith("fr_pbd.cli."), f"{name}: {f.__module__}.{f.__name__}"


def test_compare_same_different_and_errors(faces_dir, extractor):
    same = run("compare", str(faces_dir / "obama.jpg"), str(faces_dir / "obama4.jpg"))
    assert (same.stdout, same.returncode) == ("same\n", 0), same.stderr
    diff = run("compare", str(faces_dir / "obama.jpg"), str(faces_dir / "biden2.jpg"))
    assert (diff.stdout, diff.returncode) == ("different\n", 1), diff.stderr
    assert "score" not in same.stdout + diff.stdout  # no score without --show-score
    # (biden/biden2 scores 0.9456: "same" under the old default 0.94365, not under 0.95831, the transaction-FAR threshold)
    scored = run("compare", str(faces_dir / "obama.jpg"), str(faces_dir / "obama3.jpg"), "--show-score")
    assert scored.stdout.startswith("same\nscore ") and "biometric data" in scored.stderr
    noface = run("compare", str(faces_dir / "obama.jpg"), str(faces_dir / "no_face_coffee.png"))
    assert_clean_error(noface, "[no_face]")
    assert "no_face_coffee.png" in noface.stderr
