"""Small helpers shared by tests (no fixtures here)."""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path


def lfw_image_path(lfw: Path, name: str, number: int) -> Path:
    return lfw / name / f"{name}_{number:04d}.jpg"


def read_pairs(path: Path) -> list[tuple[str, int, str, int]]:
    """LFW pairs file -> (name1, n1, name2, n2); matched pairs have name1 == name2."""
    lines = path.read_text().split("\n")
    out = []
    for line in lines[1:]:
        parts = line.split()
        if len(parts) == 3:
            out.append((parts[0], int(parts[1]), parts[0], int(parts[2])))
        elif len(parts) == 4:
            out.append((parts[0], int(parts[1]), parts[2], int(parts[3])))
    return out


def lfw_images_from_pairs(lfw: Path, pairs_file: str, limit: int) -> list[Path]:
    """The first ``limit`` distinct images named by a pairs file, in file order."""
    seen: dict[Path, None] = {}
    for a, na, b, nb in read_pairs(lfw / pairs_file):
        for name, n in ((a, na), (b, nb)):
            seen.setdefault(lfw_image_path(lfw, name, n), None)
            if len(seen) >= limit:
                return list(seen)
    return list(seen)


# --------------------------------------------------------------------------------------
# Unix accounts: a test never relies on which accounts the host has (alice, nobody, daemon...)
# --------------------------------------------------------------------------------------
def account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def own_account_name(stem: str) -> str:
    """A user name of this test run's own (``frpbd-<stem><pid>``, at most 32 characters, useradd's limit).

    The same stem gives the same name within one run, so a module can name its accounts at import
    and create them in a fixture (:func:`own_accounts`). Whether an account of that name exists is
    checked where it matters: :func:`absent_account` and :func:`own_accounts`.
    """
    return f"frpbd-{stem}{os.getpid()}"[:32]


def absent_account(stem: str) -> str:
    """A user name that is no Unix account on this machine (checked now), for a test that needs one."""
    name = own_account_name(stem)
    assert not account_exists(name), f"an account {name!r} exists: left over by a killed test run? (userdel {name})"
    return name


def absent_uid() -> int:
    """A uid that no account on this machine has (checked now), for files and processes of "someone else"."""
    taken = {p.pw_uid for p in pwd.getpwall()}
    return next(uid for uid in range(65533, 0, -1) if uid not in taken)


@contextlib.contextmanager
def own_accounts(*names: str, shell: str = "/usr/sbin/nologin") -> Iterator[list[pwd.struct_passwd]]:
    """Create the Unix accounts ``names`` (system accounts, no home, uids useradd picks), remove them after.

    Needs root and useradd/userdel (Debian package ``passwd``): fail in CI, skip elsewhere. A name
    that is already an account is refused (the test would otherwise bind another account's uid).
    """
    from tests.conftest import need_root, need_tool

    need_root("creating the test's own Unix accounts (useradd)")
    useradd, userdel = need_tool("useradd", "passwd"), need_tool("userdel", "passwd")
    made: list[str] = []
    try:
        for name in names:
            assert not account_exists(name), f"an account {name!r} exists: left over by a killed test run? (userdel {name})"
            subprocess.run([useradd, "--system", "--no-create-home", "--shell", shell, name], check=True,
                           capture_output=True, timeout=60)
            made.append(name)
        yield [pwd.getpwnam(name) for name in names]
    finally:
        for name in made:
            subprocess.run([userdel, name], capture_output=True, timeout=60)
