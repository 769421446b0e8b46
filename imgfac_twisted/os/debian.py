"""Debian and Ubuntu: debian-installer installs driven by a generated preseed."""

from __future__ import annotations

from typing import Any

from ..registry import PluginEnvironment
from ..template import Template
from . import preseed
from .trees import BootFiles, debian_iso_paths, debian_tree_paths
from .vm_install import VMInstaller


class DebianFamily(VMInstaller):
    """Installs Debian or Ubuntu from a mirror or an ISO with ``/preseed.cfg`` in the initrd."""

    answer_file = "preseed.cfg"

    def __init__(self, environment: PluginEnvironment, name: str, **options: Any) -> None:
        super().__init__(environment, **options)
        self.name = name
        self.os_names = (name.lower(),)

    def tree_paths(self, template: Template) -> list[BootFiles]:
        return debian_tree_paths(template)

    def iso_paths(self, template: Template) -> list[BootFiles]:
        return debian_iso_paths(template)

    def answers(self, template: Template, tree_url: str | None) -> str:
        return preseed.preseed(template, tree_url)

    def kernel_arguments(self, template: Template, tree_url: str | None) -> str:
        return preseed.kernel_arguments(template)


def debian(environment: PluginEnvironment, **options: Any) -> DebianFamily:
    """The ``debian`` entry point."""
    return DebianFamily(environment, "Debian", **options)


def ubuntu(environment: PluginEnvironment, **options: Any) -> DebianFamily:
    """The ``ubuntu`` entry point."""
    return DebianFamily(environment, "Ubuntu", **options)
