"""PAM binds the account: a real PAM stack (pamtester -> pam_exec -> ``fr-pbd ask --pam``), as root.

The attack: the old PAM line had no ``--user``, so the face of any enrolled person
(a child's) opened any account, root's for ``sudo`` included. Here two people are enrolled
under two Unix accounts the test creates for itself (Obama as ``frpbd-obama<pid>``, the second
person as ``frpbd-biden<pid>``; removed afterwards) and the test drives the service line
docs/pam.md shows, with a daemon behind it:

* Obama's face opens his account and neither the other one nor ``root``;
* the old line (no ``--pam``) opens nothing: ``fr-pbd ask`` refuses to run under PAM without it;
* once root enrols (with Biden's photos here), Biden's face opens root, Obama's still does not;
* with the daemon stopped, nothing opens.

CI runs as root with pamtester installed (.ci/run); anything less fails there (conftest
``missing``) and skips elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import missing, need_tool
from tests.helpers import own_account_name, own_accounts
from tests.test_daemon import PIN, RunningDaemon, set_frame, write_config

# the Unix accounts the two people enrol under: the test's own (pam_service creates them)
OBAMA, BIDEN = own_account_name("obama"), own_account_name("biden")


def _pam_exec_module() -> bool:
    for d in ("/lib/x86_64-linux-gnu/security", "/usr/lib/x86_64-linux-gnu/security", "/lib/security",
              "/usr/lib/security", "/lib/aarch64-linux-gnu/security", "/usr/lib/aarch64-linux-gnu/security",
              "/usr/lib64/security"):
        if os.path.exists(os.path.join(d, "pam_exec.so")):
            return True
    return False


@pytest.fixture()
def pam_service():
    """Write /etc/pam.d/<name> files for the test; removed afterwards."""
    need_tool("pamtester", "pamtester")
    if not _pam_exec_module():
        missing("pam_exec.so is not installed (apt-get install libpam-modules)")
    if os.geteuid() != 0 or not os.access("/etc/pam.d", os.W_OK):
        missing("writing a PAM service file in /etc/pam.d needs root")
    written: list[Path] = []

    def write(suffix: str, auth_line: str) -> str:
        service = f"fr-pbd-test-{os.getpid()}-{suffix}"
        path = Path("/etc/pam.d") / service
        # `required` only so that pamtester reports the face decision alone (docs/pam.md uses
        # [success=done default=ignore] before the password line)
        path.write_text(f"auth     required {auth_line}\naccount  required pam_permit.so\n")
        written.append(path)
        return service

    with own_accounts(OBAMA, BIDEN):
        try:
            yield write
        finally:
            for path in written:
                path.unlink(missing_ok=True)


def pam(service: str, user: str) -> bool:
    p = subprocess.run(["pamtester", service, user, "authenticate"], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    ok = p.returncode == 0
    assert ok == ("successfully authenticated" in p.stdout + p.stderr), p.stdout + p.stderr
    return ok


@pytest.mark.slow
def test_one_persons_face_opens_only_their_own_account(pam_service, tmp_path, extractor, faces_dir, lfw_dir):
    from fr_pbd.verify import Consent, Verifier

    # the second person: three LFW photos of Colin Powell enrolled (as the `enroll` default asks), a
    # fourth one shown (the two Biden photos of faces/ score below the default threshold as 1 vs 1)
    powell = [lfw_dir / "Colin_Powell" / f"Colin_Powell_{i:04d}.jpg" for i in range(1, 5)]
    home = tmp_path / "home"
    v = Verifier(home, extractor)
    v.set_fallback(PIN)
    v.enroll(OBAMA, [faces_dir / "obama.jpg", faces_dir / "obama2.jpg", faces_dir / "obama4.jpg"],
             Consent("1", "test"), fallback=PIN)
    v.enroll(BIDEN, powell[:3], Consent("1", "test"), fallback=PIN)
    sock = tmp_path / "d.sock"
    # the test's services are on the [pam] allow-list (tests/test_pam_context.py: which services may ask)
    services = ", ".join(f'"fr-pbd-test-{os.getpid()}-{s}"' for s in ("safe", "old"))
    write_config(home, f'socket = "{sock}"\n[pam]\nservices = [{services}]\n')
    frames = tmp_path / "frames"
    frames.mkdir()
    d = RunningDaemon(home, sock, frames, tmp_path / "daemon.log")
    fr_pbd = f"{sys.executable} -m fr_pbd.cli ask"
    safe = pam_service("safe", f"pam_exec.so quiet {fr_pbd} --pam --home {home}")  # the line of docs/pam.md
    old = pam_service("old", f"pam_exec.so quiet {fr_pbd} --socket {sock}")  # the line before --pam existed
    try:
        set_frame(frames, faces_dir / "obama3.jpg")
        assert pam(safe, OBAMA)
        assert not pam(safe, BIDEN)  # another enrolled person's account
        assert not pam(safe, "root")  # root did not enrol: no face opens root
        assert not pam(old, "root")  # before: `successfully authenticated` with Obama's face
        set_frame(frames, powell[3])
        assert pam(safe, BIDEN)
        assert not pam(safe, OBAMA)

        v.enroll("root", powell[:3], Consent("1", "test"), fallback=PIN)
        assert pam(safe, "root")  # root's own (enrolled) face
        set_frame(frames, faces_dir / "obama3.jpg")
        assert not pam(safe, "root")
        assert pam(safe, OBAMA)

        d.stop()
        assert not pam(safe, OBAMA)  # no daemon: fails here, falls through to the password in a real stack
    finally:
        d.stop()
    log = (tmp_path / "daemon.log").read_text()
    assert f"user '{BIDEN}'" in log and "user 'root'" in log
