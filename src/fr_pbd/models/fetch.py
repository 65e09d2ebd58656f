"""``fr-pbd models fetch``: the only code in fr-pbd that uses the network.

It downloads a pinned URL from the manifest, hashing while it streams (into
memory: the manifest caps the size), and writes the file into the cache only
when size and sha256 match, with :func:`fr_pbd.fileio.atomic_write`. A failed
download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, TextIO

from fr_pbd.errors import ModelError, ModelHashMismatchError
from fr_pbd.fileio import atomic_write
from fr_pbd.models import ModelSpec, cache_dir, sha256_bytes, spec

_CHUNK = 1 << 16
_TIMEOUT_S = 60


def _progress_bar(stream: TextIO) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        if total <= 0:
            return
        width = 30
        filled = int(width * done / total)
        stream.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done / 1e6:6.1f}/{total / 1e6:.1f} MB")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return show


def fetch(name: str, dest_dir: Path | None = None, progress: TextIO | None = sys.stderr,
          opener: Callable[..., object] = urllib.request.urlopen) -> Path:
    """Download model ``name`` into ``dest_dir`` (default: the cache) and verify it."""
    model: ModelSpec = spec(name)
    if model.obtain != "fetch" or not model.url:
        raise ModelError(f"model {name} is not downloaded but built; run: {model.fix_command}")
    dest_dir = dest_dir or cache_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / model.file
    if target.is_file() and sha256_bytes(target.read_bytes()) == model.sha256:
        return target
    show = _progress_bar(progress) if progress is not None else (lambda done, total: None)
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    done = 0
    try:
        with opener(model.url, timeout=_TIMEOUT_S) as response:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                done += len(chunk)
                if done > model.size:
                    raise ModelHashMismatchError(
                        f"download of {name} is larger than the {model.size} bytes the manifest pins; refused"
                    )
                digest.update(chunk)
                chunks.append(chunk)
                show(done, model.size)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelError(f"could not download {name} from {model.url}: {reason}") from None
    actual = digest.hexdigest()
    if done != model.size or actual != model.sha256:
        raise ModelHashMismatchError(
            f"downloaded {name} does not match the manifest: expected sha256 {model.sha256} "
            f"({model.size} bytes), got {actual} ({done} bytes); nothing was installed"
        )
    data = b"".join(chunks)
    del chunks
    try:
        atomic_write(target, data)
    except OSError as exc:
        raise ModelError(f"could not install {name} into {dest_dir}: {exc.strerror or exc}") from None
    return target
