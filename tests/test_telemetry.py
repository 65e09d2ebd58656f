"""No per-device identifier from onnxruntime: fr-pbd leaves nothing of its telemetry in the user's home.

onnxruntime's official wheels (1.32) run Microsoft's 1DS telemetry on Linux too: the first
session of a process writes a device id that every later process of the user reuses
(``~/.cache/Microsoft/DeveloperTools/.onnxruntime/deviceid``) and queues events for upload in an
SQLite database beside it. fr_pbd.runtime's docstring says how fr-pbd stops it. Each run
here has a fresh HOME, no XDG_CACHE_HOME and no ORT_DISABLE_TELEMETRY of its own (the test
process has it, since it imported fr_pbd): fr-pbd must set the variable itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import missing

PIN = "2468 1357"
TRACES = ("deviceid", "onnxruntime.db", "DeveloperTools", ".onnxruntime")


def _env(home: Path) -> dict[str, str]:
    # CI is dropped as well: onnxruntime's telemetry stays off where CI is set, so under CI=true both
    # the control and the guarded runs would pass without showing anything; a user's machine has no CI.
    env = {k: v for k, v in os.environ.items()
           if k not in ("XDG_CACHE_HOME", "ORT_DISABLE_TELEMETRY", "FR_PBD_HOME", "CI")}
    env["HOME"] = str(home)
    return env


def _traces(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")
                  if any(t in p.name for t in TRACES))


def test_onnxruntime_alone_writes_a_device_id_into_the_home(models_env, tmp_path):
    """The control: one session, without the variable, leaves the identifier and the event database."""
    home = tmp_path / "home"
    home.mkdir()
    model = models_env / "face_detection_yunet_2023mar.onnx"
    if not model.is_file():
        missing(f"{model} is missing")
    code = ("import sys, onnxruntime as ort; "
            "ort.disable_telemetry_events(); "  # the Python API's switch: it does not stop the files
            "ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])")
    p = subprocess.run([sys.executable, "-c", code, str(model)], env=_env(home), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    device_id = home / ".cache/Microsoft/DeveloperTools/.onnxruntime/deviceid"
    if not device_id.exists():
        pytest.skip(f"this onnxruntime build writes no telemetry files (found: {_traces(home)})")
    assert len(device_id.read_text().strip()) == 36  # a UUID, the same for every later process of this user
    assert (device_id.parent / "onnxruntime.db").is_file()
    # the same session with the variable set before onnxruntime loads: nothing
    clean = tmp_path / "clean"
    clean.mkdir()
    p = subprocess.run([sys.executable, "-c", code, str(model)], env={**_env(clean), "ORT_DISABLE_TELEMETRY": "1"},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and _traces(clean) == [], p.stderr


def _fresh_home(home: Path) -> None:
    from fr_pbd.models import cache_dir

    (home / ".local/share").mkdir(parents=True)  # the store's parent: fr-pbd creates only the last level
    (home / ".cache/fr-pbd").mkdir(parents=True)  # the models built at set-up (dlib-resnet), through this HOME
    (home / ".cache/fr-pbd/models").symlink_to(cache_dir(), target_is_directory=True)


def _cli(home: Path, *args: str, stdin: str | None = None, ort_first: bool = False) -> subprocess.CompletedProcess:
    """One fr-pbd command in its own process under ``home``; ``ort_first``: onnxruntime loaded before fr_pbd."""
    code = ("import sys" + (", onnxruntime" if ort_first else "") + "; from fr_pbd.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *args], env=_env(home), input=stdin, capture_output=True,
                          text=True, timeout=300)


def _enroll_and_verify(home: Path, faces: Path, ort_first: bool = False) -> None:
    """fallback set, enroll and verify (yes and no), each its own process, the store in its default place."""
    p = _cli(home, "fallback", "set", "--secret-stdin", stdin=PIN + "\n", ort_first=ort_first)
    assert p.returncode == 0, p.stderr
    p = _cli(home, "enroll", "--user", "obama", "--image", str(faces / "obama.jpg"), "--image",
             str(faces / "obama2.jpg"), "--consent", "--secret-stdin", stdin=PIN + "\n", ort_first=ort_first)
    assert p.returncode == 0, p.stderr
    p = _cli(home, "verify", "--user", "obama", "--image", str(faces / "obama3.jpg"), ort_first=ort_first)
    assert (p.returncode, p.stdout) == (0, "yes\n"), p.stderr
    p = _cli(home, "verify", "--image", str(faces / "biden2.jpg"), ort_first=ort_first)
    assert (p.returncode, p.stdout) == (1, "no\n"), p.stderr
    assert (home / ".local/share/fr-pbd").is_dir()  # the runs did use this HOME


def test_enroll_and_verify_leave_no_telemetry_in_the_home(models_env, faces_dir, tmp_path):
    """A user's whole first day (PIN, enrolment, a yes and a no): afterwards nothing under HOME is onnxruntime's."""
    home = tmp_path / "home"
    _fresh_home(home)
    _enroll_and_verify(home, faces_dir)
    assert _traces(home) == []
    assert sorted(p.name for p in (home / ".cache").iterdir()) == ["fr-pbd"]


def test_the_same_commands_with_onnxruntime_loaded_first_write_the_device_id(models_env, faces_dir, tmp_path):
    """The control: the same commands, each in a process that loaded onnxruntime before fr_pbd (so the
    variable comes too late, TELEMETRY_OFF is False), leave the identifier and the event database."""
    home = tmp_path / "home"
    _fresh_home(home)
    _enroll_and_verify(home, faces_dir, ort_first=True)
    if _traces(home) == []:
        pytest.skip("this onnxruntime build writes no telemetry files")
    where = ".cache/Microsoft/DeveloperTools/.onnxruntime/"
    assert {where + "deviceid", where + "onnxruntime.db"} <= set(_traces(home))


def test_importing_fr_pbd_sets_the_variable_whatever_the_caller_had(tmp_path):
    """A caller's ORT_DISABLE_TELEMETRY=0 does not turn it back on: fr_pbd sets 1 before onnxruntime loads."""
    code = "import os, fr_pbd, sys; print(os.environ['ORT_DISABLE_TELEMETRY'], 'onnxruntime' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], env={**_env(tmp_path), "ORT_DISABLE_TELEMETRY": "0"},
                       capture_output=True, text=True, timeout=60)
    assert p.stdout == "1 False\n", p.stderr
