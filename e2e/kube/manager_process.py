"""A manager with one trivial ConfigMap controller, run as its own OS process by the e2e tests.

    python -m e2e.kube.manager_process --kubeconfig K --namespace NS --lease-name L --identity ID

The controller stamps every ConfigMap labelled `e2e.registry-operator/probe=yes` in NS with the
annotation `e2e.registry-operator/reconciled-by: <identity>`. The process prints one JSON line per
milestone on stdout ({"event": "serving", "port": ...}, {"event": "leading"}, {"event": "exit", ...})
and exits with the manager's exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Sequence

from registry_operator.kube.client import Client
from registry_operator.kube.controller import Controller, Request, Result
from registry_operator.kube.manager import Manager, ManagerOptions
from registry_operator.kube.resources import CONFIGMAPS

PROBE_LABEL = "e2e.registry-operator/probe"
RECONCILED_BY = "e2e.registry-operator/reconciled-by"


def announce(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "time": time.time(), **fields}), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--lease-name", required=True)
    parser.add_argument("--identity", required=True)
    parser.add_argument("--server", default=None, help="API server URL (e.g. a fault-injecting proxy)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")

    client = Client.from_kubeconfig(args.kubeconfig, server=args.server)
    manager = Manager(
        client,
        ManagerOptions(
            bind_address="127.0.0.1:0",
            leader_election=True,
            leader_election_id=args.lease_name,
            leader_election_namespace=args.namespace,
            leader_election_identity=args.identity,
        ),
    )
    probes = manager.informers.informer(
        CONFIGMAPS, namespace=args.namespace, label_selector={PROBE_LABEL: "yes"}
    )

    def reconcile(request: Request) -> Result | None:
        configmap = probes.store.get_by_name(request.namespace, request.name, copy=False)
        if configmap is None:
            return None
        if (configmap["metadata"].get("annotations") or {}).get(RECONCILED_BY) != args.identity:
            # Conditional (resourceVersion) and through the manager's client, whose requests end
            # before this replica's lease could pass to another one.
            metadata = {
                "resourceVersion": configmap["metadata"]["resourceVersion"],
                "annotations": {RECONCILED_BY: args.identity},
            }
            manager.client.patch(CONFIGMAPS, request.name, {"metadata": metadata}, request.namespace)
        return None

    controller = Controller("probe", reconcile)
    controller.watch_for(probes)
    manager.add_controller(controller)

    def report_milestones() -> None:
        while manager.bound_port is None:
            time.sleep(0.01)
        announce("serving", port=manager.bound_port, identity=args.identity)
        while not manager.is_leader():
            time.sleep(0.01)
        announce("leading", identity=args.identity)

    threading.Thread(target=report_milestones, daemon=True).start()
    code = manager.run()
    announce("exit", code=int(code))
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
