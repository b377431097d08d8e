"""The import graph is layered: a module imports only from its own layer or a layer below.

Every ``import`` of every module under ``advviz/`` is read with :mod:`ast`, function-local ones
included, and checked against :data:`LAYERS` (DEVELOPERS.md, "Layout", shows the same table):

1. the leaves: ``_checks``, ``_registry``, ``_modules``, ``_paths``, ``_weights``, ``distributed``;
2. the artefact store, the architectures, the data and the metrics (the one batched forward);
3. ``explain`` and ``attacks``;
4. ``train``;
5. ``defenses`` and ``generative``;
6. ``zoo``, the catalogue of every trained or downloaded network;
7. ``evaluate``, ``papers``, ``setting``;
8. ``widgets``, ``benchmarks``, ``cli`` (and ``_cli_parse``), ``demo``.

Also held here:

* no import circle between packages (or top-level modules), within a layer too;
* an ``advviz`` import sits at the top of its file; a function-local import is only for an
  optional dependency (a package that is neither the standard library nor one of advviz's
  required dependencies). The store finds its providers through ``importlib`` (its one declared
  hook), which is not an import statement;
* no module imports another module's private (``_name``) objects.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "advviz"

#: layer of each package or top-level module (the longest matching prefix decides)
LAYERS: dict[str, int] = {
    "advviz": 1,  # the package's own __init__ (imports nothing of advviz)
    "advviz._checks": 1, "advviz._registry": 1, "advviz._modules": 1, "advviz._paths": 1, "advviz._weights": 1,
    "advviz.distributed": 1,
    "advviz.artifacts": 2, "advviz.models": 2, "advviz.data": 2, "advviz.metrics": 2,
    "advviz.explain": 3, "advviz.attacks": 3,
    "advviz.train": 4,
    "advviz.defenses": 5, "advviz.generative": 5,
    "advviz.zoo": 6,
    "advviz.evaluate": 7, "advviz.papers": 7, "advviz.setting": 7,
    "advviz.widgets": 8, "advviz.benchmarks": 8, "advviz.cli": 8, "advviz._cli_parse": 8, "advviz.demo": 8,
    "advviz.__main__": 8,
}

#: the required dependencies' import names (pyproject's [project] dependencies): not optional
REQUIRED = {"torch", "torchvision", "captum", "ipywidgets", "matplotlib", "plotly", "sklearn", "safetensors", "tqdm",
            "numpy", "PIL"}


def _module_name(path: Path, base: Path = ROOT) -> str:
    parts = path.relative_to(base).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    best = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len, default=None)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py and DEVELOPERS.md")
    return LAYERS[best]


def _unit(module: str) -> str:
    """The package or top-level module a module belongs to (the nodes of the circle check)."""
    best = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len)
    return best


class Import:
    def __init__(self, source: str, target: str, names: list[str], line: int, local: bool, file: Path) -> None:
        self.source, self.target, self.names, self.line, self.local, self.file = source, target, names, line, local, file

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.source} imports {self.target}"


def read_imports(root: Path = PACKAGE) -> list[Import]:
    """Every import statement under ``root``: ``advviz`` targets resolved to module names."""
    out: list[Import] = []
    for path in sorted(root.rglob("*.py")):
        source = _module_name(path, root.parent)
        package = source if path.name == "__init__.py" else source.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(), str(path))
        parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            up, local = node, False
            while up in parents:
                up = parents[up]
                if isinstance(up, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    local = True
                    break
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [a.name for a in node.names]
                # "from advviz import models" imports the module advviz.models
                if target == "advviz" or (target.startswith("advviz") and all(
                        (root.parent / (target + "." + n).replace(".", "/")).with_suffix(".py").exists()
                        or (root.parent / (target + "." + n).replace(".", "/")).is_dir() for n in names)):
                    for n in names:
                        out.append(Import(source, f"{target}.{n}", [], node.lineno, local, path))
                    continue
                out.append(Import(source, target, names, node.lineno, local, path))
            else:
                for alias in node.names:
                    out.append(Import(source, alias.name, [], node.lineno, local, path))
    return out


IMPORTS = read_imports()
INTERNAL = [i for i in IMPORTS if i.target == "advviz" or i.target.startswith("advviz.")]


def upward(imports: list[Import]) -> list[str]:
    return [f"{i} (layer {_layer(i.source)} -> layer {_layer(i.target)})" for i in imports
            if (i.target == "advviz" or i.target.startswith("advviz.")) and _layer(i.target) > _layer(i.source)]


def test_every_module_has_a_layer():
    for path in PACKAGE.rglob("*.py"):
        _layer(_module_name(path))


def test_no_import_runs_upward():
    bad = upward(INTERNAL)
    assert not bad, "imports from a higher layer:\n" + "\n".join(bad)


def test_the_check_fails_on_a_planted_upward_import(tmp_path):
    """The layer check is not vacuous: a models module importing the widgets is caught."""
    pkg = tmp_path / "advviz" / "models"
    pkg.mkdir(parents=True)
    (tmp_path / "advviz" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "planted.py").write_text("def f():\n    from advviz.widgets import explorer\n    return explorer\n")
    found = read_imports(tmp_path / "advviz")
    bad = upward([i for i in found if i.target.startswith("advviz.")])
    assert len(bad) == 1 and "layer 2 -> layer 8" in bad[0], bad


def test_no_import_circle_between_packages():
    graph: dict[str, set[str]] = defaultdict(set)
    for i in INTERNAL:
        a, b = _unit(i.source), _unit(i.target)
        if a != b and b != "advviz":
            graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def _optional(target: str) -> bool:
    top = target.split(".")[0]
    return top not in REQUIRED and top not in sys.stdlib_module_names and top != "advviz"


def test_imports_sit_at_the_top_unless_optional():
    local = [i for i in IMPORTS if i.local and not _optional(i.target)]
    assert not local, ("function-local imports of advviz, the standard library or a required dependency "
                       "(move them to the top of the file):\n" + "\n".join(map(str, local)))


def test_no_module_imports_another_modules_private_names():
    bad = [f"{i}: {n}" for i in INTERNAL for n in i.names
           if n.startswith("_") and not n.startswith("__") and i.target != i.source]
    assert not bad, "private names imported from another module (make them public or move them):\n" + "\n".join(bad)


@pytest.mark.parametrize("module", ["advviz.models", "advviz.artifacts", "advviz.train", "advviz.attacks"])
def test_low_layers_import_alone(module):
    """A low layer imports without loading any higher one (a fresh interpreter)."""
    import subprocess

    code = (f"import sys, {module}; high = sorted(m for m in sys.modules if m.startswith('advviz.') and "
            f"any(m == p or m.startswith(p + '.') for p in {[k for k, v in LAYERS.items() if v > 4]!r})); "
            "print(high); sys.exit(1 if high else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, f"importing {module} loads higher layers: {r.stdout}{r.stderr}"
