"""spec.auth.namespaces: which namespaces a registry admits, and how the rule reads."""

from __future__ import annotations

from typing import Any

from registry_operator.controllers.tenancy import admits, describe, refusal_message


def registry(rule: dict[str, Any] | None) -> dict[str, Any]:
    auth = {} if rule is None else {"namespaces": rule}
    return {"metadata": {"name": "registry", "namespace": "infra"}, "spec": {"auth": auth}}


def test_unset_admits_every_namespace() -> None:
    assert admits(registry(None), "anything", None)
    assert describe(registry(None)) == "any namespace the operator watches"


def test_names_admit_those_namespaces_and_the_registrys_own() -> None:
    rule = registry({"names": ["team-a"]})
    assert admits(rule, "team-a", None)
    assert admits(rule, "infra", None)
    assert not admits(rule, "team-b", {})
    assert describe(rule) == "namespace infra or namespaces team-a"


def test_selector_admits_by_labels_and_never_when_labels_are_unknown() -> None:
    rule = registry({"selector": {"matchLabels": {"access": "yes"}}})
    assert admits(rule, "team-b", {"access": "yes"})
    assert not admits(rule, "team-b", {"access": "no"})
    assert not admits(rule, "team-b", None)  # a namespaced operator cannot read Namespace labels


def test_refusal_says_what_to_change() -> None:
    message = refusal_message(registry({"names": ["team-a"]}), "team-b")
    assert message.startswith("ImageRegistry infra/registry admits credentials only for namespace infra")
    assert "add team-b to its spec.auth.namespaces.names" in message
