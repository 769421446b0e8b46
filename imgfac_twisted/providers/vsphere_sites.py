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

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import definitions

DEFINITION_TYPE = "vsphere"
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
    return definitions.load_definitions(provider_dir, parse_site)


def parse_site(document: Any, source: str | None = None) -> Site | None:
    """The Site a definition describes; None for another plug-in's type; ValueError saying what is wrong."""
    if not isinstance(document, dict) or document.get("type") != DEFINITION_TYPE:
        return None
    mistakes = definitions.key_mistakes(document, _REQUIRED, _OPTIONAL) or _value_mistakes(document)
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
    mistakes = definitions.name_mistakes(document["name"])
    for key in ("datacenter", "datastore", "cluster", "folder", "network"):
        value = document.get(key)
        if value is not None and (not value.strip() or len(value) > MAX_INVENTORY_NAME or not value.isprintable()):
            mistakes.append(f"{key} must be a printable name of 1 to {MAX_INVENTORY_NAME} characters")
    mistakes += definitions.url_mistakes(document, ("url",))
    mistakes += definitions.ca_bundle_mistakes(document)
    return mistakes
