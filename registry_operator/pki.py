"""Key pairs for the registry stack: root CA, registry server certificates, token-signing key.

Pure functions over the `cryptography` package; no Kubernetes access. Every function where time
matters takes `now` (a timezone-aware datetime) so tests and the reconcilers control the clock.

Secret layout (type `kubernetes.io/tls`, as in the original operator):
`tls.crt` (leaf certificate, optionally followed by intermediates), `tls.key` (PEM private key) and
`ca.crt` (the issuing CA; for a self-signed CA the certificate itself).

Parsing never raises: `parse_tls_secret_data` returns a `PkiError` value for missing keys, bad
base64, malformed PEM, a wrong PEM type or a key that does not belong to the certificate, so a bad
Secret becomes a condition instead of a crash loop (the original panicked: bug B4).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# New root CAs get an ECDSA P-256 key: 128-bit security (more than RSA-3072's), and generated in
# about 0.1 ms where an RSA-4096 prime search takes 0.2-2 s of CPU on the operator's critical path at
# first start. Every client of the registries (Go's crypto/x509 in containerd, docker, skopeo and the
# registry itself) verifies ECDSA chains; serving and token keys stay RSA.
CA_CURVE = ec.SECP256R1()
SERVER_KEY_SIZE = 2048
# 2048: docker_auth signs every token (8.5 ms per RS256 signature at 4096 bits, 2 ms at 2048), and
# registry v3 verifies 2048-bit tokens (proven by the docker_auth e2e lane).
TOKEN_KEY_SIZE = 2048
CA_LIFETIME = timedelta(hours=43800)  # 5 years, as the original
SERVER_LIFETIME = timedelta(hours=2160)  # 90 days, as the original
TOKEN_KEY_LIFETIME = CA_LIFETIME
# NotBefore is back-dated so that nodes whose clocks lag a little accept a fresh certificate.
BACKDATE = timedelta(minutes=5)
RENEWAL_FRACTION = 0.75

TLS_CERT_KEY = "tls.crt"
TLS_KEY_KEY = "tls.key"
CA_CERT_KEY = "ca.crt"

# x509 upper bound for a CommonName (RFC 5280 ub-common-name).
_MAX_COMMON_NAME = 64

PrivateKey = (
    rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
)

PkiErrorCode = Literal["MissingKey", "InvalidEncoding", "MalformedPEM", "WrongPEMType", "KeyMismatch"]


@dataclass(frozen=True)
class PkiError:
    """Why key material could not be used. A value, not an exception: callers branch on it."""

    code: PkiErrorCode
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class TLSBundle:
    """PEM-encoded certificate, private key and issuing CA certificate."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes

    def to_secret_data(self) -> dict[str, bytes]:
        """Raw PEM bytes per Secret key; the caller base64-encodes them for `Secret.data`."""
        return {TLS_CERT_KEY: self.cert_pem, TLS_KEY_KEY: self.key_pem, CA_CERT_KEY: self.ca_pem}

    def to_secret_string_data(self) -> dict[str, str]:
        """The same as `to_secret_data`, as text (usable as `Secret.stringData`)."""
        return {key: value.decode("ascii") for key, value in self.to_secret_data().items()}


@dataclass(frozen=True)
class ParsedBundle:
    """A validated `TLSBundle`: the leaf certificate matches the private key."""

    bundle: TLSBundle
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # every certificate in tls.crt, leaf first
    key: PrivateKey
    ca_certs: tuple[x509.Certificate, ...]  # empty when ca.crt was absent and not required


# --------------------------------------------------------------------------------------------------
# Generation


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")


def _new_rsa_key(key_size: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=key_size)


def _key_pem(key: PrivateKey) -> bytes:
    # RSA keys as PKCS#1 ("RSA PRIVATE KEY") like the original; Go's tls.X509KeyPair reads both.
    key_format = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if isinstance(key, rsa.RSAPrivateKey)
        else serialization.PrivateFormat.PKCS8
    )
    return key.private_bytes(serialization.Encoding.PEM, key_format, serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _new_ca_key(key_size: int | None) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(CA_CURVE) if key_size is None else _new_rsa_key(key_size)


def _self_signed_ca(
    common_name: str,
    now: datetime,
    *,
    key_size: int | None,
    lifetime: timedelta,
    organization: str | None,
    permitted_dns: Sequence[str] = (),
) -> TLSBundle:
    _require_aware(now)
    key = _new_ca_key(key_size)
    # CN is informational for a CA (nothing matches on it), so an over-long one is cut to the limit.
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name[:_MAX_COMMON_NAME])]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    name = x509.Name(attributes)
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
    )
    if permitted_dns:
        builder = builder.add_extension(name_constraints(permitted_dns), critical=True)
    cert = (
        builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = cert_pem(cert)
    return TLSBundle(cert_pem=pem, key_pem=_key_pem(key), ca_pem=pem)


def name_constraints(permitted_dns: Sequence[str]) -> x509.NameConstraints:
    """Permit exactly these DNS subtrees (each name and everything below it) and exclude every IP
    address, so a CA that nodes are asked to trust cannot vouch for any other host."""
    return x509.NameConstraints(
        permitted_subtrees=[x509.DNSName(name) for name in sorted(set(permitted_dns))],
        excluded_subtrees=[
            x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
            x509.IPAddress(ipaddress.ip_network("::/0")),
        ],
    )


def permitted_dns_of(cert: x509.Certificate) -> tuple[str, ...] | None:
    """The permitted DNS subtrees of a CA (sorted), or None when it has no NameConstraints."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None
    subtrees = constraints.permitted_subtrees or []
    return tuple(sorted(name.value for name in subtrees if isinstance(name, x509.DNSName)))


def create_ca(
    common_name: str,
    now: datetime,
    *,
    key_size: int | None = None,
    lifetime: timedelta = CA_LIFETIME,
    organization: str | None = None,
    permitted_dns: Sequence[str] = (),
) -> TLSBundle:
    """A self-signed CA (5 years) with an ECDSA P-256 key, or RSA of `key_size` bits when given;
    `ca_pem` is the certificate itself.

    With `permitted_dns` it carries critical NameConstraints (`name_constraints`)."""
    return _self_signed_ca(
        common_name,
        now,
        key_size=key_size,
        lifetime=lifetime,
        organization=organization,
        permitted_dns=permitted_dns,
    )


def create_token_signing_pair(
    common_name: str,
    now: datetime,
    *,
    key_size: int = TOKEN_KEY_SIZE,
    lifetime: timedelta = TOKEN_KEY_LIFETIME,
) -> TLSBundle:
    """docker_auth's JWT signing key: an RSA key wrapped in a self-signed (CA) certificate.

    The registry's `auth.token.rootcertbundle` wants certificates; it trusts tokens whose `kid` is
    the RFC 7638 thumbprint of one of their keys. RSA, because docker_auth computes EC thumbprints
    differently from registry >= 3.1 (CONTROL-PLANE §5).
    """
    return _self_signed_ca(common_name, now, key_size=key_size, lifetime=lifetime, organization=None)


def create_server_cert(
    ca: ParsedBundle,
    dns_names: Sequence[str],
    now: datetime,
    *,
    ip_addresses: Sequence[str] = (),
    key_size: int = SERVER_KEY_SIZE,
    lifetime: timedelta = SERVER_LIFETIME,
) -> TLSBundle:
    """A serving certificate signed by `ca` (RSA 2048, 90 days); `ca_pem` is the CA certificate.

    SANs are the DNS names (in order) and IP addresses; CN is the first DNS name (left out when it
    exceeds the 64-character x509 limit: clients match SANs only). Key usage DigitalSignature +
    KeyEncipherment, extended key usage ServerAuth + ClientAuth.
    """
    _require_aware(now)
    if not dns_names and not ip_addresses:
        raise ValueError("a server certificate needs at least one DNS name or IP address")
    ips = [ipaddress.ip_address(ip) for ip in ip_addresses]
    first_name = dns_names[0] if dns_names else str(ips[0])
    subject = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first_name)])
        if len(first_name) <= _MAX_COMMON_NAME
        else x509.Name([])
    )
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ip) for ip in ips]
    key = _new_rsa_key(key_size)
    public_key = key.public_key()
    ca_public_key = ca.key.public_key()
    # Ed25519/Ed448 sign without a separate digest algorithm.
    algorithm = (
        None if isinstance(ca.key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey) else hashes.SHA256()
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        # An empty subject requires the SAN extension to be critical (RFC 5280 4.2.1.6).
        .add_extension(x509.SubjectAlternativeName(sans), critical=len(subject) == 0)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public_key), critical=False)
        .sign(ca.key, algorithm)
    )
    return TLSBundle(cert_pem=cert_pem(cert), key_pem=_key_pem(key), ca_pem=cert_pem(ca.cert))


# --------------------------------------------------------------------------------------------------
# Inspection


def renewal_time(cert: x509.Certificate) -> datetime:
    """The instant after which the certificate should be replaced: 75 % into its validity."""
    not_before = cert.not_valid_before_utc
    lifetime = cert.not_valid_after_utc - not_before
    return not_before + lifetime * RENEWAL_FRACTION


def needs_renewal(cert: x509.Certificate, now: datetime) -> bool:
    _require_aware(now)
    return now >= renewal_time(cert)


def is_valid_at(cert: x509.Certificate, now: datetime) -> bool:
    _require_aware(now)
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca


def dns_names(cert: x509.Certificate) -> list[str]:
    """The DNS SANs, in certificate order."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)


def matches(cert: x509.Certificate, wanted_dns_names: Sequence[str]) -> bool:
    """True when the certificate's DNS SANs equal `wanted_dns_names`, order included.

    Order matters because the CN is the first name; a certificate issued by this module for the
    same list always matches.
    """
    return dns_names(cert) == list(wanted_dns_names)


def cert_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER encoding, hex: stable across PEM re-encodings."""
    return cert.fingerprint(hashes.SHA256()).hex()


def verify_signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """True when `ca_cert` issued `cert` (issuer name and signature); validity dates are not checked."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def server_cert_problem(
    parsed: ParsedBundle, wanted_dns_names: Sequence[str], ca_cert: x509.Certificate, now: datetime
) -> str | None:
    """Why an existing serving certificate must be re-issued, or None when it can stay.

    Unlike the original, a replaced CA also triggers re-issuance.
    """
    if is_ca(parsed.cert):
        return "certificate is a CA"
    if not matches(parsed.cert, wanted_dns_names):
        return f"DNS names {dns_names(parsed.cert)} differ from {list(wanted_dns_names)}"
    if not verify_signed_by(parsed.cert, ca_cert):
        return "certificate was not issued by the current CA"
    if now < parsed.cert.not_valid_before_utc:
        return "certificate is not valid yet"
    if needs_renewal(parsed.cert, now):
        return f"renewal was due at {renewal_time(parsed.cert).isoformat()}"
    return None


# --------------------------------------------------------------------------------------------------
# Parsing (never raises)


def _pem_blocks(data: bytes) -> list[tuple[str, bytes]] | None:
    """(type, whole block) for every PEM block in data, or None when there is none or one is broken."""
    blocks: list[tuple[str, bytes]] = []
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    current: list[bytes] | None = None
    label = ""
    for raw_line in lines:
        line = raw_line.strip()
        if current is None:
            if line.startswith(b"-----BEGIN ") and line.endswith(b"-----"):
                label = line[len(b"-----BEGIN ") : -len(b"-----")].decode("ascii", "replace")
                current = [line]
            continue
        current.append(line)
        if line.startswith(b"-----END "):
            end_label = line[len(b"-----END ") : -len(b"-----")].decode("ascii", "replace")
            if end_label != label:
                return None
            blocks.append((label, b"\n".join(current) + b"\n"))
            current = None
    if current is not None or not blocks:
        return None
    return blocks


def parse_certificates_pem(data: bytes, *, source: str = "certificate") -> list[x509.Certificate] | PkiError:
    """Every CERTIFICATE block in `data` (at least one), or an error naming `source`."""
    blocks = _pem_blocks(data)
    if blocks is None:
        return PkiError("MalformedPEM", f"{source}: no well-formed PEM block found")
    certs: list[x509.Certificate] = []
    for label, block in blocks:
        if label != "CERTIFICATE":
            return PkiError("WrongPEMType", f"{source}: PEM block type {label!r}, expected 'CERTIFICATE'")
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError as err:
            return PkiError("MalformedPEM", f"{source}: invalid certificate: {err}")
    return certs


_KEY_PEM_TYPES = ("RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY")


# Every reconcile of a registry reads its CA, serving and token keys again; loading an RSA key checks
# it (primality of p and q: tens of milliseconds at 4096 bits, far more on a busy machine), so each
# distinct PEM block is loaded once. Keys are immutable; the bound keeps memory flat.
PARSED_KEY_CACHE_SIZE: Final = 256


@functools.lru_cache(maxsize=PARSED_KEY_CACHE_SIZE)
def _load_private_key(block: bytes) -> Any:
    """The key in one PEM block, or a message saying why it cannot be loaded."""
    try:
        return serialization.load_pem_private_key(block, password=None)
    except (ValueError, TypeError) as err:
        return f"invalid private key: {err}"
    except Exception as err:  # cryptography raises UnsupportedAlgorithm for exotic keys
        return f"unsupported private key: {err}"


def parse_private_key_pem(data: bytes, *, source: str = "private key") -> PrivateKey | PkiError:
    """One unencrypted private key (PKCS#1, SEC1 or PKCS#8 PEM), or an error naming `source`."""
    blocks = _pem_blocks(data)
    if blocks is None:
        return PkiError("MalformedPEM", f"{source}: no well-formed PEM block found")
    if len(blocks) != 1:
        return PkiError("MalformedPEM", f"{source}: expected one PEM block, found {len(blocks)}")
    label, block = blocks[0]
    if label not in _KEY_PEM_TYPES:
        return PkiError(
            "WrongPEMType", f"{source}: PEM block type {label!r}, expected one of {', '.join(_KEY_PEM_TYPES)}"
        )
    key = _load_private_key(block)
    if isinstance(key, str):
        return PkiError("MalformedPEM", f"{source}: {key}")
    if not isinstance(
        key,
        rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey,
    ):
        return PkiError("WrongPEMType", f"{source}: unsupported private key type {type(key).__name__}")
    return key


def key_matches_cert(key: PrivateKey, cert: x509.Certificate) -> bool:
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)


def _secret_value(data: Mapping[str, str | bytes], key: str) -> bytes | PkiError | None:
    """Raw bytes of one Secret entry: str values are base64 (`Secret.data`), bytes are raw."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return PkiError("InvalidEncoding", f"{key}: value is not valid base64")


def parse_bundle(bundle: TLSBundle, *, require_ca: bool = True) -> ParsedBundle | PkiError:
    """Validate PEMs held in a `TLSBundle` (raw bytes)."""
    return parse_tls_secret_data(bundle.to_secret_data(), require_ca=require_ca)


def parse_tls_secret_data(
    data: Mapping[str, str | bytes] | None, *, require_ca: bool = True
) -> ParsedBundle | PkiError:
    """Parse a TLS Secret's data; values are base64 text (as `Secret.data` from the API) or raw bytes.

    Returns a `PkiError` (never raises) for a missing or empty `tls.crt`/`tls.key` (and `ca.crt` when
    `require_ca`), invalid base64, malformed PEM, a wrong PEM type, or a key that is not the
    certificate's. `tls.crt` may hold a chain; its first certificate is the leaf.
    """
    data = data or {}
    raw: dict[str, bytes] = {}
    for name in (TLS_CERT_KEY, TLS_KEY_KEY, CA_CERT_KEY):
        value = _secret_value(data, name)
        if isinstance(value, PkiError):
            return value
        if value is None or not value.strip():
            if name == CA_CERT_KEY and not require_ca:
                raw[name] = b""
                continue
            return PkiError("MissingKey", f"{name}: missing or empty")
        raw[name] = value

    chain = parse_certificates_pem(raw[TLS_CERT_KEY], source=TLS_CERT_KEY)
    if isinstance(chain, PkiError):
        return chain
    key = parse_private_key_pem(raw[TLS_KEY_KEY], source=TLS_KEY_KEY)
    if isinstance(key, PkiError):
        return key
    ca_certs: list[x509.Certificate] = []
    if raw[CA_CERT_KEY]:
        parsed_ca = parse_certificates_pem(raw[CA_CERT_KEY], source=CA_CERT_KEY)
        if isinstance(parsed_ca, PkiError):
            return parsed_ca
        ca_certs = parsed_ca
    if not key_matches_cert(key, chain[0]):
        return PkiError("KeyMismatch", f"{TLS_KEY_KEY} does not belong to the certificate in {TLS_CERT_KEY}")
    bundle = TLSBundle(cert_pem=raw[TLS_CERT_KEY], key_pem=raw[TLS_KEY_KEY], ca_pem=raw[CA_CERT_KEY])
    return ParsedBundle(bundle=bundle, cert=chain[0], chain=tuple(chain), key=key, ca_certs=tuple(ca_certs))


def certs_fingerprint(certs: Iterable[x509.Certificate]) -> str:
    """One SHA-256 over several certificates' DER encodings, in order."""
    digest = hashlib.sha256()
    for cert in certs:
        digest.update(cert.public_bytes(serialization.Encoding.DER))
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Trust bundles: several CA certificates in one PEM file, as clients read `ca.crt`


def unique_certs(certs: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    """Each certificate once, in order of first occurrence."""
    seen: set[str] = set()
    out = []
    for cert in certs:
        fingerprint = cert_fingerprint(cert)
        if fingerprint not in seen:
            seen.add(fingerprint)
            out.append(cert)
    return out


def pem_bundle(certs: Iterable[x509.Certificate]) -> bytes:
    """The certificates as one PEM file, each once (first occurrence wins the position)."""
    return b"".join(cert_pem(cert) for cert in unique_certs(certs))


def bundle_certs(data: bytes | None) -> list[x509.Certificate]:
    """The certificates of a PEM bundle; empty for missing or unreadable data (never raises)."""
    if not data or not data.strip():
        return []
    parsed = parse_certificates_pem(data, source="bundle")
    return [] if isinstance(parsed, PkiError) else parsed


def fingerprints(certs: Iterable[x509.Certificate]) -> set[str]:
    return {cert_fingerprint(cert) for cert in certs}
