"""The layer rule of ARCHITECTURE.md, checked on the imports of every module (read with ``ast``, nothing run).

A module imports only its own group and lower layers; groups side by side on one layer stay apart; the REPL
worker imports the standard library alone; optional frameworks are imported at module level only where their
extra is the point; Typer only in the CLI; and the import graph has no cycles.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS: list[tuple[int, str, tuple[str, ...]]] = [
    # (layer, group, module names: a name covers its submodules); the first match wins
    (6, "cli and bench", ("recursa.cli", "recursa._cli_options", "recursa.bench", "recursa.mcp_server.__main__")),
    (5, "mcp server", ("recursa.mcp_server",)),
    (5, "openai server", ("recursa.serve",)),
    (5, "langchain adapter", ("recursa.integrations.langchain",)),
    (5, "langgraph adapter", ("recursa.integrations.langgraph",)),
    (5, "llamaindex adapter", ("recursa.integrations.llamaindex",)),
    (5, "adapters' face", ("recursa.integrations",)),
    (4, "package face", ("recursa",)),  # exactly recursa/__init__.py: the names users import
    (3, "core loop", ("recursa._loop", "recursa._transcript", "recursa._grounding", "recursa._answer_kind",
                      "recursa._progress",
                      "recursa._view", "recursa._sources")),
    (2, "sandbox", ("recursa.sandbox",)),
    (2, "model clients", ("recursa._openai", "recursa._local", "recursa._scripted", "recursa._cache",
                          "recursa._model_store", "recursa._defaults")),
    (1, "foundation", ("recursa._exceptions", "recursa._lm", "recursa._budget", "recursa._pricing",
                       "recursa._parsing", "recursa._prompts", "recursa._text", "recursa._trace", "recursa._context",
                       "recursa._files")),
]
ALLOWED_ACROSS = {("recursa.integrations.langgraph", "recursa.integrations.langchain")}
"""Imports between groups of one layer that are meant: the LangGraph adapter builds on the LangChain one (one
extra, and it re-exports its tools)."""
WORKER = "recursa.sandbox._worker"
OPTIONAL: dict[str, tuple[str, ...]] = {
    # top-level package -> the groups that may import it when they are imported (everyone else: in a function)
    "langchain": ("langchain adapter",), "langchain_core": ("langchain adapter", "langgraph adapter"),
    "langgraph": ("langchain adapter", "langgraph adapter"), "llama_index": ("llamaindex adapter",),
    "mcp": ("mcp server",), "starlette": ("openai server",), "uvicorn": ("openai server",),
    "llama_cpp": (), "matplotlib": (),
    "typer": ("cli and bench",), "click": ("cli and bench",),
}
KNOWN_CYCLES: set[frozenset[str]] = set()
"""Cycles reported but not yet removed (none now); an entry must go once its cycle is gone."""


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    """A module of the project, or ``"<top-level package>"`` in angle brackets for anything else."""
    lazy: bool
    """Inside a function: done when it runs, not when the module is imported."""
    line: int
    typing_only: bool = False
    """Under ``if TYPE_CHECKING``: never imported at run time, but still a tie between the two modules."""

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line}{', in a function' if self.lazy else ''})"


def project_modules() -> dict[str, Path]:
    """Module name -> file, through the package-dir mapping of pyproject.toml."""
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    modules: dict[str, Path] = {}
    for package, folder in sorted(setup["package-dir"].items(), key=lambda item: -len(item[1])):
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules.setdefault(".".join([package, *parts]), path)
    return modules


MODULES = project_modules()


def imports_of(name: str, path: Path) -> Iterator[Import]:
    """Every import in the module, resolved to a project module where it names one (``TYPE_CHECKING`` ones marked)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def walk(node: ast.AST, lazy: bool, typing_only: bool) -> Iterator[tuple[str, bool, int, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                yield from ((alias.name, lazy, child.lineno, typing_only) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - child.level + 1],
                                     *([child.module] if child.module else [])])
                yield from ((f"{base}.{alias.name}", lazy, child.lineno, typing_only) for alias in child.names)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):  # for type checkers only
                yield from walk(ast.Module(child.body, []), lazy, True)
                yield from walk(ast.Module(child.orelse, []), lazy, typing_only)
            else:
                yield from walk(child, lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef), typing_only)

    for dotted, lazy, line, typing_only in walk(ast.parse(path.read_text(encoding="utf-8")), False, False):
        if name.startswith(WORKER) and dotted.split(".")[0] == "_worker":  # the worker's own package, run as a dir
            dotted = f"{WORKER}.{dotted.partition('.')[2]}"
        target = dotted
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if target != name:
            yield Import(name, target or f"<{dotted.split('.')[0]}>", lazy, line, typing_only)


TYPED_IMPORTS = list(dict.fromkeys(i for name, path in sorted(MODULES.items()) for i in imports_of(name, path)))
IMPORTS = [i for i in TYPED_IMPORTS if not i.typing_only]
"""What runs: the layer rules are about these; the cycle check counts type-only imports too."""


def group_of(name: str) -> tuple[int, str]:
    for layer, group, names in LAYERS:
        if any(name == n or (name.startswith(n + ".") and n != "recursa") for n in names):
            return layer, group
    raise AssertionError(f"{name} is in no layer: add it to LAYERS here and to ARCHITECTURE.md")


def test_every_module_has_a_layer() -> None:
    assert len(MODULES) > 50  # the mapping was read: core, sandbox, worker, bench, serve, adapters, MCP server
    for name in MODULES:
        group_of(name)


def test_modules_import_only_their_own_group_and_lower_layers() -> None:
    wrong = []
    for imp in IMPORTS:
        if imp.target.startswith("<"):
            continue
        (layer, group), (to_layer, to_group) = group_of(imp.source), group_of(imp.target)
        if to_group != group and to_layer >= layer and (imp.source, imp.target) not in ALLOWED_ACROSS:
            wrong.append(f"{imp}: {group} (layer {layer}) may not import {to_group} (layer {to_layer})")
    assert wrong == []


def test_the_repl_worker_imports_the_standard_library_alone() -> None:
    worker = [i for i in IMPORTS if i.source.startswith(WORKER)]
    assert worker, "the worker's modules were not found"
    outside = [str(i) for i in worker if not (i.target.startswith(WORKER) or
                                              i.target.strip("<>") in sys.stdlib_module_names)]
    assert outside == []


@pytest.mark.parametrize("package", sorted(OPTIONAL))
def test_optional_packages_are_imported_at_module_level_only_where_they_belong(package: str) -> None:
    wrong = [str(i) for i in IMPORTS
             if i.target == f"<{package}>" and not i.lazy and group_of(i.source)[1] not in OPTIONAL[package]]
    assert wrong == []


def cycles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while (top := stack.pop()) != node:
                component.add(top)
            component.add(node)
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycles() -> None:
    """Imports inside functions count: a module that needs another at run time depends on it all the same; and so
    do ``TYPE_CHECKING`` ones: two modules that name each other's types cannot be understood one before the other."""
    edges: dict[str, set[str]] = {}
    for imp in TYPED_IMPORTS:
        if not imp.target.startswith("<"):
            edges.setdefault(imp.source, set()).add(imp.target)
    found = set(cycles(edges))
    assert found - KNOWN_CYCLES == set(), "new import cycles"
    assert KNOWN_CYCLES - found == set(), "a known cycle is gone: remove it from KNOWN_CYCLES"


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset({"a", "b", "c"})]
