"""One reconciler per CRD. Each module exposes `setup(manager, settings)`, which registers its
controller(s), informers and indexes with the manager.

`registry-operator run --controllers` selects a subset (like kube-controller-manager's flag), which
the e2e tests use to exercise one controller at a time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable

from registry_operator.config import Settings
from registry_operator.kube.manager import Manager

SetupFunc = Callable[[Manager, Settings], None]

# name -> module under registry_operator.controllers
CONTROLLERS: dict[str, str] = {
    "caroot": "caroot",
    "imageregistry": "imageregistry",
    "imageregistryaccount": "imageregistryaccount",
    "imagesecret": "imagesecret",  # ImagePushSecret and ImagePullSecret share one reconciler
    "imagebuildenv": "imagebuildenv",
    "serviceaccounts": "serviceaccounts",  # ImagePullSecret.spec.serviceAccounts
    "localregistryhosting": "localregistryhosting",  # KEP-1755, opt-in (OPERATOR_LOCAL_REGISTRY_HOSTING)
}


class UnknownControllerError(ValueError):
    pass


def select(spec: str) -> list[str]:
    """Parse `*`, `a,b` or `*,-a` into controller names, in registry order."""
    wanted: set[str] = set()
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        name = item.lstrip("-")
        if name != "*" and name not in CONTROLLERS:
            raise UnknownControllerError(
                f"unknown controller {name!r}; known: {', '.join(CONTROLLERS)} (or * for all)"
            )
        names = set(CONTROLLERS) if name == "*" else {name}
        if item.startswith("-"):
            wanted -= names
        else:
            wanted |= names
    return [name for name in CONTROLLERS if name in wanted]


def setup(manager: Manager, settings: Settings, names: Iterable[str]) -> None:
    for name in names:
        module = importlib.import_module(f"{__name__}.{CONTROLLERS[name]}")
        setup_func: SetupFunc = module.setup
        setup_func(manager, settings)
