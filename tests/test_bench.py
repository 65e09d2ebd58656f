"""fr-pbd bench: statistics, board settings with provider fallback, and one short real run."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from fr_pbd import bench
from fr_pbd.errors import ConfigError, ModelError
from tests.conftest import missing


def test_summary_percentiles_in_ms():
    s = bench.summary([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert s["p50"] == pytest.approx(50.5) and s["p95"] == pytest.approx(95.05) and s["p99"] == pytest.approx(99.01)
    assert s["n"] == 100
    assert bench.summary([])["n"] == 0


def test_camera_frame_is_640x480_whatever_the_aspect():
    for shape in ((250, 250, 3), (1080, 1920, 3), (900, 600, 3)):
        assert bench.to_camera_frame(np.zeros(shape, np.uint8)).shape == (480, 640, 3)


def test_machine_info_names_the_machine():
    from fr_pbd.machine import MACHINE_KEYS, machine_info, machine_slug

    info = machine_info()
    for key in MACHINE_KEYS:
        assert key in info
    assert "CPUExecutionProvider" in info["onnxruntime_providers_available"]
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", machine_slug(info))


def test_board_providers_not_here_fall_back_to_cpu_with_a_note():
    from fr_pbd.pipeline import run_settings

    s = run_settings("jetson-orin-nano")
    assert s.providers[-1] == "CPUExecutionProvider"
    if "CUDAExecutionProvider" not in s.providers:
        assert any("not in this onnxruntime build" in n for n in s.notes)
    assert s.detector_input == (640, 480) and s.threads == 6
    assert run_settings(None).board == "default"
    with pytest.raises(ConfigError):
        run_settings("no-such-board")


def test_parser_wiring():
    from fr_pbd.cli import build_parser
    from fr_pbd.cli.bench import cmd_bench

    args = build_parser().parse_args(["bench", "--board", "rpi4", "--out", "x.json", "--rounds", "3"])
    assert args.func is cmd_bench and args.board == "rpi4" and args.rounds == 3


def test_validate_result_rejects_incomplete_files():
    with pytest.raises(ConfigError, match="schema"):
        bench.validate_result({})


@pytest.mark.slow
def test_one_round_on_real_frames_gives_a_valid_result(data_dir, models_env, tmp_path, capsys):
    try:
        doc = bench.run_bench("x86-generic", data_dir, rounds=1)
    except ModelError as exc:  # the int8 embedder or a YuNet variant not built here
        missing(str(exc))
    bench.validate_result(doc)
    json.dumps(doc)  # serialisable
    assert doc["workload"]["frames"] == 33 and doc["end_to_end_ms"]["n"] == 33
    assert doc["workload"]["decisions"]["yes"] >= 3  # obama2/3/4 against the enrolled obama.jpg
    assert doc["stages"]["detect"]["n"] == 33
    assert doc["workload"]["detector_inputs_used"].get("640x480", 0) > 0
    assert doc["board"]["embedder"] == "dlib-resnet-v1-int8" and doc["board"]["precision"] == "int8"
    text = json.dumps(doc).lower()
    assert "score" not in text and "template\"" not in text  # timings and counts only


def test_a_success_reports_its_clear_under_its_own_stage_and_a_failure_has_none(tmp_path):
    """``decide`` is what is on the answer's path; a success's clear, written after it, is ``clear``."""
    from tests.test_login_attacks import stub_home, stub_verifier

    assert {"clear", "count", "decide"} <= set(bench.STAGES)
    home = stub_home(tmp_path / "home")
    seen: list[str] = []
    v = stub_verifier(home, 1)
    v.stage_hook = lambda s, _t: seen.append(s)
    assert v.verify(b"frame", user="alice")
    v.settle()
    assert sorted(seen) == ["clear", "count", "decide", "match", "store_read"]
    seen.clear()
    v._extractor.vector = -v._extractor.vector  # another face
    assert not v.verify(b"frame", user="alice")
    v.settle()
    assert sorted(seen) == ["count", "decide", "match", "store_read"]
