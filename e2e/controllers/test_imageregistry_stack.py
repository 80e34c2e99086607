"""The real distribution registry, run with exactly the configuration, certificate and token key the
operator wrote to the API.

The test takes `registry.yml` from the registry's ConfigMap, the serving certificate from its TLS
Secret, the token certificate from its token key Secret and REGISTRY_HTTP_SECRET from its Secret, and
rewrites only what ties them to the pod (listen address, file paths, storage directory) before starting
`registry serve` on 127.0.0.1.

docker_auth itself is not run: it cannot be built here (the Go module proxy refuses
github.com/cesanta/docker_auth with 403). What it would do with the operator's token key is done by
the test instead: a JWT signed with that key, with the `kid` docker_auth 1.14 puts in the header when
`disable_legacy_key_id: true` (the RFC 7638 thumbprint) and the issuer from the rendered docker_auth
config, must be accepted by the registry; other keys and issuers must not. The authn sidecar runs for
real in test_authn_server.py; the ACL is covered by unit tests of the rendered config.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from e2e.api.kube import apply
from e2e.controllers.imageregistry_support import (
    decoded,
    registry_manifest,
    wait_condition,
)
from e2e.support.operator import OPERATOR_NAMESPACE, OperatorProcess
from e2e.support.tokens import https_get, mint_token
from registry_operator import dockerauth
from registry_operator.api import constants as c
from registry_operator.controllers.imageregistry.context import TOKEN_DIR
from registry_operator.controllers.resources import CONFIGMAPS, SECRETS
from registry_operator.devenv import binaries
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.devenv.processes import ManagedProcess, free_port, wait_until
from registry_operator.kube.client import Client


def parse_challenge(header: str) -> dict[str, str]:
    scheme, _, params = header.partition(" ")
    assert scheme == "Bearer", header
    result = {}
    for part in params.split(","):
        key, _, value = part.partition("=")
        result[key.strip()] = value.strip().strip('"')
    return result


def test_registry_serves_the_operators_tls_and_trusts_only_its_token_key(
    cluster: LocalCluster,
    namespace: str,
    api: Client,
    volumes: Callable[..., str],
    start_operator: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    start_operator(controllers="caroot,imageregistry")
    volumes(namespace, "imageregistry-stack-pvc", access_modes=("ReadWriteMany",))
    apply(cluster, namespace, registry_manifest("stack"))
    registry = wait_condition(api, namespace, "stack", status="True", reason="Available")
    hostname = registry["status"]["hostname"]

    # Exactly what the operator wrote.
    config_map = api.get(CONFIGMAPS, "imageregistry-stack-auth-config", namespace)
    registry_config = yaml.safe_load(config_map["data"]["registry.yml"])
    auth_config = yaml.safe_load(config_map["data"]["auth_config.yml"])
    tls_secret = api.get(SECRETS, registry["status"]["tlsSecretName"], namespace)
    token_secret = api.get(SECRETS, "imageregistry-stack-auth-token", namespace)
    http_secret = decoded(api.get(SECRETS, "imageregistry-stack-http-secret", namespace), "http-secret")
    root_ca_pem = decoded(api.get(SECRETS, c.ROOT_CA_SECRET_NAME, OPERATOR_NAMESPACE), "tls.crt")

    # docker_auth signs with the token key Secret the registry trusts, under the registry's issuer.
    assert auth_config["token"]["certificate"] == f"{TOKEN_DIR}/tls.crt"
    assert auth_config["token"]["key"] == f"{TOKEN_DIR}/tls.key"
    assert registry_config["auth"]["token"]["rootcertbundle"] == f"{TOKEN_DIR}/tls.crt"
    assert auth_config["token"]["disable_legacy_key_id"] is True
    issuer = auth_config["token"]["issuer"]
    assert registry_config["auth"]["token"]["issuer"] == issuer
    assert auth_config["server"]["addr"] == ":5001"  # the Service's `auth` port, i.e. the realm's

    # Rewrite only the pod-specific parts, then run the real registry.
    files = {
        "tls.crt": decoded(tls_secret, "tls.crt"),
        "tls.key": decoded(tls_secret, "tls.key"),
        # What the pod mounts at the rootcertbundle path: the token key Secret's trust bundle.
        "token.crt": decoded(token_secret, "bundle.crt"),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    port = free_port()
    registry_config["http"]["addr"] = f"127.0.0.1:{port}"
    registry_config["http"]["tls"] = {
        "certificate": str(tmp_path / "tls.crt"),
        "key": str(tmp_path / "tls.key"),
    }
    registry_config["auth"]["token"]["rootcertbundle"] = str(tmp_path / "token.crt")
    registry_config["storage"]["filesystem"]["rootdirectory"] = str(tmp_path / "data")
    config_path = tmp_path / "registry.yml"
    config_path.write_text(yaml.safe_dump(registry_config))
    env = {**os.environ, **dockerauth.REGISTRY_ENV, "REGISTRY_HTTP_SECRET": http_secret.decode()}
    binary = binaries.ensure("registry")["registry"].path("registry")
    process = ManagedProcess("registry", [str(binary), "serve", str(config_path)], tmp_path, env)
    process.start()
    try:
        wait_until("registry TLS", lambda: https_get(port, hostname, "/", root_ca_pem)[0] == 200, 30, process)
        # `/` answers 200 without credentials: the path the pod's probes use.
        status, _, _ = https_get(port, hostname, "/", root_ca_pem)
        assert status == 200

        # TLS with the operator's certificate, verifiable with the root CA, for the registry's name.
        context = ssl.create_default_context(cadata=root_ca_pem.decode())
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=hostname) as tls,
        ):
            peer = tls.getpeercert(binary_form=True)
        assert peer is not None
        served = x509.load_der_x509_certificate(peer)
        assert served == x509.load_pem_x509_certificate(files["tls.crt"])

        # Anonymous: 401 with a Bearer challenge pointing at docker_auth for this registry.
        status, headers, _ = https_get(port, hostname, "/v2/", root_ca_pem)
        assert status == 401
        challenge = parse_challenge(headers["www-authenticate"])
        assert challenge["realm"] == f"https://{hostname}:5001/auth"
        assert challenge["service"] == f"Docker Registry {hostname}"

        # A token as docker_auth would sign it with the operator's key: accepted.
        token_key = serialization.load_pem_private_key(decoded(token_secret, "tls.key"), password=None)
        assert isinstance(token_key, rsa.RSAPrivateKey)
        good = mint_token(token_key, issuer=issuer, audience=challenge["service"], access=[])
        status, _, body = https_get(port, hostname, "/v2/", root_ca_pem, {"Authorization": f"Bearer {good}"})
        assert status == 200, body

        # Another key, or another issuer: refused.
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for token in (
            mint_token(stranger, issuer=issuer, audience=challenge["service"], access=[]),
            mint_token(token_key, issuer="someone else", audience=challenge["service"], access=[]),
            mint_token(token_key, issuer=issuer, audience="another service", access=[]),
        ):
            status, _, _ = https_get(
                port, hostname, "/v2/", root_ca_pem, {"Authorization": f"Bearer {token}"}
            )
            assert status == 401
    finally:
        process.stop()
