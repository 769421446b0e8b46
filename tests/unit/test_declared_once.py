"""Things declared once: each option in Config's fields, and the one redaction helper."""

from __future__ import annotations

import dataclasses

import pytest

from imgfac_twisted.config import OPTIONS, Config, _option_of, setting
from imgfac_twisted.redaction import redact_url, scrub


def test_options_are_config_fields_in_order_with_their_defaults() -> None:
    """OPTIONS is made from Config: same names in the same order, and each option's default is Config()'s."""
    defaults = Config()
    assert [option.name for option in OPTIONS] == [field.name for field in dataclasses.fields(Config)]
    for option in OPTIONS:
        assert option.default == getattr(defaults, option.name), option.name
        assert option.optional is (option.default is None), option.name


def test_secret_options_stay_out_of_the_config_repr() -> None:
    """A secret option (OAuth secrets, the AMQP URL) never shows in Config's repr."""
    config = Config(
        clients={"key": "s3cret-value"},
        amqp_url="amqp://u:pw-in-url@h/%2F",
        store_url="postgresql://u:pg-pw@h/db",
        image_store_secret_access_key="s3-secret-key",
        job_key="fernet-key-never-shown",
    )
    assert {option.name for option in OPTIONS if option.secret} == {
        "clients",
        "amqp_url",
        "conductor_users",
        "store_url",
        "image_store_secret_access_key",
        "job_key",
    }
    for secret in ("s3cret-value", "pw-in-url", "pg-pw", "s3-secret-key", "fernet-key-never-shown"):
        assert secret not in repr(config) and secret not in str(config.redacted())


def test_an_option_whose_kind_cannot_be_told_must_name_it() -> None:
    """A field of a type with no obvious kind, declared without one, is refused (not guessed)."""

    @dataclasses.dataclass(frozen=True)
    class Odd:
        ratio: complex = setting(1j, "A kind the checker does not know.")

    with pytest.raises(TypeError, match="give setting\\(\\) a kind"):
        _option_of(dataclasses.fields(Odd)[0])


def test_scrub_hides_the_longest_secret_first() -> None:
    """A secret that contains another is hidden whole, not left half visible."""
    assert scrub("key abc and abcdef", ["abc", "abcdef", ""]) == "key *** and ***"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://user:pw@host:5672/%2F", "amqp://user:***@host:5672/%2F"),
        ("http://mirror.example/debian", "http://mirror.example/debian"),
        ("https://user@host/path", "https://user@host/path"),
    ],
)
def test_redact_url_hides_only_the_password(url: str, shown: str) -> None:
    """The user info's password becomes *** and nothing else changes."""
    assert redact_url(url) == shown
