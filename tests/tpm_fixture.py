"""A software TPM 2.0 (swtpm, Debian packages ``swtpm`` and ``swtpm-tools``) for the TPM tests.

Each :class:`SoftwareTpm` is a fresh TPM: state in its own temporary directory,
reached over a Unix socket (``swtpm:path=...``, as fr-pbd's egress filter allows),
stopped by :meth:`stop`. Under ``CI=true`` a missing swtpm or tpm2-pytss fails the
test; elsewhere it skips with a one-line reason (:func:`tests.conftest.missing`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path


SWTPM_PACKAGES = "swtpm swtpm-tools"


def unavailable() -> str | None:
    """Why the TPM tests cannot run here (None: they can)."""
    if shutil.which("swtpm") is None:
        return f"swtpm is not installed (apt-get install {SWTPM_PACKAGES})"
    try:
        import tpm2_pytss  # noqa: F401
    except ImportError as exc:
        return f"tpm2-pytss is not installed (pip install 'fr-pbd[tpm]' with libtss2-dev): {exc}"
    return None


def require() -> str:
    """swtpm's path, once swtpm and tpm2-pytss are known to be here; else fail in CI, skip elsewhere."""
    from tests.conftest import missing, need_tool

    swtpm = need_tool("swtpm", SWTPM_PACKAGES)
    why = unavailable()
    if why:
        missing(why)
    return swtpm


class SoftwareTpm:
    """One swtpm process with its state in ``state_dir``; :attr:`transport` is what fr-pbd is given."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "state").mkdir(exist_ok=True)
        self.socket = self.dir / "tpm.sock"
        self.proc: subprocess.Popen | None = None

    @property
    def transport(self) -> str:
        return f"swtpm:path={self.socket}"

    def start(self) -> "SoftwareTpm":
        swtpm = require()  # a test that starts its own TPM skips (or, in CI, fails) here, never FileNotFoundError
        for p in (self.socket, Path(f"{self.socket}.ctrl")):
            if p.exists():
                p.unlink()
        self.proc = subprocess.Popen(
            [swtpm, "socket", "--tpm2", "--tpmstate", f"dir={self.dir / 'state'}",
             "--server", f"type=unixio,path={self.socket}", "--ctrl", f"type=unixio,path={self.socket}.ctrl",
             "--flags", "not-need-init,startup-clear"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not (self.socket.exists() and Path(f"{self.socket}.ctrl").exists()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"swtpm did not start: {err.strip()[:300]}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def clear(self) -> None:
        """``TPM2_Clear`` under the lockout hierarchy: new owner seed, every owner NV index gone."""
        from tpm2_pytss import ESAPI, ESYS_TR

        with ESAPI(self.transport) as ectx:
            ectx.clear(ESYS_TR.LOCKOUT)

    def extend_pcr(self, pcr: int, data: bytes = b"firmware update") -> None:
        """Extend ``pcr`` (sha256 bank): what a firmware or boot change does to the measured PCRs."""
        import hashlib

        from tpm2_pytss import ESAPI, ESYS_TR, TPM2_ALG, TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA

        digest = hashlib.sha256(data).digest()
        with ESAPI(self.transport) as ectx:
            values = TPML_DIGEST_VALUES([TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=digest))])
            ectx.pcr_extend(getattr(ESYS_TR, f"PCR{pcr}"), values)

    def __enter__(self) -> "SoftwareTpm":
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()


def env_with(transport: str) -> dict[str, str]:
    """A copy of this process's environment that points fr-pbd at ``transport``."""
    return {**os.environ, "FR_PBD_TPM": transport}
