"""Shared test fixtures.

Data and models are found through ``FR_PBD_DATA`` and ``FR_PBD_MODELS``.
Under ``CI=true`` a missing model or data set *fails* the test; elsewhere it
skips with a one-line reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import settings

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# Hypothesis profiles. "ci": no example database (a fresh clone has none, and a run must
# not depend on what an earlier run saved) and derandomized, so a CI failure is a property
# of the commit, reproducible with HYPOTHESIS_PROFILE=ci, never a roll of the dice; random
# exploration is the "dev" default (and FR_PBD_FUZZ_SCALE=10 for a deeper run). "dev" keeps
# the local .hypothesis/ database, which replays a failure until it is fixed. Deadlines are
# set per test (tests/test_fuzz.py); the profiles do not loosen them.
settings.register_profile("ci", database=None, derandomize=True, print_blob=True)
settings.register_profile("dev")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if IN_CI else "dev"))


# CI gives these relative to the checkout (../shared/...): made absolute once, here, because tests
# hand them to processes that run in other directories (products under audit, daemons, installers).
for _var in ("FR_PBD_MODELS", "FR_PBD_DATA"):
    if os.environ.get(_var):
        os.environ[_var] = str(Path(os.environ[_var]).resolve())


def missing(reason: str) -> None:
    """Fail in CI, skip elsewhere."""
    if IN_CI:
        pytest.fail(f"required resource missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def need_tool(tool: str, package: str) -> str:
    """The path of the system tool ``tool`` (Debian package ``package``); missing: fail in CI, skip elsewhere.

    Every test that runs a system tool asks here first, so that a machine without it says
    which package to install in one line (README lists them all), never a FileNotFoundError.
    Looks in PATH, then in /usr/sbin and /sbin (root's tools, not in every user's PATH).
    """
    path = shutil.which(tool)
    if path is None:
        path = next((p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}") if os.access(p, os.X_OK)), None)
    if path is None:
        missing(f"{tool} is not installed (apt-get install {package})")
    return path


def need_root(what: str) -> None:
    """``what`` needs root: fail in CI (which runs as root), skip elsewhere."""
    if os.geteuid() != 0:
        missing(f"{what} needs root")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    value = os.environ.get("FR_PBD_DATA")
    if not value:
        missing("FR_PBD_DATA is not set (point it at ../shared/data)")
    path = Path(value).resolve()  # absolute: tests hand it to products that run in other directories
    if not path.is_dir():
        missing(f"FR_PBD_DATA={value} is not a directory")
    return path


@pytest.fixture(scope="session")
def faces_dir(data_dir: Path) -> Path:
    path = data_dir / "faces"
    if not path.is_dir():
        missing(f"{path} is missing")
    return path


@pytest.fixture(scope="session")
def lfw_dir(data_dir: Path) -> Path:
    path = data_dir / "lfw"
    if not (path / "pairs.txt").is_file():
        missing(f"{path}/pairs.txt is missing")
    return path


@pytest.fixture(scope="session")
def spoof_dir(data_dir: Path) -> Path:
    path = data_dir / "spoof"
    if not path.is_dir():
        missing(f"{path} is missing")
    return path


@pytest.fixture(scope="session")
def models_env() -> Path:
    """The models directory: FR_PBD_MODELS must be set (CI: ../shared/models)."""
    value = os.environ.get("FR_PBD_MODELS")
    if not value:
        missing("FR_PBD_MODELS is not set (point it at ../shared/models)")
    path = Path(value)
    if not path.is_dir():
        missing(f"FR_PBD_MODELS={value} is not a directory")
    return path


@pytest.fixture(scope="session")
def extractor(models_env):
    """The default capture pipeline (YuNet + the converted dlib model), loaded once."""
    from fr_pbd.pipeline import build_pipeline

    try:
        return build_pipeline(liveness=False).extractor
    except Exception as exc:  # noqa: BLE001 - missing or unverified model: fail in CI, skip elsewhere
        missing(f"{exc} (build it: fr-pbd models build dlib-resnet)")


@pytest.fixture(scope="session")
def template_home(tmp_path_factory, extractor, faces_dir) -> Path:
    """A correct installation, made once: fallback PIN set, Obama enrolled with consent from two photos."""
    from tests.test_daemon import make_enrolled_home

    return make_enrolled_home(tmp_path_factory.mktemp("enrolled") / "home", faces_dir, extractor)


@pytest.fixture()
def home(tmp_path, template_home) -> Path:
    """A fresh copy of :func:`template_home` for one test to change."""
    import shutil

    h = tmp_path / "home"
    shutil.copytree(template_home, h)
    return h


@pytest.fixture(scope="session")
def swtpm(tmp_path_factory):
    """A fresh software TPM for the test session (swtpm on a Unix socket), stopped at the end.

    Missing swtpm or tpm2-pytss: FAIL under CI=true, skip elsewhere (tests/tpm_fixture.py).
    """
    from tests.tpm_fixture import SoftwareTpm

    tpm = SoftwareTpm(tmp_path_factory.mktemp("swtpm")).start()
    try:
        yield tpm
    finally:
        tpm.stop()


@pytest.fixture(scope="session")
def peer_account():
    """Another local user of the test's own: a Unix account created for this session (useradd, as
    root), removed at its end. Tests that need a second uid use it, never an account the host may
    or may not have (``nobody``, ``daemon``...)."""
    from tests.helpers import own_accounts, own_account_name

    with own_accounts(own_account_name("peer")) as (peer,):
        yield peer
