"""The real operator under faults: replicas behind their own proxies with their own identities, a steady
flow of rotate-now annotations over ImagePullSecrets, and the checks and figures every scenario reports.

* `Replica`: `python -m registry_operator run` (imagesecret + imageregistryaccount controllers,
  watching the test's namespace only) with `POD_NAME` as its Lease identity, its own client
  certificate (audit user `operator-<name>`) and its own toxiproxy proxy in front of the
  kube-apiserver.
* `RotationFlow`: rotate-now annotations, one secret after another; a secret gets its next trigger
  only once its previous one was handled (`status.rotateRequest`), so exactly one new account per
  trigger is what a correct operator produces, and more is a double rotation.
* `RotationHistory`: every version of the pull Secrets and CRs the API server sent to a watch (an
  informer of the test's own, which relists after a broken watch); a Secret or CR whose rotation
  ever goes down moved back to an older credential.
* `audited_writes`: the API server's audit log of one user's writes after a point in time, accepted
  (2xx) or refused (409 Conflict / 412 / 422 test-op failures), so a deposed leader's writes are
  attributed by the API server itself.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from e2e.controllers.imagesecret_support import create_cr, make_registry, ready_condition, wait_for
from e2e.faults.toxiproxy import Toxiproxy
from e2e.support.operator import OPERATOR_NAMESPACE, OperatorProcess
from registry_operator.api import constants as c
from registry_operator.authn import Decision, authenticate
from registry_operator.controllers.common import decode_secret_data, now_utc
from registry_operator.controllers.imagesecret_desired import PULL
from registry_operator.controllers.resources import IMAGE_PULL_SECRETS, IMAGE_REGISTRY_ACCOUNTS, SECRETS
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube import objects
from registry_operator.kube.client import Client
from registry_operator.kube.errors import ApiError, ConnectionFailed, NotFound
from registry_operator.kube.factory import SharedInformerFactory
from registry_operator.kube.informer import EventHandlerFuncs
from registry_operator.kube.resources import LEASES

Object = dict[str, Any]
CONTROLLERS = "imagesecret,imageregistryaccount"
REFUSED_CODES = frozenset({409, 412, 422})


def parse_time(text: str) -> float:
    """An API server timestamp (RFC 3339, optional fraction, `Z`) as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def new_lease_name() -> str:
    return f"faults-{uuid.uuid4().hex[:8]}"


class Replica:
    """One operator replica behind its own proxy; restartable, as the Deployment would restart it."""

    def __init__(
        self,
        cluster: LocalCluster,
        logs: Path,
        toxiproxy: Toxiproxy | None,
        name: str,
        lease: str,
        namespace: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.user = f"operator-{name}"
        upstream = cluster.server.split("://", 1)[1]
        # Without a proxy: straight to the API server (still its own identity in the audit log).
        self.listen = toxiproxy.proxy(name, upstream) if toxiproxy is not None else upstream
        kubeconfig = cluster.client_kubeconfig(self.user, server=f"https://{self.listen}")
        self.operator = OperatorProcess(
            cluster,
            logs,
            controllers=CONTROLLERS,
            name=name,
            env={
                "KUBECONFIG": str(kubeconfig),
                "POD_NAME": name,
                "OPERATOR_LEADER_ELECTION_LEASE_NAME": lease,
                # Only this test's namespace: the namespaces of earlier tests are being deleted, and
                # finalizing their CRs (200 after the restart scenario) would queue ahead of ours.
                "WATCH_NAMESPACE": namespace,
                "LOG_LEVEL": "info",
                # SIGABRT (`dump_threads`) then writes every thread's stack to the log.
                "PYTHONFAULTHANDLER": "1",
                **(env or {}),
            },
        )
        self.exited_at: float | None = None  # wall clock, when `watch_exit` saw it go
        self.exit_code: int | None = None
        self.restarts = 0
        self._unsupervised = threading.Event()

    def start(self, *, wait_ready: bool = True) -> Replica:
        self.exited_at = self.exit_code = None
        self.operator.start(wait_ready=wait_ready)
        return self

    def watch_exit(self) -> None:
        """Record when (wall clock) and how the process exits, in the background."""

        def watch() -> None:
            while (code := self.operator.process.poll()) is None:
                time.sleep(0.05)
            self.exited_at, self.exit_code = time.time(), code

        threading.Thread(target=watch, daemon=True).start()

    def kill(self) -> None:
        self.operator.process.kill()

    def dump_threads(self) -> None:
        """Where is it stuck? Every thread's stack into its log (faulthandler), and it exits."""
        pid = self.operator.process.pid
        if pid is not None and self.operator.process.running():
            os.kill(pid, signal.SIGABRT)
            time.sleep(1)

    def stop(self) -> None:
        self._unsupervised.set()
        self.operator.stop()

    def supervise(self) -> None:
        """Restart the process whenever it exits, as its pod's kubelet would (counted in `restarts`),
        until `stop()`. (A child started from this thread dies with it: PR_SET_PDEATHSIG.)"""

        def run() -> None:
            while not self._unsupervised.wait(0.2):
                if self.operator.process.poll() is not None:
                    self.restarts += 1
                    self.operator.process.start()

        self._unsupervised.clear()
        threading.Thread(target=run, name=f"supervise-{self.name}", daemon=True).start()


def lease_spec(api: Client, lease: str) -> Object:
    try:
        spec: Object = api.get(LEASES, lease, OPERATOR_NAMESPACE)["spec"]
    except NotFound:
        return {}
    return spec


def lease_holder(api: Client, lease: str) -> str:
    return str(lease_spec(api, lease).get("holderIdentity") or "")


def pull_secrets(api: Client, namespace: str, count: int) -> list[str]:
    """A registry in Ready state (as its controller would report it) and `count` ImagePullSecrets."""
    make_registry(api, namespace)
    names = [f"pull-{index}" for index in range(count)]
    for name in names:
        create_cr(api, PULL, namespace, name, {"name": "registry", "namespace": namespace})
    return names


def is_ready(cr: Object) -> bool:
    condition = ready_condition(cr)
    return condition.get("status") == "True" and condition.get("observedGeneration") == cr["metadata"].get(
        "generation"
    )


def all_ready(api: Client, namespace: str, names: Iterable[str]) -> bool:
    crs = {cr["metadata"]["name"]: cr for cr in api.list(IMAGE_PULL_SECRETS, namespace)["items"]}
    return all(name in crs and is_ready(crs[name]) for name in names)


class RotationFlow:
    """A steady flow of rotate-now annotations (see the module doc), sent as the cluster admin."""

    def __init__(self, api: Client, namespace: str, names: list[str], interval: float = 0.25) -> None:
        self._api = api
        self._namespace = namespace
        self._names = names
        self._interval = interval
        self.triggers: dict[str, list[str]] = {name: [] for name in names}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rotation-flow", daemon=True)

    def start(self) -> RotationFlow:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    @property
    def count(self) -> int:
        return sum(len(values) for values in self.triggers.values())

    def newest_handled(self) -> int:
        """The number of the newest trigger any CR has handled (0: none)."""
        handled = [
            int(value[1:])
            for cr in self._api.list(IMAGE_PULL_SECRETS, self._namespace)["items"]
            if (value := str((cr.get("status") or {}).get("rotateRequest") or "")).startswith("t")
        ]
        return max(handled, default=0)

    def handled(self, cr: Object) -> bool:
        """The CR's last trigger (if any) is handled: its rotation for it is claimed in status."""
        sent = self.triggers[cr["metadata"]["name"]]
        return not sent or (cr.get("status") or {}).get("rotateRequest") == sent[-1]

    def _run(self) -> None:
        for name in itertools.cycle(self._names):
            if self._stop.wait(self._interval):
                return
            try:
                cr = self._api.get(IMAGE_PULL_SECRETS, name, self._namespace)
                if not self.handled(cr) or not (cr.get("status") or {}).get("rotation"):
                    continue
                value = f"t{self.count + 1}"
                patch = {"metadata": {"annotations": {c.ANNOTATION_ROTATE: value}}}
                self._api.patch(IMAGE_PULL_SECRETS, name, patch, self._namespace)
                self.triggers[name].append(value)
            except (ApiError, ConnectionFailed):
                continue  # e.g. the API server is restarting: try the next one later


@dataclass
class Figures:
    secrets: int
    triggers: int
    lost_updates: int  # triggers never handled, after the convergence budget
    double_rotations: int  # accounts beyond one per trigger (and the first)
    missing_rotations: int  # secrets with fewer accounts than triggers + 1
    rollbacks: list[str]
    convergence_seconds: float

    def line(self) -> str:
        return (
            f"{self.secrets} secrets, {self.triggers} rotate-now triggers: lost updates {self.lost_updates}, "
            f"double rotations {self.double_rotations}, missing rotations {self.missing_rotations}, "
            f"rollbacks {len(self.rollbacks)}, convergence {self.convergence_seconds:.2f}s"
        )


def accounts_per_secret(api: Client, namespace: str) -> dict[str, list[int]]:
    """{CR name: rotations of its accounts} from the account names `pull.<ns>.<name>.<rotation>`."""
    found: dict[str, list[int]] = defaultdict(list)
    prefix = f"{PULL.mode}.{namespace}."
    for account in api.list(IMAGE_REGISTRY_ACCOUNTS, namespace)["items"]:
        name = account["metadata"]["name"]
        if name.startswith(prefix):
            cr_name, rotation = name[len(prefix) :].rsplit(".", 1)
            found[cr_name].append(int(rotation))
    return found


def converge(
    api: Client, namespace: str, flow: RotationFlow, history: RotationHistory, budget: float = 90.0
) -> Figures:
    """Wait (up to `budget`) until every CR is Ready with its last trigger handled; then the figures."""
    started = time.monotonic()

    def done() -> bool:
        crs = api.list(IMAGE_PULL_SECRETS, namespace)["items"]
        return len(crs) == len(flow.triggers) and all(is_ready(cr) and flow.handled(cr) for cr in crs)

    with contextlib.suppress(AssertionError):  # reported as lost updates below
        wait_for(done, budget, "every ImagePullSecret Ready with its last trigger handled", interval=0.25)
    convergence = time.monotonic() - started
    time.sleep(3.0)  # a stray extra rotation shows itself here
    crs = {cr["metadata"]["name"]: cr for cr in api.list(IMAGE_PULL_SECRETS, namespace)["items"]}
    accounts = accounts_per_secret(api, namespace)
    lost = sum(1 for name in flow.triggers if name not in crs or not flow.handled(crs[name]))
    double = missing = 0
    for name, sent in flow.triggers.items():
        surplus = len(accounts.get(name, [])) - (len(sent) + 1)
        double += max(0, surplus)
        missing += max(0, -surplus)
    return Figures(len(flow.triggers), flow.count, lost, double, missing, history.rollbacks(), convergence)


@dataclass
class RotationHistory:
    """Rotations of every pull Secret and CR in the order the API server sent their versions."""

    api: Client
    namespace: str
    secrets: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    crs: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        self._factory = SharedInformerFactory(self.api, resync_period=None)
        secrets = self._factory.informer(SECRETS, namespace=self.namespace)
        crs = self._factory.informer(IMAGE_PULL_SECRETS, namespace=self.namespace)
        secrets.add_event_handler(
            EventHandlerFuncs(add=lambda o, _i: self._secret(o), update=lambda _o, n: self._secret(n))
        )
        crs.add_event_handler(
            EventHandlerFuncs(add=lambda o, _i: self._cr(o), update=lambda _o, n: self._cr(n))
        )
        self._factory.start()
        assert self._factory.wait_for_sync(30)

    def _secret(self, secret: Object) -> None:
        rotation = objects.annotations(secret).get(c.ANNOTATION_ROTATION)
        if rotation and rotation.isdigit():
            self._append(self.secrets[objects.name(secret)], int(rotation))

    def _cr(self, cr: Object) -> None:
        rotation = (cr.get("status") or {}).get("rotation")
        if isinstance(rotation, int):
            self._append(self.crs[objects.name(cr)], rotation)

    @staticmethod
    def _append(seen: list[int], rotation: int) -> None:
        if not seen or seen[-1] != rotation:
            seen.append(rotation)

    def rollbacks(self) -> list[str]:
        """`kind/name: a -> b` for every step down."""
        found = []
        for kind, history in (("Secret", self.secrets), ("ImagePullSecret", self.crs)):
            for name, seen in history.items():
                found += [f"{kind}/{name}: {a} -> {b}" for a, b in itertools.pairwise(seen) if b < a]
        return found

    def close(self) -> None:
        self._factory.stop()


@dataclass
class AuditedWrites:
    accepted: list[str]
    refused: list[str]
    failed: list[str]  # any other answer (e.g. 5xx, 404)

    def line(self) -> str:
        refused = f"{len(self.refused)} refused (409/412/422)"
        return f"{len(self.accepted)} accepted, {refused}, {len(self.failed)} other"


def audited_writes(cluster: LocalCluster, user: str, after: float) -> AuditedWrites:
    """Writes of `user` the API server received after `after` (epoch seconds), by their answer."""
    result = AuditedWrites([], [], [])
    for event in cluster.audit_events():
        if (event.get("user") or {}).get("username") != user or event.get("stage") != "ResponseComplete":
            continue
        if parse_time(event["requestReceivedTimestamp"]) <= after:
            continue
        ref = event.get("objectRef") or {}
        what = (
            f"{event['verb']} {ref.get('resource')}"
            + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            + f" {ref.get('namespace', '')}/{ref.get('name', '')}"
        )
        code = int((event.get("responseStatus") or {}).get("code", 0))
        bucket = (
            result.accepted
            if 200 <= code < 300
            else result.refused
            if code in REFUSED_CODES
            else result.failed
        )
        bucket.append(f"{what} -> {code}")
    return result


def wait_audited(cluster: LocalCluster, user: str, after: float, timeout: float = 10.0) -> None:
    """The audit log is written asynchronously: wait until it has any event of `user` after `after`
    (e.g. the new leader's own Lease renewal), so a late line cannot be missed."""
    wait_for(
        lambda: any(
            (e.get("user") or {}).get("username") == user
            and parse_time(e["requestReceivedTimestamp"]) > after
            for e in cluster.audit_events()
        ),
        timeout,
        f"audit events of {user}",
    )


def cpu_note() -> str:
    return f"(figures from a shared {os.cpu_count()}-core machine)"


def refused_credentials(api: Client, namespace: str, names: Iterable[str]) -> list[str]:
    """Pull Secrets whose username/password the authn sidecar would refuse: its own decision
    (`authn.authenticate`, which checks the password with `accounts.verify_account_password`) on the
    ImageRegistryAccount the username names. A Secret not written yet is not a refused credential."""
    accounts = {objects.name(a): a for a in api.list(IMAGE_REGISTRY_ACCOUNTS, namespace)["items"]}
    secrets = {objects.name(s): s for s in api.list(SECRETS, namespace)["items"]}
    now = now_utc()
    refused = []
    for name in names:
        secret = secrets.get(PULL.secret_name(name))
        if secret is None:
            continue
        values = {key: value.decode() for key, value in decode_secret_data(secret).items()}
        user = values.get("username", "")
        decision = authenticate(accounts.get(user), user, values.get("password", ""), now)
        if decision.decision is not Decision.ALLOW:
            refused.append(f"{name}: {user} {decision.decision.value} ({decision.reason})")
    return refused
