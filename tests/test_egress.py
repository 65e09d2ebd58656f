"""Egress guard: a verifying process cannot open a network socket (condition 3).

The guard cannot be removed once installed, so every test that installs it runs
in a child process; the pytest process itself never installs it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import missing

PIN = "correct horse battery"


def run_child(code: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=timeout)


def test_guard_refuses_inet_and_dns_allows_unix_and_survives_tampering(tmp_path):
    p = run_child(f"""
        import json, socket
        from fr_pbd import egress
        from fr_pbd.errors import EgressError
        out = {{}}
        egress.install(); egress.install()           # idempotent
        def refused(fn):
            try:
                fn()
            except EgressError as exc:
                assert "\\n" not in str(exc)
                return True
            return False
        out["inet"] = refused(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        out["inet6"] = refused(lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
        out["fileno"] = refused(lambda: socket.socket(fileno=0))
        out["dns"] = refused(lambda: socket.getaddrinfo("example.com", 443))
        out["gethostbyname"] = refused(lambda: socket.gethostbyname("example.com"))
        out["create_connection"] = refused(lambda: socket.create_connection(("127.0.0.1", 9), timeout=1))
        import urllib.request
        out["urllib"] = refused(lambda: urllib.request.urlopen("http://93.184.216.34/", timeout=1))
        # AF_UNIX keeps working: socketpair, bind, connect, send
        a, b = socket.socketpair(); a.sendall(b"x"); assert b.recv(1) == b"x"; a.close(); b.close()
        srv = socket.socket(socket.AF_UNIX); srv.bind({str(tmp_path / "s.sock")!r}); srv.listen(1)
        cli = socket.socket(socket.AF_UNIX); cli.connect({str(tmp_path / "s.sock")!r}); cli.close(); srv.close()
        # tampering with module globals does not switch it off
        egress._installed = False; egress._record_fn = None; egress.EgressError = RuntimeError
        import fr_pbd.errors; fr_pbd.errors.EgressError = RuntimeError
        socket.AF_UNIX = socket.AF_INET
        out["after_tamper"] = refused(lambda: socket.socket(2, 1))
        out["hostname_ok"] = bool(socket.gethostname())
        print(json.dumps(out))
    """)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert all(out.values()), out


def test_guard_records_counts_and_families_only():
    p = run_child("""
        import json, socket
        from fr_pbd import egress
        egress.install()
        for _ in range(2):
            try:
                socket.socket(socket.AF_INET)
            except Exception:
                pass
        a, b = socket.socketpair(); a.close(); b.close()
        print(json.dumps(egress.record()))
    """)
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout)
    assert rec["installed"] and rec["refused_total"] == 2
    assert rec["refused"] == {"socket.__new__": {"AF_INET": 2}}
    assert rec["seen"]["socket.__new__"]["AF_UNIX"] == 2
    assert "127.0.0.1" not in p.stdout


def test_without_install_nothing_is_recorded():
    p = run_child("import json; from fr_pbd import egress; print(json.dumps(egress.record()))")
    assert json.loads(p.stdout) == {"installed": False, "seen": {}, "refused": {}, "refused_total": 0}


@pytest.fixture(scope="module")
def enrolled_home(tmp_path_factory, models_env, faces_dir):
    from fr_pbd.pipeline import build_pipeline
    from fr_pbd.verify import Consent, Verifier

    try:
        ext = build_pipeline(liveness=False).extractor
    except Exception as exc:  # noqa: BLE001
        missing(f"{exc} (build it: fr-pbd models build dlib-resnet)")
    home = tmp_path_factory.mktemp("egress") / "home"
    v = Verifier(home, ext)
    v.set_fallback(PIN)
    v.enroll("obama", [faces_dir / "obama.jpg"], Consent("1", "test-device"), fallback=PIN)
    return home


def test_a_verifying_process_cannot_open_a_tcp_socket(enrolled_home, faces_dir):
    p = run_child(f"""
        import json, socket
        from fr_pbd import egress
        from fr_pbd.errors import EgressError
        from fr_pbd.verify import Verifier
        egress.install()
        v = Verifier({str(enrolled_home)!r})
        out = {{"before": v.verify({str(faces_dir / "obama3.jpg")!r}).accepted}}
        try:
            socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("127.0.0.1", 9))
            out["tcp"] = "opened"
        except EgressError as exc:
            out["tcp"] = type(exc).__name__
        a, b = socket.socketpair(); out["unix"] = True; a.close(); b.close()
        out["after"] = v.verify({str(faces_dir / "biden2.jpg")!r}).accepted
        out["record"] = egress.record()
        print(json.dumps(out))
    """)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["before"] is True and out["after"] is False
    assert out["tcp"] == "EgressError" and out["unix"] is True
    assert out["record"]["refused"] == {"socket.__new__": {"AF_INET": 1}}


def _leaf_parsers(parser, path=()):
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _leaf_parsers(sub, path + (name,))


def test_models_fetch_is_the_only_command_marked_for_the_network():
    from fr_pbd import cli

    marked = {" ".join(path) for path, p in _leaf_parsers(cli.build_parser()) if p.get_default("network")}
    assert marked == {"models fetch"}


def test_cli_main_installs_the_guard_for_every_other_command(tmp_path):
    # As a real process runs it: arguments from sys.argv (main() with argv=None).
    p = run_child("""
        import socket, sys
        from fr_pbd import cli, egress
        sys.argv = ["fr-pbd", "models", "list"]
        rc = cli.main()
        print("INSTALLED", egress.installed())
        try:
            socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            print("TCP OPENED")
        except Exception as exc:
            print("TCP REFUSED", type(exc).__name__)
    """)
    assert "INSTALLED True" in p.stdout, p.stderr
    assert "TCP REFUSED EgressError" in p.stdout, p.stdout


# --------------------------------------------------------------------------------------
# the kernel filter (seccomp): the bypasses of the audit hook, each against a real listener

class Listener:
    """A TCP and a UDP listener on 127.0.0.1 (only) in the pytest process: what reached them."""

    def __init__(self) -> None:
        import socket
        import threading

        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(8)
        self.tcp.settimeout(0.2)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(0.2)
        self.tcp_port, self.udp_port = self.tcp.getsockname()[1], self.udp.getsockname()[1]
        self.connections = 0
        self.received = b""
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve_tcp, daemon=True),
                         threading.Thread(target=self._serve_udp, daemon=True)]
        for t in self._threads:
            t.start()

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                continue
            self.connections += 1
            conn.settimeout(2)
            try:
                while chunk := conn.recv(4096):
                    self.received += chunk
            except OSError:
                pass
            conn.close()

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                self.received += self.udp.recv(4096)
            except OSError:
                continue

    def reached(self) -> bool:
        return self.connections > 0 or bool(self.received)

    def close(self) -> None:
        import time

        time.sleep(0.3)  # a late datagram or connection still counts
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self.tcp.close()
        self.udp.close()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


GUARDS = {
    "none": "",  # the control: proves each bypass does reach the listener when nothing stops it
    "kernel": "egress.install_kernel_filter()",  # the kernel filter alone, below the audit hook
    "full": "egress.install()",  # what fr-pbd processes run: audit hook + kernel filter
}

# Each snippet tries to send b"leak" to the listener; it sets OUT["outcome"] to what happened to it.
BYPASSES = {
    "python-socket": """
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.settimeout(3)
        s.connect(("127.0.0.1", TCP_PORT)); s.sendall(b"leak"); s.close()
    """,
    "ctypes-libc": """
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "socket")
        addr = struct.pack("=HH4s8x", socket.AF_INET, socket.htons(TCP_PORT), socket.inet_aton("127.0.0.1"))
        if libc.connect(fd, addr, len(addr)) != 0:
            raise OSError(ctypes.get_errno(), "connect")
        libc.write(fd, b"leak", 4); libc.close(fd)
    """,
    "os-system-bash": """
        rc = os.system(f"bash -c 'echo leak > /dev/tcp/127.0.0.1/{TCP_PORT}' 2>/dev/null")
        if rc:
            raise OSError(0, f"bash exited {rc}")
    """,
    "subprocess-bash": """
        p = subprocess.run(["bash", "-c", f"echo leak > /dev/tcp/127.0.0.1/{TCP_PORT}"], capture_output=True,
                           timeout=20)
        if p.returncode:
            raise OSError(0, p.stderr.decode().strip().splitlines()[-1])
    """,
    "multiprocessing-spawn": """
        ctx = multiprocessing.get_context("spawn")
        child = ctx.Process(target=leak_tcp, args=(TCP_PORT,))
        child.start(); child.join(30)
        if child.exitcode:
            raise OSError(0, f"spawned child exited {child.exitcode}")
    """,
    "fileno-wrapping": """
        # an inet descriptor connected by the C library, wrapped in a socket object that says AF_UNIX
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "socket")
        addr = struct.pack("=HH4s8x", socket.AF_INET, socket.htons(TCP_PORT), socket.inet_aton("127.0.0.1"))
        if libc.connect(fd, addr, len(addr)) != 0:
            raise OSError(ctypes.get_errno(), "connect")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fileno=fd)
        s.sendall(b"leak"); s.close()
    """,
    "udp-sendto": """
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"leak", ("127.0.0.1", UDP_PORT)); s.close()
    """,
}

CHILD = """
import ctypes, errno, json, multiprocessing, os, socket, struct, subprocess, sys
from fr_pbd import egress

TCP_PORT, UDP_PORT = {tcp_port}, {udp_port}


def leak_tcp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.settimeout(3)
    s.connect(("127.0.0.1", port)); s.sendall(b"leak"); s.close()


if __name__ == "__main__":
    {guard}
    OUT = {{"enforcement": egress.enforcement()}}
    try:
{body}
        OUT["outcome"] = "sent"
    except Exception as exc:
        code = getattr(exc, "errno", None)
        OUT["outcome"] = "refused: " + type(exc).__name__ + (" " + errno.errorcode[code] if code else "")
        OUT["message"] = str(exc)
    print(json.dumps(OUT))
"""


def run_bypass(tmp_path: Path, name: str, guard: str, lst: Listener) -> dict:
    body = textwrap.indent(textwrap.dedent(BYPASSES[name]).strip(), " " * 8)
    script = tmp_path / f"bypass_{name.replace('-', '_')}.py"
    script.write_text(CHILD.format(tcp_port=lst.tcp_port, udp_port=lst.udp_port, guard=GUARDS[guard], body=body))
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def kernel_filter_available():
    p = run_child("from fr_pbd import egress; egress.install_kernel_filter(); print(egress.enforcement())")
    if not p.stdout.startswith("kernel"):
        missing(f"no kernel filter here: {p.stdout.strip() or p.stderr.strip()}")


@pytest.mark.parametrize("guard", ["none", "kernel", "full"])
@pytest.mark.parametrize("name", list(BYPASSES))
def test_bypass_of_the_audit_hook_fails_under_the_kernel_filter(name, guard, tmp_path, listener,
                                                                kernel_filter_available):
    out = run_bypass(tmp_path, name, guard, listener)
    listener.close()
    if guard == "none":
        assert out["outcome"] == "sent" and listener.reached(), (out, "the control must reach the listener")
        assert b"leak" in listener.received
        return
    assert out["enforcement"].startswith("kernel (seccomp"), out
    assert out["outcome"].startswith("refused"), out
    assert not listener.reached(), (out, listener.connections, listener.received)
    if guard == "kernel" and name in ("python-socket", "ctypes-libc", "fileno-wrapping", "udp-sendto"):
        # in this process the kernel itself answers: socket() fails with EACCES
        assert out["outcome"].endswith("EACCES"), out
    if guard == "full" and name in ("python-socket", "udp-sendto"):
        assert out["outcome"] == "refused: EgressError", out  # the hook speaks first, with its message


def test_kernel_filter_keeps_unix_sockets_and_refuses_io_uring_and_inet_socketpair(tmp_path, kernel_filter_available):
    sibling = subprocess.Popen(["sleep", "60"])  # outside the child's Landlock domain
    try:
        p = run_child(f"""
            import ctypes, errno, json, multiprocessing, os, socket, threading
            from fr_pbd import egress
            libc = ctypes.CDLL(None, use_errno=True)
            res = {{}}
            started, go = threading.Event(), threading.Event()
            def call(fn):
                rc = fn()
                return [rc, errno.errorcode.get(ctypes.get_errno()) if rc < 0 else None]
            def open_mem():
                try:
                    os.close(os.open("/proc/{sibling.pid}/mem", os.O_RDONLY))
                    return "opened"
                except OSError as exc:
                    return errno.errorcode[exc.errno]
            def worker():  # a thread that exists before the filter: TSYNC gives it the filter too
                started.set(); go.wait()
                res["thread"] = call(lambda: libc.socket(socket.AF_INET6, socket.SOCK_DGRAM, 0))
                res["thread_ptrace"] = call(lambda: libc.ptrace(16, {sibling.pid}, None, None))  # PTRACE_ATTACH
                res["thread_mem"] = open_mem()  # but Landlock binds only the thread that installs it
            t = threading.Thread(target=worker); t.start(); started.wait()
            egress.install()
            go.set(); t.join()
            out = {{"enforcement": egress.enforcement(), **res}}
            out["mem"] = open_mem()
            a, b = socket.socketpair(); a.sendall(b"x"); out["socketpair"] = b.recv(1).decode(); a.close(); b.close()
            srv = socket.socket(socket.AF_UNIX); srv.bind({str(tmp_path / "s.sock")!r}); srv.listen(1)
            cli = socket.socket(socket.AF_UNIX); cli.connect({str(tmp_path / "s.sock")!r}); cli.sendall(b"y")
            conn, _ = srv.accept(); out["unix"] = conn.recv(1).decode(); conn.close(); cli.close(); srv.close()
            r, w = multiprocessing.Pipe(); w.send("z"); out["pipe"] = r.recv()
            pair = (ctypes.c_int * 2)()
            out["inet_socketpair"] = call(lambda: libc.socketpair(socket.AF_INET, socket.SOCK_STREAM, 0, pair))
            ring = ctypes.create_string_buffer(120)
            out["io_uring_setup"] = call(lambda: libc.syscall(425, 4, ring))
            out["status"] = [l.split()[1] for l in open("/proc/self/status")
                             if l.startswith(("NoNewPrivs", "Seccomp:"))]
            print(json.dumps(out))
        """)
    finally:
        sibling.kill()
        sibling.wait(timeout=10)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["enforcement"].startswith("kernel (seccomp: socket() of any family but AF_UNIX refused, io_uring "
                                         "refused, ptrace, process_vm_readv/writev, pidfd_open/getfd, kcmp and "
                                         "perf_event_open refused; landlock: this thread and what it starts"), out
    assert "1 threads started before the guard are not bound" in out["enforcement"], out
    assert out["thread"] == [-1, "EACCES"] and out["thread_ptrace"] == [-1, "EACCES"]
    assert (out["mem"], out["thread_mem"]) == ("EACCES", "opened")  # the limit enforcement() names
    assert (out["socketpair"], out["unix"], out["pipe"]) == ("x", "y", "z")
    assert out["inet_socketpair"] == [-1, "EACCES"]
    assert out["io_uring_setup"] == [-1, "EACCES"]  # 425 on x86_64 and aarch64 alike
    assert out["status"] == ["1", "2"]


def test_enforcement_names_every_layer_when_installed_before_any_thread(kernel_filter_available):
    p = run_child("""
        from fr_pbd import egress
        egress.install()
        print(egress.enforcement())
    """)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == (
        "kernel (seccomp: socket() of any family but AF_UNIX refused, io_uring refused, ptrace, "
        "process_vm_readv/writev, pidfd_open/getfd, kcmp and perf_event_open refused; landlock: no ptrace-mode "
        "access to processes outside it, /proc/PID/mem included) + audit hook"), p.stdout


def _run_bpf(prog: list[tuple[int, int, int, int]], arch: int, nr: int, arg0: int = 0) -> int:
    """A classic-BPF interpreter for the four instructions the filter uses, over a struct seccomp_data."""
    import struct

    data = struct.pack("<iIQ6Q", nr, arch, 0, arg0 & 0xFFFFFFFFFFFFFFFF, 0, 0, 0, 0, 0)
    pc, acc = 0, 0
    for _ in range(len(prog) + 1):
        code, jt, jf, k = prog[pc]
        if code == 0x20:  # LD|W|ABS
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code in (0x15, 0x35):  # JEQ, JGE
            hit = acc == k if code == 0x15 else acc >= k
            pc += 1 + (jt if hit else jf)
        elif code == 0x06:  # RET
            return k
        else:
            raise AssertionError(f"unexpected BPF opcode {code:#x}")
    raise AssertionError("the program did not return")


# (name, x86_64 number, aarch64 number): from asm/unistd_64.h and asm-generic/unistd.h
REFUSED_CALLS = [("ptrace", 101, 117), ("process_vm_readv", 310, 270), ("process_vm_writev", 311, 271),
                 ("kcmp", 312, 272), ("perf_event_open", 298, 241), ("pidfd_open", 434, 434),
                 ("pidfd_getfd", 438, 438), ("io_uring_setup", 425, 425)]
ALLOWED_CALLS = [("read", 0, 63), ("write", 1, 64), ("openat", 257, 56), ("mmap", 9, 222), ("clone", 56, 220),
                 ("clone3", 435, 435), ("wait4", 61, 260), ("kill", 62, 129), ("futex", 202, 98),
                 ("pidfd_send_signal", 424, 424), ("process_madvise", 440, 440), ("execve", 59, 221),
                 ("landlock_restrict_self", 446, 446), ("prctl", 157, 167)]


def test_kernel_filter_program_per_architecture():
    from fr_pbd import egress

    allow, eacces = 0x7FFF0000, 0x00050000 | 13
    for arch, audit_arch, sock, pair, column in (("x86_64", 0xC000003E, 41, 53, 1),
                                                 ("aarch64", 0xC00000B7, 198, 199, 2)):
        prog = egress.filter_program(arch)
        ks = [k for _c, _t, _f, k in prog]
        assert ks[0] == 4 and ks[1] == audit_arch  # load seccomp_data.arch, compare
        assert (0x40000000 in ks) == (arch == "x86_64")  # x32 system calls refused on x86_64
        assert len(prog) < 32
        run = lambda nr, arg0=0, a=audit_arch: _run_bpf(prog, a, nr, arg0)  # noqa: E731
        for row in REFUSED_CALLS:
            assert run(row[column]) == eacces, (arch, row[0])
        for row in ALLOWED_CALLS:
            assert run(row[column]) == allow, (arch, row[0])
        # aarch64's ptrace is 117, not x86_64's 101 (there: nanosleep on aarch64, allowed)
        assert run(101) == (eacces if arch == "x86_64" else allow)
        assert run(117) == (eacces if arch == "aarch64" else allow)  # x86_64 117 is setresuid
        for nr in (sock, pair):
            assert run(nr, 1) == allow  # AF_UNIX
            assert run(nr, 1 | (7 << 32)) == allow  # the kernel reads an int: high bits do not matter
            for family in (2, 10, 16, 17, 0):  # AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_UNSPEC
                assert run(nr, family) == eacces, (arch, nr, family)
        assert run(0, a=0x40000003) == eacces  # i386 (int 0x80)
        assert run(ALLOWED_CALLS[0][column], a=0xC0000028) == eacces  # another ABI: arm
        if arch == "x86_64":
            assert run(0x40000000 | 101) == eacces  # x32 ptrace


def test_unknown_architecture_claims_no_kernel_enforcement():
    p = run_child("""
        import platform, socket
        from fr_pbd import egress
        platform.machine = lambda: "riscv64"
        egress.install()
        print(egress.enforcement())
        print(open("/proc/self/status").read().count("Seccomp:\\t2"))
    """)
    assert p.returncode == 0, p.stderr
    line, seccomp = p.stdout.splitlines()
    assert line.startswith("audit hook only: no kernel filter for this architecture (riscv64"), line
    assert seccomp == "0"


def test_models_fetch_runs_without_the_kernel_filter_and_audit_with_the_hook_only():
    # No network here: the fetch command is replaced by a report of this process's guard.
    p = run_child("""
        import sys
        import fr_pbd.cli.models as m
        import fr_pbd.cli.audit as a
        from fr_pbd import cli, egress
        def report(args):
            seccomp = [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")]
            print(" ".join(sys.argv[1:3]), "|", egress.enforcement(), "| seccomp", seccomp)
            return 0
        m.cmd_models_fetch = report
        a.cmd_audit = report
        sys.argv = ["fr-pbd", "models", "fetch", "yunet-2023mar"]
        cli.main()
        sys.argv = ["fr-pbd", "audit", "--out", "/nonexistent"]
        cli.main()
    """)
    assert p.returncode == 0, p.stderr
    fetch, audit = p.stdout.splitlines()
    assert fetch == "models fetch | none: the egress guard is not installed in this process | seccomp ['0']", fetch
    # the audit's children are the products under test: they must not inherit a filter
    assert audit == "audit --out | audit hook only: the kernel filter was not requested | seccomp ['0']", audit


def test_every_other_command_gets_the_kernel_filter(kernel_filter_available):
    p = run_child("""
        import sys
        from fr_pbd import cli, egress
        sys.argv = ["fr-pbd", "models", "list"]
        cli.main()
        print("ENFORCEMENT", egress.enforcement())
    """)
    assert "ENFORCEMENT kernel (seccomp" in p.stdout, (p.stdout, p.stderr)


def test_a_filtered_process_is_still_traced_by_strace(tmp_path, kernel_filter_available):
    # The audit's way of watching the daemon: strace outside the guard, the guarded process its tracee.
    # seccomp filters the calls a process makes, and Landlock the accesses it makes, not what is done
    # to it: both ways of tracing (strace as the parent, strace -p attaching later) keep working.
    import shutil

    strace = shutil.which("strace")
    if strace is None:
        missing("strace is not installed")
    body = """
        import ctypes, socket, sys
        from fr_pbd import egress
        egress.install()
        print("ready", flush=True)
        sys.stdin.readline()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
        libc.ptrace(16, 1, None, None)
    """
    code = textwrap.dedent(body)
    # strace as the parent
    log = tmp_path / "parent.log"
    p = subprocess.run([strace, "-f", "-qq", "-e", "trace=socket,ptrace", "-o", str(log), sys.executable, "-c", code],
                       input="go\n", capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "ready" in p.stdout, p.stderr
    text = log.read_text()
    assert re.search(r"socket\(AF_INET, SOCK_STREAM, [^)]*\) += -1 EACCES", text), text
    assert re.search(r"ptrace\(PTRACE_ATTACH, 1\) += -1 EACCES", text), text
    # strace -p: attaches to the process after it installed the guard
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    tracer = None
    try:
        assert child.stdout.readline().strip() == "ready"
        log = tmp_path / "attach.log"
        tracer = subprocess.Popen([strace, "-qq", "-e", "trace=socket,ptrace", "-o", str(log), "-p", str(child.pid)],
                                  stderr=subprocess.PIPE, text=True)
        import time

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # attached: the tracee's TracerPid is strace
            status = open(f"/proc/{child.pid}/status").read()
            if f"TracerPid:\t{tracer.pid}\n" in status:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("strace -p did not attach")
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == 0
        tracer.wait(timeout=30)
        text = log.read_text()
        assert re.search(r"socket\(AF_INET, SOCK_STREAM, [^)]*\) += -1 EACCES", text), (text, tracer.stderr.read())
    finally:
        for proc in (child, tracer):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def test_each_command_installs_the_guard_before_its_parser_starts_threads(kernel_filter_available):
    # Every leaf command of the real parser, each in its own forked process, as the console script
    # runs it (cli.main() with sys.argv); the command itself is not run (run_command replaced).
    from fr_pbd import cli

    commands = [list(path) for path, _p in _leaf_parsers(cli.build_parser())]
    p = run_child(f"""
        import json, os, sys
        from fr_pbd import cli, egress
        for words in {commands!r}:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                cli.run_command = lambda args: 0
                sys.argv = ["fr-pbd", *words]
                sys.stderr = open(os.devnull, "w")  # usage errors of commands given no arguments
                try:
                    cli.main()
                except SystemExit:
                    pass
                seccomp = [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")][0]
                os.write(w, json.dumps([" ".join(words), seccomp, egress.enforcement()]).encode())
                os._exit(0)
            os.close(w)
            with os.fdopen(r, "rb") as f:
                print(f.read().decode())
            os.waitpid(pid, 0)
    """)
    assert p.returncode == 0, p.stderr
    seen = {name: (seccomp, line) for name, seccomp, line in map(json.loads, p.stdout.splitlines())}
    assert set(seen) == {" ".join(c) for c in commands} and {"enroll", "verify", "detect", "ask", "serve"} <= set(seen)
    for path, parser in _leaf_parsers(cli.build_parser()):
        name = " ".join(path)
        seccomp, line = seen[name]
        # the parser's own defaults decide; the table cli.main reads before parsing must agree
        if parser.get_default("network"):
            expected = "none"
            assert (seccomp, line) == ("0", "none: the egress guard is not installed in this process"), name
        elif parser.get_default("kernel_filter") is False:
            expected = "hook"
            assert (seccomp, line) == ("0", "audit hook only: the kernel filter was not requested"), name
        else:
            expected = "kernel"
            assert seccomp == "2" and line.startswith("kernel (seccomp"), (name, line)
            assert "landlock: no ptrace-mode access to processes outside it" in line, (name, line)
        assert cli.guard_for(path) == expected, name
    assert {n for n, (sc, _l) in seen.items() if sc == "0"} == {"models fetch", "audit", "system install",
                                                                 "system uninstall"}


def test_a_real_command_is_guarded_before_any_thread_starts(kernel_filter_available):
    # Building the parser imports numpy and OpenCV, which start threads at import; the console
    # script installs the guard first, so the Landlock domain binds every thread of the process.
    script = Path(sys.executable).with_name("fr-pbd")
    if not script.is_file():
        missing(f"no fr-pbd console script beside {sys.executable} (pip install -e .)")
    p = subprocess.run([str(script), "doctor"], capture_output=True, text=True, timeout=120)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("egress guard:")), p.stdout + p.stderr)
    assert "landlock: no ptrace-mode access to processes outside it, /proc/PID/mem included) + audit hook" in line, line
