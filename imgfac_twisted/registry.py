"""Plug-in registries: operating systems, targets and providers, found by entry point.

A package adds a plug-in by declaring an entry point in one of the groups
below; the object it names is called with a PluginEnvironment and must
return the plug-in.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from .config import Config
from .doors import IDoor

if TYPE_CHECKING:
    from .virt.connection import LibvirtConnection

OS_GROUP = "imgfac_twisted.os"
TARGETS_GROUP = "imgfac_twisted.targets"
PROVIDERS_GROUP = "imgfac_twisted.providers"


@dataclass(frozen=True)
class PluginEnvironment:
    """What a plug-in may use: the settings, the reactor, and the door for cloud SDK calls."""

    config: Config
    reactor: Any
    #: A bounded thread pool for blocking SDK calls (boto3 and the like).
    cloud_door: IDoor
    #: The daemon's door for blocking file work (copying, appending to an initrd, reading ISOs).
    disk_door: IDoor | None = None
    #: The daemon's libvirt connection (to ``config.libvirt_uri``), for OS installs.
    libvirt: LibvirtConnection | None = None


def load_plugins(group: str, environment: PluginEnvironment) -> dict[str, Any]:
    """Every plug-in of ``group``, by its entry point name."""
    return {entry_point.name: entry_point.load()(environment) for entry_point in entry_points(group=group)}
