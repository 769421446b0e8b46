"""End to end with a real operating system: a Debian 12 template becomes six cloud images, each of which boots.

The daemon (real libvirtd and QEMU, software emulation) installs a real
Debian 12 system through its own Debian path: it downloads kernel and initrd
from a mirror-shaped tree on 127.0.0.1, appends its generated preseed, boots
the installer and waits for it to power off.  The installer is
tests/support/debian_system.py's stand-in for debian-installer (which cannot run
here: its components are not on the reachable mirror); the system it puts
on the disk is a real debootstrapped Debian 12 with its own kernel, GRUB,
systemd and openssh-server.  The factory then boots the base image once (its
boot test) before it converts it into every target's format.

This test then boots every downloaded image in QEMU itself to a login prompt,
reads the template's file and command result out of the ext4 file system
without mounting it, and checks the package manifest (ICICLE and SPDX)
against the root file system's dpkg status.

One build serves every assertion; a second one, with an installer that
leaves no boot loader, runs beside it and must fail its boot test.  About
10 minutes here (2 cores, no KVM).
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from support import debian_system
from support.daemon import Daemon, DaemonPool, mock_config

pytestmark = [pytest.mark.slow, pytest.mark.integration]

URI = "qemu:///system"
TARGETS = ("ec2", "openstack-kvm", "vsphere", "hyperv", "gce", "ova")
#: How QEMU reads each target's disk once unpacked (a fixed VHD must be named: it probes as raw).
DISK_FORMATS = {"ec2": "raw", "openstack-kvm": "qcow2", "vsphere": "vmdk", "hyperv": "vpc", "gce": "raw", "ova": "vmdk"}
#: The install (about 100 s alone), boot test (about 45 s) and conversions, with room for a loaded machine.
BUILD_WAIT = 1500.0
#: Long enough for this system to reach its login prompt under load (41 s idle, 107 s seen on a loaded machine).
BOOT_TEST_TIMEOUT = 420.0
#: The build without a boot loader waits this out: its guest never prints a thing.
BOOTLESS_BOOT_TEST_TIMEOUT = 90.0
#: The partition the stand-in installer makes starts at sector 2048.
PARTITION_OFFSET = 2048 * 512
FILE_PATH, FILE_TEXT, COMMAND_RESULT = debian_system.FILE_PATH, debian_system.FILE_TEXT, debian_system.COMMAND_RESULT
template = debian_system.template


@dataclass
class Build:
    """One POSTed build: its target images (target -> document) and, once ended, their final details."""

    target_images: dict[str, dict[str, Any]]
    final: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def system() -> debian_system.RootFileSystem:
    if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
        pytest.skip("debootstrap is not installed (scripts/setup.sh --test installs it)")
    if subprocess.run(["virsh", "-c", URI, "version"], capture_output=True).returncode != 0:
        pytest.skip(f"libvirtd cannot be reached on {URI}; scripts/libvirt-up.sh starts it")
    return debian_system.root_filesystem()


def real_install_daemon(pool: DaemonPool, name: str, boot_test_timeout: float) -> Daemon:
    return pool(
        mock_config(
            libvirt_uri=URI,
            libvirt_domain_type="qemu",
            install_memory_mib=debian_system.MEMORY_MIB,
            install_inactivity_timeout=180,
            install_timeout=BUILD_WAIT,
            boot_test_timeout=boot_test_timeout,
            max_concurrent_builds=len(TARGETS),
        ),
        name=name,
    )


@pytest.fixture(scope="module")
def daemon(system: debian_system.RootFileSystem, module_daemon_factory: DaemonPool) -> Daemon:
    return real_install_daemon(module_daemon_factory, "real-debian", BOOT_TEST_TIMEOUT)


@pytest.fixture(scope="module")
def bootless_daemon(system: debian_system.RootFileSystem, module_daemon_factory: DaemonPool) -> Daemon:
    """A daemon of its own, whose boot test gives up sooner (should a disk without a boot loader ever reach a VM)."""
    return real_install_daemon(module_daemon_factory, "real-debian-bootless", BOOTLESS_BOOT_TEST_TIMEOUT)


@pytest.fixture(scope="module")
def builds(
    system: debian_system.RootFileSystem,
    daemon: Daemon,
    bootless_daemon: Daemon,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Build]]:
    """Both builds, started together: the good one (six targets) and the one without a boot loader (ec2)."""
    good, bootless = tmp_path_factory.mktemp("debian-tree"), tmp_path_factory.mktemp("bootless-tree")
    debian_system.lay_out_tree(good, grub=True)
    debian_system.lay_out_tree(bootless, grub=False)
    with debian_system.serve(good) as served, debian_system.serve(bootless) as served_bootless:
        started = {
            "good": post(daemon, template("real-debian", served.url), TARGETS),
            "bootless": post(bootless_daemon, template("real-debian-bootless", served_bootless.url), ("ec2",)),
        }
        for build, server in ((started["good"], daemon), (started["bootless"], bootless_daemon)):
            for target, image in build.target_images.items():
                build.final[target] = server.wait_final(image["href"], timeout=BUILD_WAIT)
        yield started


def post(daemon: Daemon, tdl: str, targets: tuple[str, ...]) -> Build:
    answer = daemon.post("/imagefactory/images", data={"targets": ",".join(targets), "template": tdl})
    assert answer.status_code == 202, answer.text
    build = answer.json()["build"]
    # The answer lists ids and links only: each target image's details name its target.
    details = [daemon.get_json(image["href"]) for image in build["target_images"]]
    assert sorted(detail["target"] for detail in details) == sorted(targets)
    return Build({detail["target"]: {**detail, "build_id": build["id"]} for detail in details}, {})


def log_of(daemon: Daemon, image: dict[str, Any]) -> str:
    return daemon.get(f"/imagefactory/builders/{image['id']}/log").text


def imgfac_domains() -> list[str]:
    """Every factory domain libvirt knows (running or defined)."""
    listed = subprocess.run(["virsh", "-c", URI, "list", "--all", "--name"], capture_output=True, text=True, check=True)
    return [name for name in listed.stdout.split() if name.startswith("imgfac-")]


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_every_target_completes_after_the_install_and_a_boot_test(builds: dict[str, Build], daemon: Daemon) -> None:
    """Six COMPLETED targets; their stages installing, boot_test, converting ran in order with plausible times."""
    build = builds["good"]
    for target, detail in build.final.items():
        assert detail["status"] == "COMPLETED", (target, detail, log_of(daemon, detail)[-4000:])
    log = log_of(daemon, build.final["ec2"])
    assert debian_system.DONE_MARKER in log, "the installer's console is in the build log"
    assert "console=ttyS0,115200n8" in log, "the preseed's add-kernel-opts reached GRUB"
    assert "boot test" in log.lower()
    for target, detail in build.final.items():
        stages = {stage["name"]: stage for stage in detail["stages"]}
        names = [stage["name"] for stage in detail["stages"]]
        assert {"installing", "boot_test", "converting"} <= set(names), (target, names)
        assert names.index("installing") < names.index("boot_test") < names.index("converting"), names
        assert detail["stage"] is None and all(stage["ended_at"] for stage in detail["stages"]), detail
        took = {
            name: (parse_time(stage["ended_at"]) - parse_time(stage["started_at"])).total_seconds()
            for name, stage in stages.items()
        }
        # The installer unpacks some 700 MB and runs GRUB (about 100 s here); the system boots in 41 s.
        assert 20 < took["installing"] < BUILD_WAIT, took
        assert 10 < took["boot_test"] < BOOT_TEST_TIMEOUT, took
        assert 0 < took["converting"] < BUILD_WAIT, took
        print(f"\n{target}: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in took.items()))


def download(daemon: Daemon, image: dict[str, Any], path: Path) -> Path:
    """The target image through ``raw_image``, streamed to ``path``."""
    with daemon.get(image["href"] + "/raw_image", stream=True, timeout=120) as answer:
        assert answer.status_code == 200, answer.text[:500]
        with path.open("wb") as stream:
            for chunk in answer.iter_content(1 << 20):
                stream.write(chunk)
    return path


def bootable_disk(target: str, image: Path, folder: Path) -> Path:
    """The disk QEMU boots for ``target``'s image: the image itself, or the disk unpacked from its archive."""
    if target == "gce":
        subprocess.run(["tar", "-xzSf", str(image), "-C", str(folder)], check=True)
        assert sorted(path.name for path in folder.iterdir()) == sorted([image.name, "disk.raw"])
        return folder / "disk.raw"
    if target == "ova":
        with tarfile.open(image) as ova:
            names = ova.getnames()
            assert names[0].endswith(".ovf") and len(names) == 2, names
            ova.extractall(folder, filter="data")
        return folder / names[1]
    return image


@pytest.fixture(scope="module")
def images(builds: dict[str, Build], daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every COMPLETED target's image, downloaded (each in a folder of its own)."""
    downloaded = {}
    for target, detail in builds["good"].final.items():
        if detail["status"] != "COMPLETED":
            continue
        folder = tmp_path_factory.mktemp(target)
        image = download(daemon, detail, folder / f"image.{target}")
        assert image.stat().st_size == detail["image_size"]
        downloaded[target] = bootable_disk(target, image, folder)
    return downloaded


@pytest.mark.parametrize("target", TARGETS)
def test_every_image_boots_to_a_login_prompt(target: str, images: dict[str, Path], tmp_path: Path) -> None:
    """The downloaded image, as QEMU reads its format, boots Debian to ``localhost login:`` on its serial console."""
    assert target in images, f"{target} did not complete"
    console = tmp_path / "console.log"
    took = debian_system.boot_to_login(images[target], DISK_FORMATS[target], console, timeout=300)
    text = console.read_bytes().decode("utf-8", "replace")
    assert "Debian GNU/Linux 12" in text and "localhost login:" in text, text[-2000:]
    print(f"\n{target} ({DISK_FORMATS[target]}) booted to its login prompt in {took:.1f} s")


def read_file(raw_disk: Path, path: str) -> str | None:
    """A file of the image's ext4 root file system, read with debugfs (no mount); None if there is none."""
    shown = subprocess.run(
        ["debugfs", "-R", f"cat {path}", f"{raw_disk}?offset={PARTITION_OFFSET}"],
        capture_output=True,
        text=True,
        check=True,
    )
    # debugfs exits 0 either way; a missing file is only said on stderr.
    return None if "File not found" in shown.stderr else shown.stdout


def test_the_template_s_file_and_command_result_are_in_the_image(
    images: dict[str, Path], system: debian_system.RootFileSystem
) -> None:
    """The <file> is in the image with its text; the <command> ran in the installed system (its output file)."""
    assert (read_file(images["ec2"], FILE_PATH) or "").strip() == FILE_TEXT
    assert read_file(images["ec2"], COMMAND_RESULT) == system.package_versions()["openssh-server"]
    assert read_file(images["ec2"], "/etc/hostname") == "localhost\n", "the installer wrote the host name"
    assert read_file(images["ec2"], "/root/imgfac-post.sh") is None, "the post-install script is removed"


def test_the_manifest_lists_the_installed_packages(
    builds: dict[str, Build], daemon: Daemon, system: debian_system.RootFileSystem, tmp_path: Path
) -> None:
    """ICICLE and SPDX 2.3 SBOM of each image list openssh-server at the root file system's version."""
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    version = system.package_versions()["openssh-server"]
    installed = system.package_versions()
    for target, detail in builds["good"].final.items():
        icicle = daemon.get(detail["href"] + "/icicle")
        assert icicle.status_code == 200 and icicle.headers["Content-Type"].startswith("application/xml"), icicle.text
        packages = {element.get("name"): element for element in etree.fromstring(icicle.content).iter("package")}
        assert packages["openssh-server"].get("version") == version, target
        assert packages["openssh-server"].get("arch") == "amd64"
        assert set(packages) == set(installed), set(packages) ^ set(installed)
        sbom = daemon.get(detail["href"] + "/sbom")
        assert sbom.status_code == 200, sbom.text
        path = tmp_path / f"{target}.spdx.json"
        path.write_bytes(sbom.content)
        document = parse_file(str(path))
        assert validate_full_spdx_document(document, "SPDX-2.3") == []
        openssh = [package for package in document.packages if package.name == "openssh-server"]
        assert len(openssh) == 1 and openssh[0].version == version
        purls = [reference.locator for reference in openssh[0].external_references]
        assert f"pkg:deb/debian/openssh-server@{version}?arch=amd64" in {p.replace("%3A", ":") for p in purls}, purls
        assert len(document.packages) >= len(installed)


def test_an_install_without_a_boot_loader_fails_its_boot_test(
    builds: dict[str, Build], bootless_daemon: Daemon
) -> None:
    """An installer that leaves no boot loader: FAILED, the reason names the boot test and the missing boot
    loader (found before any VM: the disk's boot sector is empty); nothing to download."""
    detail = builds["bootless"].final["ec2"]
    assert detail["status"] == "FAILED", detail
    reason = detail["status_detail"]
    assert reason.startswith("the boot test failed: the disk has no boot loader"), reason
    log = log_of(bootless_daemon, detail)
    assert debian_system.NO_GRUB_MARKER in log, log[-3000:]
    assert bootless_daemon.get(detail["href"] + "/raw_image").status_code == 404
    assert detail["stages"][-1]["name"] == "boot_test", detail["stages"]
    print(f"\nthe bootless build's reason: {reason}")


def test_no_factory_domain_is_left(builds: dict[str, Build]) -> None:
    """Install and boot-test VMs of both builds are destroyed and undefined."""
    ids = {image["build_id"] for build in builds.values() for image in build.target_images.values()}
    # imgfac-<build id> installs, imgfac-boot-<build id> boot-tests.
    left = [name for name in imgfac_domains() if name.removeprefix("imgfac-").removeprefix("boot-") in ids]
    assert left == []
