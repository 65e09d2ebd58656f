"""onnxruntime sessions, created once from verified model bytes.

Shared by both phases' model wrappers; imports neither phase.
"""

from __future__ import annotations

import os
from typing import Sequence

import onnxruntime as ort

from fr_pbd.models import VerifiedModel

DEFAULT_PROVIDERS: tuple[str, ...] = ("CPUExecutionProvider",)


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Options tuned for latency on small boards: all graph optimisations, a fixed thread count."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads if threads else (os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # warnings and up only; onnxruntime never sees tensors in logs
    return so


def create_session(model: VerifiedModel, threads: int | None = None,
                   providers: Sequence[str] | None = None) -> ort.InferenceSession:
    """A session from the bytes that were hashed, never from the path (no re-read race)."""
    wanted = list(providers or DEFAULT_PROVIDERS)
    available = set(ort.get_available_providers())
    chosen = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
    return ort.InferenceSession(model.data, sess_options=session_options(threads), providers=chosen)
