"""Generated passwords and bcrypt hashes.

Passwords come from the `secrets` CSPRNG for every character (the original drew most characters
from an identically seeded `math/rand`: bug B3). The alphabet is letters and digits only: such a
password needs no quoting or escaping in docker config JSON, YAML, shells, URLs, env files or basic
auth (which splits at the first colon), and 32 of them carry about 190 bits of entropy.
"""

from __future__ import annotations

import math
import re
import secrets
import string

from passlib.hash import bcrypt

ALPHABET = string.ascii_letters + string.digits
DEFAULT_LENGTH = 32
MIN_ENTROPY_BITS = 128
DEFAULT_COST = 10  # Go's bcrypt.DefaultCost, as the original
MIN_COST = 4  # the smallest cost bcrypt accepts
# A stored hash with a higher cost would let one account pin an authn thread for seconds per attempt.
MAX_VERIFY_COST = 14
# bcrypt only looks at the first 72 bytes; longer passwords are refused rather than truncated.
MAX_PASSWORD_BYTES = 72

_BCRYPT_HASH = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")


def entropy_bits(length: int, alphabet: str = ALPHABET) -> float:
    return length * math.log2(len(set(alphabet)))


def generate_password(length: int = DEFAULT_LENGTH) -> str:
    """A random password of `length` characters from `ALPHABET` (at least 128 bits of entropy)."""
    if entropy_bits(length) < MIN_ENTROPY_BITS:
        raise ValueError(
            f"a password of {length} characters has fewer than {MIN_ENTROPY_BITS} bits of entropy"
        )
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def hash_password(password: str, cost: int = DEFAULT_COST) -> str:
    """bcrypt hash (`$2b$` prefix) of `password`; raises ValueError beyond 72 bytes."""
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise ValueError(f"bcrypt passwords are limited to {MAX_PASSWORD_BYTES} bytes")
    hashed: str = bcrypt.using(rounds=cost).hash(password)
    return hashed


def verify_password(password: str, hashed: str) -> bool:
    """True iff `password` matches the bcrypt hash (`$2a$`, `$2b$` or `$2y$`).

    Never raises: a malformed hash, a cost above `MAX_VERIFY_COST` or a password beyond 72 bytes
    yields False.
    """
    if not isinstance(password, str) or not isinstance(hashed, str):
        return False
    match = _BCRYPT_HASH.match(hashed)
    if match is None or int(match.group(1)) > MAX_VERIFY_COST:
        return False
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        return False
    try:
        return bool(bcrypt.verify(password, hashed))
    except (ValueError, TypeError):
        return False
