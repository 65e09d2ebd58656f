"""Boards: how fr-pbd should run on one kind of hardware (``fr_pbd/_data/boards/NAME.toml``,
linked from the repository's ``hardware/boards``).

A board file says which onnxruntime execution providers to try and in what order, how
many threads, the detector's maximum input size (the YuNet variant policy in
``fr_pbd.capture.yunet``) and which embedder variant (fp32 or int8): what
:func:`fr_pbd.pipeline.run_settings` reads, and nothing else. It changes speed only: no
board can change what fr-pbd is used for (that is the deployment profile in
``fr_pbd.config``) or its decision threshold.

The camera and the key custody are not board settings: the camera is what ``--camera``
names (the shipped board files show their board's GStreamer pipeline in a comment), and the
key provider is chosen once per home by ``fr-pbd keys init --provider``. A ``[camera]`` or
``[keys]`` section is refused by name, so that a file written for an older fr-pbd does not
look as if its camera settings were in force.

Validation is strict, as for the config: an unknown key, a provider name that is not
on :data:`fr_pbd.runtime.KNOWN_PROVIDERS`, a size that is not a size, is a
:class:`~fr_pbd.errors.ConfigError` with one line naming the file and the field. A
provider that is known but missing from this onnxruntime build is *not* an error:
the pipeline falls back to CPU and records it (a Jetson board must load on x86).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fr_pbd.errors import ConfigError
from fr_pbd.runtime import KNOWN_PROVIDERS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_BOARDS = "FR_PBD_BOARDS"
SCHEMA = 1
BOARDS = ("rpi4", "rpi5", "jetson-nano", "jetson-orin-nano", "x86-generic")
EMBEDDER_VARIANTS = ("fp32", "int8")

_TOP = {"schema", "board", "description", "runtime", "detector", "embedder"}
#: Sections that older board files had and that no code read: each refused with where its setting went.
_GONE = {
    "camera": "the camera is not a board setting: give it with --camera (device index, /dev/videoN, "
              "GStreamer pipeline or video file)",
    "keys": "the key custody is not a board setting: choose it with fr-pbd keys init --provider",
}
_SECTIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "runtime": {"providers": list, "threads": int},
    "detector": {"input_size": list},
    "embedder": {"model": str, "variant": str},
}
_REQUIRED = {
    "runtime": ("providers", "threads"),
    "detector": ("input_size",),
    "embedder": ("model", "variant"),
}


@dataclass(frozen=True)
class Board:
    """One validated board: runtime, detector and embedder settings for one kind of hardware."""

    board: str
    description: str
    providers: tuple[str, ...]
    threads: int  # 0: one per core
    detector_input: tuple[int, int]
    embedder_model: str
    embedder_variant: str
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "board": self.board, "providers": list(self.providers), "threads": self.threads,
            "detector_input": list(self.detector_input), "embedder_model": self.embedder_model,
            "embedder_variant": self.embedder_variant,
        }


def boards_dir() -> Path:
    """``$FR_PBD_BOARDS`` (a vendor's own boards), else the boards shipped in the package."""
    env = os.environ.get(ENV_BOARDS)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "_data" / "boards"


def available() -> list[str]:
    d = boards_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def _fail(where: str, msg: str) -> ConfigError:
    return ConfigError(f"board file {where}: {msg}")


def _size(where: str, field: str, value: Any, lo: int, hi: int) -> tuple[int, int]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise _fail(where, f"{field} must be [width, height] in pixels")
    w, h = value
    if not (lo <= w <= hi and lo <= h <= hi):
        raise _fail(where, f"{field} {w}x{h} must lie within {lo}..{hi} pixels")
    return int(w), int(h)


def parse_board(text: str, where: str = "<text>", expect_board: str | None = None) -> Board:
    """Validate a board file's TOML text; ConfigError (one line) on the first problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(where, f"not valid TOML ({exc})") from None
    for name, why in _GONE.items():
        if name in doc:
            raise _fail(where, f"[{name}] is not read: {why}")
    unknown = sorted(set(doc) - _TOP)
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(unknown)}")
    if doc.get("schema") != SCHEMA:
        raise _fail(where, f"schema must be {SCHEMA}")
    board = doc.get("board")
    if not isinstance(board, str) or not board:
        raise _fail(where, "board must be a name")
    if expect_board is not None and board != expect_board:
        raise _fail(where, f"board {board!r} does not match the file name {expect_board!r}")
    sections: dict[str, dict[str, Any]] = {}
    for name, fields in _SECTIONS.items():
        sec = doc.get(name)
        if not isinstance(sec, dict):
            raise _fail(where, f"[{name}] section is missing")
        bad = sorted(set(sec) - set(fields))
        if bad:
            raise _fail(where, f"unknown key(s) in [{name}]: {', '.join(bad)}")
        for key in _REQUIRED[name]:
            if key not in sec:
                raise _fail(where, f"[{name}] lacks {key}")
        for key, value in sec.items():
            if not isinstance(value, fields[key]) or isinstance(value, bool):
                raise _fail(where, f"[{name}] {key} has the wrong type")
        sections[name] = sec

    rt = sections["runtime"]
    providers = rt["providers"]
    if not providers or not all(isinstance(p, str) for p in providers):
        raise _fail(where, "[runtime] providers must be a non-empty list of names")
    for p in providers:
        if p not in KNOWN_PROVIDERS:
            raise _fail(where, f"unknown execution provider {p!r}; known: {', '.join(KNOWN_PROVIDERS)}")
    if len(set(providers)) != len(providers):
        raise _fail(where, "[runtime] providers lists a provider twice")
    if providers[-1] != "CPUExecutionProvider":
        raise _fail(where, "[runtime] providers must end with CPUExecutionProvider (the fallback)")
    if not 0 <= rt["threads"] <= 64:
        raise _fail(where, "[runtime] threads must be 0..64 (0: one per core)")

    det = _size(where, "[detector] input_size", sections["detector"]["input_size"], 16, 640)
    emb = sections["embedder"]
    if emb["variant"] not in EMBEDDER_VARIANTS:
        raise _fail(where, f"[embedder] variant must be one of {', '.join(EMBEDDER_VARIANTS)}")
    if emb["model"] != "dlib-resnet-v1" and emb["variant"] != "fp32":
        raise _fail(where, "[embedder] only dlib-resnet-v1 has an int8 variant")

    desc = doc.get("description", "")
    if not isinstance(desc, str):
        raise _fail(where, "description must be text")
    return Board(
        board=board, description=desc, providers=tuple(providers), threads=rt["threads"],
        detector_input=det, embedder_model=emb["model"], embedder_variant=emb["variant"],
    )


def load_board(name_or_path: str | os.PathLike[str]) -> Board:
    """A board by name (a file in :func:`boards_dir`) or by the path of a board file."""
    raw = str(name_or_path)
    path = Path(raw)
    if not (raw.endswith(".toml") or os.sep in raw):
        path = boards_dir() / f"{raw}.toml"
        if not path.is_file():
            names = ", ".join(available()) or "none found"
            raise ConfigError(f"no board {raw!r} in {boards_dir()}; known: {names}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read board file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"board file {path}: not UTF-8 text") from None
    board = parse_board(text, str(path), expect_board=path.stem)
    return Board(**{**board.__dict__, "path": path})
