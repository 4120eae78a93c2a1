"""The import layers of the three station packages, read statically (ast; nothing here imports them):

- ``nas``: the library and the search driver; ``workers``: what runs inside a worker (training, data);
  ``search_spaces``: the built-in spaces, written against nas' space API only.
- (a) no import cycle among the project's modules (counting every import statement: at module level,
  inside functions and under ``if TYPE_CHECKING``);
- (b) nas never imports workers at module level, and otherwise (inside functions, or by name) only from
  the modules in `NAS_LAZY_WORKER_IMPORTS`;
- (c) search_spaces never imports nas.strategies or nas.darts;
- (d) workers never imports nas.search, nas.cli or nas.darts.plan (the driver calls workers, not the
  other way round);
- and docs/ARCHITECTURE.md describes each of the three packages.

An import edge goes from the importing module to the module it names: ``from x import y`` is x.y when
x/y.py (or x/y/__init__.py) exists, else x; ``import x.y`` is x.y; relative imports are resolved against
the importing module's package. Importing x.y also runs x/__init__.py, but that implicit edge is not
counted (every module would then sit in a cycle with its package's __init__). Module level means executed
when the module is imported: anything not inside a function body, so class bodies, ``try`` blocks and
``if TYPE_CHECKING:`` blocks count as module level (the stricter choice: such an import is still a
dependency written at the top of the file).

By name: a string constant that is exactly ``"package.module:attr"`` with a project package (the strategy,
space and evaluation registries, resolved with ``importlib`` when asked for) is a reference, not an import
statement. References count for (b), (c) and (d), not for cycles (nothing is imported at import time), and
each must name an existing module that defines ``attr``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("nas", "workers", "search_spaces")

# nas modules that import workers inside a function (never at module level). Each entry is a lazy import
# to be justified (why does this part of the driver reach into a worker's code?); the test fails when a
# module not listed here imports workers, and when a listed one no longer does (so the list only shrinks).
NAS_LAZY_WORKER_IMPORTS: dict[str, set[str]] = {
    # by name: the evaluation registry (EVALUATIONS) names the worker-side evaluations, imported on use
    "nas.evaluation": {"workers.train_evaluation", "workers.tabular", "workers.darts_trainable"},
}

MODULE_LEVEL, IN_FUNCTION, BY_NAME = "module level", "in a function", "by name"
REFERENCE = re.compile(rf"^((?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)$")


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported project module
    line: int
    how: str  # MODULE_LEVEL (executed at import time), IN_FUNCTION or BY_NAME ("module:attr" string)
    attr: str = ""  # BY_NAME: the attribute named

    @property
    def module_level(self) -> bool:
        return self.how == MODULE_LEVEL

    @property
    def statement(self) -> bool:
        return self.how != BY_NAME

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({path_of(self.source)}:{self.line}, {self.how})"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            out[module_name(path)] = path
    return out


def path_of(module: str) -> str:
    return str(modules()[module].relative_to(REPO))


def is_package(module: str) -> bool:
    return modules()[module].name == "__init__.py"


def project_module(dotted: str) -> str | None:
    """The longest prefix of `dotted` that is a project module, or None (not ours)."""
    parts = dotted.split(".")
    while parts:
        name = ".".join(parts)
        if name in modules():
            return name
        parts.pop()
    return None


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str):
        self.module = module
        self.depth = 0  # function bodies entered
        self.found: list[Import] = []

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _add(self, dotted: str, line: int) -> None:
        target = project_module(dotted)
        if target is not None and target != self.module:
            self.found.append(Import(self.module, target, line, MODULE_LEVEL if self.depth == 0 else IN_FUNCTION))

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and (m := REFERENCE.match(node.value)):
            self.found.append(Import(self.module, m.group(1), node.lineno, BY_NAME, m.group(2)))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            package = self.module.split(".") if is_package(self.module) else self.module.split(".")[:-1]
            base = package[: len(package) - (node.level - 1)]
            base_name = ".".join(base + ([node.module] if node.module else []))
        else:
            base_name = node.module or ""
        for alias in node.names:
            sub = f"{base_name}.{alias.name}" if base_name else alias.name
            self._add(sub if sub in modules() else base_name, node.lineno)


@cache
def imports() -> tuple[Import, ...]:
    out: list[Import] = []
    for module, path in modules().items():
        collector = _Collector(module)
        collector.visit(ast.parse(path.read_text(), filename=str(path)))
        out += dict.fromkeys(collector.found)  # `from x import a, b`: one edge
    return tuple(out)


def defined_names(module: str) -> set[str]:
    """Names bound at the top level of `module` (defs, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(modules()[module].read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    return names


def under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_scan_sees_the_project():
    found = modules()
    assert {"nas", "nas.space", "nas.strategies.base", "workers", "search_spaces.resnet"} <= set(found)
    edges = {(i.source, i.target) for i in imports()}
    assert ("nas.strategies.base", "nas.strategies.ledger") in edges  # from nas.strategies.ledger import ...
    assert ("search_spaces.resnet", "nas.space") in edges
    assert any(i.how == IN_FUNCTION for i in imports()) and any(i.how == BY_NAME for i in imports())


def test_references_by_name_resolve():
    bad = [f"{i}: {i.target!r} is not a module of the project" if i.target not in modules()
           else f"{i}: {i.target} defines no {i.attr!r}"
           for i in imports() if i.how == BY_NAME
           and (i.target not in modules() or i.attr not in defined_names(i.target))]
    assert not bad, "'module:attr' references that do not resolve:\n  " + "\n  ".join(bad)


def test_no_import_cycle():
    g = nx.DiGraph()
    g.add_nodes_from(modules())
    by_edge: dict[tuple[str, str], Import] = {}
    for i in imports():
        if i.statement:
            g.add_edge(i.source, i.target)
            by_edge.setdefault((i.source, i.target), i)
    cycles = []
    for component in nx.strongly_connected_components(g):
        if len(component) > 1:
            cycle = nx.find_cycle(g.subgraph(component))
            cycles.append(f"{len(component)} modules {sorted(component)}; one cycle:\n    "
                          + "\n    ".join(str(by_edge[e]) for e in cycle))
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def test_nas_does_not_import_workers_at_module_level():
    bad = [str(i) for i in imports() if under(i.source, "nas") and under(i.target, "workers") and i.module_level]
    assert not bad, "nas imports workers at module level:\n  " + "\n  ".join(bad)


def test_nas_imports_workers_only_lazily_from_the_listed_modules():
    found: dict[str, set[str]] = {}
    lines: dict[str, list[str]] = {}
    for i in imports():
        if under(i.source, "nas") and under(i.target, "workers"):
            found.setdefault(i.source, set()).add(i.target)
            lines.setdefault(i.source, []).append(str(i))
    print("nas modules allowed to import workers lazily (in a function or by name):", NAS_LAZY_WORKER_IMPORTS)
    print("nas modules importing workers now:", found)
    unlisted = {m: t for m, t in found.items() if not t <= NAS_LAZY_WORKER_IMPORTS.get(m, set())}
    stale = {m: t for m, t in NAS_LAZY_WORKER_IMPORTS.items() if found.get(m, set()) != t}
    assert not unlisted, ("nas modules import workers outside NAS_LAZY_WORKER_IMPORTS:\n  "
                          + "\n  ".join(line for m in unlisted for line in lines[m]))
    assert not stale, f"NAS_LAZY_WORKER_IMPORTS lists imports that are gone (shrink the list): {stale}"


def test_search_spaces_do_not_import_strategies_or_darts():
    bad = [str(i) for i in imports() if under(i.source, "search_spaces")
           and (under(i.target, "nas.strategies") or under(i.target, "nas.darts"))]
    assert not bad, "search_spaces imports nas.strategies / nas.darts:\n  " + "\n  ".join(bad)


@pytest.mark.parametrize("driver", ["nas.search", "nas.cli", "nas.darts.plan"])
def test_workers_do_not_import_the_driver(driver):
    bad = [str(i) for i in imports() if under(i.source, "workers") and under(i.target, driver)]
    assert not bad, f"workers import {driver}:\n  " + "\n  ".join(bad)


def test_the_architecture_doc_describes_each_package():
    doc = REPO / "docs" / "ARCHITECTURE.md"
    assert doc.is_file(), f"{doc.relative_to(REPO)} does not exist"
    text = doc.read_text()
    missing = [pkg for pkg in PACKAGES if not re.search(rf"(?<![\w.]){pkg}(?!\w)", text)]
    assert not missing, f"{doc.relative_to(REPO)} does not mention {missing}"
