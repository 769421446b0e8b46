"""Plug-in registries: targets, providers and operating systems, found by entry point.

A package adds a plug-in by declaring an entry point in one of the groups
below; the object it names is called with the daemon's Config and must
return the plug-in.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from .config import Config

TARGETS_GROUP = "imgfac_twisted.targets"
PROVIDERS_GROUP = "imgfac_twisted.providers"


def load_plugins(group: str, config: Config) -> dict[str, Any]:
    """Every plug-in of ``group``, by its entry point name."""
    plugins = {}
    for entry_point in entry_points(group=group):
        plugins[entry_point.name] = entry_point.load()(config)
    return plugins
