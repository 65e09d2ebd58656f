"""``fr-pbd models list | fetch | build`` and ``fr-pbd doctor``: the models and the machine.

``models fetch`` is the only command that may use the network; ``models build``
runs the local build recipes of :mod:`fr_pbd.build` (the ``[build]`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

from fr_pbd.cli._common import EXIT_ERROR, EXIT_OK, add_board, add_home, add_json, print_json, subcommands

BUILDABLE = ("dlib-resnet", "dlib-resnet-int8", "yunet-variants", "plda")


def cmd_models_list(args: argparse.Namespace) -> int:
    from fr_pbd import models

    rows = []
    for name, spec in models.manifest().items():
        st = models.status(name)
        state = "verified" if st.verified else ("HASH MISMATCH" if st.path else "missing")
        rows.append((name, spec.role, spec.licence, state, str(st.path) if st.path else f"-> {spec.fix_command}"))
    if args.json:
        print(json.dumps([dict(zip(("name", "role", "licence", "state", "where"), r)) for r in rows]))
        return EXIT_OK
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    return EXIT_OK


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from fr_pbd import models
    from fr_pbd.models.fetch import fetch

    names = [n for n, s in models.manifest().items() if s.obtain == "fetch"] if args.name == "all" else [args.name]
    for name in names:
        print(f"fetching {name}", file=sys.stderr)
        path = fetch(name)
        print(f"{name}: verified {path}")
    return EXIT_OK


def cmd_models_build(args: argparse.Namespace) -> int:
    from fr_pbd.errors import ModelError

    name = args.name.replace("-v1", "")  # dlib-resnet-v1[-int8] is accepted as well
    try:
        if name == "yunet-variants":
            from fr_pbd.build.yunet_variants import build_yunet_variants

            for variant, path in build_yunet_variants().items():
                print(f"{variant}: built and verified {path}")
        elif name == "dlib-resnet-int8":
            from fr_pbd.build.dlib_resnet_int8 import build_dlib_int8

            print(f"dlib-resnet-v1-int8: built and verified {build_dlib_int8()}")
        elif name == "plda":
            _build_plda(args)
        elif name == "dlib-resnet":
            from fr_pbd.build.dlib_resnet import build_verified

            print(f"dlib-resnet-v1: built and verified {build_verified(args.dat)}")
        else:
            raise ModelError(f"no build recipe for {args.name!r}; buildable: {', '.join(BUILDABLE)}")
    except ModuleNotFoundError as exc:  # the [build] extra is not installed
        raise ModelError(f"building needs the build extra ({exc.name} is missing): "
                         "pip install 'fr-pbd[build]'") from None
    return EXIT_OK


def _build_plda(args: argparse.Namespace) -> None:
    """The PLDA score model from LFW's half A (the selection half): templates through the evaluation's
    own code (one center face per image, the pipeline in force), then fr_pbd.build.plda."""
    from pathlib import Path

    import numpy as np

    from fr_pbd.build.plda import NAME, build_plda
    from fr_pbd.cli.eval import ProgressBar
    from fr_pbd.errors import EvaluationError
    from fr_pbd.eval.lfw import embed_images, list_images, pipeline_embedder
    from fr_pbd.eval.transactions import DEFAULT_SEED, half_a_rows

    if not args.data:
        raise EvaluationError("building plda needs --data: the LFW folder (NAME/NAME_NNNN.jpg)")
    listing = list_images(Path(args.data))
    if not listing:
        raise EvaluationError(f"no LFW images under {args.data}")
    names = sorted({n for n, _, _ in listing})
    code = {n: c for c, n in enumerate(names)}
    ids = np.array([code[n] for n, _, _ in listing], dtype=np.int64)
    half = half_a_rows(ids, DEFAULT_SEED)
    embed, _model_id = pipeline_embedder()
    rows = np.flatnonzero(half)
    x, ok, _reasons = embed_images([listing[i][2] for i in rows], embed, ProgressBar("templates"))
    path, fp = build_plda(x[ok], ids[rows][ok])
    print(f"{NAME}: built and verified {path} (from {int(ok.sum())} templates of "
          f"{np.unique(ids[rows]).size} identities; fingerprint {fp})")


def cmd_doctor(args: argparse.Namespace) -> int:
    from fr_pbd import models

    report = _doctor(args)
    if args.json:
        print_json(report)
        return EXIT_OK if report["ready"] else EXIT_ERROR
    print(f"fr-pbd {report['version']}")
    py = report["python"]
    print(f"python {py['version']} ({py['machine']}, {py['system']} {py['release']})")
    print(f"cpus {report['cpus']}")
    print(", ".join(f"{name} {version}" for name, version in report["packages"].items()))
    print(f"onnxruntime providers: {', '.join(report['onnxruntime_providers'])}")
    print(f"egress guard: {report['egress_guard']}")
    b = report["board"]
    print(f"board: {b['name']} (threads {b['threads'] or 'one per core'}, "
          f"providers {', '.join(b['providers'])}, detector input "
          f"{b['detector_input'][0]}x{b['detector_input'][1]}, embedder {b['embedder']})")
    for note in b["notes"]:
        print(f"  note: {note}")
    print(f"model search path: {' , '.join(report['model_search_path'])}")
    for c in report["checks"]:
        if c["check"].startswith("model "):
            print(f"  {c['check'][6:]:18s} {c['state']:14s} ({'required' if c['required'] else 'optional'})"
                  + ("" if c["ok"] else f"  fix: {c['fix']}"))
    if not report["ready"] and not os.environ.get(models.ENV_MODELS):
        print(f"models were looked for only in {models.cache_dir()}: if you have the model files already, "
              f"point {models.ENV_MODELS} at their folder (e.g. {models.ENV_MODELS}=/path/to/models) "
              "before downloading anything")
    for c in report["checks"]:
        if not c["check"].startswith("model "):
            print(c["line"])
            if c.get("rollback_protection") is False:
                print("  rollback: NOT detected: restoring an older copy of the store brings back old lockouts and "
                      "withdrawn users" + ("; a TPM is here: fr-pbd keys migrate --to tpm2" if report["tpm"] else ""))
    print("pipeline: ready" if report["ready"] else "pipeline: NOT ready (see above)")
    return EXIT_OK if report["ready"] else EXIT_ERROR


def _doctor(args: argparse.Namespace) -> dict:
    """What ``doctor`` checks, as one object (``--json``; the text prints it): versions, the board,
    each model (required ones decide ``ready``), the TPM and the store key. No biometric data."""
    import cv2
    import cryptography
    import numpy as np
    import onnxruntime as ort

    from fr_pbd import config, egress, models
    from fr_pbd._version import __version__
    from fr_pbd.pipeline import run_settings

    board = args.board or config.load(args.home).board
    settings = run_settings(board)
    checks = []
    for name, spec in models.manifest().items():
        st = models.status(name)
        needed = name in ("yunet-2023mar", "dlib-resnet-v1")  # variants are optional: the pipeline falls back
        checks.append({"check": f"model {name}", "ok": bool(st.verified), "required": needed,
                       "state": "verified" if st.verified else ("HASH MISMATCH" if st.path else "missing"),
                       "fix": None if st.verified else spec.fix_command})
    tpm, key = _doctor_keys(args.home)
    checks += [tpm, key]
    return {"version": __version__,
            "python": {"version": platform.python_version(), "machine": platform.machine(),
                       "system": platform.system(), "release": platform.release()},
            "cpus": os.cpu_count(),
            "packages": {"numpy": np.__version__, "opencv": cv2.__version__, "onnxruntime": ort.__version__,
                         "cryptography": cryptography.__version__},
            "onnxruntime_providers": list(ort.get_available_providers()),
            "egress_guard": egress.enforcement(),
            "board": {"name": settings.board, "threads": settings.threads, "providers": list(settings.providers),
                      "detector_input": list(settings.detector_input[:2]), "embedder": settings.embedder_variant,
                      "notes": list(settings.notes)},
            "model_search_path": [str(d) for d in models.search_dirs()],
            "checks": checks, "tpm": tpm["ok"],
            "ready": all(c["ok"] for c in checks if c["required"])}


def _doctor_keys(home_arg: str | None) -> tuple[dict, dict]:
    """The TPM (present, version, manufacturer, PCR banks) and who holds this home's store key:
    two checks, neither required (``line``: doctor's text for each)."""
    from pathlib import Path

    from fr_pbd.config import default_home
    from fr_pbd.errors import FrPbdError
    from fr_pbd.store import STORE_FILE
    from fr_pbd.store.store import provider_for
    from fr_pbd.store.tpm import tpm_info

    home = Path(home_arg) if home_arg else default_home()
    info = tpm_info(home=home)
    tpm = {"check": "tpm", "ok": info.present, "required": False, "line": info.line()}
    key = {"check": "store key", "ok": False, "required": False, "store": False}
    if not os.path.lexists(home / STORE_FILE):
        key["line"] = (f"store key: no store in {home} yet (fr-pbd keys init --provider "
                       f"{'tpm2' if info.present else 'tpm2|file|passphrase'})")
        return tpm, key
    key["store"] = True
    try:
        provider = provider_for(home)
    except FrPbdError as exc:
        key["line"] = f"store key: {exc}"
        return tpm, key
    key.update(ok=True, line=f"store key: {provider.custody()}", rollback_protection=bool(provider.rollback_protection))
    return tpm, key


def register(sub: argparse._SubParsersAction) -> None:
    msub = subcommands(sub.add_parser("models", help="list, fetch or build models"), "models_command")
    ml = msub.add_parser("list", help="which models are present and verified")
    ml.add_argument("--json", action="store_true")
    ml.set_defaults(func=cmd_models_list)
    mf = msub.add_parser("fetch", help="download a model (pinned URL, sha256 checked); the only network use")
    mf.add_argument("name", help="model name from `fr-pbd models list`, or 'all'")
    mf.set_defaults(func=cmd_models_fetch, network=True)
    mb = msub.add_parser("build", help=f"build a model locally: {', '.join(BUILDABLE)}")
    mb.add_argument("name")
    mb.add_argument("--dat", default=None, help="path to dlib_face_recognition_resnet_model_v1.dat")
    mb.add_argument("--data", default=None, help="plda: the LFW folder (it is trained on half A of its identities)")
    mb.set_defaults(func=cmd_models_build)

    doc = add_board(add_home(sub.add_parser("doctor", help="check that this machine can run the pipeline")))
    add_json(doc, "the checks and their results (ready: the required ones passed)")
    doc.set_defaults(func=cmd_doctor)
