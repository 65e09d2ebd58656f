"""Frame sources: where one verification attempt's frames come from.

A real camera (:class:`CameraFrames`: opened for one attempt, closed after it, so it is
never on while nobody asks) or a test camera (:class:`FileFrames`: the bytes of one file
at the moment of the attempt, so a test can swap the frame between requests). The daemon
and ``fr-pbd verify --camera`` take their frames through the same interface.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from fr_pbd.capture.image import ImageSource
from fr_pbd.errors import CameraError

__all__ = ["FRAME_FILE", "CameraFrames", "FileFrames", "FrameSource"]

#: The file a frames directory shows the test camera's current frame in.
FRAME_FILE = "current.jpg"


class FrameSource:
    """Gives the frames of one verification attempt."""

    def read(self) -> ImageSource:  # pragma: no cover - interface
        raise NotImplementedError

    @contextlib.contextmanager
    def attempt(self) -> Iterator[Iterator[ImageSource]]:
        """The frames of one attempt (a still source: one frame), released at the end."""
        yield iter((self.read(),))

    def describe(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError


class FileFrames(FrameSource):
    """Test camera: the bytes of ``DIR/current.jpg`` (or of a given file) at the moment of the request."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        self.path = p / FRAME_FILE if p.is_dir() else p
        if not self.path.parent.is_dir():
            raise CameraError(f"frames directory {self.path.parent} does not exist")

    def read(self) -> ImageSource:
        try:
            return self.path.read_bytes()  # read once: a swap mid-decode cannot mix two frames
        except OSError as exc:
            raise CameraError(f"no frame at {self.path}: {exc.strerror or exc}") from None

    def describe(self) -> str:
        return f"frames file {self.path}"


class CameraFrames(FrameSource):
    """A real camera, opened for one frame per verification and closed at once."""

    def __init__(self, source: str) -> None:
        self.source = source

    def read(self) -> ImageSource:
        from fr_pbd.capture.camera import CameraSource

        with CameraSource(self.source) as cam:
            return cam.read()

    @contextlib.contextmanager
    def attempt(self) -> Iterator[Iterator[ImageSource]]:
        """The camera, opened for one attempt: frames as the verifier asks for them, then closed."""
        from fr_pbd.capture.camera import CameraSource

        with CameraSource(self.source) as cam:
            yield cam.frames()

    def describe(self) -> str:
        return f"camera {self.source}"
