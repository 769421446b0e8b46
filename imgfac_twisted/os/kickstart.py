"""Kickstart files for Fedora, RHEL and CentOS installs, generated from a template.

The kickstart installs unattended in text mode from the tree's URL (or the
attached ISO), wipes and partitions the one disk automatically, adds the
template's repositories and packages, writes its files and runs its
commands in ``%post``, prints the package manifest on the serial console in
a last ``%post`` (see answers.py), and powers the guest off at the end: that
power-off is how the factory knows the install finished.  The installed
system's kernel command line gets a serial console (``bootloader --append``).
"""

from __future__ import annotations

import re

from ..template import Repository, Template
from .answers import (
    INSTALLED_CONSOLES,
    MANIFEST_PACKAGE,
    SERIAL_PORT,
    manifest_script,
    one_line,
    post_install_script,
    root_password_hash,
)
from .trees import UnknownRelease, major_version

#: Kickstart keywords that changed with the dracut-based anaconda (Fedora 19, RHEL 7).
FEDORA_INST_PREFIX_FROM = 19
RHEL_INST_PREFIX_FROM = 7
#: The oldest releases kickstarts are written for: the first whose anaconda
#: takes every command and option used here (``repo --noverifyssl`` came
#: with Fedora 14 and RHEL 6).
OLDEST_FEDORA = 14
OLDEST_RHEL = 6
#: rpm's line per installed package, the epoch written ``E:`` only when there
#: is one; the ``gpg-pubkey`` entries of imported keys have no architecture
#: and are not packages: nothing is printed for them.
RPM_FORMAT = "%|ARCH?{" + MANIFEST_PACKAGE + " %{NAME} %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE} %{ARCH}\\n}:{}|"


def os_major(template: Template) -> int | None:
    """The major release: from the name for Oz's ``RHEL-7``-style names, else from the version."""
    named = re.fullmatch(r"\s*(?:rhel|centos)-(\d+)\s*", template.os_name, re.IGNORECASE)
    return int(named.group(1)) if named else major_version(template.os_version)


def _is_fedora(template: Template) -> bool:
    return template.os_name.strip().lower() == "fedora"


def syntax_version(template: Template) -> str:
    """The kickstart syntax of the template's release, named as pykickstart names it: ``F39``, ``RHEL9``.

    ``DEVEL`` for a release without a number (rawhide, CentOS Stream
    without one).  UnknownRelease for one older than OLDEST_FEDORA or
    OLDEST_RHEL.
    """
    major = os_major(template)
    if major is None:
        return "DEVEL"
    fedora = _is_fedora(template)
    oldest = OLDEST_FEDORA if fedora else OLDEST_RHEL
    if major < oldest:
        family = "Fedora" if fedora else "RHEL and CentOS"
        raise UnknownRelease(
            f"{template.os_name} {template.os_version} is too old: kickstarts are written for "
            f"{family} {oldest} and newer"
        )
    return f"F{major}" if fedora else f"RHEL{major}"


def is_modern_anaconda(template: Template) -> bool:
    """Whether the installer is anaconda with ``inst.*`` options (Fedora >= 19, RHEL/CentOS >= 7)."""
    major = os_major(template)
    if major is None:  # rawhide, stream...: the newest
        return True
    threshold = FEDORA_INST_PREFIX_FROM if _is_fedora(template) else RHEL_INST_PREFIX_FROM
    return major >= threshold


def _quoted(value: str) -> str:
    """A kickstart option value in double quotes (a URL has no quotes or newlines to escape)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _repo_line(repository: Repository) -> str:
    name = one_line(repository.name, "a repository name")
    line = f"repo --name={_quoted(name)} --baseurl={_quoted(one_line(repository.url, 'a repository URL'))}"
    return line + ("" if repository.sslverify else " --noverifyssl")


def _repo_file_name(name: str) -> str:
    return "imgfac-" + (re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "repo") + ".repo"


def _persisted_repos(template: Template) -> list[str]:
    """``%post`` lines keeping the persisted repositories in the installed system."""
    lines = []
    for repository in template.repository_details:
        if not repository.persisted:
            continue
        path = f"/etc/yum.repos.d/{_repo_file_name(repository.name)}"
        section = re.sub(r"[^A-Za-z0-9_.-]", "_", repository.name)
        lines += [
            f"cat > {path} <<'IMGFAC_EOF'",
            f"[{section}]",
            f"name={repository.name}",
            f"baseurl={repository.url}",
            "enabled=1",
            f"gpgcheck={1 if repository.signed else 0}",
            f"sslverify={1 if repository.sslverify else 0}",
            "IMGFAC_EOF",
        ]
    return lines


def manifest_post() -> list[str]:
    """The last ``%post`` section: the installed packages printed on the serial console (see answers.py).

    It runs in the installed system (anaconda's default chroot), where
    anaconda has bound /dev; its output would otherwise go to the log.
    """
    return [
        "%post",
        f"exec > {SERIAL_PORT}",
        manifest_script(f"rpm -qa --qf '{RPM_FORMAT}'").rstrip("\n"),
        "%end",
    ]


def kickstart(template: Template, tree_url: str | None) -> str:
    """The kickstart for ``template``: a URL install from ``tree_url``, or from the CD-ROM when None."""
    modern = is_modern_anaconda(template)
    lines = [
        f"# Kickstart for the template {template.name!r}, generated by Image Factory.",
        f"#version={syntax_version(template)}",
        "text",
        "cdrom" if tree_url is None else f"url --url={_quoted(one_line(tree_url, 'the install URL'))}",
        *(_repo_line(r) for r in template.repository_details),
        "lang en_US.UTF-8",
        "keyboard --vckeymap=us --xlayouts=us" if modern else "keyboard us",
        "timezone Etc/UTC --utc",
        "network --bootproto=dhcp --device=link --activate" if modern else "network --bootproto=dhcp",
        f"rootpw --iscrypted {root_password_hash(template)}",
        "skipx",
        f'bootloader --location=mbr --append="{INSTALLED_CONSOLES}"',
        "zerombr",
        "clearpart --all --initlabel",
        "autopart --type=plain" if modern else "autopart",
        "poweroff",
        "",
        "%packages",
        "@core",
        *(one_line(p, "a package name") for p in template.packages),
        "%end",
        "",
        "%post --log=/root/imgfac-post.log",
        *_persisted_repos(template),
        post_install_script(template, shebang=False).rstrip("\n"),
        "%end",
        "",
        *manifest_post(),
    ]
    return "\n".join(lines) + "\n"


def kernel_arguments(template: Template, tree_url: str | None) -> str:
    """Installer kernel options that find the kickstart in the initrd and the install source."""
    source = tree_url or "cdrom"
    if is_modern_anaconda(template):
        return f"inst.ks=file:/ks.cfg inst.repo={source} inst.text"
    return f"ks=file:/ks.cfg method={source} text"
