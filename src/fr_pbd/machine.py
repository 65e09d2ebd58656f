"""What a measurement was made on: the one description every result file carries.

A latency or throughput figure means something only next to the machine it came
from (CPU model and the instruction-set flags that decide int8 and fp32 speed, cores,
memory, BLAS, library versions, thread variables). ``fr-pbd bench``, ``fr-pbd eval``
and the benchmarks all record :func:`machine_info`; nothing here identifies a person
(the host name is kept only as a short hash).
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import socket
from pathlib import Path
from typing import Any

__all__ = ["cpu_flags", "machine_info", "machine_slug", "MACHINE_KEYS"]

#: The instruction-set features that decide int8 and fp32 speed (x86 and ARM names).
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8",
               "asimd", "asimddp", "i8mm", "fphp")
#: Keys every machine description has (a result file is refused without them).
MACHINE_KEYS = ("cpu_model", "cpu_flags", "cores", "memory_bytes", "os", "arch", "python", "numpy_blas",
                "onnxruntime", "onnxruntime_providers_available")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """Which of :data:`SPEED_FLAGS` this CPU has."""
    m = re.search(r"^(flags|Features)\s*:\s*(.*)$", _read("/proc/cpuinfo"), re.M)
    have = set(m.group(2).split()) if m else set()
    return [f for f in SPEED_FLAGS if f in have]


def _memory_bytes() -> int | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            try:
                return int(line.split()[1]) * 1024
            except (IndexError, ValueError):
                return None
    return None


def _blas() -> dict[str, Any]:
    import numpy as np

    try:
        deps = np.show_config(mode="dicts").get("Build Dependencies", {})  # numpy >= 1.25
        return {k: {"name": v.get("name"), "version": v.get("version"),
                    "config": v.get("openblas configuration")} for k, v in deps.items() if k in ("blas", "lapack")}
    except Exception:  # noqa: BLE001 - older numpy: no dict mode
        return {"blas": {"name": "unknown"}}


def machine_info() -> dict[str, Any]:
    """The machine, its CPU flags, memory, BLAS and library versions, and the thread variables in force."""
    import cv2
    import numpy as np
    import onnxruntime as ort

    mem = _memory_bytes()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "hostname_hash": hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12],
        "cpu_model": _cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "memory_bytes": mem,
        "memory_gib": round(mem / 2**30, 1) if mem else None,
        "os": platform.platform(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "numpy_blas": _blas(),
        "opencv": cv2.__version__,
        "onnxruntime": ort.__version__,
        "onnxruntime_providers_available": ort.get_available_providers(),
        "thread_env": {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                       if k in os.environ},
    }


def machine_slug(info: dict[str, Any]) -> str:
    """A file-name-safe machine label: arch, cores and CPU model (e.g. x86_64-2core-amd-epyc)."""
    cpu = re.sub(r"[^a-z0-9]+", "-", str(info["cpu_model"]).lower()).strip("-")[:40] or "cpu"
    return f"{info['arch']}-{info['cores']}core-{cpu}"
