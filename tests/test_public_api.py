"""The public surface: every public name is in ``__all__`` and nothing else is (httpx's test_exported_members).

Package faces (``recursa``, ``recursa.mcp_server``, ``recursa.integrations``) only hand names on: every name
they show without a leading underscore, submodules aside, is in ``__all__``. Modules that define the API
(the adapters) list every public definition in ``__all__``, and re-export only what a sibling exports.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from types import ModuleType

import pytest

EXTRAS = {
    "recursa.mcp_server": ("mcp", "mcp"),
    "recursa.integrations.langchain": ("langgraph", "langgraph"),
    "recursa.integrations.langgraph": ("langgraph", "langgraph"),
    "recursa.integrations.llamaindex": ("llama_index.core", "llamaindex"),
}
"""Module -> (the package it needs, the extra that installs it)."""
FACES = ["recursa", "recursa.mcp_server", "recursa.integrations"]
ADAPTERS = ["recursa.integrations.langchain", "recursa.integrations.langgraph", "recursa.integrations.llamaindex"]


def load(name: str) -> ModuleType:
    if name in EXTRAS:
        needs, extra = EXTRAS[name]
        pytest.importorskip(needs, reason=f"{name} needs pip install 'recursa[{extra}]'")
    return importlib.import_module(name)


def shown_names(module: ModuleType) -> list[str]:
    """What ``from module import *`` would give without ``__all__``: public attributes that are not submodules."""
    return sorted(n for n, v in vars(module).items() if not n.startswith("_") and not isinstance(v, ModuleType))


def defined_names(module: ModuleType) -> set[str]:
    """The public names a module's own top-level statements define (classes, functions, constants)."""
    names: set[str] = set()
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_")}


@pytest.mark.parametrize("name", FACES)
def test_a_package_face_exports_exactly_the_names_it_shows(name: str) -> None:
    for adapter in ADAPTERS:  # importing them adds submodule attributes to the face, never public names
        if name == "recursa.integrations" and importlib.util.find_spec(EXTRAS[adapter][0]) is not None:
            importlib.import_module(adapter)
    module = load(name)
    assert sorted(module.__all__) == shown_names(module)
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("name", ADAPTERS)
def test_an_adapter_exports_its_definitions_and_only_what_siblings_export(name: str) -> None:
    module = load(name)
    exported = set(module.__all__)
    assert defined_names(module) - exported == set(), "public definitions missing from __all__ (or make them _private)"
    assert all(hasattr(module, n) for n in exported)
    siblings = set().union(*(load(other).__all__ for other in ADAPTERS if other != name and _importable(other)))
    assert exported - defined_names(module) - siblings == set(), "re-exports that no sibling exports"


def _importable(name: str) -> bool:
    return importlib.util.find_spec(EXTRAS[name][0]) is not None
