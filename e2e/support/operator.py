"""The real operator (`python -m registry_operator run`) as a subprocess against the local cluster."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from registry_operator.devenv.cluster import LocalCluster
from registry_operator.devenv.processes import ManagedProcess, free_port, wait_until

OPERATOR_NAMESPACE = "registry-operator"


class OperatorProcess:
    """One operator process. `controllers` selects a subset, e.g. "caroot,imageregistry"."""

    def __init__(
        self,
        cluster: LocalCluster,
        log_dir: Path,
        *,
        controllers: str = "*",
        env: dict[str, str] | None = None,
        name: str = "operator",
    ) -> None:
        self.cluster = cluster
        self.metrics_port = free_port()
        self.health_port = free_port()
        self._env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "WATCH_NAMESPACE": "",
            "POD_NAMESPACE": OPERATOR_NAMESPACE,
            "OPERATOR_METRICS_BIND_ADDRESS": f"127.0.0.1:{self.metrics_port}",
            "OPERATOR_HEALTH_PROBE_BIND_ADDRESS": f"127.0.0.1:{self.health_port}",
            "LOG_LEVEL": "debug",
            **(env or {}),
        }
        self.process = ManagedProcess(
            name,
            [sys.executable, "-m", "registry_operator", "run", f"--controllers={controllers}"],
            log_dir,
            self._env,
        )

    def start(self, *, wait_ready: bool = True) -> OperatorProcess:
        self._ensure_active_namespace()
        self.process.start()
        if wait_ready:
            wait_until("operator /readyz", lambda: self.http_get("/readyz")[0] == 200, 60, self.process)
        return self

    def _ensure_active_namespace(self) -> None:
        """The operator's Lease lives there: a namespace still terminating (another test's cleanup)
        would refuse it, so wait for it to go and create it afresh."""

        def active() -> bool:
            phase = self.cluster.kubectl(
                "get", "namespace", OPERATOR_NAMESPACE, "-o", "jsonpath={.status.phase}", check=False
            )
            if phase.returncode != 0:  # gone: create it
                self.cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
                return False
            return phase.stdout == "Active"

        wait_until(f"namespace {OPERATOR_NAMESPACE} to be Active", active, 120)

    def http_get(self, path: str, port: int | None = None) -> tuple[int, str]:
        url = f"http://127.0.0.1:{port or self.health_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def metrics(self) -> str:
        status, body = self.http_get("/metrics", self.metrics_port)
        assert status == 200, body
        return body

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace") if self.process.log_path.exists() else ""

    def stop(self) -> None:
        self.process.stop(timeout=35)

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
