"""Preseed files for Debian and Ubuntu installs (debian-installer), generated from a template.

The preseed answers every question: the mirror is the template's URL (split
into protocol, host and directory), the suite is the release codename, the
one disk is partitioned with the ``atomic`` recipe, the template's packages
are added with ``pkgsel/include``, its files and commands run from
``preseed/late_command`` in the installed system, whose last step prints the
package manifest on the serial console (see answers.py), and the installer
powers the guest off at the end (``debian-installer/exit/poweroff``), which
is how the factory knows the install finished.  The installed system's
kernel command line gets a serial console
(``debian-installer/add-kernel-opts``).
"""

from __future__ import annotations

import base64
from urllib.parse import urlsplit

from ..template import Template
from .answers import (
    INSTALLED_CONSOLES,
    MANIFEST_PACKAGE,
    SERIAL_PORT,
    manifest_script,
    one_line,
    post_install_script,
    root_password_hash,
)
from .trees import debian_codename

#: Where the post-install script is written in the installed system.
POST_SCRIPT = "/root/imgfac-post.sh"
#: dpkg-query's line per package, its status first: ``install ok installed openssh-server 1:9.2p1-2+deb12u3 amd64``.
#: ``${Version}`` is the full version, epoch included.
DPKG_FORMAT = "${Status} ${Package} ${Version} ${Architecture}\\n"


def mirror_lines(tree_url: str, codename: str) -> list[str]:
    """The ``mirror/*`` answers for the mirror at ``tree_url``."""
    parts = urlsplit(one_line(tree_url, "the install URL"))
    protocol = parts.scheme or "http"
    return [
        "d-i mirror/country string manual",
        f"d-i mirror/protocol string {protocol}",
        f"d-i mirror/{protocol}/hostname string {parts.netloc}",
        f"d-i mirror/{protocol}/directory string {parts.path.rstrip('/') or '/'}",
        f"d-i mirror/{protocol}/proxy string",
        f"d-i mirror/suite string {codename}",
        f"d-i mirror/codename string {codename}",
    ]


def _repository_lines(template: Template, codename: str) -> list[str]:
    lines = []
    for index, repository in enumerate(template.repository_details):
        url = one_line(repository.url, "a repository URL")
        # A bare URL gets the release's suite; "URL suite components" is used as written.
        source = url if " " in url.strip() else f"{url} {codename} main"
        lines += [
            f"d-i apt-setup/local{index}/repository string {source}",
            f"d-i apt-setup/local{index}/comment string {one_line(repository.name, 'a repository name')}",
        ]
    if any(not r.signed for r in template.repository_details):
        lines.append("d-i debian-installer/allow_unauthenticated boolean true")
    return lines


def late_command(template: Template) -> str:
    """One shell line for debian-installer's shell: the post-install script in the target, then the manifest."""
    steps = []
    if template.files or template.commands or template.precommands:
        encoded = _base64(post_install_script(template))
        # base64 text needs no quoting inside single quotes; the line stays one line.
        steps.append(
            f"in-target sh -c 'echo {encoded} | base64 -d > {POST_SCRIPT}'; "
            f"in-target sh {POST_SCRIPT}; in-target rm -f {POST_SCRIPT}"
        )
    steps.append(manifest_command())
    return "; ".join(steps)


def list_packages_command() -> str:
    """A shell command printing ``IMGFAC-PKG <name> <version> <arch>`` for every package installed.

    ``${Status}`` is ``<selection> <error flag> <state>``: a package is
    really installed when its state is ``installed`` with the flag ``ok``,
    whatever was selected for it (install, hold, deinstall).  Removed
    packages whose configuration files remain (``config-files``) and
    half-installed ones are left out.
    """
    return f"dpkg-query -W -f '{DPKG_FORMAT}' | sed -n 's/^[a-z]* ok installed /{MANIFEST_PACKAGE} /p'"


def manifest_command() -> str:
    """debian-installer's shell line printing the target's package manifest on the serial console.

    The script is handed base64-encoded to the target's own shell through
    ``chroot``, not ``in-target``, whose output goes to the installer's
    syslog; the redirection to the serial port is debian-installer's own.
    The preseed value thus holds no ``$``, double quote or backslash for
    debconf or debian-installer's shell to interpret.
    """
    encoded = _base64(manifest_script(list_packages_command()))
    return f"echo {encoded} | chroot /target sh -c 'base64 -d | sh' > {SERIAL_PORT}"


def _base64(script: str) -> str:
    return base64.b64encode(script.encode("utf-8")).decode("ascii")


def preseed(template: Template, tree_url: str | None) -> str:
    """The preseed for ``template``, installing from the mirror at ``tree_url`` (or the ISO when None)."""
    codename = debian_codename(template)
    packages = " ".join(one_line(p, "a package name") for p in template.packages)
    lines = [
        f"# Preseed for the template {template.name!r}, generated by Image Factory.",
        "d-i debian-installer/locale string en_US.UTF-8",
        "d-i keyboard-configuration/xkb-keymap select us",
        "d-i netcfg/choose_interface select auto",
        "d-i netcfg/get_hostname string localhost",
        "d-i netcfg/get_domain string localdomain",
        *(mirror_lines(tree_url, codename) if tree_url else ["d-i apt-setup/use_mirror boolean false"]),
        "d-i passwd/root-login boolean true",
        "d-i passwd/make-user boolean false",
        f"d-i passwd/root-password-crypted password {root_password_hash(template)}",
        "d-i clock-setup/utc boolean true",
        "d-i time/zone string UTC",
        "d-i clock-setup/ntp boolean false",
        "d-i partman-auto/disk string /dev/vda",
        "d-i partman-auto/method string regular",
        "d-i partman-auto/choose_recipe select atomic",
        "d-i partman-partitioning/confirm_write_new_label boolean true",
        "d-i partman/choose_partition select finish",
        "d-i partman/confirm boolean true",
        "d-i partman/confirm_nooverwrite boolean true",
        *_repository_lines(template, codename),
        "tasksel tasksel/first multiselect standard",
        f"d-i pkgsel/include string {packages}",
        "d-i pkgsel/upgrade select none",
        "popularity-contest popularity-contest/participate boolean false",
        "d-i grub-installer/only_debian boolean true",
        "d-i grub-installer/bootdev string /dev/vda",
        f"d-i debian-installer/add-kernel-opts string {INSTALLED_CONSOLES}",
        f"d-i preseed/late_command string {late_command(template)}",
        "d-i finish-install/reboot_in_progress note",
        "d-i debian-installer/exit/poweroff boolean true",
    ]
    return "\n".join(lines) + "\n"


def kernel_arguments(template: Template) -> str:
    """Installer kernel options that make debian-installer read /preseed.cfg and ask nothing."""
    return (
        "auto=true priority=critical preseed/file=/preseed.cfg locale=en_US.UTF-8 "
        "keyboard-configuration/xkb-keymap=us netcfg/get_hostname=localhost netcfg/get_domain=localdomain "
        "DEBIAN_FRONTEND=text"
    )
