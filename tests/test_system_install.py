"""``fr-pbd system install | uninstall``, for real, as root, on a machine of the test's own.

The machine: a mount namespace (``unshare -m``) whose /etc, /usr, /var, /opt and /run are
overlays of the host's with their writes on a tmpfs, so that the installer runs with no
``--root``, writes the real paths (/etc/pam.d, /etc/systemd/system, /usr/share/pam-configs,
/var/lib/fr-pbd, the user database) and the host sees none of it. Every step enters that
namespace (``nsenter -m``). fr-pbd is installed system-wide there as an administrator would
(PAM runs it as root, the daemon as its own user, so it must not live in /root where this
machine's Python does): a venv in /opt/fr-pbd on the distribution's Python, with this
checkout's packages on its path.

Debian/Ubuntu: install (pam-auth-update regenerates common-auth), ``fallback set --system``
and ``enroll --system`` (real photos, a Unix account of the test's own), the daemon started as
its user with the ExecStart, Environment and RuntimeDirectory of the installed unit (``--frames``
standing in for ``--camera``: the only change), then pamtester through the regenerated stack:
the account's face at the camera says yes for ``login`` on tty1 and no for ``sshd`` (not asked).
Uninstall is refused while the daemon runs; after it, every file of /etc/pam.d, the user
database, /usr/share/pam-configs, /usr/local, /var/lib/pam and debconf's database is byte-identical
to before, and the account, the unit and the home are gone. ``--dry-run`` changes nothing.
A generic distribution (pam-auth-update hidden): the line is printed, no PAM file written.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fr_pbd import models
from fr_pbd.system import DAEMON_USER, MODELS_DIR, PAM_LINE, PAM_PROFILE, RECORD, SYSTEM_HOME, UNIT, unit_text
from tests.conftest import missing

PIN = "246813579"
VENV = Path("/opt/fr-pbd")
FR_PBD = str(VENV / "bin" / "fr-pbd")
TEST_DIR = Path("/run/fr-pbd-test")  # the namespace's: photos and the camera's frame, readable by the daemon
#: What the install may change and the uninstall must put back byte for byte.
KEPT = ["/etc/pam.d", "/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/systemd",
        "/usr/share/pam-configs", "/usr/local", "/var/lib/pam", "/var/cache/debconf/config.dat",
        "/var/cache/debconf/templates.dat"]

_HASHER = r"""
import hashlib, json, os, stat, sys
out = {}
def add(p):
    st = os.lstat(p)
    if stat.S_ISLNK(st.st_mode):
        out[p] = "link:" + os.readlink(p)
    elif stat.S_ISDIR(st.st_mode):
        out[p] = "dir:%o:%d:%d" % (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        for n in sorted(os.listdir(p)):
            add(os.path.join(p, n))
    elif stat.S_ISREG(st.st_mode):
        out[p] = "%o:%d:%d:%s" % (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                                  hashlib.sha256(open(p, "rb").read()).hexdigest())
    else:
        out[p] = "other"
for p in sys.argv[1:]:
    if os.path.lexists(p):
        add(p)
    else:
        out[p] = "absent"
out["/var/lib entries"] = sorted(os.listdir("/var/lib"))
print(json.dumps(out))
"""


class Machine:
    """A mount namespace with private overlays of /etc, /usr, /var, /opt and /run, held by one process."""

    def __init__(self, scratch: Path) -> None:
        scratch.mkdir()
        script = ('set -e; mount -t tmpfs -o mode=0700 tmpfs "$1"; '
                  'for d in etc usr var opt run; do mkdir -p "$1/$d/u" "$1/$d/w"; '
                  'mount -t overlay overlay -o "lowerdir=/$d,upperdir=$1/$d/u,workdir=$1/$d/w" "/$d"; done; '
                  'echo ready; exec sleep 100000')
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                                        str(scratch)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.holder.stdout.readline()
        if line.strip() != "ready":
            self.holder.kill()
            raise AssertionError(f"the namespace did not come up: {line} {self.holder.stderr.read()}")
        self.env = {**os.environ, "FR_PBD_MODELS": os.path.abspath(os.environ.get("FR_PBD_MODELS", "")),
                    "PYTHONDONTWRITEBYTECODE": "1"}
        self.env.pop("FR_PBD_HOME", None)

    def argv(self, argv: list[str]) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-m", "--", *argv]

    def run(self, argv: list[str], check: bool = False, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=kw.pop("timeout", 300),
                           env=kw.pop("env", self.env), **kw)
        if check:
            assert p.returncode == 0, f"{argv}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def sh(self, script: str) -> str:
        return self.run(["sh", "-c", script], check=True).stdout

    def hashes(self, paths: list[str]) -> dict[str, str]:
        return json.loads(self.run([sys.executable, "-c", _HASHER, *paths], check=True).stdout)

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()


def _changed(before: dict, after: dict) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def _system_venv(m: Machine) -> None:
    """/opt/fr-pbd: a venv on the distribution's Python whose path holds this checkout's packages."""
    import fr_pbd
    import numpy

    base = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not base.is_file():
        missing(f"{base} is not installed (the daemon cannot run a Python under /root; apt-get install python3)")
    paths = [str(Path(numpy.__file__).parents[1]), str(Path(fr_pbd.__file__).parents[1])]
    for p in paths:  # the daemon's user must reach them: open each private directory above, in the namespace only
        for d in reversed(Path(p).parents):
            if not os.stat(d).st_mode & 0o001:
                m.sh(f'mkdir -p /run/fr-pbd-open/u{abs(hash(d))} /run/fr-pbd-open/w{abs(hash(d))} && '
                     f'chmod 0755 /run/fr-pbd-open/u{abs(hash(d))} && mount -t overlay overlay -o '
                     f'"lowerdir={d},upperdir=/run/fr-pbd-open/u{abs(hash(d))},workdir=/run/fr-pbd-open/w{abs(hash(d))}"'
                     f' "{d}"')
    m.run([str(base), "-m", "venv", "--without-pip", str(VENV)], check=True)
    site = VENV / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    script = f"#!{VENV}/bin/python\nimport sys\nfrom fr_pbd.cli import main\nsys.exit(main())\n"
    m.sh(f"printf '%s\\n' {' '.join(paths)} > {site}/fr-pbd-checkout.pth && "
         f"printf '%s' '{script}' > {FR_PBD} && chmod 0755 {FR_PBD}")


@pytest.fixture()
def machine(tmp_path, models_env):
    for tool, package in (("unshare", "util-linux"), ("nsenter", "util-linux"), ("useradd", "passwd"),
                          ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            missing(f"{tool} not installed (apt-get install {package})")
    if os.geteuid() != 0:
        missing("the system install needs root (a mount namespace, accounts, /etc)")
    for name in ("dlib-resnet-v1", "yunet-2023mar"):
        if not models.status(name).verified:
            missing(f"model {name} is not here (fr-pbd models build dlib-resnet; FR_PBD_MODELS)")
    m = Machine(tmp_path / "ns")
    try:
        taken = [p for p in (SYSTEM_HOME, RECORD, UNIT, PAM_PROFILE) if os.path.lexists(p)]
        try:
            pwd.getpwnam(DAEMON_USER)
            taken.append(DAEMON_USER)
        except KeyError:
            pass
        if taken:
            missing(f"this machine already has an fr-pbd system install ({', '.join(map(str, taken))})")
        _system_venv(m)
        yield m
    finally:
        m.close()


def _installed_unit(m: Machine) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in m.run(["cat", str(UNIT)], check=True).stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def _start_daemon(m: Machine, log: Path) -> subprocess.Popen:
    """The installed unit's ExecStart as its User=, with its Environment= and RuntimeDirectory= (as systemd would)."""
    unit = _installed_unit(m)
    user, group = unit["User"][0], unit["Group"][0]
    run_dir = Path("/run") / unit["RuntimeDirectory"][0]
    m.sh(f"install -d -m {unit['RuntimeDirectoryMode'][0]} -o {user} -g {group} {run_dir}")
    exec_start = unit["ExecStart"][0]
    assert exec_start.count("--camera /dev/video0") == 1, exec_start
    argv = exec_start.replace("--camera /dev/video0", f"--frames {TEST_DIR}/frames").split()
    groups = [g for g in unit["SupplementaryGroups"][0].split() if m.run(["getent", "group", g]).returncode == 0]
    env = ["env", "-i", f"HOME={SYSTEM_HOME}", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", *unit["Environment"]]
    cmd = ["setpriv", f"--reuid={user}", f"--regid={group}",
           f"--groups={','.join(groups)}" if groups else "--clear-groups", *env, *argv]
    with open(log, "wb") as f:
        proc = subprocess.Popen(m.argv(cmd), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    for _ in range(600):
        if m.run(["test", "-S", str(run_dir / "fr-pbd.sock")]).returncode == 0:
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the daemon did not start: {log.read_text()[-2000:]}")


def _pamtester(m: Machine, service: str, user: str, tty: str) -> bool:
    p = m.run(["pamtester", "-I", f"tty={tty}", service, user, "authenticate"], timeout=120)
    ok = p.returncode == 0
    assert ok == ("successfully authenticated" in p.stdout + p.stderr), p.stdout + p.stderr
    return ok


@pytest.mark.slow
def test_install_enrol_login_uninstall(machine, faces_dir, tmp_path):
    m = machine
    if shutil.which("pamtester") is None:
        missing("pamtester not installed (apt-get install pamtester)")
    debian = m.run(["sh", "-c", "command -v pam-auth-update"]).returncode == 0
    user = f"frpbd-s{os.getpid() % 100000}"
    m.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", user], check=True)
    before = m.hashes(KEPT)

    # --dry-run: every change printed, none made
    dry = m.run([FR_PBD, "system", "install", "--dry-run"], check=True)
    for words in (f"create the system account {DAEMON_USER}", f"create directory {SYSTEM_HOME}",
                  f"write {UNIT}", f"link /usr/local/bin/fr-pbd -> {FR_PBD}", "sha256 matches the manifest",
                  "dry run: nothing was changed"):
        assert words in dry.stdout, dry.stdout
    assert _changed(before, m.hashes(KEPT)) == []

    # install
    t0 = time.monotonic()
    out = m.run([FR_PBD, "system", "install"], check=True).stdout
    assert m.run(["cat", str(UNIT)], check=True).stdout == unit_text()  # the shipped unit, byte for byte
    daemon = pwd.struct_passwd(m.run(["getent", "passwd", DAEMON_USER], check=True).stdout.strip().split(":"))
    assert daemon.pw_dir == str(SYSTEM_HOME) and daemon.pw_shell.endswith("nologin") and int(daemon.pw_uid) != 0
    assert m.sh(f"stat -c '%a %U' {SYSTEM_HOME}").split() == ["700", DAEMON_USER]
    for name in ("dlib-resnet-v1", "yunet-2023mar", "minifasnet-v2", "minifasnet-v1se"):
        spec = models.spec(name)
        assert m.sh(f"sha256sum {MODELS_DIR / spec.file}").split()[0] == spec.sha256
    if debian:
        assert f"run pam-auth-update --package --enable fr-pbd" in out
        auth = [ln for ln in m.run(["cat", "/etc/pam.d/common-auth"], check=True).stdout.splitlines()
                if ln.startswith("auth")]
        assert PAM_LINE in auth[0] and "pam_unix.so" in auth[1], auth  # the face first, the password next
    else:  # a generic distribution: the per-service line, written by the administrator (here: the test)
        assert PAM_LINE in out
        m.sh(f"sed -i '1i auth [success=done default=ignore] {PAM_LINE}' /etc/pam.d/login /etc/pam.d/sshd")
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing("systemd-analyze is not installed (apt-get install systemd)")
    r = m.run([analyze, "verify", str(UNIT)])
    assert r.returncode == 0, r.stdout + r.stderr
    install_s = time.monotonic() - t0

    # enrol into the system home as the daemon's user
    m.sh(f"install -d -m 0755 {TEST_DIR} {TEST_DIR}/frames")
    for name in ("obama.jpg", "obama2.jpg", "obama4.jpg", "obama3.jpg"):
        m.sh(f"install -m 0644 {faces_dir / name} {TEST_DIR}/{name}")
    m.sh(f"cp {TEST_DIR}/obama3.jpg {TEST_DIR}/frames/current.jpg")  # the account's owner is at the camera
    m.run([FR_PBD, "fallback", "set", "--system", "--secret-stdin"], input=PIN + "\n", stdin=None, check=True)
    e = m.run([FR_PBD, "enroll", "--system", "--user", user, "--consent", "--secret-stdin",
               *[a for n in ("obama.jpg", "obama2.jpg", "obama4.jpg") for a in ("--image", f"{TEST_DIR}/{n}")]],
              input=PIN + "\n", stdin=None, check=True)
    assert f"bound to the Unix account {user}" in e.stdout, e.stdout
    owners = set(m.sh(f"find {SYSTEM_HOME} -printf '%u\\n'").split())
    assert owners == {DAEMON_USER}, owners
    assert f"{user}: 3 template(s)" in m.run([FR_PBD, "status", "--system"], check=True).stdout

    # the daemon as the unit starts it, and a login through the installed PAM stack
    log = tmp_path / "daemon.log"
    proc = _start_daemon(m, log)
    try:
        assert _pamtester(m, "login", user, "tty1")  # the face at the camera: yes
        answers = log.read_text().count(" -> ")
        if m.run(["test", "-f", "/etc/pam.d/sshd"]).returncode != 0:
            missing("/etc/pam.d/sshd is missing (apt-get install openssh-server)")
        assert not _pamtester(m, "sshd", user, "ssh")  # the same face, from the network: no
        assert log.read_text().count(" -> ") == answers  # and the daemon was not even asked
        refused = m.run([FR_PBD, "system", "uninstall"])
        assert refused.returncode == 2 and f"processes of {DAEMON_USER} are running" in refused.stderr, refused.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    text = log.read_text()
    assert "accepted -> Y" in text and "score" not in text
    # without the unit's LimitMEMLOCK=infinity, and under its RestrictRealtime=yes, the daemon says so once
    assert text.count("memory not locked") == 1 and text.count("answers at normal priority") == 1, text

    # uninstall: the store shredded, every file back as it was
    t0 = time.monotonic()
    gone = m.run([FR_PBD, "system", "uninstall"], check=True).stdout
    uninstall_s = time.monotonic() - t0
    assert f"erase the store in {SYSTEM_HOME}" in gone and f"remove the account {DAEMON_USER}" in gone, gone
    after = m.hashes(KEPT)
    assert _changed(before, after) == [], (gone, set(after["/var/lib entries"]) ^ set(before["/var/lib entries"]))
    for p in (UNIT, PAM_PROFILE, SYSTEM_HOME, RECORD, MODELS_DIR.parent, Path("/usr/local/bin/fr-pbd")):
        assert m.run(["test", "-e", str(p)]).returncode != 0, p
    assert m.run(["getent", "passwd", DAEMON_USER]).returncode != 0
    if debian:
        assert "fr-pbd" not in m.run(["cat", "/etc/pam.d/common-auth"], check=True).stdout
    print(f"\ninstall {install_s:.1f} s, uninstall {uninstall_s:.1f} s")


@pytest.mark.slow
def test_generic_distribution_gets_the_line_and_no_pam_file_is_written(machine):
    """Without pam-auth-update the installer writes no PAM file: it prints the per-service line."""
    m = machine
    m.sh("for t in /usr/sbin/pam-auth-update /sbin/pam-auth-update; do [ -e $t ] && rm -f $t; done; true")
    before = m.hashes(KEPT)
    staged = m.run([FR_PBD, "system", "install", "--dry-run", "--root", "/run/fr-pbd-image"], check=True).stdout
    for path in ("/var/lib/fr-pbd", "/var/lib/fr-pbd-install", "/usr/local/share/fr-pbd/models", "/usr/local/bin"):
        assert f"create directory /run/fr-pbd-image{path} " in staged, staged  # every path under --root
    assert "write /run/fr-pbd-image/etc/systemd/system/fr-pbd.service" in staged
    pam = ["/etc/pam.d", "/usr/share/pam-configs", "/var/lib/pam"]
    pam_before = m.hashes(pam)
    out = m.run([FR_PBD, "system", "install"], check=True).stdout
    assert f"auth  [success=done default=ignore]  {PAM_LINE}" in out, out
    assert _changed(pam_before, m.hashes(pam)) == ["/var/lib entries"]  # the home and the record only
    assert m.run(["test", "-e", str(PAM_PROFILE)]).returncode != 0
    again = m.run([FR_PBD, "system", "install"])
    assert again.returncode == 2 and "already installed" in again.stderr
    installed = m.hashes(KEPT)
    m.run([FR_PBD, "system", "uninstall", "--dry-run"], check=True)
    assert _changed(installed, m.hashes(KEPT)) == []  # the dry run changed nothing
    m.run([FR_PBD, "system", "uninstall"], check=True)
    assert _changed(before, m.hashes(KEPT)) == []


def test_not_root_is_one_line(monkeypatch, capsys):
    from fr_pbd import system
    from fr_pbd.cli import main

    monkeypatch.setattr(system.os, "geteuid", lambda: 1000)
    assert main(["system", "install", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run it as root" in err, err


def test_a_program_the_daemon_cannot_reach_or_others_can_change_is_refused(tmp_path):
    """PAM runs fr-pbd as root and the daemon as its user: only root may change it, everyone must reach it."""
    from fr_pbd.system import InstallError, _check_program

    if os.geteuid() != 0:
        missing("the program checks are about root-owned files")
    private = tmp_path / "private"
    (private / "bin").mkdir(parents=True)
    script = private / "bin" / "fr-pbd"
    script.write_text("#!/bin/sh\n")
    os.chown(script, 65534, 65534)
    with pytest.raises(InstallError, match="must belong to root"):
        _check_program(script)
    os.chown(script, 0, 0)
    private.chmod(0o700)
    with pytest.raises(InstallError, match="keeps the daemon's user from reaching"):
        _check_program(script)
