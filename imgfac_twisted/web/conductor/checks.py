"""What the Conductor's write requests ask for, read from their XML bodies and checked before anything starts.

A new image (``<targets>`` and ``<tdl>``), an import (an image already on a
provider: the 2012 form names a provider account, the 2011 form a target
and a provider) and a push (one object, one or more provider accounts).
Each refusal is the Conductor ``<error>`` that names what is missing or
unknown; nothing here touches the store or the dispatcher.
"""

from __future__ import annotations

from typing import NamedTuple

from lxml import etree

from ...jobs.accounts import ProviderAccount
from .bodies import names, text
from .errors import incorrect, insufficient, not_found

__all__ = ["ID_PARAMETERS", "ImportAsked", "build_asked", "import_asked", "push_asked"]

#: What a push may name, one of them: a target image, a build's or an image's latest build's target images.
ID_PARAMETERS = ("target_image_id", "build_id", "image_id")


class ImportAsked(NamedTuple):
    """An import's arguments, as ``Importer.import_image`` takes them."""

    target: str
    provider: str
    identifier: str
    descriptor: str
    account_identifier: str | None


def build_asked(root: etree._Element, known_targets: list[str]) -> tuple[str, str]:
    """A new image's (targets, TDL template); each target named must be one this daemon builds."""
    targets, template = text(root, "targets"), text(root, "tdl")
    missing = [name for name, value in (("targets", targets), ("tdl", template)) if not value]
    if missing:
        raise insufficient(
            f"<image> needs {' and '.join(f'<{name}>' for name in missing)} "
            "(a comma-separated list of targets, and the TDL template escaped or in CDATA)"
        )
    unknown = [name for name in names(targets) if name not in known_targets]
    if unknown:
        raise not_found(
            "TargetNotFound",
            f"unknown target {', '.join(map(repr, unknown))}: known targets are {', '.join(known_targets)}",
        )
    return targets, template


def import_asked(root: etree._Element, accounts: dict[str, ProviderAccount]) -> ImportAsked:
    """An import: the 2012 form names an account, the 2011 form a target and provider."""
    identifier, descriptor = text(root, "target_identifier"), text(root, "image_descriptor")
    account_name = text(root, "provider_account_name")
    if account_name:
        account = accounts.get(account_name)
        if account is None:
            raise not_found("ProviderAccountNotFound", f"no provider account {account_name!r}")
        return ImportAsked(
            account.provider_type, account.provider, identifier, descriptor, account.credentials.account_identifier
        )
    target, provider = text(root, "target_name"), text(root, "provider_name")
    if not (target and provider):
        raise insufficient(
            "an import needs <target_identifier> and either <provider_account_name> "
            "or <target_name> and <provider_name>"
        )
    return ImportAsked(target, provider, identifier, descriptor, None)


def push_asked(root: etree._Element, accounts: dict[str, ProviderAccount]) -> tuple[str, str, list[ProviderAccount]]:
    """A push: (which ID_PARAMETERS it names, the id, the provider accounts to push to)."""
    given = {name: text(root, name) for name in ID_PARAMETERS if text(root, name)}
    account_names = names(text(root, "provider_account"))
    if not given or not account_names:
        needs = [] if given else ["one of <target_image_id>, <build_id> or <image_id>"]
        needs += [] if account_names else ["<provider_account> (a comma-separated list of account names)"]
        raise insufficient(f"<provider_image> needs {' and '.join(needs)}")
    if len(given) > 1:
        raise incorrect(
            f"<provider_image> must name one of <target_image_id>, <build_id> or <image_id>, "
            f"not {' and '.join(f'<{name}>' for name in given)}"
        )
    unknown = [name for name in account_names if name not in accounts]
    if unknown:
        raise not_found(
            "ProviderAccountNotFound",
            f"no provider account {', '.join(map(repr, unknown))}: "
            f"known accounts are {', '.join(sorted(accounts)) or 'none'}",
        )
    ((kind, object_id),) = given.items()
    return kind, object_id, [accounts[name] for name in account_names]
