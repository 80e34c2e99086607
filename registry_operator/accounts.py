"""What the reconcilers and the authn sidecar share about ImageRegistryAccounts; pure.

* `account_expiry`: when an account stops working (`creationTimestamp + spec.ttl`);
* `verify_account_password`: the check of a password against `spec.password` (bcrypt for accounts
  made by hand, the fast salted hash for generated ones: `passwords.py` says why);
* `account_hash_scheme`: which of the two `spec.password` holds (None: neither, never verifies);
* `DEFAULT_AUTHN_PORT`, `AUTHN_PATH`, `HEALTH_PATH`: where the sidecar listens and what docker_auth's
  `ext_auth` and the probes call.

The sidecar (`authn.py`) and the controllers both import this module; controllers never import
the sidecar.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from registry_operator.goduration import parse_duration
from registry_operator.passwords import HashScheme, hash_scheme, verify_password

DEFAULT_AUTHN_PORT = 5002
AUTHN_PATH = "/authn"
HEALTH_PATH = "/healthz"

Account = Mapping[str, Any]


# --------------------------------------------------------------------------------------------------
# Expiry


def account_expiry(account: Account) -> datetime | None:
    """When the account stops working (`creationTimestamp + spec.ttl`), None without a ttl.

    Raises ValueError for an unreadable ttl or creationTimestamp.
    """
    ttl = (account.get("spec") or {}).get("ttl")
    if ttl in (None, ""):
        return None
    if not isinstance(ttl, str):
        raise ValueError("spec.ttl is not a string")
    created = (account.get("metadata") or {}).get("creationTimestamp")
    if not isinstance(created, str):
        raise ValueError("metadata.creationTimestamp is missing")
    created_at = datetime.fromisoformat(created)
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    return created_at + parse_duration(ttl)


def account_hash_scheme(account: Account) -> HashScheme | None:
    """The scheme of `spec.password`; None when it is missing or of no scheme this code verifies."""
    return hash_scheme((account.get("spec") or {}).get("password"))


def verify_account_password(account: Account, password: str) -> bool:
    """Check of `password` against `spec.password` (either scheme); False for a missing, malformed or
    unknown hash."""
    hashed = (account.get("spec") or {}).get("password")
    return isinstance(hashed, str) and bool(hashed) and verify_password(password, hashed)
