"""Fault scenario 5 of issue 17: watch connections reset every few seconds.

The framework's informers (in this process) list and watch ConfigMaps through toxiproxy. Every 3 s,
for half a second, every connection through the proxy that carries data is reset (RST, toxiproxy's
`reset_peer`): every watch stream breaks (the churn below keeps events flowing on it), and so does
any list in flight. Meanwhile the cluster admin creates, updates and deletes ConfigMaps for 20 s (the
issue says a minute; 20 s already breaks every watch about four times, as the reflector backs off
longer after each break, and keeps the suite's time down). The
informers must resume or relist each time; with the resets still going on, the cache (the
framework's cache API, `informer.store`) must equal the API server's state.
"""

from __future__ import annotations

import logging
import random
import threading
import time

import pytest

from e2e.faults.toxiproxy import Toxiproxy
from e2e.kube.support import api_state, cache_state, wait_for
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube.client import Client
from registry_operator.kube.errors import ApiError
from registry_operator.kube.factory import SharedInformerFactory
from registry_operator.kube.resources import CONFIGMAPS

pytestmark = pytest.mark.faults

CHURN_LABEL = "e2e.registry-operator/churn"
RESET_EVERY_SECONDS = 3.0
CHURN_SECONDS = 20.0


class CountingHandler(logging.Handler):
    """Counts the reflector's lines: watches that broke (then resumed) and list/watch failures."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.interrupted = 0
        self.failed = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.interrupted += "watch interrupted" in message
        self.failed += "list/watch failed" in message or "cannot watch" in message


def churn(admin: Client, namespace: str, stop: threading.Event, seed: int) -> int:
    rng = random.Random(seed)
    live: list[str] = []
    writes = 0
    while not stop.is_set():
        try:
            action = rng.random()
            if action < 0.5 or not live:
                name = f"churn-{writes}"
                body = {"metadata": {"name": name, "labels": {CHURN_LABEL: "yes"}}, "data": {"v": "0"}}
                admin.create(CONFIGMAPS, body, namespace)
                live.append(name)
            elif action < 0.85:
                name = rng.choice(live)
                admin.patch(CONFIGMAPS, name, {"data": {"v": str(writes)}}, namespace)
            else:
                name = live.pop(rng.randrange(len(live)))
                admin.delete(CONFIGMAPS, name, namespace)
            writes += 1
        except ApiError:
            pass
        time.sleep(0.02)
    return writes


def reset_every(toxiproxy: Toxiproxy, done: threading.Event) -> None:
    while not done.wait(RESET_EVERY_SECONDS):
        toxiproxy.reset_connections("informers")


def test_informers_resume_through_watch_resets_and_their_cache_matches_the_api_server(
    cluster: LocalCluster, namespace: str, toxiproxy: Toxiproxy
) -> None:
    admin = Client.from_kubeconfig(cluster.kubeconfig)
    listen = toxiproxy.proxy("informers", cluster.server.split("://", 1)[1])
    client = Client.from_kubeconfig(cluster.client_kubeconfig("informers", server=f"https://{listen}"))
    factory = SharedInformerFactory(client, resync_period=None)
    informer = factory.informer(CONFIGMAPS, namespace=namespace, label_selector={CHURN_LABEL: "yes"})
    counter = CountingHandler()
    reflector_log = logging.getLogger("registry_operator.kube.reflector")
    reflector_log.addHandler(counter)
    previous_level = reflector_log.level
    reflector_log.setLevel(logging.INFO)
    stop = threading.Event()
    resets_done = threading.Event()
    seed = random.randrange(1 << 30)
    result: list[int] = []
    try:
        factory.start()
        assert factory.wait_for_sync(30)
        resetter = threading.Thread(target=reset_every, args=(toxiproxy, resets_done), daemon=True)
        resetter.start()
        writer = threading.Thread(target=lambda: result.append(churn(admin, namespace, stop, seed)))
        writer.start()
        time.sleep(CHURN_SECONDS)
        stop.set()
        writer.join(30)
        stopped = time.monotonic()
        selector = f"{CHURN_LABEL}=yes"
        expected: dict[str, str] = {}

        def matches() -> bool:
            expected.update(api_state(admin, CONFIGMAPS, namespace, selector))
            return cache_state(informer) == api_state(admin, CONFIGMAPS, namespace, selector)

        try:
            # Resets go on: the cache must catch up between them.
            wait_for(matches, 30, "the informer's cache to equal the API server's state")
        finally:
            resets_done.set()
            print(
                f"\nconnection resets every {RESET_EVERY_SECONDS:g}s for {CHURN_SECONDS:g}s (seed {seed}): "
                f"{result[0] if result else '?'} writes, {counter.interrupted} watches broke and resumed, "
                f"{counter.failed} list/watch failures relisted; cache equal to the API server "
                f"{time.monotonic() - stopped:.2f}s after the last write ({len(expected)} objects)"
            )
        # Each break backs off longer (client-go's reflector backoff: 0.8 s doubling, reset after
        # 2 min without errors), so 20 s of resets every 3 s break a watch about four times.
        assert counter.interrupted + counter.failed >= 2, "the resets really broke the watches"
    finally:
        stop.set()
        resets_done.set()
        reflector_log.removeHandler(counter)
        reflector_log.setLevel(previous_level)
        factory.stop()
        client.close()
        admin.close()
