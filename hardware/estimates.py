#!/usr/bin/env python3
"""Expected model-stage times per board profile: ESTIMATES scaled from OpenCV Zoo (issue 16, item 4).

    FR_PBD_MODELS=../shared/models .venv/bin/python hardware/estimates.py [--write]

Reads hardware/estimates.toml (published figures, sources, the rule), counts the
multiply-accumulates (MACs) of fr-pbd's own model files (onnx shape inference: Conv and
MatMul/Gemm; nothing else is counted), applies the rule, and prints the markdown table.
``--write`` also writes hardware/estimates.json (every input and every computed figure)
and replaces the table between the markers in hardware/README.md.

Needs the ``onnx`` package (fr-pbd's ``build``/``test`` extra) and the model files
(`fr-pbd models build yunet-variants`, `fr-pbd models build dlib-resnet`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import tomllib

HERE = Path(__file__).resolve().parent
BEGIN = "<!-- estimates-table: begin (hardware/estimates.py --write) -->"
END = "<!-- estimates-table: end -->"
FRAME = (640, 480)  # the camera frame every board profile asks for
YUNET_GRAPHS = {(160, 128): "yunet-2023mar-160x128", (320, 256): "yunet-2023mar-320x256",
                (640, 480): "yunet-2023mar-640x480", (640, 640): "yunet-2023mar"}
X86_MEASURED = HERE / "results" / "x86_64-2core-intel-r-xeon-r-processor-2026-11-29-default.json"


def count_macs(path: Path, batch: int = 1) -> int:
    """Multiply-accumulates of one run: Conv (grouped too) and MatMul/Gemm, from inferred shapes."""
    import numpy as np
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].dim_value = batch
    model = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            w, out = weights[node.input[1]], shapes[node.output[0]]
            if not all(out):
                raise ValueError(f"{path.name}: unknown output shape of {node.name}")
            total += int(np.prod(out)) * w[1] * int(np.prod(w[2:]))  # w[1] is C_in / group
        elif node.op_type in ("MatMul", "Gemm"):
            a = shapes.get(node.input[0]) or weights[node.input[0]]
            b = weights.get(node.input[1]) or shapes[node.input[1]]
            total += int(np.prod(a[:-1])) * a[-1] * b[-1]
    return total


def detector_graph(max_input: tuple[int, int]) -> tuple[int, int]:
    """The smallest YuNet graph that holds a 640x480 frame scaled to fit ``max_input``."""
    s = min(max_input[0] / FRAME[0], max_input[1] / FRAME[1], 1.0)
    w, h = round(FRAME[0] * s), round(FRAME[1] * s)
    return min((g for g in YUNET_GRAPHS if g[0] >= w and g[1] >= h), key=lambda g: g[0] * g[1])


def compute() -> dict:
    from fr_pbd import boards, models

    cfg = tomllib.loads((HERE / "estimates.toml").read_text(encoding="utf-8"))

    def resolve(name: str) -> Path:  # hash-checked model files
        return models.resolve(name).path

    graphs = {name: count_macs(resolve(name)) for name in YUNET_GRAPHS.values()}
    embed_macs = count_macs(resolve("dlib-resnet-v1"), batch=2)  # chip + mirror, one batch
    live_macs = count_macs(resolve("minifasnet-v2")) + count_macs(resolve("minifasnet-v1se"))
    refs = cfg["references"]
    ref_macs = {"yunet": graphs[refs["yunet"]["macs_graph"]], "ppresnet50": refs["ppresnet50"]["macs"],
                "mobilenetv2": refs["mobilenetv2"]["macs"]}
    out_boards = {}
    for name, spec in cfg["boards"].items():
        board = boards.load_board(name)
        graph = detector_graph(tuple(board.detector_input))
        stage_macs = {"detect": graphs[YUNET_GRAPHS[graph]], "embed": embed_macs, "liveness": live_macs}
        rows = []
        for row in spec["rows"]:
            zoo = cfg["platforms"][row["platform"]]
            scale = row.get("scale", 1.0)
            est = {
                "detect": zoo["yunet"] * stage_macs["detect"] / ref_macs["yunet"] * scale,
                "embed": zoo["ppresnet50"] * stage_macs["embed"] / ref_macs["ppresnet50"] * scale,
                "liveness": zoo["mobilenetv2"] * stage_macs["liveness"] / ref_macs["mobilenetv2"] * scale,
            }
            est["sum"] = sum(est.values())
            rows.append({"label": row["label"], "platform": row["platform"], "zoo_section": zoo["zoo_section"],
                         "scale": scale, "note": row.get("note"), "estimate_ms": {k: round(v, 1) for k, v in est.items()}})
        out_boards[name] = {"detector_input": list(board.detector_input), "detector_graph": list(graph),
                            "embedder_variant": board.embedder_variant, "providers": list(board.providers),
                            "stage_macs": stage_macs, "rows": rows}
    measured = None
    if X86_MEASURED.exists():
        res = json.loads(X86_MEASURED.read_text(encoding="utf-8"))
        measured = {"file": str(X86_MEASURED.relative_to(HERE.parent)), "cpu_model": res["machine"]["cpu_model"],
                    "cores": res["machine"]["cores"],
                    "p50_ms": {k: res["stages"][k]["p50"] for k in ("detect", "embed", "liveness")}}
    # Cross-check of the area rule (detect only) against a second, independent Pi 4 measurement.
    pi4 = cfg["platforms"]["rpi4-cpu"]["yunet"]
    check = {f"{s}x{s}": round(pi4 * (s * s) / (160 * 128), 1) for s in (320, 640)}
    return {
        "status": "ESTIMATES, not measurements: scaled from published OpenCV Zoo figures of other models; "
                  "a board result file in hardware/results/ replaces a row",
        "made_by": "hardware/estimates.py from hardware/estimates.toml and fr-pbd's model files",
        "rule": cfg["rule"].strip(), "caveats": cfg["caveats"], "sources": cfg["sources"],
        "references": {k: {**v, "macs_used": ref_macs[k]} for k, v in refs.items()},
        "platforms": cfg["platforms"],
        "frpbd_macs": {"yunet_graphs": {f"{w}x{h}": graphs[n] for (w, h), n in YUNET_GRAPHS.items()},
                       "embed_dlib_resnet_v1_batch2": embed_macs, "liveness_minifasnet_v2_plus_v1se": live_macs},
        "boards": out_boards,
        "x86_measured_for_comparison": measured,
        "detect_rule_crosscheck_pi4": {"rule_predicts_ms": check,
                                       "published_ms": {"320x320": "33.0-37.1", "640x640": "130.6-148.3"},
                                       "source": "pi4_yunet_crosscheck"},
    }


def markdown(doc: dict) -> str:
    lines = [
        "| board profile | detector graph | platform (OpenCV Zoo) | detect | liveness | embed (x2) | sum |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name, b in doc["boards"].items():
        g = "x".join(map(str, b["detector_graph"]))
        for r in b["rows"]:
            e = r["estimate_ms"]
            lines.append(f"| `{name}` ({b['embedder_variant']}) | {g} | {r['label']} | ~{e['detect']:.0f} | "
                         f"~{e['liveness']:.0f} | ~{e['embed']:.0f} | ~{e['sum']:.0f} |")
    m = doc["x86_measured_for_comparison"]
    if m:
        p = m["p50_ms"]
        lines.append(f"| measured, not estimated: default profile, fp32 | 640x480 | {m['cores']}-core "
                     f"{m['cpu_model']} (`{m['file']}`, p50) | {p['detect']:.1f} | {p['liveness']:.1f} | "
                     f"{p['embed']:.1f} | {sum(p.values()):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="write hardware/estimates.json and the README table")
    args = p.parse_args(argv)
    doc = compute()
    table = markdown(doc)
    print(table)
    if args.write:
        (HERE / "estimates.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        readme = HERE / "README.md"
        text = readme.read_text(encoding="utf-8")
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            text = head + BEGIN + "\n" + table + "\n" + END + rest.split(END, 1)[1]
            readme.write_text(text, encoding="utf-8")
        else:
            print(f"README.md has no {BEGIN!r} marker: table not written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
