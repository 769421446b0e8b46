"""Kickstart and preseed generation: the key lines, the hashed password, the post-install script."""

import base64
import dataclasses

import pytest

from imgfac_twisted.errors import InvalidTemplate
from imgfac_twisted.os import answers, kickstart, preseed
from imgfac_twisted.os.answers import hash_password, post_install_script
from imgfac_twisted.template import parse_template
from support.answer_templates import PASSWORD, lines, template


def test_kickstart_key_lines():
    """A URL install: text mode, the tree, the repo, UTC, DHCP, wiped disk, autopart, packages, poweroff."""
    ks = kickstart.kickstart(template(), "http://mirror.example.com/f/")
    got = lines(ks)
    for expected in [
        "text",
        'url --url="http://mirror.example.com/f/"',
        'repo --name="extra" --baseurl="http://repo.example.com/extra/" --noverifyssl',
        "timezone Etc/UTC --utc",
        "network --bootproto=dhcp --device=link --activate",
        "zerombr",
        "clearpart --all --initlabel",
        "autopart --type=plain",
        "poweroff",
        "%packages",
        "@core",
        "vim-enhanced",
        "tmux",
        "%end",
    ]:
        assert expected in got, expected
    assert got.index("%packages") < got.index("vim-enhanced") < got.index("%end")
    assert PASSWORD not in ks


def test_kickstart_root_password_is_a_sha512_hash_of_it():
    """rootpw is --iscrypted with a salted SHA-512 crypt hash of the template's password."""
    ks = kickstart.kickstart(template(), None)
    (line,) = [x for x in lines(ks) if x.startswith("rootpw ")]
    hashed = line.split()[-1]
    assert line.startswith("rootpw --iscrypted $6$")
    # Checked with crypt(3), as the installed system's login will.
    assert answers.crypt.crypt(PASSWORD, hashed) == hashed
    assert hash_password(PASSWORD) != hash_password(PASSWORD)  # a fresh salt each time


def test_kickstart_from_cdrom():
    """Without a tree URL the kickstart installs from the CD-ROM."""
    assert "cdrom" in lines(kickstart.kickstart(template(), None))


@pytest.mark.parametrize(
    "name, version, modern",
    [
        ("Fedora", "39", True),
        ("Fedora", "18", False),
        ("Fedora", "rawhide", True),
        ("RHEL", "7.9", True),
        ("RHEL-6", "5", False),
        ("CentOS", "6", False),
        ("CentOS", "8-stream", True),
    ],
)
def test_kernel_arguments_by_release(name, version, modern):
    """inst.ks / inst.repo for Fedora >= 19 and RHEL/CentOS >= 7; ks= / method= before."""
    arguments = kickstart.kernel_arguments(template(name, version), "http://t/")
    if modern:
        assert arguments.split() == ["inst.ks=file:/ks.cfg", "inst.repo=http://t/", "inst.text"]
    else:
        assert arguments.split() == ["ks=file:/ks.cfg", "method=http://t/", "text"]


def test_a_newline_cannot_add_kickstart_lines():
    """A package name with a newline (a character reference) is refused, not written."""
    bad = template(extra="")
    bad = dataclasses.replace(bad, packages=("vim\n%post\nrm -rf /",))
    with pytest.raises(InvalidTemplate) as info:
        kickstart.kickstart(bad, None)
    assert "package name" in str(info.value)


def test_preseed_key_lines():
    """Mirror split from the URL, suite from the version, atomic recipe, packages, late_command, poweroff."""
    debian = template(
        "Debian", "12", install="<install type='url'><url>https://deb.example.com:8443/debian/</url></install>"
    )
    text = preseed.preseed(debian, debian.install_location)
    got = lines(text)
    for expected in [
        "d-i mirror/protocol string https",
        "d-i mirror/https/hostname string deb.example.com:8443",
        "d-i mirror/https/directory string /debian",
        "d-i mirror/suite string bookworm",
        "d-i partman-auto/choose_recipe select atomic",
        "d-i pkgsel/include string vim-enhanced tmux",
        "d-i apt-setup/local0/repository string http://repo.example.com/extra/ bookworm main",
        "d-i debian-installer/allow_unauthenticated boolean true",
        "d-i debian-installer/exit/poweroff boolean true",
    ]:
        assert expected in got, expected
    (password,) = [x for x in got if x.startswith("d-i passwd/root-password-crypted password $6$")]
    assert PASSWORD not in text
    (late,) = [x for x in got if x.startswith("d-i preseed/late_command string ")]
    encoded = late.split("echo ", 1)[1].split(" |", 1)[0]
    assert base64.b64decode(encoded).decode() == post_install_script(debian)


@pytest.mark.parametrize(
    "name, version, suite",
    [
        ("Debian", "10", "buster"),
        ("Debian", "11", "bullseye"),
        ("Debian", "13", "trixie"),
        ("Debian", "12.5", "bookworm"),
        ("Ubuntu", "20.04", "focal"),
        ("Ubuntu", "noble", "noble"),
    ],
)
def test_preseed_suite_from_version(name, version, suite):
    """The suite is the release's codename, from the version or given as one."""
    text = preseed.preseed(template(name, version), "http://m/debian")
    assert f"d-i mirror/suite string {suite}" in lines(text)


def test_preseed_unknown_release_is_named():
    """A version with no known codename fails naming the version and the known ones."""
    with pytest.raises(Exception) as info:
        preseed.preseed(template("Debian", "99"), "http://m/debian")
    assert "'99'" in str(info.value) and "bookworm" in str(info.value)


def test_preseed_kernel_arguments():
    """debian-installer runs unattended from /preseed.cfg."""
    arguments = preseed.kernel_arguments(template("Debian", "12")).split()
    assert {"auto=true", "priority=critical", "preseed/file=/preseed.cfg"} <= set(arguments)


# --- the installed system's serial console and the package manifest -------------------------------------------------


def debian_template():
    """The module's template as a Debian 12 one."""
    return template("Debian", "12", install="<install type='url'><url>http://deb.example.com/debian/</url></install>")


def late_command_of(text):
    (late,) = [x for x in lines(text) if x.startswith("d-i preseed/late_command string ")]
    return late.removeprefix("d-i preseed/late_command string ")


def test_installed_systems_get_a_serial_console():
    """The preseed's add-kernel-opts and the kickstart's bootloader --append put the serial console last."""
    assert "d-i debian-installer/add-kernel-opts string console=tty0 console=ttyS0,115200n8" in lines(
        preseed.preseed(debian_template(), "http://deb.example.com/debian/")
    )
    assert 'bootloader --location=mbr --append="console=tty0 console=ttyS0,115200n8"' in lines(
        kickstart.kickstart(template(), None)
    )


def test_preseed_late_command_ends_with_the_manifest_on_the_serial_port():
    """The template's script runs first, the manifest last, from d-i's own shell to /dev/ttyS0 (not in-target)."""
    late = late_command_of(preseed.preseed(debian_template(), None))
    manifest = preseed.manifest_command()
    assert late.endswith("; " + manifest) and late.index("in-target sh /root/imgfac-post.sh") < late.index(manifest)
    assert manifest.startswith("echo ") and manifest.endswith(" | chroot /target sh -c 'base64 -d | sh' > /dev/ttyS0")
    # Nothing in the value for debconf or d-i's shell to expand or unquote.
    assert not set('$"\\`') & set(late)
    script = base64.b64decode(manifest.split()[1]).decode()
    assert script.splitlines()[1:] == [
        "echo IMGFAC-MANIFEST-BEGIN",
        r"dpkg-query -W -f '${Status} ${Package} ${Version} ${Architecture}\n' "
        r"| sed -n 's/^[a-z]* ok installed /IMGFAC-PKG /p'",
        "echo IMGFAC-MANIFEST-END",
    ]


def test_preseed_without_files_or_commands_still_prints_the_manifest():
    """A template with nothing to run still gets the manifest step, and only it."""
    bare = parse_template(
        "<template><name>t</name><os><name>Debian</name><version>12</version><arch>x86_64</arch>"
        "<install type='url'><url>http://m/debian/</url></install></os></template>"
    )
    assert late_command_of(preseed.preseed(bare, "http://m/debian/")) == preseed.manifest_command()


def test_preseed_precommands_alone_are_run():
    """A template with only precommands has them run (they were left out before)."""
    only_pre = parse_template(
        "<template><name>t</name><os><name>Debian</name><version>12</version>"
        "<arch>x86_64</arch><install type='url'><url>http://m/debian/</url></install></os>"
        "<precommands><command name='p'>echo pre</command></precommands></template>"
    )
    assert "in-target sh /root/imgfac-post.sh" in late_command_of(preseed.preseed(only_pre, None))


def test_kickstart_last_post_prints_the_manifest():
    """The last %post, after the template's, sends rpm's package list to the serial port."""
    ks = kickstart.kickstart(template(), None)
    sections = ks.split("\n%post")
    assert len(sections) == 3 and sections[1].startswith(" --log=/root/imgfac-post.log")
    last = sections[2]
    assert last.startswith("\nexec > /dev/ttyS0\n") and ks.rstrip().endswith("echo IMGFAC-MANIFEST-END\n%end")
    assert (
        "rpm -qa --qf '%|ARCH?{IMGFAC-PKG %{NAME} %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE} %{ARCH}\\n}:{}|'" in last
    )
