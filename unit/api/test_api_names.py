"""Derived names: the formats of the original, and the name-length limits the CRDs enforce."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import registry_operator.api as api
from registry_operator.api import names
from registry_operator.api.names import (
    MAX_BUILD_ENV_NAME_LENGTH,
    MAX_IMAGE_SECRET_NAME_LENGTH,
    MAX_REGISTRY_NAME_LENGTH,
    account_label_selector,
    account_metadata_labels,
    account_name,
    build_env_redis_name,
    build_env_redis_secret_name,
    build_env_secret_name,
    image_secret_name,
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_label_value,
    pull_secret_name,
    push_secret_name,
    registry_app_label_value,
    registry_auth_config_name,
    registry_certificate_name,
    registry_hostname,
    registry_http_secret_name,
    registry_pvc_name,
    registry_service_account_name,
    registry_service_name,
    registry_statefulset_name,
    registry_tls_secret_name,
    registry_token_key_secret_name,
)

LONGEST_NAMESPACE = "n" * 63
LARGEST_ROTATION = 2**63 - 1  # status.rotation is an int64


def test_names_of_the_original_operator() -> None:
    assert registry_hostname("registry", "infra", "svc.cluster.local") == "registry.infra.svc.cluster.local"
    assert push_secret_name("example") == "imagepushsecret-example"
    assert pull_secret_name("example") == "imagepullsecret-example"
    assert account_name("push", "myns", "example", 3) == "push.myns.example.3"
    assert account_name("pull", "myns", "example", 1) == "pull.myns.example.1"
    assert registry_app_label_value("registry") == "imageregistry-registry"
    assert registry_service_account_name("registry") == "imageregistry-registry"
    assert registry_pvc_name("registry") == "imageregistry-registry-pvc"
    assert registry_certificate_name("registry") == "imageregistry-registry-tls"
    assert build_env_secret_name("example") == "imagebuildenv-example-conf"
    assert build_env_redis_name("example") == "imagebuildenv-example-redis"
    assert build_env_redis_secret_name("example") == "imagebuildenv-example-redis-conf"


def test_tls_secret_name_prefers_the_spec_then_the_issuer_then_self_signed() -> None:
    assert registry_tls_secret_name("reg", "my-tls", has_issuer_ref=True) == "my-tls"
    assert registry_tls_secret_name("reg", None, has_issuer_ref=True) == "imageregistry-reg-cm-tls"
    assert registry_tls_secret_name("reg", None, has_issuer_ref=False) == "imageregistry-reg-selfsigned-tls"


def test_account_labels_select_exactly_one_crs_accounts() -> None:
    labels = account_metadata_labels("push", "example", "team-a")
    assert labels == {
        "registry.mgoltzsche.github.com/imagepushsecret": "example",
        "registry.mgoltzsche.github.com/secret-namespace": "team-a",
    }
    assert account_label_selector("push", "example", "team-a") == (
        "registry.mgoltzsche.github.com/imagepushsecret=example,registry.mgoltzsche.github.com/secret-namespace=team-a"
    )
    assert "imagepullsecret" in account_label_selector("pull", "example", "team-a")


def test_longest_registry_name_yields_valid_children() -> None:
    name = "r" * MAX_REGISTRY_NAME_LENGTH
    assert is_dns1035_label(registry_service_name(name))
    assert is_dns1123_subdomain(registry_statefulset_name(name))
    assert is_label_value(registry_app_label_value(name))
    for derived in (
        registry_service_account_name(name),
        registry_pvc_name(name),
        registry_certificate_name(name),
        registry_token_key_secret_name(name),
        registry_http_secret_name(name),
        registry_auth_config_name(name),
        registry_tls_secret_name(name, None, has_issuer_ref=True),
        registry_tls_secret_name(name, None, has_issuer_ref=False),
    ):
        assert is_dns1123_subdomain(derived), derived
    assert is_dns1123_subdomain(registry_hostname(name, LONGEST_NAMESPACE, "svc.cluster.local"))
    # StatefulSet pods carry `controller-revision-hash: <name>-<10 chars>`, a label value too.
    assert is_label_value(f"{name}-0123456789")


def test_registry_name_limit_is_tight() -> None:
    assert not is_label_value(registry_app_label_value("r" * (MAX_REGISTRY_NAME_LENGTH + 1)))


def test_longest_image_secret_name_yields_valid_children() -> None:
    name = "s" * MAX_IMAGE_SECRET_NAME_LENGTH
    for mode in ("push", "pull"):
        assert is_dns1123_subdomain(image_secret_name(mode, name))
        assert is_dns1123_subdomain(account_name(mode, LONGEST_NAMESPACE, name, LARGEST_ROTATION))
        assert all(
            is_label_value(value) for value in account_metadata_labels(mode, name, LONGEST_NAMESPACE).values()
        )


def test_longest_build_env_name_yields_valid_children() -> None:
    name = "b" * MAX_BUILD_ENV_NAME_LENGTH
    assert is_dns1035_label(build_env_redis_name(name))  # Service name
    assert is_label_value(build_env_redis_name(name))  # `app` label
    assert is_dns1123_subdomain(build_env_secret_name(name))
    assert is_dns1123_subdomain(build_env_redis_secret_name(name))
    assert not is_dns1035_label(build_env_redis_name(name + "b"))


@pytest.mark.parametrize(
    ("value", "label", "label1035", "subdomain"),
    [
        ("registry", True, True, True),
        ("1registry", True, False, True),
        ("a.b", False, False, True),
        ("A", False, False, False),
        ("-a", False, False, False),
        ("", False, False, False),
        ("a" * 64, False, False, True),
    ],
)
def test_name_grammars(value: str, label: bool, label1035: bool, subdomain: bool) -> None:
    assert is_dns1123_label(value) is label
    assert is_dns1035_label(value) is label1035
    assert is_dns1123_subdomain(value) is subdomain


def _public_names(module_file: Path) -> set[str]:
    tree = ast.parse(module_file.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            found.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found.add(node.target.id)
        elif isinstance(node, ast.Assign):
            found.update(target.id for target in node.targets if isinstance(target, ast.Name))
    return {name for name in found if not name.startswith("_")}


def test_package_exports_every_public_name_of_its_modules() -> None:
    package_dir = Path(api.__file__).parent
    exported = set(api.__all__)
    for module_file in sorted(package_dir.glob("*.py")):
        if module_file.name in ("__init__.py", "crd.py"):
            continue
        missing = _public_names(module_file) - exported
        assert not missing, f"{module_file.name}: add {sorted(missing)} to registry_operator/api/__init__.py"
    assert all(hasattr(api, name) for name in api.__all__)
    assert names.push_secret_name is api.push_secret_name
