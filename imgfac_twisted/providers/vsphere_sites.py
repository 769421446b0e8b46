"""Where the vSphere provider pushes: vCenters defined by files in ``provider_dir``.

One provider per JSON file, ``type`` ``vsphere``, names as vCenter shows them::

    {"name": "vc-lab", "type": "vsphere", "url": "https://vcenter.example/sdk",
     "datacenter": "DC0", "datastore": "LocalDS_0", "cluster": "DC0_C0",
     "folder": "vm", "network": "VM Network", "ca_bundle": "/etc/pki/vc-lab.pem"}

Required: ``name``, ``type``, ``url`` (the SDK URL; ``https`` unless told
otherwise), ``datacenter``, ``datastore``, ``cluster``.  Optional:
``folder`` (a VM folder path under the datacenter's ``vm`` folder, default
``vm`` itself), ``network`` (checked to exist; mapped to the descriptor's
networks, if it names any), ``ca_bundle`` (a CA file that verifies the
vCenter's certificate; the system's CAs when absent).  Keys starting with
``_`` are comments; files of another ``type`` belong to other plug-ins.
Every mistake of every file is reported together in one ConfigError.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError

DEFINITION_TYPE = "vsphere"
MAX_DEFINITION_BYTES = 64 * 1024
#: Names other plug-ins own.
RESERVED_NAMES = frozenset({"mock"})
RESERVED_PREFIXES = ("ec2-",)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_REQUIRED = ("name", "type", "url", "datacenter", "datastore", "cluster")
_OPTIONAL = ("folder", "network", "ca_bundle")
#: Inventory names vCenter allows are long; these bound what a file may hold.
MAX_INVENTORY_NAME = 255


@dataclass(frozen=True)
class Site:
    """One vSphere provider: its vCenter, where imported templates go, and how to verify TLS."""

    name: str
    url: str
    datacenter: str
    datastore: str
    cluster: str
    folder: str = "vm"
    network: str | None = None
    ca_bundle: str | None = None
    source: str | None = None

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)


def load_sites(provider_dir: str) -> dict[str, Site]:
    """The vSphere providers defined by ``*.json`` files in ``provider_dir`` (none if it does not exist)."""
    try:
        names = sorted(os.listdir(provider_dir))
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise ConfigError(f"provider_dir {provider_dir} cannot be read: {error.strerror}") from None
    problems: list[str] = []
    found: dict[str, Site] = {}
    for file_name in names:
        path = os.path.join(provider_dir, file_name)
        if not file_name.endswith(".json") or file_name.startswith(".") or not os.path.isfile(path):
            continue
        try:
            site = parse_site(_read(path), path)
        except ValueError as error:
            problems.append(f"provider definition {path}: {error}")
            continue
        if site is None:
            continue
        if site.name in found:
            problems.append(
                f"provider definition {path}: name {site.name!r} is already defined by {found[site.name].source}"
            )
        else:
            found[site.name] = site
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


def parse_site(document: Any, source: str | None = None) -> Site | None:
    """The Site a definition describes; None for another plug-in's type; ValueError saying what is wrong."""
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
    if not mistakes:
        mistakes = _value_mistakes(document)
    if mistakes:
        raise ValueError("; ".join(mistakes))
    return Site(
        name=document["name"],
        url=document["url"],
        datacenter=document["datacenter"],
        datastore=document["datastore"],
        cluster=document["cluster"],
        folder=document.get("folder", "vm").strip("/") or "vm",
        network=document.get("network"),
        ca_bundle=document.get("ca_bundle"),
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
    for key in ("datacenter", "datastore", "cluster", "folder", "network"):
        value = document.get(key)
        if value is not None and (not value.strip() or len(value) > MAX_INVENTORY_NAME or not value.isprintable()):
            mistakes.append(f"{key} must be a printable name of 1 to {MAX_INVENTORY_NAME} characters")
    problem = _url_problem(document["url"])
    if problem:
        shown = "" if "@" in document["url"] else f" {document['url']!r}"
        mistakes.append(f"url{shown} {problem}")
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
        return "must be an https:// (or http://) URL"
    if not parts.hostname:
        return "names no host"
    if parts.username or parts.password:
        return "must not hold credentials (they go in the push request's credentials XML)"
    return None
