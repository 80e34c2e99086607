"""The kustomize manifests agree with the code: RBAC covers every kind, the Deployment's environment
is a valid configuration with the code's defaults, and the pod is locked down.

(Rendering with `kubectl kustomize` and applying to a real apiserver is in e2e/api.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from registry_operator import config
from registry_operator.api import GROUP
from registry_operator.api.crd import CRD_DEFINITIONS

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def load(relative: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((MANIFESTS / relative).read_text(encoding="utf-8"))
    return document


def rules_of(relative: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = load(relative)["rules"]
    return rules


def allows(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
        for rule in rules
    )


def operator_container() -> dict[str, Any]:
    container: dict[str, Any] = load("operator/deployment.yaml")["spec"]["template"]["spec"]["containers"][0]
    return container


def test_cluster_role_has_exactly_the_namespaced_roles_rules() -> None:
    assert rules_of("cluster-wide/clusterrole.yaml") == rules_of("operator/role.yaml")


def test_rbac_covers_every_kind_its_status_and_finalizers() -> None:
    rules = rules_of("operator/role.yaml")
    for definition in CRD_DEFINITIONS:
        for verb in ("get", "list", "watch"):
            assert allows(rules, GROUP, definition.plural, verb), (definition.plural, verb)
        assert allows(rules, GROUP, f"{definition.plural}/status", "update")
        assert allows(rules, GROUP, f"{definition.plural}/finalizers", "update")
    for verb in ("create", "delete", "deletecollection"):
        assert allows(rules, GROUP, "imageregistryaccounts", verb)
    # Finalizers are added to and removed from these by updating the object.
    for plural in ("imagepushsecrets", "imagepullsecrets", "imagebuildenvs"):
        assert allows(rules, GROUP, plural, "update")


def test_rbac_allows_granting_the_per_registry_role() -> None:
    # RBAC escalation prevention: the operator can only create a Role granting what it holds itself.
    rules = rules_of("operator/role.yaml")
    for verb in ("get", "list", "watch"):
        assert allows(rules, GROUP, "imageregistryaccounts", verb)
    assert allows(rules, GROUP, "imageregistries", "get")
    assert allows(rules, "rbac.authorization.k8s.io", "roles", "create")
    assert allows(rules, "rbac.authorization.k8s.io", "rolebindings", "create")


def test_rbac_is_least_privilege() -> None:
    rules = rules_of("operator/role.yaml") + rules_of("operator/leader-election-role.yaml")
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
    assert not allows(rules, "", "pods", "create")  # pods are only read (redis readiness)
    assert not allows(rules, "rbac.authorization.k8s.io", "roles", "escalate")
    assert not allows(rules, "rbac.authorization.k8s.io", "roles", "bind")
    assert not allows(rules_of("cluster-wide/clusterrole.yaml"), "coordination.k8s.io", "leases", "get")
    assert allows(rules_of("operator/leader-election-role.yaml"), "coordination.k8s.io", "leases", "update")


def test_every_rbac_rule_says_why() -> None:
    for relative in (
        "operator/role.yaml",
        "operator/leader-election-role.yaml",
        "cluster-wide/clusterrole.yaml",
    ):
        lines = (MANIFESTS / relative).read_text(encoding="utf-8").splitlines()
        rules_start = lines.index("rules:")
        for number, line in enumerate(lines[rules_start + 1 :], start=rules_start + 1):
            if line.startswith("- apiGroups:"):
                assert lines[number - 1].startswith("#"), f"{relative}:{number + 1}: comment the rule"


def test_deployment_environment_is_a_valid_configuration_with_the_code_defaults(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    for variable in operator_container()["env"]:
        # The downward API fills these with the pod's namespace and name.
        env[variable["name"]] = variable.get("value", "operator-ns")
    settings = config.load_settings(env, namespace_file=tmp_path / "absent")
    assert settings.watch_namespace == "operator-ns"
    assert settings.operator_namespace == "operator-ns"
    defaults = config.load_settings({"POD_NAMESPACE": "operator-ns"}, namespace_file=tmp_path / "absent")
    differing = {
        field: (getattr(settings, field), getattr(defaults, field))
        for field in (
            "dns_zone",
            "secret_ttl",
            "default_registry_name",
            "default_registry_namespace",
            "image_registry",
            "image_auth",
            "image_redis",
            "image_operator",
            "metrics_bind_address",
            "health_probe_bind_address",
            "leader_election",
            "leader_election_lease_name",
        )
        if getattr(settings, field) != getattr(defaults, field)
    }
    assert not differing, f"manifests/operator/deployment.yaml disagrees with config.py defaults: {differing}"


def test_deployment_sets_every_operator_variable() -> None:
    names = {variable["name"] for variable in operator_container()["env"]}
    expected = {value for key, value in vars(config).items() if key.startswith("ENV_")}
    assert names == expected


def test_deployment_is_locked_down_and_highly_available() -> None:
    deployment = load("operator/deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container()
    assert deployment["spec"]["replicas"] == 2
    assert pod["serviceAccountName"] == "registry-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["resources"]["requests"].keys() == {"cpu", "memory"}


def test_cluster_wide_watches_all_namespaces() -> None:
    kustomization = (MANIFESTS / "cluster-wide" / "kustomization.yaml").read_text(encoding="utf-8")
    assert 'name: WATCH_NAMESPACE\n              value: ""' in kustomization
    binding = load("cluster-wide/clusterrolebinding.yaml")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "registry-operator", "namespace": "registry-operator"}
    ]
