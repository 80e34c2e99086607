#!/usr/bin/env python3
"""Benchmark: many ImagePullSecrets created at once, until every one is Ready; the operator's memory
with and without unrelated objects; and operator start-up.

    .venv/bin/python hack/bench/pull_secrets.py [--count 200] [--kubeconfig PATH --metrics-url URL]
    .venv/bin/python hack/bench/pull_secrets.py --production --count 1000 --floor
    .venv/bin/python hack/bench/pull_secrets.py --memory [--counts 200,1000]
        [--noise-secrets 20000] [--noise-configmaps 2000]
    .venv/bin/python hack/bench/pull_secrets.py --startup-runs 5

With `--kubeconfig` and `--metrics-url` it uses a running cluster and operator (the operator's
/metrics tells the API requests it made); without them it starts a local etcd + kube-apiserver and
the operator (imagesecret and imageregistryaccount controllers; no leader election and warning logs
unless `--production`, which keeps the operator's defaults) for the run. In a fresh namespace it
makes a usable ImageRegistry (the object plus the status and TLS Secret its controller would write),
creates `--count` ImagePullSecrets from 16 threads, and waits until all are Ready. Prints the time
that took, the operator's API requests (by method) and per secret, the accounts issued (exactly one
per secret is expected), the operator's CPU per secret and peak RSS (local runs), and the writes
during a few seconds of steady state afterwards (expected: none).

`--floor` also runs the floor on a fresh cluster: a bare client whose 2 worker threads do the least
one secret needs (the account, with the same password hashing, the Secret and a Ready status) while
the same 16 threads create the CRs, and prints the operator's time as a ratio of the floor's. Then
the same with the five writes the operator makes (finalizer, account, Secret by server-side apply,
Event, status): the gap between the two floors is what the finalizer and the Event cost the API
server (with which the operator shares the 2 cores), the ratio to the second what the operator adds.
Every run counts Ready CRs from one watch (see ReadyWatcher) and prints the kube-apiserver + etcd CPU.

`--memory` (always local): the operator's peak RSS (VmHWM) with N ImagePullSecrets on one registry,
for each N of `--counts`, first on an otherwise empty cluster, then with `--noise-secrets` unrelated
4 KiB Secrets and `--noise-configmaps` unrelated ConfigMaps in 20 other namespaces; prints a table
with the RSS once the caches synced, the peak, the growth the unrelated objects cause (the target:
at most 10 MiB) and the time to all Ready. Every controller runs except imageregistry (the bench's
registry is a hand-made Ready one) and the opt-in localregistryhosting; no leader election, warning
logs. All cells share one cluster; each gets a fresh operator process and namespace, wiped
(finalizers stripped) before the next one.

`--startup-runs N`: N times, a fresh local cluster (with controller-manager, scheduler, kwok and a
storage provisioner) holding the seed's ImageRegistry; the operator (all controllers, defaults) is
started and the wall time and operator CPU until that registry is Ready are taken; prints each run
and the medians.

Side by side: `BASELINE_TREE=/path/to/old/checkout` (a tree with `registry_operator/`, e.g.
`git archive main registry_operator | tar -x -C /tmp/base`) runs the operator from that tree first
(in `--memory`, before each cell of this tree, on the same cluster). Asserts nothing; figures from a
shared machine vary from run to run (memory by a few MiB).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from registry_operator import passwords, pki
from registry_operator.controllers.resources import (
    IMAGE_PULL_SECRETS,
    IMAGE_REGISTRIES,
    IMAGE_REGISTRY_ACCOUNTS,
)
from registry_operator.kube.client import Client
from registry_operator.kube.errors import NotFound
from registry_operator.kube.resources import CONFIGMAPS, EVENTS, NAMESPACES, SECRETS, Resource
from registry_operator.kube.watch import WatchStream

if TYPE_CHECKING:
    from registry_operator.devenv.cluster import LocalCluster

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
ROOT = Path(__file__).resolve().parents[2]
SEED_REGISTRY = ROOT / "e2e" / "testdata" / "seed" / "imageregistry.yaml"
CREATE_THREADS = 16
FLOOR_WORKERS = 2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The memory cells run every controller that reads Secrets, except imageregistry (see the doc).
MEMORY_CONTROLLERS = "*,-imageregistry,-localregistryhosting"
NOISE_NAMESPACES = 20
T = TypeVar("T")


@dataclass
class BenchResult:
    count: int
    create_seconds: float
    all_ready_seconds: float
    requests_by_method: dict[str, float]
    requests: float
    writes: float
    event_writes: float
    requests_per_secret: float
    writes_per_secret: float
    accounts: int
    steady_state_seconds: float
    steady_state_writes: float
    # Writes the API server refused with 409 (an optimistic-concurrency retry from a stale cache).
    conflicted_writes: float = 0.0
    operator_cpu_seconds: float | None = None
    operator_cpu_ms_per_secret: float | None = None
    operator_peak_rss_mib: float | None = None
    # Passes of the imagepullsecret controller per secret (controller_runtime_reconcile_total).
    reconciles_per_secret: float | None = None
    # kube-apiserver + etcd CPU during the run (local runs): the other half of the 2 cores.
    control_plane_cpu_seconds: float | None = None


@dataclass
class FloorResult:
    count: int
    all_ready_seconds: float
    writes_per_secret: int
    control_plane_cpu_seconds: float | None = None


@dataclass
class StartupRun:
    wall_seconds: float
    cpu_seconds: float


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a local process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_memory_mib(pid: int, field: str = "VmHWM") -> float:
    """VmHWM (peak RSS) or VmRSS (now) of a local process, in MiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def requests_by_method(metrics_url: str, *, code: str | None = None) -> dict[str, float]:
    """The operator's rest_client_requests_total, summed per HTTP method (only `code` if given)."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rest_client_requests_total" and code in (None, sample.labels.get("code")):
                method = sample.labels.get("method", "?")
                totals[method] = totals.get(method, 0.0) + sample.value
    return totals


def reconciles_by_controller(metrics_url: str) -> dict[str, float]:
    """The operator's controller_runtime_reconcile_total, summed per controller (every result)."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "controller_runtime_reconcile_total":
                controller = sample.labels.get("controller", "?")
                totals[controller] = totals.get(controller, 0.0) + sample.value
    return totals


def cpu_of(pids: list[int]) -> float:
    return sum(process_cpu_seconds(pid) for pid in pids)


def control_plane_pids(cluster: LocalCluster) -> list[int]:
    pids = [cluster.process(name).pid for name in ("kube-apiserver", "etcd")]
    return [pid for pid in pids if pid is not None]


def make_usable_registry(client: Client, namespace: str) -> None:
    """What the imageregistry controller would produce: the object, its status and TLS Secret."""
    client.create(
        IMAGE_REGISTRIES,
        {
            "metadata": {"name": "registry", "namespace": namespace},
            "spec": {"persistentVolumeClaim": {"resources": {"requests": {"storage": "1Gi"}}}},
        },
    )
    ca = pki.create_ca("bench CA", datetime.now(UTC), key_size=2048, lifetime=timedelta(days=1)).cert_pem
    client.create(
        SECRETS,
        {
            "metadata": {"name": "registry-tls", "namespace": namespace},
            "data": {"ca.crt": base64.b64encode(ca).decode()},
        },
    )
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    client.patch(
        IMAGE_REGISTRIES,
        "registry",
        {
            "status": {
                "hostname": f"registry.{namespace}.svc.cluster.local",
                "tlsSecretName": "registry-tls",
                "passwordSchemes": ["bcrypt", "sha256-salted-v1"],  # as a fully rolled registry says
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Available", "lastTransitionTime": now}
                ],
            }
        },
        namespace,
        subresource="status",
    )


def count_ready(client: Client, namespace: str) -> int:
    ready = 0
    for item in client.list(IMAGE_PULL_SECRETS, namespace)["items"]:
        for condition in (item.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Ready" and condition.get("status") == "True":
                ready += 1
    return ready


def create_pull_secret(client: Client, namespace: str, index: int) -> dict[str, object]:
    created: dict[str, object] = client.create(
        IMAGE_PULL_SECRETS,
        {
            "metadata": {"name": f"bench-{index:05d}", "namespace": namespace},
            "spec": {"registryRef": {"name": "registry"}},
        },
    )
    return created


def is_ready(obj: dict[str, object]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []  # type: ignore[attr-defined]
    return any(item.get("type") == "Ready" and item.get("status") == "True" for item in conditions)


class ReadyWatcher:
    """Counts the Ready ImagePullSecrets of a namespace from one watch, opened before the first create.

    The operator run and the floor are observed alike, at one watch event per write. (Polling with
    LISTs instead, a quorum read of every CR from etcd 5 times a second, loads the API server the
    operator shares 2 cores with for the whole run, while the floor's workers are done before its
    first poll: the ratio then measured the polling too.)
    """

    def __init__(self, client: Client, namespace: str, count: int) -> None:
        self._client = client
        self._namespace = namespace
        self._count = count
        self._ready: set[str] = set()
        self._done = threading.Event()
        self._stop = threading.Event()
        self._stream: WatchStream | None = None
        self.done_at: float | None = None
        listed = client.list(IMAGE_PULL_SECRETS, namespace)
        self._observe_list(listed["items"])
        self._thread = threading.Thread(
            target=self._run, args=(listed["metadata"]["resourceVersion"],), daemon=True
        )
        self._thread.start()

    def _observe(self, name: str, ready: bool) -> None:
        if ready:
            self._ready.add(name)
        else:
            self._ready.discard(name)
        if len(self._ready) >= self._count and self.done_at is None:
            self.done_at = time.monotonic()
            self._done.set()

    def _observe_list(self, items: list[dict[str, object]]) -> None:
        self._ready.clear()
        for item in items:
            self._observe(str(item["metadata"]["name"]), is_ready(item))  # type: ignore[index]

    def _run(self, resource_version: str) -> None:
        while not self._stop.is_set():
            try:
                self._stream = self._client.watch(
                    IMAGE_PULL_SECRETS,
                    self._namespace,
                    resource_version=resource_version,
                    timeout_seconds=600,
                )
                for event in self._stream:
                    resource_version = (
                        event.object.get("metadata", {}).get("resourceVersion") or resource_version
                    )
                    if event.type in ("ADDED", "MODIFIED", "DELETED"):
                        name = str(event.object["metadata"]["name"])
                        self._observe(name, event.type != "DELETED" and is_ready(event.object))
            except Exception:
                if self._stop.is_set():
                    return
                time.sleep(0.2)
                with contextlib.suppress(Exception):  # resume from a fresh list (e.g. after 410 Gone)
                    listed = self._client.list(IMAGE_PULL_SECRETS, self._namespace)
                    self._observe_list(listed["items"])
                    resource_version = listed["metadata"]["resourceVersion"]

    def wait(self, started: float, timeout: float = 600.0) -> float:
        """Seconds since `started` until all `count` were Ready (checked once more with a LIST)."""
        if not self._done.wait(max(0.0, started + timeout - time.monotonic())):
            raise TimeoutError(f"not all {self._count} ImagePullSecrets became Ready within {timeout:.0f}s")
        assert self.done_at is not None
        ready = count_ready(self._client, self._namespace)
        if ready < self._count:
            raise AssertionError(f"the watch saw {self._count} Ready, a LIST sees {ready}")
        return self.done_at - started

    def close(self) -> None:
        self._stop.set()
        if self._stream is not None:
            self._stream.close()
        self._thread.join(5)


def run(
    client: Client,
    metrics_url: str,
    namespace: str,
    count: int,
    *,
    steady_seconds: float = 5.0,
    operator_pid: int | None = None,
    server_pids: list[int] | None = None,
) -> BenchResult:
    """Create `count` ImagePullSecrets in `namespace` (which must exist) and measure."""
    make_usable_registry(client, namespace)
    time.sleep(0.5)  # let the operator's caches see the registry before the clock starts
    before = requests_by_method(metrics_url)
    conflicts_before = requests_by_method(metrics_url, code="409")
    reconciles_before = reconciles_by_controller(metrics_url).get("imagepullsecret", 0.0)
    cpu_before = process_cpu_seconds(operator_pid) if operator_pid else None
    server_cpu_before = cpu_of(server_pids) if server_pids else None

    watcher = ReadyWatcher(client, namespace, count)
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(CREATE_THREADS) as pool:
            list(pool.map(lambda index: create_pull_secret(client, namespace, index), range(count)))
        created = time.monotonic() - started
        all_ready = watcher.wait(started)
    finally:
        watcher.close()
    cpu = process_cpu_seconds(operator_pid) - cpu_before if operator_pid and cpu_before is not None else None
    server_cpu = (
        cpu_of(server_pids) - server_cpu_before if server_pids and server_cpu_before is not None else None
    )
    # Let the last status writes' follow-up passes finish before reading the counters.
    time.sleep(1.0)
    after = requests_by_method(metrics_url)
    conflicts_after = requests_by_method(metrics_url, code="409")
    reconciles = reconciles_by_controller(metrics_url).get("imagepullsecret", 0.0) - reconciles_before
    conflicted = sum(
        conflicts_after.get(method, 0.0) - conflicts_before.get(method, 0.0) for method in WRITE_METHODS
    )
    by_method = {method: after.get(method, 0.0) - before.get(method, 0.0) for method in sorted(after)}
    by_method = {method: value for method, value in by_method.items() if value}
    requests = sum(by_method.values())
    writes = sum(value for method, value in by_method.items() if method in WRITE_METHODS)
    events = sum(
        1
        for item in client.list(EVENTS, namespace)["items"]
        if item.get("source", {}).get("component") == "imagepullsecret"
    )
    accounts = len(client.list(IMAGE_REGISTRY_ACCOUNTS, namespace)["items"])

    steady_before = requests_by_method(metrics_url)
    time.sleep(steady_seconds)
    steady_after = requests_by_method(metrics_url)
    steady_writes = sum(steady_after.get(m, 0.0) - steady_before.get(m, 0.0) for m in WRITE_METHODS)
    return BenchResult(
        count=count,
        create_seconds=round(created, 3),
        all_ready_seconds=round(all_ready, 3),
        requests_by_method=by_method,
        requests=requests,
        writes=writes,
        event_writes=float(events),
        requests_per_secret=round(requests / count, 2),
        writes_per_secret=round(writes / count, 2),
        accounts=accounts,
        steady_state_seconds=steady_seconds,
        steady_state_writes=steady_writes,
        conflicted_writes=conflicted,
        operator_cpu_seconds=round(cpu, 2) if cpu is not None else None,
        operator_cpu_ms_per_secret=round(cpu * 1000 / count, 1) if cpu is not None else None,
        operator_peak_rss_mib=round(process_memory_mib(operator_pid), 1) if operator_pid else None,
        reconciles_per_secret=round(reconciles / count, 2),
        control_plane_cpu_seconds=round(server_cpu, 2) if server_cpu is not None else None,
    )


def run_floor(
    client: Client,
    namespace: str,
    count: int,
    server_pids: list[int] | None = None,
    *,
    operator_writes: bool = False,
) -> FloorResult:
    """The least work per secret, with no operator: 2 workers write the account (same hashing), the
    Secret and a Ready status for each CR as the 16 creating threads hand it over.

    `operator_writes`: the five writes the operator makes instead (finalizer PUT, account, Secret by
    server-side apply, Event, status), so the ratio splits into what those writes cost the API server
    and what the operator adds on top of them."""
    make_usable_registry(client, namespace)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def issue(cr: dict[str, object]) -> None:
        metadata: dict[str, str] = cr["metadata"]  # type: ignore[assignment]
        name = metadata["name"]
        account = f"pull.{namespace}.{name}.1"
        if operator_writes:
            body = json.loads(json.dumps(cr))
            body["metadata"]["finalizers"] = ["registry.mgoltzsche.github.com/accounts"]
            cr = client.update(IMAGE_PULL_SECRETS, body)
        password = passwords.generate_password()
        client.create(
            IMAGE_REGISTRY_ACCOUNTS,
            {
                "metadata": {"name": account, "namespace": namespace},
                "spec": {"password": passwords.hash_generated_password(password), "ttl": "24h0m0s"},
            },
        )
        auth = base64.b64encode(f"{account}:{password}".encode()).decode()
        config = json.dumps({"auths": {f"registry.{namespace}.svc.cluster.local": {"auth": auth}}})
        values = {".dockerconfigjson": config, "username": account, "password": password}
        secret: dict[str, object] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"imagepullsecret-{name}", "namespace": namespace},
            "type": "kubernetes.io/dockerconfigjson",
        }
        if operator_writes:
            data = {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}
            client.apply(SECRETS, {**secret, "data": data}, field_manager="floor", force=True)
            client.create(
                EVENTS,
                {
                    "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
                    "involvedObject": {"kind": "ImagePullSecret", "name": name, "namespace": namespace},
                    "reason": "Rotated",
                    "message": f"Issued credentials #1 (account {namespace}/{account}): first credentials",
                    "type": "Normal",
                    "source": {"component": "floor"},
                    "count": 1,
                    "firstTimestamp": now,
                    "lastTimestamp": now,
                },
            )
        else:
            client.create(SECRETS, {**secret, "stringData": values})
        body = json.loads(json.dumps(cr))
        body["status"] = {
            "rotation": 1,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Available",
                    "message": "",
                    "lastTransitionTime": now,
                }
            ],
        }
        client.update_status(IMAGE_PULL_SECRETS, body)

    server_cpu_before = cpu_of(server_pids) if server_pids else None
    watcher = ReadyWatcher(client, namespace, count)
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(FLOOR_WORKERS) as workers, ThreadPoolExecutor(CREATE_THREADS) as creators:
            pending = [
                creators.submit(
                    lambda index: workers.submit(issue, create_pull_secret(client, namespace, index)), i
                )
                for i in range(count)
            ]
            for issued in [future.result() for future in pending]:
                issued.result()
        all_ready = watcher.wait(started)
    finally:
        watcher.close()
    server_cpu = (
        cpu_of(server_pids) - server_cpu_before if server_pids and server_cpu_before is not None else None
    )
    return FloorResult(
        count=count,
        all_ready_seconds=round(all_ready, 3),
        writes_per_secret=5 if operator_writes else 3,
        control_plane_cpu_seconds=round(server_cpu, 2) if server_cpu is not None else None,
    )


def report(result: BenchResult) -> str:
    methods = ", ".join(f"{method} {int(value)}" for method, value in result.requests_by_method.items())
    return "\n".join(
        [
            f"{result.count} ImagePullSecrets created in {result.create_seconds:.2f}s; "
            f"all Ready after {result.all_ready_seconds:.2f}s",
            f"operator API requests: {int(result.requests)} ({methods}) "
            f"= {result.requests_per_secret} per secret",
            f"writes: {int(result.writes)} = {result.writes_per_secret} per secret "
            f"(of which {int(result.event_writes)} Events, {int(result.conflicted_writes)} refused with 409)",
            f"accounts issued: {result.accounts} (one per secret expected); "
            f"imagepullsecret reconciles: {result.reconciles_per_secret} per secret",
            f"writes during {result.steady_state_seconds:.0f}s of steady state: "
            f"{int(result.steady_state_writes)}",
        ]
        + (
            [
                f"operator CPU: {result.operator_cpu_seconds:.2f}s = {result.operator_cpu_ms_per_secret} ms "
                f"per secret; peak RSS {result.operator_peak_rss_mib} MiB"
            ]
            if result.operator_cpu_seconds is not None
            else []
        )
        + (
            [f"kube-apiserver + etcd CPU: {result.control_plane_cpu_seconds:.2f}s"]
            if result.control_plane_cpu_seconds is not None
            else []
        )
    )


def operator_argv(tree: Path, *args: str) -> list[str]:
    """`registry-operator <args>` from `tree`: put first on sys.path, ahead of the working directory
    (which `python -m` would put there) and the editable install, so a BASELINE_TREE runs its own code."""
    code = f"import sys; sys.path.insert(0, {str(tree)!r}); from registry_operator.cli import main; "
    return [sys.executable, "-c", code + f"sys.exit(main({list(args)!r}))"]


def operator_env(
    kubeconfig: Path, tree: Path, port: int, health_port: int, *, production: bool
) -> dict[str, str]:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "WATCH_NAMESPACE": "",
        "POD_NAMESPACE": "registry-operator",
        "OPERATOR_METRICS_BIND_ADDRESS": f"127.0.0.1:{port}",
        "OPERATOR_HEALTH_PROBE_BIND_ADDRESS": f"127.0.0.1:{health_port}",
        "OPERATOR_LEADER_ELECTION_LEASE_NAME": f"bench-{uuid.uuid4().hex[:8]}",
    }
    if not production:
        # Trees before the fast hash of generated passwords read OPERATOR_BCRYPT_COST (4: the e2e cost).
        env.update(OPERATOR_LEADER_ELECTION="false", OPERATOR_BCRYPT_COST="4", LOG_LEVEL="warning")
    return env


@contextlib.contextmanager
def local_cluster() -> Iterator[LocalCluster]:
    """etcd + kube-apiserver with the CRDs served and the operator's namespace."""
    from registry_operator.devenv.cluster import LocalCluster

    with LocalCluster(with_controller_manager=False, with_scheduler=False, with_kwok=False) as cluster:
        cluster.install_crds(ROOT / "manifests" / "crds")
        cluster.kubectl("create", "namespace", "registry-operator")
        wait_crds_served(Client.from_kubeconfig(cluster.kubeconfig))
        yield cluster


@contextlib.contextmanager
def operator_process(
    cluster: LocalCluster,
    controllers: str,
    tree: Path = ROOT,
    *,
    production: bool = False,
    name: str = "operator",
) -> Iterator[tuple[str, int]]:
    """The operator of `tree` on `cluster`, from /readyz until the block ends: (metrics URL, pid)."""
    from registry_operator.devenv.processes import ManagedProcess, free_port, wait_until

    port, health_port = free_port(), free_port()
    operator = ManagedProcess(
        name,
        operator_argv(tree, "run", f"--controllers={controllers}"),
        cluster.workdir,
        operator_env(cluster.kubeconfig, tree, port, health_port, production=production),
    )
    operator.start()
    try:
        ready_url = f"http://127.0.0.1:{health_port}/readyz"
        # Generous: an operator that lists every Secret (a baseline) takes minutes with the noise.
        wait_until(
            "operator /readyz",
            lambda: urllib.request.urlopen(ready_url, timeout=2).status == 200,
            300,
            operator,
        )
        assert operator.pid is not None
        yield f"http://127.0.0.1:{port}/metrics", operator.pid
    finally:
        operator.stop()


@contextlib.contextmanager
def local_stack(
    tree: Path = ROOT, *, production: bool = False
) -> Iterator[tuple[Client, str, int, list[int]]]:
    """A local control plane and operator for a standalone run: (client, metrics URL, operator pid,
    kube-apiserver and etcd pids)."""
    print(f"starting a local etcd + kube-apiserver and the operator from {tree} ...", flush=True)
    with (
        local_cluster() as cluster,
        operator_process(cluster, "imagesecret,imageregistryaccount", tree, production=production) as (
            metrics_url,
            pid,
        ),
    ):
        yield Client.from_kubeconfig(cluster.kubeconfig), metrics_url, pid, control_plane_pids(cluster)


def wait_crds_served(client: Client, timeout: float = 60.0) -> None:
    """Until the API server's watch cache serves every CRD just installed: an operator started on a
    cluster whose CRDs have existed for a while never sees the 429 "storage is (re)initializing"."""
    from registry_operator.controllers.resources import IMAGE_BUILD_ENVS, IMAGE_PUSH_SECRETS

    deadline = time.monotonic() + timeout
    for resource in (
        IMAGE_REGISTRIES,
        IMAGE_REGISTRY_ACCOUNTS,
        IMAGE_PULL_SECRETS,
        IMAGE_PUSH_SECRETS,
        IMAGE_BUILD_ENVS,
    ):
        while True:
            try:
                client.list(resource, resource_version="0")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@contextlib.contextmanager
def bare_cluster() -> Iterator[tuple[Client, list[int]]]:
    """etcd + kube-apiserver with the CRDs and no operator, for the floor: (client, their pids)."""
    with local_cluster() as cluster:
        yield Client.from_kubeconfig(cluster.kubeconfig), control_plane_pids(cluster)


def startup_run(tree: Path) -> StartupRun:
    """A fresh cluster with the seed's ImageRegistry; start the operator and time it to Ready."""
    from registry_operator.devenv.cluster import LocalCluster
    from registry_operator.devenv.processes import ManagedProcess, free_port

    with LocalCluster(storage_provisioner=True) as cluster:
        cluster.install_crds(ROOT / "manifests" / "crds")
        cluster.kubectl("create", "namespace", "registry-operator")
        cluster.kubectl("create", "namespace", "bench")
        cluster.kubectl("apply", "-n", "bench", "-f", str(SEED_REGISTRY))
        client = Client.from_kubeconfig(cluster.kubeconfig)
        wait_crds_served(client)
        operator = ManagedProcess(
            "operator",
            operator_argv(tree, "run"),
            cluster.workdir,
            operator_env(cluster.kubeconfig, tree, free_port(), free_port(), production=True),
        )
        started = time.monotonic()
        operator.start()
        assert operator.pid is not None
        try:
            while True:
                registry = client.get(IMAGE_REGISTRIES, "registry", "bench")
                conditions = (registry.get("status") or {}).get("conditions") or []
                if any(item.get("type") == "Ready" and item.get("status") == "True" for item in conditions):
                    return StartupRun(
                        wall_seconds=round(time.monotonic() - started, 2),
                        cpu_seconds=round(process_cpu_seconds(operator.pid), 2),
                    )
                if time.monotonic() - started > 120 or not operator.running():
                    raise RuntimeError(f"registry not Ready:\n{operator.log_tail()}")
                time.sleep(0.05)
        finally:
            operator.stop()


def startup_report(name: str, runs: list[StartupRun]) -> str:
    walls = ", ".join(f"{run.wall_seconds:.2f}" for run in runs)
    cpus = ", ".join(f"{run.cpu_seconds:.2f}" for run in runs)
    return (
        f"[{name}] start -> first ImageRegistry Ready over {len(runs)} runs: wall median "
        f"{statistics.median(r.wall_seconds for r in runs):.2f}s ({walls}); operator CPU median "
        f"{statistics.median(r.cpu_seconds for r in runs):.2f}s ({cpus})"
    )


def variants() -> list[tuple[str, Path]]:
    found = [("current", ROOT)]
    if os.environ.get("BASELINE_TREE"):
        # Absolute: the operator runs in the cluster's work directory.
        found.insert(0, ("baseline", Path(os.environ["BASELINE_TREE"]).resolve()))
    return found


# --- memory -----------------------------------------------------------------------------------------
@dataclass
class MemoryCell:
    variant: str
    count: int
    noise: bool
    synced_rss_mib: float  # after the caches synced, before the secrets
    peak_rss_mib: float
    all_ready_seconds: float


def create_noise(client: Client, secrets: int, configmaps: int) -> float:
    """Unrelated objects in other namespaces, Helm-release-like (4 KiB); returns the seconds taken."""
    started = time.monotonic()
    namespaces = [f"noise-{i:02d}" for i in range(NOISE_NAMESPACES)]
    for namespace in namespaces:
        client.create(NAMESPACES, {"metadata": {"name": namespace}})
    payload = base64.b64encode(os.urandom(3072)).decode()  # 4 KiB once encoded

    def secret(index: int) -> None:
        body = {
            "metadata": {"name": f"sh.helm.release.v1.app{index}.v1", "labels": {"owner": "helm"}},
            "type": "helm.sh/release.v1",
            "data": {"release": payload},
        }
        client.create(SECRETS, body, namespaces[index % NOISE_NAMESPACES])

    def configmap(index: int) -> None:
        body = {"metadata": {"name": f"cm-{index}"}, "data": {"blob": payload}}
        client.create(CONFIGMAPS, body, namespaces[index % NOISE_NAMESPACES])

    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        list(pool.map(secret, range(secrets)))
        list(pool.map(configmap, range(configmaps)))
    return time.monotonic() - started


def wipe(client: Client, namespace: str) -> None:
    """Remove what a cell left, so the next operator does not cache it: no operator runs any more and
    the cluster has no namespace controller, so finalizers are stripped and objects deleted by hand."""

    def strip_and_delete(item: dict[str, object]) -> None:
        name = str(item["metadata"]["name"])  # type: ignore[index]
        with contextlib.suppress(NotFound):
            client.patch(IMAGE_PULL_SECRETS, name, {"metadata": {"finalizers": None}}, namespace)
            client.delete(IMAGE_PULL_SECRETS, name, namespace, missing_ok=True)

    def delete(resource: Resource) -> Callable[[dict[str, object]], None]:
        def run(item: dict[str, object]) -> None:
            client.delete(resource, str(item["metadata"]["name"]), namespace, missing_ok=True)  # type: ignore[index]

        return run

    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        list(pool.map(strip_and_delete, client.list(IMAGE_PULL_SECRETS, namespace)["items"]))
        for resource in (IMAGE_REGISTRY_ACCOUNTS, SECRETS, IMAGE_REGISTRIES):
            list(pool.map(delete(resource), client.list(resource, namespace)["items"]))


def memory_cell(cluster: LocalCluster, variant: str, tree: Path, count: int, noise: bool) -> MemoryCell:
    """A fresh operator of `tree` and `count` ImagePullSecrets in a fresh namespace: its RSS."""
    client = Client.from_kubeconfig(cluster.kubeconfig)

    def measure(namespace: str) -> MemoryCell:
        try:
            with operator_process(cluster, MEMORY_CONTROLLERS, tree, name=f"operator-{variant}") as (
                metrics_url,
                pid,
            ):
                synced = process_memory_mib(pid, "VmRSS")
                result = run(client, metrics_url, namespace, count, steady_seconds=2.0, operator_pid=pid)
        finally:
            wipe(client, namespace)
        assert result.operator_peak_rss_mib is not None
        return MemoryCell(
            variant, count, noise, round(synced, 1), result.operator_peak_rss_mib, result.all_ready_seconds
        )

    try:
        return run_in_fresh_namespace(client, measure)
    finally:
        client.close()


def memory_matrix(counts: list[int], noise_secrets: int, noise_configmaps: int) -> list[MemoryCell]:
    cells: list[MemoryCell] = []
    with local_cluster() as cluster:
        client = Client.from_kubeconfig(cluster.kubeconfig)
        for noise in (False, True):
            if noise:
                took = create_noise(client, noise_secrets, noise_configmaps)
                print(
                    f"created {noise_secrets} unrelated Secrets and {noise_configmaps} ConfigMaps "
                    f"in {NOISE_NAMESPACES} namespaces in {took:.0f}s",
                    flush=True,
                )
            for count in counts:
                for variant, tree in variants():
                    cell = memory_cell(cluster, variant, tree, count, noise)
                    print(f"  {cell}", flush=True)
                    cells.append(cell)
    return cells


def memory_report(cells: list[MemoryCell], noise_secrets: int, noise_configmaps: int) -> str:
    lines = [
        f"operator peak RSS (MiB), N ImagePullSecrets on one registry; noise = {noise_secrets} unrelated "
        f"4 KiB Secrets + {noise_configmaps} ConfigMaps in other namespaces (target: growth <= 10 MiB)",
        f"{'variant':<10} {'N':>6} {'synced':>8} {'peak':>8} {'synced+noise':>13} {'peak+noise':>11} "
        f"{'growth':>8} {'ready s':>8} {'ready s+noise':>14}",
    ]
    for cell in cells:
        if cell.noise:
            continue
        other = next(c for c in cells if c.noise and (c.variant, c.count) == (cell.variant, cell.count))
        lines.append(
            f"{cell.variant:<10} {cell.count:>6} {cell.synced_rss_mib:>8.1f} {cell.peak_rss_mib:>8.1f} "
            f"{other.synced_rss_mib:>13.1f} {other.peak_rss_mib:>11.1f} "
            f"{other.peak_rss_mib - cell.peak_rss_mib:>+8.1f} {cell.all_ready_seconds:>8.1f} "
            f"{other.all_ready_seconds:>14.1f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--kubeconfig", help="a cluster with the CRDs installed and the operator running")
    parser.add_argument("--metrics-url", help="the operator's /metrics URL (with --kubeconfig)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument(
        "--production", action="store_true", help="operator defaults (leader election, info logs)"
    )
    parser.add_argument("--floor", action="store_true", help="also run the bare-client floor (local runs)")
    parser.add_argument(
        "--startup-runs", type=int, default=0, help="time start -> first Ready registry instead"
    )
    parser.add_argument("--memory", action="store_true", help="peak RSS with and without unrelated objects")
    parser.add_argument("--counts", default="200,1000", help="--memory: the N to measure (e.g. 1000,5000)")
    parser.add_argument("--noise-secrets", type=int, default=20000, help="--memory: unrelated Secrets")
    parser.add_argument("--noise-configmaps", type=int, default=2000, help="--memory: unrelated ConfigMaps")
    args = parser.parse_args()
    if bool(args.kubeconfig) != bool(args.metrics_url):
        parser.error("--kubeconfig and --metrics-url go together")
    if args.startup_runs:
        for name, tree in variants():
            runs = [startup_run(tree) for _ in range(args.startup_runs)]
            print(
                json.dumps({name: [asdict(r) for r in runs]}) if args.json else startup_report(name, runs),
                flush=True,
            )
        return 0
    if args.memory:
        counts = [int(part) for part in args.counts.split(",") if part.strip()]
        cells = memory_matrix(counts, args.noise_secrets, args.noise_configmaps)
        if args.json:
            print(json.dumps([asdict(cell) for cell in cells]))
        else:
            print(memory_report(cells, args.noise_secrets, args.noise_configmaps))
        return 0
    if args.kubeconfig:
        client = Client.from_kubeconfig(args.kubeconfig)
        result = run_in_fresh_namespace(
            client, lambda namespace: run(client, args.metrics_url, namespace, args.count)
        )
        print(json.dumps(asdict(result)) if args.json else report(result))
        return 0
    for name, tree in variants():
        with local_stack(tree, production=args.production) as (client, metrics_url, pid, server_pids):
            result = run_in_fresh_namespace(
                client,
                lambda namespace: run(
                    client, metrics_url, namespace, args.count, operator_pid=pid, server_pids=server_pids
                ),
            )
            print(
                json.dumps({name: asdict(result)}) if args.json else f"[{name}]\n{report(result)}", flush=True
            )
        if args.floor and name == "current":  # the floor hashes as this tree does
            for operator_writes in (False, True):
                with bare_cluster() as (client, server_pids):
                    floor = run_in_fresh_namespace(
                        client,
                        functools.partial(
                            run_floor,
                            client,
                            count=args.count,
                            server_pids=server_pids,
                            operator_writes=operator_writes,
                        ),
                    )
                ratio = result.all_ready_seconds / floor.all_ready_seconds
                label = f"{name}-floor" + ("-operator-writes" if operator_writes else "")
                print(
                    json.dumps({label: asdict(floor), "ratio": round(ratio, 2)})
                    if args.json
                    else f"[{label}] ({FLOOR_WORKERS} workers, {floor.writes_per_secret} writes per "
                    f"secret): all Ready after {floor.all_ready_seconds:.2f}s "
                    f"(kube-apiserver + etcd CPU {floor.control_plane_cpu_seconds}s); "
                    f"operator/floor = {ratio:.2f}",
                    flush=True,
                )
    return 0


def run_in_fresh_namespace(client: Client, body: Callable[[str], T]) -> T:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    client.create(NAMESPACES, {"metadata": {"name": namespace}})
    try:
        return body(namespace)
    finally:
        with contextlib.suppress(Exception):
            client.delete(NAMESPACES, namespace)


if __name__ == "__main__":
    sys.exit(main())
