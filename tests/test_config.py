"""Deployment profile config: household-device-access by default, nothing else accepted (condition 1)."""

from __future__ import annotations

import os

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
