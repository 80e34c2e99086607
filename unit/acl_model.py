"""A model of docker_auth 1.14's ACL decision, held to `acl_fidelity.ROWS` (decided by the real server).

Globs are Go's `path.Match` (`*` and `?` never match `/`), `/regex/` is RE2 and unanchored, the
first matching entry decides, and label patterns must match one of the label's values.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

import re2


def _glob(pattern: str, value: str) -> bool:
    regex = "".join(
        "[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char) for char in pattern
    )
    return re.fullmatch(regex, value) is not None


def matches(pattern: str, value: str, variables: Mapping[str, str]) -> bool:
    for key, replacement in variables.items():
        pattern = pattern.replace(key, replacement)
    if len(pattern) > 2 and pattern.startswith("/") and pattern.endswith("/"):
        return re2.search(pattern[1:-1], value) is not None
    return _glob(pattern, value)


def allowed(
    acl: list[dict[str, Any]],
    *,
    account: str,
    labels: Mapping[str, list[str]],
    name: str,
    requested: set[str],
    ip: str = "127.0.0.1",
    type_: str = "repository",
) -> set[str]:
    variables = {"${account}": re2.escape(account), "${name}": re2.escape(name), "${type}": type_}
    for key, values in labels.items():
        if values:
            variables["${labels:" + key + "}"] = values[0]
    for entry in acl:
        match = entry["match"]
        if "account" in match and not matches(match["account"], account, variables):
            continue
        if "name" in match and not matches(match["name"], name, variables):
            continue
        if "type" in match and not matches(match["type"], type_, variables):
            continue
        if "ip" in match and ipaddress.ip_address(ip) not in ipaddress.ip_network(match["ip"], strict=False):
            continue
        if any(
            not any(matches(pattern, value, variables) for value in labels.get(key, []))
            for key, pattern in (match.get("labels") or {}).items()
        ):
            continue
        actions = list(entry["actions"])
        return set(requested) if actions == ["*"] else set(requested) & set(actions)
    return set()
