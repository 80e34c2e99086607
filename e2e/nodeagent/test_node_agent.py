"""The node agent, for real: a real containerd (and skopeo) pull through the files the agent writes
from what the operator publishes, with the agent running under its ServiceAccount's token and the
RBAC of manifests/node-trust.

Auth: the registry (real distribution, TLS from the test's CA as the operator's TLS Secret holds it)
uses htpasswd with the credentials of the pull Secret the operator's real imagesecret controller
generates for an ImagePullSecret; the docker_auth token stack is not involved here (the agent only
cares about trust and names, which are the same with tokens).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.controllers.imagesecret_support import create_cr, secret_values, set_registry_status, wait_ready
from e2e.nodeagent.support import NodeSandbox, SandboxContainerd, SandboxRegistry, tree
from e2e.support import oci
from e2e.support.operator import OPERATOR_NAMESPACE
from registry_operator import pki
from registry_operator.controllers.common import now_utc
from registry_operator.controllers.imagesecret_desired import PULL
from registry_operator.controllers.resources import IMAGE_REGISTRIES, SECRETS, SERVICES
from registry_operator.devenv import binaries
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.devenv.processes import ManagedProcess, wait_until
from registry_operator.kube.client import Client
from registry_operator.passwords import hash_password

REPO = Path(__file__).resolve().parents[2]
SA = "registry-operator-node-agent"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="rootful containerd and namespaces need root")


def apply_node_trust_rbac(cluster: LocalCluster) -> None:
    """manifests/node-trust as built by kustomize, without the DaemonSet (no kubelet runs here)."""
    built = cluster.kubectl("kustomize", str(REPO / "manifests" / "node-trust")).stdout
    docs = [d for d in yaml.safe_load_all(built) if d and d["kind"] != "DaemonSet"]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def service_account_kubeconfig(cluster: LocalCluster, path: Path) -> Path:
    token = cluster.kubectl("create", "token", SA, "-n", OPERATOR_NAMESPACE, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": SA, "user": {"token": token}}],
        "contexts": [{"name": SA, "context": {"cluster": "local", "user": SA}}],
        "current-context": SA,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def new_ca(name: str) -> pki.ParsedBundle:
    bundle = pki.create_ca(name, now_utc(), key_size=2048, lifetime=timedelta(days=1))
    parsed = pki.parse_bundle(bundle)
    assert not isinstance(parsed, pki.PkiError)
    return parsed


def issue(ca: pki.ParsedBundle, hostname: str, workdir: Path) -> dict[str, bytes]:
    bundle = pki.create_server_cert(ca, [hostname], now_utc(), key_size=2048)
    (workdir / "tls.crt").write_bytes(bundle.cert_pem)
    (workdir / "tls.key").write_bytes(bundle.key_pem)
    return {"tls.crt": bundle.cert_pem, "tls.key": bundle.key_pem, "ca.crt": bundle.ca_pem}


def put_tls_secret(api: Client, namespace: str, name: str, data: dict[str, bytes]) -> None:
    encoded = {k: base64.b64encode(v).decode() for k, v in data.items()}
    try:
        current = api.get(SECRETS, name, namespace)
    except Exception:
        api.create(
            SECRETS,
            {
                "metadata": {"name": name, "namespace": namespace},
                "type": "kubernetes.io/tls",
                "data": encoded,
            },
        )
        return
    current["data"] = encoded
    api.update(SECRETS, current)


@pytest.fixture
def host_root(tmp_path: Path) -> Path:
    """A node's /etc with files that are not the agent's: they must stay byte for byte."""
    root = tmp_path / "host"
    (root / "etc" / "containers").mkdir(parents=True)
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    (root / "etc" / "containers" / "policy.json").write_text(
        json.dumps({"default": [{"type": "insecureAcceptAnything"}]})
    )
    other = root / "etc" / "containerd" / "certs.d" / "other.example:5000"
    other.mkdir(parents=True)
    (other / "hosts.toml").write_text('server = "https://other.example:5000"\n')
    return root


@pytest.fixture
def sandbox_stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    holder: dict[str, Any] = {}
    yield holder
    for name in ("agent", "containerd", "registry"):
        if name in holder:
            holder[name].stop()
    if "sandbox" in holder:
        holder["sandbox"].stop()


def test_containerd_and_skopeo_pull_through_the_agents_files(
    cluster: LocalCluster,
    namespace: str,
    start_operator: Any,
    tmp_path: Path,
    host_root: Path,
    sandbox_stack: dict[str, Any],
) -> None:
    api = Client.from_kubeconfig(cluster.kubeconfig)
    start_operator(controllers="imagesecret")
    apply_node_trust_rbac(cluster)

    # The registry as the operator publishes it: ImageRegistry status, TLS Secret, Service.
    hostname = f"registry.{namespace}.svc.cluster.local"
    tls_name = "imageregistry-registry-selfsigned-tls"
    api.create(
        IMAGE_REGISTRIES,
        {
            "metadata": {"name": "registry", "namespace": namespace},
            "spec": {"persistentVolumeClaim": {"resources": {"requests": {"storage": "1Gi"}}}},
        },
    )
    service = api.create(
        SERVICES,
        {
            "metadata": {"name": "registry", "namespace": namespace},
            "spec": {
                "type": "ClusterIP",
                "ports": [{"name": "https", "port": 443}],
                "selector": {"app": "x"},
            },
        },
    )
    cluster_ip = service["spec"]["clusterIP"]
    work = tmp_path / "registry"
    work.mkdir()
    ca1 = new_ca("node-agent e2e CA 1")
    put_tls_secret(api, namespace, tls_name, issue(ca1, hostname, work))
    set_registry_status(api, namespace, "registry", ready=True, hostname=hostname, tls_name=tls_name)

    # Real credentials: the operator's pull Secret.
    create_cr(api, PULL, namespace, "node", {"name": "registry"})
    wait_ready(api, PULL, namespace, "node", timeout=30)
    pull = secret_values(api, namespace, "imagepullsecret-node")
    assert pull["registry"] == hostname
    user = f"{pull['username']}:{pull['password']}"
    htpasswd = work / "htpasswd"
    htpasswd.write_text(f"{pull['username']}:{hash_password(pull['password'], 4)}\n")

    sandbox = sandbox_stack["sandbox"] = NodeSandbox(tmp_path, host_root, cluster_ip).start()
    registry = sandbox_stack["registry"] = SandboxRegistry(
        sandbox, work, htpasswd=htpasswd, cert=work / "tls.crt", key=work / "tls.key"
    )
    registry.start()
    containerd = sandbox_stack["containerd"] = SandboxContainerd(sandbox, tmp_path / "containerd")
    containerd.start()
    containerd_pid = containerd.process.pid if containerd.process else None

    hosts = host_root / "etc" / "hosts"
    original_hosts = hosts.read_text()
    hosts.write_text(original_hosts + f"{cluster_ip} {hostname}\n")
    # Push an image with skopeo (CA given explicitly: the agent has written nothing yet).
    layout = tmp_path / "layout"
    oci.write_image(layout)
    cadir = tmp_path / "push-ca"
    cadir.mkdir()
    (cadir / "ca.crt").write_text(pull["ca.crt"])
    ref = f"{hostname}/e2e/hello:v1"
    skopeo = str(binaries.skopeo())
    pushed = sandbox.run(
        skopeo,
        "copy",
        "--dest-cert-dir",
        str(cadir),
        "--dest-creds",
        user,
        f"oci:{layout}:v1",
        f"docker://{ref}",
    )
    assert pushed.returncode == 0, pushed.stderr

    # Without the agent's files (the name resolves through a line of the user's): x509 error.
    refused = containerd.pull(ref, user)
    assert refused.returncode != 0 and "x509" in refused.stderr, refused.stderr
    inspected = sandbox.run(skopeo, "inspect", "--creds", user, f"docker://{ref}")
    assert inspected.returncode != 0 and "x509" in inspected.stderr, inspected.stderr
    hosts.write_text(original_hosts)  # from here on only the agent makes the name resolve
    before = tree(host_root)

    # The agent, with its ServiceAccount's token (the RBAC of manifests/node-trust), resync 1s.
    kubeconfig = service_account_kubeconfig(cluster, tmp_path / "node-agent.kubeconfig")
    agent = sandbox_stack["agent"] = ManagedProcess(
        "node-agent",
        [
            sys.executable, "-m", "registry_operator", "node-agent", f"--host-root={host_root}",
            "--resync-period=1", f"--kubeconfig={kubeconfig}",
        ],
        tmp_path,
        {**os.environ, "LOG_LEVEL": "info"},
    )  # fmt: skip
    agent.start()
    certs = host_root / "etc" / "containerd" / "certs.d" / hostname
    wait_until("the agent's hosts.toml", lambda: (certs / "hosts.toml").exists(), 30, agent)
    wait_until("the agent's /etc/hosts block", lambda: hostname in hosts.read_text(), 30, agent)
    assert (certs / "ca.crt").read_text() == pull["ca.crt"]
    assert (host_root / "etc" / "containers" / "certs.d" / hostname / "ca.crt").read_text() == pull["ca.crt"]
    assert f"{cluster_ip} {hostname}" in hosts.read_text()

    first = containerd.pull(ref, user)
    assert first.returncode == 0, first.stderr
    inspected = sandbox.run(skopeo, "inspect", "--creds", user, f"docker://{ref}")
    assert inspected.returncode == 0, inspected.stderr  # /etc/containers/certs.d/<host>/ca.crt

    # CA rotation: the registry serves a certificate of a new CA, then the TLS Secret changes.
    ca2 = new_ca("node-agent e2e CA 2")
    registry.stop()
    rotated = issue(ca2, hostname, work)
    registry.start("registry-rotated")
    failing = containerd.pull(ref, user)
    assert failing.returncode != 0 and "x509" in failing.stderr, failing.stderr
    changed = time.monotonic()
    put_tls_secret(api, namespace, tls_name, rotated)
    attempts = 0
    while True:
        attempts += 1
        result = containerd.pull(ref, user)
        if result.returncode == 0:
            break
        assert "x509" in result.stderr, result.stderr
        assert time.monotonic() - changed < 60, f"no successful pull 60s after the CA change: {result.stderr}"
        time.sleep(0.2)
    took = time.monotonic() - changed
    print(f"\nCA changed -> first successful containerd pull in {took:.2f}s ({attempts} pulls)")
    assert containerd.process is not None and containerd.process.pid == containerd_pid
    assert containerd.process.running()  # the same containerd, never restarted
    inspected = sandbox.run(skopeo, "inspect", "--creds", user, f"docker://{ref}")
    assert inspected.returncode == 0, inspected.stderr

    # The registry goes away: every file the agent wrote goes, everything else stays as it was.
    api.delete(IMAGE_REGISTRIES, "registry", namespace)
    wait_until("the host root as before the agent", lambda: tree(host_root) == before, 30, agent)
    assert hosts.read_text() == original_hosts
    assert agent.running()


def test_sigterm_keeps_the_files_and_cleanup_removes_exactly_them(
    cluster: LocalCluster, namespace: str, start_operator: Any, tmp_path: Path, host_root: Path
) -> None:
    """A DaemonSet rollout (SIGTERM) must not drop trust; `--cleanup` (uninstall) removes it all."""
    api = Client.from_kubeconfig(cluster.kubeconfig)
    start_operator(controllers="caroot")  # only for the operator namespace the ServiceAccount lives in
    apply_node_trust_rbac(cluster)
    hostname = f"registry.{namespace}.svc.cluster.local"
    api.create(
        IMAGE_REGISTRIES,
        {
            "metadata": {"name": "registry", "namespace": namespace},
            "spec": {"persistentVolumeClaim": {"resources": {"requests": {"storage": "1Gi"}}}},
        },
    )
    cluster_ip = api.create(
        SERVICES,
        {"metadata": {"name": "registry", "namespace": namespace}, "spec": {"ports": [{"port": 443}]}},
    )["spec"]["clusterIP"]
    work = tmp_path / "certs"
    work.mkdir()
    put_tls_secret(api, namespace, "tls", issue(new_ca("cleanup CA"), hostname, work))
    set_registry_status(api, namespace, "registry", ready=True, hostname=hostname, tls_name="tls")
    before = tree(host_root)
    kubeconfig = service_account_kubeconfig(cluster, tmp_path / "node-agent.kubeconfig")
    argv = [sys.executable, "-m", "registry_operator", "node-agent", f"--host-root={host_root}"]
    agent = ManagedProcess(
        "node-agent", [*argv, f"--kubeconfig={kubeconfig}"], tmp_path, {**os.environ, "LOG_LEVEL": "info"}
    )
    agent.start()
    hosts = host_root / "etc" / "hosts"
    try:
        wait_until("the agent's files", lambda: f"{cluster_ip} {hostname}" in hosts.read_text(), 30, agent)
    finally:
        agent.stop()  # SIGTERM
    written = tree(host_root)
    assert written != before
    assert f"etc/containerd/certs.d/{hostname}/hosts.toml" in written
    assert f"etc/containers/certs.d/{hostname}/ca.crt" in written
    # Idempotent: a second agent run changes nothing (the record holds what it wrote).
    again = ManagedProcess("node-agent-2", [*argv, f"--kubeconfig={kubeconfig}"], tmp_path, dict(os.environ))
    again.start()
    time.sleep(3)
    again.stop()
    assert tree(host_root) == written
    cleanup = subprocess.run([*argv, "--cleanup"], capture_output=True, text=True, timeout=60, check=False)
    assert cleanup.returncode == 0, cleanup.stderr
    assert tree(host_root) == before
