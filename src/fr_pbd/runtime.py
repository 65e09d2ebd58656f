"""onnxruntime sessions, created once from verified model bytes.

Shared by both phases' model wrappers; imports neither phase.

The defaults are the ones measured best for one-frame latency on a 2-core x86
machine (``fr-pbd bench --sweep-sessions``; figures in hardware/results/):

* all graph optimisations: without them YuNet is 2.5x and the int8 embedder 6x slower
  (its QDQ pairs are fused into integer kernels only at this level);
* intra-op threads = the cores (2 threads: embedder 3.6 vs 6.0 ms);
* worker threads do **not** spin. Alone, a spinning pool is 15-20 % faster per run; but
  a verification runs six sessions in turn (detector, embedder, two liveness models) and
  each session's pool keeps spinning after its run, taking the cores from the next one:
  end to end p50 40.4 ms with spinning, 17.9 ms without (same machine, same frames);
* arena, memory pattern, sequential vs parallel execution: no measurable difference; the
  arena and the pattern stay on (inputs have a fixed shape per session).

Boards (``fr_pbd.boards``) override threads and execution providers.

Lanes (docs/performance.md). After detection, a verification has three
independent jobs: the embedder on the chip, the embedder on its mirror image, and the two
liveness models. Each is too small for two intra-op threads to pay (per-operator
wake-ups and barriers, no spinning), so they run side by side instead: :data:`LANES`
parallel lanes (the caller's thread and :func:`lane_pool`), each session in a lane with
``cores // LANES`` intra-op threads (1 on a 2-core machine), so the cores are never
oversubscribed by barriers. The detector runs alone and keeps every core.

No telemetry. onnxruntime's official builds (1.32, the one installed here; Linux wheels too) run
Microsoft's 1DS telemetry: the first session of a process writes a random device id that every
later process of the same user reuses (``~/.cache/Microsoft/DeveloperTools/.onnxruntime/deviceid``)
and queues events for upload in an SQLite database beside it (``onnxruntime.db`` and its
``-wal``). A stable per-device identifier written by every process that loads a face model has
no place on a device that keeps to itself. ``onnxruntime.disable_telemetry_events()`` does not
stop it (the files are written all the same); ``ORT_DISABLE_TELEMETRY=1`` does, but onnxruntime
reads it once, when it is loaded, and :mod:`fr_pbd.capture.yunet` loads it before this module.
So ``fr_pbd/__init__.py`` sets it, before any fr_pbd module can load onnxruntime. A program that
loads onnxruntime before it imports fr_pbd must set the variable itself.
``tests/test_telemetry.py``: fallback set, enroll and verify in a fresh HOME leave none of these
files, beside the same commands with onnxruntime loaded first, which write them.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, NamedTuple, Sequence

import cv2
import numpy as np
import onnxruntime as ort

from fr_pbd.models import VerifiedModel

DEFAULT_PROVIDERS: tuple[str, ...] = ("CPUExecutionProvider",)

# Parallel lanes of one verification's post-detection work (module docstring).
LANES = 2

# Execution providers a profile may name, in onnxruntime's spelling. Anything else
# is a typo or a provider fr-pbd has never been checked with.
KNOWN_PROVIDERS: tuple[str, ...] = (
    "CPUExecutionProvider",
    "XnnpackExecutionProvider",
    "CUDAExecutionProvider",
    "TensorrtExecutionProvider",
    "ACLExecutionProvider",
    "ArmNNExecutionProvider",
)

GraphOpt = Literal["disable", "basic", "extended", "all"]
_GRAPH_OPT = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class SessionTuning:
    """The session knobs ``fr-pbd bench`` measured (hashable, so extractors can be cached per tuning)."""

    threads: int | None = None  # None: every core
    graph_optimization: GraphOpt = "all"
    cpu_mem_arena: bool = True
    mem_pattern: bool = True
    parallel: bool = False  # ORT_PARALLEL runs independent branches at once; no gain on these graphs
    spinning: bool = False  # see the module docstring: spinning pools of one session starve the next


DEFAULT_TUNING = SessionTuning()


def session_options(threads: int | None = None, tuning: SessionTuning | None = None) -> ort.SessionOptions:
    """Options tuned for latency on small boards; ``threads`` overrides ``tuning.threads``."""
    t = tuning or DEFAULT_TUNING
    n = threads if threads else (t.threads or os.cpu_count() or 1)
    so = ort.SessionOptions()
    so.graph_optimization_level = _GRAPH_OPT[t.graph_optimization]
    so.execution_mode = ort.ExecutionMode.ORT_PARALLEL if t.parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = n
    so.inter_op_num_threads = 1
    so.enable_cpu_mem_arena = t.cpu_mem_arena
    so.enable_mem_pattern = t.mem_pattern
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if t.spinning else "0")
    so.log_severity_level = 3  # warnings and up only; onnxruntime never sees tensors in logs
    return so


def one_blas_thread() -> None:
    """Numpy's BLAS (OpenBLAS) down to one thread for the whole process; :func:`fr_pbd.pipeline.build_pipeline` calls it.

    Why: every matrix product of a verification is tiny (the store's 128x128 rotation
    check, 26 templates x 128, one probe, the alignment's 2x2 SVD), far below what a
    second BLAS thread can pay for, and they run while the lanes keep every core busy
    with onnxruntime. A multi-threaded BLAS call must then wait for its worker thread to
    get a core, and the worker spins after the call, taking the core back from
    onnxruntime. On the 2-core VM (docs/results/bench-blas-threads-issue16.json, the
    same ``fr-pbd bench`` in alternate processes) a verification took 26.7-27.5 ms p50
    with OpenBLAS's two threads and 19.9-21.1 ms with one; the alignment's stage went
    from 3.4 to 1.0 ms and the lanes' from 14.4-15.0 to 9.1-9.5 ms
    (docs/performance.md). The matcher's large galleries split their work
    over threads themselves (:mod:`fr_pbd.match.gallery`).
    threadpoolctl does this for every BLAS numpy may be built with (OpenBLAS, MKL,
    BLIS, Accelerate), on x86 and aarch64 alike.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def cores(threads: int | None = None) -> int:
    """The cores a pipeline uses: ``threads``, else every core."""
    return threads if threads else (os.cpu_count() or 1)


def lane_threads(threads: int | None = None) -> int:
    """Intra-op threads of a session that runs in one of :data:`LANES` parallel lanes."""
    return max(1, cores(threads) // LANES)


@lru_cache(maxsize=1)
def lane_pool() -> ThreadPoolExecutor:
    """The worker threads that run the lanes beside the caller's (created once per process, on first use).

    ``LANES`` workers: a verification submits at most two jobs (the mirror chip and the
    liveness models) and does the third itself; jobs never submit jobs, so a busy pool
    only queues, never deadlocks. onnxruntime releases the GIL while a session runs.
    """
    return ThreadPoolExecutor(max_workers=LANES, thread_name_prefix="fr-pbd-lane")


def available_providers(wanted: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(providers to use, in order; those asked for but not in this onnxruntime build).

    CPU is always last, so an operator a provider cannot run still has a home.
    """
    asked = list(wanted or DEFAULT_PROVIDERS)
    have = set(ort.get_available_providers())
    chosen = [p for p in asked if p in have]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen, [p for p in asked if p not in have]


def _provider_options(providers: list[str], threads: int) -> list[dict[str, str]]:
    # XNNPACK keeps its own thread pool; give it the threads (onnxruntime's guidance).
    return [{"intra_op_num_threads": str(threads)} if p == "XnnpackExecutionProvider" else {} for p in providers]


def create_session(model: VerifiedModel, threads: int | None = None,
                   providers: Sequence[str] | None = None,
                   tuning: SessionTuning | None = None) -> ort.InferenceSession:
    """A session from the bytes that were hashed, never from the path (no re-read race)."""
    chosen, _ = available_providers(providers)
    so = session_options(threads, tuning)
    return ort.InferenceSession(model.data, sess_options=so, providers=chosen,
                                provider_options=_provider_options(chosen, so.intra_op_num_threads))


class IoName(NamedTuple):
    """An input or output of :class:`OpenCvNet`, as onnxruntime's ``NodeArg`` names it."""

    name: str


class OpenCvNet:
    """An ONNX graph on OpenCV's DNN module, made from verified bytes; onnxruntime's ``run`` signature.

    Why a second runtime: the two MiniFASNets (80x80 input, a hundred small depthwise
    and pointwise convolutions each) are dispatch-bound on onnxruntime's CPU provider:
    3.5 ms per run on one thread here, against 1.3-1.5 ms on OpenCV's DNN module with
    logits equal to 1.4e-6 (``benchmarks/bench_models_raw.py``,
    docs/performance.md). The larger graphs (YuNet, the ResNet) stay on onnxruntime,
    which is 1.7-2x faster for them.

    OpenCV's ``Net`` keeps its input and output blobs inside the object, so one net
    must not run in two threads at once: a lock serialises runs (two verifications at
    the same time take turns for about 1.5 ms). OpenCV's own thread pool is
    process-wide (``cv2.setNumThreads``); fr-pbd leaves it as OpenCV sets it.
    """

    def __init__(self, model: VerifiedModel) -> None:
        from fr_pbd.errors import ModelError

        try:
            self._net = cv2.dnn.readNetFromONNX(np.frombuffer(model.data, dtype=np.uint8))
            self._inputs = tuple(_onnx_input_names(model.data))
        except Exception as e:  # noqa: BLE001 - cv2.error, or onnxruntime's own exception types
            lines = str(e).strip().splitlines() or [type(e).__name__]
            raise ModelError(f"OpenCV cannot load {model.spec.name}: {lines[-1][:200]}") from None
        self._outputs = tuple(self._net.getUnconnectedOutLayersNames())
        self._lock = threading.Lock()

    def get_inputs(self) -> list[IoName]:
        return [IoName(n) for n in self._inputs]

    def get_outputs(self) -> list[IoName]:
        return [IoName(n) for n in self._outputs]

    def run(self, output_names: Sequence[str] | None, input_feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs named (all if None) for the inputs fed, as ``InferenceSession.run`` returns them."""
        names = list(output_names) if output_names else list(self._outputs)
        with self._lock:
            for name, value in input_feed.items():
                self._net.setInput(np.ascontiguousarray(value, dtype=np.float32), name)
            return [np.array(o, copy=True) for o in self._net.forward(names)]


def _onnx_input_names(data: bytes) -> list[str]:
    """The graph's input names, read by onnxruntime from the same bytes (OpenCV does not list them)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])
    return [i.name for i in sess.get_inputs()]


def create_opencv_net(model: VerifiedModel) -> OpenCvNet:
    """An :class:`OpenCvNet` from the bytes that were hashed, never from the path."""
    return OpenCvNet(model)


def session_from_file(path: "str | os.PathLike[str]", session_options: ort.SessionOptions | None = None,
                      providers: Sequence[str] | None = None, fix: str | None = None) -> ort.InferenceSession:
    """A session from an unverified file, for tools and tests that load a freshly built model.

    Missing file or a file onnxruntime rejects: one-line ModelNotFoundError / ModelError.
    """
    from pathlib import Path

    from fr_pbd.errors import ModelError, ModelNotFoundError

    p = Path(path)
    if not p.is_file():
        raise ModelNotFoundError(f"model file not found: {p}" + (f"; run: {fix}" if fix else ""))
    try:
        return ort.InferenceSession(str(p), sess_options=session_options,
                                    providers=list(providers) if providers else ["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ModelError(f"cannot load {p.name} with onnxruntime: {str(e).splitlines()[0]}") from None
