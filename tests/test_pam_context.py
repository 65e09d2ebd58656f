"""Face login answers only at the device: network logins, other services and other users' ``su`` get no yes.

The attack (before): with the pam_exec line of docs/pam.md in Debian's common-auth, a loopback
``ssh alice@127.0.0.1`` (UsePAM, keyboard-interactive) logged in without a password while
alice's face was at the camera, ``pamtester -I rhost=203.0.113.66 SERVICE alice authenticate``
succeeded, and so did ``su alice`` from another account: ``ask --pam`` read PAM_USER only.

Each attack below runs through a real PAM stack (pamtester, su, a loopback sshd) with the
account's face in front of the daemon's camera, beside its control: the same face, daemon and
stack say yes for the local login, and the ssh harness logs in when the face line is replaced
by ``pam_permit``. The PAM files live in a private copy of /etc/pam.d bind-mounted in a mount
namespace of the test's own (``unshare -m``), so that the services can have their real names
(``sshd``, ``su``, ``login``) without touching the host's files.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fr_pbd.config import DEFAULT_PAM_SERVICES, NEVER_PAM_SERVICES, PamPolicy, parse
from fr_pbd.daemon.pam import PamRefusal, check_pam_context
from fr_pbd.errors import ConfigError
from tests.conftest import missing, need_tool
from tests.helpers import own_account_name, own_accounts
from tests.test_daemon import PIN, RunningDaemon, set_frame, write_config

REMOTE = "203.0.113.66"  # TEST-NET-3 (RFC 5737): never a real host


# --------------------------------------------------------------------------------------
# the rule, on PAM environments (no daemon)
# --------------------------------------------------------------------------------------
def _env(**items: str) -> dict[str, str]:
    env = {"PAM_TYPE": "auth", "PAM_USER": "root", "PAM_SERVICE": "login", "PAM_TTY": "tty1"}
    env.update(items)
    return {k: v for k, v in env.items() if v is not None}


def test_a_local_console_login_may_ask(tmp_path):
    assert check_pam_context(_env(), sessions=tmp_path) == "root"
    assert check_pam_context(_env(PAM_SERVICE="gdm-password", PAM_TTY=":0"), sessions=tmp_path) == "root"
    assert check_pam_context(_env(PAM_SERVICE="swaylock", PAM_TTY=""), sessions=tmp_path) == "root"


@pytest.mark.parametrize("items, words", [
    ({"PAM_RHOST": REMOTE}, "network"),
    ({"PAM_RHOST": "127.0.0.1"}, "network"),  # a loopback ssh is a network login too
    ({"PAM_RHOST": "localhost"}, "network"),
    ({"PAM_SERVICE": "sshd", "PAM_TTY": "ssh"}, "service 'sshd'"),
    ({"PAM_SERVICE": "su"}, "service 'su'"),
    ({"PAM_SERVICE": "cron"}, "service 'cron'"),
    ({"PAM_SERVICE": ""}, "PAM_SERVICE"),
    ({"PAM_RUSER": "mallory"}, "PAM_RUSER"),
    ({"PAM_SERVICE": "sudo", "PAM_TTY": "/dev/pts/3"}, "terminal"),  # an ssh session's pty, for all we know
    ({"PAM_TTY": "ttyS0"}, "terminal"),  # a serial line may be a modem
    ({"PAM_USER": "obama"}, "not a Unix account"),
    ({"PAM_USER": "root\n"}, "not a Unix account"),
])
def test_every_other_context_is_refused(tmp_path, items, words):
    with pytest.raises(PamRefusal, match=words):
        check_pam_context(_env(**items), sessions=tmp_path)


def test_logind_decides_for_a_pseudo_terminal(tmp_path):
    """sudo in a terminal emulator: yes in a local seat's session, never in a remote one."""
    (tmp_path / "7").write_text("UID=0\nUSER=root\nREMOTE=0\nSEAT=seat0\nTYPE=x11\nSERVICE=gdm-password\n")
    (tmp_path / "8").write_text("UID=0\nUSER=root\nREMOTE=1\nREMOTE_HOST=203.0.113.66\nTYPE=tty\nSERVICE=sshd\n")
    (tmp_path / "9").write_text("UID=0\nUSER=root\nREMOTE=0\nTYPE=tty\nSERVICE=login\n")  # no seat: unknown
    pts = _env(PAM_SERVICE="sudo", PAM_TTY="/dev/pts/3")
    assert check_pam_context(pts, sessions=tmp_path, session_id="7") == "root"
    with pytest.raises(PamRefusal, match="remote"):
        check_pam_context(pts, sessions=tmp_path, session_id="8")
    with pytest.raises(PamRefusal, match="remote"):  # a remote session's caller on a console name too
        check_pam_context(_env(), sessions=tmp_path, session_id="8")
    with pytest.raises(PamRefusal, match="terminal"):
        check_pam_context(pts, sessions=tmp_path, session_id="9")
    with pytest.raises(PamRefusal, match="terminal"):  # no logind record for the session: not proven local
        check_pam_context(pts, sessions=tmp_path, session_id="10")


def test_the_allow_list_is_configurable_but_never_for_network_logins():
    cfg = parse('[pam]\nservices = ["login", "my-locker"]\nttys = ["tty[0-9]"]\n')
    assert cfg.pam == PamPolicy(services=("login", "my-locker"), ttys=("tty[0-9]",))
    assert parse("").pam.services == DEFAULT_PAM_SERVICES
    assert not set(DEFAULT_PAM_SERVICES) & set(NEVER_PAM_SERVICES)
    for bad in ("sshd", "su", "xrdp-sesman"):
        with pytest.raises(ConfigError, match="never answers a network login"):
            parse(f'[pam]\nservices = ["login", "{bad}"]\n')
    with pytest.raises(ConfigError, match="list of names"):
        parse('[pam]\nservices = "login"\n')
    with pytest.raises(ConfigError, match="unknown key"):
        parse('[pam]\nrhosts = ["10.0.0.1"]\n')


# --------------------------------------------------------------------------------------
# real PAM stacks: pamtester, su and a loopback sshd, with the face at the camera
# --------------------------------------------------------------------------------------
_need = need_tool  # the tool's path; missing: fail in CI, skip elsewhere


class PamWorld:
    """A daemon with the account's face at its camera, and a private /etc/pam.d to log in through."""

    def __init__(self, root: Path, user: str, other: str, home: Path, frames: Path, daemon: RunningDaemon) -> None:
        self.root, self.user, self.other, self.home, self.frames, self.daemon = root, user, other, home, frames, daemon
        self.pamd = root / "pam.d"
        shutil.copytree("/etc/pam.d", self.pamd, symlinks=True)
        self.log = root / "ask.log"
        self.ask = f"{sys.executable} -m fr_pbd.cli ask --pam --home {home}"

    def service(self, name: str, auth: str | None = None) -> None:
        """/etc/pam.d/NAME of the namespace: the face line (``required``: the face decision alone)."""
        line = auth or f"pam_exec.so quiet log={self.log} {self.ask}"
        # the optional pam_permit gives su's pam_setcred a module that answers it; it cannot turn a
        # failed `required` line into a success
        (self.pamd / name).write_text(f"auth     required {line}\nauth     optional pam_permit.so\n"
                                      "account  required pam_permit.so\nsession  required pam_permit.so\n")

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """``argv`` in a mount namespace where /etc/pam.d is the private copy."""
        script = f'mount --bind "{self.pamd}" /etc/pam.d && exec "$@"'
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv],
                              capture_output=True, text=True, timeout=kw.pop("timeout", 120), **kw)

    def pamtester(self, service: str, user: str, *items: str) -> bool:
        args = ["pamtester"]
        for item in items:
            args += ["-I", item]
        p = self.run([*args, service, user, "authenticate"], stdin=subprocess.DEVNULL)
        ok = p.returncode == 0
        assert ok == ("successfully authenticated" in p.stdout + p.stderr), p.stdout + p.stderr
        return ok

    def refusals(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


@pytest.fixture()
def pam_world(tmp_path, extractor, faces_dir):
    _need("pamtester", "pamtester")
    _need("unshare", "util-linux")
    if os.geteuid() != 0:
        missing("a private /etc/pam.d (unshare -m, mount --bind) and test accounts need root")
    from fr_pbd.verify import Consent, Verifier

    user, other = own_account_name("a"), own_account_name("b")  # the test's own accounts, removed after
    d = None
    with own_accounts(user, other, shell="/bin/sh"):
        try:
            home = tmp_path / "home"
            v = Verifier(home, extractor)
            v.set_fallback(PIN)
            v.enroll(user, [faces_dir / "obama.jpg", faces_dir / "obama2.jpg", faces_dir / "obama4.jpg"],
                     Consent("1", "test"), fallback=PIN)
            sock = tmp_path / "d.sock"
            write_config(home, f'socket = "{sock}"\nallowed_uids = [0]\n')
            frames = tmp_path / "frames"
            frames.mkdir()
            set_frame(frames, faces_dir / "obama3.jpg")  # the account's owner is at the camera throughout
            d = RunningDaemon(home, sock, frames, tmp_path / "daemon.log")
            yield PamWorld(tmp_path, user, other, home, frames, d)
        finally:
            if d is not None:
                d.stop()


@pytest.mark.slow
def test_pamtester_remote_host_service_and_ruser_are_refused(pam_world):
    w = pam_world
    w.service("login")
    w.service("sshd")
    w.service("su")
    # control: the face at the camera opens the account for a local console login
    assert w.pamtester("login", w.user, "tty=tty1")
    # the same stack, the same face, from the network
    assert not w.pamtester("login", w.user, "tty=tty1", f"rhost={REMOTE}")
    assert not w.pamtester("login", w.user, "tty=tty1", "rhost=127.0.0.1")
    assert not w.pamtester("sshd", w.user, "tty=ssh")
    # another account asking to become this one
    assert not w.pamtester("login", w.user, "tty=tty1", f"ruser={w.other}")
    assert not w.pamtester("su", w.user, "tty=/dev/pts/0", f"ruser={w.other}")
    # a pseudo-terminal is not proven local without logind
    assert not w.pamtester("login", w.user, "tty=/dev/pts/0")
    # a name that is not an account (but enrolled names are never accounts by accident)
    assert not w.pamtester("login", "obama", "tty=tty1")
    log = w.refusals()
    for words in ("from the network (PAM_RHOST='203.0.113.66')", "from the network (PAM_RHOST='127.0.0.1')",
                  "service 'sshd'", "service 'su'", f"'{w.other}' asks to become '{w.user}'",
                  "terminal '/dev/pts/0'", "'obama' is not a Unix account"):
        assert words in log, log
    # and after all those refusals the local login still works: nothing was counted against it
    assert w.pamtester("login", w.user, "tty=tty1")


@pytest.mark.slow
def test_su_from_another_users_session_is_refused(pam_world):
    w = pam_world
    _need("setpriv", "util-linux")
    _need("su", "util-linux")
    other = pwd.getpwnam(w.other)
    w.service("su")
    p = w.run(["setpriv", f"--reuid={other.pw_uid}", f"--regid={other.pw_gid}", "--clear-groups",
               "su", w.user, "-c", "echo logged-in"], stdin=subprocess.DEVNULL)
    assert p.returncode != 0 and "logged-in" not in p.stdout, p.stdout + p.stderr
    # pam_exec turns the command's non-zero exit into PAM_SYSTEM_ERR, which su reports so
    assert "System error" in p.stderr or "Authentication failure" in p.stderr, p.stderr
    assert "face login is not offered to the PAM service 'su'" in w.refusals()
    # control: the same su, the same caller, with the face line replaced by pam_permit, logs in
    w.service("su", auth="pam_permit.so")
    p = w.run(["setpriv", f"--reuid={other.pw_uid}", f"--regid={other.pw_gid}", "--clear-groups",
               "su", w.user, "-c", "echo logged-in"], stdin=subprocess.DEVNULL)
    assert p.returncode == 0 and "logged-in" in p.stdout, p.stdout + p.stderr


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ssh_to_loopback_gets_no_face_login(pam_world):
    """A real sshd on 127.0.0.1 with UsePAM and keyboard-interactive: the face line answers no."""
    w = pam_world
    sshd = _need("sshd", "openssh-server")
    ssh = _need("ssh", "openssh-client")
    keygen = _need("ssh-keygen", "openssh-client")
    key = w.root / "host_ed25519"
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    port = _free_port()
    conf = w.root / "sshd_config"
    conf.write_text(f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {key}\nUsePAM yes\n"
                    "KbdInteractiveAuthentication yes\nPasswordAuthentication no\nPubkeyAuthentication no\n"
                    "PermitRootLogin no\nAuthenticationMethods keyboard-interactive\nPidFile none\n"
                    "MaxStartups 4\nLoginGraceTime 20\n")

    def login() -> subprocess.CompletedProcess:
        # sshd -d: one connection, in the foreground, then exits (a bounded listener)
        script = (f'mount --bind "{w.pamd}" /etc/pam.d && {{ {sshd} -d -e -f "{conf}" 2>"{w.root}/sshd.log" & }} '
                  f'&& for i in $(seq 100); do grep -q "Server listening" "{w.root}/sshd.log" 2>/dev/null && break; '
                  f'sleep 0.1; done; '
                  f'timeout 60 {ssh} -v -p {port} -o BatchMode=no -o StrictHostKeyChecking=no '
                  f'-o UserKnownHostsFile=/dev/null -o PreferredAuthentications=keyboard-interactive '
                  f'-o NumberOfPasswordPrompts=1 -o ConnectTimeout=10 {w.user}@127.0.0.1 echo logged-in; wait')
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    w.service("sshd")
    p = login()
    assert "logged-in" not in p.stdout and "Authenticated to 127.0.0.1" not in p.stderr, p.stdout + p.stderr
    assert "Permission denied" in p.stderr, p.stderr
    assert "from the network (PAM_RHOST='127.0.0.1')" in w.refusals(), w.refusals()
    # control: the harness does log in when the face line is replaced by a module that says yes
    w.service("sshd", auth="pam_permit.so")
    p = login()
    assert "Authenticated to 127.0.0.1" in p.stderr, p.stdout + p.stderr
    # and the face was at the camera all along: the local login says yes
    w.service("login")
    assert w.pamtester("login", w.user, "tty=tty1")
    time.sleep(0)  # nothing left running: sshd -d served one connection each time
