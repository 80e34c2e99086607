from __future__ import annotations

import string
from collections import Counter

import pytest

from registry_operator import passwords

# A fixed bcrypt hash of "pw123" with the `$2y$` prefix PHP/htpasswd write (the seed's example
# account uses such a hash), made once with the `bcrypt` package.
PW123_2Y = "$2y$05$fFpP5rsJxeMzexMZL/vkUeDEgUGRz1B1JHvEJwSOZ0UioEZCq8v6a"
TEST_COST = 4


def test_default_password_shape() -> None:
    password = passwords.generate_password()
    assert len(password) == 32
    assert set(password) <= set(string.ascii_letters + string.digits)
    assert passwords.entropy_bits(32) > 190


def test_alphabet_is_safe_everywhere() -> None:
    # Quotes, backslash, $, backtick and spaces break shells and JSON; ':' breaks basic auth.
    assert not set(passwords.ALPHABET) & set("\"'\\$` :\t\n#&;|<>(){}[]*?~!%@/")
    assert len(passwords.ALPHABET) == 62


def test_too_short_passwords_are_refused() -> None:
    with pytest.raises(ValueError, match="entropy"):
        passwords.generate_password(21)  # 21 * log2(62) < 128
    assert len(passwords.generate_password(22)) == 22


def test_passwords_are_unique_and_spread_over_the_alphabet() -> None:
    draws = [passwords.generate_password() for _ in range(2000)]
    assert len(set(draws)) == len(draws)
    counts = Counter("".join(draws))
    assert set(counts) == set(passwords.ALPHABET)
    # 64000 characters over 62 symbols: about 1032 each; a biased generator lands far outside.
    assert min(counts.values()) > 800
    assert max(counts.values()) < 1300


def test_hash_round_trip() -> None:
    password = passwords.generate_password()
    hashed = passwords.hash_password(password, cost=TEST_COST)
    assert hashed.startswith("$2b$04$")
    assert passwords.verify_password(password, hashed)
    assert not passwords.verify_password(password + "x", hashed)
    assert not passwords.verify_password("", hashed)


def test_default_cost_is_10() -> None:
    assert passwords.hash_password("pw").startswith("$2b$10$")


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
def test_verify_accepts_all_bcrypt_prefixes(prefix: str) -> None:
    hashed = passwords.hash_password("pw123", cost=TEST_COST)
    variant = prefix + hashed[4:]
    assert passwords.verify_password("pw123", variant)
    assert not passwords.verify_password("pw124", variant)


def test_verify_known_2y_hash() -> None:
    assert passwords.verify_password("pw123", PW123_2Y)
    assert not passwords.verify_password("pw1234", PW123_2Y)
    assert not passwords.verify_password("PW123", PW123_2Y)


@pytest.mark.parametrize(
    "hashed",
    [
        "",
        "pw123",
        "$2y$05$short",
        "$2y$05$" + "!" * 53,
        "$2x$05$" + "a" * 53,
        "$1$salt$md5cryptvalue",
        "$2y$31$" + "a" * 53,  # cost too high: would block for hours
    ],
)
def test_malformed_hash_is_false_not_an_exception(hashed: str) -> None:
    assert passwords.verify_password("pw123", hashed) is False


def test_non_string_inputs_are_false() -> None:
    hashed = passwords.hash_password("pw123", cost=TEST_COST)
    assert passwords.verify_password(None, hashed) is False  # type: ignore[arg-type]
    assert passwords.verify_password("pw123", None) is False  # type: ignore[arg-type]


def test_overlong_passwords() -> None:
    with pytest.raises(ValueError, match="72 bytes"):
        passwords.hash_password("a" * 73, cost=TEST_COST)
    hashed = passwords.hash_password("a" * 72, cost=TEST_COST)
    assert passwords.verify_password("a" * 72, hashed)
    # bcrypt would ignore the extra bytes; we refuse instead of accepting a longer password.
    assert not passwords.verify_password("a" * 73, hashed)
