"""Account lookups tell no other process who is logging in.

glibc's getpwnam/getpwuid ask nscd (and systemd's userdb) over a Unix socket before they
read /etc/passwd; the daemon looks an account up at every attempt, so it reads the file
itself (fr_pbd.accounts). The control is the same lookup through the standard library.
"""

from __future__ import annotations

import pwd
import subprocess
import sys

from fr_pbd import accounts
from tests.conftest import need_tool

#: The same lookups, through the standard library (the control) and through fr_pbd.accounts.
CONTROL = "import pwd; pwd.getpwnam('root'); pwd.getpwuid(0)"
GUARDED = "from fr_pbd import accounts; accounts.uid_of('root'); accounts.name_of(0); accounts.uid_of('nobody-here')"


def connects(code: str) -> list[str]:
    """The connect() calls a fresh interpreter makes while running ``code`` after its imports."""
    p = subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=60, check=True)
    return [ln for ln in p.stderr.splitlines() if "connect(" in ln]


def test_lookups_agree_with_the_system_for_local_accounts():
    for entry in pwd.getpwall():
        if accounts.uid_of(entry.pw_name) is None:
            continue  # an account the name service adds beyond /etc/passwd is not a local one
        assert accounts.uid_of(entry.pw_name) == entry.pw_uid
    assert accounts.uid_of("root") == 0 and accounts.name_of(0) == "root"
    for bad in ("", "root\n", "ro:ot", "root\x00", "no-such-account-here", None, 7):
        assert accounts.uid_of(bad) is None  # type: ignore[arg-type]
    for bad in (-1, True, "0", 2**40):
        assert accounts.name_of(bad) is None  # type: ignore[arg-type]


def test_lookups_contact_no_other_service_where_the_standard_library_does():
    need_tool("strace", "strace")
    control = connects(CONTROL)
    assert any("nscd" in ln or "userdb" in ln for ln in control), control  # glibc asks the name service
    guarded = connects(GUARDED)
    assert guarded == [], guarded
