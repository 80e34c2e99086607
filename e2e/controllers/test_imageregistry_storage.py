"""Object storage and garbage collection, with the operator's rendered config and the real registry.

The operator (real control plane) renders an S3 ImageRegistry; the test runs the real distribution
registry with exactly the `registry.yml` the operator wrote (only the listen address and the TLS /
token file paths rewritten, as in test_imageregistry_stack.py) and the S3 key pair from the user's
Secret set as the env variables the StatefulSet maps from it, against a real S3-compatible server
on loopback (moto, enforcing signatures). skopeo pushes and pulls through it under the registry's
hostname (a CONNECT proxy), trusting only the operator's root CA, with tokens signed by the
operator's token key as docker_auth would sign them (docker_auth itself runs in the docker_auth lane).

Garbage collection: kubelet does not run containers here (kwok only marks pods ready or done), so the
operator's run is checked as objects (read-only config, the Job and its command, the status), and the
Job's exact command then runs locally with the real `registry garbage-collect` against the bucket.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from e2e.api.kube import apply
from e2e.controllers.imageregistry_support import decoded, get_or_none, wait_condition
from e2e.docker_auth.stack import ConnectProxy, _tcp_open
from e2e.kube.support import wait_for
from e2e.support.oci import write_image
from e2e.support.operator import OPERATOR_NAMESPACE, OperatorProcess
from e2e.support.s3 import MotoS3
from e2e.support.tokens import mint_token
from registry_operator import dockerauth
from registry_operator.api import constants as c
from registry_operator.controllers.imageregistry.garbagecollection import parse_report
from registry_operator.controllers.resources import (
    CONFIGMAPS,
    IMAGE_REGISTRIES,
    JOBS,
    PERSISTENT_VOLUME_CLAIMS,
    SECRETS,
    STATEFULSETS,
)
from registry_operator.devenv import binaries
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.devenv.processes import ManagedProcess, free_port, wait_until
from registry_operator.kube.client import Client
from registry_operator.kube.errors import Invalid

REPO = "team/app"
CREDENTIALS_SECRET = "s3-credentials"


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[MotoS3]:
    with MotoS3(tmp_path / "moto") as server:
        yield server


def s3_registry(name: str, s3: MotoS3, namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "replicas": 2,  # more than one, without ReadWriteMany: the bucket is shared
        "storage": {
            "type": "S3",
            "s3": {
                "bucket": s3.bucket,
                "regionEndpoint": s3.endpoint,
                "forcePathStyle": True,
                "rootDirectory": "/registry",
                "credentialsSecretRef": {"name": CREDENTIALS_SECRET},
            },
        },
        **spec,
    }
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND_IMAGE_REGISTRY,
        "metadata": {"name": name},
        "spec": body,
    }


def create_credentials(api: Client, namespace: str, s3: MotoS3) -> None:
    values = {"accessKeyId": s3.access_key_id, "secretAccessKey": s3.secret_access_key}
    api.create(
        SECRETS,
        {
            "metadata": {"name": CREDENTIALS_SECRET, "namespace": namespace},
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in values.items()},
        },
        namespace,
    )


@dataclass
class RunningRegistry:
    """The real registry with the operator's config, reachable as https://<hostname> via a proxy."""

    hostname: str
    workdir: Path
    port: int
    process: ManagedProcess
    proxy: ConnectProxy
    token_key: rsa.RSAPrivateKey
    issuer: str

    def token(self, actions: str) -> str:
        access = [{"type": "repository", "name": REPO, "actions": actions.split(",")}]
        return mint_token(
            self.token_key,
            issuer=self.issuer,
            audience=dockerauth.token_service(self.hostname),
            access=access,
        )

    def skopeo(self, *args: str) -> subprocess.CompletedProcess[str]:
        proxy = f"http://127.0.0.1:{self.proxy.port}"
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "https_proxy")}
        return subprocess.run(
            [str(binaries.skopeo()), *args], capture_output=True, text=True, timeout=120, check=False,
            env={**env, "HTTPS_PROXY": proxy},
        )  # fmt: skip

    def _copy(
        self, side: str, actions: str, source: str, destination: str
    ) -> subprocess.CompletedProcess[str]:
        """skopeo copy; `side` (src/dest) is the registry end, trusting only the root CA."""
        certs = str(self.workdir / "certs")
        token = self.token(actions)
        return self.skopeo(
            "copy", "--retry-times=0", f"--{side}-cert-dir", certs, f"--{side}-registry-token", token,
            source, destination,
        )  # fmt: skip

    def push(self, layout: Path, tag: str) -> subprocess.CompletedProcess[str]:
        return self._copy(
            "dest", "pull,push", f"oci:{layout}:{tag}", f"docker://{self.hostname}/{REPO}:{tag}"
        )

    def pull(self, tag: str, destination: Path) -> subprocess.CompletedProcess[str]:
        return self._copy("src", "pull", f"docker://{self.hostname}/{REPO}:{tag}", f"oci:{destination}:{tag}")

    def request(self, method: str, path: str, token: str) -> tuple[int, bytes]:
        ca = (self.workdir / "certs" / "ca.crt").read_text()
        context = ssl.create_default_context(cadata=ca)
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=self.hostname) as tls,
        ):
            lines = [f"{method} {path} HTTP/1.1", f"Host: {self.hostname}", "Connection: close"]
            lines += [f"Authorization: Bearer {token}", "Content-Length: 0"]
            lines.append(
                "Accept: application/vnd.oci.image.manifest.v1+json, "
                "application/vnd.docker.distribution.manifest.v2+json"
            )
            tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            response = http.client.HTTPResponse(tls)
            response.begin()
            return response.status, response.read()

    def stop(self) -> None:
        self.proxy.close()
        self.process.stop()


def rendered_registry_config(api: Client, namespace: str, name: str) -> str:
    config_map = api.get(CONFIGMAPS, f"imageregistry-{name}-auth-config", namespace)
    text: str = config_map["data"]["registry.yml"]
    return text


def run_registry(api: Client, namespace: str, name: str, workdir: Path, registry_yml: str) -> RunningRegistry:
    """`registry serve` with `registry_yml` (as the operator rendered it), the operator's TLS and
    token material, and the env the StatefulSet gives the container (S3 keys from the Secret)."""
    workdir.mkdir(parents=True, exist_ok=True)
    registry = api.get(IMAGE_REGISTRIES, name, namespace)
    hostname = registry["status"]["hostname"]
    tls = api.get(SECRETS, registry["status"]["tlsSecretName"], namespace)
    token = api.get(SECRETS, f"imageregistry-{name}-auth-token", namespace)
    http_secret = decoded(api.get(SECRETS, f"imageregistry-{name}-http-secret", namespace), "http-secret")
    (workdir / "certs").mkdir(exist_ok=True)
    root_ca = decoded(api.get(SECRETS, c.ROOT_CA_SECRET_NAME, OPERATOR_NAMESPACE), "tls.crt")
    (workdir / "certs" / "ca.crt").write_bytes(root_ca)
    for file_name, data in (
        ("tls.crt", decoded(tls, "tls.crt")),
        ("tls.key", decoded(tls, "tls.key")),
        ("token.crt", decoded(token, "tls.crt")),
    ):
        (workdir / file_name).write_bytes(data)
    config = yaml.safe_load(registry_yml)
    port = free_port()
    config["http"]["addr"] = f"127.0.0.1:{port}"
    config["http"]["tls"] = {"certificate": str(workdir / "tls.crt"), "key": str(workdir / "tls.key")}
    config["auth"]["token"]["rootcertbundle"] = str(workdir / "token.crt")
    (workdir / "registry.yml").write_text(yaml.safe_dump(config))
    # The StatefulSet's env (S3 keys from the user's Secret, REGISTRY_HTTP_SECRET from the operator's).
    env = {**os.environ, **container_env(api, namespace, registry_container(api, namespace, name))}
    assert env["REGISTRY_HTTP_SECRET"] == http_secret.decode()
    binary = binaries.ensure("registry")["registry"].path("registry")
    process = ManagedProcess("registry", [str(binary), "serve", str(workdir / "registry.yml")], workdir, env)
    process.start()
    wait_until("registry", lambda: _tcp_open(port), 30, process)
    token_key = serialization.load_pem_private_key(decoded(token, "tls.key"), password=None)
    assert isinstance(token_key, rsa.RSAPrivateKey)
    proxy = ConnectProxy({(hostname, 443): port}).start()
    return RunningRegistry(
        hostname, workdir, port, process, proxy, token_key, config["auth"]["token"]["issuer"]
    )


def container_env(api: Client, namespace: str, container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as kubelet would set it: values, and secretKeyRefs resolved."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref is not None:
            env[item["name"]] = decoded(api.get(SECRETS, ref["name"], namespace), ref["key"]).decode()
    return env


def registry_container(api: Client, namespace: str, name: str) -> dict[str, Any]:
    sts = api.get(STATEFULSETS, name, namespace)
    containers = sts["spec"]["template"]["spec"]["containers"]
    container: dict[str, Any] = next(item for item in containers if item["name"] == "registry")
    return container


def test_s3_storage_push_pull_through_the_operators_config(
    cluster: LocalCluster,
    namespace: str,
    api: Client,
    start_operator: Callable[..., OperatorProcess],
    s3: MotoS3,
    tmp_path: Path,
) -> None:
    start_operator(controllers="caroot,imageregistry")

    # Schema: S3 and a claim together are refused; so is more than one replica on a ReadWriteOnce claim.
    claim: dict[str, Any] = {"resources": {"requests": {"storage": "1Gi"}}}
    both = s3_registry("both", s3, namespace, persistentVolumeClaim=claim)
    with pytest.raises(Invalid, match=r"persistentVolumeClaim is required, unless storage\.type is S3"):
        api.create(IMAGE_REGISTRIES, both, namespace)
    no_s3 = s3_registry("nos3", s3, namespace)
    no_s3["spec"]["storage"] = {"type": "S3"}
    with pytest.raises(Invalid, match="s3 must be set exactly when type is S3"):
        api.create(IMAGE_REGISTRIES, no_s3, namespace)
    one_node = s3_registry(
        "rwo", s3, namespace, persistentVolumeClaim={**claim, "accessModes": ["ReadWriteOnce"]}
    )
    del one_node["spec"]["storage"]
    with pytest.raises(Invalid, match=r"ReadWriteMany, or storage\.type S3"):
        api.create(IMAGE_REGISTRIES, one_node, namespace)

    # The credentials Secret does not exist yet: Ready=False naming it, no pods.
    apply(cluster, namespace, yaml.safe_dump(s3_registry("objects", s3)))
    missing = wait_condition(api, namespace, "objects", status="False", reason=c.REASON_MISSING_SECRET)
    message = next(item for item in missing["status"]["conditions"] if item["type"] == "Ready")["message"]
    assert CREDENTIALS_SECRET in message and "spec.storage.s3.credentialsSecretRef" in message
    assert get_or_none(api, STATEFULSETS, "objects", namespace) is None

    create_credentials(api, namespace, s3)
    wait_condition(api, namespace, "objects", status="True", reason=c.REASON_AVAILABLE, timeout=90)
    assert get_or_none(api, PERSISTENT_VOLUME_CLAIMS, "imageregistry-objects-pvc", namespace) is None
    container = registry_container(api, namespace, "objects")
    refs = {item["name"]: item.get("valueFrom") for item in container["env"]}
    assert refs["REGISTRY_STORAGE_S3_ACCESSKEY"] == {
        "secretKeyRef": {"name": CREDENTIALS_SECRET, "key": "accessKeyId"}
    }
    assert refs["REGISTRY_STORAGE_S3_SECRETKEY"] == {
        "secretKeyRef": {"name": CREDENTIALS_SECRET, "key": "secretAccessKey"}
    }
    sts = api.get(STATEFULSETS, "objects", namespace)
    assert sts["spec"]["replicas"] == 2
    assert all("persistentVolumeClaim" not in v for v in sts["spec"]["template"]["spec"]["volumes"])
    registry_yml = rendered_registry_config(api, namespace, "objects")
    assert s3.secret_access_key not in registry_yml and s3.access_key_id not in registry_yml
    storage = yaml.safe_load(registry_yml)["storage"]
    assert storage["s3"] == {
        "bucket": s3.bucket,
        "region": "us-east-1",
        "regionendpoint": s3.endpoint,
        "forcepathstyle": True,
        "rootdirectory": "/registry",
    }

    layouts = {tag: tmp_path / f"layout-{tag}" for tag in ("v1", "v2")}
    digests = {tag: write_image(path, tag, f"image {tag}\n".encode()) for tag, path in layouts.items()}
    registry = run_registry(api, namespace, "objects", tmp_path / "registry", registry_yml)
    try:
        for tag, layout in layouts.items():
            pushed = registry.push(layout, tag)
            assert pushed.returncode == 0, pushed.stderr + registry.process.log_tail(30) + s3.log()
        pulled = registry.pull("v1", tmp_path / "pulled")
        assert pulled.returncode == 0, pulled.stderr
        index = json.loads((tmp_path / "pulled" / "index.json").read_text())
        assert index["manifests"][0]["digest"] == digests["v1"]  # byte-identical round trip
        # The images are in the bucket, under the configured prefix.
        stored = s3.keys("registry/docker/registry/v2/")
        assert any(key.endswith(f"/{digests['v1'].split(':')[1]}/data") for key in stored), stored
        assert any(f"repositories/{REPO}/_manifests/tags/v2/" in key for key in stored), stored
    finally:
        registry.stop()

    # Without the key pair (what a pod would get without the Secret's env), the bucket refuses it.
    config = yaml.safe_load(registry_yml)
    config["http"]["addr"] = f"127.0.0.1:{free_port()}"
    config.pop("auth")
    config["http"].pop("tls")
    wrong = tmp_path / "wrong-key.yml"
    wrong.write_text(yaml.safe_dump(config))
    binary = binaries.ensure("registry")["registry"].path("registry")
    env = {
        "PATH": os.environ["PATH"],
        **dockerauth.REGISTRY_ENV,
        "REGISTRY_STORAGE_S3_ACCESSKEY": s3.access_key_id,
        "REGISTRY_STORAGE_S3_SECRETKEY": "not-the-secret",
    }
    gc = subprocess.run(
        [str(binary), "garbage-collect", "--dry-run", str(wrong)], capture_output=True, text=True,
        timeout=60, env=env, check=False,
    )  # fmt: skip
    assert gc.returncode != 0 and "SignatureDoesNotMatch" in gc.stdout + gc.stderr, gc.stdout + gc.stderr


def blob_keys(s3: MotoS3, digest: str) -> list[str]:
    return [key for key in s3.keys("registry/docker/registry/v2/blobs/") if digest.split(":")[1] in key]


def manifest_blobs(layout: Path, manifest_digest: str) -> list[str]:
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_text())
    return [manifest_digest, manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]


def test_garbage_collection_runs_read_only_and_frees_the_untagged_image(
    cluster: LocalCluster,
    namespace: str,
    api: Client,
    start_operator: Callable[..., OperatorProcess],
    s3: MotoS3,
    tmp_path: Path,
) -> None:
    start_operator(controllers="caroot,imageregistry")
    create_credentials(api, namespace, s3)
    apply(cluster, namespace, yaml.safe_dump(s3_registry("gc", s3, replicas=1)))
    wait_condition(api, namespace, "gc", status="True", reason=c.REASON_AVAILABLE, timeout=90)
    read_write_yml = rendered_registry_config(api, namespace, "gc")
    assert "maintenance" not in yaml.safe_load(read_write_yml)["storage"]

    # Two tags, then v1 untagged (a tag delete: the registry's storage.delete.enabled is on).
    layouts = {tag: tmp_path / f"layout-{tag}" for tag in ("v1", "v2")}
    digests = {tag: write_image(path, tag, f"gc image {tag}\n".encode()) for tag, path in layouts.items()}
    registry = run_registry(api, namespace, "gc", tmp_path / "rw", read_write_yml)
    try:
        for tag, layout in layouts.items():
            pushed = registry.push(layout, tag)
            assert pushed.returncode == 0, pushed.stderr + registry.process.log_tail(30)
        status, body = registry.request("DELETE", f"/v2/{REPO}/manifests/v1", registry.token("delete"))
        assert status == 202, body
    finally:
        registry.stop()
    untagged = manifest_blobs(layouts["v1"], digests["v1"])
    kept = manifest_blobs(layouts["v2"], digests["v2"])
    assert all(blob_keys(s3, blob) for blob in untagged + kept)

    # The operator's run: read-only config rolled out, then the collector Job, then read-write again.
    api.patch(
        IMAGE_REGISTRIES,
        "gc",
        {"spec": {"garbageCollection": {"schedule": "* * * * *", "deleteUntagged": True}}},
        namespace,
    )
    seen_configs: set[str] = set()
    phases: list[str] = []

    last_runs: list[dict[str, Any]] = []

    def finished() -> bool:
        seen_configs.add(rendered_registry_config(api, namespace, "gc"))
        gc_status = (api.get(IMAGE_REGISTRIES, "gc", namespace).get("status") or {}).get("garbageCollection")
        phase = (gc_status or {}).get("phase", "Idle")
        if not phases or phases[-1] != phase:
            phases.append(phase)
        last: dict[str, Any] | None = (gc_status or {}).get("lastRun")
        if last:
            last_runs.append(last)
        return bool(last)

    started = time.monotonic()
    wait_for(finished, 150, "the garbage collection run", interval=0.2)
    last_run = last_runs[-1]
    print(f"operator run: phases {phases}, {time.monotonic() - started:.1f}s after the patch")
    assert last_run["result"] == "Succeeded", last_run
    # ReadOnly can pass between two polls (kwok rolls the pods at once); the read-only config the
    # polls saw, which lasts through Collecting, is the proof that the run was read-only.
    assert "Collecting" in phases
    read_only = [text for text in seen_configs if "maintenance" in yaml.safe_load(text)["storage"]]
    assert read_only, "the registry was never switched to read-only"
    read_only_yml = read_only[0]
    assert yaml.safe_load(read_only_yml)["storage"]["maintenance"] == {"readonly": {"enabled": True}}
    wait_for(
        lambda: rendered_registry_config(api, namespace, "gc") == read_write_yml, 60, "read-write config"
    )

    job = api.get(JOBS, last_run["jobName"], namespace)
    (collector,) = job["spec"]["template"]["spec"]["containers"]
    command = collector["command"]
    assert command[:2] == ["/bin/sh", "-c"] and "registry garbage-collect --delete-untagged" in command[2]
    assert command[4:] == ["/etc/distribution/config.yml", ""]  # config file; no volume with S3
    assert (
        job["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == "imageregistry-gc-auth-config"
    )

    # Read-only as rendered: pulls work, pushes are refused.
    registry = run_registry(api, namespace, "gc", tmp_path / "ro", read_only_yml)
    try:
        refused = registry.push(layouts["v1"], "v1")
        assert refused.returncode != 0
        assert "405" in refused.stderr or "unsupported" in refused.stderr.lower(), refused.stderr
        assert registry.pull("v2", tmp_path / "pulled-ro").returncode == 0
    finally:
        registry.stop()

    # The Job's exact command with the real collector (paths rewritten to the local copy of the
    # rendered config; the env as kubelet would set it from the Job, keys from the Secret).
    (tmp_path / "ro" / "registry.yml").write_text(
        yaml.safe_dump({**yaml.safe_load(read_only_yml), "auth": {}, "http": {"addr": "127.0.0.1:0"}})
    )
    report_file = tmp_path / "termination-log"
    registry_dir = binaries.ensure("registry")["registry"].directory
    env = {
        **container_env(api, namespace, collector),
        "PATH": f"{registry_dir}:/usr/bin:/bin",
        "TERMINATION_LOG": str(report_file),
    }
    argv = ["sh", *command[1:4], str(tmp_path / "ro" / "registry.yml"), command[5]]
    collected = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    report = parse_report(report_file.read_text())
    print(f"collector report: {report_file.read_text()!r}")
    assert (report.exit_code, report.blobs_deleted, report.manifests_deleted) == (0, 3, 1), report

    # The untagged image's blobs are gone from the bucket; v2 is intact and still pulls.
    assert not any(blob_keys(s3, blob) for blob in untagged), [blob_keys(s3, b) for b in untagged]
    assert all(blob_keys(s3, blob) for blob in kept)
    registry = run_registry(api, namespace, "gc", tmp_path / "after", read_write_yml)
    try:
        pulled = registry.pull("v2", tmp_path / "pulled")
        assert pulled.returncode == 0, pulled.stderr
        index = json.loads((tmp_path / "pulled" / "index.json").read_text())
        assert index["manifests"][0]["digest"] == digests["v2"]
        status, _ = registry.request("GET", f"/v2/{REPO}/manifests/{digests['v1']}", registry.token("pull"))
        assert status == 404
    finally:
        registry.stop()
