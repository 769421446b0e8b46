"""Where the OpenStack provider pushes: clouds defined by files in ``provider_dir``.

One provider per JSON file, ``type`` ``openstack``::

    {"name": "os-lab", "type": "openstack", "auth_url": "https://keystone.example:5000/v3",
     "region": "RegionOne", "interface": "public", "ca_bundle": "/etc/pki/os-lab.pem"}

Required: ``name``, ``type``, ``auth_url`` (Keystone v3: every push
authenticates there).  Optional: ``region`` (the catalog region of Glance;
any when absent), ``interface`` (``public``, ``internal`` or ``admin``;
default ``public``), ``ca_bundle`` (a CA file for HTTPS), ``image_endpoint``
(a Glance URL used instead of the catalog's).  Keys starting with ``_`` are
comments.  Files of another ``type`` belong to other plug-ins.  Every
mistake of every file is reported together in one ConfigError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from . import definitions

DEFINITION_TYPE = "openstack"
INTERFACES = ("public", "internal", "admin")
_REGION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_REQUIRED = ("name", "type", "auth_url")
_OPTIONAL = ("region", "interface", "ca_bundle", "image_endpoint")


@dataclass(frozen=True)
class Cloud:
    """One OpenStack provider: its Keystone, where Glance is found, and how to verify TLS."""

    name: str
    auth_url: str
    region: str | None = None
    interface: str = "public"
    ca_bundle: str | None = None
    image_endpoint: str | None = None
    source: str | None = None


def load_clouds(provider_dir: str) -> dict[str, Cloud]:
    """The OpenStack clouds defined by ``*.json`` files in ``provider_dir`` (none if it does not exist)."""
    return definitions.load_definitions(provider_dir, parse_cloud)


def parse_cloud(document: Any, source: str | None = None) -> Cloud | None:
    """The Cloud a definition describes; None for another plug-in's type; ValueError saying what is wrong."""
    if not isinstance(document, dict) or document.get("type") != DEFINITION_TYPE:
        return None
    mistakes = definitions.key_mistakes(document, _REQUIRED, _OPTIONAL)
    if mistakes:
        raise ValueError("; ".join(mistakes))
    mistakes = _value_mistakes(document)
    if mistakes:
        raise ValueError("; ".join(mistakes))
    return Cloud(
        name=document["name"],
        auth_url=document["auth_url"],
        region=document.get("region"),
        interface=document.get("interface", "public"),
        ca_bundle=document.get("ca_bundle"),
        image_endpoint=document.get("image_endpoint"),
        source=source,
    )


def _value_mistakes(document: dict[str, str]) -> list[str]:
    mistakes = definitions.name_mistakes(document["name"])
    if "region" in document and not _REGION.match(document["region"]):
        mistakes.append(f"region {document['region']!r} must be letters, digits, '.', '_' or '-' (e.g. RegionOne)")
    if document.get("interface", "public") not in INTERFACES:
        mistakes.append(f"interface {document['interface']!r} must be one of {', '.join(INTERFACES)}")
    mistakes += definitions.url_mistakes(document, ("auth_url", "image_endpoint"))
    mistakes += definitions.ca_bundle_mistakes(document)
    return mistakes
