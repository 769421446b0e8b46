"""Finding the provider plug-in that serves a provider name, and naming them all to a client."""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import InvalidRequest
from ..providers import Provider


def plugin_serving(providers: Mapping[str, Provider], provider_name: str) -> str | None:
    """The name of the provider plug-in that serves ``provider_name`` (``ec2``, ``mock``), or None."""
    for plugin_name, provider in sorted(providers.items()):
        if provider.serves(provider_name):
            return plugin_name
    return None


def serving(providers: Mapping[str, Provider], provider_name: str) -> Provider:
    """The provider plug-in serving ``provider_name``; InvalidRequest naming the usable ones when none does."""
    for provider in providers.values():
        if provider.serves(provider_name):
            return provider
    raise InvalidRequest(f"unknown provider {provider_name!r}: known providers are {provider_names(providers)}")


def provider_names(providers: Mapping[str, Provider]) -> str:
    """The provider names a client may use, the AWS regions summed up."""
    names: list[str] = []
    for _, provider in sorted(providers.items()):
        listed = provider.provider_names()
        regions = [n for n in listed if n.startswith("ec2-")]
        names += [n for n in listed if not n.startswith("ec2-")]
        if regions:
            names.append(f"ec2-<region> ({len(regions)} AWS regions, e.g. {regions[0]})")
    return ", ".join(names)
