#!/usr/bin/env python3
"""Benchmark: many ImagePullSecrets created at once, until every one is Ready.

    .venv/bin/python hack/bench/pull_secrets.py [--count 200] [--kubeconfig PATH --metrics-url URL]

With `--kubeconfig` and `--metrics-url` it uses a running cluster and operator (the operator's
/metrics tells the API requests it made); without them it starts a local etcd + kube-apiserver and
the operator (imagesecret and imageregistryaccount controllers, no leader election, bcrypt cost 4
as in the e2e tests) for the run. In a fresh namespace it makes a usable ImageRegistry (the object
plus the status and TLS Secret its controller would write), creates `--count` ImagePullSecrets from
16 threads, and waits until all are Ready. Prints the time that took, the operator's API requests
(by method) and per secret, the accounts issued (exactly one per secret is expected), and the
writes during a few seconds of steady state afterwards (expected: none). Asserts nothing.
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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from registry_operator import pki
from registry_operator.controllers.resources import (
    IMAGE_PULL_SECRETS,
    IMAGE_REGISTRIES,
    IMAGE_REGISTRY_ACCOUNTS,
)
from registry_operator.kube.client import Client
from registry_operator.kube.resources import EVENTS, NAMESPACES, SECRETS

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


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


@contextlib.contextmanager
def local_stack() -> Iterator[tuple[Client, str]]:
    """A local control plane and operator for a standalone run: (client, metrics URL)."""
    from registry_operator.devenv.cluster import LocalCluster
    from registry_operator.devenv.processes import ManagedProcess, free_port, wait_until

    print("no --kubeconfig: starting a local etcd + kube-apiserver and the operator ...", flush=True)
    crds = Path(__file__).resolve().parents[2] / "manifests" / "crds"
    with LocalCluster(with_controller_manager=False, with_scheduler=False, with_kwok=False) as cluster:
        cluster.install_crds(crds)
        cluster.kubectl("create", "namespace", "registry-operator")
        port, health_port = free_port(), free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "WATCH_NAMESPACE": "",
            "POD_NAMESPACE": "registry-operator",
            "OPERATOR_METRICS_BIND_ADDRESS": f"127.0.0.1:{port}",
            "OPERATOR_HEALTH_PROBE_BIND_ADDRESS": f"127.0.0.1:{health_port}",
            "OPERATOR_LEADER_ELECTION": "false",
            "OPERATOR_BCRYPT_COST": "4",
            "LOG_LEVEL": "warning",
        }
        operator = ManagedProcess(
            "operator",
            [
                sys.executable,
                "-m",
                "registry_operator",
                "run",
                "--controllers=imagesecret,imageregistryaccount",
            ],
            cluster.workdir,
            env,
        )
        operator.start()
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        try:
            ready_url = f"http://127.0.0.1:{health_port}/readyz"
            wait_until(
                "operator /readyz",
                lambda: urllib.request.urlopen(ready_url, timeout=2).status == 200,
                60,
                operator,
            )
            yield Client.from_kubeconfig(cluster.kubeconfig), metrics_url
        finally:
            operator.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--kubeconfig", help="a cluster with the CRDs installed and the operator running")
    parser.add_argument("--metrics-url", help="the operator's /metrics URL (with --kubeconfig)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
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
