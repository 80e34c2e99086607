"""The real cert-manager controller (built by hack/build-deps.sh) running against the local cluster."""

from __future__ import annotations

from pathlib import Path

from registry_operator.devenv import binaries
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.devenv.processes import ManagedProcess, free_port

CERT_MANAGER_NAMESPACE = "cert-manager"


class CertManager:
    """Installs cert-manager's CRDs and runs its controller (no webhook, no cainjector: neither is
    needed to issue certificates from SelfSigned and CA issuers)."""

    def __init__(self, cluster: LocalCluster, log_dir: Path, *, controllers: str | None = None) -> None:
        self.cluster = cluster
        self.component = binaries.ensure("cert-manager")["cert-manager"]
        self.process = ManagedProcess(
            "cert-manager",
            [
                str(self.component.path("cert-manager-controller")),
                f"--kubeconfig={cluster.kubeconfig}",
                "--leader-elect=false",
                f"--cluster-resource-namespace={CERT_MANAGER_NAMESPACE}",
                # Its default :9402 would collide with a second instance or another test process.
                f"--metrics-listen-address=127.0.0.1:{free_port()}",
                *([f"--controllers={controllers}"] if controllers else []),
                "--v=2",
            ],
            log_dir,
        )

    def start(self) -> CertManager:
        self.cluster.install_crds(self.component.path("crds"))
        self.cluster.kubectl("create", "namespace", CERT_MANAGER_NAMESPACE, check=False)
        self.process.start()
        return self

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> CertManager:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
