"""The generated answer files' scripts run for real: a kickstart %post in sh, the preseed's manifest command
against dpkg databases (this host's too), the kickstart manifest against an RPM database (the generation itself:
tests/unit/test_os_answers.py)."""

import os
import re
import shutil
import subprocess

import pytest

from imgfac_twisted.os import kickstart, preseed
from imgfac_twisted.os.answers import post_install_script
from support.answer_templates import manifest_lines, template

DEBIAN_CHROOT = """#!/bin/sh
# chroot /target ...: in this test, /target is this host's own root.
[ "$1" = /target ] || { echo "chroot into $1?" >&2; exit 99; }
shift
exec /usr/sbin/chroot / "$@"
"""

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


def on_serial_port(tmp_path, command, env):
    """What ``sh -c command`` writes to /dev/ttyS0, bound to a file in a mount namespace of its own."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not os.path.exists("/dev/ttyS0"):
        pytest.skip("needs root, unshare(1) and /dev/ttyS0 to catch what is written to the serial port")
    serial = tmp_path / "ttyS0"
    serial.write_bytes(b"")
    subprocess.run(
        ["unshare", "--mount", "sh", "-c", 'mount --bind "$0" /dev/ttyS0 && exec sh -c "$1"', str(serial), command],
        env=env,
        check=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    return serial.read_text()


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
    assert [tuple(p) for p in reader.packages] == [
        ("libc6", "2.36-9+deb12u4", "amd64"),
        ("libc6", "2.36-9+deb12u4", "i386"),
        ("openssh-server", "1:9.2p1-2+deb12u3", "amd64"),
    ]


@pytest.fixture(scope="module")
def rpm_database(tmp_path_factory):
    """A real RPM database with a package with an epoch, one without, and an imported key (gpg-pubkey)."""
    if not shutil.which("rpmbuild"):
        pytest.skip("rpm is not installed (scripts/setup.sh --test installs it)")
    root = tmp_path_factory.mktemp("rpm")
    for name, version, epoch in [("imgfac-epoch", "9.2p1", "Epoch: 1"), ("imgfac-plain", "3.4", "")]:
        spec = root / f"{name}.spec"
        spec.write_text(RPM_SPEC.format(name=name, version=version, epoch=epoch))
        subprocess.run(
            ["rpmbuild", "-bb", "--define", f"_topdir {root / 'top'}", str(spec)],
            check=True,
            capture_output=True,
            timeout=120,
        )
    database = root / "db"
    packages = sorted(str(p) for p in (root / "top" / "RPMS").rglob("*.rpm"))
    subprocess.run(["rpm", "--dbpath", str(database), "--initdb"], check=True)
    subprocess.run(
        ["rpm", "--dbpath", str(database), "-i", "--justdb", "--nodeps", *packages], check=True, capture_output=True
    )
    if shutil.which("gpg"):
        home = root / "gnupg"
        home.mkdir(mode=0o700)
        gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
        subprocess.run(
            [*gpg, "--quick-gen-key", "Imgfac Test <t@example.com>", "ed25519", "sign", "never"],
            check=True,
            capture_output=True,
        )
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
    assert sorted(body) == [
        "IMGFAC-PKG imgfac-epoch 1:9.2p1-2.fc39 noarch",
        "IMGFAC-PKG imgfac-plain 3.4-2.fc39 noarch",
    ]
