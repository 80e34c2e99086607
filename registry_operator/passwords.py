"""Generated passwords and the two ways account passwords are stored.

Passwords come from the `secrets` CSPRNG for every character (the original drew most characters
from an identically seeded `math/rand`: bug B3). The alphabet is letters and digits only: such a
password needs no quoting or escaping in docker config JSON, YAML, shells, URLs, env files or basic
auth (which splits at the first colon), and 32 of them carry about 190 bits of entropy.

Stored forms (`spec.password` of an ImageRegistryAccount), told apart by their prefix:
* `$2a$`/`$2b$`/`$2y$…`: bcrypt, for passwords people choose (accounts created by hand). Slow on
  purpose: a leaked hash of a guessable password must cost a guesser a lot per guess.
* `sha256-salted-v1$<salt>$<digest>`: HMAC-SHA256 keyed with a 128-bit random salt, for passwords
  the operator generates. With ~190 bits of entropy no guessing attack gets anywhere whatever the
  hash costs (2^189 tries on average), so a slow hash would only burn CPU on every issue and login —
  the way forges store API tokens. `hash_generated_password` refuses anything shorter than 128 bits'
  worth of `ALPHABET`, so a human password never ends up under this fast hash.
Anything else (an unknown prefix, a future version this code does not know) never verifies.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import re
import secrets
import string

ALPHABET = string.ascii_letters + string.digits
DEFAULT_LENGTH = 32
MIN_ENTROPY_BITS = 128
DEFAULT_COST = 10  # Go's bcrypt.DefaultCost, as the original
MIN_COST = 4  # the smallest cost bcrypt accepts
# A stored hash with a higher cost would let one account pin an authn thread for seconds per attempt.
MAX_VERIFY_COST = 14
# bcrypt only looks at the first 72 bytes; longer passwords are refused rather than truncated.
MAX_PASSWORD_BYTES = 72

GENERATED_HASH_PREFIX = "sha256-salted-v1$"
GENERATED_SALT_BYTES = 16

_BCRYPT_HASH = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
_GENERATED_HASH = re.compile(r"^sha256-salted-v1\$([0-9a-f]{32})\$([0-9a-f]{64})$")


class HashScheme(enum.Enum):
    BCRYPT = "bcrypt"
    SALTED_SHA256_V1 = "sha256-salted-v1"


def entropy_bits(length: int, alphabet: str = ALPHABET) -> float:
    return length * math.log2(len(set(alphabet)))


def generate_password(length: int = DEFAULT_LENGTH) -> str:
    """A random password of `length` characters from `ALPHABET` (at least 128 bits of entropy)."""
    if entropy_bits(length) < MIN_ENTROPY_BITS:
        raise ValueError(
            f"a password of {length} characters has fewer than {MIN_ENTROPY_BITS} bits of entropy"
        )
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def hash_scheme(hashed: object) -> HashScheme | None:
    """How `hashed` was made, judged by its full shape; None for anything this code cannot verify."""
    if not isinstance(hashed, str):
        return None
    if _GENERATED_HASH.match(hashed):
        return HashScheme.SALTED_SHA256_V1
    if _BCRYPT_HASH.match(hashed):
        return HashScheme.BCRYPT
    return None


def hash_password(password: str, cost: int = DEFAULT_COST) -> str:
    """bcrypt hash (`$2b$` prefix) of `password`; raises ValueError beyond 72 bytes."""
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise ValueError(f"bcrypt passwords are limited to {MAX_PASSWORD_BYTES} bytes")
    from passlib.hash import bcrypt  # imported on first use: it costs start-up time otherwise

    hashed: str = bcrypt.using(rounds=cost).hash(password)
    return hashed


def _salted_digest(salt: bytes, password: str) -> str:
    return hmac.new(salt, password.encode("utf-8"), hashlib.sha256).hexdigest()


def hash_generated_password(password: str) -> str:
    """The fast salted hash (`sha256-salted-v1$…`) of a password from `generate_password`.

    Raises ValueError for a password that is not at least 128 bits' worth of `ALPHABET`: only a
    high-entropy secret may be stored under a fast hash.
    """
    if set(password) - set(ALPHABET) or entropy_bits(len(password)) < MIN_ENTROPY_BITS:
        raise ValueError("only generated passwords (128+ bits from ALPHABET) may use the fast hash")
    salt = secrets.token_bytes(GENERATED_SALT_BYTES)
    return f"{GENERATED_HASH_PREFIX}{salt.hex()}${_salted_digest(salt, password)}"


def verify_password(password: str, hashed: str) -> bool:
    """True iff `password` matches `hashed` (bcrypt `$2a$`/`$2b$`/`$2y$`, or `sha256-salted-v1$`).

    Never raises: an unknown or malformed hash, a bcrypt cost above `MAX_VERIFY_COST` or a password
    beyond 72 bytes yields False. Digests are compared in constant time.
    """
    if not isinstance(password, str) or not isinstance(hashed, str):
        return False
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        return False
    generated = _GENERATED_HASH.match(hashed)
    if generated is not None:
        salt, digest = bytes.fromhex(generated.group(1)), generated.group(2)
        return hmac.compare_digest(_salted_digest(salt, password), digest)
    match = _BCRYPT_HASH.match(hashed)
    if match is None or int(match.group(1)) > MAX_VERIFY_COST:
        return False
    from passlib.hash import bcrypt

    try:
        return bool(bcrypt.verify(password, hashed))
    except (ValueError, TypeError):
        return False
