"""The TPM path's cost per store operation: file key vs TPM 2.0 (docs/tpm.md, docs/results/tpm-bench.md).

    FR_PBD_TPM=swtpm:path=/path/tpm.sock .venv/bin/python benchmarks/bench_tpm_store.py --out result.json [--n 200]

One verification opens the store for the read and counts the attempt in one transaction
(and a success clears the count in a second one: ``bench.py``'s ``store_read`` and ``decide``).
This times those two operations on a small store, alternating the two providers operation by
operation so that both see the same machine load: ``read`` (open, unwrap, decrypt; for the TPM
also CreatePrimary, salted session, Load, Unseal, NV_Read) and ``transaction`` (the same plus one
durable write; for the TPM also NV_Increment). JSON on stdout or --out; no biometric data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fr_pbd.machine import machine_info  # noqa: E402
from fr_pbd.store import DeviceFileKeyProvider, LockoutState, Store  # noqa: E402
from fr_pbd.store.tpm import TpmKeyProvider, tpm_info  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3, 2)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fr-pbd-tpm-bench."))
    stores = {"file": Store.create(tmp / "file", model_id="dlib-resnet-v1", dim=128,
                                   key_provider=DeviceFileKeyProvider.default(tmp / "file")),
              "tpm2": Store.create(tmp / "tpm2", model_id="dlib-resnet-v1", dim=128, key_provider=TpmKeyProvider())}
    for st in stores.values():
        st.set_fallback("bench-pin-" + os.urandom(4).hex())
    samples: dict[str, dict[str, list[float]]] = {k: {"read": [], "transaction": []} for k in stores}
    load_before = os.getloadavg()
    for i in range(args.n + 10):  # the first 10 warm up
        for name, st in stores.items():
            t0 = time.perf_counter()
            Store.open(st.home, key_provider=st.key_provider).read()
            t1 = time.perf_counter()
            with st.transaction() as tx:
                tx.set_fallback_lockout(LockoutState(failures=i % 2))  # as counting an attempt: one durable write
            t2 = time.perf_counter()
            if i >= 10:
                samples[name]["read"].append(t1 - t0)
                samples[name]["transaction"].append(t2 - t1)
    out = {
        "what": "store open+read and one lockout transaction (a durable write), file key vs TPM 2.0, "
                "alternated operation by operation",
        "tpm": tpm_info().line(),
        "tpm_is_software": "swtpm" in os.environ.get("FR_PBD_TPM", ""),
        "n": args.n,
        "config": {"precision": "none (store operations only, no model runs)", "liveness": False, "threads": 1},
        "ms": {name: {op: {"p50": pct(v, 0.5), "p95": pct(v, 0.95), "p99": pct(v, 0.99)} for op, v in ops.items()}
               for name, ops in samples.items()},
        "machine": machine_info(),
        "load": {"loadavg_before": [round(x, 2) for x in load_before],
                 "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
    }
    text = json.dumps(out, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
