"""The product is every process that serves its socket, not the one that answered first.

``decoy.py``: a quiet decoy answers the first contact; a detached process (double fork and
``setsid``: not its descendant) that inherited the same listening socket serves the rest.
The audit once traced and inventoried only the first contact's ``SO_PEERCRED`` tree, so a
detached server that sent a score line per request to a TCP peer got C3.network PASS (the
decoy's tree: "no child process", no socket but Unix ones). Now every holder of the listening
socket is traced and inventoried with its children (one that keeps strace out is INCONCLUSIVE,
and a FAIL still when its sockets show the leak). The controls: the leak reaches the test's
TCP listener (the attack works), the first contact's tree alone shows no TCP socket (what the
audit used to look at), and the same leak from a child of the decoy was always caught.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fr_pbd.audit import FAIL, INCONCLUSIVE, PASS, procfs
from tests.adversarial.test_corpus import Collector, audit_target
from tests.test_audit import need_strace

HERE = Path(__file__).resolve().parent


@pytest.fixture()
def decoy(tmp_path, data_dir):
    """audit(mode, serve) -> (C3.network as the report has it, the whole report, bytes the TCP peer received)."""
    need_strace()
    collector = Collector(tmp_path / "collector.sock")

    def audit(mode: str, serve: str = "detached") -> tuple[dict, dict, int]:
        root = tmp_path / f"{mode}-{serve}"
        (root / "frames").mkdir(parents=True)
        shutil.copyfile(data_dir / "faces" / "obama3.jpg", root / "frames" / "current.jpg")
        before = collector.received
        p, doc = audit_target("decoy.toml", root, root / "out", data_dir, FR_PBD_DECOY_MODE=mode,
                              FR_PBD_DECOY_PORT=str(collector.port), FR_PBD_DECOY_SERVE=serve)
        assert doc, p.stdout + p.stderr
        _gone(root / "run" / "decoy.sock")
        return {c["id"]: c for c in doc["checks"]}["C3.network"], doc, collector.received - before

    yield audit
    collector.close()


def _gone(sock: Path) -> None:
    """The serving process leaves when the decoy (stopped by the audit) is gone: nobody holds the socket."""
    end = time.monotonic() + 10
    while procfs.listeners(sock) and time.monotonic() < end:
        time.sleep(0.1)
    assert not procfs.listeners(sock), f"a process of decoy.py still holds {sock}"


def _text(c: dict) -> str:
    return c["evidence"]["summary"] + " | " + " | ".join(c["evidence"]["details"])


def _serving(c: dict) -> tuple[int, int]:
    """(the first contact's peer, the other holder of the listening socket), as the evidence names them."""
    first = re.search(r"serves the socket [^|]*: pid (\d+) \([^)]*\), the first contact's peer", _text(c))
    other = re.search(r"serves the socket [^|]*: pid (\d+) \([^)]*\), holds the listening socket", _text(c))
    assert first and other, _text(c)
    return int(first.group(1)), int(other.group(1))


def test_a_detached_server_that_leaks_fails_on_its_tcp_socket(decoy):
    c, doc, leaked = decoy("leak")
    assert leaked > 0  # the control: the score lines reached the TCP peer (the attack works)
    assert c["status"] == FAIL, _text(c)
    first, server = _serving(c)
    assert first != server
    tcp = rf"pid {server} \(\w+\) fd \d+: AF_INET/TCP socket, 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+ ESTABLISHED"
    assert re.search(tcp, c["evidence"]["summary"]), _text(c)  # the kernel inventory (before, during or polled)
    assert f"accepted and answered): pid {server} " in _text(c)  # and the trace saw it serve
    assert "0.3500" not in json.dumps(doc)  # the leaked score is not repeated


def test_a_detached_server_that_keeps_to_itself_is_traced_and_passes(decoy):
    c, _doc, leaked = decoy("handoff")
    assert leaked == 0
    assert c["status"] == PASS, _text(c)
    first, server = _serving(c)
    assert first != server and f"-p {first} -p {server}:" in _text(c)
    assert re.search(rf"accepted and answered\): pid {server} \(\w+\) [1-9]", _text(c)), _text(c)
    assert f"(pid {first}, {server})" in c["evidence"]["summary"]


def test_a_detached_server_that_keeps_strace_out_is_never_a_pass_and_its_socket_still_fails(decoy):
    """strace refused by one serving process: INCONCLUSIVE; the kernel inventory's TCP socket in it still FAILs."""
    c, _doc, leaked = decoy("leak", "detached-guarded")
    first, server = _serving(c)
    assert leaked > 0 and c["status"] == FAIL, _text(c)
    assert re.search(rf"pid {server} \(\w+\) fd \d+: AF_INET/TCP socket", c["evidence"]["summary"]), _text(c)
    assert f"strace could not attach to pid {server}: Operation not permitted" in _text(c)
    c, _doc, leaked = decoy("handoff", "detached-guarded")
    first, server = _serving(c)
    assert leaked == 0 and c["status"] == INCONCLUSIVE, _text(c)
    assert f"strace could not attach to pid {server}: Operation not permitted" in _text(c)


def test_control_the_same_leak_from_a_child_of_the_decoy_was_always_caught(decoy):
    c, _doc, leaked = decoy("leak", "in-tree")
    assert leaked > 0 and c["status"] == FAIL and "AF_INET/TCP socket" in c["evidence"]["summary"], _text(c)


def test_control_the_first_contacts_tree_alone_does_not_show_the_leak(tmp_path, data_dir):
    """What the audit used to inventory (the SO_PEERCRED peer's tree) holds no TCP socket; every holder does."""
    collector = Collector(tmp_path / "collector.sock")
    sock = tmp_path / "run" / "decoy.sock"
    p = subprocess.Popen([sys.executable, str(HERE / "decoy.py"), "--socket", str(sock), "--frames",
                          str(tmp_path / "frames"), "--enroll", str(data_dir / "faces" / "obama3.jpg"), "--data",
                          str(tmp_path / "data"), "--mode", "leak", "--port", str(collector.port), "--lifetime", "60"])
    try:
        end = time.monotonic() + 20
        while not procfs.listeners(sock) and time.monotonic() < end:
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as s:  # the first contact
            s.connect(str(sock))
            first = procfs.peer_cred(s)[0]
            s.sendall(b"\x00\n")
            s.recv(16)
        holders = [pid for pid, _fd, _ino in procfs.listeners(sock)]
        assert first == p.pid and len(holders) == 2 and first in holders
        end = time.monotonic() + 10
        while time.monotonic() < end and not procfs.snapshot(first, also=holders).non_unix:
            time.sleep(0.05)
        assert procfs.snapshot(first).non_unix == []  # the old inventory: clean
        leaks = procfs.snapshot(first, also=holders).non_unix
        assert [s.family for s in leaks] == ["AF_INET/TCP"] and leaks[0].pid != first
        assert first not in procfs.process_tree(leaks[0].pid) and leaks[0].pid not in procfs.process_tree(first)
    finally:
        p.kill()
        p.wait(timeout=10)
        _gone(sock)
        collector.close()
