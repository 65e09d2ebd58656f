"""The package's shape, read from its source (ast): layers, the two phases, no cycles.

The layer order is written down in docs/architecture.md; this test is its
enforcement. Every import counts, also one inside a function or under
``TYPE_CHECKING``: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "fr_pbd"

# Lowest first. A module may import its own layer or lower ones, never a higher one.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("fr_pbd._version", "fr_pbd.errors", "fr_pbd.template", "fr_pbd.fileio", "fr_pbd.timing",
                    "fr_pbd.outcome", "fr_pbd.limits", "fr_pbd.accounts")),
    ("support", ("fr_pbd.config", "fr_pbd.models", "fr_pbd.runtime", "fr_pbd.boards", "fr_pbd.egress",
                 "fr_pbd.machine", "fr_pbd.hardening")),
    ("phases", ("fr_pbd.capture", "fr_pbd.store", "fr_pbd.match")),
    ("assembly", ("fr_pbd.pipeline", "fr_pbd.attempts", "fr_pbd.verify")),
    ("applications", ("fr_pbd.daemon", "fr_pbd.audit", "fr_pbd.eval", "fr_pbd.bench", "fr_pbd.build",
                      "fr_pbd.system")),
    ("interfaces", ("fr_pbd.cli", "fr_pbd.__main__", "fr_pbd")),
]
PHASE_A = ("fr_pbd.capture",)
PHASE_B = ("fr_pbd.store", "fr_pbd.match")
APPLICATIONS = dict(LAYERS)["applications"]


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


MODULES = _modules()


def _owner(name: str) -> str:
    """The module a dotted import name lands in (``fr_pbd.store.Store`` -> ``fr_pbd.store``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str) -> dict[str, set[str]]:
    """fr_pbd modules imported by ``module`` -> the names of everything it imports (also third-party)."""
    path, is_pkg = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    internal: set[str] = set()
    external: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (internal.add(_owner(alias.name)) if alias.name.split(".")[0] == "fr_pbd"
                 else external.add(alias.name.split(".")[0]))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module if is_pkg else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                name = base + (f".{node.module}" if node.module else "")
            else:
                name = node.module or ""
            if name.split(".")[0] != "fr_pbd":
                external.add(name.split(".")[0])
                continue
            for alias in node.names:
                sub = f"{name}.{alias.name}"
                internal.add(sub if sub in MODULES else _owner(name))
    internal.discard(module)
    return {"internal": internal, "external": external}


GRAPH = {m: _imports(m) for m in MODULES}


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def layer_of(module: str) -> int:
    if module == "fr_pbd":
        return len(LAYERS) - 1
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if p != "fr_pbd" and _in(module, (p,)) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    if best is None:
        raise AssertionError(f"{module} has no layer: place it in docs/architecture.md and in LAYERS here")
    return best[0]


def test_every_module_has_a_layer():
    for m in MODULES:
        layer_of(m)


def test_no_import_runs_from_a_lower_layer_to_a_higher_one():
    upward = []
    for m, imp in GRAPH.items():
        for target in imp["internal"]:
            if layer_of(target) > layer_of(m):
                upward.append(f"{m} ({LAYERS[layer_of(m)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})")
    assert not upward, "\n".join(sorted(upward))


def test_the_two_phases_never_import_each_other():
    crossing = [f"{m} -> {t}" for m, imp in GRAPH.items() for t in imp["internal"]
                if (_in(m, PHASE_A) and _in(t, PHASE_B)) or (_in(m, PHASE_B) and _in(t, PHASE_A))]
    assert not crossing, "\n".join(sorted(crossing))


def test_applications_do_not_import_each_other():
    """daemon, audit, eval, bench and build each stand on the layers below, not on one another."""
    def app(m: str) -> str | None:
        return next((p for p in APPLICATIONS if _in(m, (p,))), None)

    crossing = [f"{m} -> {t}" for m, imp in GRAPH.items() for t in imp["internal"]
                if app(m) and app(t) and app(m) != app(t)]
    assert not crossing, "\n".join(sorted(crossing))


def test_no_import_cycle():
    """Tarjan's strongly connected components over the module graph: every one must be a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]["internal"]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_only_the_cli_knows_argparse():
    users = sorted(m for m, imp in GRAPH.items() if "argparse" in imp["external"] and not _in(m, ("fr_pbd.cli",)))
    assert not users, f"argparse outside fr_pbd.cli: {users}"


def test_build_tools_stay_out_of_the_runtime():
    """Only the `models build` command reaches fr_pbd.build; onnx (the [build] extra) only inside it."""
    reach = sorted(f"{m} -> {t}" for m, imp in GRAPH.items() for t in imp["internal"]
                   if _in(t, ("fr_pbd.build",)) and not _in(m, ("fr_pbd.build", "fr_pbd.cli.models")))
    assert not reach, "\n".join(reach)
    onnx = sorted(m for m, imp in GRAPH.items() if "onnx" in imp["external"] and not _in(m, ("fr_pbd.build",)))
    assert not onnx, f"onnx imported outside fr_pbd.build: {onnx}"


def test_no_repository_path_inside_the_package():
    """The installed package finds its data in itself (fr_pbd/_data), never in a checkout around it."""
    offenders = []
    for m, (path, _) in MODULES.items():
        text = path.read_text(encoding="utf-8")
        for needle in ("parents[", '/ "hardware"', '/ "docs"', "../shared"):
            if needle in text:
                offenders.append(f"{m}: {needle}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("name", ["manifest.toml", "consent-v1.txt", "boards/x86-generic.toml"])
def test_package_data_is_in_the_package(name):
    assert (PACKAGE / "_data" / name).is_file()


def test_the_test_can_see_a_violation(tmp_path):
    """The checks above must be able to fail: a capture module importing the store is seen."""
    assert _in("fr_pbd.capture.yunet", PHASE_A) and _in("fr_pbd.store.keys", PHASE_B)
    assert layer_of("fr_pbd.capture.yunet") < layer_of("fr_pbd.verify") < layer_of("fr_pbd.daemon") \
        < layer_of("fr_pbd.cli.household")
    assert layer_of("fr_pbd") == len(LAYERS) - 1 and layer_of("fr_pbd.errors") == 0
