"""Fedora, RHEL and CentOS: anaconda installs driven by a generated kickstart."""

from __future__ import annotations

from typing import Any

from ..registry import PluginEnvironment
from ..template import Template
from . import kickstart
from .trees import BootFiles, fedora_iso_paths, fedora_tree_paths
from .vm_install import VMInstaller


class RedHatFamily(VMInstaller):
    """Installs a Fedora-family OS from a URL tree or an ISO with ``/ks.cfg`` in the initrd."""

    answer_file = "ks.cfg"

    def __init__(self, environment: PluginEnvironment, name: str, os_names: tuple[str, ...], **options: Any) -> None:
        super().__init__(environment, **options)
        self.name = name
        self.os_names = os_names

    def handles(self, template: Template) -> bool:
        """The family's names, and Oz's ``RHEL-7``-style names (major release in the name)."""
        os_name = template.os_name.strip().lower()
        return os_name in self.os_names or (os_name.split("-")[0] in self.os_names and os_name[-1:].isdigit())

    def tree_paths(self, template: Template) -> list[BootFiles]:
        return fedora_tree_paths()

    def iso_paths(self, template: Template) -> list[BootFiles]:
        return fedora_iso_paths()

    def answers(self, template: Template, tree_url: str | None) -> str:
        return kickstart.kickstart(template, tree_url)

    def kernel_arguments(self, template: Template, tree_url: str | None) -> str:
        return kickstart.kernel_arguments(template, tree_url)


def fedora(environment: PluginEnvironment, **options: Any) -> RedHatFamily:
    """The ``fedora`` entry point."""
    return RedHatFamily(environment, "Fedora", ("fedora",), **options)


def rhel(environment: PluginEnvironment, **options: Any) -> RedHatFamily:
    """The ``rhel`` entry point (``RHEL``, ``RHEL-8``, ``RedHat``...)."""
    return RedHatFamily(environment, "RHEL", ("rhel", "redhat"), **options)


def centos(environment: PluginEnvironment, **options: Any) -> RedHatFamily:
    """The ``centos`` entry point (``CentOS``, ``CentOS-Stream``...)."""
    return RedHatFamily(environment, "CentOS", ("centos", "centos-stream"), **options)
