"""ACL fidelity table: how docker_auth 1.14 decides, row by row.

The expectations are docker_auth's own answers: the docker_auth lane
(`e2e/docker_auth/test_acl_fidelity.py`) asks the real server for every row and fails on any
difference; the unit tests check their ACL model (`acl_model.allowed`) against the same rows. So the
model can only say what docker_auth does.

Every row's ACL is followed by nothing: no match means deny (empty grant). Requests are made by
the ImageRegistryAccount `ACCOUNT` with `LABELS` (plus the sidecar's `origin: [cr]` and
`account: [<name>]`), from 127.0.0.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ACCOUNT = "bot"
LABELS: dict[str, list[str]] = {"namespace": ["team-b"], "team": ["a", "b"], "accessMode": ["push"]}
CLIENT_IP = "127.0.0.1"


@dataclass(frozen=True)
class Row:
    case: str
    acl: list[dict[str, Any]]
    name: str  # repository requested with pull,push
    expected: frozenset[str]


def _row(
    case: str, match: dict[str, Any], name: str, expected: set[str], actions: list[str] | None = None
) -> Row:
    return Row(
        case,
        [{"match": match, "actions": actions if actions is not None else ["pull"]}],
        name,
        frozenset(expected),
    )


ROWS: list[Row] = [
    _row("glob * within one segment", {"name": "team-a/*"}, "team-a/app", {"pull"}),
    _row("glob * never crosses /", {"name": "team-a/*"}, "team-a/x/app", set()),
    _row("glob */* spans two segments", {"name": "*/*"}, "team-a/app", {"pull"}),
    _row("glob ? is one character", {"name": "team-?/app"}, "team-a/app", {"pull"}),
    _row("glob is whole-string", {"name": "team-a"}, "team-a/app", set()),
    _row("regex is unanchored", {"name": "/team-a/"}, "evil/team-a-x", {"pull"}),
    _row("anchored regex", {"name": "/^team-a/.*$/"}, "evil/team-a-x", set()),
    _row("anchored regex matches", {"name": "/^team-a/.*$/"}, "team-a/x/y", {"pull"}),
    _row("${account} substituted", {"name": "${account}/*"}, "bot/app", {"pull"}),
    _row("${account} other repo", {"name": "${account}/*"}, "other/app", set()),
    _row("${labels:namespace} substituted", {"name": "${labels:namespace}/*"}, "team-b/app", {"pull"}),
    _row("${labels:namespace} other repo", {"name": "${labels:namespace}/*"}, "team-a/app", set()),
    _row("label list: any value matches", {"labels": {"team": "b"}}, "x/app", {"pull"}),
    _row("label list: no value matches", {"labels": {"team": "c"}}, "x/app", set()),
    _row("label regex", {"labels": {"team": "/^[ab]$/"}}, "x/app", {"pull"}),
    _row("missing label: no match", {"labels": {"nope": "*"}}, "x/app", set()),
    _row("account glob", {"account": "b*"}, "x/app", {"pull"}),
    _row("ip exact", {"ip": "127.0.0.1"}, "x/app", {"pull"}),
    _row("ip CIDR elsewhere", {"ip": "10.0.0.0/8"}, "x/app", set()),
    _row("empty actions deny", {}, "x/app", set(), actions=[]),
    _row("* grants what was asked", {}, "x/app", {"pull", "push"}, actions=["*"]),
    _row("actions intersect the request", {}, "x/app", {"push"}, actions=["push", "delete"]),
    Row(
        "first match wins",
        [{"match": {}, "actions": []}, {"match": {}, "actions": ["pull", "push"]}],
        "x/app",
        frozenset(),
    ),
]
