"""A board reaches every way in: the daemon, ``fr-pbd verify``, the config file and ``doctor``.

One assembly (:func:`fr_pbd.pipeline.build_pipeline`) builds every pipeline, so the
x86-generic board (int8 embedder, 640x480 detector graph) must be what runs in the
daemon when ``--board x86-generic`` is given, and what ``fr-pbd verify`` runs when
``board = "x86-generic"`` is in the home's config.toml. The int8 graph is recognised
by the metadata of the loaded session, not by the settings that asked for it.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fr_pbd import config
from fr_pbd.errors import ConfigError, FrPbdError
from tests.conftest import missing
from tests.test_daemon import ask, set_frame, wait_for_socket

BOARD = "x86-generic"


@pytest.fixture(scope="module")
def int8_pipeline(models_env):
    from fr_pbd.pipeline import build_pipeline

    try:
        return build_pipeline(BOARD)
    except FrPbdError as exc:  # the int8 embedder or a YuNet variant is not built here
        missing(f"board {BOARD} cannot be assembled: {exc}")


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fr_pbd.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_the_board_decides_the_graph_that_is_loaded(int8_pipeline, home):
    from fr_pbd.pipeline import build_pipeline
    from fr_pbd.verify import Verifier

    assert int8_pipeline.embedder_graph == "int8" and int8_pipeline.settings.detector_input == (640, 480)
    assert build_pipeline(liveness=False).embedder_graph == "fp32"  # the default stays fp32
    v = Verifier(home, board=BOARD)
    assert v.extractor is int8_pipeline.extractor  # the Verifier uses the one assembly, not its own
    assert "int8" in v.describe() and BOARD in v.describe()


def test_config_board_is_read_and_checked(tmp_path):
    assert config.parse('board = "rpi4"\n').board == "rpi4"
    assert config.parse("").board is None
    for bad in ('board = 4\n', 'board = "../../etc/passwd"\n', 'board = ""\n'):
        with pytest.raises(ConfigError, match="board"):
            config.parse(bad)


def test_verify_on_the_command_line_runs_the_board(int8_pipeline, home, faces_dir):
    p = cli("verify", "--home", str(home), "--board", BOARD, "--image", str(faces_dir / "obama3.jpg"))
    assert (p.returncode, p.stdout) == (0, "yes\n"), p.stderr
    p = cli("verify", "--home", str(home), "--board", BOARD, "--image", str(faces_dir / "biden2.jpg"))
    assert (p.returncode, p.stdout) == (1, "no\n"), p.stderr
    p = cli("verify", "--home", str(home), "--board", "rpi3", "--image", str(faces_dir / "obama3.jpg"))
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and "no board 'rpi3'" in p.stderr and "x86-generic" in p.stderr


@pytest.mark.parametrize("section", ['[camera]\nkind = "picamera2"\nwidth = 640\nheight = 480\nfps = 30\n',
                                     '[keys]\nprovider = "device-file"\n'])
def test_a_board_file_with_a_section_nothing_reads_stops_verify(home, faces_dir, tmp_path, section):
    """An older board file's [camera] or [keys] (read by no code) is exit 2, one line naming the section,
    before any model loads: not a verification that seems to run with a camera the file never opened."""
    from fr_pbd import boards

    mine = tmp_path / "boards" / f"{BOARD}.toml"
    mine.parent.mkdir()
    mine.write_text((boards.boards_dir() / f"{BOARD}.toml").read_text(encoding="utf-8") + "\n" + section)
    name = section.split("\n")[0]
    p = cli("verify", "--home", str(home), "--board", str(mine), "--image", str(faces_dir / "obama3.jpg"))
    assert p.returncode == 2 and p.stdout == "", p.stderr
    assert p.stderr.count("\n") == 1 and f"{name} is not read" in p.stderr and str(mine) in p.stderr


def test_the_config_board_reaches_doctor(int8_pipeline, home):
    (home / "config.toml").write_text(f'board = "{BOARD}"\n')
    (home / "config.toml").chmod(0o600)
    p = cli("doctor", "--home", str(home))
    assert f"board: {BOARD} " in p.stdout and "embedder int8" in p.stdout, p.stdout + p.stderr
    p = cli("doctor", "--home", str(home), "--board", "rpi4")  # the option wins over the file
    assert "board: rpi4 " in p.stdout


@pytest.mark.slow
@pytest.mark.parametrize("how", ["option", "config"])
def test_the_daemon_runs_the_board(int8_pipeline, home, faces_dir, tmp_path, how):
    """``--board x86-generic`` (or the config's board) runs the int8 embedder in the daemon, and it answers right."""
    frames = tmp_path / "frames"
    frames.mkdir()
    set_frame(frames, faces_dir / "obama3.jpg")
    sock, log = tmp_path / "d.sock", tmp_path / "daemon.log"
    cmd = [sys.executable, "-m", "fr_pbd.cli", "serve", "--home", str(home), "--socket", str(sock),
           "--frames", str(frames), "--log", str(log)]
    if how == "option":
        cmd += ["--board", BOARD]
    else:
        (home / "config.toml").write_text(f'board = "{BOARD}"\n')
        (home / "config.toml").chmod(0o600)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_socket(sock, proc)
        deadline = time.monotonic() + 10
        while f"board {BOARD}: embedder dlib-resnet-v1 int8" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"board {BOARD}: embedder dlib-resnet-v1 int8" in log.read_text()
        assert "liveness on" in log.read_text()
        assert ask(sock).stdout == "yes\n"
        set_frame(frames, faces_dir / "biden2.jpg")
        assert ask(sock).stdout == "no\n"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
