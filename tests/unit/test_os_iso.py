"""ISO installs: the kernel and initrd taken out of an ISO made here with pycdlib; local ISO paths."""

import os

import pytest

from imgfac_twisted.errors import ImageFactoryError, InvalidTemplate
from imgfac_twisted.os.iso import extract_boot_files, local_iso_path
from imgfac_twisted.os.trees import BootFiles, fedora_iso_paths
from support.fake_installer import make_iso

KERNEL, INITRD = b"kernel-bytes" * 100, b"initrd-bytes" * 50


@pytest.mark.parametrize("rock_ridge, joliet", [(True, True), (False, True), (False, False)])
def test_fedora_pxeboot_files_come_out(tmp_path, rock_ridge, joliet):
    """Found by their standard path through Rock Ridge, Joliet or plain ISO 9660 names."""
    iso = make_iso(
        tmp_path / "f.iso", {"images/pxeboot/vmlinuz": KERNEL, "images/pxeboot/initrd.img": INITRD}, rock_ridge, joliet
    )
    kernel, initrd = extract_boot_files(iso, fedora_iso_paths(), "x86_64", str(tmp_path))
    assert open(kernel, "rb").read() == KERNEL and open(initrd, "rb").read() == INITRD


def test_isolinux_is_the_fallback(tmp_path):
    """Older Fedora-family ISOs keep the installer in isolinux/."""
    iso = make_iso(tmp_path / "f.iso", {"isolinux/vmlinuz": KERNEL, "isolinux/initrd.img": INITRD})
    kernel, _ = extract_boot_files(iso, fedora_iso_paths(), "x86_64", str(tmp_path))
    assert open(kernel, "rb").read() == KERNEL


def test_treeinfo_on_the_iso_wins(tmp_path):
    """The ISO's .treeinfo names where the installer is."""
    treeinfo = b"[images-x86_64]\nkernel = boot/k\ninitrd = boot/i\n"
    iso = make_iso(
        tmp_path / "f.iso",
        {
            ".treeinfo": treeinfo,
            "boot/k": KERNEL,
            "boot/i": INITRD,
            "images/pxeboot/vmlinuz": b"wrong",
            "images/pxeboot/initrd.img": b"wrong",
        },
    )
    kernel, initrd = extract_boot_files(iso, fedora_iso_paths(), "x86_64", str(tmp_path))
    assert open(kernel, "rb").read() == KERNEL and open(initrd, "rb").read() == INITRD


def test_no_installer_names_what_was_looked_for(tmp_path):
    """An ISO without the installer fails naming the paths tried, leaving no partial files."""
    iso = make_iso(tmp_path / "f.iso", {"readme.txt": b"hi"})
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ImageFactoryError) as info:
        extract_boot_files(iso, [BootFiles("install.amd/vmlinuz", "install.amd/initrd.gz")], "x86_64", str(out))
    assert "install.amd/vmlinuz" in str(info.value)
    assert os.listdir(out) == []


def test_not_an_iso(tmp_path):
    """A file that is not an ISO fails saying so."""
    path = tmp_path / "junk.iso"
    path.write_bytes(b"\0" * 70000)
    with pytest.raises(ImageFactoryError) as info:
        extract_boot_files(str(path), fedora_iso_paths(), "x86_64", str(tmp_path))
    assert "junk.iso cannot be read as an ISO" in str(info.value)


def test_local_isos_only_inside_the_configured_folder(tmp_path):
    """file:NAME resolves inside install_iso_dir; outside it, or without the option, it is refused."""
    folder = tmp_path / "isos"
    folder.mkdir()
    (folder / "f.iso").write_bytes(b"x")
    (tmp_path / "secret").write_bytes(b"x")
    assert local_iso_path("file:f.iso", str(folder)) == str(folder / "f.iso")
    assert local_iso_path(f"file://{folder}/f.iso", str(folder)) == str(folder / "f.iso")
    for bad in ("file:../secret", f"file://{tmp_path}/secret", "file:missing.iso"):
        with pytest.raises(InvalidTemplate):
            local_iso_path(bad, str(folder))
    with pytest.raises(InvalidTemplate) as info:
        local_iso_path("file:f.iso", None)
    assert "install_iso_dir" in str(info.value)
