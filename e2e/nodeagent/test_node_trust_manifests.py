"""manifests/node-trust and manifests/minikube build with kustomize; the API server accepts the
DaemonSet (server-side dry-run, real validation); the agent's RBAC grants exactly what it uses."""

from __future__ import annotations

from pathlib import Path

import yaml

from e2e.nodeagent.test_node_agent import SA, apply_node_trust_rbac
from e2e.support.operator import OPERATOR_NAMESPACE
from registry_operator.devenv.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]


def built(cluster: LocalCluster, directory: str) -> list[dict[str, object]]:
    text = cluster.kubectl("kustomize", str(REPO / "manifests" / directory)).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def kinds(docs: list[dict[str, object]]) -> set[str]:
    return {f"{d['kind']}/{d['metadata']['name']}" for d in docs}  # type: ignore[index]


def test_node_trust_and_minikube_build_and_pass_server_side_validation(cluster: LocalCluster) -> None:
    node_trust = built(cluster, "node-trust")
    assert kinds(node_trust) == {
        f"ServiceAccount/{SA}",
        f"ClusterRole/{SA}",
        f"ClusterRoleBinding/{SA}",
        f"DaemonSet/{SA}",
    }
    minikube = built(cluster, "minikube")
    assert kinds(node_trust) <= kinds(minikube)
    assert "Deployment/registry-operator" in kinds(minikube)
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    daemonset = [d for d in node_trust if d["kind"] == "DaemonSet"]
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(daemonset))
    assert f"daemonset.apps/{SA} created (server dry run)" in result.stdout
    # The whole minikube variant too (CRDs, operator, node trust), in dependency order by kubectl.
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(minikube), check=False
    )
    assert result.returncode == 0, result.stderr


def test_the_agents_service_account_may_read_only_what_the_agent_uses(cluster: LocalCluster) -> None:
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    apply_node_trust_rbac(cluster)
    who = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{SA}"

    def can(verb: str, resource: str) -> bool:
        result = cluster.kubectl(
            "auth", "can-i", verb, resource, "--all-namespaces", "--as", who, check=False
        )
        return result.stdout.strip() == "yes"

    allowed = {
        ("list", "imageregistries.registry.mgoltzsche.github.com"),
        ("watch", "imageregistries.registry.mgoltzsche.github.com"),
        ("get", "secrets"),
        ("get", "services"),
    }
    for verb, resource in allowed:
        assert can(verb, resource), f"{verb} {resource}"
    for verb, resource in [
        ("list", "secrets"),
        ("watch", "secrets"),
        ("list", "services"),
        ("get", "imageregistries.registry.mgoltzsche.github.com"),
        ("update", "imageregistries.registry.mgoltzsche.github.com"),
        ("patch", "imageregistries.registry.mgoltzsche.github.com/status"),
        ("create", "secrets"),
        ("get", "configmaps"),
        ("get", "nodes"),
    ]:
        assert not can(verb, resource), f"{verb} {resource} must be denied"
