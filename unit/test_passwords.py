from __future__ import annotations

import hmac
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


# --- the fast salted hash of generated passwords ---------------------------------------------------


def test_generated_hash_round_trip_and_shape() -> None:
    password = passwords.generate_password()
    hashed = passwords.hash_generated_password(password)
    prefix, salt, digest = hashed.split("$")
    assert prefix == "sha256-salted-v1"
    assert len(bytes.fromhex(salt)) == passwords.GENERATED_SALT_BYTES
    assert len(bytes.fromhex(digest)) == 32
    assert passwords.hash_scheme(hashed) is passwords.HashScheme.SALTED_SHA256_V1
    assert passwords.verify_password(password, hashed)
    assert not passwords.verify_password(password[:-1], hashed)
    assert not passwords.verify_password(password + "x", hashed)
    assert not passwords.verify_password("", hashed)


def test_generated_hashes_are_salted() -> None:
    password = passwords.generate_password()
    first, second = passwords.hash_generated_password(password), passwords.hash_generated_password(password)
    assert first != second
    assert passwords.verify_password(password, first) and passwords.verify_password(password, second)
    # The salt is part of the digest: another account's salt does not verify.
    swapped = "$".join([*first.split("$")[:2], second.split("$")[2]])
    assert not passwords.verify_password(password, swapped)


@pytest.mark.parametrize(
    "password",
    [
        "pw123",  # a human password: must stay bcrypt
        "a" * 21,  # fewer than 128 bits' worth of the alphabet
        "Correct-Horse-Battery-Staple-42-x",  # characters no generated password has
    ],
)
def test_fast_hash_refuses_what_was_not_generated(password: str) -> None:
    with pytest.raises(ValueError, match="generated passwords"):
        passwords.hash_generated_password(password)


def test_generated_digest_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[str, str]] = []
    original = hmac.compare_digest

    def recording(a: str, b: str) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    password = passwords.generate_password()
    hashed = passwords.hash_generated_password(password)
    assert passwords.verify_password(password, hashed)
    assert not passwords.verify_password("x" + password[1:], hashed)
    assert len(compared) == 2


def test_bcrypt_hashes_are_recognised() -> None:
    assert passwords.hash_scheme(PW123_2Y) is passwords.HashScheme.BCRYPT
    assert passwords.hash_scheme(passwords.hash_password("pw", cost=TEST_COST)) is passwords.HashScheme.BCRYPT


GENERATED_EXAMPLE = passwords.hash_generated_password("A" * 32)


@pytest.mark.parametrize(
    "hashed",
    [
        GENERATED_EXAMPLE.replace("-v1$", "-v2$", 1),  # a version this code does not know
        GENERATED_EXAMPLE.replace("sha256-salted", "sha512-salted", 1),
        GENERATED_EXAMPLE.removeprefix("sha256-salted-v1"),
        "$" + GENERATED_EXAMPLE,
        GENERATED_EXAMPLE.upper(),
        GENERATED_EXAMPLE[:-1],  # truncated digest
        GENERATED_EXAMPLE + "0",
        "sha256-salted-v1$$" + GENERATED_EXAMPLE.split("$")[2],  # no salt
        "{SHA}" + GENERATED_EXAMPLE.split("$")[2],
        "$1$salt$md5cryptvalue",
        "A" * 32,  # the password itself, stored in clear text
        None,
    ],
)
def test_unknown_or_malformed_schemes_never_verify(hashed: str | None) -> None:
    assert passwords.hash_scheme(hashed) is None
    assert passwords.verify_password("A" * 32, hashed) is False  # type: ignore[arg-type]
