"""Deployment profile config: household-device-access by default, nothing else accepted (condition 1)."""

from __future__ import annotations

import os
import re

import pytest

from fr_pbd import config
from fr_pbd.errors import ConfigError


def write(home, text, mode=0o600):
    home.mkdir(mode=0o700, exist_ok=True)
    p = home / config.CONFIG_FILE
    p.write_text(text)
    os.chmod(p, mode)
    return p


def test_no_file_gives_the_household_profile_and_owner_only_allowlist(tmp_path):
    cfg = config.load(tmp_path / "nohome")
    assert cfg.profile == config.PROFILE_HOUSEHOLD and cfg.verification_enabled
    assert cfg.path is None
    assert cfg.daemon.allowed_uids == (os.getuid(),) and cfg.daemon.allowed_gids == ()
    assert cfg.daemon.allows(os.getuid(), 12345) and not cfg.daemon.allows(os.getuid() + 1, 12345)
    assert config.PROFILES == (config.PROFILE_HOUSEHOLD,)


def test_full_file_is_read(tmp_path):
    p = write(tmp_path / "h", 'profile = "household-device-access"\n[daemon]\nallowed_uids = [1000, 0, 1000]\n'
                               'allowed_gids = [27]\nsocket = "/run/fr-pbd/fr-pbd.sock"\n')
    cfg = config.load(tmp_path / "h")
    assert cfg.path == p
    assert cfg.daemon.allowed_uids == (1000, 0) and cfg.daemon.allowed_gids == (27,)
    assert str(cfg.daemon.socket) == "/run/fr-pbd/fr-pbd.sock"
    assert cfg.daemon.allows(4242, 27) and not cfg.daemon.allows(4242, 28)
    assert config.require_verification(cfg) is cfg
    assert cfg.daemon.daemon_uid is None  # the home's owner (fr_pbd.daemon.daemon_identity)
    assert cfg.daemon.answer_deadline_ms == config.DEFAULT_ANSWER_DEADLINE_MS
    assert cfg.daemon.max_connections_per_uid == 4
    write(tmp_path / "h", "[daemon]\ndaemon_uid = 998\nanswer_deadline_ms = 250\nmax_connections_per_uid = 2\n")
    d = config.load(tmp_path / "h").daemon
    assert (d.daemon_uid, d.answer_deadline_ms, d.max_connections_per_uid) == (998, 250, 2)


@pytest.mark.parametrize(
    "text, needle",
    [
        ('profile = "surveillance"\n', "profile 'surveillance' does not exist"),
        ('profile = "identify-everyone"\n', "only profile is 'household-device-access'"),
        ('profile = "household-device-access"\nshare_results = true\n', "unknown key(s) share_results"),
        ('[daemon]\nallowed_uids = [1000]\nlisten_tcp = 8080\n', "unknown key(s) in [daemon]: listen_tcp"),
        ('[daemon]\nallowed_uids = 1000\n', "must be a list"),
        ('[daemon]\nallowed_uids = [-1]\n', "ids are integers"),
        ('[daemon]\nallowed_gids = [true]\n', "ids are integers"),
        ('[daemon]\nsocket = ""\n', "socket must be a path"),
        ('[daemon]\ndaemon_uid = -1\n', "daemon_uid must be an integer"),
        ('[daemon]\ndaemon_uid = "fr-pbd"\n', "daemon_uid must be an integer"),
        ('[daemon]\nanswer_deadline_ms = 10\n', "answer_deadline_ms must be an integer in 50..10000"),
        ('[daemon]\nanswer_deadline_ms = 1.5\n', "answer_deadline_ms must be an integer"),
        ('[daemon]\nmax_connections_per_uid = 0\n', "max_connections_per_uid must be an integer in 1..64"),
        ("daemon = 3\n", "must be a table"),
        ("profile = \n", "not valid TOML"),
    ],
)
def test_anything_else_is_a_one_line_config_error(tmp_path, text, needle):
    write(tmp_path / "h", text)
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path / "h")
    msg = str(info.value)
    assert needle in msg and "\n" not in msg and str(tmp_path / "h" / "config.toml") in msg


def test_a_config_others_can_edit_is_refused(tmp_path):
    write(tmp_path / "h", "", mode=0o666)
    with pytest.raises(ConfigError, match="writable by group or others"):
        config.load(tmp_path / "h")
    write(tmp_path / "h", "", mode=0o644)  # readable is fine: it holds no secret
    assert config.load(tmp_path / "h").verification_enabled


def test_a_symlinked_config_is_refused(tmp_path):
    home = tmp_path / "h"
    home.mkdir()
    target = tmp_path / "elsewhere.toml"
    target.write_text("")
    (home / config.CONFIG_FILE).symlink_to(target)
    with pytest.raises(ConfigError, match="regular file"):
        config.load(home)


def test_a_hand_built_other_profile_cannot_verify():
    with pytest.raises(ConfigError, match="does not enable verification"):
        config.require_verification(config.Config(profile="anything-else"))


def test_docs_say_which_features_do_not_exist():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()
    for phrase in ("household-device-access", "allowed_uids", "did not enrol", "Watching a scene",
                   "Sending results anywhere"):
        assert phrase in doc


# --------------------------------------------------------------------------------------
# the home's parents (ssh StrictModes): nobody else may be able to swap the home
# --------------------------------------------------------------------------------------
def test_a_home_below_a_directory_others_can_write_is_refused(tmp_path):
    top = tmp_path / "shared"
    home = top / "me" / "fr-pbd"
    home.mkdir(parents=True, mode=0o700)
    config.check_home_parents(home)  # all mine (and root's above): fine
    config.check_home_parents(tmp_path / "not-yet" / "fr-pbd")  # missing parts: their parent decides
    for mode in (0o777, 0o775, 0o757):
        os.chmod(top, mode)
        with pytest.raises(ConfigError, match=r"writable by group or others without the sticky bit") as info:
            config.check_home_parents(home)
        assert str(top) in str(info.value) and "\n" not in str(info.value)
    os.chmod(top, 0o1777)  # sticky, like /tmp: nobody can rename or remove another's entries
    config.check_home_parents(home)
    os.chmod(top, 0o755)
    os.chmod(home, 0o770)
    with pytest.raises(ConfigError, match="the home .* is writable by group or others"):
        config.check_home_parents(home)


def test_a_home_through_a_link_checks_both_paths(tmp_path):
    real = tmp_path / "real"
    (real / "fr-pbd").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    config.check_home_parents(link / "fr-pbd")
    os.chmod(real, 0o777)
    with pytest.raises(ConfigError, match=str(real)):
        config.check_home_parents(link / "fr-pbd")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_a_home_below_another_users_directory_is_refused(tmp_path):
    top = tmp_path / "theirs"
    home = top / "fr-pbd"
    home.mkdir(parents=True)
    os.chown(top, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        config.check_home_parents(home)
    config.check_home_parents(home, owner=65534)  # nobody's own home, checked for nobody (as `ask` does)
    link = tmp_path / "link"
    link.symlink_to(home)
    os.chown(top, 0, 0)
    os.lchown(link, 65534, 65534)  # a link someone else could point elsewhere
    with pytest.raises(ConfigError, match=f"{link} .*owned by uid 65534"):
        config.check_home_parents(link / "sub")


def test_the_config_of_the_homes_owner_is_trusted_only_when_asked(tmp_path):
    p = write(tmp_path / "h", "[daemon]\ndaemon_uid = 7\n")
    if os.geteuid() != 0:
        pytest.skip("chown to another uid needs root")
    os.chown(p, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        config.load(tmp_path / "h")
    assert config.load(tmp_path / "h", owner=65534).daemon.daemon_uid == 7


def test_capture_table_defaults_values_and_refusals():
    from fr_pbd.config import CaptureConfig

    assert config.parse("").capture == CaptureConfig(max_frames=5, frame_budget_ms=1000)
    assert config.parse("[capture]\nmax_frames = 2\nframe_budget_ms = 300\n").capture == CaptureConfig(2, 300)
    for text, msg in (("[capture]\nmax_frames = 0\n", "max_frames must be an integer in 1..30"),
                      ("[capture]\nframe_budget_ms = 20000\n", "frame_budget_ms must be an integer in 50..10000"),
                      ("[capture]\nframes = 5\n", "unknown key(s) in [capture]: frames"),
                      ("capture = 5\n", "capture must be a table")):
        with pytest.raises(ConfigError, match=re.escape(msg)):
            config.parse(text)


# --- nesting and size, refused before they cost anything -----------------------------------------
@pytest.mark.parametrize("deep", ["a = " + "[" * 3000 + "]" * 3000,
                                  "a = " + "{b = " * 3000 + "1" + "}" * 3000,
                                  "[daemon]\nallowed_uids = " + "[" * 17 + "1" + "]" * 17])
def test_deep_nesting_is_refused_before_the_parser_sees_it(tmp_path, monkeypatch, deep):
    (tmp_path / "config.toml").write_text(deep)
    os.chmod(tmp_path / "config.toml", 0o600)
    called = []
    monkeypatch.setattr(config.tomllib, "loads", lambda text: called.append(text))
    with pytest.raises(ConfigError, match=r"nests arrays or tables \d+ deep; fr-pbd reads at most 16") as e:
        config.load(tmp_path)
    assert "\n" not in str(e.value) and not called


def test_deep_nesting_unguarded_control_is_a_recursion_error():
    """What the pre-scan prevents: the parser itself recurses once per level and fails with RecursionError
    (the internal error of exit 4), after spending its stack on it."""
    with pytest.raises(RecursionError):
        config.tomllib.loads("a = " + "[" * 3000 + "]" * 3000)


def test_brackets_in_strings_and_comments_do_not_count():
    text = ('# [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n'
            '[daemon]\n'
            'socket = "/run/x[[[[[[[[[[[[[[[[[[[[[[[[[[.sock"  # {{{{{{{{{{{{{{{{{{{{{{{{\n'
            'allowed_uids = [1000, 0]\n'
            "[pam]\n"
            "services = ['login', '''sudo''']\n")
    assert config.toml_nesting(text)[0] == 1
    cfg = config.parse(text)
    assert cfg.daemon.allowed_uids == (1000, 0) and cfg.pam.services == ("login", "sudo")
    multi = 'x = """\n' + "[" * 40 + '\n"""\ny = "\\"' + "[" * 40 + '"\n'
    assert config.toml_nesting(multi) == (0, 1)


def test_an_oversized_config_is_refused_unread(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('profile = "household-device-access"\n' + "#" * config.MAX_CONFIG_BYTES + "\n")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="larger than 65536 bytes"):
        config.load(tmp_path)


def test_a_config_that_cannot_be_read_is_an_error_not_the_defaults(tmp_path, monkeypatch):
    """An lstat or open refused (a home this user may not enter) is a ConfigError naming the file,
    never "no config" (the defaults could differ from what the owner wrote)."""
    (tmp_path / "config.toml").write_text('profile = "household-device-access"\n')
    os.chmod(tmp_path / "config.toml", 0o600)

    def refuse(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(config.os, "lstat", refuse)
    with pytest.raises(ConfigError, match="cannot read .*config.toml: Permission denied"):
        config.load(tmp_path)
