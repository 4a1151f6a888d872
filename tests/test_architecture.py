"""The package's layers (ARCHITECTURE.md): no import runs upward, no module imports itself
back through others, no module grows past 400 lines and no function past 60.

Every `import` counts, those inside functions too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pmbench"
MAX_LINES = 400
MAX_FUNCTION_LINES = 60  # from `def` (decorators aside) to the end, its docstring excluded

# Low to high. A module may import its own layer and the layers below it.
LAYERS = [
    ["pmbench", "pmbench.errors", "pmbench.types"],
    ["pmbench.rope2d", "pmbench.sandbox"],
    ["pmbench.engine"],
    ["pmbench.suites"],
    ["pmbench.measure"],
    ["pmbench.records"],
    ["pmbench.jobs", "pmbench.attention", "pmbench.train"],
    ["pmbench.report"],
    ["pmbench.sweep"],
    ["pmbench.commands", "pmbench.cli"],
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    best, level = "", -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, level = prefix, i
    return level


def resolve(name: str) -> str | None:
    """The pmbench module an import names (a module, or a package for `from p import x`)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    out = set()
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            # `from pkg import sub` imports the submodule sub when there is one
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                     for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("pmbench") and (target := resolve(name)) and target != module:
                out.add(target)
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_layer():
    assert [m for m in MODULES if layer_of(m) < 0] == []


def test_no_import_runs_upward():
    upward = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m, targets in GRAPH.items() for t in sorted(targets)
              if layer_of(t) > layer_of(m)]
    assert upward == []


def test_no_import_cycle():
    # Tarjan's strongly connected components: any component of two or more is a cycle.
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert cycles == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_at_most_400_lines(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module]} has {lines} lines"


def test_the_checker_sees_imports():
    """The graph is not empty by mistake: known edges are found."""
    assert "pmbench.engine.decoding" in GRAPH["pmbench.engine.runners.batch"]
    assert "pmbench.errors" in GRAPH["pmbench.rope2d.settings"]


def function_lengths(source: str) -> list[tuple[str, int, int]]:
    """(name, first line, length) of every function and method in `source`: its lines
    from `def` to its end, less its docstring's."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                length -= first.end_lineno - first.lineno + 1
            out.append((node.name, node.lineno, length))
    return out


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_function_is_longer_than_60_lines(module):
    long = [f"{name} (line {line}): {n} lines" for name, line, n
            in function_lengths(MODULES[module].read_text()) if n > MAX_FUNCTION_LINES]
    assert long == [], f"{MODULES[module]}: {long}"


def test_the_length_checker_counts_lines_not_docstrings():
    """A long docstring does not count; a long body does, nested functions too."""
    doc = "\n".join(["def f():", '    """', *["    text"] * 80, '    """', "    return 1"])
    body = "\n".join(["def g():", "    def h():", *["        x = 1"] * 61, "    return h"])
    assert function_lengths(doc) == [("f", 1, 2)]
    assert dict((n, k) for n, _, k in function_lengths(body)) == {"g": 64, "h": 62}

