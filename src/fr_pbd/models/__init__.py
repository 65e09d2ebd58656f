"""Model resolution and verification.

Where models come from, in order: ``$FR_PBD_MODELS``, then fr-pbd's own cache
(``$XDG_CACHE_HOME/fr-pbd/models``, default ``~/.cache/fr-pbd/models``).
Every file is hashed and compared with the manifest *before* onnxruntime sees
it, and the bytes that were hashed are the bytes handed to onnxruntime (no
check-then-reopen race). Nothing here touches the network: only
``fr-pbd models fetch`` (:mod:`fr_pbd.models.fetch`) downloads.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from fr_pbd import fileio
from fr_pbd.errors import ManifestError, ModelHashMismatchError, ModelNotFoundError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_MODELS = "FR_PBD_MODELS"
_ROLES = {"detector", "embedder", "liveness", "score-model"}
_OBTAIN = {"fetch", "build"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ModelSpec:
    """One manifest entry."""

    name: str
    role: str
    file: str
    sha256: str
    size: int
    licence: str
    obtain: str
    provenance: str
    training_data: str
    input: str
    url: str | None = None
    build_command: str | None = None
    default_threshold: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def fix_command(self) -> str:
        if self.obtain == "build":
            return self.build_command or f"fr-pbd models build {self.name}"
        return f"fr-pbd models fetch {self.name}"


@dataclass(frozen=True)
class VerifiedModel:
    """A model file whose bytes matched the manifest. Hand ``data`` to onnxruntime."""

    spec: ModelSpec
    path: Path
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class ModelStatus:
    spec: ModelSpec
    path: Path | None
    verified: bool
    actual_sha256: str | None


def manifest_path() -> Path:
    """The manifest inside the package (``fr_pbd/_data``; the repository's ``models/manifest.toml`` links to it)."""
    packaged = Path(__file__).resolve().parent.parent / "_data" / "manifest.toml"
    if packaged.is_file():
        return packaged
    raise ManifestError("the model manifest (fr_pbd/_data/manifest.toml) is missing from this installation")


def _parse_entry(name: str, raw: dict[str, Any]) -> ModelSpec:
    required = ("role", "file", "sha256", "size", "licence", "obtain", "provenance", "training_data", "input")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ManifestError(f"manifest entry {name!r} lacks {', '.join(missing)}")
    if raw["role"] not in _ROLES:
        raise ManifestError(f"manifest entry {name!r}: unknown role {raw['role']!r}")
    if raw["obtain"] not in _OBTAIN:
        raise ManifestError(f"manifest entry {name!r}: unknown obtain {raw['obtain']!r}")
    if not isinstance(raw["sha256"], str) or not _SHA256.match(raw["sha256"]):
        raise ManifestError(f"manifest entry {name!r}: sha256 must be 64 lower-case hex digits")
    if not isinstance(raw["size"], int) or raw["size"] <= 0:
        raise ManifestError(f"manifest entry {name!r}: size must be a positive integer")
    if raw["obtain"] == "fetch" and not str(raw.get("url", "")).startswith("https://"):
        raise ManifestError(f"manifest entry {name!r}: a fetchable model needs an https url")
    threshold = raw.get("default_threshold")
    if threshold is not None and not isinstance(threshold, (int, float)):
        raise ManifestError(f"manifest entry {name!r}: default_threshold must be a number")
    known = set(required) | {"url", "build_command", "default_threshold"}
    return ModelSpec(
        name=name,
        role=raw["role"],
        file=raw["file"],
        sha256=raw["sha256"],
        size=raw["size"],
        licence=raw["licence"],
        obtain=raw["obtain"],
        provenance=raw["provenance"],
        training_data=raw["training_data"],
        input=raw["input"],
        url=raw.get("url"),
        build_command=raw.get("build_command"),
        default_threshold=float(threshold) if threshold is not None else None,
        extra={k: v for k, v in raw.items() if k not in known},
    )


def parse_manifest(text: str) -> dict[str, ModelSpec]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"the model manifest is not valid TOML: {exc}") from None
    if doc.get("schema") != 1:
        raise ManifestError("the model manifest has an unsupported schema (expected schema = 1)")
    models = doc.get("models")
    if not isinstance(models, dict) or not models:
        raise ManifestError("the model manifest lists no models")
    return {name: _parse_entry(name, raw) for name, raw in models.items()}


@lru_cache(maxsize=1)
def _packaged() -> dict[str, ModelSpec]:
    return parse_manifest(manifest_path().read_text(encoding="utf-8"))


#: Entries added in this process (:func:`add_to_manifest`): never read from a file or the environment.
_added: dict[str, ModelSpec] = {}


def manifest() -> dict[str, ModelSpec]:
    """All known models, by name: the packaged manifest, plus any entry this process added."""
    packaged = _packaged()
    return {**packaged, **_added} if _added else packaged


def add_to_manifest(entries: dict[str, ModelSpec]) -> None:
    """Add entries (from :func:`parse_manifest`) to this process's manifest; a known name is refused.

    The one way to make a model of one's own known, used through
    :func:`fr_pbd.pipeline.register_embedder`; the files are hash-checked like every model.
    """
    clash = sorted(set(entries) & set(manifest()))
    if clash:
        raise ManifestError(f"the manifest already has {', '.join(clash)}; a known entry is never replaced")
    _added.update(entries)


def remove_from_manifest(names: list[str]) -> None:
    """Take entries added by :func:`add_to_manifest` out again (a packaged entry cannot be removed)."""
    packaged = sorted(set(names) & set(_packaged()))
    if packaged:
        raise ManifestError(f"{', '.join(packaged)} is in the packaged manifest and cannot be removed")
    for name in names:
        _added.pop(name, None)


def spec(name: str) -> ModelSpec:
    models = manifest()
    if name not in models:
        raise ModelNotFoundError(f"unknown model {name!r}; known: {', '.join(sorted(models))}")
    return models[name]


def threshold(name: str) -> float:
    """The manifest's operating threshold for an embedder: the one lookup every decision uses.

    When the embedder's entry names a ``score_model`` other than cosine, the threshold is that
    score model's (a PLDA log-likelihood ratio), so no decision can pair one model's score with
    another's threshold (a cosine compared with it is never accepted: the mistake fails closed).
    """
    sm = spec(name).extra.get("score_model", "cosine")
    if sm != "cosine":
        name = sm
    t = spec(name).default_threshold
    if t is None:
        raise ManifestError(f"the manifest gives no operating threshold for {name}")
    return t


def cache_dir() -> Path:
    """fr-pbd's own model cache (XDG)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fr-pbd" / "models"


def search_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get(ENV_MODELS)
    if env:
        dirs.append(Path(env))
    dirs.append(cache_dir())
    return dirs


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _locate(model: ModelSpec) -> Path | None:
    for d in search_dirs():
        p = d / model.file
        if p.is_file():
            return p
    return None


def resolve(name: str) -> VerifiedModel:
    """Find a model and check its bytes against the manifest.

    The first directory that holds the file decides: a wrong file there is an
    error, not a reason to look further, so a tampered copy is never skipped
    silently.
    """
    model = spec(name)
    path = _locate(model)
    if path is None:
        where = " or ".join(str(d) for d in search_dirs())
        raise ModelNotFoundError(
            f"model {name} ({model.file}) not found in {where}; run: {model.fix_command}"
        )
    data = _read_pinned(model, path)
    if data is None:
        raise ModelHashMismatchError(
            f"model file {path} is {_size(path)} bytes, the manifest says {model.size}: not the file the "
            f"manifest pins (refused unread); remove it and run: {model.fix_command}"
        )
    actual = sha256_bytes(data)
    if actual != model.sha256:
        raise ModelHashMismatchError(
            f"model file {path} does not match the manifest: expected sha256 {model.sha256}, "
            f"got {actual}; remove it and run: {model.fix_command}"
        )
    return VerifiedModel(spec=model, path=path, data=data)


def status(name: str) -> ModelStatus:
    """Presence and verification of one model, without raising."""
    model = spec(name)
    path = _locate(model)
    if path is None:
        return ModelStatus(model, None, False, None)
    data = _read_pinned(model, path)
    if data is None:  # another size: not the pinned file, and not worth hashing
        return ModelStatus(model, path, False, None)
    actual = sha256_bytes(data)
    return ModelStatus(model, path, actual == model.sha256, actual)


def _read_pinned(model: ModelSpec, path: Path) -> bytes | None:
    """The file's bytes if it has the manifest's size (``fstat`` before any read), else None: a file of
    another size is not the pinned one, and a 1 GB file there costs neither its memory nor its reading."""
    data = fileio.read_limited(path, model.size)
    return data if data is not None and len(data) == model.size else None


def _size(path: Path) -> int | str:
    try:
        return path.stat().st_size
    except OSError:
        return "?"
