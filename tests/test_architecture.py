"""The architecture's two promises, checked on the source itself (issue 18):

* the core (``edge/``) knows no field protocol: no module under ``edge/`` imports ``pymodbus``
  or anything under ``drivers/`` (drivers are found only through the ``edge.drivers`` entry
  points);
* there is no import cycle among the modules of ``edge/`` and ``drivers/``.

The import graph is built from the source with ``ast`` (every ``import`` statement, also inside
functions, so a cycle hidden behind a local import counts; imports under ``if TYPE_CHECKING:``
are annotations only and do not), independently of what happens to be imported at run time.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "drivers")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
            if "node_modules" not in p.parts}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(path: Path, module: str) -> list[str]:
    """Every module name ``path`` imports at run time (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    out: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for orelse in child.orelse:
                    visit(orelse)
                continue
            if isinstance(child, ast.Import):
                out.extend(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = module.split(".") if is_package else module.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                out.append(base)
                out.extend(f"{base}.{alias.name}" for alias in child.names)
            visit(child)

    visit(tree)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = source_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for name in imported_names(path, mod):
            if name in modules and name != mod:
                graph[mod].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_core_imports_no_field_protocol():
    offenders = []
    for mod, path in source_modules().items():
        if not mod.startswith("edge"):
            continue
        for name in imported_names(path, mod):
            top = name.split(".")[0]
            if top in ("pymodbus", "drivers", "serial"):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_no_import_cycles_among_edge_and_drivers():
    graph = import_graph()
    assert len(graph) > 100  # the whole source was read
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    """The check above cannot pass by construction: a known cycle is reported."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("name", ["modbus", "system"])
def test_drivers_are_found_through_entry_points(name):
    from importlib.metadata import entry_points

    from edge.driver.protocol import Driver
    from edge.driver.registry import drivers

    assert name in {ep.name for ep in entry_points(group="edge.drivers")}
    driver = drivers()[name]
    for attr in Driver.__annotations__:
        assert hasattr(driver, attr), f"driver {name} lacks {attr}"
    for method in ("resolve", "check", "line_loads", "tag_type", "device_address", "session", "simulation",
                   "commands", "doctor", "point_location", "plugin_problems", "plugin_test_site"):
        assert callable(getattr(driver, method)), f"driver {name} lacks {method}()"
