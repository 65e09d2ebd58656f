"""Stage timing: how ``fr-pbd bench`` sees inside the real verification without copying it.

The verifier and the template extractor call :func:`stage` around each step. With no
hook (every product use) it costs one ``None`` check; with a hook, the hook receives
the stage's name and its duration in seconds. Only names and durations pass through:
never an image, a template or a score.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

#: ``hook(stage_name, seconds)``; called once per stage that ran, also when it raised.
StageHook = Callable[[str, float], None]


@contextmanager
def stage(hook: StageHook | None, name: str) -> Iterator[None]:
    """Time the block for ``hook`` (if any) under ``name``."""
    if hook is None:
        yield
        return
    t0 = time.perf_counter()
    try:
        yield
    finally:
        hook(name, time.perf_counter() - t0)
