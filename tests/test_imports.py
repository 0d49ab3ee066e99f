"""No import circle in the project: the graph of project-internal imports under platform/, trainables/ and
benchmarks/, read with `ast` (nothing is imported), has no cycle.

Every import statement counts, at module level or inside a function (a lazy import still ties two modules
together); only those under `if TYPE_CHECKING:` do not, as they never run. `import a.b` imports `a.b`;
`from a import b` imports `a.b` where `b` is a submodule of `a`, else `a` itself; relative imports are
resolved against the importing module's package.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("platform", "trainables", "benchmarks")

Edges = dict[str, dict[str, str]]
"""importer -> {imported: 'file:line' of the first import statement that makes the edge}."""


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the project's packages (a package by its __init__)."""
    out: dict[str, Path] = {}
    for top in PACKAGES:
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of the tree, at any depth, except those in the body of `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of dotted `name` that is a project module (None: outside the project)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in modules:
            return prefix
    return None


def import_graph(root: Path = ROOT) -> Edges:
    """The project-internal import edges of every module under PACKAGES."""
    modules = project_modules(root)
    edges: Edges = {m: {} for m in modules}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    package = module.split(".") if is_package else module.split(".")[:-1]
                    base = ".".join(package[: len(package) - (node.level - 1)])
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                owner = _owner(target, modules)
                if owner is not None and owner != module:
                    edges[module].setdefault(owner, f"{path.relative_to(root)}:{node.lineno}")
    return edges


def strongly_connected(edges: Edges) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:  # iterative: no recursion limit on a deep graph
        nonlocal counter
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
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
                    out.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return sorted(out)


def cycles(edges: Edges) -> list[list[str]]:
    """Cycles that between them use every import edge inside a circle: for each such edge u -> v, the shortest
    way back from v to u. Each cycle starts at its smallest module and ends where it started."""
    found: set[tuple[str, ...]] = set()
    for component in strongly_connected(edges):
        members = set(component)
        for u in component:
            for v in sorted(edges[u]):
                if v not in members:
                    continue
                back: dict[str, str | None] = {v: None}
                queue = deque([v])
                while queue and u not in back:
                    node = queue.popleft()
                    for nxt in sorted(edges[node]):
                        if nxt in members and nxt not in back:
                            back[nxt] = node
                            queue.append(nxt)
                path, node_or_none = [], u
                while node_or_none is not None:
                    path.append(node_or_none)
                    node_or_none = back[node_or_none]
                ring = [u, *reversed(path)][:-1]  # u -> v -> ... -> (u)
                start = ring.index(min(ring))
                found.add(tuple(ring[start:] + ring[:start]))
    return [[*ring, ring[0]] for ring in sorted(found)]


def describe(cycle: list[str], edges: Edges) -> str:
    """`a -> b -> a` with the file and line of each import."""
    steps = [f"{a} -> {b} ({edges[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False)]
    return "; ".join(steps)


def test_there_is_no_import_circle() -> None:
    edges = import_graph()
    found = cycles(edges)
    assert not found, f"{len(found)} import cycle(s):\n" + "\n".join(f"  {describe(c, edges)}" for c in found)


def test_the_walk_sees_lazy_submodule_and_relative_imports_and_names_every_cycle(tmp_path: Path) -> None:
    files = {
        "platform/__init__.py": "",
        "platform/a.py": "def f():\n    from platform import b\n",  # lazy, and b is a submodule
        "platform/b.py": "from .c import thing\n",  # relative
        "platform/c.py": "import platform.a\n",
        "platform/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from platform import e\n",
        "platform/e.py": "from platform.d import x\n",  # d -> e only under TYPE_CHECKING: no cycle
        "trainables/__init__.py": "from trainables.blocks import f\n",
        "trainables/blocks/__init__.py": "",
        "trainables/blocks/f.py": "import trainables\n",
        "benchmarks/g.py": "import platform.a\nimport os\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    edges = import_graph(tmp_path)
    assert edges["platform.a"] == {"platform.b": "platform/a.py:2"}
    assert set(edges["platform.b"]) == {"platform.c"} and set(edges["platform.d"]) == set()
    assert set(edges["benchmarks.g"]) == {"platform.a"}
    assert cycles(edges) == [["platform.a", "platform.b", "platform.c", "platform.a"],
                             ["trainables", "trainables.blocks.f", "trainables"]]
    assert describe(cycles(edges)[1], edges) == ("trainables -> trainables.blocks.f (trainables/__init__.py:1); "
                                                 "trainables.blocks.f -> trainables (trainables/blocks/f.py:1)")
