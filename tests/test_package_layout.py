"""The shape of the package (docs/ARCHITECTURE.md, "Layers"): every module stays small, and
imports flow one way through the layers, including imports inside functions, with no cycle
between modules. A failure names the module and the import that breaks the rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 450


def _layers_from_the_docs() -> list[set[str]]:
    """The layers, first to last, as docs/ARCHITECTURE.md draws them (the line of the form
    `errors, fsio, config  <  ops  <  ...  <  cli`): the doc is the rule, so they cannot drift."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("errors, fsio, config  <")]
    layers = []
    for part in line.split("<"):
        names = [n.strip() for n in part.split(",")]
        if names == ["errors", "fsio", "config"]:
            layers.append({"saefast", *(f"saefast.{n}" for n in names)})
        else:
            layers.append({f"saefast.{n}" for n in names})
    return layers


LAYERS = _layers_from_the_docs()
# modules that only re-export a moved name for old callers (they import upward by design)
SHIMS = {"saefast.ray_executor": "saefast.sweep", "saefast.__init__": None}


def _sources() -> list[Path]:
    return sorted([*(ROOT / "saefast").rglob("*.py"), *(ROOT / "cli").glob("*.py")])


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "cli":
        parts = ["saefast", "cli", *parts[1:]]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> int:
    """Index of the layer a module belongs to: the longest matching package prefix."""
    best, best_len = None, -1
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                # "saefast" alone matches only the package itself and its base modules
                if prefix == "saefast" and module != "saefast":
                    continue
                best, best_len = i, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS and ARCHITECTURE.md"
    return best


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported saefast module) for every import in the file, nested ones included.
    `from saefast.x import y` counts as saefast.x.y when y is a module, else saefast.x."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("saefast")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, *([node.module] if node.module else [])])
            if not base.startswith("saefast"):
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((node.lineno, sub if _is_module(sub) else base))
    return found


def _is_module(name: str) -> bool:
    rel = name.split(".")[1:]
    if rel and rel[0] == "cli":
        path = ROOT / "cli" / Path(*rel[1:]) if rel[1:] else ROOT / "cli"
    else:
        path = ROOT / "saefast" / Path(*rel) if rel else ROOT / "saefast"
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


SOURCES = _sources()


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_is_small(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (at most {MAX_LINES}): split it"


def test_imports_flow_one_way():
    wrong = []
    for path in SOURCES:
        module = _module(path)
        if module in SHIMS:
            continue
        own = _layer(module)
        for line, target in _imports(path, module):
            if _layer(target) > own:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target} "
                             f"(layer {_layer(target)} > {own})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_import_cycles():
    graph = {}
    for path in SOURCES:
        module = _module(path)
        graph[module] = {t for _, t in _imports(path, module) if t != module and t in
                         {_module(p) for p in SOURCES}}
    # a package's __init__ importing its own modules is not a cycle through them
    for module, deps in graph.items():
        graph[module] = {t for t in deps if not module.startswith(t + ".")}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_every_subpackage_is_installed():
    """setup.py lists every package (CI installs editable, which would not notice one missing)."""
    import re

    text = (ROOT / "setup.py").read_text()
    listed = set(re.findall(r'"(saefast(?:\.[a-z_]+)*)"', text.split("packages=")[1].split("]")[0]))
    packages = {_module(p.parent / "__init__.py") for p in (ROOT / "saefast").rglob("__init__.py")}
    assert packages | {"saefast.cli"} == listed


def test_the_library_never_draws():
    """Only cli/ imports rich or prints: the library reports through `sweep.events.Events`."""
    drawing = []
    for path in SOURCES:
        if _module(path).startswith("saefast.cli"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "rich" or n.startswith("rich.") for n in names):
                drawing.append(f"{path.relative_to(ROOT)}:{node.lineno} imports rich")
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                drawing.append(f"{path.relative_to(ROOT)}:{node.lineno} prints")
    assert not drawing, "\n".join(drawing)
