#!/usr/bin/env python3
"""Benchmark: many ImagePullSecrets created at once, until every one is Ready.

    .venv/bin/python hack/bench/pull_secrets.py [--count 200] [--kubeconfig PATH --metrics-url URL]
    [BASELINE_TREE=/path] .venv/bin/python hack/bench/pull_secrets.py --memory [--counts 200,1000]
        [--noise-secrets 20000] [--noise-configmaps 2000]

With `--kubeconfig` and `--metrics-url` it uses a running cluster and operator (the operator's
/metrics tells the API requests it made); without them it starts a local etcd + kube-apiserver and
the operator (imagesecret and imageregistryaccount controllers, no leader election, bcrypt cost 4
as in the e2e tests) for the run. In a fresh namespace it makes a usable ImageRegistry (the object
plus the status and TLS Secret its controller would write), creates `--count` ImagePullSecrets from
16 threads, and waits until all are Ready. Prints the time that took, the operator's API requests
(by method) and per secret, the accounts issued (exactly one per secret is expected), and the
writes during a few seconds of steady state afterwards (expected: none). Asserts nothing.

`--memory` (always local): the operator's peak RSS (VmHWM) with N ImagePullSecrets on one registry,
for each N of `--counts`, first on an otherwise empty cluster, then with `--noise-secrets` unrelated
4 KiB Secrets and `--noise-configmaps` unrelated ConfigMaps in 20 other namespaces; prints the growth
the unrelated objects cause (the issue's target: at most 10 MiB). Every controller runs except
imageregistry (the bench's registry is a hand-made Ready one) and the opt-in localregistryhosting.
With `BASELINE_TREE=/path` (a directory holding another version's `registry_operator/`, e.g.
`git -C /work/main archive HEAD registry_operator | tar -x -C /tmp/base`) that version runs the same
cells side by side, on the same cluster. Each cell gets a fresh operator process and namespace, wiped
(finalizers stripped) before the next one. Figures on a shared machine vary by a few MiB.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.parser import text_string_to_metric_families

from registry_operator import pki
from registry_operator.controllers.resources import (
    IMAGE_PULL_SECRETS,
    IMAGE_REGISTRIES,
    IMAGE_REGISTRY_ACCOUNTS,
)
from registry_operator.kube.client import Client
from registry_operator.kube.errors import NotFound
from registry_operator.kube.resources import CONFIGMAPS, EVENTS, NAMESPACES, SECRETS, Resource

if TYPE_CHECKING:
    from registry_operator.devenv.cluster import LocalCluster

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
ROOT = Path(__file__).resolve().parents[2]
# The memory cells run every controller that reads Secrets, except imageregistry (see the doc).
MEMORY_CONTROLLERS = "*,-imageregistry,-localregistryhosting"
NOISE_NAMESPACES = 20
MIB = 1024 * 1024


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


def requests_by_method(metrics_url: str) -> dict[str, float]:
    """The operator's rest_client_requests_total, summed per HTTP method."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rest_client_requests_total":
                method = sample.labels.get("method", "?")
                totals[method] = totals.get(method, 0.0) + sample.value
    return totals


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


def run(
    client: Client, metrics_url: str, namespace: str, count: int, *, steady_seconds: float = 5.0
) -> BenchResult:
    """Create `count` ImagePullSecrets in `namespace` (which must exist) and measure."""
    make_usable_registry(client, namespace)
    time.sleep(0.5)  # let the operator's caches see the registry before the clock starts
    before = requests_by_method(metrics_url)

    def create(index: int) -> None:
        client.create(
            IMAGE_PULL_SECRETS,
            {
                "metadata": {"name": f"bench-{index:04d}", "namespace": namespace},
                "spec": {"registryRef": {"name": "registry"}},
            },
        )

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(count)))
    created = time.monotonic() - started
    while count_ready(client, namespace) < count:
        if time.monotonic() - started > 300:
            raise TimeoutError(f"not all {count} ImagePullSecrets became Ready within 300s")
        time.sleep(0.1)
    all_ready = time.monotonic() - started
    # Let the last status writes' follow-up passes finish before reading the counters.
    time.sleep(1.0)
    after = requests_by_method(metrics_url)
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
            f"(of which {int(result.event_writes)} Events)",
            f"accounts issued: {result.accounts} (one per secret expected)",
            f"writes during {result.steady_state_seconds:.0f}s of steady state: "
            f"{int(result.steady_state_writes)}",
        ]
    )


def operator_env(kubeconfig: Path, port: int, health_port: int, tree: Path | None) -> dict[str, str]:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "WATCH_NAMESPACE": "",
        "POD_NAMESPACE": "registry-operator",
        "OPERATOR_METRICS_BIND_ADDRESS": f"127.0.0.1:{port}",
        "OPERATOR_HEALTH_PROBE_BIND_ADDRESS": f"127.0.0.1:{health_port}",
        "OPERATOR_LEADER_ELECTION": "false",
        "OPERATOR_BCRYPT_COST": "4",
        "LOG_LEVEL": "warning",
    }
    if tree is not None:
        # Ahead of the editable install of this tree; and no current directory on sys.path (`-m`
        # would put it first, and the bench runs from this checkout).
        env["PYTHONPATH"] = str(tree)
        env["PYTHONSAFEPATH"] = "1"
    return env


@contextlib.contextmanager
def operator_process(
    cluster: LocalCluster, controllers: str, tree: Path | None = None, name: str = "operator"
) -> Iterator[tuple[str, int]]:
    """The operator (of `tree`, default this checkout) until /readyz: (metrics URL, pid)."""
    from registry_operator.devenv.processes import ManagedProcess, free_port, wait_until

    port, health_port = free_port(), free_port()
    operator = ManagedProcess(
        name,
        [sys.executable, "-m", "registry_operator", "run", f"--controllers={controllers}"],
        cluster.workdir,
        operator_env(cluster.kubeconfig, port, health_port, tree),
    )
    operator.start()
    try:
        ready_url = f"http://127.0.0.1:{health_port}/readyz"
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
def local_cluster() -> Iterator[LocalCluster]:
    from registry_operator.devenv.cluster import LocalCluster

    with LocalCluster(with_controller_manager=False, with_scheduler=False, with_kwok=False) as cluster:
        cluster.install_crds(ROOT / "manifests" / "crds")
        cluster.kubectl("create", "namespace", "registry-operator")
        yield cluster


@contextlib.contextmanager
def local_stack() -> Iterator[tuple[Client, str]]:
    """A local control plane and operator for a standalone run: (client, metrics URL)."""
    print("no --kubeconfig: starting a local etcd + kube-apiserver and the operator ...", flush=True)
    with (
        local_cluster() as cluster,
        operator_process(cluster, "imagesecret,imageregistryaccount") as (metrics_url, _pid),
    ):
        yield Client.from_kubeconfig(cluster.kubeconfig), metrics_url


# --- memory -----------------------------------------------------------------------------------------
def memory_kib(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


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

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(secret, range(secrets)))
        list(pool.map(configmap, range(configmaps)))
    return time.monotonic() - started


def wipe(client: Client, namespace: str) -> None:
    """Remove what a cell left (no operator runs any more: finalizers are stripped by hand)."""

    def strip_and_delete(item: dict[str, object]) -> None:
        name = str(item["metadata"]["name"])  # type: ignore[index]
        with contextlib.suppress(NotFound):
            client.patch(IMAGE_PULL_SECRETS, name, {"metadata": {"finalizers": None}}, namespace)
            client.delete(IMAGE_PULL_SECRETS, name, namespace, missing_ok=True)

    def delete(resource: Resource) -> Callable[[dict[str, object]], None]:
        def run(item: dict[str, object]) -> None:
            client.delete(resource, str(item["metadata"]["name"]), namespace, missing_ok=True)  # type: ignore[index]

        return run

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(strip_and_delete, client.list(IMAGE_PULL_SECRETS, namespace)["items"]))
        for resource in (IMAGE_REGISTRY_ACCOUNTS, SECRETS, IMAGE_REGISTRIES):
            list(pool.map(delete(resource), client.list(resource, namespace)["items"]))


@dataclass
class MemoryCell:
    variant: str
    count: int
    noise: bool
    synced_rss_mib: float  # after the caches synced, before the secrets
    peak_rss_mib: float
    all_ready_seconds: float


def memory_cell(
    cluster: LocalCluster, variant: str, tree: Path | None, count: int, noise: bool
) -> MemoryCell:
    client = Client.from_kubeconfig(cluster.kubeconfig)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    client.create(NAMESPACES, {"metadata": {"name": namespace}})
    try:
        with operator_process(cluster, MEMORY_CONTROLLERS, tree, name=f"operator-{variant}") as (url, pid):
            synced = memory_kib(pid, "VmRSS")
            result = run(client, url, namespace, count, steady_seconds=2.0)
            peak = memory_kib(pid, "VmHWM")
        return MemoryCell(
            variant, count, noise, round(synced / 1024, 1), round(peak / 1024, 1), result.all_ready_seconds
        )
    finally:
        wipe(client, namespace)
        client.close()


def memory_matrix(counts: list[int], noise_secrets: int, noise_configmaps: int) -> list[MemoryCell]:
    variants: list[tuple[str, Path | None]] = [("this tree", None)]
    if os.environ.get("BASELINE_TREE"):
        variants.insert(0, ("baseline", Path(os.environ["BASELINE_TREE"]).resolve()))
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
                for variant, tree in variants:
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
    parser.add_argument("--memory", action="store_true", help="peak RSS with and without unrelated objects")
    parser.add_argument("--counts", default="200,1000", help="--memory: the N to measure (e.g. 1000,5000)")
    parser.add_argument("--noise-secrets", type=int, default=20000)
    parser.add_argument("--noise-configmaps", type=int, default=2000)
    args = parser.parse_args()
    if args.memory:
        counts = [int(part) for part in args.counts.split(",") if part.strip()]
        cells = memory_matrix(counts, args.noise_secrets, args.noise_configmaps)
        if args.json:
            print(json.dumps([asdict(cell) for cell in cells]))
        else:
            print(memory_report(cells, args.noise_secrets, args.noise_configmaps))
        return 0
    if bool(args.kubeconfig) != bool(args.metrics_url):
        parser.error("--kubeconfig and --metrics-url go together")
    with contextlib.ExitStack() as stack:
        if args.kubeconfig:
            client, metrics_url = Client.from_kubeconfig(args.kubeconfig), args.metrics_url
        else:
            client, metrics_url = stack.enter_context(local_stack())
        namespace = f"bench-{uuid.uuid4().hex[:8]}"
        client.create(NAMESPACES, {"metadata": {"name": namespace}})
        try:
            result = run(client, metrics_url, namespace, args.count)
        finally:
            with contextlib.suppress(Exception):
                client.delete(NAMESPACES, namespace)
    print(json.dumps(asdict(result)) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
