"""ImagePullSecret → ServiceAccounts: attach the generated pull Secret to the ServiceAccounts named
in `spec.serviceAccounts` (`*`: all of the namespace, also ones created later), so their pods pull
without an `imagePullSecrets` edit (the ServiceAccount admission plugin copies the list into pods).

One reconcile per ServiceAccount: the entries it should carry are the Secrets of the ImagePullSecrets
of its namespace that select it (and are not being deleted). The operator adds an entry only when the
list lacks it, and records what it added in the annotation `ATTACHED_ANNOTATION`; it removes only
entries it recorded, so an entry a user wrote by hand (even one naming a generated Secret) survives
a CR's deletion. Writes are PUTs of the cached object with its resourceVersion: other entries and
their order stay, and a write that races another writer (the token controller, a GitOps tool) fails
with Conflict and is retried on fresh data instead of undoing it. (ServiceAccount.imagePullSecrets
is an atomic list: a strategic merge patch would replace it whole.)
No finalizer: a deleted CR's entries go when its delete event (or, after an operator restart, the
ServiceAccount's initial list event) reconciles the ServiceAccounts of its namespace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog

from registry_operator.api.imagesecret import SERVICE_ACCOUNTS_ALL
from registry_operator.api.names import pull_secret_name
from registry_operator.config import Settings
from registry_operator.controllers.common import FIELD_MANAGER, Object
from registry_operator.controllers.resources import IMAGE_PULL_SECRETS, SERVICE_ACCOUNTS
from registry_operator.kube import objects
from registry_operator.kube.cache import Store, json_copy
from registry_operator.kube.client import Client
from registry_operator.kube.controller import Controller, Request, RequestMapper, Result
from registry_operator.kube.errors import NotFound
from registry_operator.kube.manager import Manager

log = structlog.get_logger(__name__)

CONTROLLER_NAME: Final = "imagepullsecret-serviceaccounts"
# The pull Secrets this operator added to the ServiceAccount's imagePullSecrets, comma-separated.
ATTACHED_ANNOTATION: Final = "registry.mgoltzsche.github.com/attached-pull-secrets"
WORKERS: Final = 2


def selects(cr: Mapping[str, Any], service_account: str) -> bool:
    """Whether the ImagePullSecret wants its Secret on `service_account` (of its own namespace)."""
    wanted: Sequence[str] = (cr.get("spec") or {}).get("serviceAccounts") or []
    return SERVICE_ACCOUNTS_ALL in wanted or service_account in wanted


def attached(service_account: Mapping[str, Any]) -> set[str]:
    value = objects.annotations(service_account).get(ATTACHED_ANNOTATION) or ""
    return {name for name in value.split(",") if name}


@dataclass(frozen=True)
class Attachment:
    """What to change on one ServiceAccount; empty when it is as wanted."""

    add: tuple[str, ...]
    remove: tuple[str, ...]
    recorded: tuple[str, ...]  # the annotation's new content

    def applied_to(self, service_account: Mapping[str, Any]) -> Object:
        """The ServiceAccount with the change made: `add` appended, `remove` dropped, every other
        entry (and its place) kept. Written back with its resourceVersion, so it is conditional."""
        body: Object = json_copy(dict(service_account))
        kept = [entry for entry in body.get("imagePullSecrets") or [] if entry.get("name") not in self.remove]
        body["imagePullSecrets"] = kept + [{"name": name} for name in self.add]
        annotations = dict(objects.annotations(body))
        if self.recorded:
            annotations[ATTACHED_ANNOTATION] = ",".join(self.recorded)
        else:
            annotations.pop(ATTACHED_ANNOTATION, None)
        body["metadata"]["annotations"] = annotations
        return body


def plan(service_account: Mapping[str, Any], crs: Iterable[Mapping[str, Any]]) -> Attachment | None:
    """The change that brings the ServiceAccount's imagePullSecrets to what the CRs want, or None."""
    name = objects.name(service_account)
    wanted = {
        pull_secret_name(objects.name(cr)) for cr in crs if not objects.is_deleting(cr) and selects(cr, name)
    }
    present = {entry.get("name") for entry in service_account.get("imagePullSecrets") or []}
    recorded = attached(service_account)
    add = sorted(wanted - present)
    remove = sorted((recorded - wanted) & present)
    # Only entries the operator added are its own: one a user wrote first is never recorded.
    keep = sorted((recorded & wanted & present) | set(add))
    if not add and not remove and set(keep) == recorded:
        return None
    return Attachment(tuple(add), tuple(remove), tuple(keep))


class ServiceAccountReconciler:
    def __init__(self, client: Client, *, service_accounts: Store, pull_secrets: Store) -> None:
        self._client = client
        self._service_accounts = service_accounts
        self._pull_secrets = pull_secrets

    def reconcile(self, request: Request) -> Result | None:
        service_account = self._service_accounts.get_by_name(request.namespace, request.name, copy=False)
        if service_account is None or objects.is_deleting(service_account):
            return None
        change = plan(service_account, self._pull_secrets.list(request.namespace, copy=False))
        if change is None:
            return None
        try:
            self._client.update(
                SERVICE_ACCOUNTS, change.applied_to(service_account), field_manager=FIELD_MANAGER
            )
        except NotFound:
            return None  # deleted meanwhile: nothing to attach to
        log.info(
            "updated imagePullSecrets",
            service_account=f"{request.namespace}/{request.name}",
            added=list(change.add),
            removed=list(change.remove),
        )
        return None


def namespace_mapper(service_accounts: Store) -> RequestMapper:
    """ImagePullSecret → every ServiceAccount of its namespace (any of them may gain or lose it)."""

    def mapped(cr: Object) -> list[Request]:
        return [Request.from_object(sa) for sa in service_accounts.list(objects.namespace(cr), copy=False)]

    return mapped


def setup(manager: Manager, settings: Settings) -> None:
    namespace = settings.watch_namespace or None
    informers = manager.informers
    service_accounts = informers.informer(SERVICE_ACCOUNTS, namespace=namespace)
    pull_secrets = informers.informer(IMAGE_PULL_SECRETS, namespace=namespace)
    reconciler = ServiceAccountReconciler(
        manager.client, service_accounts=service_accounts.store, pull_secrets=pull_secrets.store
    )
    controller = Controller(CONTROLLER_NAME, reconciler, max_concurrent_reconciles=WORKERS)
    controller.watch_for(service_accounts)
    controller.watch_mapped(pull_secrets, namespace_mapper(service_accounts.store))
    manager.add_controller(controller)
