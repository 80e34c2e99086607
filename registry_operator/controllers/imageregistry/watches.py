"""What the ImageRegistry controller caches and what wakes it: the informers its reconciler reads
(children by the managed-by label, users' and cert-manager's Secrets by name, the root CA), the
registry indexes that map a Secret back to the registries using it, and `setup`, which builds the
reconciler over those caches and registers its watches with the manager (see the package docstring).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from registry_operator.api import constants as c
from registry_operator.api import names
from registry_operator.config import Settings
from registry_operator.controllers.common import MANAGED_LABEL_SELECTOR, Object, key_of
from registry_operator.controllers.imageregistry.base import RegistryStores
from registry_operator.controllers.imageregistry.garbagecollection import LABEL_GC
from registry_operator.controllers.imageregistry.reconciler import ImageRegistryReconciler
from registry_operator.controllers.imageregistry.storage import STORAGE_SECRET_INDEX, index_storage_secret
from registry_operator.controllers.resources import (
    CONFIGMAPS,
    IMAGE_REGISTRIES,
    JOBS,
    PERSISTENT_VOLUME_CLAIMS,
    POD_DISRUPTION_BUDGETS,
    PODS,
    ROLE_BINDINGS,
    ROLES,
    SECRETS,
    SERVICE_ACCOUNTS,
    SERVICES,
    STATEFULSETS,
)
from registry_operator.kube import objects
from registry_operator.kube.controller import (
    Controller,
    GenerationChangedPredicate,
    ResourceVersionChangedPredicate,
    index_mapper,
)
from registry_operator.kube.informer import SharedInformer
from registry_operator.kube.manager import Manager
from registry_operator.kube.resources import Resource

CONTROLLER_NAME: Final = "imageregistry"
EVENT_COMPONENT: Final = "imageregistry-controller"
MAX_CONCURRENT_RECONCILES: Final = 2

# Registry indexes: the user/cert-manager TLS Secret a registry reads ("ns/name"), and whether it
# uses the operator's root CA.
TLS_SECRET_INDEX: Final = "imageregistry-tls-secret"
ROOT_CA_INDEX: Final = "imageregistry-uses-root-ca"
ROOT_CA_INDEX_VALUE: Final = "root-ca"


def _tls_spec(registry: Mapping[str, Any]) -> Mapping[str, Any]:
    tls: Mapping[str, Any] = (registry.get("spec") or {}).get("tls") or {}
    return tls


def index_tls_secret(registry: Object) -> list[str]:
    """ "ns/name" of the Secret a registry reads but does not generate (user's or cert-manager's)."""
    tls = _tls_spec(registry)
    if not tls.get("issuerRef") and not tls.get("secretName"):
        return []
    secret = names.registry_tls_secret_name(
        objects.name(registry), tls.get("secretName"), bool(tls.get("issuerRef"))
    )
    return [key_of(objects.namespace(registry), secret)]


def index_uses_root_ca(registry: Object) -> list[str]:
    tls = _tls_spec(registry)
    return [] if tls.get("issuerRef") or tls.get("secretName") else [ROOT_CA_INDEX_VALUE]


def _secret_key(secret: Object) -> str | None:
    return key_of(objects.namespace(secret), objects.name(secret)) if objects.name(secret) else None


def _root_ca_value(_secret: Object) -> str:
    return ROOT_CA_INDEX_VALUE


def setup(manager: Manager, settings: Settings) -> None:
    namespace = settings.watch_namespace or None
    informers = manager.informers
    registries = informers.informer(
        IMAGE_REGISTRIES,
        namespace=namespace,
        indexers={
            TLS_SECRET_INDEX: index_tls_secret,
            ROOT_CA_INDEX: index_uses_root_ca,
            STORAGE_SECRET_INDEX: index_storage_secret,
        },
    )

    def owned(resource: Resource) -> SharedInformer:
        return informers.informer(resource, namespace=namespace, label_selector=MANAGED_LABEL_SELECTOR)

    children = {
        resource: owned(resource)
        for resource in (
            STATEFULSETS,
            SERVICES,
            SECRETS,
            CONFIGMAPS,
            SERVICE_ACCOUNTS,
            ROLES,
            ROLE_BINDINGS,
            PERSISTENT_VOLUME_CLAIMS,
            POD_DISRUPTION_BUDGETS,
            JOBS,
        )
    }
    # The garbage collector's pods (their termination message is its report); owned by the Job.
    gc_pods = informers.informer(
        PODS, namespace=namespace, label_selector=f"{MANAGED_LABEL_SELECTOR},{LABEL_GC}"
    )
    # Users' and cert-manager's TLS Secrets and S3 credentials: watched one by one, by the names the
    # registries give.
    referenced_secrets = informers.by_name(SECRETS)
    referenced_secrets.track_references(registries, index_tls_secret)
    referenced_secrets.track_references(registries, index_storage_secret)
    # Shared with the caroot controller (same key: same informer).
    root_ca = informers.informer(
        SECRETS,
        namespace=settings.operator_namespace,
        field_selector=f"metadata.name={c.ROOT_CA_SECRET_NAME}",
    )
    stores = RegistryStores(
        registries=registries.store,
        statefulsets=children[STATEFULSETS].store,
        services=children[SERVICES].store,
        managed_secrets=children[SECRETS].store,
        referenced_secrets=referenced_secrets.store,
        root_ca=root_ca.store,
        config_maps=children[CONFIGMAPS].store,
        service_accounts=children[SERVICE_ACCOUNTS].store,
        roles=children[ROLES].store,
        role_bindings=children[ROLE_BINDINGS].store,
        pvcs=children[PERSISTENT_VOLUME_CLAIMS].store,
        pdbs=children[POD_DISRUPTION_BUDGETS].store,
        jobs=children[JOBS].store,
        gc_pods=gc_pods.store,
    )
    reconciler = ImageRegistryReconciler(
        manager.client, stores, settings, recorder=manager.event_recorder(EVENT_COMPONENT)
    )
    changed = ResourceVersionChangedPredicate()
    controller = Controller(CONTROLLER_NAME, reconciler, max_concurrent_reconciles=MAX_CONCURRENT_RECONCILES)
    # Status writes (the operator's own, every reconcile that changes something) do not bump the
    # generation: filtering them out keeps a reconcile from triggering the next one.
    controller.watch_for(registries, GenerationChangedPredicate())
    for informer in children.values():
        controller.watch_owned(informer, IMAGE_REGISTRIES, changed)
    controller.watch_mapped(
        referenced_secrets, index_mapper(registries.store, TLS_SECRET_INDEX, _secret_key), changed
    )
    controller.watch_mapped(
        referenced_secrets, index_mapper(registries.store, STORAGE_SECRET_INDEX, _secret_key), changed
    )
    controller.watch_mapped(root_ca, index_mapper(registries.store, ROOT_CA_INDEX, _root_ca_value), changed)
    manager.add_controller(controller)
