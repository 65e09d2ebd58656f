"""Run a command that writes a JSON result, and keep the result with its configuration.

    .venv/bin/python benchmarks/record_result.py --out docs/results/NAME.json --result FILE.json \\
        [--drop KEY ...] -- COMMAND ARGS...

The record is what every figure in README.md is generated from (``tools/readme_figures.py``).
It holds the command's JSON result and what is needed to read it and to run it again:

* ``command``: the argv, run from the repository root, and the ``FR_PBD_*`` and thread
  variables of its environment;
* ``date_utc`` (at the start), ``wall_s``, ``git``: the commit and the tracked files that
  differed from it when the command started (``dirty``: path and git blob id of each,
  empty for a clean tree);
* ``config``: embedder precision (``fp32`` / ``int8``), liveness on/off, threads
  (onnxruntime intra-op threads; numpy's BLAS threads), the BLAS library, CPU model and flags;
* ``machine``: fr-pbd's machine record; ``load``: the 1/5/15-minute load averages before and
  after (a 1-minute figure near or above the core count means other processes shared the CPU);
* ``result``: the command's JSON, without the keys named by ``--drop``.

Precision and liveness are read from the result: ``fr-pbd bench`` (``board.embedder``,
``board.liveness``), ``fr-pbd eval lfw`` (``model_id``; it computes templates only: no
liveness), ``fr-pbd eval pad`` (the fp32 PAD models, no embedder), or a ``config`` object the
result carries itself (the side-by-side benchmarks).

Nothing biometric goes in: a result holding a key that names per-item data (scores,
templates, embeddings, descriptors) is refused, and so is one above 256 kB.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RECORD_SCHEMA = "fr-pbd/result-record/1"
BIOMETRIC_KEYS = {"scores", "score", "templates", "template", "embeddings", "embedding", "descriptors",
                  "descriptor", "vectors", "per_image", "per_pair", "per_frame"}
MAX_BYTES = 256 * 1024
ENV_KEYS = ("FR_PBD_MODELS", "FR_PBD_DATA", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def machine_info() -> dict[str, Any]:
    """fr-pbd's machine record (fr_pbd.bench kept it before fr_pbd.machine existed)."""
    try:
        from fr_pbd.machine import machine_info as info
    except ImportError:
        from fr_pbd.bench import machine_info as info
    return info()


def numpy_blas() -> str:
    """The BLAS numpy is built with (the all-comparisons GEMM of eval lfw runs on it)."""
    import numpy as np

    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:  # noqa: BLE001 - numpy < 1.25 has no dict mode
        return "unknown"
    return " ".join(str(blas[k]) for k in ("name", "version") if blas.get(k)) or "unknown"


def git_state(root: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout

    dirty = []
    for line in git("status", "--porcelain", "--untracked-files=no").splitlines():
        path = line[3:].split(" -> ")[-1]
        blob = git("hash-object", path).strip() if (root / path).is_file() else None
        dirty.append({"path": path, "blob": blob})  # a blob id finds the commit that holds this content
    return {"commit": git("rev-parse", "HEAD").strip(), "dirty": dirty}


def biometric_keys(doc: Any, where: str = "") -> list[str]:
    found = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if str(k).lower() in BIOMETRIC_KEYS and not isinstance(v, str):  # a text about scores is fine
                found.append(f"{where}.{k}".lstrip("."))
            found += biometric_keys(v, f"{where}.{k}")
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += biometric_keys(v, f"{where}[{i}]")
    return found


def derive_config(result: dict[str, Any], machine: dict[str, Any]) -> dict[str, Any]:
    """Precision, liveness and threads as the result states them; BLAS and CPU from the machine."""
    cores = machine.get("cores_usable") or machine.get("cores")
    if isinstance(result.get("config"), dict):  # the side-by-side benchmarks say it themselves
        own = result["config"]
        precision, liveness, threads = own["precision"], own["liveness"], own.get("threads") or cores
    elif isinstance(result.get("board") or result.get("profile"), dict):  # fr-pbd bench (profile: before --board)
        p = result.get("board") or result["profile"]
        precision = "int8" if str(p["embedder"]).endswith("-int8") else "fp32"
        liveness, threads = bool(p["liveness"]), p.get("threads") or cores
    elif str(result.get("schema", "")).startswith("fr-pbd/eval-lfw/"):  # fr-pbd eval lfw
        names = [str(result.get("model_id", ""))] + [str(m.get("name", "")) for m in result.get("models") or []]
        precision = "int8" if any(n.endswith("-int8") for n in names) else "fp32"  # eval lfw --board: models
        liveness, threads = False, cores  # templates only; fr_pbd.runtime's default: every core
    elif str(result.get("standard", "")).startswith("ISO/IEC 30107-3"):  # fr-pbd eval pad
        precision, liveness, threads = "fp32", True, cores  # the MiniFASNet models alone; no embedder
    else:
        raise SystemExit("record_result: the result states no precision/liveness (add a 'config' object)")
    return {
        "precision": precision,
        "liveness": liveness,
        "threads": threads,
        "blas": numpy_blas(),
        "blas_threads": machine.get("thread_env", {}).get("OPENBLAS_NUM_THREADS", f"default ({cores}: every core)"),
        "cpu_model": machine.get("cpu_model"),
        "cpu_flags": machine.get("cpu_flags", []),
        "cores": cores,
    }


def drop_keys(doc: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """``--drop a.b`` removes doc['a']['b']."""
    for key in keys:
        *path, last = key.split(".")
        d = doc
        for p in path:
            d = d.get(p, {}) if isinstance(d, dict) else {}
        if isinstance(d, dict):
            d.pop(last, None)
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the record to write (docs/results/NAME.json)")
    ap.add_argument("--result", type=Path, required=True, help="the JSON file the command writes")
    ap.add_argument("--drop", action="append", default=[], help="leave this key (a.b.c) out of the record")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = ap.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("no command after --")
    root = Path(__file__).resolve().parent.parent
    if args.result.exists():
        args.result.unlink()  # the record must hold this run's result, not an older one
    git = git_state(root)
    machine = machine_info()
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    t0 = time.monotonic()
    rc = subprocess.run(cmd, cwd=root).returncode
    wall = time.monotonic() - t0
    load_after = [round(x, 2) for x in os.getloadavg()]
    if rc != 0:
        print(f"record_result: the command exited {rc}; no record written", file=sys.stderr)
        return rc
    result = drop_keys(json.loads(args.result.read_text()), args.drop)
    bad = biometric_keys(result)
    if bad:
        print(f"record_result: the result holds per-item data ({', '.join(bad[:5])}); not recorded", file=sys.stderr)
        return 1
    record = {
        "schema": RECORD_SCHEMA,
        "command": shlex.join(cmd),
        "cwd": "repository root",
        "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
        "date_utc": started,
        "wall_s": round(wall, 1),
        "git": git,
        "config": derive_config(result, machine),
        "machine": machine,
        "load": {"loadavg_before": load_before, "loadavg_after": load_after},
        "dropped_keys": args.drop,
        "result": result,
    }
    text = json.dumps(record, indent=2, allow_nan=False) + "\n"
    if len(text.encode()) > MAX_BYTES:
        print(f"record_result: {len(text.encode())} bytes is too large for a record (drop keys)", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"record_result: wrote {args.out} ({wall:.0f} s; load {load_before[0]} -> {load_after[0]})",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
