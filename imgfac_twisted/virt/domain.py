"""The libvirt domain XML of an installer's virtual machine.

Built with lxml from the install's settings, so that no path or kernel
command line can change the document's structure.
"""

from __future__ import annotations

from lxml import etree

from .spec import InstallSpec

#: The domain types the factory boots: ``kvm`` (hardware virtualisation) or
#: ``qemu`` (software emulation, for hosts without usable KVM).
DOMAIN_TYPES = ("kvm", "qemu")
#: The installer's disk as the guest sees it; block statistics are read for it.
DISK_TARGET = "vda"


def domain_xml(spec: InstallSpec, domain_type: str) -> str:
    """The domain XML booting ``spec``'s kernel and initrd directly (or its disk, when it names no kernel),
    with its disk, console and network."""
    if domain_type not in DOMAIN_TYPES:
        raise ValueError(f"domain type must be one of {', '.join(DOMAIN_TYPES)}, not {domain_type!r}")
    domain = etree.Element("domain", type=domain_type)
    _text(domain, "name", spec.name)
    _text(domain, "memory", str(spec.memory_mib), unit="MiB")
    _text(domain, "vcpu", str(spec.vcpus))
    _boot(domain, spec)
    # libvirt's default CPU model (qemu64) lacks x86-64-v2, which RHEL 9 and
    # its rebuilds require: give the guest the host's CPU under KVM, and
    # everything QEMU can emulate ("-cpu max") under software emulation.
    etree.SubElement(domain, "cpu", mode="host-passthrough" if domain_type == "kvm" else "maximum", check="none")
    features = etree.SubElement(domain, "features")
    # ACPI lets the guest's power-off end the domain (QEMU exits).
    etree.SubElement(features, "acpi")
    etree.SubElement(features, "apic")
    etree.SubElement(domain, "clock", offset="utc")
    # Every way the guest stops ends the domain; the watcher then tells them
    # apart by libvirt's shut-off reason: SHUTDOWN (the guest powered off or
    # rebooted: an installer's last step) or CRASHED (QEMU died, or a guest
    # panic reported through a panic device).  Keeping a crashed domain
    # ("preserve") would only hold the QEMU process until the cleanup.
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        _text(domain, event, "destroy")
    _devices(domain, spec)
    return etree.tostring(domain, encoding="unicode")


def _boot(domain: etree._Element, spec: InstallSpec) -> None:
    os_element = etree.SubElement(domain, "os")
    _text(os_element, "type", "hvm", arch="x86_64")
    if spec.kernel_path is None:
        # The disk boots itself, through the firmware and its boot loader.
        etree.SubElement(os_element, "boot", dev="hd")
        # A firmware that finds no bootable disk resets at once instead of
        # retrying every minute: the watch sees the guest stop.
        etree.SubElement(os_element, "bios", rebootTimeout="0")
        return
    _text(os_element, "kernel", spec.kernel_path)
    if spec.initrd_path is not None:
        _text(os_element, "initrd", spec.initrd_path)
    _text(os_element, "cmdline", spec.cmdline or "")


def _devices(domain: etree._Element, spec: InstallSpec) -> None:
    devices = etree.SubElement(domain, "devices")
    disk = etree.SubElement(devices, "disk", type="file", device="disk")
    # An installer's disk is thrown away if the install fails: no need to
    # pay for host flushes while it runs (QEMU still flushes when it exits).
    etree.SubElement(disk, "driver", name="qemu", type=spec.disk_format, cache="unsafe")
    etree.SubElement(disk, "source", file=spec.disk_path)
    etree.SubElement(disk, "target", dev=DISK_TARGET, bus="virtio")
    if spec.iso_path is not None:
        cdrom = etree.SubElement(devices, "disk", type="file", device="cdrom")
        etree.SubElement(cdrom, "driver", name="qemu", type="raw")
        etree.SubElement(cdrom, "source", file=spec.iso_path)
        etree.SubElement(cdrom, "target", dev="sda", bus="sata")
        etree.SubElement(cdrom, "readonly")
    # User-mode networking: URL installers reach the network through QEMU,
    # with no bridge or libvirt network to set up on the host.
    interface = etree.SubElement(devices, "interface", type="user")
    etree.SubElement(interface, "model", type="virtio")
    serial = etree.SubElement(devices, "serial", type="file")
    etree.SubElement(serial, "source", path=spec.console_log)
    etree.SubElement(serial, "target", port="0")
    console = etree.SubElement(devices, "console", type="file")
    etree.SubElement(console, "source", path=spec.console_log)
    etree.SubElement(console, "target", type="serial", port="0")
    # No <graphics>: nobody watches a screen; everything goes to the serial log.
    if spec.kernel_path is None:
        # A disk booting through its boot loader gets a display adapter, as a
        # cloud's machine has one: GRUB's console writes through the BIOS video
        # services and, on a machine with none, stops before the kernel.
        video = etree.SubElement(devices, "video")
        etree.SubElement(video, "model", type="vga")
    etree.SubElement(devices, "memballoon", model="none")


def _text(parent: etree._Element, tag: str, text: str, **attributes: str) -> etree._Element:
    element = etree.SubElement(parent, tag, attributes)
    element.text = text
    return element
