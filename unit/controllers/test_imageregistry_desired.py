"""The pure builders of an ImageRegistry's children (no API, no clock)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import acl_model
import pytest
import yaml

from registry_operator import dockerauth
from registry_operator.api import constants as c
from registry_operator.api.imageregistry import ImageRegistrySpec
from registry_operator.controllers.common import contains
from registry_operator.controllers.imageregistry.config import (
    LEGACY_SHIM,
    desired_config_map,
    render_auth_config,
    render_registry_config,
)
from registry_operator.controllers.imageregistry.context import (
    SERVICE_ACCOUNT_DIR,
    TLS_DIR,
    TOKEN_DIR,
    RegistryContext,
)
from registry_operator.controllers.imageregistry.keys import desired_generated_secret
from registry_operator.controllers.imageregistry.readiness import Rollout, rollout_state
from registry_operator.controllers.imageregistry.tls import desired_certificate, server_dns_names
from registry_operator.controllers.imageregistry.workload import (
    desired_pvc,
    desired_role,
    desired_role_binding,
    desired_service,
    desired_service_account,
    desired_statefulset,
)

UID = "0b5a5d3e-1111-2222-3333-444455556666"


def spec(**overrides: Any) -> ImageRegistrySpec:
    base: dict[str, Any] = {"persistentVolumeClaim": {"resources": {"requests": {"storage": "1Gi"}}}}
    base.update(overrides)
    return ImageRegistrySpec.model_validate(base)


def context(name: str = "registry", namespace: str = "team", **overrides: Any) -> RegistryContext:
    return RegistryContext(
        name=name,
        namespace=namespace,
        uid=UID,
        generation=3,
        hostname=f"{name}.{namespace}.svc.cluster.local",
        spec=spec(**overrides),
    )


def statefulset(ctx: RegistryContext | None = None, **kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "image_registry": "registry:3",
        "image_auth": "docker_auth:1.14",
        "image_operator": "operator:1",
        "tls_secret_name": "imageregistry-registry-selfsigned-tls",
        "config_hash": "f" * 64,
    }
    args.update(kwargs)
    return desired_statefulset(ctx or context(), **args)


def all_desired(ctx: RegistryContext) -> list[dict[str, Any]]:
    return [
        desired_service_account(ctx),
        desired_role(ctx),
        desired_role_binding(ctx),
        desired_service(ctx),
        desired_pvc(ctx),
        desired_config_map(ctx, render_registry_config(ctx), render_auth_config(ctx)),
        desired_generated_secret(ctx, "imageregistry-registry-http-secret", {"k": b"v"}, "Opaque"),
        statefulset(ctx),
    ]


def _empty_containers(value: Any, path: str = "") -> list[str]:
    if isinstance(value, Mapping):
        found = [path] if not value and not path.endswith("emptyDir") else []
        for key, item in value.items():
            found += _empty_containers(item, f"{path}.{key}")
        return found
    if isinstance(value, list):
        found = [path] if not value else []
        for index, item in enumerate(value):
            found += _empty_containers(item, f"{path}[{index}]")
        return found
    return []


# --- names, labels, ownership ----------------------------------------------------------------------


def test_every_child_is_labelled_and_controlled_by_the_registry() -> None:
    ctx = context()
    for obj in all_desired(ctx):
        metadata = obj["metadata"]
        assert metadata["namespace"] == "team"
        assert metadata["labels"] == {"app": "imageregistry-registry", c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE}
        if obj["kind"] != "PersistentVolumeClaim":
            assert metadata["ownerReferences"] == [
                {
                    "apiVersion": c.API_VERSION,
                    "kind": "ImageRegistry",
                    "name": "registry",
                    "uid": UID,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]


def test_desired_objects_hold_no_empty_maps_or_lists() -> None:
    # The API server drops empty maps and lists; `contains(cached, desired)` would then never hold and
    # the operator would re-apply on every reconcile. (emptyDir: {} is kept by the API server.)
    for obj in all_desired(context(auth={"acl": []})):
        assert _empty_containers(obj) == [], obj["kind"]


def test_desired_objects_are_contained_in_what_the_api_server_returns_with_defaults() -> None:
    sts = statefulset()
    served = yaml.safe_load(yaml.safe_dump(sts))
    served["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = "/dev/termination-log"
    served["spec"]["podManagementPolicy"] = "OrderedReady"
    served["metadata"]["annotations"]["deployment.kubernetes.io/other"] = "x"
    assert contains(served, sts)
    served["spec"]["template"]["metadata"]["annotations"][c.ANNOTATION_CONFIG_HASH] = "0" * 64
    assert not contains(served, sts)


def test_server_dns_names_put_a_custom_zone_first() -> None:
    assert server_dns_names("r", "ns", "svc.cluster.local") == ["r.ns.svc.cluster.local", "r.ns.svc"]
    assert server_dns_names("r", "ns", "example.org") == [
        "r.ns.example.org",
        "r.ns.svc.cluster.local",
        "r.ns.svc",
    ]


def test_tls_mode_and_secret_name_follow_spec_tls() -> None:
    assert (context().tls_mode, context().tls_secret_name) == (
        "selfsigned",
        "imageregistry-registry-selfsigned-tls",
    )
    user = context(tls={"secretName": "mine"})
    assert (user.tls_mode, user.tls_secret_name) == ("secret", "mine")
    issuer = context(tls={"issuerRef": {"name": "le"}})
    assert (issuer.tls_mode, issuer.tls_secret_name) == ("issuer", "imageregistry-registry-cm-tls")
    both = context(tls={"issuerRef": {"name": "le"}, "secretName": "mine"})
    assert (both.tls_mode, both.tls_secret_name) == ("issuer", "mine")


# --- RBAC ------------------------------------------------------------------------------------------


def test_role_grants_reading_accounts_and_only_its_own_registry() -> None:
    role = desired_role(context())
    assert role["metadata"]["name"] == "imageregistry-registry"
    assert role["rules"] == [
        {"apiGroups": [c.GROUP], "resources": ["imageregistryaccounts"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": [c.GROUP],
            "resources": ["imageregistries"],
            "resourceNames": ["registry"],
            "verbs": ["get"],
        },
    ]


def test_role_binding_binds_the_registry_service_account() -> None:
    binding = desired_role_binding(context())
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "imageregistry-registry", "namespace": "team"}
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "imageregistry-registry",
    }


# --- Service ---------------------------------------------------------------------------------------


def test_service_defaults_to_load_balancer_with_registry_and_auth_ports() -> None:
    service = desired_service(context())
    assert service["metadata"]["name"] == "registry"
    assert service["metadata"]["annotations"] == {
        "external-dns.alpha.kubernetes.io/hostname": "registry.team.svc.cluster.local"
    }
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["selector"] == {"app": "imageregistry-registry"}
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": 5000, "protocol": "TCP"},
        {"name": "auth", "port": 5001, "targetPort": 5001, "protocol": "TCP"},
    ]
    # Allocated values belong to the API server: never set, so never fought over.
    assert "clusterIP" not in service["spec"]
    assert all("nodePort" not in port for port in service["spec"]["ports"])


def test_service_type_comes_from_the_spec() -> None:
    assert desired_service(context(service={"type": "ClusterIP"}))["spec"]["type"] == "ClusterIP"


# --- PVC -------------------------------------------------------------------------------------------


def test_pvc_is_owned_only_with_delete_claim() -> None:
    kept = desired_pvc(context())
    assert "ownerReferences" not in kept["metadata"]
    owned = desired_pvc(
        context(persistentVolumeClaim={"resources": {"requests": {"storage": "1Gi"}}, "deleteClaim": True})
    )
    assert owned["metadata"]["ownerReferences"][0]["uid"] == UID


def test_pvc_fields_follow_the_spec_with_read_write_many_by_default() -> None:
    pvc = desired_pvc(context())
    assert pvc["metadata"]["name"] == "imageregistry-registry-pvc"
    assert pvc["metadata"]["annotations"] == {c.ANNOTATION_IMAGE_REGISTRY: "registry.team"}
    assert pvc["spec"] == {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}
    seeded = desired_pvc(
        context(
            persistentVolumeClaim={
                "storageClassName": "standard",
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "8Gi"}, "limits": {"storage": "10Gi"}},
            }
        )
    )
    assert seeded["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "standard",
        "resources": {"requests": {"storage": "8Gi"}, "limits": {"storage": "10Gi"}},
    }


# --- configuration ---------------------------------------------------------------------------------


def test_registry_config_uses_token_auth_against_the_registrys_docker_auth() -> None:
    config = yaml.safe_load(render_registry_config(context()))
    assert config["http"]["addr"] == ":5000"
    assert config["http"]["tls"] == {"certificate": f"{TLS_DIR}/tls.crt", "key": f"{TLS_DIR}/tls.key"}
    assert "secret" not in config["http"]  # comes from REGISTRY_HTTP_SECRET (a Secret), not the ConfigMap
    assert config["http"]["host"] == "https://registry.team.svc.cluster.local"
    assert config["auth"]["token"] == {
        "realm": "https://registry.team.svc.cluster.local:5001/auth",
        "service": "Docker Registry registry.team.svc.cluster.local",
        "issuer": "Docker Registry Auth registry.team.svc.cluster.local",
        "rootcertbundle": f"{TOKEN_DIR}/tls.crt",
    }
    assert config["storage"]["filesystem"]["rootdirectory"] == "/var/lib/registry"


def test_auth_config_serves_tls_signs_with_the_token_key_and_asks_the_sidecar() -> None:
    config = yaml.safe_load(render_auth_config(context()))
    assert config["server"] == {
        "addr": ":5001",
        "certificate": f"{TLS_DIR}/tls.crt",
        "key": f"{TLS_DIR}/tls.key",
    }
    assert config["token"]["issuer"] == "Docker Registry Auth registry.team.svc.cluster.local"
    assert config["token"]["certificate"] == f"{TOKEN_DIR}/tls.crt"
    assert config["token"]["key"] == f"{TOKEN_DIR}/tls.key"
    assert config["ext_auth"] == dockerauth.ext_auth_command("http://127.0.0.1:5002/authn")
    assert config["ext_auth"]["command"] == "/bin/busybox"  # in the stock docker_auth image


BOTH = {"pull", "push"}


def granted(acl: list[dict[str, Any]], account: str, labels: Mapping[str, list[str]]) -> set[str]:
    """What docker_auth grants on `team/app`, by the model the ACL fidelity table holds to the real server."""
    return acl_model.allowed(acl, account=account, labels=labels, name="team/app", requested=BOTH)


def test_default_acl_denies_anonymous_and_grants_by_label() -> None:
    """Regression (B2): the original's ACL matched everyone and granted push."""
    acl = yaml.safe_load(render_auth_config(context()))["acl"]
    assert acl[0] == {"match": {"account": ""}, "actions": [], "comment": "anonymous users get nothing"}
    assert granted(acl, "", {}) == set()
    # A wrong password never gets labels (the sidecar denies), so such a caller is anonymous at best.
    push = {"origin": ["cr"], "account": ["push.ns.app.1"], "accessMode": ["push"]}
    assert granted(acl, "push.ns.app.1", push) == {"pull", "push"}
    pull = {"origin": ["cr"], "account": ["pull.ns.app.1"], "accessMode": ["pull"]}
    assert granted(acl, "pull.ns.app.1", pull) == {"pull"}
    assert granted(acl, "static", {"origin": ["cr"], "account": ["static"]}) == {"pull"}
    # Without the sidecar's labels (another authenticator), nothing matches: deny.
    assert granted(acl, "someone", {}) == set()


def test_custom_acl_replaces_the_default() -> None:
    acl = [{"match": {"account": "/.+/", "name": "${labels:namespace}/*"}, "actions": ["push", "pull"]}]
    rendered = yaml.safe_load(render_auth_config(context(auth={"acl": acl})))["acl"]
    assert rendered == acl
    assert granted(rendered, "bot", {"namespace": ["team"]}) == BOTH
    assert granted(rendered, "bot", {"namespace": ["other"]}) == set()


def test_empty_custom_acl_denies_everyone() -> None:
    rendered = yaml.safe_load(render_auth_config(context(auth={"acl": []})))["acl"]
    assert [rule["actions"] for rule in rendered] == [[]]
    assert granted(rendered, "anyone", {"origin": ["cr"], "accessMode": ["push"]}) == set()


def test_an_acl_docker_auth_would_reject_raises() -> None:
    with pytest.raises(dockerauth.AclError, match="unknown placeholder"):
        render_auth_config(context(auth={"acl": [{"match": {"name": "${nope}"}, "actions": ["pull"]}]}))


def test_config_map_holds_both_configs_and_the_legacy_shim_key() -> None:
    ctx = context()
    config_map = desired_config_map(ctx, "registry: yes", "auth: yes")
    assert config_map["metadata"]["name"] == "imageregistry-registry-auth-config"
    assert config_map["data"] == {
        "registry.yml": "registry: yes",
        "auth_config.yml": "auth: yes",
        # Pods of the previous template still mount it; nothing runs it.
        "ext_auth_shim.sh": LEGACY_SHIM,
    }


def test_generated_secret_is_base64_data_of_the_given_type() -> None:
    secret = desired_generated_secret(context(), "s", {"tls.crt": b"PEM"}, "kubernetes.io/tls")
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["data"] == {"tls.crt": "UEVN"}


# --- cert-manager ----------------------------------------------------------------------------------


def test_certificate_requests_the_registry_names_from_the_issuer() -> None:
    ctx = context(tls={"issuerRef": {"name": "le", "kind": "ClusterIssuer"}})
    certificate = desired_certificate(ctx, ["registry.team.svc.cluster.local", "registry.team.svc"])
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    assert certificate["metadata"]["name"] == "imageregistry-registry-tls"
    assert certificate["spec"] == {
        "secretName": "imageregistry-registry-cm-tls",
        "commonName": "registry.team.svc.cluster.local",
        "dnsNames": ["registry.team.svc.cluster.local", "registry.team.svc"],
        "duration": "2160h",
        "renewBefore": "480h",
        "issuerRef": {"name": "le", "kind": "ClusterIssuer"},
        "privateKey": {"algorithm": "RSA", "size": 2048, "rotationPolicy": "Always"},
        "usages": ["server auth", "digital signature", "key encipherment"],
    }


def test_certificate_keeps_an_external_issuer_group_and_skips_an_overlong_common_name() -> None:
    ctx = context(tls={"issuerRef": {"name": "x", "kind": "AWSPCAIssuer", "group": "awspca.cert-manager.io"}})
    long_name = "a" * 60 + ".team.svc"
    certificate = desired_certificate(ctx, [long_name])
    assert certificate["spec"]["issuerRef"] == {
        "name": "x",
        "kind": "AWSPCAIssuer",
        "group": "awspca.cert-manager.io",
    }
    assert "commonName" not in certificate["spec"]


def test_certificate_needs_an_issuer_ref() -> None:
    with pytest.raises(ValueError, match="issuerRef"):
        desired_certificate(context(), ["x"])


# --- StatefulSet -----------------------------------------------------------------------------------


def _containers(sts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {container["name"]: container for container in sts["spec"]["template"]["spec"]["containers"]}


def _mounts(container: dict[str, Any]) -> dict[str, str]:
    return {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}


def test_statefulset_runs_registry_auth_and_the_authn_sidecar() -> None:
    sts = statefulset(
        context(replicas=3, persistentVolumeClaim={"resources": {"requests": {"storage": "1Gi"}}})
    )
    assert sts["metadata"]["name"] == "registry"
    assert sts["metadata"]["annotations"] == {
        c.ANNOTATION_GENERATION: "3",
        c.ANNOTATION_EXTERNAL_NAME: "registry.team.svc.cluster.local",
    }
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["serviceName"] == "registry"
    assert sts["spec"]["selector"] == {"matchLabels": {"app": "imageregistry-registry"}}
    template = sts["spec"]["template"]
    assert template["metadata"] == {
        "labels": {"app": "imageregistry-registry"},
        "annotations": {c.ANNOTATION_CONFIG_HASH: "f" * 64},
    }
    containers = _containers(sts)
    assert list(containers) == ["registry", "auth", "authn"]
    assert [containers[n]["image"] for n in containers] == ["registry:3", "docker_auth:1.14", "operator:1"]
    assert containers["registry"]["args"] == ["serve", "/etc/distribution/config.yml"]
    assert containers["auth"]["args"][-1] == "/config/auth_config.yml"
    assert containers["authn"]["args"] == ["authn-server", "--namespace", "team", "--port", "5002"]
    assert containers["authn"]["env"] == [
        {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
    ]


def test_registry_container_env_holds_the_shared_http_secret_and_no_tracing() -> None:
    env = _containers(statefulset())["registry"]["env"]
    assert env == [
        {"name": "OTEL_TRACES_EXPORTER", "value": "none"},
        {
            "name": "REGISTRY_HTTP_SECRET",
            "valueFrom": {
                "secretKeyRef": {"name": "imageregistry-registry-http-secret", "key": "http-secret"}
            },
        },
    ]


def test_only_docker_auth_gets_the_token_signing_key() -> None:
    sts = statefulset()
    volumes = {volume["name"]: volume for volume in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["token-cert"]["secret"]["secretName"] == "imageregistry-registry-auth-token"
    # The registry trusts the bundle (previous + next during a rollover) at its rootcertbundle path.
    assert volumes["token-cert"]["secret"]["items"] == [{"key": "bundle.crt", "path": "tls.crt"}]
    assert [item["key"] for item in volumes["token-key"]["secret"]["items"]] == ["tls.crt", "tls.key"]
    containers = _containers(sts)
    assert "token-cert" in _mounts(containers["registry"]) and "token-key" not in _mounts(
        containers["registry"]
    )
    assert _mounts(containers["auth"])["token-key"] == TOKEN_DIR


def test_volumes_mount_the_tls_secret_config_and_claim() -> None:
    sts = statefulset(tls_secret_name="custom-tls")
    volumes = {volume["name"]: volume for volume in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "custom-tls"
    assert volumes["images"] == {
        "name": "images",
        "persistentVolumeClaim": {"claimName": "imageregistry-registry-pvc"},
    }
    assert volumes["registry-config"]["configMap"] == {
        "name": "imageregistry-registry-auth-config",
        "items": [{"key": "registry.yml", "path": "config.yml"}],
    }
    assert [item["path"] for item in volumes["auth-config"]["configMap"]["items"]] == ["auth_config.yml"]
    registry_mounts = _mounts(_containers(sts)["registry"])
    assert registry_mounts["images"] == "/var/lib/registry"
    assert registry_mounts["registry-config"] == "/etc/distribution"
    assert registry_mounts["tls"] == TLS_DIR


def test_only_the_authn_sidecar_gets_api_credentials() -> None:
    sts = statefulset()
    pod = sts["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "imageregistry-registry"
    assert pod["automountServiceAccountToken"] is False
    containers = _containers(sts)
    assert _mounts(containers["authn"]) == {"authn-api-token": SERVICE_ACCOUNT_DIR}
    assert all("authn-api-token" not in _mounts(containers[n]) for n in ("registry", "auth"))
    projected = {v["name"]: v for v in pod["volumes"]}["authn-api-token"]["projected"]["sources"]
    assert projected[0]["serviceAccountToken"]["path"] == "token"


def test_pod_runs_non_root_with_read_only_root_and_no_capabilities() -> None:
    sts = statefulset()
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert container["resources"]["requests"]["cpu"]
        assert container["resources"]["limits"]["memory"]


def test_registry_and_auth_are_probed_over_tls() -> None:
    containers = _containers(statefulset())
    assert containers["registry"]["readinessProbe"]["httpGet"] == {
        "path": "/",
        "port": 5000,
        "scheme": "HTTPS",
    }
    assert containers["auth"]["readinessProbe"]["httpGet"] == {"path": "/", "port": 5001, "scheme": "HTTPS"}
    assert containers["registry"]["ports"] == [{"name": "https", "containerPort": 5000, "protocol": "TCP"}]


# --- readiness -------------------------------------------------------------------------------------


def _sts(generation: int = 2, **status: int) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "status": status}


@pytest.mark.parametrize(
    ("sts", "replicas", "ready", "message"),
    [
        (None, 1, False, "0/1 pods updated: the StatefulSet does not exist yet"),
        (_sts(observedGeneration=1, replicas=1, readyReplicas=1, updatedReplicas=1), 1, False,
         "0/1 pods updated: the StatefulSet change is not observed yet"),
        (_sts(observedGeneration=2, replicas=2, readyReplicas=1, updatedReplicas=1), 2, False,
         "1/2 pods updated, 1/2 ready"),
        (_sts(observedGeneration=2, replicas=2, readyReplicas=2, updatedReplicas=2), 2, True,
         "2/2 pods ready"),
        (_sts(observedGeneration=2, replicas=3, readyReplicas=3, updatedReplicas=3), 2, False,
         "2/2 pods updated, 2/2 ready, 1 surplus pods terminating"),
        (_sts(observedGeneration=2), 0, True, "0/0 pods ready"),
    ],
)  # fmt: skip
def test_rollout_state(sts: dict[str, Any] | None, replicas: int, ready: bool, message: str) -> None:
    assert rollout_state(sts, replicas) == Rollout(ready, message)


def test_authn_probe_runs_inside_the_container_and_detects_a_dead_sidecar() -> None:
    # kubelet's HTTP probes cannot reach a loopback-only listener, so the probe is an exec of stdlib
    # Python; run that exact command here against a real sidecar server, then against nothing.
    import subprocess
    import sys
    import threading

    from registry_operator.authn import AuthnHTTPServer
    from registry_operator.controllers.imageregistry.workload import authn_probe

    server = AuthnHTTPServer(lambda _user: None, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        command = authn_probe(3, port=server.port)["exec"]["command"]
        assert command[0] == "python"
        alive = subprocess.run([sys.executable, *command[1:]], capture_output=True, timeout=30, check=False)
        assert alive.returncode == 0, alive.stderr
    finally:
        server.shutdown()
        server.server_close()
    dead = subprocess.run([sys.executable, *command[1:]], capture_output=True, timeout=30, check=False)
    assert dead.returncode != 0
    containers = {c["name"]: c for c in statefulset()["spec"]["template"]["spec"]["containers"]}
    assert containers["authn"]["readinessProbe"] == authn_probe(3)
    assert containers["authn"]["livenessProbe"]["failureThreshold"] == 6
