"""`make run`: a local control plane plus the operator, until Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

from registry_operator.devenv.binaries import REPO_ROOT
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.devenv.processes import ManagedProcess

OPERATOR_NAMESPACE = "registry-operator"
KUBECONFIG = REPO_ROOT / ".dev" / "kubeconfig"


def run_dev(*, with_operator: bool = True) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    print("starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok ...", flush=True)
    cluster = LocalCluster(kubeconfig_path=KUBECONFIG, storage_provisioner=True)
    operator: ManagedProcess | None = None
    try:
        cluster.start()
        crds = cluster.install_crds(REPO_ROOT / "manifests" / "crds")
        cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
        if with_operator:
            env = {
                **os.environ,
                "KUBECONFIG": str(KUBECONFIG),
                "WATCH_NAMESPACE": "",
                "POD_NAMESPACE": OPERATOR_NAMESPACE,
                "OPERATOR_DEFAULT_REGISTRY_NAMESPACE": "default",
            }
            operator = ManagedProcess(
                "operator", [sys.executable, "-m", "registry_operator", "run"], cluster.log_dir, env
            )
            operator.start()
        kubectl = cluster.kubectl_path
        print(
            f"""
local cluster is up ({cluster.server}); {crds} CRDs installed.
  export KUBECONFIG={KUBECONFIG}
  alias kubectl={kubectl}          # v{kubectl.parent.name.split("-v", 1)[1]}; any recent kubectl works
  kubectl apply -k manifests/examples          # registry, push/pull secrets, build env (namespace default)
  kubectl wait --for=condition=Ready imageregistry/registry imagepushsecret/example imagepullsecret/example
  kubectl get registry-operator                 # every kind, with Ready and Reason columns
component logs: {cluster.log_dir}{"  (operator: operator.log)" if operator else ""}
Ctrl-C stops everything.""",
            flush=True,
        )
        while not stop.wait(1.0):
            if operator is not None and not operator.running():
                print(f"the operator exited:\n{operator.log_tail()}", file=sys.stderr)
                return 1
        return 0
    finally:
        print("\nstopping ...", flush=True)
        if operator is not None:
            operator.stop(timeout=35)  # the manager's graceful shutdown takes up to 30 s
        cluster.stop()
        KUBECONFIG.unlink(missing_ok=True)
