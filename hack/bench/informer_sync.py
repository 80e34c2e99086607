#!/usr/bin/env python3
"""Benchmark: initial sync of an informer over many ConfigMaps, and the memory it takes.

    .venv/bin/python hack/bench/informer_sync.py [--kubeconfig PATH] [--count 10000]

Creates `--count` ConfigMaps in a fresh namespace (on the cluster of `--kubeconfig`, or on a local
etcd + kube-apiserver started for the run), then starts a fresh process that builds one informer
over them and reports the time to `has_synced`, the time until the first handler saw every object,
and the process RSS before and after. Prints the figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from registry_operator.kube.client import Client
from registry_operator.kube.errors import AlreadyExists
from registry_operator.kube.informer import EventHandlerFuncs, SharedInformer
from registry_operator.kube.reflector import ClientListerWatcher
from registry_operator.kube.resources import CONFIGMAPS, NAMESPACES

LABEL = "bench.registry-operator/informer-sync"


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def cluster_kubeconfig(kubeconfig: str | None) -> Iterator[str]:
    if kubeconfig:
        yield kubeconfig
        return
    from registry_operator.devenv.cluster import LocalCluster

    print("no --kubeconfig: starting a local etcd + kube-apiserver ...", flush=True)
    with LocalCluster(with_controller_manager=False, with_scheduler=False, with_kwok=False) as cluster:
        yield str(cluster.kubeconfig)


def create_configmaps(client: Client, namespace: str, count: int, workers: int) -> float:
    def create(index: int) -> None:
        body = {
            "metadata": {"name": f"bench-{index:05d}", "labels": {LABEL: "yes"}},
            "data": {"index": str(index), "payload": "x" * 100},
        }
        with contextlib.suppress(AlreadyExists):
            client.create(CONFIGMAPS, body, namespace)

    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(create, range(count)):
            pass
    return time.monotonic() - started


def measure(kubeconfig: str, namespace: str, expect: int) -> dict[str, Any]:
    """Run in a fresh process, so the RSS figures belong to the informer alone."""
    rss_before = rss_bytes()
    client = Client.from_kubeconfig(kubeconfig)
    seen = threading.Event()
    count = 0

    def on_add(obj: dict[str, Any], initial: bool) -> None:
        nonlocal count
        count += 1
        if count >= expect:
            seen.set()

    informer = SharedInformer(
        ClientListerWatcher(client, CONFIGMAPS, namespace, label_selector=f"{LABEL}=yes"), name="bench"
    )
    informer.add_event_handler(EventHandlerFuncs(add=on_add))
    started = time.monotonic()
    informer.start()
    if not informer.wait_for_sync(600):
        raise SystemExit("informer did not sync within 10 minutes")
    synced = time.monotonic() - started
    seen.wait(600)
    handled = time.monotonic() - started
    result = {
        "objects": len(informer.store),
        "sync_seconds": round(synced, 3),
        "handlers_done_seconds": round(handled, 3),
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_bytes(),
    }
    informer.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kubeconfig", help="cluster to use (default: start a local one)")
    parser.add_argument("--count", type=int, default=10_000, help="number of ConfigMaps (default 10000)")
    parser.add_argument("--workers", type=int, default=8, help="parallel creates (default 8)")
    parser.add_argument("--keep", action="store_true", help="keep the namespace afterwards")
    parser.add_argument("--measure-namespace", help=argparse.SUPPRESS)  # internal: child process mode
    args = parser.parse_args(argv)

    if args.measure_namespace:
        print(json.dumps(measure(args.kubeconfig, args.measure_namespace, args.count)))
        return 0

    with cluster_kubeconfig(args.kubeconfig) as kubeconfig:
        client = Client.from_kubeconfig(kubeconfig, request_timeout=60)
        namespace = f"bench-informer-{uuid.uuid4().hex[:8]}"
        client.create(NAMESPACES, {"metadata": {"name": namespace}})
        try:
            print(f"creating {args.count} ConfigMaps in {namespace} ...", flush=True)
            create_seconds = create_configmaps(client, namespace, args.count, args.workers)
            print(f"created in {create_seconds:.1f}s ({args.count / create_seconds:.0f}/s)", flush=True)
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--kubeconfig",
                    kubeconfig,
                    "--count",
                    str(args.count),
                    "--measure-namespace",
                    namespace,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            figures = json.loads(child.stdout.strip().splitlines()[-1])
        finally:
            if not args.keep:
                client.delete(NAMESPACES, namespace, missing_ok=True)
    mib = 1024 * 1024
    growth = figures["rss_after_bytes"] - figures["rss_before_bytes"]
    print(f"objects in cache:            {figures['objects']}")
    print(f"initial sync (has_synced):   {figures['sync_seconds']:.2f} s")
    print(f"all initial adds handled:    {figures['handlers_done_seconds']:.2f} s")
    print(f"RSS before informer:         {figures['rss_before_bytes'] / mib:.1f} MiB")
    print(f"RSS after sync:              {figures['rss_after_bytes'] / mib:.1f} MiB")
    print(f"RSS growth per object:       {growth / max(1, figures['objects']) / 1024:.2f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
