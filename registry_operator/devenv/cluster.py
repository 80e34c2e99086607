"""A real local Kubernetes control plane for tests and `make run`.

etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok (fake kubelet: nodes become
Ready, pods become Running/Ready) on 127.0.0.1 with free ports, generated certificates and an admin
kubeconfig. Nothing is faked at the API level: objects go through the real admission, validation,
garbage collection and controllers.

kube-apiserver writes an audit log (`audit_log`, JSON lines) of every write to the project's
resources and the core/apps/coordination kinds it manages, at Metadata level (who, what, when, the
answer's code; never an object's content). With `client_kubeconfig(name)` each process of a test can
get its own client certificate, so the log attributes every write to the process that sent it.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from registry_operator.devenv import binaries
from registry_operator.devenv.certs import DevCert, issue_cert
from registry_operator.devenv.processes import ManagedProcess, StartupError, free_port, wait_until

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/24"
FAKE_NODE = "kwok-node-0"
STANDARD_STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {
        "name": "standard",
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
    },
    "provisioner": "kubernetes.io/host-path",
    "reclaimPolicy": "Delete",
    "volumeBindingMode": "Immediate",
}


# Writes only (reads would drown them), Metadata level: user, verb, object reference, response code.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "Metadata",
            "verbs": ["create", "update", "patch", "delete", "deletecollection"],
            "resources": [
                {"group": "registry.mgoltzsche.github.com"},
                {
                    "group": "",
                    "resources": [
                        "secrets",
                        "configmaps",
                        "serviceaccounts",
                        "services",
                        "persistentvolumeclaims",
                    ],
                },
                {"group": "apps", "resources": ["statefulsets", "deployments"]},
                {"group": "coordination.k8s.io", "resources": ["leases"]},
            ],
        },
        {"level": "None"},
    ],
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class LocalCluster:
    """Start with `start()` or a `with` block; `stop()` always removes every process and temp dir."""

    def __init__(
        self,
        *,
        kubeconfig_path: Path | None = None,
        with_controller_manager: bool = True,
        with_scheduler: bool = True,
        with_kwok: bool = True,
        storage_provisioner: bool = False,
        keep_workdir: bool = False,
    ) -> None:
        self.with_controller_manager = with_controller_manager
        self.with_scheduler = with_scheduler
        self.with_kwok = with_kwok
        # kube-controller-manager's development hostPath provisioner behind a default StorageClass
        # `standard` (the class the seed's ImageRegistry example names), so claims bind by themselves.
        self.storage_provisioner = storage_provisioner and with_controller_manager
        self.keep_workdir = keep_workdir
        self.workdir = Path(tempfile.mkdtemp(prefix="registry-operator-cluster-"))
        self.log_dir = self.workdir / "logs"
        self.kubeconfig = kubeconfig_path or self.workdir / "admin.kubeconfig"
        self._kubeconfig_is_external = kubeconfig_path is not None
        self.etcd_url = ""
        self.server = ""
        self._processes: dict[str, ManagedProcess] = {}
        self._ca_pem = b""
        self._admin: DevCert | None = None
        self._client_ca: DevCert | None = None
        self.audit_log = self.log_dir / "audit.log"
        self._bins: dict[str, binaries.Component] = {}

    # ---- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self._bins = binaries.ensure("kubernetes", "etcd", *(["kwok"] if self.with_kwok else []))
        self._write_pki()
        self._start_etcd()
        self._start_apiserver(free_port())
        self._write_kubeconfig()
        if self.with_controller_manager:
            self._start_component("kube-controller-manager", self._controller_manager_args())
        if self.with_scheduler:
            self._start_component("kube-scheduler", self._scheduler_args())
        if self.with_kwok:
            self._start_kwok()
        if self.with_controller_manager:
            # The service-account controllers create `default` in every namespace; admission refuses
            # pods without it, so wait until controller-manager has caught up.
            wait_until(
                "the default ServiceAccount (kube-controller-manager)",
                lambda: (
                    self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode
                    == 0
                ),
                60,
                self._processes["kube-controller-manager"],
            )
        if self.storage_provisioner:
            self.kubectl("apply", "-f", "-", input=json.dumps(STANDARD_STORAGE_CLASS))

    def stop(self) -> None:
        for name in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self._processes.pop(name, None)
            if proc is not None:
                proc.stop()
        for proc in self._processes.values():
            proc.stop()
        self._processes.clear()
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def process(self, name: str) -> ManagedProcess:
        return self._processes[name]

    # ---- helpers for tests --------------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self._bins["kubernetes"].path("kubectl")), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
        return result

    @property
    def kubectl_path(self) -> Path:
        return self._bins["kubernetes"].path("kubectl")

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port (watches break, state stays)."""
        port = int(self.server.rsplit(":", 1)[1])
        self._processes.pop("kube-apiserver").stop()
        self._start_apiserver(port)

    def compact_etcd(self) -> int:
        """Compact etcd to its current revision so older resourceVersions become 'too old'."""
        header = self._etcd_post("/v3/kv/range", {"key": _b64(b"\0"), "range_end": _b64(b"\0"), "limit": 1})
        revision = int(header["header"]["revision"])
        self._etcd_post("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def install_crds(self, directory: Path) -> int:
        """Server-side apply every CRD file in `directory` and wait until all are Established."""
        files = sorted(p for p in directory.glob("*.yaml") if p.name != "kustomization.yaml")
        for path in files:
            self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        if files:
            self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        return len(files)

    def client_kubeconfig(self, user: str, *, server: str | None = None) -> Path:
        """A kubeconfig with a client certificate of its own (CN=`user`, cluster admin), so the audit
        log names this user for every request made with it; `server` e.g. a fault-injecting proxy."""
        assert self._client_ca is not None
        cert = issue_cert(user, issuer=self._client_ca, organization="system:masters", client=True)
        path = self.workdir / f"{user}.kubeconfig"
        self._write_kubeconfig_file(path, user, cert, server or self.server)
        return path

    def audit_events(self) -> list[dict[str, Any]]:
        """Every event kube-apiserver has written to the audit log so far (a line being written is
        skipped)."""
        events: list[dict[str, Any]] = []
        if not self.audit_log.exists():
            return events
        for line in self.audit_log.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def api_get(self, path: str) -> Any:
        """GET an API path as the admin user (used for readiness and /version)."""
        with self._https_open(path) as response:
            return json.loads(response.read())

    # ---- internals ----------------------------------------------------------------------------

    def _etcd_post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            self.etcd_url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self._ca_pem.decode())
        ctx.load_cert_chain(self.workdir / "pki" / "admin.crt", self.workdir / "pki" / "admin.key")
        return ctx

    def _https_open(self, path: str) -> Any:
        return urllib.request.urlopen(self.server + path, timeout=5, context=self._ssl_context())

    def _write_pki(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(parents=True)
        server_ca = issue_cert("registry-operator-dev-ca")
        client_ca = self._client_ca = issue_cert("registry-operator-dev-client-ca")
        serving = issue_cert(
            "kube-apiserver",
            issuer=server_ca,
            server_names=(
                "127.0.0.1",
                "localhost",
                "10.96.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
        )
        self._admin = issue_cert("admin", issuer=client_ca, organization="system:masters", client=True)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        files = {
            "ca.crt": server_ca.cert_pem(),
            "client-ca.crt": client_ca.cert_pem(),
            "apiserver.crt": serving.cert_pem(),
            "apiserver.key": serving.key_pem(),
            "admin.crt": self._admin.cert_pem(),
            "admin.key": self._admin.key_pem(),
            "sa.key": sa_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            "sa.pub": sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        }
        for name, data in files.items():
            (pki / name).write_bytes(data)
            (pki / name).chmod(0o600)
        self._ca_pem = files["ca.crt"]
        (pki / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        argv = [
            str(self._bins["etcd"].path("etcd")),
            "--name=default",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=default=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]
        proc = self._spawn("etcd", argv)

        def healthy() -> bool:
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as response:
                return bool(json.loads(response.read()).get("health") == "true")

        wait_until("etcd /health", healthy, 30, proc)

    def _start_apiserver(self, port: int) -> None:
        pki = self.workdir / "pki"
        self.server = f"https://127.0.0.1:{port}"
        argv = [
            str(self._bins["kubernetes"].path("kube-apiserver")),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'client-ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            f"--audit-policy-file={pki / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--v=1",
        ]
        proc = self._spawn("kube-apiserver", argv)

        def ready() -> bool:
            with self._https_open("/readyz") as response:
                return bool(response.status == 200)

        wait_until("kube-apiserver /readyz", ready, 90, proc)

    def _write_kubeconfig(self) -> None:
        assert self._admin is not None
        self._write_kubeconfig_file(self.kubeconfig, "admin", self._admin, self.server)

    def _write_kubeconfig_file(self, path: Path, user: str, cert: DevCert, server: str) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "registry-operator-dev",
                    "cluster": {"server": server, "certificate-authority-data": _b64(self._ca_pem)},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": _b64(cert.cert_pem()),
                        "client-key-data": _b64(cert.key_pem()),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "registry-operator-dev",
                    "context": {"cluster": "registry-operator-dev", "user": user},
                }
            ],
            "current-context": "registry-operator-dev",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def _controller_manager_args(self) -> list[str]:
        pki = self.workdir / "pki"
        return [
            f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            *(["--enable-hostpath-provisioner=true"] if self.storage_provisioner else []),
            "--v=1",
        ]

    def _scheduler_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--leader-elect=false",
            "--v=1",
        ]

    def _start_component(self, name: str, args: list[str]) -> None:
        proc = self._spawn(name, [str(self._bins["kubernetes"].path(name)), *args])
        port = next(int(a.split("=", 1)[1]) for a in args if a.startswith("--secure-port="))
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # its serving cert is self-signed; only liveness matters here

        def healthy() -> bool:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{port}/healthz", timeout=2, context=insecure
            ) as r:
                return bool(r.status == 200)

        wait_until(f"{name} /healthz", healthy, 60, proc)

    def _start_kwok(self) -> None:
        kwok = self._bins["kwok"]
        argv = [
            str(kwok.path("kwok")),
            f"--kubeconfig={self.kubeconfig}",
            f"--config={kwok.path('stages.yaml')}",
            "--manage-all-nodes=true",
            f"--cidr={POD_CIDR}",
            "--node-ip=10.244.0.1",
            "--node-lease-duration-seconds=40",
        ]
        proc = self._spawn("kwok", argv)
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": FAKE_NODE,
                "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
                "labels": {"kubernetes.io/hostname": FAKE_NODE, "type": "kwok"},
            },
            "status": {
                "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            },
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(node))

        def node_ready() -> bool:
            out = self.kubectl(
                "get", "node", FAKE_NODE, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'
            ).stdout
            return out.strip() == "True"

        wait_until(f"node {FAKE_NODE} Ready (kwok)", node_ready, 60, proc)

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        proc = ManagedProcess(name, argv, self.log_dir)
        self._processes[name] = proc
        proc.start()
        return proc


__all__ = ["FAKE_NODE", "LocalCluster", "StartupError"]
