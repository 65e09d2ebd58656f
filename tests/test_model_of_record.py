"""One model of record: the store, the verifier, the daemon and the audit follow the pipeline's embedder.

A second embedder is made here, in the test: dlib's ResNet graph with a fixed 128 x 64
projection (orthonormal columns, seed 64) appended, so a 64-d model that still tells people
apart. It is registered for this process only through :func:`fr_pbd.pipeline.register_embedder`
(the embedder registry and a manifest entry with its sha256, hash-checked like every model);
its board is a vendor board file (``$FR_PBD_BOARDS``) named in the home's config.toml. A
subprocess (the CLI, the daemon, the audit) gets the same embedder through :data:`LAUNCH`,
which registers it and then runs ``fr_pbd.cli.main`` as ``python -m fr_pbd.cli`` would.

Shown: ``fallback set`` creates the store for that model and dimension (not dlib's 128);
enrolment, ``verify`` (yes for the enrolled person, no for another), the daemon's answers and
the audit all run on it; and a store of one model used under a pipeline of the other is refused
in one line naming both, before an image is looked at or an attempt counted (its control: the
same store under its own model verifies).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from fr_pbd.capture import dlib_resnet
from tests.conftest import missing

ROOT = Path(__file__).resolve().parent.parent
PIN = "correct horse battery"
MODEL_ID = "test-dlib-projected-64"
DIM = 64
FILE = "test_dlib_projected_64.onnx"
BOARD = "test-projected-64"
# The operating threshold of the test model (cosine of its templates). Where it sits was measured on
# the faces used here, with this projection: Obama's photos with one another well above it, Obama
# with Biden and the astronaut well below (the test asserts the decisions, never prints a score).
THRESHOLD = 0.92

#: Runs the CLI in a subprocess with the test embedder registered: ``[sys.executable, "-c", LAUNCH, *words]``.
LAUNCH = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
          "from tests.test_model_of_record import register; register(); "
          "from fr_pbd.cli import main; sys.exit(main())")


class Projected64:
    """dlib's chip, dlib's network, then a fixed projection to 64 numbers (the graph does it all)."""

    model_id = MODEL_ID
    input_size = dlib_resnet.INPUT_SIZE
    embedding_dim = DIM
    alignment_reference = dlib_resnet.ALIGNMENT_REFERENCE
    channel_order = dlib_resnet.CHANNEL_ORDER
    flip_average = True
    area_prefilter = dlib_resnet.AREA_PREFILTER

    def __init__(self, session) -> None:
        self._session = session

    def embed(self, chips: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(chips).transpose(0, 3, 1, 2), dtype=np.float32)
        (out,) = self._session.run([dlib_resnet.OUTPUT_NAME], {dlib_resnet.INPUT_NAME: x})
        return np.asarray(out, dtype=np.float32).reshape(len(x), DIM)


def build_graph(dlib_bytes: bytes) -> bytes:
    """dlib's graph with ``embedding`` (N, 128) renamed and a MatMul to a new ``embedding`` (N, 64)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load_from_string(dlib_bytes)
    g = m.graph
    for node in g.node:
        for i, name in enumerate(node.output):
            if name == dlib_resnet.OUTPUT_NAME:
                node.output[i] = "embedding_128"
        for i, name in enumerate(node.input):
            if name == dlib_resnet.OUTPUT_NAME:
                node.input[i] = "embedding_128"
    q, _ = np.linalg.qr(np.random.default_rng(64).standard_normal((dlib_resnet.EMBEDDING_DIM, DIM)))
    g.initializer.append(numpy_helper.from_array(q.astype(np.float32), "projection_64"))
    g.node.append(helper.make_node("MatMul", ["embedding_128", "projection_64"], [dlib_resnet.OUTPUT_NAME]))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(dlib_resnet.OUTPUT_NAME, TensorProto.FLOAT, ["N", DIM]))
    onnx.checker.check_model(m)
    return m.SerializeToString()


def manifest_entry(data: bytes) -> str:
    return f"""schema = 1
[models.{MODEL_ID}]
role = "embedder"
file = "{FILE}"
sha256 = "{hashlib.sha256(data).hexdigest()}"
size = {len(data)}
licence = "CC0-1.0"
obtain = "build"
build_command = "pytest tests/test_model_of_record.py (made by the test)"
provenance = "dlib-resnet-v1 with a fixed 128 x 64 projection (orthonormal columns, seed 64) appended by tests/test_model_of_record.py"
training_data = "as dlib-resnet-v1 (the projection is not trained)"
input = "as dlib-resnet-v1"
default_threshold = {THRESHOLD}
"""


def register() -> None:
    """Register the test embedder from ``$FR_PBD_MODELS/FILE`` (this process; once)."""
    from fr_pbd.capture.extractor import EMBEDDERS
    from fr_pbd.pipeline import register_embedder

    if MODEL_ID not in EMBEDDERS:
        data = (Path(os.environ["FR_PBD_MODELS"]) / FILE).read_bytes()
        register_embedder(Projected64, manifest_entry(data))


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory, models_env):
    """A models directory (the shared models plus the test graph) and a boards directory with its board."""
    from fr_pbd import models

    try:
        dlib = models.resolve(dlib_resnet.MODEL_ID).data
    except Exception as exc:  # noqa: BLE001 - missing or unverified model: fail in CI, skip elsewhere
        missing(f"{exc} (build it: fr-pbd models build dlib-resnet)")
    try:
        import onnx  # noqa: F401 - the test extra has it (pyproject.toml)
    except ImportError:
        missing("the onnx package is not installed (pip install -e '.[test]')")
    base = tmp_path_factory.mktemp("model-of-record")
    mdir, bdir = base / "models", base / "boards"
    mdir.mkdir()
    bdir.mkdir()
    for f in models_env.iterdir():
        if f.is_file():
            shutil.copyfile(f, mdir / f.name)
    (mdir / FILE).write_bytes(build_graph(dlib))
    (bdir / f"{BOARD}.toml").write_text(
        f'schema = 1\nboard = "{BOARD}"\ndescription = "the default runtime with the test\'s 64-d embedder"\n'
        '[runtime]\nproviders = ["CPUExecutionProvider"]\nthreads = 0\n'
        '[detector]\ninput_size = [640, 480]\n'
        f'[embedder]\nmodel = "{MODEL_ID}"\nvariant = "fp32"\n')
    (bdir / "test-sface.toml").write_text(
        'schema = 1\nboard = "test-sface"\n[runtime]\nproviders = ["CPUExecutionProvider"]\nthreads = 0\n'
        '[detector]\ninput_size = [640, 480]\n[embedder]\nmodel = "sface-2021dec"\nvariant = "fp32"\n')
    mp = pytest.MonkeyPatch()
    mp.setenv("FR_PBD_MODELS", str(mdir))
    mp.setenv("FR_PBD_BOARDS", str(bdir))
    register()
    try:
        yield base
    finally:
        from fr_pbd.pipeline import unregister_embedder

        unregister_embedder(MODEL_ID)
        mp.undo()


def make_home(path: Path, board: str | None, extra: str = "") -> Path:
    path.mkdir(mode=0o700, parents=True)
    text = (f'board = "{board}"\n' if board else "") + extra
    (path / "config.toml").write_text(text)
    os.chmod(path / "config.toml", 0o600)
    return path


def cli(*words: str, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LAUNCH, *words], input=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)


def fallback_set(home: Path) -> subprocess.CompletedProcess:
    return cli("fallback", "set", "--home", str(home), "--secret-stdin", stdin=PIN + "\n")


def enroll(home: Path, faces_dir: Path, *words: str) -> subprocess.CompletedProcess:
    return cli("enroll", "--home", str(home), "--user", "obama", "--image", str(faces_dir / "obama.jpg"),
               "--image", str(faces_dir / "obama2.jpg"), "--consent", "--secret-stdin", *words, stdin=PIN + "\n")


def verify(home: Path, image: Path, *words: str) -> subprocess.CompletedProcess:
    return cli("verify", "--home", str(home), "--image", str(image), *words)


def recorded(home: Path) -> tuple[str, int]:
    from fr_pbd.store import Store

    view = Store.open(home).read()
    return view.model_id, view.dim


@pytest.fixture(scope="module")
def test_model_home(world, tmp_path_factory, faces_dir) -> Path:
    """A home whose board runs the test model: the fallback set and Obama enrolled through the CLI."""
    home = make_home(tmp_path_factory.mktemp("tm") / "home", BOARD)
    p = fallback_set(home)
    assert p.returncode == 0, p.stderr
    p = enroll(home, faces_dir)
    assert p.returncode == 0, p.stderr
    return home


# --------------------------------------------------------------------------------------
# the model of record, read without loading a model
# --------------------------------------------------------------------------------------
def test_model_of_record_follows_the_board(world):
    from fr_pbd import models
    from fr_pbd.pipeline import model_of_record

    default = model_of_record()
    assert (default.model_id, default.dim, default.score_model) == ("dlib-resnet-v1", 128, "cosine")
    assert default.threshold == models.threshold("dlib-resnet-v1")
    mine = model_of_record(BOARD)
    assert (mine.model_id, mine.dim, mine.score_model, mine.threshold) == (MODEL_ID, DIM, "cosine", THRESHOLD)


def test_registration_cannot_replace_a_known_model(world):
    from fr_pbd.errors import ModelError
    from fr_pbd.pipeline import register_embedder, unregister_embedder

    class Impostor(Projected64):
        model_id = "dlib-resnet-v1"

    with pytest.raises(ModelError, match="already known"):
        register_embedder(Impostor, manifest_entry(b"x"))
    with pytest.raises(ModelError, match="never replaced"):
        register_embedder(Projected64, manifest_entry(b"x"))  # the test model is already registered
    with pytest.raises(ModelError, match="cannot be removed"):
        unregister_embedder("dlib-resnet-v1")


# --------------------------------------------------------------------------------------
# the product on the second model: fallback set, keys init, enrol, verify
# --------------------------------------------------------------------------------------
def test_fallback_set_enrol_and_verify_run_on_the_boards_model(test_model_home, faces_dir):
    assert recorded(test_model_home) == (MODEL_ID, DIM)
    yes = verify(test_model_home, faces_dir / "obama3.jpg")
    assert (yes.returncode, yes.stdout.strip()) == (0, "yes"), yes.stderr
    for other in ("biden2.jpg", "astronaut.png"):
        no = verify(test_model_home, faces_dir / other)
        assert (no.returncode, no.stdout.strip()) == (1, "no"), no.stderr
    claimed = verify(test_model_home, faces_dir / "obama4.jpg", "--user", "obama")
    assert (claimed.returncode, claimed.stdout.strip()) == (0, "yes"), claimed.stderr


def test_keys_init_creates_the_store_for_the_boards_model(world, tmp_path):
    home = make_home(tmp_path / "home", BOARD)
    p = cli("keys", "init", "--home", str(home), "--provider", "file")
    assert p.returncode == 0, p.stderr
    assert recorded(home) == (MODEL_ID, DIM)
    plain = make_home(tmp_path / "plain", None)  # the default board: dlib's 128-d model, as before
    p = cli("keys", "init", "--home", str(plain), "--provider", "file")
    assert p.returncode == 0, p.stderr
    assert recorded(plain) == ("dlib-resnet-v1", 128)


def test_fallback_set_under_an_sface_board_records_sface(world, tmp_path):
    """The case that was wrong: a board running SFace got a store made for dlib. No model is loaded to
    create the store, so this holds without SFace's file too."""
    home = make_home(tmp_path / "home", "test-sface")
    p = fallback_set(home)
    assert p.returncode == 0, p.stderr
    assert recorded(home) == ("sface-2021dec", 128)


# --------------------------------------------------------------------------------------
# a store of one model under a pipeline of the other: refused, naming both
# --------------------------------------------------------------------------------------
def _names_both(line: str, store: tuple[str, int], pipeline: tuple[str, int]) -> None:
    line = line.rstrip("\n")
    assert "\n" not in line
    assert f"{store[0]} templates ({store[1]}-d)" in line and f"runs {pipeline[0]} ({pipeline[1]}-d)" in line, line


def test_a_store_of_another_model_is_refused_before_any_image_or_count(test_model_home, world, tmp_path, faces_dir):
    from fr_pbd.errors import StoreError
    from fr_pbd.store import Store
    from fr_pbd.verify import Consent, Verifier

    home = tmp_path / "home"
    shutil.copytree(test_model_home, home)
    # The control: under its own model (the home's board) the store verifies.
    assert Verifier(home).verify(faces_dir / "obama3.jpg").accepted
    # The same store under the default board (dlib, 128-d): refused in one line naming both, no image
    # looked at, no attempt counted; enrolment refused before any image; the fallback PIN still works.
    other = Verifier(home, board="default")
    with pytest.raises(StoreError) as err:
        other.verify(faces_dir / "obama3.jpg")
    _names_both(str(err.value), (MODEL_ID, DIM), ("dlib-resnet-v1", 128))
    assert other._pipeline is None  # the embedder was not even built, so no image was looked at
    with pytest.raises(StoreError):
        other.enroll("biden", [faces_dir / "biden.jpg"], Consent("1", "test"), fallback=PIN)
    assert other._pipeline is None
    view = Store.open(home).read()
    assert view.lockout.failures == 0 and view.lockout_of("obama").failures == 0 and view.users == ("obama",)
    assert other.check_fallback(PIN)
    # Through the CLI: exit 2, one line on stderr, no traceback; the daemon does not start.
    p = verify(home, faces_dir / "obama3.jpg", "--board", "default")
    assert p.returncode == 2 and p.stdout == "", p.stdout + p.stderr
    assert len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr
    _names_both(p.stderr, (MODEL_ID, DIM), ("dlib-resnet-v1", 128))
    sock = Path(tempfile.mkdtemp(prefix="fr-pbd-mor-", dir="/tmp")) / "d.sock"
    (tmp_path / "frames").mkdir()
    try:
        s = cli("serve", "--home", str(home), "--socket", str(sock), "--frames", str(tmp_path / "frames"),
                "--board", "default", timeout=120)
    finally:
        shutil.rmtree(sock.parent, ignore_errors=True)
    assert s.returncode == 2 and not sock.exists(), s.stderr
    _names_both(s.stderr.strip().splitlines()[-1], (MODEL_ID, DIM), ("dlib-resnet-v1", 128))


def test_a_dlib_store_is_refused_under_the_test_model(world, tmp_path, faces_dir):
    from fr_pbd.errors import StoreError
    from fr_pbd.verify import Consent, Verifier

    home = make_home(tmp_path / "home", None)
    v = Verifier(home)  # the default board: a dlib store
    v.set_fallback(PIN)
    v.enroll("obama", [faces_dir / "obama.jpg"], Consent("1", "test"), fallback=PIN)
    assert recorded(home) == ("dlib-resnet-v1", 128)
    assert v.verify(faces_dir / "obama3.jpg").accepted  # the control: its own model
    p = verify(home, faces_dir / "obama3.jpg", "--board", BOARD)
    assert p.returncode == 2, p.stdout + p.stderr
    _names_both(p.stderr, ("dlib-resnet-v1", 128), (MODEL_ID, DIM))
    with pytest.raises(StoreError):
        Verifier(home, board=BOARD).precheck()


def test_the_store_itself_refuses_a_template_of_another_model(test_model_home, tmp_path):
    """The second line: the store never adds or compares a template of another model or dimension."""
    from fr_pbd.errors import StoreError
    from fr_pbd.store import Store
    from fr_pbd.template import Template

    home = tmp_path / "home"
    shutil.copytree(test_model_home, home)
    v = np.ones(128, np.float32) / np.sqrt(128)
    store = Store.open(home)
    with store.transaction() as tx:
        with pytest.raises(StoreError):
            tx.matcher().matches(Template(v, "dlib-resnet-v1"), 0.5)
        with pytest.raises(StoreError):
            tx.add_templates("obama", [Template(v, "dlib-resnet-v1")])
        with pytest.raises(StoreError):
            tx.add_templates("obama", [Template(v, MODEL_ID)])  # the right name, the wrong length
    assert store.read().template_count("obama") == 2


# --------------------------------------------------------------------------------------
# the daemon and the audit on the second model
# --------------------------------------------------------------------------------------
def test_daemon_and_audit_run_on_the_boards_model(test_model_home, tmp_path, faces_dir, spoof_dir):
    from tests.conftest import need_tool
    from tests.test_daemon import raw_request, set_frame, wait_for_socket

    need_tool("strace", "strace")
    home = tmp_path / "home"
    shutil.copytree(test_model_home, home)
    (home / "config.toml").write_text(f'board = "{BOARD}"\n[daemon]\nanswer_deadline_ms = 400\n')
    frames = tmp_path / "frames"
    frames.mkdir()
    set_frame(frames, faces_dir / "obama3.jpg")
    run = Path(tempfile.mkdtemp(prefix="fr-pbd-mor-", dir="/tmp"))
    os.chmod(run, 0o711)
    sock, log = run / "d.sock", home / "daemon.log"
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "serve", "--home", str(home), "--socket", str(sock),
                             "--frames", str(frames), "--log", str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_socket(sock, proc)
        assert raw_request(sock, b"VERIFY obama\n") == b"Y"
        set_frame(frames, faces_dir / "biden2.jpg")
        assert raw_request(sock, b"VERIFY obama\n") == b"N"
        set_frame(frames, faces_dir / "obama3.jpg")
        assert raw_request(sock, b"VERIFY\n") == b"Y"
        out = tmp_path / "out"
        a = cli("audit", "--home", str(home), "--socket", str(sock), "--out", str(out), "--frames", str(frames),
                "--genuine", str(faces_dir / "obama3.jpg"), "--impostor", str(faces_dir / "biden2.jpg"),
                "--attack", str(spoof_dir / "spoof_print_F1.jpg"), "--verifications", "1",
                "--timing-rounds", "5", "--log", str(log), timeout=600)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(run, ignore_errors=True)
    assert "board test-projected-64: embedder test-dlib-projected-64" in log.read_text()
    assert recorded(home) == (MODEL_ID, DIM)
    doc = json.loads((out / "audit.json").read_text())
    by_id = {c["id"]: c for c in doc["checks"]}
    assert f"model id in the header: {MODEL_ID}" in by_id["C4.cipher"]["evidence"]["details"]
    assert by_id["DPIA.model-provenance"]["status"] == "PASS"
    assert MODEL_ID in by_id["DPIA.model-provenance"]["evidence"]["values"]
    c5 = by_id["C5.answer"]["evidence"]["values"]
    assert c5["outcomes"]["yes"] >= 1 and c5["outcomes"]["no"] >= 1, c5
    # Nothing the audit could observe fails on a 64-d model: without a second asker (C5.answer) and an
    # evaluation report (DPIA.accuracy, DPIA.bias) those stay inconclusive, so the result is INCOMPLETE.
    assert {k for k, c in by_id.items() if c["status"] == "FAIL"} == set(), a.stdout
    assert a.returncode == 3 and doc["result"] == "INCOMPLETE", a.stdout + a.stderr
