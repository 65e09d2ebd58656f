"""Boards: every shipped board file validates; broken ones fail with one-line ConfigErrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fr_pbd import boards
from fr_pbd.errors import ConfigError
from fr_pbd.runtime import KNOWN_PROVIDERS, available_providers

BOARD_DIR = Path(__file__).resolve().parent.parent / "hardware" / "boards"  # links to fr_pbd/_data/boards
GOOD = (BOARD_DIR / "x86-generic.toml").read_text(encoding="utf-8")


def test_every_board_has_a_board_file():
    assert sorted(p.stem for p in BOARD_DIR.glob("*.toml")) == sorted(boards.BOARDS)


@pytest.mark.parametrize("board", boards.BOARDS)
def test_shipped_board_is_valid_and_documented(board):
    prof = boards.load_board(board)
    assert prof.board == board and prof.path.resolve() == (BOARD_DIR / f"{board}.toml").resolve()
    assert prof.providers[-1] == "CPUExecutionProvider"
    assert all(p in KNOWN_PROVIDERS for p in prof.providers)
    assert prof.embedder_variant in ("fp32", "int8")
    text = prof.path.read_text(encoding="utf-8")
    assert text.count("\n#") >= 5, "each board file explains its choices in comments"
    chosen, missing = available_providers(prof.providers)
    assert chosen[-1] == "CPUExecutionProvider"  # unavailable providers fall back, never fail
    assert set(missing) <= set(prof.providers)


def test_board_specific_facts():
    assert boards.load_board("jetson-nano").providers[0] == "TensorrtExecutionProvider"
    assert boards.load_board("rpi4").embedder_variant == "fp32"
    assert boards.load_board("rpi4").detector_input == (320, 240)


@pytest.mark.parametrize("board", boards.BOARDS)
def test_a_board_holds_only_what_the_pipeline_reads(board):
    """Every field of a Board is one that run_settings turns into how the models run; no camera, no keys."""
    import dataclasses

    from fr_pbd.pipeline import run_settings

    fields = {f.name for f in dataclasses.fields(boards.Board)}
    assert fields == {"board", "description", "providers", "threads", "detector_input", "embedder_model",
                      "embedder_variant", "path"}
    b = boards.load_board(board)
    s = run_settings(b)
    assert (s.board, s.detector_input, s.embedder, s.embedder_variant) == (
        b.board, b.detector_input, b.embedder_model, b.embedder_variant)
    assert s.threads == (b.threads or None) and set(s.providers) <= set(b.providers)
    text = b.path.read_text(encoding="utf-8")
    assert "[camera]" not in text and "[keys]" not in text and "--camera" in text  # the camera, as a comment


@pytest.mark.parametrize("section,where_it_went", [
    ('[camera]\nkind = "picamera2"\nwidth = 640\nheight = 480\nfps = 30\n', "give it with --camera"),
    ('[camera]\nkind = "v4l2"\ndevice = "/dev/video0"\nwidth = 640\nheight = 480\nfps = 30\n',
     "give it with --camera"),
    ('[keys]\nprovider = "device-file"\n', "fr-pbd keys init --provider"),
])
def test_a_section_nothing_reads_is_refused_by_name(tmp_path, section, where_it_went):
    """A board file of an older fr-pbd (with [camera]/[keys]) fails in one line naming the section: before,
    kind = "picamera2" passed validation and no code ever opened it."""
    name = section.split("]")[0] + "]"
    p = tmp_path / "x86-generic.toml"
    p.write_text(GOOD + "\n" + section, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        boards.load_board(p)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"board file {p}: {name} is not read")
    assert where_it_went in msg


def test_load_by_path(tmp_path):
    p = tmp_path / "x86-generic.toml"
    p.write_text(GOOD)
    assert boards.load_board(p).board == "x86-generic"


def _broken(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


@pytest.mark.parametrize("text,fragment", [
    ("schema = 1\nboard = [", "not valid TOML"),
    (_broken("schema = 1", "schema = 2"), "schema must be 1"),
    (_broken('providers = ["CPUExecutionProvider"]', 'providers = ["CudaExecutionProvider", "CPUExecutionProvider"]'),
     "unknown execution provider 'CudaExecutionProvider'"),
    (_broken('providers = ["CPUExecutionProvider"]', 'providers = ["CPUExecutionProvider", "CUDAExecutionProvider"]'),
     "must end with CPUExecutionProvider"),
    (_broken('providers = ["CPUExecutionProvider"]', "providers = []"), "non-empty list"),
    (_broken("threads = 0", "threads = -1"), "threads must be 0..64"),
    (_broken("threads = 0", 'threads = "4"'), "threads has the wrong type"),
    (_broken("input_size = [640, 480]", "input_size = [1280, 720]"), "within 16..640"),
    (_broken("input_size = [640, 480]", "input_size = 640"), "wrong type"),
    (_broken('variant = "int8"', 'variant = "fp16"'), "variant must be one of"),
    (_broken('model = "dlib-resnet-v1"', 'model = "dlib-resnet-v1"\nbatch = 4'),
     "unknown key(s) in [embedder]: batch"),
    (_broken('variant = "int8"\n', ""), "[embedder] lacks variant"),
    ("turbo = true\n" + GOOD, "unknown key(s) turbo"),
    (GOOD + "\n[keyz]\nprovider = 1\n", "unknown key(s) keyz"),
    (_broken("[detector]\n", "[detectr]\n"), "unknown key(s) detectr"),
])
def test_broken_board_file_is_one_line_config_error(text, fragment):
    with pytest.raises(ConfigError) as info:
        boards.parse_board(text, "bad.toml")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("board file bad.toml:")
    assert fragment in msg


def test_file_name_must_match_board(tmp_path):
    p = tmp_path / "rpi4.toml"
    p.write_text(GOOD)
    with pytest.raises(ConfigError, match="does not match the file name"):
        boards.load_board(p)


def test_unknown_board_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known: jetson-nano, jetson-orin-nano, rpi4, rpi5, x86-generic"):
        boards.load_board("rpi3")


def test_unreadable_board_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        boards.load_board(tmp_path / "missing.toml")
    bad = tmp_path / "x86-generic.toml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError):
        boards.load_board(bad)
