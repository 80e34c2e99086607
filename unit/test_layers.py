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
PURE_HELPERS = [
    PACKAGE / f"{name}.py"
    for name in ("pki", "passwords", "dockerconfig", "dockerauth", "accounts", "goduration")
]


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


IMAGEREGISTRY_PARTS = sorted((PACKAGE / "controllers" / "imageregistry").glob("*.py"))
IMAGEREGISTRY_WATCHES = "registry_operator.controllers.imageregistry.watches"


@pytest.mark.parametrize("path", IMAGEREGISTRY_PARTS, ids=lambda p: p.name)
def test_imageregistry_parts_do_not_import_the_reconciler(path: Path) -> None:
    # The parts (tls, keys, config, workload, readiness) talk through API objects and plain values;
    # only the reconciler knows the order of them; only watches (which wires it into the manager)
    # builds it, and only the package re-exports it.
    if path.name in ("__init__.py", "reconciler.py", "watches.py"):
        return
    top = {"registry_operator.controllers.imageregistry.reconciler", IMAGEREGISTRY_WATCHES}
    bad = own_imports(path) & top
    assert not bad, f"controllers/imageregistry/{path.name} imports {sorted(bad)}"


def test_imageregistry_reconciler_does_not_import_its_wiring() -> None:
    # watches.py builds the reconciler over the caches it sets up; the reconciler only reads stores.
    path = PACKAGE / "controllers" / "imageregistry" / "reconciler.py"
    imports = own_imports(path)
    assert IMAGEREGISTRY_WATCHES not in imports
    informers = imports & INFORMER_STACK_MODULES
    assert not informers, f"the reconciler reads stores, not informers, but imports {sorted(informers)}"


def test_status_mechanism_is_the_only_condition_writer() -> None:
    # One way to write conditions: controllers/status.py. Nobody else calls set_condition.
    writers = [
        path.relative_to(PACKAGE).as_posix()
        for path in sorted((PACKAGE / "controllers").rglob("*.py"))
        if "set_condition" in path.read_text() and path.name != "status.py"
    ]
    assert not writers, f"these modules set conditions themselves instead of using status.py: {writers}"


# Inside the framework, the client's layers point one way too (client-go: errors <- rest <- typed
# clients): errors know no transport, the retry policy and the watch decoder know no client.
CLIENT_LAYERS = {
    "errors.py": set(),
    "retry.py": {"registry_operator.kube.errors"},
    "watch.py": {"registry_operator.kube.errors", "registry_operator.kube.resources"},
    "rest.py": {
        "registry_operator",
        "registry_operator.kube",
        "registry_operator.kube.clock",
        "registry_operator.kube.errors",
        "registry_operator.kube.retry",
    },
}


@pytest.mark.parametrize("name", sorted(CLIENT_LAYERS))
def test_client_layers_import_only_what_is_below_them(name: str) -> None:
    imports = own_imports(PACKAGE / "kube" / name)
    extra = imports - CLIENT_LAYERS[name]
    assert not extra, (
        f"kube/{name} may import only {sorted(CLIENT_LAYERS[name])}, but imports {sorted(extra)}"
    )


# The informer stack points one way (client-go: reflector <- shared informer <- factory): each module
# imports only those before it, and none of them the controller machinery built on top.
INFORMER_STACK = ["transforms.py", "reflector.py", "informer.py", "byname.py", "factory.py"]
INFORMER_STACK_MODULES = {f"registry_operator.kube.{name.removesuffix('.py')}" for name in INFORMER_STACK}
ABOVE_THE_INFORMERS = {
    f"registry_operator.kube.{name}"
    for name in ("controller", "workqueue", "manager", "leaderelection", "events", "metrics")
}


@pytest.mark.parametrize("name", INFORMER_STACK)
def test_informer_stack_imports_only_what_is_below(name: str) -> None:
    later = INFORMER_STACK[INFORMER_STACK.index(name) + 1 :]
    forbidden = {f"registry_operator.kube.{n.removesuffix('.py')}" for n in later} | ABOVE_THE_INFORMERS
    bad = own_imports(PACKAGE / "kube" / name) & forbidden
    assert not bad, f"kube/{name} imports {sorted(bad)}, which build on it"


def test_controllers_do_not_import_the_authn_sidecar() -> None:
    # What reconcilers share with the sidecar (expiry, password check, shim, port) is in accounts.py.
    for path in sorted((PACKAGE / "controllers").rglob("*.py")):
        bad = {m for m in own_imports(path) if m == "registry_operator.authn"}
        bad |= {f"registry_operator.{alias}" for alias in _from_package_imports(path) if alias == "authn"}
        assert not bad, f"controllers/{path.relative_to(PACKAGE / 'controllers')} imports {sorted(bad)}"


def _from_package_imports(path: Path) -> set[str]:
    """Names imported by `from registry_operator import x, y`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "registry_operator" and node.level == 0
        for alias in node.names
    }


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
