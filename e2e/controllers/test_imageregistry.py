"""The imageregistry controller against the real control plane (apiserver, controller-manager with
its garbage collector and StatefulSet controller, scheduler, kwok marking pods Ready).

The cluster has no storage provisioner: each test binds its registry's claim to a hostPath
PersistentVolume made for it (`bind_volume`), as an administrator with static volumes would.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import yaml
from cryptography import x509

from e2e.api.kube import apply
from e2e.controllers.imageregistry_support import (
    SEED,
    condition,
    decoded,
    get_or_none,
    merge_patch,
    pod_template_hash,
    registry_manifest,
    root_ca_cert,
    settled_writes,
    user_tls_secret,
    wait_condition,
    writes_so_far,
)
from e2e.kube.support import wait_for
from e2e.support.operator import OperatorProcess
from registry_operator import pki
from registry_operator.api import constants as c
from registry_operator.controllers.resources import (
    CONFIGMAPS,
    IMAGE_REGISTRIES,
    PERSISTENT_VOLUME_CLAIMS,
    ROLE_BINDINGS,
    ROLES,
    SECRETS,
    SERVICE_ACCOUNTS,
    SERVICES,
    STATEFULSETS,
)
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.dockerauth import ext_auth_command
from registry_operator.kube.client import Client
from registry_operator.kube.resources import Resource

# --- tests -----------------------------------------------------------------------------------------


def test_seed_registry_gets_every_child_and_becomes_ready(
    cluster: LocalCluster,
    namespace: str,
    api: Client,
    volumes: Callable[..., str],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    # Without leader election, so that Lease renewals do not count as writes below.
    operator = start_operator(controllers="caroot,imageregistry", env={"OPERATOR_LEADER_ELECTION": "false"})
    volumes(namespace, "imageregistry-registry-pvc")
    started = time.monotonic()
    apply(cluster, namespace, SEED.read_text())
    waited = cluster.kubectl(
        "wait",
        "-n",
        namespace,
        "--for=condition=Ready",
        "imageregistry/registry",
        "--timeout=90s",
        check=False,
    )
    time_to_ready = time.monotonic() - started
    print(f"\nseed registry Ready after {time_to_ready:.1f}s")
    assert waited.returncode == 0, waited.stderr + operator.log()[-3000:]

    registry = api.get(IMAGE_REGISTRIES, "registry", namespace)
    hostname = f"registry.{namespace}.svc.cluster.local"
    status = registry["status"]
    assert status["hostname"] == hostname
    assert status["tlsSecretName"] == "imageregistry-registry-selfsigned-tls"
    assert status["observedGeneration"] == registry["metadata"]["generation"]
    assert condition(registry, "Ready")["reason"] == "Available"
    assert condition(registry, "Synced")["status"] == "True"
    uid = registry["metadata"]["uid"]

    def owned(obj: dict[str, Any]) -> bool:
        refs = obj["metadata"].get("ownerReferences") or []
        return any(ref["uid"] == uid and ref.get("controller") for ref in refs)

    # Every child has a controller reference and the registry's labels.
    children = {
        STATEFULSETS: "registry",
        SERVICES: "registry",
        SERVICE_ACCOUNTS: "imageregistry-registry",
        ROLES: "imageregistry-registry",
        ROLE_BINDINGS: "imageregistry-registry",
        CONFIGMAPS: "imageregistry-registry-auth-config",
        SECRETS: "imageregistry-registry-selfsigned-tls",
    }
    for resource, name in children.items():
        child = api.get(resource, name, namespace)
        assert owned(child), f"{resource} {name} lacks the controller reference"
        assert child["metadata"]["labels"]["app"] == "imageregistry-registry"
        assert child["metadata"]["labels"][c.LABEL_MANAGED_BY] == c.MANAGED_BY_VALUE
    for secret_name in ("imageregistry-registry-auth-token", "imageregistry-registry-http-secret"):
        assert owned(api.get(SECRETS, secret_name, namespace))

    # StatefulSet: three containers, the settings' images, TLS/token/config volumes, a config hash.
    sts = api.get(STATEFULSETS, "registry", namespace)
    pod = sts["spec"]["template"]["spec"]
    containers = {container["name"]: container for container in pod["containers"]}
    assert list(containers) == ["registry", "auth", "authn"]
    assert containers["registry"]["image"] == "docker.io/library/registry:3.1.2"
    assert containers["auth"]["image"] == "docker.io/cesanta/docker_auth:1.14.0"
    assert containers["authn"]["args"][:3] == ["authn-server", "--namespace", namespace]
    registry_env = {env["name"]: env for env in containers["registry"]["env"]}
    assert registry_env["OTEL_TRACES_EXPORTER"]["value"] == "none"
    assert registry_env["REGISTRY_HTTP_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "imageregistry-registry-http-secret",
        "key": "http-secret",
    }
    assert pod["serviceAccountName"] == "imageregistry-registry"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in containers.values():
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes_by_name = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes_by_name["tls"]["secret"]["secretName"] == "imageregistry-registry-selfsigned-tls"
    # The registry trusts the token key Secret's bundle (two keys during a rollover).
    assert volumes_by_name["token-cert"]["secret"]["items"] == [{"key": "bundle.crt", "path": "tls.crt"}]
    assert volumes_by_name["images"]["persistentVolumeClaim"]["claimName"] == "imageregistry-registry-pvc"
    assert len(sts["spec"]["template"]["metadata"]["annotations"][c.ANNOTATION_CONFIG_HASH]) == 64
    assert sts["metadata"]["annotations"][c.ANNOTATION_EXTERNAL_NAME] == hostname

    # Service: LoadBalancer by default, 443 → registry and 5001 → docker_auth, external-dns name.
    service = api.get(SERVICES, "registry", namespace)
    assert service["spec"]["type"] == "LoadBalancer"
    ports = {port["name"]: (port["port"], port["targetPort"]) for port in service["spec"]["ports"]}
    assert ports == {"https": (443, 5000), "auth": (5001, 5001)}
    assert service["metadata"]["annotations"][c.ANNOTATION_EXTERNAL_DNS_HOSTNAME] == hostname

    # RBAC: the sidecar reads accounts (and only its own registry) in this namespace.
    role = api.get(ROLES, "imageregistry-registry", namespace)
    assert role["rules"][0]["resources"] == ["imageregistryaccounts"]
    assert role["rules"][0]["verbs"] == ["get", "list", "watch"]
    assert role["rules"][1] == {
        "apiGroups": [c.GROUP],
        "resources": ["imageregistries"],
        "resourceNames": ["registry"],
        "verbs": ["get"],
    }
    binding = api.get(ROLE_BINDINGS, "imageregistry-registry", namespace)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "imageregistry-registry", "namespace": namespace}
    ]

    # PVC: the seed's storage class and access mode; not owned (deleteClaim defaults to false).
    pvc = api.get(PERSISTENT_VOLUME_CLAIMS, "imageregistry-registry-pvc", namespace)
    assert pvc["spec"]["storageClassName"] == "standard"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert pvc["metadata"]["annotations"][c.ANNOTATION_IMAGE_REGISTRY] == f"registry.{namespace}"
    assert not pvc["metadata"].get("ownerReferences")

    # Serving certificate: the SANs of §3.2.4, signed by the root CA, which ca.crt carries.
    tls = api.get(SECRETS, "imageregistry-registry-selfsigned-tls", namespace)
    assert tls["type"] == "kubernetes.io/tls"
    cert = x509.load_pem_x509_certificate(decoded(tls, "tls.crt"))
    assert pki.dns_names(cert) == [hostname, f"registry.{namespace}.svc"]
    root = root_ca_cert(api)
    assert pki.verify_signed_by(cert, root)
    assert x509.load_pem_x509_certificate(decoded(tls, "ca.crt")) == root
    token = pki.parse_tls_secret_data(
        api.get(SECRETS, "imageregistry-registry-auth-token", namespace)["data"]
    )
    assert not isinstance(token, pki.PkiError)
    assert token.cert.public_key().key_size == 2048  # type: ignore[union-attr]

    # ConfigMap: the docker_auth config with the default ACL (anonymous first, denied).
    config_map = api.get(CONFIGMAPS, "imageregistry-registry-auth-config", namespace)
    auth_config = yaml.safe_load(config_map["data"]["auth_config.yml"])
    assert auth_config["acl"][0] == {
        "match": {"account": ""},
        "actions": [],
        "comment": "anonymous users get nothing",
    }
    assert auth_config["token"]["issuer"] == f"Docker Registry Auth {hostname}"
    # The command test_authn_server.py runs against the sidecar.
    assert auth_config["ext_auth"] == ext_auth_command("http://127.0.0.1:5002/authn")
    registry_config = yaml.safe_load(config_map["data"]["registry.yml"])
    assert registry_config["auth"]["token"]["issuer"] == auth_config["token"]["issuer"]
    assert registry_config["auth"]["token"]["realm"] == f"https://{hostname}:5001/auth"

    # Steady state: no writes at all once Ready (a reconcile of every child changes nothing).
    before = settled_writes(operator, api)
    cluster.kubectl("annotate", "-n", namespace, "statefulset", "registry", "e2e/poke=1")  # an owned event
    time.sleep(3)
    assert writes_so_far(operator, api) == before, "the operator wrote although nothing changed"

    # Deleting the registry garbage-collects every child but keeps the claim (deleteClaim: false).
    cluster.kubectl("delete", "-n", namespace, "imageregistry", "registry")
    for resource, name in children.items():

        def gone(r: Resource = resource, n: str = name) -> bool:
            return get_or_none(api, r, n, namespace) is None

        wait_for(
            gone,
            90,
            f"GC of {resource} {name}",
        )
    time.sleep(1)
    assert get_or_none(api, PERSISTENT_VOLUME_CLAIMS, "imageregistry-registry-pvc", namespace) is not None


def test_spec_changes_roll_out_and_delete_claim_is_honoured(
    cluster: LocalCluster,
    namespace: str,
    api: Client,
    volumes: Callable[..., str],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    # A new CA reaches clients (status.caBundle) this long before the pods serve a certificate from it.
    start_operator(controllers="caroot,imageregistry", env={"OPERATOR_TRUST_OVERLAP": "4s"})
    name, pvc_name = "rollout", "imageregistry-rollout-pvc"
    volumes(namespace, pvc_name, access_modes=("ReadWriteMany",))
    claim = {
        "storageClassName": "standard",
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "1Gi"}},
        "deleteClaim": True,
    }
    apply(cluster, namespace, registry_manifest(name, persistentVolumeClaim=claim))
    wait_condition(api, namespace, name, status="True", reason="Available")
    pvc = api.get(PERSISTENT_VOLUME_CLAIMS, pvc_name, namespace)
    assert [ref["kind"] for ref in pvc["metadata"]["ownerReferences"]] == ["ImageRegistry"]
    cluster.kubectl("label", "-n", namespace, "pvc", pvc_name, "team=e2e")  # a user's label
    initial_hash = pod_template_hash(api, namespace, name)

    # replicas: the StatefulSet scales, the pods' configuration (hash) stays.
    merge_patch(cluster, namespace, name, {"spec": {"replicas": 2}})
    registry = wait_condition(api, namespace, name, status="True", reason="Available")
    assert condition(registry, "Ready")["message"] == "2/2 pods ready"
    assert api.get(STATEFULSETS, name, namespace)["spec"]["replicas"] == 2
    assert pod_template_hash(api, namespace, name) == initial_hash

    # ACL: the docker_auth config changes, and with it the hash (pods roll).
    acl = [{"match": {"account": "/.+/", "name": "${labels:namespace}/*"}, "actions": ["push", "pull"]}]
    merge_patch(cluster, namespace, name, {"spec": {"auth": {"acl": acl}}})
    wait_condition(api, namespace, name, status="True", reason="Available")
    auth_config = yaml.safe_load(
        api.get(CONFIGMAPS, f"imageregistry-{name}-auth-config", namespace)["data"]["auth_config.yml"]
    )
    assert auth_config["acl"] == acl
    acl_hash = pod_template_hash(api, namespace, name)
    assert acl_hash != initial_hash

    # TLS source: a user's Secret replaces the self-signed certificate.
    api.create(SECRETS, user_tls_secret(namespace, "custom-tls", [f"{name}.{namespace}.svc"]))
    merge_patch(cluster, namespace, name, {"spec": {"tls": {"secretName": "custom-tls"}}})
    # First the user's CA is published beside the served one while the pods stay on the served
    # certificate; after the overlap they move to the user's certificate and the old CA leaves.
    wait_for(
        lambda: (
            (api.get(IMAGE_REGISTRIES, name, namespace).get("status") or {}).get("trust", {}).get("phase")
            == "Distributing"
        ),
        10,
        "the new CA to be distributed first",
    )
    held = api.get(IMAGE_REGISTRIES, name, namespace)["status"]
    assert len(pki.bundle_certs(held["caBundle"].encode())) == 2
    assert pod_template_hash(api, namespace, name) == acl_hash
    wait_for(
        lambda: (
            (api.get(IMAGE_REGISTRIES, name, namespace).get("status") or {}).get("trust", {}).get("phase")
            == "Stable"
            and pod_template_hash(api, namespace, name) != acl_hash
        ),
        60,
        "the pods to move to the user's certificate",
    )
    registry = wait_condition(api, namespace, name, status="True", reason="Available")
    assert registry["status"]["tlsSecretName"] == "custom-tls"
    user_ca = decoded(api.get(SECRETS, "custom-tls", namespace), "ca.crt")
    # The previous CA leaves the bundle the retire grace (here the overlap) after the pods moved.
    wait_for(
        lambda: (
            pki.bundle_certs(api.get(IMAGE_REGISTRIES, name, namespace)["status"]["caBundle"].encode())
            == pki.bundle_certs(user_ca)
        ),
        30,
        "the previous CA to leave the bundle",
    )
    pod = api.get(STATEFULSETS, name, namespace)["spec"]["template"]["spec"]
    assert {v["name"]: v for v in pod["volumes"]}["tls"]["secret"]["secretName"] == "custom-tls"
    assert pod_template_hash(api, namespace, name) not in (initial_hash, acl_hash)
    # What the former source generated is cleaned up; the user's secret is never touched.
    wait_for(
        lambda: get_or_none(api, SECRETS, "imageregistry-registry-selfsigned-tls", namespace) is None,
        10,
        "the unused self-signed TLS secret to be deleted",
    )

    # Service type: the API server's clusterIP stays; LoadBalancer's node ports go with the type.
    cluster_ip = api.get(SERVICES, name, namespace)["spec"]["clusterIP"]
    merge_patch(cluster, namespace, name, {"spec": {"service": {"type": "ClusterIP"}}})
    wait_for(lambda: api.get(SERVICES, name, namespace)["spec"]["type"] == "ClusterIP", 30, "Service type")
    service = api.get(SERVICES, name, namespace)
    assert service["spec"]["clusterIP"] == cluster_ip
    assert all("nodePort" not in port for port in service["spec"]["ports"])

    # deleteClaim false un-owns the claim; the user's label survived every apply.
    merge_patch(cluster, namespace, name, {"spec": {"persistentVolumeClaim": {"deleteClaim": False}}})
    wait_for(
        lambda: not api.get(PERSISTENT_VOLUME_CLAIMS, pvc_name, namespace)["metadata"].get("ownerReferences"),
        30,
        "the claim's owner reference to go",
    )
    assert api.get(PERSISTENT_VOLUME_CLAIMS, pvc_name, namespace)["metadata"]["labels"]["team"] == "e2e"
    merge_patch(cluster, namespace, name, {"spec": {"persistentVolumeClaim": {"deleteClaim": True}}})
    wait_for(
        lambda: bool(
            api.get(PERSISTENT_VOLUME_CLAIMS, pvc_name, namespace)["metadata"].get("ownerReferences")
        ),
        30,
        "the claim's owner reference to come back",
    )

    # Deleting the registry takes the claim with it (deleteClaim: true); the user's Secret stays.
    cluster.kubectl("delete", "-n", namespace, "imageregistry", name)
    wait_for(
        lambda: get_or_none(api, PERSISTENT_VOLUME_CLAIMS, pvc_name, namespace) is None, 90, "GC of the claim"
    )
    assert get_or_none(api, SECRETS, "custom-tls", namespace) is not None


def test_malformed_user_tls_secret_is_reported_and_others_keep_working(
    cluster: LocalCluster,
    namespace: str,
    api: Client,
    volumes: Callable[..., str],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    """Regression (B4): the original panicked on a malformed PEM and crash-looped."""
    operator = start_operator(controllers="caroot,imageregistry")
    broken = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "broken-tls", "namespace": namespace},
        "type": "Opaque",  # any type: the registry reads whatever the user named
        "data": {
            "tls.crt": base64.b64encode(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n").decode(),
            "tls.key": base64.b64encode(b"garbage").decode(),
        },
    }
    api.create(SECRETS, broken)
    for name in ("bad", "good"):
        volumes(namespace, f"imageregistry-{name}-pvc", access_modes=("ReadWriteMany",))
    apply(cluster, namespace, registry_manifest("bad", tls={"secretName": "broken-tls"}))
    registry = wait_condition(api, namespace, "bad", status="False", reason="InvalidSecret", timeout=30)
    message = condition(registry, "Ready")["message"]
    assert f"Secret {namespace}/broken-tls" in message
    assert "tls.crt" in message
    assert condition(registry, "Synced")["status"] == "False"
    # No StatefulSet that could only crash on the broken material.
    assert get_or_none(api, STATEFULSETS, "bad", namespace) is None

    # The operator is alive and still reconciles other registries.
    apply(cluster, namespace, registry_manifest("good"))
    wait_condition(api, namespace, "good", status="True", reason="Available")
    assert operator.process.running()
    log = operator.log()
    assert "Traceback" not in log
    assert "reconcile raised an unexpected exception" not in log
    assert 'controller_runtime_reconcile_panics_total{controller="imageregistry"} 0.0' in operator.metrics()

    # The user fixes the Secret: the registry recovers without any change to it (the Secret is watched).
    fixed = user_tls_secret(namespace, "broken-tls", [f"bad.{namespace}.svc"])
    fixed["type"] = "Opaque"
    api.update(SECRETS, {**api.get(SECRETS, "broken-tls", namespace), "data": fixed["data"]})
    wait_condition(api, namespace, "bad", status="True", reason="Available")
