"""Provider accounts: named cloud accounts whose credentials the daemon holds (the Conductor API pushes to them).

The config's ``provider_accounts`` maps an account name to the provider it
pushes to and a credentials XML file in the factory's form::

    "provider_accounts": {
        "ec2-acc": {"provider": "ec2-us-east-1", "credentials": "/etc/imagefactory/ec2-acc.xml"},
        "mock-acc": {"provider": "mock", "credentials": "/etc/imagefactory/mock-acc.xml"}
    }

Every file is read once, at start-up, through the provider's own (hardened)
credentials parser; the credentials then live in memory only and are never
logged or shown.  Every mistake of every account is reported in one
ConfigError, each naming its account, so the daemon does not start with
half its accounts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, ImageFactoryError
from ..providers import MAX_CREDENTIALS_BYTES, Credentials


@dataclass(frozen=True)
class ProviderAccount:
    """A named account: where it pushes, the plug-in that serves it, and its credentials (never shown)."""

    name: str
    #: The provider name pushes go to (``ec2-us-east-1``, ``mock``, a ``provider_dir`` entry).
    provider: str
    #: The provider plug-in serving it (``ec2``, ``mock``): the target its images must have.
    provider_type: str
    credentials: Credentials = field(repr=False)


def load_accounts(
    accounts: Mapping[str, Mapping[str, str]],
    provider_type: Callable[[str], str | None],
    parser_of: Callable[[str], Any],
) -> dict[str, ProviderAccount]:
    """The configured accounts, each checked: its provider known, its credentials file readable and valid.

    ``provider_type`` names the plug-in serving a provider name (None when
    none does); ``parser_of`` gives the plug-in serving a provider name (with
    ``parse_credentials``).
    Blocking (reads files): call it at start-up, before the reactor runs.
    """
    loaded: dict[str, ProviderAccount] = {}
    problems: list[str] = []
    for name, settings in sorted(accounts.items()):
        try:
            loaded[name] = _load_one(name, settings, provider_type, parser_of)
        except ImageFactoryError as error:
            problems.append(f"provider account {name!r}: {error.message}")
    if problems:
        raise ConfigError("invalid provider accounts:\n  " + "\n  ".join(problems))
    return loaded


def _load_one(
    name: str, settings: Mapping[str, str], provider_type: Callable[[str], str | None], parser_of: Callable[[str], Any]
) -> ProviderAccount:
    provider = settings["provider"]
    kind = provider_type(provider)
    if kind is None:
        raise ConfigError(f"unknown provider {provider!r}")
    path = settings["credentials"]
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_CREDENTIALS_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"credentials file {path} cannot be read: {error.strerror}") from None
    try:
        credentials = parser_of(provider).parse_credentials(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"credentials file {path} is not UTF-8 text") from None
    except ImageFactoryError as error:
        raise ConfigError(f"credentials file {path}: {error.message}") from None
    return ProviderAccount(name=name, provider=provider, provider_type=kind, credentials=credentials)
