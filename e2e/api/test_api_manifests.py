"""The kustomize directories render, and what they contain is accepted by a real apiserver: the
operator's Deployment under the restricted Pod Security Standard, and RBAC that lets the operator
do (and only do) what the controllers need."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.api.kube import apply, documents, to_yaml
from registry_operator.devenv.cluster import LocalCluster

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
KUSTOMIZE_DIRS = sorted(p.parent for p in MANIFESTS.rglob("kustomization.yaml"))
CLUSTER_WIDE_NAMESPACE = "registry-operator"


def render(cluster: LocalCluster, directory: Path) -> list[dict[str, Any]]:
    return documents(cluster.kubectl("kustomize", str(directory)).stdout)


def without_crds(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # The session already installed the CRDs; re-applying or deleting them would affect other tests.
    return [doc for doc in docs if doc["kind"] != "CustomResourceDefinition"]


def can_i(cluster: LocalCluster, service_account: str, verb: str, resource: str, namespace: str) -> bool:
    """Ask the apiserver's authorizer (a SubjectAccessReview, so resources of API groups that are not
    installed, like cert-manager's, can be checked too). `resource` is `plural[.group][/subresource]`."""
    plural_and_group, _, subresource = resource.partition("/")
    plural, _, group = plural_and_group.partition(".")
    sa_namespace = service_account.split(":", 1)[0]
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{service_account}",
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{sa_namespace}",
                "system:authenticated",
            ],
            "resourceAttributes": {
                "namespace": namespace,
                "verb": verb,
                "group": group,
                "resource": plural,
                "subresource": subresource,
            },
        },
    }
    result = json.loads(cluster.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review)).stdout)
    return bool(result["status"].get("allowed"))


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {
        variable["name"]: variable.get("value", variable.get("valueFrom")) for variable in container["env"]
    }


def test_every_kustomize_directory_renders(cluster: LocalCluster) -> None:
    assert {d.relative_to(MANIFESTS).as_posix() for d in KUSTOMIZE_DIRS} >= {
        "crds",
        "operator",
        "cluster-wide",
        "coredns-public-zone",
        "examples",
        "examples/registry-issuer",
    }
    for directory in KUSTOMIZE_DIRS:
        assert render(cluster, directory), directory


def test_namespaced_operator_is_accepted_and_has_the_rbac_it_needs(
    cluster: LocalCluster, namespace: str
) -> None:
    cluster.kubectl(
        "label", "namespace", namespace,
        "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/warn=restricted",
    )  # fmt: skip
    docs = render(cluster, MANIFESTS / "operator")
    assert {doc["kind"] for doc in docs} == {"ServiceAccount", "Role", "RoleBinding", "Deployment"}
    result = apply(cluster, namespace, to_yaml(docs))
    assert "PodSecurity" not in result.stderr, result.stderr  # no "would violate PodSecurity" warning

    deployment = one(docs, "Deployment", "registry-operator")
    env = env_of(deployment)
    assert env["WATCH_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert env["OPERATOR_IMAGE_OPERATOR"] == image  # the authn sidecar runs the operator's image

    # The restricted namespace admits the pods (the ReplicaSet would report FailedCreate otherwise).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pods = cluster.kubectl(
            "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/name=registry-operator", "-o", "name"
        ).stdout.split()
        if len(pods) == 2:
            break
        time.sleep(1)
    assert len(pods) == 2

    sa = f"{namespace}:registry-operator"
    for verb, resource in [
        ("create", "imageregistryaccounts.registry.mgoltzsche.github.com"),
        ("deletecollection", "imageregistryaccounts.registry.mgoltzsche.github.com"),
        ("update", "imagepushsecrets.registry.mgoltzsche.github.com/status"),
        ("update", "imagebuildenvs.registry.mgoltzsche.github.com/finalizers"),
        ("watch", "imageregistries.registry.mgoltzsche.github.com"),
        ("create", "statefulsets.apps"),
        ("create", "deployments.apps"),
        ("create", "certificates.cert-manager.io"),
        ("create", "secrets"),
        ("create", "events.events.k8s.io"),
        ("update", "leases.coordination.k8s.io"),
        ("watch", "pods"),
    ]:
        assert can_i(cluster, sa, verb, resource, namespace), (verb, resource)
    for verb, resource, where in [
        ("create", "pods", namespace),
        ("delete", "namespaces", namespace),
        ("create", "imageregistries.registry.mgoltzsche.github.com", namespace),
        ("list", "secrets", "default"),  # namespaced install: nothing outside its namespace
        ("list", "nodes", namespace),
    ]:
        assert not can_i(cluster, sa, verb, resource, where), (verb, resource, where)

    # RBAC escalation check: the operator may create the per-registry Role only because it holds
    # these permissions itself.
    role = cluster.kubectl(
        "create", "role", "imageregistry-registry", "-n", namespace,
        "--verb=get,list,watch", "--resource=imageregistryaccounts.registry.mgoltzsche.github.com",
        f"--as=system:serviceaccount:{sa}", check=False,
    )  # fmt: skip
    assert role.returncode == 0, role.stderr
    too_much = cluster.kubectl(
        "create", "role", "too-much", "-n", namespace, "--verb=create", "--resource=pods",
        f"--as=system:serviceaccount:{sa}", check=False,
    )  # fmt: skip
    assert (
        too_much.returncode != 0
        and "attempting to grant RBAC permissions not currently held" in too_much.stderr
    )


@pytest.fixture
def cluster_wide_install(cluster: LocalCluster) -> Iterator[list[dict[str, Any]]]:
    docs = without_crds(render(cluster, MANIFESTS / "cluster-wide"))
    yield docs
    cluster.kubectl(
        "delete", "clusterrolebinding,clusterrole", "registry-operator", "--ignore-not-found", check=False
    )
    cluster.kubectl(
        "delete", "namespace", CLUSTER_WIDE_NAMESPACE, "--ignore-not-found", "--timeout=120s", check=False
    )


def test_cluster_wide_operator_watches_all_namespaces(
    cluster: LocalCluster, namespace: str, cluster_wide_install: list[dict[str, Any]]
) -> None:
    docs = cluster_wide_install
    namespaced = [
        doc for doc in docs if doc["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding")
    ]
    assert all(doc["metadata"]["namespace"] == CLUSTER_WIDE_NAMESPACE for doc in namespaced)
    assert not [
        doc for doc in docs if doc["kind"] == "Role" and doc["metadata"]["name"] == "registry-operator"
    ]
    assert env_of(one(docs, "Deployment", "registry-operator"))["WATCH_NAMESPACE"] == ""

    cluster.kubectl("apply", "--server-side", "-f", "-", input=to_yaml(docs))
    sa = f"{CLUSTER_WIDE_NAMESPACE}:registry-operator"
    assert can_i(cluster, sa, "create", "imageregistryaccounts.registry.mgoltzsche.github.com", namespace)
    assert can_i(cluster, sa, "update", "imagepullsecrets.registry.mgoltzsche.github.com/status", namespace)
    assert can_i(cluster, sa, "update", "leases.coordination.k8s.io", CLUSTER_WIDE_NAMESPACE)
    assert not can_i(cluster, sa, "update", "leases.coordination.k8s.io", namespace)
    assert not can_i(cluster, sa, "create", "pods", namespace)


def test_examples_are_accepted(cluster: LocalCluster, namespace: str) -> None:
    apply(cluster, namespace, to_yaml(render(cluster, MANIFESTS / "examples")))
    kinds = cluster.kubectl("get", "registry-operator", "-n", namespace, "-o", "name").stdout.split()
    assert len(kinds) == 4  # registry, push secret, pull secret, build env

    # The cert-manager variant: cert-manager is not installed here, so only our kind is applied.
    issuer_docs = render(cluster, MANIFESTS / "examples" / "registry-issuer")
    ours = [doc for doc in issuer_docs if doc["apiVersion"].startswith("registry.mgoltzsche.github.com/")]
    assert {doc["apiVersion"] for doc in issuer_docs if doc not in ours} == {"cert-manager.io/v1"}
    apply(cluster, namespace, to_yaml(ours), "--dry-run=server")


def test_coredns_public_zone_configures_the_zone_in_both_places(cluster: LocalCluster) -> None:
    docs = render(cluster, MANIFESTS / "coredns-public-zone")
    corefile = one(docs, "ConfigMap", "coredns")
    assert corefile["metadata"]["namespace"] == "kube-system"
    assert "k8s_external svc.example.org" in corefile["data"]["Corefile"]
    assert env_of(one(docs, "Deployment", "registry-operator"))["OPERATOR_DNS_ZONE"] == "svc.example.org"
    cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=to_yaml([corefile]))
