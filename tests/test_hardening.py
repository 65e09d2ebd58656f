"""Process hardening (fr_pbd.hardening): not dumpable, no core file, memory kept out of swap where allowed.

Each check runs in a fresh interpreter: the flags are per process and must not leak into pytest's.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys

from fr_pbd import hardening
from tests.conftest import missing


def run(code: str, *prefix: str) -> str:
    p = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def test_harden_process_makes_it_undumpable_without_core_files():
    out = run("import resource; from fr_pbd import hardening as h; print(h.is_dumpable(), h.harden_process(), "
              "h.is_dumpable(), resource.getrlimit(resource.RLIMIT_CORE))")
    assert out == "True [] False (0, 0)"


def test_wipe_and_lock_a_buffer():
    buf = bytearray(b"k" * 64)
    hardening.wipe(buf)
    assert buf == bytearray(64)
    out = run("from fr_pbd import hardening as h; "
              "b = bytearray(32); print(h.lock_buffer(b)); h.unlock_buffer(b)")
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    assert out == "True" or soft < 4096  # a page-sized buffer fits any limit of a page or more


def test_lock_all_memory_only_where_nothing_can_fail_later():
    code = ("from fr_pbd import hardening as h; why = h.lock_all_memory(); "
            "vm = [l for l in open('/proc/self/status') if l.startswith('VmLck')][0].split()[1]; "
            "print('locked' if why is None else why, int(vm) > 0)")
    if os.geteuid() == 0:  # CAP_IPC_LOCK: locked, pages counted in VmLck
        assert run(code) == "locked True"
    # a finite RLIMIT_MEMLOCK without the capability: nothing locked, and the reason
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            missing("setpriv not installed (apt-get install util-linux)")
        prefix = ["setpriv", "--bounding-set=-ipc_lock", "--inh-caps=-ipc_lock"]  # root without CAP_IPC_LOCK
    out = run("import resource; resource.setrlimit(resource.RLIMIT_MEMLOCK, (65536, 65536)); " + code, *prefix)
    assert out.startswith("memory not locked (RLIMIT_MEMLOCK 65536 bytes, no CAP_IPC_LOCK)") and out.endswith("False")


def test_the_store_overwrites_every_data_key_buffer_when_its_operation_ends(tmp_path, monkeypatch):
    """Key in memory: the data key lives in its own buffer, zeroed after create, read, transaction,
    re-key and erase; a fresh key is random (the store it seals opens again)."""
    from fr_pbd.store import Store, erase

    made: list[bytearray] = []
    real = hardening.secret_buffer

    def spy(data=None, size=0):
        buf = real(data, size)
        made.append(buf)
        return buf

    monkeypatch.setattr(hardening, "secret_buffer", spy)
    home = tmp_path / "home"
    store = Store.create(home, model_id="m", dim=4)
    assert len(made) == 1 and made[0] == bytearray(32)  # zeroed once the new store was written
    store.read()
    with store.transaction() as tx:
        tx.set_fallback("246813")
        live = made[-1]
        assert any(live)  # inside the transaction the key is there
    store.rotate_key()
    assert Store.open(home).read().has_fallback  # the keys drawn into the buffers really sealed the store
    erase(home)
    assert len(made) >= 6 and all(b == bytearray(len(b)) for b in made)
