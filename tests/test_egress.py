"""Egress guard: a verifying process cannot open a network socket (condition 3).

The guard cannot be removed once installed, so every test that installs it runs
in a child process; the pytest process itself never installs it.
"""

from __future__ import annotations

import json
import os
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
