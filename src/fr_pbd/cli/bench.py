"""``fr-pbd bench``: per-stage and end-to-end latency on real frames (library: :mod:`fr_pbd.bench`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fr_pbd.cli._common import EXIT_OK, add_board


def cmd_bench(args: argparse.Namespace) -> int:
    from fr_pbd.bench import STAGES, run_bench, sweep_session_options
    from fr_pbd.errors import ConfigError

    def say(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    if args.rounds < 1:
        raise ConfigError("--rounds must be at least 1")
    result = run_bench(args.board, Path(args.data) if args.data else None, args.rounds,
                       liveness=not args.no_liveness, progress=say, key_provider=args.key_provider)
    if args.sweep_sessions:
        say("session option sweep")
        result["session_sweep_ms"] = sweep_session_options()
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        out = Path(args.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {out}: {exc.strerror or exc}") from None
        say(f"wrote {out}")
    e, st = result["end_to_end_ms"], result["stages"]
    print(f"end-to-end frame -> decision: p50 {e['p50']:.1f} ms, p95 {e['p95']:.1f} ms, p99 {e['p99']:.1f} ms; "
          f"{result['throughput_fps']} frames/s; peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MiB")
    print("stage p50 (ms): " + ", ".join(f"{s} {st[s]['p50']:.2f}" for s in STAGES if st[s]["n"]))
    if not args.out:
        print(text, end="")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    b = add_board(sub.add_parser("bench", help="measure per-stage and end-to-end latency on real frames (JSON)"))
    b.add_argument("--out", default=None, help="write the result JSON here (hardware/results/<machine>-<date>.json)")
    b.add_argument("--data", default=None, help="test data directory holding faces/ and lfw/ (default: $FR_PBD_DATA)")
    b.add_argument("--rounds", type=int, default=10, help="passes over the frame set (default 10)")
    b.add_argument("--no-liveness", action="store_true",
                   help="leave presentation-attack detection out (to compare with pipelines that have none)")
    b.add_argument("--key-provider", choices=("file", "tpm2"), default="file",
                   help="the bench store's key: a key file (default) or sealed by the TPM ($FR_PBD_TPM), to time "
                        "the TPM path per verification")
    b.add_argument("--sweep-sessions", action="store_true",
                   help="also time each model under each onnxruntime session option (session_sweep_ms)")
    b.set_defaults(func=cmd_bench)
