"""The OVF 1.0 descriptor of an OVA: one virtual system with one streamOptimized vmdk disk.

It is minimal but complete: the file reference (name and size), the disk
(its capacity in bytes and format), and the virtual hardware a disk needs
to be attached (a CPU, memory, a SCSI controller and the disk on it).  The
template says nothing of CPUs or memory, so small defaults are written; the
importing cloud lets the user change them.
"""

from __future__ import annotations

from lxml import etree

OVF_NS = "http://schemas.dmtf.org/ovf/envelope/1"
RASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
NAMESPACES = {None: OVF_NS, "ovf": OVF_NS, "rasd": RASD_NS, "vssd": VSSD_NS}

STREAM_OPTIMIZED = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
#: The hardware family vSphere (the OVA's main consumer) reads; others accept it too.
SYSTEM_TYPE = "vmx-07"
CPUS = 1
MEMORY_MIB = 1024
#: CIM_OperatingSystem's "Other": the template's OS is named in the section's Description.
OS_OTHER = "1"
FILE_ID = "file1"
DISK_ID = "vmdisk1"

#: CIM resource types of the hardware items.
_CPU, _MEMORY, _SCSI, _DISK = 3, 4, 6, 17


def _ovf(name: str) -> str:
    return f"{{{OVF_NS}}}{name}"


def _child(parent: etree._Element, tag: str, text: str | None = None, **attributes: str) -> etree._Element:
    """Add an element (``ovf:`` attributes by their bare names) and return it."""
    namespace, _, local = tag.rpartition(":")
    element = etree.SubElement(
        parent, f"{{{NAMESPACES[namespace or None]}}}{local}", {_ovf(key): value for key, value in attributes.items()}
    )
    if text is not None:
        element.text = text
    return element


def _item(hardware: etree._Element, fields: dict[str, str]) -> None:
    """A hardware Item; its rasd elements in alphabetical order, as the CIM schema's sequence requires."""
    item = _child(hardware, "Item")
    for name in sorted(fields):
        _child(item, f"rasd:{name}", fields[name])


def descriptor(name: str, os_description: str, disk_file: str, disk_file_size: int, capacity: int) -> bytes:
    """The OVF envelope (UTF-8 XML) of a virtual system ``name`` whose disk is ``disk_file``."""
    envelope = etree.Element(_ovf("Envelope"), nsmap=NAMESPACES)  # type: ignore[arg-type]  # None: the default namespace
    references = _child(envelope, "References")
    _child(references, "File", href=disk_file, id=FILE_ID, size=str(disk_file_size))
    disks = _child(envelope, "DiskSection")
    _child(disks, "Info", "The virtual disk")
    _child(
        disks,
        "Disk",
        capacity=str(capacity),
        capacityAllocationUnits="byte",
        diskId=DISK_ID,
        fileRef=FILE_ID,
        format=STREAM_OPTIMIZED,
    )
    system = _child(envelope, "VirtualSystem", id=name)
    _child(system, "Info", "A virtual machine made by Image Factory")
    _child(system, "Name", name)
    operating_system = _child(system, "OperatingSystemSection", id=OS_OTHER)
    _child(operating_system, "Info", "The guest operating system")
    _child(operating_system, "Description", os_description)
    _hardware(system, name)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _hardware(system: etree._Element, name: str) -> None:
    """The VirtualHardwareSection: a CPU, memory, a SCSI controller and the disk on it."""
    hardware = _child(system, "VirtualHardwareSection")
    _child(hardware, "Info", "Virtual hardware requirements")
    family = _child(hardware, "System")
    for field, value in (
        ("ElementName", "Virtual Hardware Family"),
        ("InstanceID", "0"),
        ("VirtualSystemIdentifier", name),
        ("VirtualSystemType", SYSTEM_TYPE),
    ):
        _child(family, f"vssd:{field}", value)
    _item(
        hardware,
        {
            "AllocationUnits": "hertz * 10^6",
            "Description": "Number of virtual CPUs",
            "ElementName": f"{CPUS} virtual CPU",
            "InstanceID": "1",
            "ResourceType": str(_CPU),
            "VirtualQuantity": str(CPUS),
        },
    )
    _item(
        hardware,
        {
            "AllocationUnits": "byte * 2^20",
            "Description": "Memory size",
            "ElementName": f"{MEMORY_MIB} MB of memory",
            "InstanceID": "2",
            "ResourceType": str(_MEMORY),
            "VirtualQuantity": str(MEMORY_MIB),
        },
    )
    _item(
        hardware,
        {
            "Address": "0",
            "Description": "SCSI controller",
            "ElementName": "SCSI controller 0",
            "InstanceID": "3",
            "ResourceSubType": "lsilogic",
            "ResourceType": str(_SCSI),
        },
    )
    _item(
        hardware,
        {
            "AddressOnParent": "0",
            "ElementName": "Hard disk 1",
            "HostResource": f"ovf:/disk/{DISK_ID}",
            "InstanceID": "4",
            "Parent": "3",
            "ResourceType": str(_DISK),
        },
    )
