"""A daemon's children are judged by what they do (issue 24 item 2).

Real face logins start a helper at each attempt (a GUI to show it), often one that is not
installed. Before, any child process was a C3.network FAIL by construction, even one whose
``execve`` failed (nothing ran). Now a child that ran nothing, or ran only programs the target
declares (``[process] children``), is traced with the daemon and judged by what it does; the
controls: an undeclared program still FAILs, and a declared one that talks to the network FAILs.
"""

from __future__ import annotations

from fr_pbd.audit import FAIL, PASS
from tests.adversarial.test_corpus import Collector
from tests.adversarial.test_invoke import network_helper
from tests.adversarial.test_shapes import audit, explain, need_strace, write_target


def _with_children(target, children: list[str]):
    target.write_text(target.read_text() + f"children = {children!r}\n".replace("'", '"'))
    return target


def test_a_helper_that_is_not_installed_started_nothing(tmp_path, faces_dir, spoof_dir):
    need_strace()
    t = write_target(tmp_path, faces_dir, spoof_dir, ["--helper", "/usr/lib/face-login/gui-helper"])
    c = audit(t)["C3.network"]
    assert c.status == PASS, explain(c)
    assert "tried to run a program and failed (nothing ran" in " ".join(c.details), explain(c)


def test_an_undeclared_program_still_fails(tmp_path, faces_dir, spoof_dir):
    need_strace()
    c = audit(write_target(tmp_path, faces_dir, spoof_dir, ["--helper", "/bin/true"]))["C3.network"]
    assert c.status == FAIL and "started a" in c.summary, explain(c)


def test_a_declared_helper_is_traced_with_the_daemon(tmp_path, faces_dir, spoof_dir):
    need_strace()
    t = _with_children(write_target(tmp_path, faces_dir, spoof_dir, ["--helper", "/bin/true"]), ["/bin/true"])
    c = audit(t)["C3.network"]
    assert c.status == PASS, explain(c)
    assert "declared as part of the product" in " ".join(c.details), explain(c)


def test_a_declared_helper_that_talks_to_the_network_fails(tmp_path, faces_dir, spoof_dir):
    need_strace()
    collector = Collector(tmp_path / "collector.sock")
    helper = network_helper(tmp_path, collector.port)
    try:
        (tmp_path / "p").mkdir()
        t = _with_children(write_target(tmp_path / "p", faces_dir, spoof_dir, ["--helper", str(helper)]),
                           [str(helper)])
        c = audit(t)["C3.network"]
    finally:
        collector.close()
    assert collector.received, "the helper never reached the listener: the control shows nothing"
    assert c.status == FAIL and "AF_INET" in c.summary + " ".join(c.details), explain(c)
