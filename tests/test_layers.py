"""The layers stay one-way: the import contracts of pyproject.toml, no import cycles, and a
wire contract that needs nothing outside the standard library.

`make lint` runs `lint-imports`; these tests run the same checks so `make test` enforces
them too, and add what import-linter cannot say (a cycle's path through function-level
imports, what a bare interpreter loads).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import deque
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("edgeplane", "chalicelib", "edge_gateway", "edgeplane_cli")
# Product modules that may import edgeplane_dev, inside functions only (`edgeplane dev`).
DEV_COMMANDS = ("edgeplane_cli/__init__.py", "edgeplane_cli/dev.py")


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports), "--no-cache", "--no-logo"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_wire_contract_loads_only_the_standard_library():
    """Imported in an isolated interpreter (-I: no environment, no user site), the contract
    pulls in nothing but the standard library, so it vendors into any bundle as it is."""
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "before = set(sys.modules)\n"
        "import edgeplane.protocol\n"
        "loaded = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(json.dumps(sorted(loaded - set(sys.stdlib_module_names) - {'edgeplane'})))\n"
    )
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [], "edgeplane.protocol loads third-party modules"


def _shortest_cycle(graph: grimp.ImportGraph, start: str, members: set[str]) -> list[str]:
    """The shortest path start -> ... -> start through the modules of one cycle."""
    parents: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for imported in sorted(graph.find_modules_directly_imported_by(module) & members):
            if imported == start:
                path, step = [start], module
                while step is not None:
                    path.append(step)
                    step = parents[step]
                return path[::-1]
            if imported not in parents:
                parents[imported] = module
                queue.append(imported)
    raise AssertionError(f"{start} is not on a cycle")


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & modules) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            module, position = work.pop()
            if position == 0:
                index[module] = low[module] = len(index)
                stack.append(module)
                on_stack.add(module)
            if position < len(edges[module]):
                work.append((module, position + 1))
                imported = edges[module][position]
                if imported not in index:
                    work.append((imported, 0))
                elif imported in on_stack:
                    low[module] = min(low[module], index[imported])
                continue
            if low[module] == index[module]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == module:
                        break
                if len(component) > 1:
                    found.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
    return found


def _describe(graph: grimp.ImportGraph, path: list[str]) -> str:
    hops = []
    for importer, imported in zip(path, path[1:], strict=False):
        lines = sorted(d["line_number"] for d in graph.get_import_details(
            importer=importer, imported=imported))
        hops.append(f"  {importer} -> {imported} (line {', '.join(map(str, lines))})")
    return "\n".join(hops)


def test_product_code_has_no_import_cycles():
    """No two product modules depend on each other, counting imports inside functions: a
    module-level import one way and a lazy one back is still a cycle. The local stack is in
    the graph too, so a cycle through it (the CLI's dev commands) counts."""
    graph = grimp.build_graph(*PRODUCT, "edgeplane_dev", cache_dir=None)
    cycles = _cycles(graph, set(graph.modules))
    reports = []
    for component in cycles:
        if all(module.split(".")[0] == "edgeplane_dev" for module in component):
            continue  # the local stack's own business
        path = _shortest_cycle(graph, min(component), component)
        reports.append(f"cycle through {len(component)} modules, e.g.:\n"
                       + _describe(graph, path))
    assert not reports, "\n".join(reports)


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import():
    graph = grimp.ImportGraph()
    for importer, imported in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=importer, imported=imported, line_number=1,
                         line_contents=f"import {imported}")
    [component] = _cycles(graph, set(graph.modules))
    assert component == {"p.a", "p.b", "p.c"}
    assert _shortest_cycle(graph, "p.a", component) == ["p.a", "p.b", "p.c", "p.a"]


def _project_imports(tree: ast.AST) -> list[tuple[ast.stmt, str]]:
    found: list[tuple[ast.stmt, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node, node.module))
    return found


def test_the_dev_commands_import_the_local_stack_lazily():
    """The CLI's one licence to import edgeplane_dev (pyproject's ignore_imports) holds only
    inside functions, so `edgeplane sites ...` never loads the simulators."""
    for name in DEV_COMMANDS:
        tree = ast.parse((ROOT / name).read_text(), name)
        in_functions = {id(node) for function in ast.walk(tree)
                        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
                        for node in ast.walk(function)}
        eager = [f"{name}:{node.lineno} imports {module}"
                 for node, module in _project_imports(tree)
                 if module.split(".")[0] == "edgeplane_dev" and id(node) not in in_functions]
        assert not eager, eager


def test_the_cloud_entry_point_imports_only_the_cloud_and_the_contract():
    """app.py is a module, not a package, so import-linter cannot see it."""
    tree = ast.parse((ROOT / "app.py").read_text(), "app.py")
    project = {module.split(".")[0] for _, module in _project_imports(tree)}
    project &= {*PRODUCT, "edgeplane_dev"}
    assert project <= {"chalicelib", "edgeplane"}, project
