"""Operator settings, read from the environment once at start-up and validated there.

An invalid value stops the operator with a `ConfigError` whose message is one line naming the
variable, the value and what is expected (the CLI prints it and exits with status 2). The original
operator panicked instead, or failed only when a reconcile first needed the value.

Deliberate differences from the original (REFERENCE-BEHAVIOUR §2.1):
* `WATCH_NAMESPACE` may be unset; unset or empty means all namespaces. The original refused to start
  without it, but "all namespaces" is what an unset value means for every controller-runtime
  operator, and the namespaced manifests (manifests/operator) set it explicitly anyway.
* The operator namespace comes from `POD_NAMESPACE` (downward API) before the service-account
  namespace file, so it is also known when running outside a pod (`make run`).
* nginx is gone (`OPERATOR_IMAGE_NGINX` is ignored); docker_auth and the registry serve TLS
  themselves, and the operator image doubles as the authn sidecar (`OPERATOR_IMAGE_OPERATOR`).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Final, TypeVar

from registry_operator import __version__
from registry_operator.api.constants import DEFAULT_DNS_ZONE
from registry_operator.api.names import (
    DNS1123_SUBDOMAIN_MAX_LENGTH,
    MAX_REGISTRY_NAME_LENGTH,
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
)
from registry_operator.goduration import (
    DurationError,
    format_duration,
    format_duration_nanoseconds,
    parse_duration,
    parse_duration_nanoseconds,
)

__all__ = [
    "DEFAULT_IMAGE_AUTH",
    "DEFAULT_IMAGE_OPERATOR",
    "DEFAULT_IMAGE_REDIS",
    "DEFAULT_IMAGE_REGISTRY",
    "ConfigError",
    "DurationError",
    "Settings",
    "format_duration",
    "format_duration_nanoseconds",
    "load_settings",
    "parse_duration",
    "parse_duration_nanoseconds",
]

ENV_WATCH_NAMESPACE: Final = "WATCH_NAMESPACE"
ENV_POD_NAMESPACE: Final = "POD_NAMESPACE"
ENV_POD_NAME: Final = "POD_NAME"
ENV_DNS_ZONE: Final = "OPERATOR_DNS_ZONE"
ENV_SECRET_TTL: Final = "OPERATOR_SECRET_TTL"
ENV_DEFAULT_REGISTRY_NAME: Final = "OPERATOR_DEFAULT_REGISTRY_NAME"
ENV_DEFAULT_REGISTRY_NAMESPACE: Final = "OPERATOR_DEFAULT_REGISTRY_NAMESPACE"
ENV_IMAGE_REGISTRY: Final = "OPERATOR_IMAGE_REGISTRY"
ENV_IMAGE_AUTH: Final = "OPERATOR_IMAGE_AUTH"
ENV_IMAGE_OPERATOR: Final = "OPERATOR_IMAGE_OPERATOR"
ENV_IMAGE_AUTHN: Final = "OPERATOR_IMAGE_AUTHN"
ENV_MAX_CONCURRENT_ROLLOUTS: Final = "OPERATOR_MAX_CONCURRENT_ROLLOUTS"
ENV_IMAGE_REDIS: Final = "OPERATOR_IMAGE_REDIS"
ENV_METRICS_BIND_ADDRESS: Final = "OPERATOR_METRICS_BIND_ADDRESS"
ENV_HEALTH_PROBE_BIND_ADDRESS: Final = "OPERATOR_HEALTH_PROBE_BIND_ADDRESS"
ENV_LEADER_ELECTION: Final = "OPERATOR_LEADER_ELECTION"
ENV_LEADER_ELECTION_LEASE_NAME: Final = "OPERATOR_LEADER_ELECTION_LEASE_NAME"
ENV_LOCAL_REGISTRY_HOSTING: Final = "OPERATOR_LOCAL_REGISTRY_HOSTING"
ENV_TRUST_OVERLAP: Final = "OPERATOR_TRUST_OVERLAP"
ENV_TOKEN_KEY_RETIREMENT: Final = "OPERATOR_TOKEN_KEY_RETIREMENT"
ENV_CA_PERMITTED_DNS: Final = "OPERATOR_CA_PERMITTED_DNS"

SERVICE_ACCOUNT_NAMESPACE_FILE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

# Stock images, pinned (ARCHITECTURE §2). Fully qualified so that runtimes with short-name
# resolution disabled (CRI-O) pull them too.
DEFAULT_IMAGE_REGISTRY: Final = "docker.io/library/registry:3.1.2"
DEFAULT_IMAGE_AUTH: Final = "docker.io/cesanta/docker_auth:1.14.0"
DEFAULT_IMAGE_REDIS: Final = "docker.io/library/redis:7.4.2-alpine"
# Placeholder repository until the project publishes its image; the tag follows the operator version
# so the authn sidecar always matches the operator that renders its pod spec.
DEFAULT_IMAGE_OPERATOR: Final = f"ghcr.io/registry-operator/registry-operator:{__version__}"

DEFAULT_SECRET_TTL: Final = "24h"
DEFAULT_REGISTRY_NAME: Final = "registry"
# Registries whose pods the operator rolls at once for a change of its own (image upgrade, renewal).
DEFAULT_MAX_CONCURRENT_ROLLOUTS: Final = 2
DEFAULT_METRICS_BIND_ADDRESS: Final = ":8080"
DEFAULT_HEALTH_PROBE_BIND_ADDRESS: Final = ":8081"
DEFAULT_LEADER_ELECTION_LEASE_NAME: Final = "image-registry-operator-lock"
# How long a new CA is in every distributed `ca.crt` before a certificate it signed is served: covers
# what the API cannot show (kubelet refreshing mounted Secrets, ~1-2 min; the node agent's 30 s
# resync; jobs that read ca.crt at start).
DEFAULT_TRUST_OVERLAP: Final = "1h"
# docker_auth's token expiration (dockerauth.TOKEN_EXPIRATION_SECONDS, 900 s) plus a minute of clock
# skew: a token signed by the previous key cannot be alive after that.
DEFAULT_TOKEN_KEY_RETIREMENT: Final = "16m"
# The cluster's service names (`<name>.<namespace>.svc[.cluster.local]`) are always permitted.
CLUSTER_SERVICE_DNS: Final = ("svc", "svc.cluster.local")

# Below one second the rotation interval (TTL/2) would make the operator rotate in a tight loop.
MIN_SECRET_TTL: Final = timedelta(seconds=1)
# A registry hostname `<name>.<namespace>.<zone>` must stay a valid DNS name (253 characters).
MAX_DNS_ZONE_LENGTH: Final = DNS1123_SUBDOMAIN_MAX_LENGTH - MAX_REGISTRY_NAME_LENGTH - 63 - 2

_IMAGE_REFERENCE = re.compile(r"^[^\s]+$")
_TRUE_WORDS: Final = frozenset({"true", "1", "yes", "on"})
_FALSE_WORDS: Final = frozenset({"false", "0", "no", "off"})


class ConfigError(Exception):
    """An environment variable has an invalid value; the message is one line, fit for a user."""


@dataclass(frozen=True)
class Settings:
    """The operator's settings. Build with `load_settings()`."""

    watch_namespace: str
    """The one namespace to watch; "" means all namespaces."""
    operator_namespace: str
    """Where the operator runs: root CA secret, leader election lease."""
    pod_name: str
    """Identity of this replica in leader election."""
    dns_zone: str
    """Registry hostnames are `<name>.<namespace>.<dns_zone>`."""
    secret_ttl: timedelta
    """Lifetime of generated accounts; credentials rotate after half of it."""
    default_registry_name: str
    default_registry_namespace: str
    image_registry: str
    image_auth: str
    image_operator: str
    image_authn: str
    """The registry pods' authn sidecar; defaults to the operator image, pin it to upgrade the operator
    without rolling every registry."""
    image_redis: str
    max_concurrent_rollouts: int
    """At most this many registries roll their pods at once for a change the operator makes by itself
    (a new sidecar image, a renewed certificate); a change of a registry's own spec is never held."""
    metrics_bind_address: str | None
    """`host:port` of /metrics; None when disabled (the variable set to "0")."""
    health_probe_bind_address: str | None
    """`host:port` of /healthz and /readyz; None when disabled."""
    leader_election: bool
    leader_election_lease_name: str
    local_registry_hosting: bool = False
    """KEP-1755: publish the default registry in kube-public/local-registry-hosting (opt-in)."""
    trust_overlap: timedelta = timedelta(hours=1)
    """A new CA is in every distributed `ca.crt` this long (and in every generated Secret) before a
    certificate it signed is served."""
    token_key_retirement: timedelta = timedelta(minutes=16)
    """After docker_auth switched to a new token key, the registry trusts the previous one this long
    (at least docker_auth's token expiration)."""
    ca_extra_permitted_dns: tuple[str, ...] = ()
    """More DNS subtrees the self-signed root CA may vouch for, besides the zone and cluster names."""

    @property
    def ca_permitted_dns(self) -> tuple[str, ...]:
        """The root CA's NameConstraints: the DNS zone, the cluster's service names and any extra."""
        return tuple(sorted({self.dns_zone, *CLUSTER_SERVICE_DNS, *self.ca_extra_permitted_dns}))

    @property
    def watches_all_namespaces(self) -> bool:
        return self.watch_namespace == ""

    @property
    def rotation_interval(self) -> timedelta:
        """Credentials older than this are replaced: half the TTL, so old ones stay valid as long again."""
        return self.secret_ttl / 2

    @property
    def secret_ttl_text(self) -> str:
        """The TTL as written to generated accounts' `spec.ttl`, Go style (`24h0m0s`)."""
        return format_duration(self.secret_ttl)


def _shown(value: str) -> str:
    """The offending value for an error message: quoted, escaped, never multi-line or huge."""
    return repr(value if len(value) <= 80 else value[:77] + "...")


def _invalid(name: str, value: str, expected: str) -> ConfigError:
    return ConfigError(f"invalid {name}={_shown(value)}: expected {expected}")


T = TypeVar("T")


def _read(
    env: Mapping[str, str], name: str, default: str, parse: Callable[[str], T | None], expected: str
) -> T:
    """The parsed value of `name` (empty counts as unset); `parse` returns None for invalid text."""
    text = env.get(name, "") or default
    value = parse(text)
    if value is None:
        raise _invalid(name, text, expected)
    return value


def _parse_ttl(text: str) -> timedelta | None:
    try:
        ttl = parse_duration(text)
    except DurationError:
        return None
    return ttl if ttl >= MIN_SECRET_TTL else None


def _parse_positive_int(text: str) -> int | None:
    return int(text) if re.fullmatch(r"[1-9][0-9]{0,3}", text) else None


def _parse_bool(text: str) -> bool | None:
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    return None


def _parse_bind_address(text: str) -> tuple[str | None] | None:
    """`[host]:port`, or "0" to disable. Wrapped in a tuple so that "disabled" (None) is a valid result."""
    if text == "0":
        return (None,)
    host, separator, port = text.rpartition(":")
    if not separator or not port.isdigit() or not 0 < int(port) < 65536 or any(c.isspace() for c in host):
        return None
    return (text,)


def _parse_dns_zone(text: str) -> str | None:
    return text if is_dns1123_subdomain(text) and len(text) <= MAX_DNS_ZONE_LENGTH else None


def _parse_duration_setting(text: str) -> timedelta | None:
    try:
        value = parse_duration(text)
    except DurationError:
        return None
    return value if value >= timedelta(seconds=1) else None


def _parse_dns_list(text: str) -> tuple[str, ...] | None:
    names = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    return names if all(is_dns1123_subdomain(name) for name in names) else None


def _parse_namespace(text: str) -> str | None:
    return text if is_dns1123_label(text) else None


def _parse_image(text: str) -> str | None:
    return text if _IMAGE_REFERENCE.match(text) else None


def _operator_namespace(env: Mapping[str, str], namespace_file: Path, watch_namespace: str) -> str:
    if env.get(ENV_POD_NAMESPACE):
        return _read(env, ENV_POD_NAMESPACE, "", _parse_namespace, "a namespace name (DNS-1123 label)")
    try:
        from_file = namespace_file.read_text(encoding="utf-8").strip()
    except OSError:
        from_file = ""
    if from_file:
        return from_file
    if watch_namespace:
        return watch_namespace
    raise ConfigError(
        f"cannot determine the operator namespace: set {ENV_POD_NAMESPACE} "
        f"(not running in a pod: {namespace_file} is missing and {ENV_WATCH_NAMESPACE} is empty)"
    )


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    namespace_file: Path = SERVICE_ACCOUNT_NAMESPACE_FILE,
) -> Settings:
    """Read and validate all settings; raise ConfigError on the first invalid value."""
    env = os.environ if environ is None else environ
    namespace_text = "a namespace name (DNS-1123 label: lower case letters, digits and '-', at most 63)"
    watch_namespace = env.get(ENV_WATCH_NAMESPACE, "")
    if watch_namespace and not is_dns1123_label(watch_namespace):
        raise _invalid(ENV_WATCH_NAMESPACE, watch_namespace, namespace_text + ", or empty for all namespaces")
    operator_namespace = _operator_namespace(env, namespace_file, watch_namespace)
    image_text = "a container image reference without spaces"
    image_operator = _read(env, ENV_IMAGE_OPERATOR, DEFAULT_IMAGE_OPERATOR, _parse_image, image_text)
    return Settings(
        watch_namespace=watch_namespace,
        operator_namespace=operator_namespace,
        pod_name=env.get(ENV_POD_NAME, "") or socket.gethostname(),
        dns_zone=_read(
            env,
            ENV_DNS_ZONE,
            DEFAULT_DNS_ZONE,
            _parse_dns_zone,
            f"a DNS domain such as {DEFAULT_DNS_ZONE} (lower-case labels separated by dots, "
            f"at most {MAX_DNS_ZONE_LENGTH} characters so that registry hostnames stay valid)",
        ),
        secret_ttl=_read(
            env,
            ENV_SECRET_TTL,
            DEFAULT_SECRET_TTL,
            _parse_ttl,
            "a Go duration of at least 1s such as 24h, 12h30m or 90m",
        ),
        default_registry_name=_read(
            env,
            ENV_DEFAULT_REGISTRY_NAME,
            DEFAULT_REGISTRY_NAME,
            lambda text: text if is_dns1035_label(text) and len(text) <= MAX_REGISTRY_NAME_LENGTH else None,
            f"an ImageRegistry name (DNS-1035 label, at most {MAX_REGISTRY_NAME_LENGTH} characters)",
        ),
        default_registry_namespace=_read(
            env, ENV_DEFAULT_REGISTRY_NAMESPACE, operator_namespace, _parse_namespace, namespace_text
        ),
        image_registry=_read(env, ENV_IMAGE_REGISTRY, DEFAULT_IMAGE_REGISTRY, _parse_image, image_text),
        image_auth=_read(env, ENV_IMAGE_AUTH, DEFAULT_IMAGE_AUTH, _parse_image, image_text),
        image_operator=image_operator,
        image_authn=_read(env, ENV_IMAGE_AUTHN, image_operator, _parse_image, image_text),
        image_redis=_read(env, ENV_IMAGE_REDIS, DEFAULT_IMAGE_REDIS, _parse_image, image_text),
        max_concurrent_rollouts=_read(
            env,
            ENV_MAX_CONCURRENT_ROLLOUTS,
            str(DEFAULT_MAX_CONCURRENT_ROLLOUTS),
            _parse_positive_int,
            "an integer from 1 to 9999",
        ),
        metrics_bind_address=_read(
            env,
            ENV_METRICS_BIND_ADDRESS,
            DEFAULT_METRICS_BIND_ADDRESS,
            _parse_bind_address,
            "[host]:port such as :8080, or 0 to disable",
        )[0],
        health_probe_bind_address=_read(
            env,
            ENV_HEALTH_PROBE_BIND_ADDRESS,
            DEFAULT_HEALTH_PROBE_BIND_ADDRESS,
            _parse_bind_address,
            "[host]:port such as :8081, or 0 to disable",
        )[0],
        leader_election=_read(env, ENV_LEADER_ELECTION, "true", _parse_bool, "true or false"),
        leader_election_lease_name=_read(
            env,
            ENV_LEADER_ELECTION_LEASE_NAME,
            DEFAULT_LEADER_ELECTION_LEASE_NAME,
            lambda text: text if is_dns1123_subdomain(text) else None,
            "a Lease name (DNS-1123 subdomain)",
        ),
        local_registry_hosting=_read(env, ENV_LOCAL_REGISTRY_HOSTING, "false", _parse_bool, "true or false"),
        trust_overlap=_read(
            env,
            ENV_TRUST_OVERLAP,
            DEFAULT_TRUST_OVERLAP,
            _parse_duration_setting,
            "a Go duration of at least 1s",
        ),
        token_key_retirement=_read(
            env,
            ENV_TOKEN_KEY_RETIREMENT,
            DEFAULT_TOKEN_KEY_RETIREMENT,
            _parse_duration_setting,
            "a Go duration of at least 1s (keep it above docker_auth's 900 s token expiration)",
        ),
        ca_extra_permitted_dns=_read(
            env,
            ENV_CA_PERMITTED_DNS,
            ",",
            _parse_dns_list,
            "a comma-separated list of DNS domains (DNS-1123 subdomains)",
        ),
    )
