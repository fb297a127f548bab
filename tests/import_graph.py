"""The package's import graph read from source with ``ast`` (no module is imported).

Used by ``tests/test_imports.py``: cycles of any length (Tarjan's strongly connected components),
function-level imports that re-import what the module already imports at top level, and the layer
diagram of ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package at ``root`` (a folder)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports executed when the module is imported: its body, ``if``/``try``/``with`` blocks and class
    bodies; not function bodies, not ``if TYPE_CHECKING:`` blocks."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(stmts: list[ast.stmt]) -> None:
        for node in stmts:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, ast.If):
                if not _is_type_checking(node):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                    visit(block)
            elif isinstance(node, (ast.With, ast.ClassDef)):
                visit(node.body)

    visit(tree.body)
    return found


def function_level_imports(tree: ast.Module) -> list[tuple[str, ast.Import | ast.ImportFrom]]:
    """(function name, import) for every import statement inside a function (nested ones included)."""
    out = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for stmt in fn.body:
                for node in ast.walk(stmt):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        out.append((fn.name, node))
    # an import inside a nested function is found once per enclosing function: keep the innermost
    seen: dict[int, tuple[str, ast.Import | ast.ImportFrom]] = {}
    for name, node in out:
        seen[id(node)] = (name, node)
    return list(seen.values())


def imported_modules(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
                     known: set[str] | None = None) -> set[str]:
    """The modules one import statement loads, as absolute dotted names.

    ``from . import x`` names the submodule ``pkg.x`` when ``known`` (the package's modules) has it,
    else the package itself; ``from .a import b`` names ``pkg.a`` (and ``pkg.a.b`` when that is a
    module)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if node.level:
        package = module if is_package else module.rpartition(".")[0]
        parts = package.split(".")
        if node.level > 1:
            parts = parts[: len(parts) - node.level + 1]
        base = ".".join(parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    out = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if known is not None and sub in known:
            out.add(sub)
        elif known is not None and node.module is None:
            out.add(base)
    if node.module is not None or known is None:
        out.add(base)
    return out


def import_graph(root: Path, functions: bool = False) -> dict[str, set[str]]:
    """Module-level import graph of the package at ``root``: module -> the package's modules it imports
    at top level (a submodule import also runs its parent package's ``__init__``, which counts unless
    the parent is the importer's own package or the root package); with ``functions``, the imports
    inside functions count too."""
    files = module_files(root)
    known = set(files)
    top = root.name
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        deps: set[str] = set()
        nodes = module_level_imports(tree)
        if functions:
            nodes += [node for _, node in function_level_imports(tree)]
        for node in nodes:
            for target in imported_modules(node, name, path.name == "__init__.py", known):
                parts = target.split(".")
                for i in range(2, len(parts) + 1):
                    prefix = ".".join(parts[:i])
                    ancestor = name == prefix or name.startswith(prefix + ".")
                    if prefix in known and prefix != top and not ancestor:
                        deps.add(prefix)
        graph[name] = deps - {name}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one node, or with a self-edge: the
    import cycles (each sorted, the list sorted)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
            if len(component) > 1 or v in graph.get(v, ()):
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(components)


def redundant_function_imports(root: Path) -> list[str]:
    """Function-level imports that defer nothing: the function imports a name the module already binds
    at top level, or from a module the module already imports at top level (``path:line function:
    statement``)."""
    files = module_files(root)
    known = set(files)
    problems = []
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        is_package = path.name == "__init__.py"
        top_names: set[str] = set()
        top_modules: set[str] = set()
        for node in module_level_imports(tree):
            top_names.update(_bound_names(node))
            top_modules.update(imported_modules(node, name, is_package, known))
        for function, node in function_level_imports(tree):
            again = (_bound_names(node) & top_names) | (imported_modules(node, name, is_package, known) & top_modules)
            if again:
                problems.append(f"{path.relative_to(root.parent)}:{node.lineno} {function}: "
                                f"{ast.unparse(node)} (already at top level: {', '.join(sorted(again))})")
    return problems


def _bound_names(node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.asname or alias.name.split(".")[0] for alias in node.names}
    return {alias.asname or alias.name for alias in node.names if alias.name != "*"}


@dataclass(frozen=True)
class Layer:
    """One line of the layer diagram: its position (0 = top) and the modules it lists."""

    line: str
    position: int
    modules: tuple[str, ...]


LAYER_LINE = re.compile(r"^\s*(?:->\s*)?\|\s*(?P<items>.*)$")
ITEM = re.compile(r"^[a-z_][a-z0-9_]*(?:\.py|/)$")


def diagram_layers(text: str, heading: str = "## Layers") -> list[Layer]:
    """The layers of the first fenced block after ``heading``: every line ``| a.py b/ ...  words``
    (top layer first) lists modules (``name.py``) and subpackages (``name/``); other words are prose."""
    after = text.split(heading, 1)[1]
    block = after.split("```", 2)[1]
    layers = []
    for line in block.splitlines():
        match = LAYER_LINE.match(line)
        if not match:
            continue
        items = tuple(w.rstrip(",") for w in match["items"].split() if ITEM.match(w.rstrip(",")))
        layers.append(Layer(line.strip(), len(layers), items))
    return layers


def layer_of_modules(layers: list[Layer], modules: set[str], top: str) -> tuple[dict[str, int], list[str]]:
    """Module -> layer position, and the problems: a module in no layer or in two, a listed name that
    is no module."""
    where: dict[str, list[int]] = {m: [] for m in modules}
    problems = []
    for layer in layers:
        for item in layer.modules:
            if item.endswith("/"):
                package = f"{top}.{item[:-1]}"
                members = [m for m in modules if m == package or m.startswith(package + ".")]
            else:
                members = [m for m in (f"{top}.{item[:-3]}",) if m in modules]
            if not members:
                problems.append(f"{item} (layer {layer.position}) is no module of {top}")
            for m in members:
                where[m].append(layer.position)
    for m, positions in sorted(where.items()):
        if m == top:
            continue
        if len(positions) != 1:
            problems.append(f"{m} is in {len(positions)} layers")
    return {m: p[0] for m, p in where.items() if len(p) == 1}, problems


def upward_imports(graph: dict[str, set[str]], layer: dict[str, int]) -> list[str]:
    """Imports that go from a lower layer (larger position) to a higher one."""
    return sorted(f"{a} (layer {layer[a]}) imports {b} (layer {layer[b]})"
                  for a, deps in graph.items() for b in deps
                  if a in layer and b in layer and layer[b] < layer[a])
