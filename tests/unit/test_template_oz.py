"""The Oz TDL elements a template carries into Template: disk bytes, repositories, files, commands."""

import base64

import pytest

from imgfac_twisted.errors import InvalidTemplate
from imgfac_twisted.template import Command, Repository, TemplateFile, parse_template

SECRET = "Zq9-oz-secret"


def tdl(extra: str = "", install: str = "<install type='url'><url>http://mirror/f39/</url></install>") -> str:
    """A valid template with ``extra`` elements under <template>."""
    return (
        f"<template><name>oz</name><os><name>Fedora</name><version>39</version><arch>x86_64</arch>"
        f"{install}<rootpw>{SECRET}</rootpw></os>{extra}</template>"
    )


@pytest.mark.parametrize(
    "size, expected",
    [
        ("64M", 64 * 1024**2),
        ("10", 10 * 1024**3),
        ("3G", 3 * 1024**3),
        ("1T", 1024**4),
        ("1500M", 1500 * 1024**2),
    ],
)
def test_disk_size_in_exact_bytes(size, expected):
    """<disk><size> gives the exact byte size (no unit: GiB, as in Oz), and GiB rounded up."""
    template = parse_template(tdl(f"<disk><size>{size}</size></disk>"))
    assert template.disk_size_bytes == expected
    assert template.disk_size_gib == -(-expected // 1024**3)


def test_default_disk_is_ten_gib():
    """Without <disk> the disk is 10 GiB, as in Oz."""
    assert parse_template(tdl()).disk_size_bytes == 10 * 1024**3


def test_repositories_with_their_flags():
    """Each repository keeps its name, URL and signed/persisted/sslverify flags (Oz's elements too)."""
    template = parse_template(
        tdl(
            "<repositories><repository name='a'><url>http://a/</url><signed>yes</signed>"
            "<persisted>False</persisted><sslverify>no</sslverify><cacert>PEM</cacert>"
            "<clientcert>C</clientcert><clientkey>K</clientkey></repository>"
            "<repository name='b'><url>http://b/</url></repository></repositories>"
        )
    )
    assert template.repository_details == (
        Repository("a", "http://a/", signed=True, persisted=False, sslverify=False),
        Repository("b", "http://b/", signed=False, persisted=True, sslverify=True),
    )
    assert template.repositories == (("a", "http://a/"), ("b", "http://b/"))


def test_files_are_decoded():
    """Raw files keep their text; base64 files are decoded to bytes."""
    blob = bytes(range(256))
    template = parse_template(
        tdl(
            "<files><file name='/etc/motd'>Welcome\n</file>"
            f"<file name='/opt/blob' type='base64'>{base64.b64encode(blob).decode()}</file></files>"
        )
    )
    assert template.files == (TemplateFile("/etc/motd", b"Welcome\n"), TemplateFile("/opt/blob", blob))


def test_commands_run_by_position_then_as_written():
    """Positioned commands come first, in order; unpositioned ones follow in document order."""
    template = parse_template(
        tdl(
            "<commands><command name='late'>echo late</command>"
            "<command name='second' position='2'>echo 2</command>"
            f"<command name='first' position='1' type='base64'>{base64.b64encode(b'echo 1').decode()}</command>"
            "</commands><precommands><command name='pre'>echo pre</command></precommands>"
            "<kernelparam>quiet</kernelparam>"
        )
    )
    assert template.commands == (
        Command("first", "echo 1", 1),
        Command("second", "echo 2", 2),
        Command("late", "echo late", None),
    )
    assert template.precommands == (Command("pre", "echo pre", None),)
    assert template.kernel_params == "quiet"


def test_iso_install_is_extracted():
    """An ISO install gives its location; checksums are accepted."""
    template = parse_template(
        tdl(install=f"<install type='iso'><iso>file:f39.iso</iso><sha256sum>{'ab' * 32}</sha256sum></install>")
    )
    assert (template.install_type, template.install_location) == ("iso", "file:f39.iso")


def test_bad_base64_names_the_element():
    """A base64 file that does not decode is refused, naming the file."""
    with pytest.raises(InvalidTemplate) as info:
        parse_template(tdl("<files><file name='/etc/x' type='base64'>!!not base64!!</file></files>"))
    assert "template/files/file[1] ('/etc/x')" in str(info.value)
    assert "base64" in str(info.value)


@pytest.mark.parametrize(
    "extra, where",
    [
        ("<disk><size>64K</size></disk>", "template/disk/size"),
        ("<commands><command name='x' position='0'>x</command></commands>", "template/commands/command"),
        ("<files><file name='/x' type='url'>x</file></files>", "template/files/file"),
        (
            "<repositories><repository name='r'><url>http://r/</url><bogus/></repository></repositories>",
            "repositories/repository",
        ),
    ],
)
def test_invalid_new_elements_are_named(extra, where):
    """Errors in disk, commands, files and repositories name the element; the password never shows."""
    with pytest.raises(InvalidTemplate) as info:
        parse_template(tdl(extra))
    assert where in str(info.value)
    assert SECRET not in str(info.value)


def test_repr_hides_secrets_and_contents():
    """The repr of a template shows no root password, file content or command script."""
    template = parse_template(
        tdl(
            "<files><file name='/f'>file-content-xyz</file></files>"
            "<commands><command name='c'>script-body-xyz</command></commands>"
        )
    )
    shown = repr(template)
    assert SECRET not in shown and "file-content-xyz" not in shown and "script-body-xyz" not in shown
    assert "'/f'" in shown
