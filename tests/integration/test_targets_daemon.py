"""Target images through the real daemon: one Mock-OS build for every target, downloaded and checked.

The images are checked with the real ``qemu-img info`` and Python's
tarfile, never with the factory's own code.  Failure, progress and
cancellation of a conversion are driven through a ``qemu-img`` wrapper put
first on the daemon's PATH, which runs the real qemu-img unless a mode file
tells it to fail, to go slowly, or to hang.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from support.daemon import Daemon, DaemonPool, mock_config

GIB = 1024**3
MIB = 1024**2
TEMPLATE = (
    "<template><name>mocky</name><os><name>Mock</name><version>1</version><arch>x86_64</arch>"
    "<install type='url'><url>http://example.invalid/</url></install></os>"
    "<disk><size>1</size></disk><description>m</description></template>"
)
#: An operating system no installed plug-in installs.
PLAN9 = TEMPLATE.replace("<name>Mock</name>", "<name>Plan9</name>")
ALL_TARGETS = ["ec2", "openstack-kvm", "rhevm", "vsphere", "ova", "hyperv", "gce", "mock"]
BUILD_TIMEOUT = 240.0
OVF_NS = "http://schemas.dmtf.org/ovf/envelope/1"
#: The file each target leaves in its builder's directory.
IMAGE_NAMES = {
    "ec2": "mocky-ec2.raw",
    "openstack-kvm": "mocky-openstack-kvm.qcow2",
    "rhevm": "mocky-rhevm.qcow2",
    "vsphere": "mocky-vsphere.vmdk",
    "ova": "mocky-ova.ova",
    "hyperv": "mocky-hyperv.vhd",
    "gce": "mocky-gce.tar.gz",
    "mock": "mock.img",
}

#: What ``qemu-img info`` must show of each target's download: the format to name, and fields.
QEMU_CHECKS: dict[str, tuple[str, dict[str, Any]]] = {
    "ec2": ("raw", {}),
    "openstack-kvm": ("qcow2", {}),
    "rhevm": ("qcow2", {"compat": "0.10"}),
    "vsphere": ("vmdk", {"create-type": "streamOptimized"}),
    # A fixed VHD probes as raw: the format must be named.
    "hyperv": ("vpc", {}),
}

WRAPPER = """#!/bin/bash
# qemu-img as the tests want it: real, unless the mode file says otherwise for a conversion.
mode=$(cat "$IMGFAC_TEST_QEMU_MODE" 2>/dev/null)
if [ "$1" = convert ]; then
  target="${@: -1}"
  case "$mode" in
    fail)
      echo "half an image" > "$target"
      echo "qemu-img: error while writing at byte 1048576: No space left on device (simulated)" >&2
      exit 1;;
    slow)
      for percent in 10.00 20.00 30.00 40.00 50.00 60.00 70.00 80.00 90.00; do
        printf '    (%s/100%%)\\r' "$percent"; sleep 0.3
      done;;
    hang)
      echo "half an image" > "$target"
      printf '    (30.00/100%%)\\r'
      echo $$ > "$IMGFAC_TEST_QEMU_PIDFILE"
      exec sleep 120;;
  esac
fi
exec "$IMGFAC_TEST_REAL_QEMU_IMG" "$@"
"""


# -- helpers ------------------------------------------------------------------


def qemu_info(path: Path, image_format: str | None = None) -> dict[str, Any]:
    """The real ``qemu-img info --output=json`` of ``path``."""
    argv = ["qemu-img", "info", "--output=json", *(["-f", image_format] if image_format else []), str(path)]
    return json.loads(subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout)


def download(daemon: Daemon, href: str, path: Path) -> tuple[int, str]:
    """Save ``href``'s raw_image at ``path`` (zero runs as holes, to spare the disk); return size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    with daemon.get(href + "/raw_image", stream=True, timeout=120) as answer, open(path, "wb") as stream:
        assert answer.status_code == 200, answer.text[:500]
        assert "Content-Encoding" not in answer.headers
        for chunk in answer.iter_content(MIB):
            digest.update(chunk)
            size += len(chunk)
            if chunk.count(0) == len(chunk):
                stream.seek(len(chunk), os.SEEK_CUR)
            else:
                stream.write(chunk)
        stream.truncate(size)
    return size, digest.hexdigest()


def data_contains(path: Path, needle: bytes) -> bool:
    """True when ``needle`` is in the file's data (holes skipped)."""
    with open(path, "rb") as stream:
        fd = stream.fileno()
        end = os.fstat(fd).st_size
        offset = 0
        while offset < end:
            try:
                offset = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                return False
            stream.seek(offset)
            chunk = stream.read(MIB + len(needle))
            if needle in chunk:
                return True
            offset += MIB
    return False


def builder_files(daemon: Daemon, builder_id: str, under: str = "builders") -> set[str]:
    """The names in the builder's work directory (or, ``under="images"``, in its image store folder)."""
    return set(os.listdir(daemon.state_dir / under / builder_id))


def start_build(daemon: Daemon, template: str, targets: str) -> dict[str, dict[str, Any]]:
    """POST a build; its target images by target name (the answer lists them in the order asked)."""
    answer = daemon.post("/imagefactory/images", data={"targets": targets, "template": template})
    assert answer.status_code == 202, answer.text
    return dict(zip(targets.split(","), answer.json()["build"]["target_images"], strict=True))


def wait_all(daemon: Daemon, images: dict[str, dict[str, Any]], timeout: float = BUILD_TIMEOUT) -> dict[str, Any]:
    """Each target image's details once final, by target name."""
    return {name: daemon.wait_final(image["href"], timeout=timeout) for name, image in images.items()}


# -- one build of every target -------------------------------------------------


@pytest.fixture(scope="module")
def targets_daemon(module_daemon_factory: DaemonPool) -> Daemon:
    return module_daemon_factory.make(mock_config(), name="targets")


@pytest.fixture(scope="module")
def built(targets_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every target of one Mock-OS build: details, download path, downloaded size and SHA-256."""
    images = start_build(targets_daemon, TEMPLATE, ",".join(ALL_TARGETS))
    details = wait_all(targets_daemon, images)
    folder = tmp_path_factory.mktemp("downloads")
    result = {}
    for name, detail in details.items():
        assert detail["status"] == "COMPLETED", f"{name}: {detail}"
        path = folder / f"{name}.image"
        size, sha256 = download(targets_daemon, images[name]["href"], path)
        result[name] = {"detail": detail, "path": path, "size": size, "sha256": sha256}
    return result


def test_every_target_completes(built: dict[str, Any]) -> None:
    """One POST with eight targets: every one COMPLETED at 100 %."""
    assert sorted(built) == sorted(ALL_TARGETS)
    for name, image in built.items():
        assert image["detail"]["completed"] == 100, name


def test_downloads_are_the_recorded_images(built: dict[str, Any]) -> None:
    """Each download has the image_size and image_sha256 of the target image's details."""
    for name, image in built.items():
        assert image["size"] == image["detail"]["image_size"], name
        assert image["sha256"] == image["detail"]["image_sha256"], name


@pytest.mark.parametrize("target", sorted(QEMU_CHECKS))
def test_disk_image_format_and_size(built: dict[str, Any], target: str) -> None:
    """qemu-img reads each disk image in its format, with the base image's virtual size."""
    image_format, specific = QEMU_CHECKS[target]
    info = qemu_info(built[target]["path"], image_format if target == "hyperv" else None)
    assert info["format"] == image_format
    assert info["virtual-size"] == GIB
    data = info.get("format-specific", {}).get("data", {})
    for key, value in specific.items():
        assert data.get(key) == value, (key, data)


def test_hyperv_is_a_fixed_vhd(built: dict[str, Any]) -> None:
    """A fixed VHD: the data (a whole number of MiB) and a 512-byte footer starting 'conectix'."""
    path = built["hyperv"]["path"]
    assert built["hyperv"]["size"] == GIB + 512 and GIB % MIB == 0
    with open(path, "rb") as stream:
        stream.seek(-512, os.SEEK_END)
        footer = stream.read()
    assert footer.startswith(b"conectix")
    assert int.from_bytes(footer[60:64], "big") == 2, "disk type 2 is fixed"
    assert qemu_info(path)["format"] == "raw", "a fixed VHD probes as raw (why the format is named)"


def test_ec2_holds_the_mock_disk(built: dict[str, Any]) -> None:
    """The raw image is the Mock OS disk: an MBR, and the ext2 file named after the template."""
    path = built["ec2"]["path"]
    with open(path, "rb") as stream:
        assert stream.read(512)[510:] == b"\x55\xaa"
    assert data_contains(path, b"mocky: m\n")


def test_gce_tarball(built: dict[str, Any]) -> None:
    """A gzipped GNU tar with exactly one sparse member disk.raw of the base image's size."""
    path = built["gce"]["path"]
    with open(path, "rb") as stream:
        assert stream.read(2) == b"\x1f\x8b"
    with gzip.open(path) as stream:
        assert stream.read(512)[257:265] == b"ustar  \x00", "the (old) GNU tar magic"
    with tarfile.open(path, "r:gz") as archive:
        members = archive.getmembers()
        assert [member.name for member in members] == ["disk.raw"]
        assert members[0].size == GIB and members[0].issparse()
        head = archive.extractfile(members[0]).read(512)
    assert head[510:] == b"\x55\xaa"


def test_ova(built: dict[str, Any], tmp_path: Path) -> None:
    """An OVA: the OVF descriptor first, then the streamOptimized vmdk it describes."""
    with tarfile.open(built["ova"]["path"], "r:") as archive:
        members = archive.getmembers()
        assert [member.name.rsplit(".", 1)[-1] for member in members] == ["ovf", "vmdk"]
        assert all(member.type == tarfile.REGTYPE for member in members)
        ovf = etree.fromstring(archive.extractfile(members[0]).read())
        disk_path = tmp_path / members[1].name
        disk_path.write_bytes(archive.extractfile(members[1]).read())
    with open(built["ova"]["path"], "rb") as stream:
        for member in members:
            stream.seek(member.offset + 257)
            assert stream.read(8) == b"ustar\x0000", "POSIX ustar headers, as the OVF standard asks"
    ns = {"ovf": OVF_NS}
    reference = ovf.find("ovf:References/ovf:File", ns)
    disk = ovf.find("ovf:DiskSection/ovf:Disk", ns)
    assert reference.get(f"{{{OVF_NS}}}href") == members[1].name
    assert int(reference.get(f"{{{OVF_NS}}}size")) == members[1].size
    assert int(disk.get(f"{{{OVF_NS}}}capacity")) == GIB
    assert disk.get(f"{{{OVF_NS}}}fileRef") == reference.get(f"{{{OVF_NS}}}id")
    assert disk.get(f"{{{OVF_NS}}}format").endswith("#streamOptimized")
    info = qemu_info(disk_path)
    assert info["format"] == "vmdk" and info["virtual-size"] == GIB
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"


def test_builder_logs_show_the_work(targets_daemon: Daemon, built: dict[str, Any]) -> None:
    """The log has the qemu-img command line, its duration and the check."""
    log = targets_daemon.get(f"/imagefactory/builders/{built['rhevm']['detail']['id']}/log").text
    assert "qemu-img convert -p -f raw -O qcow2 -o compat=0.10" in log
    assert "done in" in log and "checked" in log and "compat 0.10" in log
    gce_log = targets_daemon.get(f"/imagefactory/builders/{built['gce']['detail']['id']}/log").text
    assert "--format=oldgnu" in gce_log and "disk.raw" in gce_log


def test_only_the_finished_image_is_left(targets_daemon: Daemon, built: dict[str, Any]) -> None:
    """A builder's directory keeps its log; its image, named after template and target, is in the image store
    (state_dir/images by default); no leftovers."""
    for name, image in built.items():
        files = builder_files(targets_daemon, image["detail"]["id"])
        stored = builder_files(targets_daemon, image["detail"]["id"], under="images")
        assert (files, stored) == ({"builder.log"}, {IMAGE_NAMES[name]}), name


def test_unknown_os_fails_naming_it(targets_daemon: Daemon) -> None:
    """A template of an OS no plug-in installs ends FAILED, naming the OS and the ones this daemon installs."""
    images = start_build(targets_daemon, PLAN9, "ec2")
    detail = wait_all(targets_daemon, images, timeout=30)["ec2"]
    assert detail["status"] == "FAILED"
    assert "no installer for the operating system 'Plan9'" in detail["status_detail"]
    assert "Fedora" in detail["status_detail"] and "Debian" in detail["status_detail"]


def test_unknown_target_is_a_400_naming_the_known(targets_daemon: Daemon) -> None:
    answer = targets_daemon.post("/imagefactory/images", data={"targets": "ec2,vbox", "template": TEMPLATE})
    assert answer.status_code == 400
    message = answer.json()["message"]
    for name in ALL_TARGETS:
        assert name in message


# -- failure, progress and cancellation, through a qemu-img wrapper -------------


@pytest.fixture(scope="module")
def wrapped(module_daemon_factory: DaemonPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A daemon whose qemu-img is the wrapper; ``mode`` sets what its next conversions do."""
    folder = tmp_path_factory.mktemp("wrapper")
    script = folder / "qemu-img"
    script.write_text(WRAPPER)
    script.chmod(0o755)
    mode, pidfile = folder / "mode", folder / "pid"
    mode.write_text("")
    real = subprocess.run(["which", "qemu-img"], capture_output=True, text=True, check=True).stdout.strip()
    with pytest.MonkeyPatch.context() as patch:
        # The daemon inherits this environment when it starts.
        patch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
        patch.setenv("IMGFAC_TEST_QEMU_MODE", str(mode))
        patch.setenv("IMGFAC_TEST_QEMU_PIDFILE", str(pidfile))
        patch.setenv("IMGFAC_TEST_REAL_QEMU_IMG", real)
        daemon = module_daemon_factory.make(mock_config(), name="wrapped")
    yield {"daemon": daemon, "mode": mode, "pidfile": pidfile}


def test_failed_conversion_leaves_no_image(wrapped: dict[str, Any]) -> None:
    """qemu-img fails half-way: FAILED with its message; nothing but the log is left."""
    daemon = wrapped["daemon"]
    wrapped["mode"].write_text("fail")
    images = start_build(daemon, TEMPLATE, "openstack-kvm,vsphere")
    details = wait_all(daemon, images, timeout=60)
    for name, detail in details.items():
        assert detail["status"] == "FAILED", detail
        assert "failed" in detail["status_detail"] and "No space left on device" in detail["status_detail"]
        assert builder_files(daemon, detail["id"]) == {"builder.log"}, name
        assert daemon.get(images[name]["href"] + "/raw_image").status_code == 404


def test_progress_moves_between_50_and_100(wrapped: dict[str, Any]) -> None:
    """While qemu-img converts, the builder's completed is seen above 50 and below 100."""
    daemon = wrapped["daemon"]
    wrapped["mode"].write_text("slow")
    image = start_build(daemon, TEMPLATE, "vsphere")["vsphere"]
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = daemon.get_json(f"/imagefactory/builders/{image['id']}")
        if status["status"] in ("COMPLETED", "FAILED"):
            break
        if status["status"] == "BUILDING" and (not seen or seen[-1] != status["completed"]):
            seen.append(status["completed"])
        time.sleep(0.05)
    assert status["status"] == "COMPLETED", status
    assert any(50 < value < 100 for value in seen), seen
    assert seen == sorted(seen), "progress never goes back"


def test_cancelled_conversion_is_killed_and_removed(wrapped: dict[str, Any]) -> None:
    """DELETE during a conversion: qemu-img is killed, the builder FAILED, no image left."""
    daemon = wrapped["daemon"]
    wrapped["mode"].write_text("hang")
    wrapped["pidfile"].unlink(missing_ok=True)
    image = start_build(daemon, TEMPLATE, "rhevm")["rhevm"]
    deadline = time.monotonic() + 60
    while not wrapped["pidfile"].exists() or not wrapped["pidfile"].read_text().strip():
        assert time.monotonic() < deadline, "the conversion did not start"
        time.sleep(0.05)
    pid = int(wrapped["pidfile"].read_text())
    daemon.poll(f"/imagefactory/builders/{image['id']}", lambda doc: doc["completed"] >= 50, timeout=30)
    assert daemon.delete(f"/imagefactory/builders/{image['id']}").status_code == 202
    detail = daemon.wait_final(image["href"], timeout=30)
    assert detail["status"] == "FAILED" and "cancelled" in detail["status_detail"]
    assert builder_files(daemon, image["id"]) == {"builder.log"}
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid):
        assert time.monotonic() < deadline, "qemu-img was not killed"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"
