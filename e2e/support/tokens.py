"""Registry tokens as docker_auth 1.14 signs them, and a TLS GET against a local registry: for tests
that run the real registry with the operator's token key but without docker_auth."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import secrets
import socket
import ssl
import time
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def jwk_thumbprint(key: rsa.RSAPublicKey) -> str:
    """RFC 7638 thumbprint of an RSA key: what docker_auth 1.14 (disable_legacy_key_id) and registry
    v3 both use as the key id."""
    numbers = key.public_numbers()
    jwk = {"e": b64url(_int_bytes(numbers.e)), "kty": "RSA", "n": b64url(_int_bytes(numbers.n))}
    return b64url(hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()).digest())


def mint_token(
    key: rsa.RSAPrivateKey, *, issuer: str, audience: str, access: list[dict[str, Any]], lifetime: int = 300
) -> str:
    """A registry token as docker_auth issues it (RS256, kid = thumbprint, no x5c)."""
    header = {"typ": "JWT", "alg": "RS256", "kid": jwk_thumbprint(key.public_key())}
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": "e2e",
        "aud": audience,
        "exp": now + lifetime,
        "nbf": now - 10,
        "iat": now,
        "jti": secrets.token_hex(8),
        "access": access,
    }
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def https_get(
    port: int, server_name: str, path: str, ca_pem: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET over TLS to 127.0.0.1:`port`, verifying the certificate for `server_name` against `ca_pem`."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        lines = [f"GET {path} HTTP/1.1", f"Host: {server_name}", "Connection: close"]
        lines += [f"{key}: {value}" for key, value in (headers or {}).items()]
        tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = http.client.HTTPResponse(tls)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
