"""The layout of the package (docs/architecture.md): wings by concern, imports flowing one way.

Read from the source with ``ast``, lazy imports inside functions included, so a circle cannot hide
behind an import that only runs later.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mlflow_ci"

# Lower layers never import higher ones; within a layer, the circle test keeps the order strict.
LAYERS = [
    ("mlflow_ci", "mlflow_ci.errors", "mlflow_ci.gitctx", "mlflow_ci.yamlnodes", "mlflow_ci.process", "mlflow_ci.loopback", "mlflow_ci.declared",
     "mlflow_ci.provenance", "mlflow_ci.charts", "mlflow_ci.fileids"),
    ("mlflow_ci.config", "mlflow_ci.result"),
    ("mlflow_ci.tracking", "mlflow_ci.engines"),
    ("mlflow_ci.gate", "mlflow_ci.compare", "mlflow_ci.fingerprint", "mlflow_ci.train"),
    ("mlflow_ci.report", "mlflow_ci.terminal", "mlflow_ci.evaluate", "mlflow_ci.genai", "mlflow_ci.github"),
    ("mlflow_ci.commands",),
    ("mlflow_ci.cli", "mlflow_ci.__main__"),
]
MLFLOW_ALLOWED = ("mlflow_ci.tracking",)  # the tracking wing, which also loads models


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        if "demo_project" in rel.parts:  # the demo's training script is user code, not the package
            continue
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path) -> list[str]:
    """Every module named by an import statement anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append(base)
            found += [f"{base}.{alias.name}" for alias in node.names]
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    edges: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        for target in imports(name, path):
            if target in mods and target != name:
                edges[name].add(target)
    return edges


def layer(module: str) -> int:
    best = (-1, -1)
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                best = max(best, (len(prefix), index))
    assert best[1] >= 0, f"{module} is in no layer of tests/test_architecture.py (and docs/architecture.md)"
    return best[1]


def test_no_import_circles():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_imports_flow_downward():
    wrong = [f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)})"
             for src, targets in graph().items() for dst in targets if layer(dst) > layer(src)]
    assert not wrong, "\n".join(wrong)


def test_only_the_tracking_wing_imports_mlflow():
    offenders = [
        name for name, path in modules().items()
        if not name.startswith(MLFLOW_ALLOWED)
        and any(t == "mlflow" or t.startswith("mlflow.") for t in imports(name, path))
    ]
    assert not offenders, offenders


def test_the_checker_sees_lazy_imports_and_relative_ones(tmp_path):
    pkg = tmp_path / "mlflow_ci" / "wing"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b\n    import mlflow.pyfunc\n")
    found = imports("mlflow_ci.wing.a", pkg / "a.py")
    assert "mlflow_ci.wing.b" in found and "mlflow.pyfunc" in found


def test_command_modules_stay_small():
    big = {name: n for name, path in modules().items()
           if name.startswith("mlflow_ci.commands.") and (n := len(path.read_text(encoding="utf-8").splitlines())) > 400}
    assert not big, big


def test_test_modules_have_unique_names():
    """The suite runs without __init__.py files: pytest imports each test module by its bare name, so two
    of the same name in different folders collide (an error at collection, in CI only when both are collected)."""
    tests = Path(__file__).resolve().parent
    names = [path.name for path in tests.rglob("test_*.py") if "fixtures" not in path.parts]
    assert sorted({n for n in names if names.count(n) > 1}) == []
