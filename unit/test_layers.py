"""Layers point one way: the framework and the pure helpers never import the operator's upper layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "registry_operator"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def own_imports(path: Path) -> set[str]:
    return {
        m for m in imported_modules(path) if m == "registry_operator" or m.startswith("registry_operator.")
    }


FRAMEWORK = sorted((PACKAGE / "kube").glob("*.py"))
PURE_HELPERS = [PACKAGE / f"{name}.py" for name in ("pki", "passwords", "dockerconfig", "dockerauth")]


@pytest.mark.parametrize("path", FRAMEWORK, ids=lambda p: p.name)
def test_framework_imports_only_itself(path: Path) -> None:
    # The package root holds only __version__ (the client's User-Agent); everything else is upper layers.
    foreign = {
        m
        for m in own_imports(path)
        if m != "registry_operator" and not m.startswith("registry_operator.kube")
    }
    assert not foreign, f"kube/{path.name} must not know the operator, but imports {sorted(foreign)}"


@pytest.mark.parametrize("path", PURE_HELPERS, ids=lambda p: p.name)
def test_pure_helpers_import_no_kubernetes_code(path: Path) -> None:
    imports = imported_modules(path)
    forbidden = {
        m
        for m in imports
        if m.startswith(("kubernetes", "registry_operator.kube", "registry_operator.controllers"))
    }
    assert not forbidden, f"{path.name} must stay pure, but imports {sorted(forbidden)}"


def test_api_does_not_import_controllers() -> None:
    for path in sorted((PACKAGE / "api").glob("*.py")):
        bad = {m for m in own_imports(path) if m.startswith("registry_operator.controllers")}
        assert not bad, f"api/{path.name} imports {sorted(bad)}"


NODE_AGENT = sorted((PACKAGE / "nodeagent").glob("*.py"))


@pytest.mark.parametrize("path", NODE_AGENT, ids=lambda p: p.name)
def test_node_agent_uses_only_framework_api_and_helpers(path: Path) -> None:
    allowed = ("registry_operator.kube", "registry_operator.api", "registry_operator.nodeagent")
    bad = {
        m
        for m in own_imports(path)
        if not m.startswith(allowed) and m not in {"registry_operator", "registry_operator.logsetup"}
    }
    assert not bad, f"nodeagent/{path.name} may use kube/ and api/ only, but imports {sorted(bad)}"


def test_node_agent_files_are_pure() -> None:
    imports = imported_modules(PACKAGE / "nodeagent" / "files.py")
    assert not {m for m in imports if m.startswith(("kubernetes", "registry_operator"))}
