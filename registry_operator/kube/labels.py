"""metav1.LabelSelector semantics on plain dicts: `matchLabels` and `matchExpressions` (In, NotIn,
Exists, DoesNotExist), all of which must hold; an empty selector matches everything."""

from collections.abc import Mapping
from typing import Any


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in selector.get("matchExpressions") or []:
        key, operator = requirement.get("key", ""), requirement.get("operator")
        values = set(requirement.get("values") or [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False  # unknown operators match nothing, as the apiserver refuses them
    return True


def describe_selector(selector: Mapping[str, Any]) -> str:
    """The selector in kubectl's `-l` syntax, e.g. `env=prod,team in (a,b)`."""
    parts = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for requirement in selector.get("matchExpressions") or []:
        key, operator = requirement.get("key", ""), requirement.get("operator")
        values = ",".join(sorted(requirement.get("values") or []))
        parts.append(
            {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": key}.get(
                str(operator), f"!{key}"
            )
        )
    return ",".join(parts) or "(everything)"
