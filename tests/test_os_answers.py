"""Kickstart and preseed generation: the key lines, the hashed password, the post-install script."""

import base64
import dataclasses
import os
import re
import shutil
import subprocess

import pytest

from imgfac_twisted.errors import InvalidTemplate
from imgfac_twisted.os import answers, kickstart, preseed
from imgfac_twisted.os.answers import hash_password, post_install_script
from imgfac_twisted.template import parse_template

PASSWORD = "Zq9-answer-secret"


def template(name="Fedora", version="39", extra="", install=None):
    """A template of ``name``/``version`` with repositories, packages, a file and a command."""
    install = install or "<install type='url'><url>http://mirror.example.com/f/</url></install>"
    return parse_template(
        f"<template><name>t</name><os><name>{name}</name><version>{version}</version><arch>x86_64</arch>"
        f"{install}<rootpw>{PASSWORD}</rootpw></os>"
        "<repositories><repository name='extra'><url>http://repo.example.com/extra/</url>"
        "<sslverify>no</sslverify></repository></repositories>"
        "<packages><package name='vim-enhanced'/><package name='tmux'/></packages>"
        "<files><file name='/etc/motd'>hello motd</file></files>"
        f"<commands><command name='mark'>cat pre > marked-by-command; echo ran >> marked-by-command</command></commands>"
        f"<precommands><command name='pre'>echo pre > pre</command></precommands>{extra}</template>")


def lines(text):
    return text.splitlines()


def test_kickstart_key_lines():
    """A URL install: text mode, the tree, the repo, UTC, DHCP, wiped disk, autopart, packages, poweroff."""
    ks = kickstart.kickstart(template(), "http://mirror.example.com/f/")
    got = lines(ks)
    for expected in ["text", 'url --url="http://mirror.example.com/f/"',
                     'repo --name="extra" --baseurl="http://repo.example.com/extra/" --noverifyssl',
                     "timezone Etc/UTC --utc", "network --bootproto=dhcp --device=link --activate",
                     "zerombr", "clearpart --all --initlabel", "autopart --type=plain", "poweroff",
                     "%packages", "@core", "vim-enhanced", "tmux", "%end"]:
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


def test_kickstart_post_writes_files_and_runs_commands(tmp_path):
    """The %post script really writes the file and runs the command (run here under a fake root)."""
    ks = kickstart.kickstart(template(), None)
    post = ks.split("%post --log=/root/imgfac-post.log\n", 1)[1].split("%end", 1)[0]
    # The repository file is written too (persisted by default).
    assert "baseurl=http://repo.example.com/extra/" in post and "sslverify=0" in post
    subprocess.run(["sh", "-c", post_install_script(template(), root=str(tmp_path))], check=True, cwd=tmp_path)
    # The precommand ran first, then the command.
    assert (tmp_path / "marked-by-command").read_text() == "pre\nran\n"
    assert not (tmp_path / "root" / "imgfac-command-1.sh").exists()
    assert (tmp_path / "etc" / "motd").read_text() == "hello motd"


@pytest.mark.parametrize("name, version, modern", [
    ("Fedora", "39", True), ("Fedora", "18", False), ("Fedora", "rawhide", True),
    ("RHEL", "7.9", True), ("RHEL-6", "5", False), ("CentOS", "6", False), ("CentOS", "8-stream", True),
])
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
    debian = template("Debian", "12", install="<install type='url'><url>https://deb.example.com:8443/debian/</url></install>")
    text = preseed.preseed(debian, debian.install_location)
    got = lines(text)
    for expected in ["d-i mirror/protocol string https",
                     "d-i mirror/https/hostname string deb.example.com:8443",
                     "d-i mirror/https/directory string /debian",
                     "d-i mirror/suite string bookworm",
                     "d-i partman-auto/choose_recipe select atomic",
                     "d-i pkgsel/include string vim-enhanced tmux",
                     "d-i apt-setup/local0/repository string http://repo.example.com/extra/ bookworm main",
                     "d-i debian-installer/allow_unauthenticated boolean true",
                     "d-i debian-installer/exit/poweroff boolean true"]:
        assert expected in got, expected
    (password,) = [x for x in got if x.startswith("d-i passwd/root-password-crypted password $6$")]
    assert PASSWORD not in text
    (late,) = [x for x in got if x.startswith("d-i preseed/late_command string ")]
    encoded = late.split("echo ", 1)[1].split(" |", 1)[0]
    assert base64.b64decode(encoded).decode() == post_install_script(debian)


@pytest.mark.parametrize("name, version, suite", [
    ("Debian", "10", "buster"), ("Debian", "11", "bullseye"), ("Debian", "13", "trixie"),
    ("Debian", "12.5", "bookworm"), ("Ubuntu", "20.04", "focal"), ("Ubuntu", "noble", "noble"),
])
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

DEBIAN_CHROOT = """#!/bin/sh
# chroot /target ...: in this test, /target is this host's own root.
[ "$1" = /target ] || { echo "chroot into $1?" >&2; exit 99; }
shift
exec /usr/sbin/chroot / "$@"
"""


def on_serial_port(tmp_path, command, env):
    """What ``sh -c command`` writes to /dev/ttyS0, bound to a file in a mount namespace of its own."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not os.path.exists("/dev/ttyS0"):
        pytest.skip("needs root, unshare(1) and /dev/ttyS0 to catch what is written to the serial port")
    serial = tmp_path / "ttyS0"
    serial.write_bytes(b"")
    subprocess.run(["unshare", "--mount", "sh", "-c", 'mount --bind "$0" /dev/ttyS0 && exec sh -c "$1"',
                    str(serial), command], env=env, check=True, timeout=120, stdin=subprocess.DEVNULL)
    return serial.read_text()


def manifest_lines(printed):
    """The package lines between the markers, checking that everything printed is the manifest."""
    lines = printed.splitlines()
    assert lines[0] == "IMGFAC-MANIFEST-BEGIN" and lines[-1] == "IMGFAC-MANIFEST-END", printed[:500]
    body = lines[1:-1]
    for line in body:
        assert re.fullmatch(r"IMGFAC-PKG [^ ]+ [^ ]+ [^ ]+", line), line
    return body


def debian_template():
    """The module's template as a Debian 12 one."""
    return template("Debian", "12", install="<install type='url'><url>http://deb.example.com/debian/</url></install>")


def late_command_of(text):
    (late,) = [x for x in lines(text) if x.startswith("d-i preseed/late_command string ")]
    return late.removeprefix("d-i preseed/late_command string ")


def test_installed_systems_get_a_serial_console():
    """The preseed's add-kernel-opts and the kickstart's bootloader --append put the serial console last."""
    assert ("d-i debian-installer/add-kernel-opts string console=tty0 console=ttyS0,115200n8"
            in lines(preseed.preseed(debian_template(), "http://deb.example.com/debian/")))
    assert ('bootloader --location=mbr --append="console=tty0 console=ttyS0,115200n8"'
            in lines(kickstart.kickstart(template(), None)))


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
        "echo IMGFAC-MANIFEST-END"]


def test_preseed_without_files_or_commands_still_prints_the_manifest():
    """A template with nothing to run still gets the manifest step, and only it."""
    bare = parse_template("<template><name>t</name><os><name>Debian</name><version>12</version><arch>x86_64</arch>"
                          "<install type='url'><url>http://m/debian/</url></install></os></template>")
    assert late_command_of(preseed.preseed(bare, "http://m/debian/")) == preseed.manifest_command()


def test_preseed_precommands_alone_are_run():
    """A template with only precommands has them run (they were left out before)."""
    only_pre = parse_template("<template><name>t</name><os><name>Debian</name><version>12</version>"
                              "<arch>x86_64</arch><install type='url'><url>http://m/debian/</url></install></os>"
                              "<precommands><command name='p'>echo pre</command></precommands></template>")
    assert "in-target sh /root/imgfac-post.sh" in late_command_of(preseed.preseed(only_pre, None))


DPKG_STATUS = """\
Package: openssh-server
Status: install ok installed
Maintainer: m
Architecture: amd64
Version: 1:9.2p1-2+deb12u3
Description: installed, with an epoch

Package: oldconf
Status: deinstall ok config-files
Maintainer: m
Architecture: amd64
Version: 1.0-1
Description: removed, its configuration files kept

Package: libc6
Status: hold ok installed
Maintainer: m
Architecture: i386
Multi-Arch: same
Version: 2.36-9+deb12u4
Description: held, foreign architecture

Package: libc6
Status: install ok installed
Maintainer: m
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u4
Description: native architecture

Package: broken
Status: install reinstreq half-installed
Maintainer: m
Architecture: all
Version: 2
Description: half-installed
"""


def _debian_manifest(tmp_path, admindir=None):
    """The generated manifest command run for real: chroot into this host, output caught on /dev/ttyS0."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "chroot").write_text(DEBIAN_CHROOT)
    (bin_dir / "chroot").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"}
    if admindir is not None:
        env["DPKG_ADMINDIR"] = str(admindir)
    return on_serial_port(tmp_path, preseed.manifest_command(), env)


def test_debian_manifest_command_lists_only_installed_packages_with_epochs(tmp_path):
    """Run for real against a dpkg database: installed and held packages, epochs kept; removed and
    half-installed ones left out."""
    if not shutil.which("dpkg-query"):
        pytest.skip("no dpkg-query on this machine")
    admin = tmp_path / "dpkg"
    (admin / "updates").mkdir(parents=True)
    (admin / "status").write_text(DPKG_STATUS)
    assert manifest_lines(_debian_manifest(tmp_path, admin)) == [
        "IMGFAC-PKG libc6 2.36-9+deb12u4 amd64",
        "IMGFAC-PKG libc6 2.36-9+deb12u4 i386",
        "IMGFAC-PKG openssh-server 1:9.2p1-2+deb12u3 amd64",
    ]


def _installed(status_text):
    """(name, version, arch) of every installed package of a dpkg status file, read here in Python."""
    found = set()
    for paragraph in status_text.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", paragraph, re.MULTILINE))
        if fields.get("Status", "").split()[1:] == ["ok", "installed"]:
            found.add((fields["Package"], fields["Version"], fields["Architecture"]))
    return found


def test_debian_manifest_command_on_this_hosts_own_database(tmp_path):
    """The same on this Debian host's real database: exactly its installed packages, in the contract's form."""
    status = "/var/lib/dpkg/status"
    if not os.path.exists(status) or not shutil.which("dpkg-query"):
        pytest.skip("this machine has no dpkg database")
    body = manifest_lines(_debian_manifest(tmp_path))
    printed = {tuple(line.split()[1:]) for line in body}
    with open(status, encoding="utf-8") as stream:
        assert printed == _installed(stream.read())
    assert len(body) == len(printed) > 50
    assert any(":" in version for _, version, _ in printed), "this host has packages with an epoch"


def test_the_manifest_reader_takes_what_the_preseed_prints(tmp_path):
    """The lead's parser (os/manifest.py) reads the printed lines back as the same packages."""
    manifest = pytest.importorskip("imgfac_twisted.os.manifest")
    admin = tmp_path / "dpkg"
    (admin / "updates").mkdir(parents=True)
    (admin / "status").write_text(DPKG_STATUS)
    reader = manifest.ManifestReader(lambda line: None)
    for line in _debian_manifest(tmp_path, admin).splitlines():
        reader.line(line)
    assert [tuple(p) for p in reader.packages] == [("libc6", "2.36-9+deb12u4", "amd64"),
                                                   ("libc6", "2.36-9+deb12u4", "i386"),
                                                   ("openssh-server", "1:9.2p1-2+deb12u3", "amd64")]


def test_kickstart_last_post_prints_the_manifest():
    """The last %post, after the template's, sends rpm's package list to the serial port."""
    ks = kickstart.kickstart(template(), None)
    sections = ks.split("\n%post")
    assert len(sections) == 3 and sections[1].startswith(" --log=/root/imgfac-post.log")
    last = sections[2]
    assert last.startswith("\nexec > /dev/ttyS0\n") and ks.rstrip().endswith("echo IMGFAC-MANIFEST-END\n%end")
    assert ("rpm -qa --qf '%|ARCH?{IMGFAC-PKG %{NAME} %|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE} %{ARCH}\\n}:{}|'"
            in last)


RPM_SPEC = """\
Name: {name}
Version: {version}
Release: 2.fc39
{epoch}
Summary: a package for the manifest test
License: MIT
BuildArch: noarch
%description
A package for the manifest test.
%files
"""


@pytest.fixture(scope="module")
def rpm_database(tmp_path_factory):
    """A real RPM database with a package with an epoch, one without, and an imported key (gpg-pubkey)."""
    if not shutil.which("rpmbuild"):
        pytest.skip("rpm is not installed (scripts/setup.sh --test installs it)")
    root = tmp_path_factory.mktemp("rpm")
    for name, version, epoch in [("imgfac-epoch", "9.2p1", "Epoch: 1"), ("imgfac-plain", "3.4", "")]:
        spec = root / f"{name}.spec"
        spec.write_text(RPM_SPEC.format(name=name, version=version, epoch=epoch))
        subprocess.run(["rpmbuild", "-bb", "--define", f"_topdir {root / 'top'}", str(spec)], check=True,
                       capture_output=True, timeout=120)
    database = root / "db"
    packages = sorted(str(p) for p in (root / "top" / "RPMS").rglob("*.rpm"))
    subprocess.run(["rpm", "--dbpath", str(database), "--initdb"], check=True)
    subprocess.run(["rpm", "--dbpath", str(database), "-i", "--justdb", "--nodeps", *packages], check=True,
                   capture_output=True)
    if shutil.which("gpg"):
        home = root / "gnupg"
        home.mkdir(mode=0o700)
        gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
        subprocess.run([*gpg, "--quick-gen-key", "Imgfac Test <t@example.com>", "ed25519", "sign", "never"],
                       check=True, capture_output=True)
        key = subprocess.run([*gpg, "--armor", "--export", "t@example.com"], check=True, capture_output=True).stdout
        (root / "key.asc").write_bytes(key)
        subprocess.run(["rpm", "--dbpath", str(database), "--import", str(root / "key.asc")], check=True)
    return database


def test_kickstart_manifest_post_run_for_real_against_an_rpm_database(tmp_path, rpm_database):
    """The last %post as written, run by sh against a real RPM database: the epoch as E: only where there is
    one, the gpg-pubkey entry of an imported key left out."""
    ks = kickstart.kickstart(template(), None)
    post = ks.split("\n%post\n")[-1].split("\n%end", 1)[0]
    home = tmp_path / "home"
    home.mkdir()
    (home / ".rpmmacros").write_text(f"%_dbpath {rpm_database}\n")
    if shutil.which("gpg"):
        everything = subprocess.run(["rpm", "--dbpath", str(rpm_database), "-qa"], capture_output=True, text=True)
        assert "gpg-pubkey-" in everything.stdout
    body = manifest_lines(on_serial_port(tmp_path, post, {"PATH": "/usr/bin:/bin", "HOME": str(home)}))
    assert sorted(body) == ["IMGFAC-PKG imgfac-epoch 1:9.2p1-2.fc39 noarch",
                            "IMGFAC-PKG imgfac-plain 3.4-2.fc39 noarch"]
