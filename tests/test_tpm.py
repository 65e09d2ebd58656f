"""TPM 2.0 key custody and rollback protection, against a real software TPM (swtpm; docs/tpm.md).

Every test talks to swtpm over its Unix socket (``swtpm:path=...``), the way fr-pbd's
egress filter allows; the CLI tests run ``fr-pbd`` as a subprocess, i.e. under the
kernel filter that refuses every socket family but AF_UNIX.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fr_pbd.errors import ConfigError, StaleStoreError, TpmError
from fr_pbd.store import DeviceFileKeyProvider, Store
from fr_pbd.store import _format as fmt
from fr_pbd.store.store import stored_provider_id
from fr_pbd.store.tpm import TpmKeyProvider, parse_transport, tpm_info
from tests.tpm_fixture import SoftwareTpm, env_with

PIN = "4711-pin-x"
FR_PBD = [sys.executable, "-m", "fr_pbd.cli"]


@pytest.fixture()
def tpm_env(swtpm, monkeypatch):
    monkeypatch.setenv("FR_PBD_TPM", swtpm.transport)
    return swtpm


def _store(home: Path, provider=None) -> Store:
    st = Store.create(home, model_id="dlib-resnet-v1", dim=8, key_provider=provider or TpmKeyProvider())
    st.set_fallback(PIN)
    return st


def _cli(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(FR_PBD + args, env=env, input=stdin, capture_output=True, text=True, timeout=600)


# -- sealing ------------------------------------------------------------------------------
def test_seal_unseal_round_trip_and_the_header_holds_no_usable_key(tpm_env, tmp_path):
    p = TpmKeyProvider()
    dek = os.urandom(32)
    w = p.bind(p.wrap(dek), 0)
    assert w.provider_id == fmt.PROVIDER_TPM2 and p.unwrap(w) == dek
    params = fmt.TpmParams.decode(w.params)
    assert params.nv_index and fmt.TPM_NV_FIRST <= params.nv_index <= fmt.TPM_NV_LAST
    assert dek not in w.params + w.wrapped  # the data key is not in the header in any form
    # another seal of the same key is a different object (fresh seed, fresh authorisation)
    assert p.wrap(dek).params != w.params


def test_store_on_the_tpm_opens_and_says_its_custody(tpm_env, tmp_path):
    st = _store(tmp_path / "home")
    assert stored_provider_id(tmp_path / "home") == fmt.PROVIDER_TPM2
    assert not (tmp_path / "home" / "keys").exists()  # no key file anywhere
    again = Store.open(tmp_path / "home")  # the header names the provider
    assert isinstance(again.key_provider, TpmKeyProvider)
    assert again.check_fallback(PIN) and not again.check_fallback("wrong-pin-1")
    assert "never leaves the TPM" in again.key_provider.custody()
    assert "rollback detected" in again.key_provider.custody()
    assert "a copy of the disk reveals the templates" in DeviceFileKeyProvider.default(tmp_path).custody()
    st.renew()
    assert Store.open(tmp_path / "home").read().generation == st.read().generation


def test_transport_refuses_anything_that_needs_the_network():
    assert parse_transport("device:/dev/tpmrm0") == "device:/dev/tpmrm0"
    assert parse_transport("swtpm:path=/run/swtpm/sock").startswith("swtpm:path=")
    for bad in ("swtpm:host=127.0.0.1,port=2321", "mssim:host=localhost", "swtpm:path=/x,host=h", "tabrmd:",
                "device:tpm0"):
        with pytest.raises(ConfigError):
            parse_transport(bad)
    from fr_pbd import config

    assert config.parse('tpm = "swtpm:path=/tmp/s"').tpm == "swtpm:path=/tmp/s"
    with pytest.raises(ConfigError):
        config.parse('tpm = "swtpm:host=10.0.0.1,port=2321"')


def test_tpm_info_reports_the_software_tpm(swtpm):
    info = tpm_info(swtpm.transport)
    assert info.present and info.family == "2.0" and info.manufacturer == "IBM"
    assert "sha256" in info.pcr_banks
    missing = tpm_info("device:/dev/no-such-tpm")
    assert not missing.present and "no device node" in missing.line()


# -- PCR policy ------------------------------------------------------------------------------
def test_wrong_pcr_policy_is_refused_and_a_reseal_recovers(tmp_path):
    with SoftwareTpm(tmp_path / "tpm") as tpm:
        p = TpmKeyProvider(tpm.transport, pcrs=(16,))  # PCR 16: the debug PCR, resettable, extendable
        st = Store.create(tmp_path / "home", model_id="dlib-resnet-v1", dim=8, key_provider=p)
        st.set_fallback(PIN)
        Store.open(tmp_path / "home", key_provider=TpmKeyProvider(tpm.transport)).read()  # PCRs unchanged: opens
        # the documented re-seal before an update: drop the binding, update, bind again
        shutil.copytree(tmp_path / "home", tmp_path / "bound")
        st.rotate_key(st.key_provider.with_pcrs(()))
        tpm.extend_pcr(16)  # "firmware update"
        assert Store.open(tmp_path / "home", key_provider=TpmKeyProvider(tpm.transport)).check_fallback(PIN)
        # a copy still bound to the old PCR value is refused with a clear error
        with pytest.raises(TpmError, match="PCR 16"):
            Store.open(tmp_path / "bound", key_provider=TpmKeyProvider(tpm.transport))


# -- rollback -------------------------------------------------------------------------------
def test_restoring_an_older_store_is_refused_and_the_lockout_survives(tpm_env, tmp_path):
    home = tmp_path / "home"
    st = _store(home)
    old = (home / "store.frpbd").read_bytes()
    for _ in range(5):
        assert st.fallback_attempt("wrong-pin-1") == "wrong"
    assert st.fallback_attempt(PIN) == "locked"
    (home / "store.frpbd").write_bytes(old)  # the thief restores the copy from before the lockout
    with pytest.raises(StaleStoreError, match="stale copy of the store was restored"):
        Store.open(home)
    with pytest.raises(StaleStoreError):
        Store.open(home).fallback_attempt(PIN)  # no way around it through a write either
    assert (home / "store.frpbd").read_bytes() == old  # and the refused copy is not written over


def test_rollback_is_exit_2_with_one_line_from_the_cli(tpm_env, tmp_path):
    home = tmp_path / "home"
    _store(home)
    old = (home / "store.frpbd").read_bytes()
    Store.open(home).set_fallback(PIN)  # one more write: the counter moves on
    (home / "store.frpbd").write_bytes(old)
    r = _cli(["status", "--home", str(home)], env_with(tpm_env.transport))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "stale copy of the store was restored" in r.stderr


def test_a_crash_between_the_write_and_the_counter_is_accepted_and_caught_up(tpm_env, tmp_path, monkeypatch):
    home = tmp_path / "home"
    st = _store(home)
    monkeypatch.setattr(TpmKeyProvider, "committed", lambda self, w, g: None)  # the increment is lost
    st.set_fallback(PIN)
    monkeypatch.undo()
    monkeypatch.setenv("FR_PBD_TPM", tpm_env.transport)
    st.set_fallback(PIN)  # opens (store ahead of the counter), and the counter catches up
    old = (home / "store.frpbd").read_bytes()
    st.set_fallback(PIN)
    (home / "store.frpbd").write_bytes(old)
    with pytest.raises(StaleStoreError):
        Store.open(home)


# -- TPM cleared, another TPM ------------------------------------------------------------------
def test_tpm_cleared_gives_a_clear_error(tmp_path):
    with SoftwareTpm(tmp_path / "tpm") as tpm:
        home = tmp_path / "home"
        _store(home, TpmKeyProvider(tpm.transport))
        tpm.clear()
        with pytest.raises(TpmError, match="cleared"):
            Store.open(home, key_provider=TpmKeyProvider(tpm.transport))
        r = _cli(["fallback", "check", "--home", str(home), "--secret-stdin"], env_with(tpm.transport), PIN + "\n")
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cleared" in r.stderr


def test_a_copied_home_is_useless_on_another_fresh_tpm(tpm_env, tmp_path):
    _store(tmp_path / "home")
    shutil.copytree(tmp_path / "home", tmp_path / "stolen")
    with SoftwareTpm(tmp_path / "other-tpm") as other:
        with pytest.raises(TpmError, match="another TPM"):
            Store.open(tmp_path / "stolen", key_provider=TpmKeyProvider(other.transport))
    assert Store.open(tmp_path / "home").check_fallback(PIN)  # still fine on its own TPM


# -- commands -----------------------------------------------------------------------------------
def test_keys_init_enrol_verify_with_the_tpm_provider(tpm_env, tmp_path, faces_dir, models_env):
    home = tmp_path / "home"
    env = env_with(tpm_env.transport)
    r = _cli(["keys", "init", "--provider", "tpm2", "--home", str(home)], env)
    assert r.returncode == 0, r.stderr
    assert stored_provider_id(home) == fmt.PROVIDER_TPM2
    assert _cli(["fallback", "set", "--home", str(home), "--secret-stdin"], env, PIN + "\n").returncode == 0
    obama = [faces_dir / "obama.jpg", faces_dir / "obama2.jpg"]
    r = _cli(["enroll", "--user", "obama", "--image", str(obama[0]), "--consent", "--secret-stdin",
              "--home", str(home)], env, PIN + "\n")
    assert r.returncode == 0, r.stderr
    r = _cli(["verify", "--image", str(obama[1]), "--home", str(home)], env)
    assert (r.returncode, r.stdout) == (0, "yes\n"), r.stderr
    r = _cli(["status", "--home", str(home)], env)
    assert r.returncode == 0 and "never leaves the TPM" in r.stdout
    r = _cli(["doctor", "--home", str(home)], env)
    assert "TPM: 2.0 at swtpm:path=" in r.stdout and "manufacturer IBM" in r.stdout and "sha256" in r.stdout
    assert "store key: sealed by the TPM 2.0" in r.stdout
    assert _cli(["keys", "rotate", "--home", str(home)], env).returncode == 0
    r = _cli(["verify", "--image", str(obama[1]), "--home", str(home)], env)
    assert (r.returncode, r.stdout) == (0, "yes\n"), r.stderr


def test_keys_rotate_works_with_every_provider(tpm_env, tmp_path):
    from fr_pbd.store import PassphraseKeyProvider

    env = env_with(tpm_env.transport)
    for name in ("file", "tpm2", "passphrase"):
        home = tmp_path / name
        stdin = "correct horse battery\n"
        r = _cli(["keys", "init", "--provider", name, "--home", str(home), "--secret-stdin"], env, stdin)
        assert r.returncode == 0, r.stderr
        before = (home / "store.frpbd").read_bytes()
        r = _cli(["keys", "rotate", "--home", str(home), "--secret-stdin"], env, stdin)
        assert r.returncode == 0, (name, r.stderr)
        assert (home / "store.frpbd").read_bytes()[:64] != before[:64]
    Store.open(tmp_path / "passphrase", key_provider=PassphraseKeyProvider("correct horse battery")).read()


def test_doctor_without_a_tpm_says_rollback_is_not_detected(tmp_path):
    home = tmp_path / "home"
    Store.create(home, model_id="dlib-resnet-v1", dim=8)
    env = {**os.environ, "FR_PBD_TPM": "device:/dev/no-such-tpm"}
    r = _cli(["doctor", "--home", str(home)], env)
    assert "TPM: none usable at device:/dev/no-such-tpm" in r.stdout
    assert "a copy of the disk reveals the templates" in r.stdout and "rollback: NOT detected" in r.stdout


def test_audit_c4_reports_key_custody(tpm_env, tmp_path):
    from fr_pbd.audit.checks import c4_key
    from fr_pbd.audit.storefacts import read_store

    _store(tmp_path / "tpm")
    Store.create(tmp_path / "file", model_id="dlib-resnet-v1", dim=8).set_fallback(PIN)
    tpm_check, file_check = c4_key(read_store(tmp_path / "tpm")), c4_key(read_store(tmp_path / "file"))
    assert tpm_check.values["hardware_custody"] and tpm_check.values["rollback_detected"]
    assert "never leaves the TPM" in tpm_check.summary and "rollback detected" in tpm_check.summary
    assert not file_check.values["hardware_custody"]
    assert "a copy of the disk reveals the templates" in file_check.summary
    assert "rollback NOT detected" in file_check.summary


# -- migration under SIGKILL ----------------------------------------------------------------------
_MIGRATE_SLOWLY = r"""
import os, sys, time
from fr_pbd import fileio
real = fileio.atomic_write
def slow(path, data, *a, **k):
    print("writing", flush=True)
    time.sleep(float(os.environ["DELAY"]))
    return real(path, data, *a, **k)
fileio.atomic_write = slow
from fr_pbd.store import store as store_mod
store_mod.fileio.atomic_write = slow
from fr_pbd.store import Store
from fr_pbd.store.tpm import TpmKeyProvider
Store.open(sys.argv[1]).rotate_key(TpmKeyProvider())
print("done", flush=True)
time.sleep(30)
"""


@pytest.mark.parametrize("kill_after", ["before_write", "after_write"])
def test_migrate_file_to_tpm_killed_leaves_the_old_or_the_new(tpm_env, tmp_path, kill_after):
    home = tmp_path / "home"
    Store.create(home, model_id="dlib-resnet-v1", dim=8).set_fallback(PIN)
    env = {**env_with(tpm_env.transport), "DELAY": "30" if kill_after == "before_write" else "0",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", _MIGRATE_SLOWLY, str(home)], env=env, stdout=subprocess.PIPE,
                            text=True)
    wanted = "writing" if kill_after == "before_write" else "done"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == wanted or not line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    st = Store.open(home)  # whichever provider the header names
    assert st.check_fallback(PIN)  # never broken: the PIN (inside the store) still checks
    expected = fmt.PROVIDER_DEVICE_FILE if kill_after == "before_write" else fmt.PROVIDER_TPM2
    assert stored_provider_id(home) == expected


def test_cli_migrate_file_to_tpm_keeps_everything(tpm_env, tmp_path):
    home = tmp_path / "home"
    Store.create(home, model_id="dlib-resnet-v1", dim=8).set_fallback(PIN)
    gen = Store.open(home).read().generation
    r = _cli(["keys", "migrate", "--to", "tpm2", "--home", str(home)], env_with(tpm_env.transport))
    assert r.returncode == 0, r.stderr
    assert stored_provider_id(home) == fmt.PROVIDER_TPM2 and not (home / "keys" / "kek").exists()
    st = Store.open(home)
    assert st.read().generation == gen + 1 and st.check_fallback(PIN)


# -- the egress filter lets the TPM transport through, and nothing else --------------------------
_UNDER_FILTER = r"""
import os, sys
from fr_pbd import egress
assert egress.install_kernel_filter()
from fr_pbd.store.tpm import tpm_info
print("unix", tpm_info(sys.argv[1]).present)
os.environ["TSS2_LOG"] = "all+NONE"
import tpm2_pytss
try:
    tpm2_pytss.ESAPI(f"swtpm:host=127.0.0.1,port={sys.argv[2]}")
    print("tcp connected")
except Exception:
    print("tcp refused")
"""


def test_under_the_kernel_filter_the_unix_transport_works_and_a_tcp_one_is_refused(swtpm):
    import socket

    with socket.socket() as listener:  # a TCP "TPM simulator" outside the filter, to see what arrives
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        r = subprocess.run([sys.executable, "-c", _UNDER_FILTER, swtpm.transport, str(port)], capture_output=True,
                           text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert r.stdout.split("\n")[:2] == ["unix True", "tcp refused"], r.stdout + r.stderr
        with pytest.raises(socket.timeout):
            listener.accept()  # nothing reached it


# -- the header fields, fuzzed like the rest of the format (no TPM needed) -------------------------
from hypothesis import given  # noqa: E402
from hypothesis import strategies as hst  # noqa: E402

from fr_pbd.errors import StoreIntegrityError  # noqa: E402


@given(hst.binary(max_size=600))
def test_tpm_params_parser_refuses_garbage_with_a_typed_error(raw):
    try:
        p = fmt.TpmParams.decode(raw)
    except StoreIntegrityError:
        return
    assert p.encode() == raw  # whatever it accepts, it accepts exactly


@given(hst.integers(0, 2**24 - 1), hst.integers(-(2**62), 2**62), hst.binary(min_size=1, max_size=66),
       hst.binary(min_size=1, max_size=1024), hst.binary(min_size=1, max_size=1024))
def test_tpm_params_round_trip(mask, base, name, public, private):
    p = fmt.TpmParams(0x000B if mask else 0, mask, fmt.TPM_NV_FIRST + 5, b"\x01" * 32, base, name, public, private)
    assert fmt.TpmParams.decode(p.encode()) == p
    with pytest.raises(StoreIntegrityError):
        fmt.TpmParams.decode(p.encode() + b"\x00")
    with pytest.raises(StoreIntegrityError):
        fmt.TpmParams.decode(p.encode()[:-1])
