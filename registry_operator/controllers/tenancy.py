"""Who may get credentials of a registry: its `spec.auth.namespaces` (names and/or a namespace label
selector; unset: any namespace the operator watches; the registry's own namespace always). Pure
functions over the ImageRegistry as the cache holds it; the imagesecret controller enforces them,
the registry's status shows `describe()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from registry_operator.kube import objects
from registry_operator.kube.labels import describe_selector, selector_matches


def namespace_rule(registry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    rule: Mapping[str, Any] | None = ((registry.get("spec") or {}).get("auth") or {}).get("namespaces")
    return rule


def admits(registry: Mapping[str, Any], namespace: str, namespace_labels: Mapping[str, str] | None) -> bool:
    """Whether a secret CR of `namespace` may get accounts; `namespace_labels` None: unknown
    (a namespaced operator cannot read Namespaces), so only names count."""
    rule = namespace_rule(registry)
    if rule is None or namespace == objects.namespace(registry):
        return True
    if namespace in (rule.get("names") or []):
        return True
    selector = rule.get("selector")
    return (
        selector is not None and namespace_labels is not None and selector_matches(selector, namespace_labels)
    )


def describe(registry: Mapping[str, Any]) -> str:
    """The effective rule in words, for the registry's status and refusal messages."""
    rule = namespace_rule(registry)
    if rule is None:
        return "any namespace the operator watches"
    parts = [f"namespace {objects.namespace(registry)}"]
    if rule.get("names"):
        parts.append("namespaces " + ", ".join(sorted(rule["names"])))
    if rule.get("selector") is not None:
        parts.append(f"namespaces labelled {describe_selector(rule['selector'])}")
    return " or ".join(parts)


def refusal_message(registry: Mapping[str, Any], namespace: str) -> str:
    where = f"{objects.namespace(registry)}/{objects.name(registry)}"
    return (
        f"ImageRegistry {where} admits credentials only for {describe(registry)}; add {namespace} to "
        "its spec.auth.namespaces.names (or label the namespace to match spec.auth.namespaces.selector)"
    )
