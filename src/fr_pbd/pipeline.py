"""The one place fr-pbd's capture pipeline is assembled: :func:`build_pipeline`.

Every caller gets its detector, embedder and liveness models from here: the
:class:`~fr_pbd.verify.Verifier` (and through it ``fr-pbd verify``, ``enroll``, the
daemon and the public API), ``fr-pbd bench``, ``fr-pbd eval`` and ``fr-pbd compare``.
So a board (:mod:`fr_pbd.boards`: execution providers, threads, detector input size,
fp32 or int8 embedder) reaches all of them the same way, and what is measured is what
runs.

A board changes how the models run, never what is decided: the threshold stays the
manifest's (:func:`fr_pbd.models.threshold`), and liveness stays on unless a caller
switches it off explicitly (research and tests only).

The board does choose the embedder (``[embedder] model``), and with it the *model of record*
(:func:`model_of_record`): the model id and dimension a store made under this pipeline records,
and the score model and threshold that decide for it. It is read from the embedder's class and
the manifest without loading any model, so ``fr-pbd fallback set`` and ``fr-pbd keys init``
create the store for the model that will verify against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from fr_pbd import boards as _boards
from fr_pbd.errors import ModelError

if TYPE_CHECKING:
    from fr_pbd.capture.extractor import TemplateExtractor
    from fr_pbd.capture.liveness import LivenessDetector

DEFAULT_BOARD = "default"
DEFAULT_EMBEDDER = "dlib-resnet-v1"
CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class RunSettings:
    """What a board (or the defaults) turns into: hashable, so equal settings share sessions."""

    board: str
    threads: int | None  # None: one per core
    providers: tuple[str, ...]
    detector_input: tuple[int, int]
    embedder: str
    embedder_variant: str
    notes: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"board": self.board, "threads": self.threads, "providers": list(self.providers),
                "detector_input": list(self.detector_input), "embedder": self.embedder,
                "embedder_variant": self.embedder_variant, "notes": list(self.notes)}


@dataclass(frozen=True)
class ModelOfRecord:
    """What a store made under one pipeline records (``model_id``, ``dim``) and what decides for it.

    ``score_model`` (``"cosine"`` or a score-model entry) and ``threshold`` are the manifest's
    for ``model_id`` (:mod:`fr_pbd.match.score_model`): a store records only the embedder, and
    the rest follows from it.
    """

    model_id: str
    dim: int
    score_model: str
    threshold: float


@dataclass(frozen=True)
class Pipeline:
    """Phase (a) ready to run: the template extractor and the liveness check, built once."""

    extractor: "TemplateExtractor"
    liveness: "LivenessDetector | None"
    settings: RunSettings

    @property
    def model_id(self) -> str:
        return self.extractor.model_id

    @property
    def embedder_graph(self) -> str:
        """``int8`` or ``fp32``, read from the loaded embedder session's own metadata (not from the settings)."""
        session = getattr(self.extractor.embedder, "_session", None)
        meta = session.get_modelmeta().custom_metadata_map if session is not None else {}
        return "int8" if "fr_pbd.quantisation" in meta else "fp32"

    def describe(self) -> str:
        """One line for a log or ``doctor``: what runs, never what it saw."""
        s = self.settings
        det = self.extractor.detector
        sizes = ", ".join(f"{w}x{h}" for w, h in getattr(det, "input_sizes", ()))
        return (f"board {s.board}: embedder {self.model_id} {self.embedder_graph}, detector graphs {sizes or '?'}, "
                f"liveness {'on' if self.liveness is not None else 'OFF'}, threads {s.threads or 'one per core'}, "
                f"providers {', '.join(s.providers)}")


def run_settings(board: "str | _boards.Board | None" = None, embedder: str | None = None) -> RunSettings:
    """The settings for ``board`` (a name, a path to a board file, a :class:`~fr_pbd.boards.Board`, or None).

    A provider the board asks for but this onnxruntime build lacks is left out and
    noted (a Jetson board loads on x86 and runs on the CPU); it is not an error.
    """
    from fr_pbd.capture import yunet
    from fr_pbd.runtime import available_providers

    if board is None or board == DEFAULT_BOARD:
        return RunSettings(DEFAULT_BOARD, None, (CPU,), yunet.INPUT_SIZE, embedder or DEFAULT_EMBEDDER, "fp32")
    b = board if isinstance(board, _boards.Board) else _boards.load_board(board)
    chosen, missing = available_providers(b.providers)
    notes = [f"{p} is not in this onnxruntime build: not used" for p in missing]
    if missing:
        notes.append(f"running on {', '.join(chosen)} (board asked for {', '.join(b.providers)})")
    model = embedder or b.embedder_model
    variant = b.embedder_variant if model == b.embedder_model else "fp32"
    return RunSettings(b.board, b.threads or None, tuple(chosen), b.detector_input, model, variant, tuple(notes))


def model_of_record(board: "str | _boards.Board | RunSettings | None" = None,
                    embedder: str | None = None) -> ModelOfRecord:
    """The model of record of the pipeline ``board`` (and ``embedder``) would build; loads no model.

    The dimension is the embedder class's ``embedding_dim``; the score model and its threshold
    are the manifest's. An embedder fr-pbd does not know raises ModelError.
    """
    from fr_pbd.capture import extractor as _ex
    from fr_pbd.match import score_model

    settings = board if isinstance(board, RunSettings) else run_settings(board, embedder)
    cls = _ex.EMBEDDERS.get(settings.embedder)
    if cls is None:
        raise ModelError(f"{settings.embedder!r} is not an embedder fr-pbd can use; "
                         f"known: {', '.join(sorted(_ex.EMBEDDERS))}")
    return ModelOfRecord(settings.embedder, int(cls.embedding_dim), score_model.name_in_force(settings.embedder),
                         score_model.threshold(settings.embedder))


def register_embedder(embedder_class: type, manifest_entry: str) -> None:
    """Make an embedder of the caller's own usable in this process: the registry and the manifest.

    ``manifest_entry`` is TOML in the manifest's own format (``schema = 1`` and one
    ``[models.NAME]`` table, role ``embedder``, the file's sha256 and size, a
    ``default_threshold``), ``NAME`` being ``embedder_class.model_id``; the file is then found
    and hash-checked like every model (``$FR_PBD_MODELS``, then the cache). It is how a test
    runs the whole product on a second model (tests/test_model_of_record.py). Only code in the
    process can call it: no file, option or environment variable adds a model to an installed
    fr-pbd, and no packaged embedder or manifest entry can be replaced (ModelError).
    """
    from fr_pbd import models
    from fr_pbd.capture import extractor as _ex

    name = getattr(embedder_class, "model_id", None)
    dim = getattr(embedder_class, "embedding_dim", None)
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ModelError(f"embedder {name!r}: embedding_dim must be a positive int")
    if name in _ex.EMBEDDERS:
        raise ModelError(f"embedder {name!r} is already known; a known embedder is never replaced")
    specs = models.parse_manifest(manifest_entry)
    if list(specs) != [name] or specs[name].role != "embedder":
        raise ModelError(f"the manifest entry must be the one embedder entry [models.{name}]")
    models.add_to_manifest(specs)
    _ex.EMBEDDERS[name] = embedder_class


def unregister_embedder(model_id: str) -> None:
    """Undo :func:`register_embedder` for ``model_id`` (a packaged embedder cannot be removed)."""
    from fr_pbd import models
    from fr_pbd.capture import extractor as _ex

    models.remove_from_manifest([model_id])
    _ex.EMBEDDERS.pop(model_id, None)


def build_pipeline(board: "str | _boards.Board | RunSettings | None" = None, *, liveness: bool = True,
                   embedder: str | None = None) -> Pipeline:
    """Detector, embedder and (by default) the liveness models, from verified model files.

    Sessions are created once per process for equal settings and shared by every
    caller. ``embedder`` names another manifest embedder (e.g. ``sface-2021dec``);
    an optional model whose file is absent raises ModelNotFoundError (one line,
    naming the command that fetches it) before any session is created.
    """
    settings = board if isinstance(board, RunSettings) else run_settings(board, embedder)
    return _build(settings, liveness)


def _build(settings: RunSettings, liveness: bool) -> Pipeline:
    from fr_pbd.runtime import one_blas_thread

    one_blas_thread()  # the process's BLAS: one thread (why: fr_pbd.runtime.one_blas_thread)
    return Pipeline(_extractor(settings), _liveness(settings) if liveness else None, settings)


@lru_cache(maxsize=8)
def _extractor(settings: RunSettings) -> "TemplateExtractor":
    from fr_pbd import models
    from fr_pbd.capture import extractor as _ex
    from fr_pbd.capture.detect import create_detector
    from fr_pbd.runtime import LANES, cores, create_session, lane_pool, lane_threads

    if settings.embedder not in _ex.EMBEDDERS:
        raise ModelError(f"{settings.embedder!r} is not an embedder fr-pbd can use; "
                         f"known: {', '.join(sorted(_ex.EMBEDDERS))}")
    file_model = settings.embedder + ("-int8" if settings.embedder_variant == "int8" else "")
    embedder_model = models.resolve(file_model)  # hash-checked before any session exists
    detector = create_detector(threads=settings.threads, score_threshold=_ex.DETECTION_THRESHOLD,
                               max_input=settings.detector_input, providers=settings.providers)
    # No first pass (yunet policy rule 4): its box is up to 24 px off at 320x240 and turned two
    # genuine bench frames into liveness refusals (docs/performance.md).
    # The embedder runs in a lane (chip and mirror side by side, liveness beside them):
    # fr_pbd.runtime's lanes, measured in docs/performance.md.
    lanes = lane_pool() if cores(settings.threads) >= LANES else None
    session = create_session(embedder_model, threads=lane_threads(settings.threads) if lanes else settings.threads,
                             providers=settings.providers)
    return _ex.TemplateExtractor(detector, _ex.EMBEDDERS[settings.embedder](session), lanes=lanes)


@lru_cache(maxsize=8)
def _liveness(settings: RunSettings) -> "LivenessDetector":
    from fr_pbd import models
    from fr_pbd.capture.liveness import MODEL_NAMES, LivenessDetector
    from fr_pbd.runtime import create_opencv_net

    # On OpenCV's DNN module, not onnxruntime: 2.3-2.6x faster for these two small
    # graphs, same logits to 1e-6 (fr_pbd.runtime.OpenCvNet, docs/performance.md).
    # A board's execution providers do not apply to them.
    return LivenessDetector({name: create_opencv_net(models.resolve(name)) for name in MODEL_NAMES})
