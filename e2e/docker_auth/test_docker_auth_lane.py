"""The docker_auth lane: the operator's generated stack with the real docker_auth 1.14 token server.

The real control plane + operator render an ImageRegistry and its push/pull Secrets; the real
registry, docker_auth (`DOCKER_AUTH_BIN`) and authn sidecar run as local processes with exactly the
config, certificates, token key (RSA-2048: registry v3 verifies it) and ext_auth command the operator
wrote; skopeo verifies TLS with the Secret's `ca.crt`. Run: `make e2e-docker-auth DOCKER_AUTH_BIN=…`.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from e2e.api.kube import apply
from e2e.controllers.imageregistry_support import registry_manifest, wait_condition
from e2e.docker_auth.stack import Stack, granted
from e2e.support.oci import write_image
from e2e.support.operator import OperatorProcess
from registry_operator import passwords, pki
from registry_operator.api import constants as c
from registry_operator.controllers.resources import (
    CONFIGMAPS,
    IMAGE_PULL_SECRETS,
    IMAGE_PUSH_SECRETS,
    IMAGE_REGISTRIES,
    IMAGE_REGISTRY_ACCOUNTS,
    SECRETS,
)
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.devenv.processes import wait_until
from registry_operator.kube.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit"))
import acl_fidelity

NAME = "lane"


def secret_data(api: Client, namespace: str, name: str) -> dict[str, bytes]:
    secret = api.get(SECRETS, name, namespace)
    return {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}


def wait_secret(api: Client, namespace: str, name: str, timeout: float = 60) -> dict[str, bytes]:
    def present() -> bool:
        try:
            return "ca.crt" in secret_data(api, namespace, name)
        except Exception:
            return False

    wait_until(f"secret {name}", present, timeout)
    return secret_data(api, namespace, name)


def app_secrets(api: Client, namespace: str, registry: str) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """An ImagePushSecret and an ImagePullSecret `app` for `registry`; their Secrets once written."""
    ref = {"name": registry}
    for resource in (IMAGE_PUSH_SECRETS, IMAGE_PULL_SECRETS):
        api.create(
            resource, {"metadata": {"name": "app", "namespace": namespace}, "spec": {"registryRef": ref}}
        )
    return wait_secret(api, namespace, "imagepushsecret-app"), wait_secret(
        api, namespace, "imagepullsecret-app"
    )


def credentials(data: dict[str, bytes]) -> tuple[str, str]:
    config = json.loads(data.get(".dockerconfigjson") or data["config.json"])
    (entry,) = config["auths"].values()
    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    return user, password


class Client_:
    """skopeo against the stack, trusting only `ca.crt`, through the stack's proxy."""

    def __init__(self, stack: Stack, workdir: Path) -> None:
        self.stack, self.workdir = stack, workdir
        self.certs = workdir / "certs"
        self.certs.mkdir(parents=True, exist_ok=True)
        (self.certs / "ca.crt").write_bytes(stack.ca_pem)
        self.layout = workdir / "layout"
        write_image(self.layout)

    def _authfile(self, user: str, password: str) -> str:
        path = self.workdir / f"auth-{user}-{abs(hash(password))}.json"
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        path.write_text(json.dumps({"auths": {self.stack.hostname: {"auth": auth}}}))
        return str(path)

    def push(self, creds: tuple[str, str] | None, repo: str) -> Any:
        auth = ["--dest-no-creds"] if creds is None else ["--dest-authfile", self._authfile(*creds)]
        return skopeo_env(
            self.stack, "copy", "--retry-times=0", *auth, "--dest-cert-dir", str(self.certs),
            f"oci:{self.layout}:v1", f"docker://{self.stack.hostname}/{repo}:v1",
        )  # fmt: skip

    def pull(self, creds: tuple[str, str] | None, repo: str) -> Any:
        auth = ["--no-creds"] if creds is None else ["--authfile", self._authfile(*creds)]
        return skopeo_env(
            self.stack, "inspect", "--retry-times=0", *auth, "--cert-dir", str(self.certs),
            f"docker://{self.stack.hostname}/{repo}:v1",
        )  # fmt: skip


def skopeo_env(stack: Stack, *args: str) -> Any:
    import subprocess

    from registry_operator.devenv import binaries

    return subprocess.run(
        [str(binaries.skopeo()), *args], capture_output=True, text=True, timeout=120, check=False,
        env=stack.client_env,
    )  # fmt: skip


@pytest.fixture
def lane(
    cluster: LocalCluster,
    namespace: str,
    api: Client,
    volumes: Callable[..., str],
    start_operator: Callable[..., OperatorProcess],
    docker_auth_bin: Path,
    tmp_path: Path,
) -> Iterator[tuple[Stack, Client_, dict[str, tuple[str, str]]]]:
    start_operator(controllers="caroot,imageregistry,imagesecret,imageregistryaccount")
    volumes(namespace, f"imageregistry-{NAME}-pvc", access_modes=("ReadWriteMany",))
    apply(cluster, namespace, registry_manifest(NAME))
    registry = wait_condition(api, namespace, NAME, status="True", reason="Available")
    push, pull = app_secrets(api, namespace, NAME)
    stack = Stack(
        cluster, api, namespace, NAME, registry["status"]["hostname"], tmp_path / "stack", docker_auth_bin
    )
    stack.ca_pem = push["ca.crt"]
    stack.start()
    try:
        yield (
            stack,
            Client_(stack, tmp_path / "client"),
            {"push": credentials(push), "pull": credentials(pull)},
        )
    finally:
        stack.stop()


def test_token_flow_push_pull_refusals_rotation_and_revocation(
    lane: tuple[Stack, Client_, dict[str, tuple[str, str]]], api: Client, namespace: str
) -> None:
    stack, client, creds = lane
    assert stack.token_key_size == 2048  # new token keys are RSA-2048, and the registry verifies them
    repo = f"{namespace}/app"
    pushed = client.push(creds["push"], repo)
    assert pushed.returncode == 0, pushed.stderr + stack.log("docker_auth")[-3000:]
    pulled = client.pull(creds["pull"], repo)
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout)["Name"] == f"{stack.hostname}/{repo}"
    print("case push with the push secret, pull with the pull secret: ok")

    denied = client.push(creds["pull"], f"{namespace}/other")
    assert denied.returncode != 0
    assert "denied" in denied.stderr.lower() or "unauthorized" in denied.stderr.lower(), denied.stderr
    status, claims = stack.token(*creds["pull"], f"repository:{repo}:pull,push")
    assert status == 200 and granted(claims) == {"pull"}
    print("case pull secret cannot push: ok")

    assert client.pull(None, repo).returncode != 0
    user, password = creds["pull"]
    assert client.pull((user, password + "x"), repo).returncode != 0
    assert stack.token(user, password + "x", f"repository:{repo}:pull")[0] == 401
    # docker_auth refuses an anonymous token request outright: the sidecar has no match for the
    # empty user, which ext_auth reports as a failed login.
    assert stack.token(None, None, f"repository:{repo}:pull")[0] == 401
    print("case anonymous and wrong password refused: ok")

    # rotate-now: the new and the old credentials both work.
    old = creds["push"]
    api.patch(
        IMAGE_PUSH_SECRETS, "app", {"metadata": {"annotations": {c.ANNOTATION_ROTATE: "lane-1"}}}, namespace
    )
    wait_until(
        "rotated push secret",
        lambda: credentials(secret_data(api, namespace, "imagepushsecret-app")) != old,
        60,
    )
    new = credentials(secret_data(api, namespace, "imagepushsecret-app"))
    for label, pair in (("old", old), ("new", new)):
        done = client.push(pair, repo)
        assert done.returncode == 0, f"{label}: {done.stderr}"
    print("case rotate-now keeps old and new valid: ok")

    # Revocation: delete the old account; time until docker_auth refuses it.
    api.delete(IMAGE_REGISTRY_ACCOUNTS, old[0], namespace)
    started = time.monotonic()
    while stack.token(*old, f"repository:{repo}:pull")[0] == 200:
        assert time.monotonic() - started < 30
        time.sleep(0.02)
    print(f"case revocation latency: {time.monotonic() - started:.3f} s from delete to refused login")


def test_custom_acl_and_other_namespace(
    lane: tuple[Stack, Client_, dict[str, tuple[str, str]]],
    api: Client,
    namespace: str,
    cluster: LocalCluster,
) -> None:
    stack, client, creds = lane
    acl = [
        {"match": {"name": "public/*"}, "actions": ["pull"]},
        {
            "match": {"labels": {"accessMode": "push"}, "name": "${labels:namespace}/*"},
            "actions": ["push", "pull"],
        },
        {"match": {"labels": {"origin": "cr"}}, "actions": ["pull"]},
    ]
    api.patch(IMAGE_REGISTRIES, NAME, {"spec": {"auth": {"acl": acl}}}, namespace)
    wait_until(
        "ACL in the ConfigMap",
        lambda: "public/*" in api.get(
            CONFIGMAPS,
            f"imageregistry-{NAME}-auth-config", namespace,
        )["data"]["auth_config.yml"],
        60,
    )  # fmt: skip
    stack.reload_auth_config()
    assert client.push(creds["push"], f"{namespace}/app").returncode == 0
    outside = client.push(creds["push"], "elsewhere/app")
    assert outside.returncode != 0
    assert client.push(creds["push"], "public/base").returncode != 0  # first match: pull only
    status, claims = stack.token(*creds["push"], "repository:public/base:pull,push")
    assert status == 200 and granted(claims) == {"pull"}, claims
    print("case custom ACL enforced: ok")

    other = f"{namespace}-other"
    cluster.kubectl("create", "namespace", other)
    try:
        # An ImageRegistryAccount is only honoured in the registry's own namespace: the sidecar never
        # looks elsewhere, so an account created in another namespace (known password, push label)
        # gets no token.
        password = passwords.generate_password()
        account = {
            "metadata": {"name": "intruder", "namespace": other},
            "spec": {
                "password": passwords.hash_password(password, cost=4),
                "labels": {"accessMode": ["push"]},
            },
        }
        api.create(IMAGE_REGISTRY_ACCOUNTS, account)
        assert stack.token("intruder", password, f"repository:{namespace}/app:push,pull")[0] == 401
        assert client.push(("intruder", password), f"{namespace}/app").returncode != 0
        print("case account from another namespace refused: ok")
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false")


def test_acl_fidelity_table(
    lane: tuple[Stack, Client_, dict[str, tuple[str, str]]], api: Client, namespace: str
) -> None:
    stack, _, _ = lane
    password = passwords.generate_password()
    api.create(
        IMAGE_REGISTRY_ACCOUNTS,
        {
            "metadata": {"name": acl_fidelity.ACCOUNT, "namespace": namespace},
            "spec": {"password": passwords.hash_password(password, cost=4), "labels": acl_fidelity.LABELS},
        },
    )
    differences = []
    print(f"\n{'case':40} {'repository':16} {'docker_auth':14} expected")
    for row in acl_fidelity.ROWS:
        stack.use_acl(row.acl)
        status, claims = stack.token(acl_fidelity.ACCOUNT, password, f"repository:{row.name}:pull,push")
        assert status == 200, (row.case, claims, stack.log("docker_auth")[-2000:])
        got = granted(claims)
        expected = ",".join(sorted(row.expected)) or "-"
        print(f"{row.case:40} {row.name:16} {','.join(sorted(got)) or '-':14} {expected}")
        if got != row.expected:
            differences.append((row.case, sorted(got), sorted(row.expected)))
    assert not differences, differences


def test_namespace_repository_scope_matrix(
    lane: tuple[Stack, Client_, dict[str, tuple[str, str]]],
    api: Client,
    namespace: str,
    cluster: LocalCluster,
) -> None:
    """spec.auth.repositoryScope: Namespace (issue 11), decided by the real docker_auth."""
    stack, client, creds = lane
    api.patch(IMAGE_REGISTRIES, NAME, {"spec": {"auth": {"repositoryScope": "Namespace"}}}, namespace)
    wait_until(
        "namespace-scoped ACL in the ConfigMap",
        lambda: (
            "library"
            in api.get(CONFIGMAPS, f"imageregistry-{NAME}-auth-config", namespace)["data"]["auth_config.yml"]
        ),
        60,
    )
    stack.reload_auth_config()
    tenants = {"team-a": f"{namespace}-a", "team-b": f"{namespace}-b"}
    accounts = {"registry-ns push": creds["push"], "registry-ns pull": creds["pull"]}
    try:
        for team, tenant in tenants.items():
            cluster.kubectl("create", "namespace", tenant)
            ref = {"name": NAME, "namespace": namespace}
            for resource, kind in ((IMAGE_PUSH_SECRETS, "push"), (IMAGE_PULL_SECRETS, "pull")):
                api.create(
                    resource, {"metadata": {"name": "ci", "namespace": tenant}, "spec": {"registryRef": ref}}
                )
                accounts[f"{team} {kind}"] = credentials(wait_secret(api, tenant, f"image{kind}secret-ci"))
        a, b = tenants["team-a"], tenants["team-b"]
        # account → repository → actions docker_auth must grant (of pull,push asked)
        expected = {
            "team-a push": {f"{a}/app": {"pull", "push"}, f"{b}/app": set(), f"{a}/x/y": {"pull", "push"},
                            "library/base": {"pull"}},
            "team-a pull": {f"{a}/app": {"pull"}, f"{b}/app": set(), "library/base": {"pull"}},
            "team-b push": {f"{b}/app": {"pull", "push"}, f"{a}/app": set(), "library/base": {"pull"}},
            "registry-ns push": {f"{namespace}/app": {"pull", "push"}, "library/base": {"pull", "push"},
                                 f"{a}/app": set()},
            "registry-ns pull": {"library/base": {"pull"}, f"{a}/app": set()},
        }  # fmt: skip
        print(f"\ncase {'account':<18} {'repository':<42} {'docker_auth':<11} expected")
        wrong = []
        for account, repos in expected.items():
            for repo, want in repos.items():
                status, claims = stack.token(*accounts[account], f"repository:{repo}:pull,push")
                got = granted(claims) if status == 200 else set()
                shown, wanted = ",".join(sorted(got)) or "-", ",".join(sorted(want)) or "-"
                print(f"case {account:<18} {repo:<42} {shown:<11} {wanted}")
                if got != want:
                    wrong.append((account, repo, got, want))
        assert not wrong, wrong
        # And a real client: team-a pushes its own repository, not team-b's.
        assert client.push(accounts["team-a push"], f"{a}/app").returncode == 0
        assert client.push(accounts["team-a push"], f"{b}/app").returncode != 0
        print("case repositoryScope Namespace: team-a pushes team-a/app, not team-b/app: ok")
    finally:
        for tenant in tenants.values():
            cluster.kubectl("delete", "namespace", tenant, "--wait=false")


def test_token_key_rollover_from_rsa_4096_with_the_real_docker_auth(
    cluster: LocalCluster,
    namespace: str,
    api: Client,
    volumes: Callable[..., str],
    start_operator: Callable[..., OperatorProcess],
    docker_auth_bin: Path,
    tmp_path: Path,
) -> None:
    """A registry from before the RSA-2048 default: while the rollover trusts both keys, tokens the
    real docker_auth signs with the old (RSA-4096) and with the new key both pull."""
    legacy = pki.create_token_signing_pair("legacy token signing", datetime.now(UTC), key_size=4096)
    api.create(
        SECRETS,
        {
            "metadata": {
                "name": f"imageregistry-{NAME}-auth-token",
                "namespace": namespace,
                "labels": {c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE},
            },
            "type": c.SECRET_TYPE_TLS,
            "data": {k: base64.b64encode(v).decode() for k, v in legacy.to_secret_data().items()},
        },
    )
    start_operator(
        controllers="caroot,imageregistry,imagesecret,imageregistryaccount",
        env={"OPERATOR_TOKEN_KEY_RETIREMENT": "10m"},  # stays in Retiring while the case runs
    )
    volumes(namespace, f"imageregistry-{NAME}-pvc", access_modes=("ReadWriteMany",))
    apply(cluster, namespace, registry_manifest(NAME))
    registry = wait_condition(api, namespace, NAME, status="True", reason="Available")

    def phase() -> str:
        status = api.get(IMAGE_REGISTRIES, NAME, namespace).get("status") or {}
        return str((status.get("tokenKey") or {}).get("phase"))

    wait_until("the token key rollover to reach Retiring", lambda: phase() == c.ROLLOVER_RETIRING, 120)
    push, pull = app_secrets(api, namespace, NAME)
    stack = Stack(
        cluster, api, namespace, NAME, registry["status"]["hostname"], tmp_path / "stack", docker_auth_bin
    )
    stack.ca_pem = pull["ca.crt"]
    stack.start()
    try:
        assert stack.token_key_size == 2048  # docker_auth signs with the new key
        bundle = pki.bundle_certs((stack.workdir / "token-bundle.crt").read_bytes())
        assert len(bundle) == 2  # the registry trusts the previous and the new key
        client = Client_(stack, tmp_path / "client")
        repo = f"{namespace}/app"
        pushed = client.push(credentials(push), repo)
        assert pushed.returncode == 0, pushed.stderr + stack.log("docker_auth")[-2000:]
        new_pull = client.pull(credentials(pull), repo)
        assert new_pull.returncode == 0, new_pull.stderr
        # An old pod's docker_auth: the same config, signing with the RSA-4096 key.
        (stack.workdir / "token.crt").write_bytes(legacy.cert_pem)
        (stack.workdir / "token.key").write_bytes(legacy.key_pem)
        stack.start_docker_auth()
        old_pull = client.pull(credentials(pull), repo)
        assert old_pull.returncode == 0, old_pull.stderr + stack.log("registry")[-2000:]
        stranger = pki.create_token_signing_pair("stranger", datetime.now(UTC), key_size=2048)
        (stack.workdir / "token.crt").write_bytes(stranger.cert_pem)
        (stack.workdir / "token.key").write_bytes(stranger.key_pem)
        stack.start_docker_auth()
        assert client.pull(credentials(pull), repo).returncode != 0  # a key outside the bundle: refused
    finally:
        stack.stop()
    print("case token key rollover RSA-4096 -> 2048: tokens of the real docker_auth with either key pull: ok")
