"""The real distribution registry with TLS, and a real client (skopeo) pushing and pulling.

docker_auth cannot be built on this machine (the Go module proxy refuses
github.com/cesanta/docker_auth), so this proof uses the registry's htpasswd auth; the token flow
through docker_auth is exercised only where a docker_auth binary or image exists (kind e2e).
"""

from __future__ import annotations

import json
from pathlib import Path

import bcrypt

from e2e.support.oci import write_image
from e2e.support.registry import LocalRegistry, skopeo
from registry_operator.devenv.certs import issue_cert


def _registry(tmp_path: Path) -> LocalRegistry:
    ca = issue_cert("e2e-registry-ca")
    server = issue_cert("127.0.0.1", issuer=ca, server_names=("127.0.0.1", "localhost"))
    files = {"ca.crt": ca.cert_pem(), "tls.crt": server.cert_pem(), "tls.key": server.key_pem()}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    # skopeo's --cert-dir wants the CA as *.crt and nothing that looks like a client key pair.
    certs = tmp_path / "certs.d"
    certs.mkdir()
    (certs / "ca.crt").write_bytes(ca.cert_pem())
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"alice:{bcrypt.hashpw(b'correct-horse', bcrypt.gensalt(4)).decode()}\n")
    return LocalRegistry(
        tmp_path,
        tls_cert=tmp_path / "tls.crt",
        tls_key=tmp_path / "tls.key",
        ca_cert=tmp_path / "ca.crt",
        auth={"htpasswd": {"realm": "e2e", "path": str(htpasswd)}},
    )


def test_skopeo_pushes_and_pulls_with_good_credentials_only(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    digest = write_image(layout, "v1")
    certs = str(tmp_path / "certs.d")
    with _registry(tmp_path) as registry:
        ref = f"docker://{registry.address}/team/hello:v1"

        pushed = skopeo(
            "copy", "--dest-cert-dir", certs, "--dest-creds", "alice:correct-horse", f"oci:{layout}:v1", ref
        )
        assert pushed.returncode == 0, pushed.stderr + registry.log()

        inspected = skopeo("inspect", "--raw", "--cert-dir", certs, "--creds", "alice:correct-horse", ref)
        assert inspected.returncode == 0, inspected.stderr
        assert json.loads(inspected.stdout)["layers"][0]["mediaType"].endswith("tar+gzip")

        pulled_dir = tmp_path / "pulled"
        pulled = skopeo(
            "copy", "--src-cert-dir", certs, "--src-creds", "alice:correct-horse", ref, f"oci:{pulled_dir}:v1"
        )
        assert pulled.returncode == 0, pulled.stderr
        index = json.loads((pulled_dir / "index.json").read_text())
        assert index["manifests"][0]["digest"] == digest  # byte-identical round trip

        wrong = skopeo(
            "copy", "--dest-cert-dir", certs, "--dest-creds", "alice:wrong", f"oci:{layout}:v1", ref
        )
        assert wrong.returncode != 0
        assert "unauthorized" in wrong.stderr.lower() or "401" in wrong.stderr

        anonymous = skopeo("inspect", "--raw", "--cert-dir", certs, "--no-creds", ref)
        assert anonymous.returncode != 0
        assert "unauthorized" in anonymous.stderr.lower() or "401" in anonymous.stderr

        untrusted = skopeo("inspect", "--raw", "--creds", "alice:correct-horse", ref)
        assert untrusted.returncode != 0, "TLS must fail without the registry's CA"
        assert "certificate" in untrusted.stderr.lower()
