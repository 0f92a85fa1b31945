"""Key secrets: shape, entropy, checksum, hashing, and what the store keeps of them."""

from __future__ import annotations

import hashlib
import math
import random
import re
import string
from urllib.parse import quote

import pytest

from apikeys import crypto, db
from apikeys.crypto import masked
from apikeys.models import ApiKey
from tests.conftest import bearer

URL = "/api/v1/org/api-keys"
BASE62 = set(string.digits + string.ascii_letters)
# Characters a one-character typo or forgery could bring in, besides base62 ones.
STRANGERS = ["_", "-", ".", " ", "+", "/", "=", "é", "\x00", "ß", "\u200b"]


def _random_part(secret: str) -> str:
    """What lies between the fixed prefix and the checksum."""
    return secret[len(crypto.PREFIX) : -crypto.CHECKSUM_LENGTH]


def _windows(text: str, width: int) -> set[str]:
    return {text[i : i + width] for i in range(len(text) - width + 1)}


def test_secret_has_the_fixed_recognizable_prefix():
    # Secret scanners are configured with this exact prefix: it must not drift.
    assert crypto.PREFIX == "evk_"
    assert all(crypto.generate_secret().startswith("evk_") for _ in range(50))


def test_secrets_carry_at_least_128_random_bits():
    generated = [crypto.generate_secret() for _ in range(300)]
    assert len(set(generated)) == len(generated)
    assert {len(secret) for secret in generated} == {crypto.SECRET_LENGTH}
    bodies = [_random_part(secret) for secret in generated]
    seen = set("".join(bodies))
    # 300 x 32 draws from base62 leave no symbol out (chance of a miss is about 1e-66).
    assert seen == BASE62
    assert len(bodies[0]) * math.log2(len(seen)) >= 128


def test_every_position_of_the_random_part_varies():
    bodies = [_random_part(crypto.generate_secret()) for _ in range(300)]
    for position in range(len(bodies[0])):
        # A fixed or low-entropy position would show few distinct symbols.
        assert len({body[position] for body in bodies}) > 40, position


def test_secrets_come_from_the_secrets_module_not_random():
    random.seed(1234)
    first = crypto.generate_secret()
    random.seed(1234)
    assert crypto.generate_secret() != first


def test_generated_secrets_are_well_formed():
    assert all(crypto.is_well_formed(crypto.generate_secret()) for _ in range(200))


def test_any_one_character_change_fails_the_check():
    for _ in range(5):
        secret = crypto.generate_secret()
        for position, original in enumerate(secret):
            for replacement in sorted(BASE62) + STRANGERS:
                if replacement == original:
                    continue
                changed = secret[:position] + replacement + secret[position + 1 :]
                assert not crypto.is_well_formed(changed), (position, replacement)


def test_dropping_adding_or_swapping_a_character_fails_the_check():
    secret = crypto.generate_secret()
    for position in range(len(secret)):
        assert not crypto.is_well_formed(secret[:position] + secret[position + 1 :])
        assert not crypto.is_well_formed(secret[:position] + "a" + secret[position:])
    for position in range(len(secret) - 1):
        swapped = (
            secret[:position] + secret[position + 1] + secret[position] + secret[position + 2 :]
        )
        if swapped != secret:
            assert not crypto.is_well_formed(swapped), position


@pytest.mark.parametrize(
    "candidate",
    ["", "evk_", "evk_" + "a" * 38, " " * crypto.SECRET_LENGTH, "é" * crypto.SECRET_LENGTH],
)
def test_shapes_that_are_not_keys_are_rejected(candidate):
    assert crypto.is_well_formed(candidate) is False


def test_non_ascii_in_the_checksum_is_rejected_not_raised():
    secret = crypto.generate_secret()
    assert crypto.is_well_formed(secret[:-1] + "é") is False
    assert crypto.is_well_formed(secret[:-3] + "\u00ff\u00fe\u00fd") is False


def test_hash_is_sha256_hex_of_the_secret():
    secret = crypto.generate_secret()
    digest = crypto.hash_secret(secret)
    assert digest == hashlib.sha256(secret.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert crypto.hash_secret(crypto.generate_secret()) != digest


def test_key_hint_is_the_prefix_and_the_last_four_characters():
    secret = crypto.generate_secret()
    hint = crypto.hint(secret)
    assert hint == f"evk_...{secret[-4:]}"
    # It fits its column and reveals nothing of the random part but what the spec allows.
    assert len(hint) <= ApiKey.key_hint.max_length
    assert not _windows(_random_part(secret), 5) & _windows(hint, 5)


def test_new_ids_are_opaque_url_safe_and_distinct():
    ids = [crypto.new_id("key") for _ in range(500)]
    assert len(set(ids)) == len(ids)
    for key_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", key_id)
        assert quote(key_id, safe="") == key_id
        assert len(key_id) <= ApiKey.id.max_length


def _tail(secret: str) -> str:
    """What follows the prefix: the random part and the checksum."""
    return secret[len(crypto.PREFIX) :]


@pytest.mark.parametrize(
    "form",
    [
        lambda secret: secret,
        lambda secret: f"leak {secret}",
        str.upper,
        lambda secret: "Evk_" + _tail(secret),
        lambda secret: crypto.PREFIX + _tail(secret)[:10],
        _tail,
        lambda secret: f"leak {_tail(secret)}!",
        lambda secret: "x" * 50 + _tail(secret) + "Y" * 50,
        lambda secret: "evk" + _tail(secret),
    ],
    ids=[
        "whole",
        "inside-a-name",
        "upper-cased",
        "mixed-case-prefix",
        "prefix-and-a-piece",
        "without-prefix",
        "without-prefix-between-words",
        "without-prefix-inside-a-longer-run",
        "without-the-underscore",
    ],
)
def test_contains_secret_finds_a_key_in_any_of_its_forms(form):
    for _ in range(20):
        assert crypto.contains_secret(form(crypto.generate_secret()))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "CI Pipeline",
        "Production Dashboard",
        "ingest-2026-prod-cp-eu-west-1",
        "Kevin's key",
        "evk",
        "evk-migration",
        "Q7hR2mXk9LpT4vNc8WzB1yFd6GsJ3uEa5KoHi0Vb",
        "0" * 128,
        "\u00e9" * 128,
    ],
)
def test_contains_secret_passes_ordinary_names(text):
    assert crypto.contains_secret(text) is False


def test_contains_secret_passes_random_alphanumerics_that_are_not_keys():
    # Each 40-character string has three 38-character windows; a window passes the checksum
    # by chance once in 62**6, so a thousand strings all pass with certainty but for 5e-8.
    draw = random.Random(2026)
    alphabet = string.ascii_letters + string.digits
    for _ in range(1000):
        text = "".join(draw.choice(alphabet) for _ in range(40))
        assert crypto.contains_secret(text) is False, text


def test_contains_secret_refuses_whatever_the_logs_mask():
    # The same prefix rule as the logs: nothing is accepted that a log line would redact.
    samples = ["evk_", "EVK_", "xEvK_y", "ev\u212a_x", crypto.hint(crypto.generate_secret())]
    for text in samples:
        assert masked(text) != text
        assert crypto.contains_secret(text)


def test_a_key_without_its_prefix_needs_its_whole_checksum():
    # A body alone, or a checksum cut short, holds nothing the checksum can vouch for.
    secret = crypto.generate_secret()
    assert not crypto.contains_secret(_tail(secret)[:-1])
    assert not crypto.contains_secret(_random_part(secret))
    assert not crypto.contains_secret(_tail(secret).swapcase())


def test_an_id_of_a_kind_is_what_new_id_gives_for_it_and_nothing_else():
    key_id = crypto.new_id("key")
    body = key_id[len("key_") :]

    assert crypto.is_id(key_id, "key")
    assert crypto.is_id(crypto.new_id("evt"), "evt")
    for other in (
        "evt_" + body,  # another kind
        body,
        "key" + body,
        key_id[:-1],
        key_id + "A",
        key_id[:-1] + "-",
        key_id[:-1] + "\uff15",  # a fullwidth digit
        "key_x",
        "",
    ):
        assert not crypto.is_id(other, "key"), other


def _create(client, admin, name):
    response = client.post(
        URL, headers=bearer(admin.key), json={"name": name, "scopes": ["read:billing"]}
    )
    assert response.status_code == 201
    return response.json


def test_api_secrets_are_well_formed_and_ids_unrelated_to_them(client, admin):
    for number in range(10):
        created = _create(client, admin, f"key {number}")
        secret, key_id = created["key"], created["id"]
        assert crypto.is_well_formed(secret)
        assert re.fullmatch(r"[A-Za-z0-9_-]+", key_id)
        assert not _windows(key_id, 5) & _windows(secret, 5)
        assert not _windows(key_id, 5) & _windows(crypto.hash_secret(secret), 5)
        listed = client.get(f"{URL}/{key_id}", headers=bearer(admin.key)).json
        assert listed["key_hint"] == crypto.hint(secret)
        assert secret not in str(listed)


@pytest.mark.both_databases
def test_store_keeps_only_the_hash(client, admin):
    created = [_create(client, admin, f"stored {number}") for number in range(3)]
    rows = list(ApiKey.select().tuples())
    stored = " ".join(str(value) for row in rows for value in row)
    for key in [*created, {"key": admin.key}]:
        assert crypto.hash_secret(key["key"]) in stored
        assert key["key"] not in stored
        assert _random_part(key["key"]) not in stored


def test_sqlite_file_holds_no_secret(client, admin, tmp_path):
    created = [_create(client, admin, f"on disk {number}") for number in range(3)]
    secrets_ = [key["key"] for key in created] + [admin.key]
    db.close_all()
    # The main file and the WAL: a write may still sit in the latter.
    files = sorted(tmp_path.glob("apikeys.db*"))
    assert files
    contents = b"".join(path.read_bytes() for path in files)
    for secret in secrets_:
        assert crypto.hash_secret(secret).encode() in contents
        assert secret.encode() not in contents
        assert _random_part(secret).encode() not in contents
        assert secret.encode("utf-16-le") not in contents


def test_masked_bare_masks_every_key_body_and_checksum_and_nothing_else():
    first, second = (crypto.generate_secret() for _ in range(2))
    bare = second[len(crypto.PREFIX) :]
    text = f"/a/{bare}/b?{first}&c=ingest-2026-prod-cp-eu-west-1"
    assert (
        crypto.masked_bare(text) == "/a/[redacted]/b?evk_[redacted]&c=ingest-2026-prod-cp-eu-west-1"
    )
    plain = "x" * 40 + "/" + "Ab1" * 30
    assert crypto.masked_bare(plain) == plain
