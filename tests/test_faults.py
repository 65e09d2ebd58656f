"""Every write path under storage faults, made for real: the user's to fix (exit 2), nothing lost.

A full disk is a small tmpfs filled up (ENOSPC), a read-only home is ``mount -o remount,ro``
(EROFS); an I/O error on write or on fsync (EIO) and a quota used up (EDQUOT) come from the
seam in :mod:`fr_pbd.fileio` (:func:`~fr_pbd.fileio.set_fault_hook`): real quotas need the quota
tools and a file system mounted with them, and no file system a test can mount fails an fsync
on demand. Each case runs the real CLI in a subprocess and shows: exit status 2 and a one-line
message naming the cause, the path and what to do; a verification that cannot be counted
answers no; no temp file left; and, once the fault is gone, the store opens with the same bytes,
users and template counts, a genuine photo still says yes and an impostor no.

Mounting needs root (CI runs as root); elsewhere these tests skip with a one-line reason.
"""

from __future__ import annotations

import contextlib

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

from tests.conftest import missing
from tests.test_daemon import GENUINE, IMPOSTOR, PIN

#: Runs ``fr-pbd`` with the fault seam set: ``python -c BOOT OP ERRNO NTH CLI-ARGS...``. The hook
#: fails the NTH file (counted by path, 1-based) that a write (OP=write) or fsync (OP=fsync) goes
#: to with ERRNO; OP=none sets nothing. Everything else is the real command (hardening, egress guard).
BOOT = """
import errno, os, sys
op, code, nth = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
del sys.argv[1:4]
from fr_pbd import fileio
seen = []
def hook(kind, path):
    if kind != op:
        return
    if path not in seen:
        seen.append(path)
    if seen.index(path) + 1 == nth:
        raise OSError(code, os.strerror(code), str(path))
if op != "none":
    fileio.set_fault_hook(hook)
from fr_pbd.cli import main
sys.exit(main())
"""

NEW_PIN = "another horse 97531"
PASSPHRASE = "a store passphrase 8642"

#: name -> (CLI arguments after ``--home H``, standard input, extra-arg builder). ``{faces}`` is the faces dir.
PATHS: dict[str, tuple[list[str], str]] = {
    "enroll": (["enroll", "--user", "biden", "--image", "{faces}/biden.jpg", "--consent", "--secret-stdin"],
               PIN + "\n"),
    "verify-count": (["verify", "--user", "obama", "--image", "{faces}/" + GENUINE[0]], ""),
    "fallback-set": (["fallback", "set", "--secret-stdin"], f"{PIN}\n{NEW_PIN}\n"),
    "fallback-check": (["fallback", "check", "--secret-stdin"], PIN + "\n"),
    "unenroll": (["unenroll", "--user", "obama"], ""),
    "keys-migrate": (["keys", "migrate", "--to", "passphrase", "--secret-stdin"], PASSPHRASE + "\n"),
    "keys-rotate": (["keys", "rotate"], ""),
    "erase": (["erase", "--yes"], ""),
}
FAULTS = ("enospc", "erofs", "eio-write", "eio-fsync", "edquot")
CAUSE = {"enospc": "no space left on the device", "erofs": "the file system is read-only",
         "eio-write": "input/output error", "eio-fsync": "input/output error", "edquot": "the disk quota is used up"}
SEAM = {"eio-write": ("write", errno.EIO), "eio-fsync": ("fsync", errno.EIO), "edquot": ("write", errno.EDQUOT)}


def _need_root() -> None:
    if os.geteuid() != 0:
        missing("mounting a tmpfs needs root (CI runs as root)")
    if shutil.which("mount") is None:
        missing("mount(8) is missing (util-linux)")


def cli_argv(home: Path, args: list[str], faces: Path | None = None) -> list[str]:
    """``args`` with ``{faces}`` filled in and ``--home HOME`` after the (sub)command."""
    argv = [a.format(faces=faces) for a in args]
    cut = 2 if argv[0] in ("fallback", "keys") else 1
    return [*argv[:cut], "--home", str(home), *argv[cut:]]


def run_cli(home: Path, args: list[str], stdin: str = "", seam: tuple[str, int, int] = ("none", 0, 0),
            faces: Path | None = None, prefix: tuple[str, ...] = (), env: dict | None = None,
            ) -> subprocess.CompletedProcess:
    """The real ``fr-pbd`` (in a subprocess, through :data:`BOOT`), with the fault seam ``seam``."""
    op, code, nth = seam
    return subprocess.run([*prefix, sys.executable, "-c", BOOT, op, str(code), str(nth),
                           *cli_argv(home, args, faces)],
                          input=stdin, capture_output=True, text=True, timeout=300, env=env)


class Tmpfs:
    """A tmpfs of ``size`` mounted on ``where`` (root only); unmounted (lazily) on exit."""

    def __init__(self, where: Path, size: str = "4m") -> None:
        self.where, self.size = where, size

    def __enter__(self) -> "Tmpfs":
        self.where.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.where)],
                       check=True)
        return self

    def remount(self, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.where)], check=True)

    def fill(self) -> Path:
        """Write a filler file until the file system says ENOSPC; returns it (delete it to free the space)."""
        filler = self.where / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            block = b"\0" * 65536
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
            for n in (4096, 512, 1):  # the last partial pages
                try:
                    while True:
                        os.write(fd, block[:n])
                except OSError:
                    pass
        finally:
            os.close(fd)
        return filler

    def __exit__(self, *exc) -> None:
        subprocess.run(["umount", "-l", str(self.where)], check=False)


def snapshot(home: Path) -> dict[str, bytes]:
    """Every file under ``home`` (relative path -> bytes)."""
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}


def check_store_intact(home: Path, before: dict[str, bytes], extractor, faces: Path) -> None:
    """The store opens with the same bytes, users and counts; genuine yes, impostor no."""
    from fr_pbd.store import Store
    from fr_pbd.verify import Verifier

    assert snapshot(home) == before, "the home changed under the fault"
    view = Store.open(home).read()
    assert view.users == ("obama",) and view.template_count("obama") == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = Verifier(home, extractor, liveness=False)
    assert v.verify(faces / GENUINE[1], user="obama").accepted
    assert not v.verify(faces / IMPOSTOR[0], user="obama").accepted
    v.settle()


def assert_one_line_error(proc: subprocess.CompletedProcess, cause: str, home: Path) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("fr-pbd: error:")]
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert cause in line and str(home) in line, line
    assert "run the command again" in line or "chmod u+rwx" in line, line  # what to do
    return line


@pytest.fixture()
def fault_home(tmp_path, template_home):
    """A tmpfs (4 MiB) holding a copy of the module's enrolled home: (tmpfs, home)."""
    _need_root()
    with Tmpfs(tmp_path / "mnt") as fs:
        home = fs.where / "home"
        shutil.copytree(template_home, home)
        os.chmod(home, 0o700)
        yield fs, home


@contextlib.contextmanager
def fault_made(fs, fault: str):
    """The fault for real (a full tmpfs, a read-only remount) or through the fileio seam; undone after.

    Yields the seam to hand to :func:`run_cli` (("none", 0, 0) for the real faults).
    """
    seam: tuple[str, int, int] = ("none", 0, 0)
    filler = None
    if fault == "enospc":
        filler = fs.fill()
    elif fault == "erofs":
        fs.remount("ro")
    else:
        op, code = SEAM[fault]
        seam = (op, code, 1)
    try:
        yield seam
    finally:
        if filler is not None:
            filler.unlink()
        if fault == "erofs":
            fs.remount("rw")


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("fault", FAULTS)
def test_write_path_under_fault(fault, path, fault_home, extractor, faces_dir):
    fs, home = fault_home
    args, stdin = PATHS[path]
    before = snapshot(home)
    with fault_made(fs, fault) as seam:
        proc = run_cli(home, args, stdin, seam, faces_dir)
    if path == "erase" and fault == "enospc":
        # Crypto-shredding overwrites in place and deletes: it needs no free space, and it must work.
        assert proc.returncode == 0, proc.stderr
        assert not (home / "store.frpbd").exists() and not (home / "keys").exists()
        return
    line = assert_one_line_error(proc, CAUSE[fault], home)
    if path.startswith("verify"):
        assert proc.stdout.strip() == "no", proc.stdout  # fail closed: the attempt could not be counted
    assert not [p for p in home.rglob("*") if p.name.startswith(".fr-pbd-tmp-")]
    if path == "erase" and fault == "eio-fsync":
        # The data key's zeros reached the file before its fsync failed: the erase is half done,
        # and running it again finishes it (what docs/store-format.md promises of an interrupted erase).
        again = run_cli(home, args, stdin, faces=faces_dir)
        assert again.returncode == 0, again.stderr
        assert not (home / "store.frpbd").exists()
        return
    assert "was left as it was" in line or "nothing was" in line or path == "erase", line
    check_store_intact(home, before, extractor, faces_dir)


@pytest.mark.parametrize("fault", ["eio-write", "eio-fsync", "edquot", "enospc"])
def test_verify_clear_under_fault(fault, fault_home, extractor, faces_dir):
    """The count lands, the success's clear cannot be written: no (fail closed), exit 2, the count stays one
    higher (the safe direction), and the next genuine attempt clears it. ENOSPC through the seam too: a
    real disk cannot be filled between two writes of one process."""
    from fr_pbd.store import Store

    _fs, home = fault_home
    op, code = SEAM.get(fault, ("write", errno.ENOSPC))
    proc = run_cli(home, PATHS["verify-count"][0], "", (op, code, 2), faces_dir)
    assert_one_line_error(proc, CAUSE[fault], home)
    assert proc.stdout.strip() == "no"
    assert Store.open(home).read().lockout_of("obama").failures == 1
    assert not [p for p in home.rglob("*") if p.name.startswith(".fr-pbd-tmp-")]
    ok = run_cli(home, PATHS["verify-count"][0], "", faces=faces_dir)
    assert ok.returncode == 0 and ok.stdout.strip() == "yes", ok.stderr
    assert Store.open(home).read().lockout_of("obama").failures == 0


@pytest.mark.parametrize("fault", FAULTS)
def test_keys_init_under_fault(fault, tmp_path, faces_dir):
    """A new home on a full, read-only or failing file system: exit 2, nothing created but what was there."""
    _need_root()
    with Tmpfs(tmp_path / "mnt") as fs:
        home = fs.where / "new"
        home.mkdir(mode=0o700)
        with fault_made(fs, fault) as seam:
            proc = run_cli(home, ["keys", "init", "--provider", "file"], "", seam)
        assert_one_line_error(proc, CAUSE[fault], home)
        assert not (home / "store.frpbd").exists()
        assert not [p for p in home.rglob("*") if p.name.startswith(".fr-pbd-tmp-")]
        again = run_cli(home, ["keys", "init", "--provider", "file"])
        assert again.returncode == 0, again.stderr


def test_status_on_a_read_only_home(fault_home):
    """Reading needs no write: status works on a read-only home (the lock file is opened read-only)."""
    fs, home = fault_home
    fs.remount("ro")
    try:
        proc = run_cli(home, ["status"])
    finally:
        fs.remount("rw")
    assert proc.returncode == 0, proc.stderr
    assert "obama: 2 template(s)" in proc.stdout


def test_unwritable_home_is_exit_2(request, template_home, faces_dir):
    """A home its owner cannot write (0500): permission denied, exit 2, a no for the verification;
    the API raises StorageError (an fr-pbd error), not a raw PermissionError. Run as another uid
    (root bypasses file modes)."""
    _need_root()
    if shutil.which("setpriv") is None:
        missing("setpriv is missing (util-linux)")
    uid = 64917
    base = Path(tempfile.mkdtemp(prefix="fr-pbd-unwritable-", dir="/tmp"))  # pytest's tmp is root's alone
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    home = base / "home"
    shutil.copytree(template_home, home)
    subprocess.run(["chown", "-R", f"{uid}:{uid}", str(base)], check=True)
    os.chmod(home, 0o500)
    os.chmod(home / "keys", 0o500)
    from fr_pbd import models

    cache = base / ".cache" / "fr-pbd" / "models"  # the models built here live in root's cache: the user's own copy
    cache.mkdir(parents=True)
    for name in models.manifest():
        found = models.status(name).path
        if found is not None and models.cache_dir() in found.parents:
            shutil.copyfile(found, cache / found.name)
    subprocess.run(["chown", "-R", f"{uid}:{uid}", str(base / ".cache")], check=True)
    before = snapshot(home)
    as_user = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    env = dict(os.environ, HOME=str(base))
    for name in ("fallback-check", "verify-count", "unenroll"):
        args, stdin = PATHS[name]
        proc = run_cli(home, args, stdin, faces=faces_dir, prefix=as_user, env=env)
        line = assert_one_line_error(proc, "permission denied", home)
        assert "chmod u+rwx" in line, line
        if name.startswith("verify"):
            assert proc.stdout.strip() == "no"
    api = subprocess.run([*as_user, sys.executable, "-c",
                          "import sys, fr_pbd\n"
                          "from fr_pbd.errors import StorageError\n"
                          "try:\n"
                          f"    fr_pbd.check_fallback({PIN!r}, home={str(home)!r})\n"
                          "except StorageError as e:\n"
                          "    print(type(e).__name__, e.errno, isinstance(e, OSError)); sys.exit(0)\n"
                          "sys.exit(1)\n"], capture_output=True, text=True, env=env, timeout=300)
    assert api.returncode == 0 and api.stdout.split() == ["StorageError", str(errno.EACCES), "True"], api.stderr
    assert snapshot(home) == before
    status = run_cli(home, ["status"], prefix=as_user, env=env)
    assert status.returncode == 0, status.stderr


def test_missing_home_names_the_next_command(tmp_path):
    proc = run_cli(tmp_path / "nothing-here", ["status"])
    assert proc.returncode == 2, proc.stderr
    assert "fr-pbd fallback set" in proc.stderr and "internal error" not in proc.stderr


def test_seam_is_off_by_default_and_no_environment_sets_it():
    """The fault seam is a function a test sets inside the process; no environment variable reaches it."""
    from fr_pbd import fileio

    assert fileio._fault_hook is None
    src = Path(fileio.__file__).read_text(encoding="utf-8")
    assert "os.environ" not in src and "getenv(" not in src



def test_ask_by_another_user_on_an_unreadable_config_is_exit_2(request):
    """``fr-pbd ask`` run by a user who cannot enter the home: a one-line ConfigError (exit 2), not the
    internal error of a raw PermissionError, and never the defaults taken for "no config"."""
    _need_root()
    if shutil.which("setpriv") is None:
        missing("setpriv is missing (util-linux)")
    base = Path(tempfile.mkdtemp(prefix="fr-pbd-ask-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    os.chmod(base, 0o755)
    home = base / "home"
    home.mkdir(mode=0o700)
    (home / "config.toml").write_text('profile = "household-device-access"\n')
    proc = run_cli(home, ["ask", "--user", "obama"],
                   prefix=("setpriv", "--reuid=64917", "--regid=64917", "--clear-groups", "--"))
    assert proc.returncode == 2, proc.stderr
    assert f"cannot read {home}/config.toml: Permission denied" in proc.stderr, proc.stderr
    assert "internal error" not in proc.stderr and len(proc.stderr.splitlines()) == 1


#: Runs one call in a fresh interpreter and prints the peak RSS (KiB) it added and the seconds it took.
MEASURE = """
import sys, time
from pathlib import Path
kind, arg = sys.argv[1], sys.argv[2]
if kind == "model":
    from fr_pbd import models
    call = lambda: models.resolve("dlib-resnet-v1")
elif kind == "store":
    from fr_pbd.store import Store
    call = lambda: Store.open(arg)
else:
    call = lambda: Path(arg).read_bytes()
import fr_pbd.errors
def peak():  # VmHWM: this process's own peak (ru_maxrss would carry the parent's over fork and exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
base = peak()
t0 = time.perf_counter()
try:
    call()
    outcome = "read"
except fr_pbd.errors.FrPbdError as exc:
    outcome = type(exc).__name__ + ": " + str(exc)
took = time.perf_counter() - t0
print(peak() - base, took, outcome)
"""


def _measure(kind: str, arg: str, env: dict | None = None) -> tuple[int, float, str]:
    out = subprocess.run([sys.executable, "-c", MEASURE, kind, arg], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    kib, took, outcome = out.stdout.split(" ", 2)
    return int(kib), float(took), outcome.strip()


def _sparse(path: Path, size: int, head: bytes = b"") -> Path:
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    os.chmod(path, 0o600)
    return path


def test_a_1gb_model_file_is_refused_unread(tmp_path):
    """A 1 GiB file where the embedder should be: refused from its size, under 1 s and 50 MB; the
    unguarded control (reading it, as before) costs its full size in memory."""
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    big = _sparse(models_dir / "dlib_face_recognition_resnet_model_v1.onnx", 1 << 30)
    env = dict(os.environ, FR_PBD_MODELS=str(models_dir), XDG_CACHE_HOME=str(tmp_path / "cache"))
    kib, took, outcome = _measure("model", "", env)
    assert outcome.startswith("ModelHashMismatchError") and "1073741824 bytes" in outcome, outcome
    assert "refused unread" in outcome and kib < 50_000 and took < 1.0, (kib, took)
    control = _sparse(tmp_path / "control.bin", 300 << 20)
    kib, _took, _ = _measure("read", str(control))
    assert kib > 200_000, kib  # what reading it whole costs (300 MiB)


@pytest.mark.parametrize("size", [10**9, 2 * 10**8], ids=["1GB-over-the-cap", "200MB-no-bucket-size"])
def test_a_1gb_store_file_is_refused_unread(size, home):
    """A store file grown to 1 GB (over the 256 MiB bucket the store reads), or to 200 MB (under it, but
    no size the format writes, seen from fstat and the header): refused under 1 s and 50 MB, before its
    body is read. Before, both were read whole (1.9 GB peak, 6 s) and then refused."""
    store = home / "store.frpbd"
    head = store.read_bytes()[:4096]
    _sparse(store, size, head)
    kib, took, outcome = _measure("store", str(home))
    assert outcome.startswith(("StoreIntegrityError", "StoreError")), outcome
    assert kib < 50_000 and took < 1.0, (kib, took, outcome)


def test_the_api_raises_storage_error_on_a_full_disk(fault_home, faces_dir, models_env):
    """fr_pbd.verify_face on a full disk: StorageError (an fr-pbd error and an OSError, errno ENOSPC), not a
    raw OSError and not a yes; the store as it was."""
    import fr_pbd
    from fr_pbd.errors import FrPbdError, StorageError

    fs, home = fault_home
    before = snapshot(home)
    filler = fs.fill()
    try:
        with pytest.raises(StorageError) as e:
            fr_pbd.verify_face(faces_dir / GENUINE[0], user="obama", home=home)
    finally:
        filler.unlink()
    assert isinstance(e.value, FrPbdError) and isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC
    assert "no space left on the device" in str(e.value) and str(home) in str(e.value)
    assert snapshot(home) == before
