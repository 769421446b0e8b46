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

import json
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError

DEFINITION_TYPE = "openstack"
MAX_DEFINITION_BYTES = 64 * 1024
INTERFACES = ("public", "internal", "admin")
#: Names other plug-ins own.
RESERVED_NAMES = frozenset({"mock"})
RESERVED_PREFIXES = ("ec2-",)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
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
    try:
        names = sorted(os.listdir(provider_dir))
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise ConfigError(f"provider_dir {provider_dir} cannot be read: {error.strerror}") from None
    problems: list[str] = []
    found: dict[str, Cloud] = {}
    for file_name in names:
        path = os.path.join(provider_dir, file_name)
        if not file_name.endswith(".json") or file_name.startswith(".") or not os.path.isfile(path):
            continue
        try:
            cloud = parse_cloud(_read(path), path)
        except ValueError as error:
            problems.append(f"provider definition {path}: {error}")
            continue
        if cloud is None:
            continue
        if cloud.name in found:
            problems.append(
                f"provider definition {path}: name {cloud.name!r} is already defined by {found[cloud.name].source}"
            )
        else:
            found[cloud.name] = cloud
    if problems:
        raise ConfigError("; ".join(problems))
    return found


def _read(path: str) -> Any:
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_DEFINITION_BYTES + 1)
    except OSError as error:
        raise ValueError(f"cannot be read: {error.strerror}") from None
    if len(raw) > MAX_DEFINITION_BYTES:
        raise ValueError(f"is larger than {MAX_DEFINITION_BYTES} bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        # Not ours to report: the ec2 plug-in reads the same folder and names the parse error.
        return None


def parse_cloud(document: Any, source: str | None = None) -> Cloud | None:
    """The Cloud a definition describes; None for another plug-in's type; ValueError saying what is wrong."""
    if not isinstance(document, dict) or document.get("type") != DEFINITION_TYPE:
        return None
    mistakes = []
    missing = [key for key in _REQUIRED if key not in document]
    if missing:
        mistakes.append(f"lacks {', '.join(repr(key) for key in missing)}")
    unknown = sorted(key for key in document if key not in _REQUIRED + _OPTIONAL and not key.startswith("_"))
    if unknown:
        mistakes.append(f"unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(_REQUIRED + _OPTIONAL)})")
    mistakes += [
        f"{key!r} must be a string" for key in _REQUIRED + _OPTIONAL if not isinstance(document.get(key, ""), str)
    ]
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
    mistakes = []
    name = document["name"]
    if not _NAME.match(name):
        mistakes.append(
            f"name {name!r} must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    elif name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
        mistakes.append(f"name {name!r} is a built-in provider's name (or prefix)")
    if "region" in document and not _REGION.match(document["region"]):
        mistakes.append(f"region {document['region']!r} must be letters, digits, '.', '_' or '-' (e.g. RegionOne)")
    if document.get("interface", "public") not in INTERFACES:
        mistakes.append(f"interface {document['interface']!r} must be one of {', '.join(INTERFACES)}")
    for key in ("auth_url", "image_endpoint"):
        if key in document:
            problem = _url_problem(document[key])
            if problem:
                shown = "" if "@" in document[key] else f" {document[key]!r}"
                mistakes.append(f"{key}{shown} {problem}")
    if "ca_bundle" in document and not os.path.isfile(document["ca_bundle"]):
        mistakes.append(f"ca_bundle {document['ca_bundle']!r} is not a file")
    return mistakes


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises on a bad port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "names no host"
    if parts.username or parts.password:
        return "must not hold credentials (they go in the push request's credentials XML)"
    return None
