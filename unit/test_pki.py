from __future__ import annotations

import base64
import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from registry_operator import pki

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
TEST_KEY_SIZE = 2048  # the smallest size OpenSSL's default security level accepts in a handshake
DNS = ["registry.infra.example.org", "registry.infra.svc.cluster.local", "registry.infra.svc"]


def _parsed(bundle: pki.TLSBundle) -> pki.ParsedBundle:
    parsed = pki.parse_bundle(bundle)
    assert isinstance(parsed, pki.ParsedBundle), parsed
    return parsed


@pytest.fixture(scope="module")
def ca() -> pki.ParsedBundle:
    return _parsed(pki.create_ca("test-root.local", NOW, key_size=TEST_KEY_SIZE))


@pytest.fixture(scope="module")
def other_ca() -> pki.ParsedBundle:
    return _parsed(pki.create_ca("other-root.local", NOW, key_size=TEST_KEY_SIZE))


@pytest.fixture(scope="module")
def server(ca: pki.ParsedBundle) -> pki.ParsedBundle:
    return _parsed(pki.create_server_cert(ca, DNS, NOW, ip_addresses=["127.0.0.1"], key_size=TEST_KEY_SIZE))


def _b64(data: dict[str, bytes]) -> dict[str, str]:
    return {key: base64.b64encode(value).decode() for key, value in data.items()}


# --------------------------------------------------------------------------------------------------
# Generation


def test_default_key_sizes(monkeypatch: pytest.MonkeyPatch, ca: pki.ParsedBundle) -> None:
    # Generating real 4096-bit keys is slow; record the requested sizes and hand out a small key.
    requested: list[int] = []
    small_key = rsa.generate_private_key(public_exponent=65537, key_size=TEST_KEY_SIZE)

    def fake_new_key(key_size: int) -> rsa.RSAPrivateKey:
        requested.append(key_size)
        return small_key

    monkeypatch.setattr(pki, "_new_rsa_key", fake_new_key)
    root = pki.parse_bundle(pki.create_ca("ca", NOW))
    pki.create_server_cert(ca, ["a.example"], NOW)
    pki.create_token_signing_pair("token", NOW)
    assert requested == [2048, 2048]  # serving and token keys; the root CA is not RSA
    assert not isinstance(root, pki.PkiError)
    assert isinstance(root.key, ec.EllipticCurvePrivateKey) and root.key.curve.name == "secp256r1"


def test_server_cert_from_the_default_ecdsa_root_verifies() -> None:
    root = pki.parse_bundle(pki.create_ca("ecdsa-root.local", NOW))
    assert not isinstance(root, pki.PkiError) and pki.is_ca(root.cert)
    server = pki.parse_bundle(pki.create_server_cert(root, ["registry.example"], NOW, key_size=TEST_KEY_SIZE))
    assert not isinstance(server, pki.PkiError)
    assert isinstance(server.key, rsa.RSAPrivateKey)
    server.cert.verify_directly_issued_by(root.cert)  # raises unless the ECDSA signature checks


def test_ca_certificate(ca: pki.ParsedBundle) -> None:
    cert = ca.cert
    assert pki.is_ca(cert)
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "test-root.local"
    assert pki.verify_signed_by(cert, cert)
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + timedelta(hours=43800)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign and usage.value.digital_signature
    assert isinstance(ca.key, rsa.RSAPrivateKey) and ca.key.key_size == TEST_KEY_SIZE
    # A self-signed CA's ca.crt is the certificate itself.
    assert ca.bundle.ca_pem == ca.bundle.cert_pem
    assert ca.bundle.key_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert cert.serial_number > 0


def test_long_ca_common_name_is_truncated() -> None:
    name = "a-registry-with-a-rather-long-name.some-long-namespace-name-here.svc"
    assert len(name) > 64
    cert = _parsed(pki.create_token_signing_pair(name, NOW, key_size=TEST_KEY_SIZE)).cert
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name[:64]


def test_ca_organization_is_optional() -> None:
    bundle = pki.create_ca("with-org", NOW, key_size=TEST_KEY_SIZE, organization="Example Org")
    cert = _parsed(bundle).cert
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example Org"


def test_server_certificate(ca: pki.ParsedBundle, server: pki.ParsedBundle) -> None:
    cert = server.cert
    assert not pki.is_ca(cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == DNS[0]
    assert cert.issuer == ca.cert.subject
    assert pki.dns_names(cert) == DNS
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment
    assert not usage.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + timedelta(days=90)
    assert server.bundle.ca_pem == ca.bundle.cert_pem
    assert pki.verify_signed_by(cert, ca.cert)


def test_serials_are_random_and_positive(ca: pki.ParsedBundle) -> None:
    certs = [
        _parsed(pki.create_server_cert(ca, ["s.example"], NOW, key_size=TEST_KEY_SIZE)).cert for _ in range(2)
    ]
    assert certs[0].serial_number != certs[1].serial_number
    # random_serial_number() draws 159 bits; a Unix-time serial (the original) is about 31 bits.
    assert all(c.serial_number > 2**64 for c in certs)


def test_long_first_name_leaves_cn_out(ca: pki.ParsedBundle) -> None:
    long_name = "a-registry-with-a-rather-long-name.some-long-namespace.registry.example.org"
    assert len(long_name) > 64
    cert = _parsed(pki.create_server_cert(ca, [long_name], NOW, key_size=TEST_KEY_SIZE)).cert
    assert len(cert.subject) == 0
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert pki.dns_names(cert) == [long_name]


def test_server_certificate_needs_a_name(ca: pki.ParsedBundle) -> None:
    with pytest.raises(ValueError):
        pki.create_server_cert(ca, [], NOW, key_size=TEST_KEY_SIZE)


def test_naive_now_is_rejected(ca: pki.ParsedBundle) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        pki.needs_renewal(ca.cert, datetime(2030, 1, 1))


def test_token_signing_pair() -> None:
    parsed = _parsed(pki.create_token_signing_pair("registry.infra.svc", NOW, key_size=TEST_KEY_SIZE))
    assert isinstance(parsed.key, rsa.RSAPrivateKey)
    assert pki.is_ca(parsed.cert)
    assert pki.verify_signed_by(parsed.cert, parsed.cert)
    assert parsed.bundle.ca_pem == parsed.bundle.cert_pem
    assert parsed.cert.not_valid_after_utc == NOW + timedelta(hours=43800)


# --------------------------------------------------------------------------------------------------
# Renewal and inspection


def test_renewal_at_75_percent_of_lifetime(ca: pki.ParsedBundle) -> None:
    lifetime = timedelta(hours=1)
    cert = _parsed(
        pki.create_server_cert(ca, ["short.example"], NOW, lifetime=lifetime, key_size=TEST_KEY_SIZE)
    ).cert
    total = lifetime + pki.BACKDATE  # NotBefore is back-dated
    expected = NOW - pki.BACKDATE + total * 0.75
    assert pki.renewal_time(cert) == expected
    assert not pki.needs_renewal(cert, expected - timedelta(seconds=1))
    assert pki.needs_renewal(cert, expected)
    assert pki.needs_renewal(cert, NOW + lifetime + timedelta(days=1))


def test_renewal_times_of_default_lifetimes(ca: pki.ParsedBundle, server: pki.ParsedBundle) -> None:
    ca_renewal = pki.renewal_time(ca.cert) - ca.cert.not_valid_before_utc
    assert abs(ca_renewal - (timedelta(hours=43800) + pki.BACKDATE) * 0.75) < timedelta(seconds=1)
    server_renewal = pki.renewal_time(server.cert) - server.cert.not_valid_before_utc
    assert abs(server_renewal - timedelta(days=67.5)) < timedelta(minutes=5)
    assert not pki.needs_renewal(server.cert, NOW + timedelta(days=67))
    assert pki.needs_renewal(server.cert, NOW + timedelta(days=68))


def test_is_valid_at_honours_backdating(server: pki.ParsedBundle) -> None:
    assert pki.is_valid_at(server.cert, NOW - timedelta(minutes=4))
    assert not pki.is_valid_at(server.cert, NOW - timedelta(minutes=6))
    assert not pki.is_valid_at(server.cert, NOW + timedelta(days=91))


def test_matches_is_order_sensitive(server: pki.ParsedBundle) -> None:
    assert pki.matches(server.cert, DNS)
    assert not pki.matches(server.cert, list(reversed(DNS)))
    assert not pki.matches(server.cert, DNS[:2])


def test_verify_signed_by_rejects_other_ca(server: pki.ParsedBundle, other_ca: pki.ParsedBundle) -> None:
    assert not pki.verify_signed_by(server.cert, other_ca.cert)


def test_fingerprint_is_stable(ca: pki.ParsedBundle, server: pki.ParsedBundle) -> None:
    reloaded = x509.load_pem_x509_certificate(server.bundle.cert_pem)
    assert pki.cert_fingerprint(reloaded) == pki.cert_fingerprint(server.cert)
    assert pki.cert_fingerprint(server.cert) != pki.cert_fingerprint(ca.cert)
    assert len(pki.cert_fingerprint(server.cert)) == 64
    assert pki.certs_fingerprint([ca.cert, server.cert]) != pki.certs_fingerprint([server.cert, ca.cert])


def test_server_cert_problem(
    ca: pki.ParsedBundle, other_ca: pki.ParsedBundle, server: pki.ParsedBundle
) -> None:
    assert pki.server_cert_problem(server, DNS, ca.cert, NOW) is None
    assert pki.server_cert_problem(ca, ["test-root.local"], ca.cert, NOW) == "certificate is a CA"
    problem = pki.server_cert_problem(server, ["new.example"], ca.cert, NOW)
    assert problem is not None and "DNS names" in problem
    assert pki.server_cert_problem(server, DNS, other_ca.cert, NOW) == (
        "certificate was not issued by the current CA"
    )
    problem = pki.server_cert_problem(server, DNS, ca.cert, NOW + timedelta(days=80))
    assert problem is not None and problem.startswith("renewal was due")


# --------------------------------------------------------------------------------------------------
# A real TLS handshake


def _server_context(bundle: pki.TLSBundle, tmp_path: Path) -> ssl.SSLContext:
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(bundle.cert_pem)
    key_file.write_bytes(bundle.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str) -> bytes:
    """Run a handshake over a socket pair; return what the server received from the client."""
    server_sock, client_sock = socket.socketpair()
    received: list[bytes] = []
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(server_sock, server_side=True) as tls:
                received.append(tls.recv(100))
                tls.sendall(b"pong")
        except (ssl.SSLError, OSError) as err:
            errors.append(err)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with client_ctx.wrap_socket(client_sock, server_hostname=server_hostname) as tls:
            tls.sendall(b"ping")
            assert tls.recv(100) == b"pong"
    finally:
        client_sock.close()
        thread.join(timeout=10)
        server_sock.close()
    return received[0]


def _client_context(ca_pem: bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca_pem.decode())


@pytest.fixture(scope="module")
def live_ca() -> pki.ParsedBundle:
    """A CA valid at the real current time: OpenSSL checks validity against the wall clock."""
    return _parsed(pki.create_ca("live-root.local", datetime.now(UTC), key_size=TEST_KEY_SIZE))


@pytest.fixture(scope="module")
def live_server(live_ca: pki.ParsedBundle) -> pki.ParsedBundle:
    bundle = pki.create_server_cert(
        live_ca, DNS, datetime.now(UTC), ip_addresses=["127.0.0.1"], key_size=TEST_KEY_SIZE
    )
    return _parsed(bundle)


@pytest.mark.parametrize("hostname", [DNS[0], DNS[2], "127.0.0.1"])
def test_tls_handshake_with_issued_certificate(
    live_server: pki.ParsedBundle, live_ca: pki.ParsedBundle, tmp_path: Path, hostname: str
) -> None:
    server_ctx = _server_context(live_server.bundle, tmp_path)
    received = _handshake(server_ctx, _client_context(live_ca.bundle.cert_pem), hostname)
    assert received == b"ping"


def test_tls_handshake_fails_for_untrusted_ca(
    live_server: pki.ParsedBundle, other_ca: pki.ParsedBundle, tmp_path: Path
) -> None:
    server_ctx = _server_context(live_server.bundle, tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        _handshake(server_ctx, _client_context(other_ca.bundle.cert_pem), DNS[0])


def test_tls_handshake_fails_for_wrong_hostname(
    live_server: pki.ParsedBundle, live_ca: pki.ParsedBundle, tmp_path: Path
) -> None:
    server_ctx = _server_context(live_server.bundle, tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError, match=r"[Hh]ostname mismatch"):
        _handshake(server_ctx, _client_context(live_ca.bundle.cert_pem), "evil.example")


# --------------------------------------------------------------------------------------------------
# Parsing secret data


def test_secret_data_round_trip_base64_and_bytes(server: pki.ParsedBundle) -> None:
    data = server.bundle.to_secret_data()
    assert set(data) == {"tls.crt", "tls.key", "ca.crt"}
    assert all(isinstance(value, bytes) for value in data.values())
    for variant in (data, _b64(data)):
        parsed = pki.parse_tls_secret_data(variant)
        assert isinstance(parsed, pki.ParsedBundle)
        assert parsed.bundle == server.bundle
        assert pki.cert_fingerprint(parsed.cert) == pki.cert_fingerprint(server.cert)
        assert len(parsed.ca_certs) == 1
    assert server.bundle.to_secret_string_data()["tls.crt"].startswith("-----BEGIN CERTIFICATE-----")


def _error(data: dict[str, str | bytes] | None, **kwargs: bool) -> pki.PkiError:
    result = pki.parse_tls_secret_data(data, **kwargs)
    assert isinstance(result, pki.PkiError), result
    return result


@pytest.mark.parametrize("missing", ["tls.crt", "tls.key", "ca.crt"])
def test_missing_or_empty_keys(server: pki.ParsedBundle, missing: str) -> None:
    data: dict[str, str | bytes] = dict(server.bundle.to_secret_data())
    del data[missing]
    error = _error(data)
    assert error.code == "MissingKey" and missing in error.message
    data[missing] = b""
    assert _error(data).code == "MissingKey"


def test_no_data_at_all() -> None:
    assert _error(None).code == "MissingKey"
    assert _error({}).code == "MissingKey"


def test_ca_can_be_optional(server: pki.ParsedBundle) -> None:
    data: dict[str, str | bytes] = {"tls.crt": server.bundle.cert_pem, "tls.key": server.bundle.key_pem}
    parsed = pki.parse_tls_secret_data(data, require_ca=False)
    assert isinstance(parsed, pki.ParsedBundle)
    assert parsed.ca_certs == ()


def test_invalid_base64(server: pki.ParsedBundle) -> None:
    data: dict[str, str | bytes] = dict(_b64(server.bundle.to_secret_data()))
    data["tls.key"] = "not base64 at all!"
    error = _error(data)
    assert error.code == "InvalidEncoding" and "tls.key" in error.message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("tls.crt", b"garbage"),
        ("tls.key", b"garbage"),
        ("ca.crt", b"\x00\x01\x02"),
        ("tls.crt", b"-----BEGIN CERTIFICATE-----\nMIIB\n"),  # no END line
        ("tls.crt", b"-----BEGIN CERTIFICATE-----\nnot-base64-@@@\n-----END CERTIFICATE-----\n"),
        ("tls.key", b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"),
        ("tls.crt", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----\n"),
    ],
)
def test_malformed_pem_is_an_error_value(server: pki.ParsedBundle, key: str, value: bytes) -> None:
    data: dict[str, str | bytes] = dict(server.bundle.to_secret_data())
    data[key] = value
    error = _error(data)
    assert error.code == "MalformedPEM"
    assert error.message.startswith(key)


def test_wrong_pem_types(server: pki.ParsedBundle) -> None:
    swapped: dict[str, str | bytes] = {
        "tls.crt": server.bundle.key_pem,
        "tls.key": server.bundle.key_pem,
        "ca.crt": server.bundle.ca_pem,
    }
    error = _error(swapped)
    assert error.code == "WrongPEMType" and error.message.startswith("tls.crt")
    cert_as_key: dict[str, str | bytes] = {
        "tls.crt": server.bundle.cert_pem,
        "tls.key": server.bundle.cert_pem,
        "ca.crt": server.bundle.ca_pem,
    }
    error = _error(cert_as_key)
    assert error.code == "WrongPEMType" and error.message.startswith("tls.key")


def test_key_not_matching_certificate(server: pki.ParsedBundle, ca: pki.ParsedBundle) -> None:
    data: dict[str, str | bytes] = {
        "tls.crt": server.bundle.cert_pem,
        "tls.key": ca.bundle.key_pem,
        "ca.crt": ca.bundle.cert_pem,
    }
    error = _error(data)
    assert error.code == "KeyMismatch"
    assert str(error) == error.message


def test_chain_and_other_key_encodings(server: pki.ParsedBundle, ca: pki.ParsedBundle) -> None:
    pkcs8 = server.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    data: dict[str, str | bytes] = {
        "tls.crt": server.bundle.cert_pem + ca.bundle.cert_pem,
        "tls.key": pkcs8,
        "ca.crt": ca.bundle.cert_pem,
    }
    parsed = pki.parse_tls_secret_data(data)
    assert isinstance(parsed, pki.ParsedBundle)
    assert parsed.cert == server.cert
    assert parsed.chain == (server.cert, ca.cert)


def test_ec_key_pair_parses() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ec.example")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    cert_pem = pki.cert_pem(cert)
    parsed = pki.parse_tls_secret_data({"tls.crt": cert_pem, "tls.key": key_pem, "ca.crt": cert_pem})
    assert isinstance(parsed, pki.ParsedBundle)
    assert isinstance(parsed.key, ec.EllipticCurvePrivateKey)
    assert not pki.is_ca(parsed.cert)
    assert pki.dns_names(parsed.cert) == []
