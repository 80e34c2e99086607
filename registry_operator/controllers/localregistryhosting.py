"""KEP-1755: the `local-registry-hosting` ConfigMap in `kube-public` for the operator's default
registry (opt-in: `OPERATOR_LOCAL_REGISTRY_HOSTING=true`), so tools like Tilt and ctlptl find it.

The ConfigMap is written once the default ImageRegistry publishes a hostname and is Ready, and is
deleted when the registry goes away, but only while it carries this operator's managed-by label: a
ConfigMap someone else (kind, minikube, ctlptl) created is never touched. It needs the cluster-wide
install (write access to ConfigMaps in kube-public).
"""

from __future__ import annotations

from typing import Any, Final

import structlog
import yaml

from registry_operator.api import constants as c
from registry_operator.config import Settings
from registry_operator.controllers.resources import CONFIGMAPS, IMAGE_REGISTRIES
from registry_operator.kube import objects
from registry_operator.kube.cache import Store
from registry_operator.kube.client import Client
from registry_operator.kube.controller import Controller, Request, Result
from registry_operator.kube.errors import NotFound
from registry_operator.kube.manager import Manager

log = structlog.get_logger("registry_operator.localregistryhosting")

CONTROLLER_NAME: Final = "localregistryhosting"
CONFIGMAP_NAMESPACE: Final = "kube-public"
CONFIGMAP_NAME: Final = "local-registry-hosting"
DATA_KEY: Final = "localRegistryHosting.v1"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "registry-operator"
FIELD_MANAGER: Final = "registry-operator-localregistryhosting"
HELP_URL: Final = "https://github.com/mgoltzsche/image-registry-operator#usage"


def desired_configmap(hostname: str) -> dict[str, Any]:
    """KEP-1755 `LocalRegistryHostingV1`: the same name from the developer's view, the runtime's
    (with node trust installed) and the cluster network's."""
    hosting = {
        "host": hostname,
        "hostFromContainerRuntime": hostname,
        "hostFromClusterNetwork": hostname,
        "help": HELP_URL,
    }
    return {
        "metadata": {
            "name": CONFIGMAP_NAME,
            "namespace": CONFIGMAP_NAMESPACE,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY},
        },
        "data": {DATA_KEY: yaml.safe_dump(hosting, sort_keys=False)},
    }


def _ready_hostname(registry: dict[str, Any] | None) -> str | None:
    if registry is None or objects.is_deleting(registry):
        return None
    ready = objects.condition(registry, c.CONDITION_READY)
    hostname = (registry.get("status") or {}).get("hostname")
    return str(hostname) if hostname and ready is not None and ready.get("status") == "True" else None


class LocalRegistryHostingReconciler:
    def __init__(self, client: Client, registries: Store, configmaps: Store, settings: Settings) -> None:
        self._client, self._registries, self._configmaps = client, registries, configmaps
        self._namespace, self._name = settings.default_registry_namespace, settings.default_registry_name
        self.request = Request(CONFIGMAP_NAMESPACE, CONFIGMAP_NAME)

    def reconcile(self, request: Request) -> Result | None:
        hostname = _ready_hostname(self._registries.get_by_name(self._namespace, self._name))
        current = self._configmaps.get_by_name(CONFIGMAP_NAMESPACE, CONFIGMAP_NAME)
        ours = current is None or objects.labels(current).get(LABEL_MANAGED_BY) == MANAGED_BY
        if not ours:
            log.info("kube-public/local-registry-hosting belongs to someone else; left alone")
            return None
        if hostname is None:
            if current is not None:
                self._client.delete(
                    CONFIGMAPS, CONFIGMAP_NAME, CONFIGMAP_NAMESPACE, uid=objects.uid(current), missing_ok=True
                )
                log.info("deleted kube-public/local-registry-hosting: the default registry is gone")
            return None
        desired = desired_configmap(hostname)
        if current is not None and current.get("data") == desired["data"]:
            return None  # steady state: no write
        try:
            if current is not None:
                # Conditional: the hostname comes from a cache, and a writer with an older one (a
                # deposed leader) must not put a previous hostname back.
                desired["metadata"]["resourceVersion"] = objects.resource_version(current)
            self._client.apply(CONFIGMAPS, desired, field_manager=FIELD_MANAGER, force=True)
        except NotFound:  # kube-public missing (a bare API server): say so, retry later
            log.warning("namespace kube-public does not exist; local-registry-hosting not written")
            return Result(requeue_after=60)
        return None


def setup(manager: Manager, settings: Settings) -> None:
    if not settings.local_registry_hosting:
        return  # opt-in
    registries = manager.informers.informer(
        IMAGE_REGISTRIES,
        namespace=settings.default_registry_namespace,
        field_selector=f"metadata.name={settings.default_registry_name}",
    )
    configmaps = manager.informers.informer(
        CONFIGMAPS, namespace=CONFIGMAP_NAMESPACE, field_selector=f"metadata.name={CONFIGMAP_NAME}"
    )
    reconciler = LocalRegistryHostingReconciler(manager.client, registries.store, configmaps.store, settings)

    def to_configmap(_: dict[str, Any]) -> list[Request]:
        return [reconciler.request]

    controller = (
        Controller(CONTROLLER_NAME, reconciler)
        .watch_mapped(registries, to_configmap)
        .watch_mapped(configmaps, to_configmap)
    )
    controller.enqueue(reconciler.request)
    manager.add_controller(controller)
