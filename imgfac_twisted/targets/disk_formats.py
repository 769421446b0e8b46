"""The disk image targets: the table of what each target makes, and their entry points.

How a target makes its image is in ``disk_image`` (the shared steps and the
single-file formats) and ``disk_archives`` (OVA, GCE).  ``TARGETS`` is the
one table of what each target makes.
"""

from __future__ import annotations

from ..processes import run_process
from ..registry import PluginEnvironment
from .disk_archives import GceTarget, OvaTarget
from .disk_image import (
    QCOW2,
    QCOW2_COMPAT_010,
    RAW,
    VHD_FIXED,
    VMDK_STREAM,
    DiskFormat,
    DiskImageTarget,
    FixedVhdTarget,
    RawCopyTarget,
)
from .qemu import Runner

# -- the table and the entry points ------------------------------------------

#: Every target this module provides: the class that makes it and the disk format it holds.
TARGETS: dict[str, tuple[type[DiskImageTarget], DiskFormat]] = {
    "ec2": (RawCopyTarget, RAW),
    "openstack-kvm": (DiskImageTarget, QCOW2),
    "rhevm": (DiskImageTarget, QCOW2_COMPAT_010),
    "vsphere": (DiskImageTarget, VMDK_STREAM),
    "hyperv": (FixedVhdTarget, VHD_FIXED),
    "ova": (OvaTarget, VMDK_STREAM),
    "gce": (GceTarget, RAW),
}


def make_target(name: str, run: Runner = run_process) -> DiskImageTarget:
    """The target ``name`` of the table."""
    kind, disk = TARGETS[name]
    return kind(name, disk, run)


# Entry points (group imgfac_twisted.targets) are called with the plug-in
# environment; these targets need nothing from it.


def ec2(environment: PluginEnvironment) -> DiskImageTarget:
    """The ``ec2`` target: a raw disk, the base image itself (sparse copy)."""
    return make_target("ec2")


def openstack_kvm(environment: PluginEnvironment) -> DiskImageTarget:
    """The ``openstack-kvm`` target: qcow2."""
    return make_target("openstack-kvm")


def rhevm(environment: PluginEnvironment) -> DiskImageTarget:
    """The ``rhevm`` target: qcow2, compat 0.10."""
    return make_target("rhevm")


def vsphere(environment: PluginEnvironment) -> DiskImageTarget:
    """The ``vsphere`` target: a streamOptimized vmdk."""
    return make_target("vsphere")


def hyperv(environment: PluginEnvironment) -> DiskImageTarget:
    """The ``hyperv`` target: a fixed VHD, a whole number of MiB."""
    return make_target("hyperv")


def ova(environment: PluginEnvironment) -> DiskImageTarget:
    """The ``ova`` target: OVF descriptor and streamOptimized vmdk in a tar."""
    return make_target("ova")


def gce(environment: PluginEnvironment) -> DiskImageTarget:
    """The ``gce`` target: disk.raw in a gzipped GNU tar."""
    return make_target("gce")
