"""`registry-operator node-agent`: make a node's container runtimes trust and reach the registries.

Inputs are what the operator publishes, read-only:
* ImageRegistry objects (informer, all namespaces or `--namespace`, optional `--selector`):
  `status.hostname`, `status.caBundle` (the CAs to trust; during a CA rollover old + new),
  `status.tlsSecretName` and the Ready condition;
* for a registry without `status.caBundle` (an older operator): its TLS Secret, key `ca.crt` (a
  `get` by name: the agent never lists Secrets);
* in `--dns=hosts` mode the registry's Service (same name as the ImageRegistry), `spec.clusterIP`.

The CA can change without the ImageRegistry changing (rotation of the root CA or of a cert-manager
issuer), so besides reacting to ImageRegistry events the agent re-reads every `--resync-period`.
A registry that has been trusted stays trusted while it exists, even while it is not Ready (a
rollout must not drop trust); it is removed when the ImageRegistry is deleted or stops matching.
SIGTERM / SIGINT stop the agent and keep the files (a DaemonSet rollout must not break pulls);
`--cleanup` removes everything the agent wrote and exits (the uninstall step, see README).
"""

from __future__ import annotations

import base64
import binascii
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

import structlog

from registry_operator.api import constants as c
from registry_operator.kube import objects
from registry_operator.kube.client import Client
from registry_operator.kube.errors import ApiError, NotFound
from registry_operator.kube.factory import SharedInformerFactory
from registry_operator.kube.informer import EventHandlerFuncs
from registry_operator.kube.resources import SECRETS, SERVICES, Resource
from registry_operator.nodeagent.files import DnsMode, Layout, NodeFiles, RegistryTrust

log = structlog.get_logger("registry_operator.nodeagent")

IMAGE_REGISTRIES = Resource(c.GROUP, c.VERSION, c.PLURAL_IMAGE_REGISTRIES, c.KIND_IMAGE_REGISTRY)

Object = dict[str, Any]


@dataclass(frozen=True)
class AgentOptions:
    layout: Layout
    namespace: str | None = None
    selector: str | None = None
    resync_period: float = 30.0


def _is_ready(registry: Object) -> bool:
    condition = objects.condition(registry, c.CONDITION_READY)
    return condition is not None and condition.get("status") == "True"


def _ca_of(secret: Object) -> bytes | None:
    value = (secret.get("data") or {}).get(c.SECRET_KEY_CA_CERT)
    if not value:
        return None
    try:
        pem = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return pem if b"-----BEGIN CERTIFICATE-----" in pem else None


class NodeAgent:
    def __init__(self, client: Client, options: AgentOptions) -> None:
        self._client = client
        self._options = options
        self._files = NodeFiles(options.layout)
        self._informers = SharedInformerFactory(client)
        self._registries = self._informers.informer(
            IMAGE_REGISTRIES, namespace=options.namespace, label_selector=options.selector
        )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last: dict[str, RegistryTrust] = {}
        self.syncs = 0

    def _trust_for(self, registry: Object) -> RegistryTrust | None:
        key = objects.key(registry)
        status = registry.get("status") or {}
        host, secret_name = status.get("hostname"), status.get("tlsSecretName")
        previous = self._last.get(key)
        if not host or not secret_name or (previous is None and not _is_ready(registry)):
            return previous
        namespace, name = objects.namespace(registry), objects.name(registry)
        # The bundle the registry publishes: during a CA change it holds the previous and the next CA,
        # so the node trusts the registry before and after its certificate changes.
        published = str(status.get("caBundle") or "").encode()
        try:
            ca = published if b"-----BEGIN CERTIFICATE-----" in published else None
            if ca is None:
                ca = _ca_of(self._client.get(SECRETS, secret_name, namespace))
        except NotFound:
            ca = None
        except ApiError as error:
            log.warning(
                "cannot read the registry's TLS secret", registry=key, secret=secret_name, error=str(error)
            )
            return previous
        if ca is None:
            log.warning("the registry's TLS secret has no ca.crt yet", registry=key, secret=secret_name)
            return previous
        cluster_ip: str | None = None
        if self._options.layout.dns_mode is DnsMode.HOSTS:
            try:
                service = self._client.get(SERVICES, name, namespace)
                ip = (service.get("spec") or {}).get("clusterIP")
                cluster_ip = ip if ip and ip != "None" else None
            except NotFound:
                cluster_ip = None
            except ApiError as error:
                log.warning("cannot read the registry's Service", registry=key, error=str(error))
                cluster_ip = previous.cluster_ip if previous else None
        return RegistryTrust(key=key, host=str(host), ca_pem=ca, cluster_ip=cluster_ip)

    def sync_once(self) -> None:
        trusts: dict[str, RegistryTrust] = {}
        for registry in self._registries.store.list():
            if objects.is_deleting(registry):
                continue
            trust = self._trust_for(registry)
            if trust is not None:
                trusts[trust.key] = trust
        result = self._files.sync(trusts.values())
        self._last = trusts
        self.syncs += 1
        for conflict in result.conflicts:
            log.warning("left a file alone", detail=conflict)
        if result.changed:
            log.info(
                "node files synced",
                registries=sorted(trusts),
                written=[str(p) for p in result.written],
                removed=[str(p) for p in result.removed],
            )

    def _kick(self, *_: Any) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self) -> int:
        self._registries.add_event_handler(
            EventHandlerFuncs(add=self._kick, update=self._kick, delete=self._kick)
        )
        self._informers.start()
        try:
            if not self._registries.wait_for_sync(timeout=120):
                log.error("ImageRegistry cache did not sync")
                return 1
            log.info("node-agent started", host_root=str(self._options.layout.host_root))
            while not self._stop.is_set():
                self._wake.clear()
                started = time.monotonic()
                try:
                    self.sync_once()
                except OSError as error:  # disk full, read-only mount, ...: retry next round
                    log.error("writing node files failed", error=str(error))
                self._wake.wait(max(0.0, self._options.resync_period - (time.monotonic() - started)))
        finally:
            self._informers.stop()
        return 0


def run_node_agent(kubeconfig: str | None, options: AgentOptions, *, cleanup: bool = False) -> int:
    """The command: sync until SIGTERM / SIGINT (files stay), or with `cleanup` remove them all."""
    if cleanup:
        result = NodeFiles(options.layout).cleanup()
        for conflict in result.conflicts:
            log.warning("left a file alone", detail=conflict)
        log.info("node-agent cleanup done", removed=[str(p) for p in result.removed])
        return 0
    agent = NodeAgent(Client.load(kubeconfig), options)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        agent.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return agent.run()
