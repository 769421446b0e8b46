"""Where the installer kernel and initrd are in an install tree or on an ISO.

A tree's ``.treeinfo`` (section ``images-<arch>``, keys ``kernel`` and
``initrd``) is believed first; without one, each family has standard paths.
Paths here are relative to the tree's root (or the ISO's).
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass

from ..errors import ImageFactoryError
from ..template import Template

TREEINFO = ".treeinfo"

#: Debian and Ubuntu release codenames by version.
DEBIAN_CODENAMES = {"9": "stretch", "10": "buster", "11": "bullseye", "12": "bookworm", "13": "trixie"}
UBUNTU_CODENAMES = {"18.04": "bionic", "20.04": "focal", "22.04": "jammy", "24.04": "noble"}

#: Debian's architecture names for the template's ``<arch>``.
DEBIAN_ARCHES = {
    "x86_64": "amd64",
    "i386": "i386",
    "aarch64": "arm64",
    "ppc64le": "ppc64el",
    "s390x": "s390x",
    "armv7l": "armhf",
}


class UnknownRelease(ImageFactoryError):
    """The template's OS version names no release this factory knows."""


@dataclass(frozen=True)
class BootFiles:
    """The installer kernel and initrd, as paths relative to the tree or ISO root."""

    kernel: str
    initrd: str


def _clean(path: str) -> str:
    """A relative path without ``..`` steps, so a tree cannot point outside itself."""
    parts = [p for p in path.strip().split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ImageFactoryError(f"{TREEINFO} names an unusable path {path!r}")
    return "/".join(parts)


def from_treeinfo(text: str, arch: str) -> BootFiles | None:
    """The kernel and initrd a ``.treeinfo`` names for ``arch``, or None if it names none."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error as error:
        raise ImageFactoryError(f"{TREEINFO} cannot be read: {str(error).splitlines()[0]}") from None
    section = f"images-{arch}"
    if not parser.has_option(section, "kernel") or not parser.has_option(section, "initrd"):
        return None
    return BootFiles(_clean(parser.get(section, "kernel")), _clean(parser.get(section, "initrd")))


def major_version(version: str) -> int | None:
    """``"39"`` -> 39, ``"7.9"`` -> 7, ``"8-stream"`` -> 8; None for ``"rawhide"`` and the like."""
    match = re.match(r"\s*(\d+)", version)
    return int(match.group(1)) if match else None


def fedora_tree_paths() -> list[BootFiles]:
    """Where Fedora, RHEL and CentOS trees keep the PXE kernel and initrd."""
    return [BootFiles("images/pxeboot/vmlinuz", "images/pxeboot/initrd.img")]


def fedora_iso_paths() -> list[BootFiles]:
    """Where Fedora-family ISOs keep them (pxeboot on newer, isolinux on older)."""
    return fedora_tree_paths() + [BootFiles("isolinux/vmlinuz", "isolinux/initrd.img")]


def debian_codename(template: Template) -> str:
    """The release codename of a Debian or Ubuntu template (``12`` -> ``bookworm``)."""
    version = template.os_version.strip().lower()
    table = UBUNTU_CODENAMES if template.os_name.lower() == "ubuntu" else DEBIAN_CODENAMES
    if version in table.values():
        return version
    key = version if template.os_name.lower() == "ubuntu" else version.split(".")[0]
    if key not in table:
        known = ", ".join(f"{v} ({c})" for v, c in table.items())
        raise UnknownRelease(f"unknown {template.os_name} version {template.os_version!r}; known: {known}")
    return table[key]


def debian_arch(template: Template) -> str:
    """The Debian name of the template's architecture (``x86_64`` -> ``amd64``)."""
    return DEBIAN_ARCHES[template.os_arch]


def debian_tree_paths(template: Template) -> list[BootFiles]:
    """The netboot installer's kernel and initrd on a Debian or Ubuntu mirror."""
    codename, arch = debian_codename(template), debian_arch(template)
    flavour = "ubuntu" if template.os_name.lower() == "ubuntu" else "debian"
    base = f"dists/{codename}/main/installer-{arch}/current"
    images = ["images"] if flavour == "debian" else ["legacy-images", "images"]
    return [
        BootFiles(
            f"{base}/{folder}/netboot/{flavour}-installer/{arch}/linux",
            f"{base}/{folder}/netboot/{flavour}-installer/{arch}/initrd.gz",
        )
        for folder in images
    ]


def debian_iso_paths(template: Template) -> list[BootFiles]:
    """Where Debian and Ubuntu ISOs keep the installer (text mode first)."""
    arch = debian_arch(template)
    folder = {"amd64": "install.amd", "i386": "install.386", "arm64": "install.a64"}.get(arch, "install")
    return [
        BootFiles(f"{folder}/vmlinuz", f"{folder}/initrd.gz"),
        BootFiles("install/vmlinuz", "install/initrd.gz"),
        BootFiles(
            f"install/netboot/ubuntu-installer/{arch}/linux", f"install/netboot/ubuntu-installer/{arch}/initrd.gz"
        ),
    ]
