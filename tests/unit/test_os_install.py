"""OS plug-ins' install(): boot files from an HTTP tree or an ISO, answer file in the initrd, sparse
disk, kernel command line, and the VM run (a fake virt layer), with progress, log and cancellation."""

import os
from types import SimpleNamespace

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock

from imgfac_twisted.os.debian import debian, ubuntu
from imgfac_twisted.os.fedora import centos, fedora, rhel
from imgfac_twisted.os.testing import FakeJob, FakeVirt, TreeResource, appended_members, gzip_newc
from imgfac_twisted.os.vm_install import InstallError, as_seen_from_guest
from imgfac_twisted.template import parse_template
from imgfac_twisted.testing import InlineDoor, result_of

INITRD = gzip_newc({"init": b"#!/bin/sh\n"})
KERNEL = b"\x7fKERNEL" * 1000
TREEINFO = b"[images-x86_64]\nkernel = boot/vmlinuz\ninitrd = boot/initrd.img\n"


def config(tmp_path, **overrides):
    values = dict(
        state_dir=str(tmp_path / "state"),
        install_download_timeout=60.0,
        install_download_max_bytes=10**6,
        install_iso_dir=str(tmp_path / "isos"),
        libvirt_domain_type="qemu",
        install_inactivity_timeout=30.0,
        install_timeout=600.0,
        install_memory_mib=1024,
    )
    values.update(overrides)
    return SimpleNamespace(**values)


class Setup:
    """A plug-in on fakes: HTTP tree in memory, inline disk door, fake virt, a job in tmp_path."""

    def __init__(self, tmp_path, factory, files, template_xml):
        self.tree = TreeResource(files)
        self.stub = StubTreq(self.tree)
        self.clock = Clock()
        self.virt = FakeVirt()
        self.connection = object()
        environment = SimpleNamespace(
            config=config(tmp_path), reactor=self.clock, disk_door=InlineDoor(), libvirt=self.connection
        )
        self.system = factory(environment, virt=self.virt, http_client=self.stub)
        work = tmp_path / "state" / "builds" / "b-1"
        work.mkdir(parents=True, exist_ok=True)
        self.job = FakeJob(
            template=parse_template(template_xml),
            build_id="b-1",
            image_path=str(work / "base.raw.partial"),
            work_dir=str(work),
            reactor=self.clock,
        )

    def start(self):
        self.running = self.system.install(self.job)
        for _ in range(50):
            self.stub.flush()
            if self.virt.calls or self.running.called:
                break
        return self.running

    @property
    def call(self):
        return self.virt.calls[-1]


def tdl(name="Fedora", version="39", install="<install type='url'><url>http://mirror.test/f39/</url></install>"):
    return (
        f"<template><name>t</name><os><name>{name}</name><version>{version}</version><arch>x86_64</arch>"
        f"{install}<rootpw>pw</rootpw></os><disk><size>64M</size></disk>"
        "<packages><package name='tmux'/></packages><kernelparam>console=tty1 quiet</kernelparam></template>"
    )


FEDORA_TREE = {"f39/images/pxeboot/vmlinuz": KERNEL, "f39/images/pxeboot/initrd.img": INITRD}


def test_fedora_url_install(tmp_path):
    """Kernel and initrd from the tree's standard paths, ks.cfg appended, a sparse 64 MiB disk, then the VM."""
    setup = Setup(tmp_path, fedora, FEDORA_TREE, tdl())
    running = setup.start()
    assert not running.called
    spec = setup.call["spec"]
    assert spec.name == "imgfac-b-1"
    assert spec.disk_path == setup.job.image_path and spec.iso_path is None
    assert os.path.getsize(spec.disk_path) == 64 * 1024**2
    assert os.stat(spec.disk_path).st_blocks == 0  # sparse
    assert open(spec.kernel_path, "rb").read() == KERNEL
    initrd = open(spec.initrd_path, "rb").read()
    assert initrd.startswith(INITRD)
    (name, mode, data), _trailer = appended_members(initrd, len(INITRD))
    assert (name, mode) == ("ks.cfg", 0o100644)
    assert b'url --url="http://mirror.test/f39/"' in data and b"tmux" in data and b"poweroff" in data
    args = spec.cmdline.split()
    assert args[:3] == ["inst.ks=file:/ks.cfg", "inst.repo=http://mirror.test/f39/", "inst.text"]
    assert [a for a in args if a.startswith("console=")][-1] == "console=ttyS0"
    assert "quiet" in args
    assert spec.memory_mib == 1024 and spec.console_log.startswith(setup.job.work_dir)
    assert setup.call["connection"] is setup.connection
    assert setup.call["domain_type"] == "qemu" and setup.call["clock"] is setup.clock
    assert (setup.call["inactivity_timeout"], setup.call["total_timeout"]) == (30.0, 600.0)
    assert setup.job.progress_seen[-1] == 10
    setup.virt.finish(progress=50)
    assert running.called and running.result is None
    assert 55 in setup.job.progress_seen and setup.job.progress_seen[-1] == 100
    lines = "\n".join(setup.job.lines)
    for expected in [
        "downloading http://mirror.test/f39/images/pxeboot/vmlinuz",
        "appended ks.cfg to the initrd",
        "starting the installer",
        "reboot: Power down",
    ]:
        assert expected in lines


def test_second_build_of_a_tree_downloads_nothing(tmp_path):
    """The tree's files (and the absence of .treeinfo) are cached: a second install asks the server nothing."""
    first = Setup(tmp_path, fedora, FEDORA_TREE, tdl())
    first.start()
    first.virt.finish()
    assert first.tree.requested == ["f39/.treeinfo", "f39/images/pxeboot/vmlinuz", "f39/images/pxeboot/initrd.img"]
    second = Setup(tmp_path, fedora, FEDORA_TREE, tdl())
    second.start()
    assert second.tree.requested == []
    assert second.virt.calls


def test_treeinfo_paths_are_used(tmp_path):
    """A tree with .treeinfo boots the kernel and initrd it names."""
    setup = Setup(
        tmp_path,
        rhel,
        {"f39/.treeinfo": TREEINFO, "f39/boot/vmlinuz": KERNEL, "f39/boot/initrd.img": INITRD},
        tdl("RHEL-6", "4"),
    )
    setup.start()
    assert open(setup.call["spec"].kernel_path, "rb").read() == KERNEL
    assert setup.call["spec"].cmdline.startswith("ks=file:/ks.cfg method=http://mirror.test/f39/ text")


def test_debian_url_install_with_preseed(tmp_path):
    """Debian: the netboot installer of the release, preseed.cfg appended, d-i options on the command line."""
    base = "debian/dists/bookworm/main/installer-amd64/current/images/netboot/debian-installer/amd64/"
    setup = Setup(
        tmp_path,
        debian,
        {base + "linux": KERNEL, base + "initrd.gz": INITRD},
        tdl("Debian", "12", "<install type='url'><url>http://mirror.test/debian/</url></install>"),
    )
    setup.start()
    spec = setup.call["spec"]
    (name, _, data), _ = appended_members(open(spec.initrd_path, "rb").read(), len(INITRD))
    assert name == "preseed.cfg" and b"d-i mirror/suite string bookworm" in data
    assert "preseed/file=/preseed.cfg" in spec.cmdline.split()
    assert spec.cmdline.split()[-1] == "console=ttyS0"


def test_ubuntu_falls_back_to_images(tmp_path):
    """When legacy-images is missing (404), Ubuntu's images/ path is used."""
    base = "ubuntu/dists/focal/main/installer-amd64/current/images/netboot/ubuntu-installer/amd64/"
    setup = Setup(
        tmp_path,
        ubuntu,
        {base + "linux": KERNEL, base + "initrd.gz": INITRD},
        tdl("Ubuntu", "20.04", "<install type='url'><url>http://mirror.test/ubuntu/</url></install>"),
    )
    setup.start()
    assert open(setup.call["spec"].kernel_path, "rb").read() == KERNEL


def test_tree_without_installer_fails_naming_it(tmp_path):
    """No kernel anywhere: the install fails naming the tree and the paths tried; no VM is started."""
    setup = Setup(tmp_path, centos, {}, tdl("CentOS", "7"))
    running = setup.start()
    failure = running.result
    running.addErrback(lambda _: None)
    assert str(failure.value).startswith(
        "CentOS 7 install failed: no installer kernel in the install tree http://mirror.test/f39/"
    )
    assert "images/pxeboot/vmlinuz" in str(failure.value)
    assert setup.virt.calls == []


def test_cancel_stops_the_vm(tmp_path):
    """Cancelling install() while the VM runs cancels run_install."""
    setup = Setup(tmp_path, fedora, FEDORA_TREE, tdl())
    running = setup.start()
    running.cancel()
    assert setup.virt.cancelled == 1
    failure = running.result
    running.addErrback(lambda _: None)
    assert failure.check(CancelledError)


def test_cancel_stops_a_download(tmp_path):
    """Cancelling install() during a download stops it; nothing is cached and no VM starts."""
    setup = Setup(tmp_path, fedora, FEDORA_TREE, tdl())
    setup.tree.stalled.add("f39/images/pxeboot/vmlinuz")
    running = setup.start()
    assert not running.called
    running.cancel()
    setup.stub.flush()
    failure = running.result
    running.addErrback(lambda _: None)
    assert failure.check(CancelledError)
    assert setup.virt.calls == []
    assert not os.path.exists(
        os.path.join(setup.system._downloader.tree_dir("http://mirror.test/f39/"), "images", "pxeboot", "vmlinuz")
    )


def test_iso_install(tmp_path):
    """A local ISO: kernel and initrd out of it, the ISO attached, install from cdrom."""
    from support.fake_installer import make_iso

    (tmp_path / "isos").mkdir()
    make_iso(tmp_path / "isos" / "f39.iso", {"images/pxeboot/vmlinuz": KERNEL, "images/pxeboot/initrd.img": INITRD})
    setup = Setup(tmp_path, fedora, {}, tdl(install="<install type='iso'><iso>file:f39.iso</iso></install>"))
    setup.start()
    spec = setup.call["spec"]
    assert spec.iso_path == str(tmp_path / "isos" / "f39.iso")
    assert open(spec.kernel_path, "rb").read() == KERNEL
    (_, _, data), _ = appended_members(open(spec.initrd_path, "rb").read(), len(INITRD))
    assert b"\ncdrom\n" in data
    assert "inst.repo=cdrom" in spec.cmdline.split()


def test_iso_checksum_mismatch_fails(tmp_path):
    """An ISO that does not match the template's sha256sum is refused before any VM."""
    from support.fake_installer import make_iso

    (tmp_path / "isos").mkdir()
    make_iso(tmp_path / "isos" / "f39.iso", {"images/pxeboot/vmlinuz": KERNEL, "images/pxeboot/initrd.img": INITRD})
    setup = Setup(
        tmp_path,
        fedora,
        {},
        tdl(install=f"<install type='iso'><iso>file:f39.iso</iso><sha256sum>{'0' * 64}</sha256sum></install>"),
    )
    running = setup.start()
    failure = running.result
    running.addErrback(lambda _: None)
    assert "does not match its sha256sum" in str(failure.value)
    assert setup.virt.calls == []


@pytest.mark.parametrize(
    "factory, names",
    [
        (fedora, ["Fedora"]),
        (rhel, ["RHEL", "RHEL-8", "rhel-7"]),
        (centos, ["CentOS", "CentOS-7"]),
        (debian, ["Debian"]),
        (ubuntu, ["ubuntu"]),
    ],
)
def test_handles_its_own_names_only(tmp_path, factory, names):
    """Each plug-in takes its family's OS names (Oz's RHEL-7 style too) and no other."""
    system = factory(SimpleNamespace(config=config(tmp_path), reactor=Clock(), disk_door=None))
    for name in names:
        assert system.handles(parse_template(tdl(name, "9")))
    assert not system.handles(parse_template(tdl("Mock", "1")))


def test_iso_by_url_is_downloaded_once(tmp_path):
    """An http ISO is downloaded into the cache (with progress), attached, and not downloaded again."""
    from support.fake_installer import make_iso

    iso = make_iso(tmp_path / "f39.iso", {"images/pxeboot/vmlinuz": KERNEL, "images/pxeboot/initrd.img": INITRD})
    files = {"isos/f39.iso": open(iso, "rb").read()}
    install = "<install type='iso'><iso>http://mirror.test/isos/f39.iso</iso></install>"
    first = Setup(tmp_path, fedora, files, tdl(install=install))
    first.start()
    spec = first.call["spec"]
    assert spec.iso_path.startswith(str(tmp_path / "state" / "cache" / "trees"))
    assert open(spec.iso_path, "rb").read() == files["isos/f39.iso"]
    assert 0 < max(first.job.progress_seen) <= 10
    second = Setup(tmp_path, fedora, files, tdl(install=install))
    second.start()
    assert first.tree.requested == ["isos/f39.iso"] and second.tree.requested == []
    assert second.call["spec"].iso_path == spec.iso_path


def test_iso_not_an_http_url(tmp_path):
    """An ISO location that is neither http(s) nor file: is refused naming it."""
    setup = Setup(tmp_path, fedora, {}, tdl(install="<install type='iso'><iso>ftp://x/f.iso</iso></install>"))
    running = setup.start()
    failure = running.result
    running.addErrback(lambda _: None)
    assert "the ISO URL 'ftp://x/f.iso' is not an http or https URL" in str(failure.value)


def test_build_log_hides_tree_password(tmp_path):
    """A tree URL with a password: the installer gets it, the build log shows ***."""
    url = "http://user:hunter2@mirror.test/f39/"
    setup = Setup(tmp_path, fedora, FEDORA_TREE, tdl(install=f"<install type='url'><url>{url}</url></install>"))
    setup.start()
    assert f"inst.repo={url}" in setup.call["spec"].cmdline.split()
    assert not any("hunter2" in line for line in setup.job.lines)
    assert any("inst.repo=http://user:***@mirror.test/f39/" in line for line in setup.job.lines)


def test_disk_errors_are_reported_without_paths(tmp_path):
    """An OS error (here: the work dir is gone) fails the install naming the OS and the file, not the folders."""
    setup = Setup(tmp_path, fedora, FEDORA_TREE, tdl())
    os.rmdir(setup.job.work_dir)
    running = setup.start()
    failure = running.result
    running.addErrback(lambda _: None)
    message = str(failure.value)
    assert message.startswith("Fedora 39 install failed: No such file or directory")
    assert str(tmp_path) not in message


@pytest.mark.parametrize(
    "url, seen",
    [
        ("http://127.0.0.1:8000/f39/", "http://10.0.2.2:8000/f39/"),
        ("http://localhost/f39/", "http://10.0.2.2/f39/"),
        ("http://user:pw@127.0.1.1:81/x/?a=b", "http://user:pw@10.0.2.2:81/x/?a=b"),
        ("http://[::1]:8080/tree/", "http://10.0.2.2:8080/tree/"),
        ("http://mirror.test/f39/", "http://mirror.test/f39/"),
        ("http://127.example.com/f39/", "http://127.example.com/f39/"),
        (None, None),
    ],
)
def test_a_loopback_tree_url_is_given_to_the_guest_as_the_host_s_address(url, seen):
    """Inside the VM 127.0.0.1 is the guest itself; QEMU's user network shows this host as 10.0.2.2."""
    assert as_seen_from_guest(url) == seen


def test_the_manifest_printed_on_the_console_is_recorded_not_logged(tmp_path):
    """The answer file's manifest lines become the job's package list (epochs kept), not build log lines;
    the stages are downloading, then installing."""
    setup = Setup(tmp_path, fedora, FEDORA_TREE, tdl())
    running = setup.start()
    setup.virt.finish()
    assert running.result is None
    assert setup.job.manifest == [("bash", "5.2.15-2+b7", "amd64"), ("openssh-server", "1:9.2p1-2+deb12u3", "amd64")]
    lines = "\n".join(setup.job.lines)
    assert "IMGFAC-PKG" not in lines and "package manifest read from the console: 2 packages" in lines
    assert [stage.value for stage in setup.job.stages] == ["downloading", "installing"]


def test_an_install_without_a_manifest_fails_saying_so(tmp_path):
    """A guest that powers off without printing the manifest (its answer file did not finish) fails the install."""
    setup = Setup(tmp_path, fedora, FEDORA_TREE, tdl())
    running = setup.start()
    setup.virt.finish(manifest=None)
    with pytest.raises(InstallError, match="without printing the package manifest"):
        result_of(running)
    assert setup.job.manifest is None
