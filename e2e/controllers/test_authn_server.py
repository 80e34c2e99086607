"""The authn sidecar (`registry-operator authn-server`) against the real API server, asked over HTTP
and through the real ext_auth shim (`sh <shim> <url>` with busybox wget, credentials on stdin), the
way docker_auth's `ext_auth` runs it in the registry pod.

docker_auth itself (token issuing, ACL evaluation) is not run here because it cannot be built on this
machine (the Go module proxy refuses github.com/cesanta/docker_auth with 403). The ACL it would apply
is covered by unit tests of the rendered config (unit/controllers/test_imageregistry_desired.py and
unit/test_dockerauth.py), and the registry side of the token flow by test_imageregistry_stack.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from e2e.kube.support import wait_for
from registry_operator.controllers.resources import IMAGE_REGISTRY_ACCOUNTS
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.devenv.processes import ManagedProcess, free_port, wait_until
from registry_operator.dockerauth import ext_auth_command
from registry_operator.kube.client import Client
from registry_operator.passwords import hash_password

PASSWORD = "correct-horse-battery"
# docker_auth's reading of the ext_auth exit code.
EXT_AUTH_ALLOW, EXT_AUTH_DENY = 0, 1


@pytest.fixture
def other_namespace(cluster: LocalCluster) -> Iterator[str]:
    name = f"e2e-other-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


class Authn:
    """One `registry-operator authn-server` process for a namespace."""

    def __init__(self, cluster: LocalCluster, namespace: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/authn"
        self.process = ManagedProcess(
            "authn-server",
            [
                sys.executable, "-m", "registry_operator", "authn-server",
                "--namespace", namespace, "--port", str(self.port),
            ],
            workdir,
            {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(cluster.kubeconfig), "LOG_LEVEL": "info"},
        )  # fmt: skip

    def start(self) -> None:
        self.process.start()

        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
                return bool(response.status == 200)

        wait_until("authn-server /healthz", healthy, 60, self.process)

    def http(self, user: str, password: str) -> tuple[int, dict[str, list[str]] | None]:
        request = urllib.request.Request(self.url, data=f"{user} {password}".encode(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())["labels"]
        except urllib.error.HTTPError as error:
            return error.code, None

    def ext_auth_exit(self, user: str, password: str) -> tuple[int, str]:
        """The rendered ext_auth command, run as docker_auth runs it: "<user> <password>" on stdin."""
        busybox = shutil.which("busybox")
        assert busybox, "busybox is required: hack/build-deps.sh debian-tools"
        ext_auth = ext_auth_command(self.url, busybox=busybox)
        result = subprocess.run(
            [ext_auth["command"], *ext_auth["args"]],
            input=f"{user} {password}",
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return result.returncode, result.stdout


def account(name: str, namespace: str, *, ttl: str | None = None, **labels: list[str]) -> dict[str, object]:
    spec: dict[str, object] = {"password": hash_password(PASSWORD, cost=4), "labels": labels}
    if ttl is not None:
        spec["ttl"] = ttl
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_authn_server_decides_logins_from_the_namespaces_accounts(
    cluster: LocalCluster, namespace: str, other_namespace: str, api: Client, tmp_path: Path
) -> None:
    api.create(IMAGE_REGISTRY_ACCOUNTS, account("alice", namespace, accessMode=["push"], team=["a"]))
    expired = api.create(IMAGE_REGISTRY_ACCOUNTS, account("old", namespace, ttl="1s"))
    api.create(IMAGE_REGISTRY_ACCOUNTS, account("alien", other_namespace, accessMode=["push"]))
    authn = Authn(cluster, namespace, tmp_path)
    authn.start()
    try:
        # Correct password: allowed, with the account's labels plus origin/account (not forgeable).
        status, labels = authn.http("alice", PASSWORD)
        assert status == 200
        assert labels == {"accessMode": ["push"], "team": ["a"], "origin": ["cr"], "account": ["alice"]}
        code, stdout = authn.ext_auth_exit("alice", PASSWORD)
        assert code == EXT_AUTH_ALLOW
        assert json.loads(stdout)["labels"]["account"] == ["alice"]

        # Wrong password: denied (the original's plugin let anyone in: bug B2).
        assert authn.http("alice", "wrong")[0] == 401
        assert authn.ext_auth_exit("alice", "wrong")[0] == EXT_AUTH_DENY
        # Unknown user: no match, which docker_auth's ext_auth reads as denied.
        assert authn.http("nobody", PASSWORD)[0] == 404
        assert authn.ext_auth_exit("nobody", PASSWORD)[0] == EXT_AUTH_DENY
        # Anonymous (no credentials): no match.
        assert authn.http("", "")[0] == 404

        # An account of another namespace does not exist for this registry.
        assert authn.http("alien", PASSWORD)[0] == 404
        assert authn.ext_auth_exit("alien", PASSWORD)[0] == EXT_AUTH_DENY

        # Expired (ttl past): denied even with the right password.
        created = datetime.fromisoformat(expired["metadata"]["creationTimestamp"])
        wait_for(lambda: time.time() > created.timestamp() + 1.5, 5, "the account's ttl to pass")
        assert authn.http("old", PASSWORD)[0] == 401
        assert authn.ext_auth_exit("old", PASSWORD)[0] == EXT_AUTH_DENY

        # A deleted account stops working within 2 s (the sidecar watches the accounts).
        assert authn.http("alice", PASSWORD)[0] == 200  # in the success cache now
        api.delete(IMAGE_REGISTRY_ACCOUNTS, "alice", namespace)
        took = wait_for(lambda: authn.http("alice", PASSWORD)[0] == 404, 2.0, "alice to stop working", 0.05)
        print(f"\ndeleted account refused after {took * 1000:.0f} ms")
        assert authn.ext_auth_exit("alice", PASSWORD)[0] == EXT_AUTH_DENY

        # The password never reaches the log.
        assert PASSWORD not in authn.process.log_path.read_text()
    finally:
        authn.process.stop()
