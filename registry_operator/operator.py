"""Process entry points: the operator (`registry-operator run`) and the registry pods' authn sidecar
(`registry-operator authn-server`)."""

from __future__ import annotations

import signal
import sys
import threading
from functools import partial
from types import FrameType
from typing import Final

import structlog

from registry_operator import __version__, controllers, logsetup, metrics
from registry_operator.accounts import DEFAULT_AUTHN_PORT
from registry_operator.authn import AuthnHTTPServer
from registry_operator.config import ConfigError, Settings, load_settings
from registry_operator.controllers.resources import (
    IMAGE_BUILD_ENVS,
    IMAGE_PULL_SECRETS,
    IMAGE_PUSH_SECRETS,
    IMAGE_REGISTRIES,
    IMAGE_REGISTRY_ACCOUNTS,
    SERVICE_ACCOUNTS,
)
from registry_operator.kube.client import Client
from registry_operator.kube.factory import SharedInformerFactory
from registry_operator.kube.manager import Manager, ManagerOptions
from registry_operator.kube.transforms import strip_managed_fields

log = structlog.get_logger("registry_operator")

EXIT_CONFIG_ERROR = 2


def _fail(message: str) -> int:
    # One clear line for the user, never a traceback: these are configuration mistakes.
    print(f"registry-operator: {message}", file=sys.stderr)
    return EXIT_CONFIG_ERROR


# Kinds whose cached copies the controllers write back whole (PUT: finalizers, imagePullSecrets):
# their caches keep kubectl's last-applied annotation, which such a PUT would otherwise remove and
# so break the user's next `kubectl apply`. Everything else is cached without it.
PUT_FROM_CACHE: Final = (IMAGE_PUSH_SECRETS, IMAGE_PULL_SECRETS, SERVICE_ACCOUNTS)


def build_manager(client: Client, settings: Settings, controller_names: list[str]) -> Manager:
    options = ManagerOptions(
        bind_address=settings.metrics_bind_address,
        health_bind_address=settings.health_probe_bind_address,
        leader_election=settings.leader_election,
        leader_election_id=settings.leader_election_lease_name,
        leader_election_namespace=settings.operator_namespace,
        cache_transforms=dict.fromkeys(PUT_FROM_CACHE, strip_managed_fields),
    )
    manager = Manager(client, options)
    controllers.setup(manager, settings, controller_names)
    export_readiness(manager)
    return manager


def export_readiness(manager: Manager) -> None:
    """Feed `registry_operator_ready` from the informers the selected controllers created for their
    own kinds (no new watches: a kind whose controller is not running has no series)."""
    kinds = {r.kind: r for r in (IMAGE_REGISTRIES, IMAGE_PUSH_SECRETS, IMAGE_PULL_SECRETS, IMAGE_BUILD_ENVS)}
    for key, informer in manager.informers.informers().items():
        resource = kinds.get(key.resource.kind)
        if resource == key.resource and not key.label_selector and not key.field_selector:
            metrics.READINESS.watch(resource.kind, partial(informer.store.list, copy=False))


def run_operator(*, controller_spec: str = "*", kubeconfig: str | None = None) -> int:
    logsetup.configure()
    try:
        settings = load_settings()
        names = controllers.select(controller_spec)
    except (ConfigError, controllers.UnknownControllerError) as err:
        return _fail(str(err))
    client = Client.load(kubeconfig)
    manager = build_manager(client, settings, names)
    log.info(
        "starting",
        version=__version__,
        controllers=names,
        watch_namespace=settings.watch_namespace or "(all)",
        operator_namespace=settings.operator_namespace,
    )
    return int(manager.run())


def run_authn_server(*, namespace: str, port: int = DEFAULT_AUTHN_PORT, kubeconfig: str | None = None) -> int:
    """Answer docker_auth's ext_auth (busybox wget) from an informer on this namespace's accounts only."""
    logsetup.configure()
    if not namespace:
        return _fail("authn-server needs --namespace (or the NAMESPACE env var)")
    client = Client.load(kubeconfig)
    informers = SharedInformerFactory(client)
    accounts = informers.informer(IMAGE_REGISTRY_ACCOUNTS, namespace=namespace)
    informers.start()
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if not accounts.wait_for_sync(timeout=120):
        log.error("account cache did not sync", namespace=namespace)
        return 1

    def lookup(username: str) -> dict[str, object] | None:
        return accounts.store.get_by_name(namespace, username)

    server = AuthnHTTPServer(lookup, port=port)
    thread = threading.Thread(target=server.serve_forever, name="authn-http", daemon=True)
    thread.start()
    log.info("authn-server listening", address=f"127.0.0.1:{server.port}", namespace=namespace)
    stop.wait()
    server.shutdown()
    informers.stop()
    return 0
