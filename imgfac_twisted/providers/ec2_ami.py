"""What an AMI the EC2 providers register is: its name, its architecture and its one root disk.

Plain values from the template and the push; the calls that register it
are the push's (``ec2_push``).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["ARCHITECTURES", "DEFAULT_ARCHITECTURE", "ROOT_DEVICE_NAME", "ami_name", "architecture_of", "machine"]

#: The template's ``<arch>`` to EC2's ``Architecture``.
ARCHITECTURES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "x64": "x86_64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "i386",
    "i486": "i386",
    "i586": "i386",
    "i686": "i386",
    "x86": "i386",
}
DEFAULT_ARCHITECTURE = "x86_64"
ROOT_DEVICE_NAME = "/dev/sda1"

_AMI_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9()\[\] ./'@_-]+")


def ami_name(image_name: str | None, builder_id: str) -> str:
    """A unique AMI name (3..128 of EC2's allowed characters): the image's name and the push's id."""
    prefix = _AMI_NAME_UNSAFE.sub("-", image_name or "").strip(" -.")[:80] or "imagefactory"
    return f"{prefix}-{builder_id}"


def architecture_of(os_arch: str | None) -> str | None:
    """EC2's Architecture for a template's arch; None when EC2 has none."""
    if not os_arch:
        return DEFAULT_ARCHITECTURE
    return ARCHITECTURES.get(os_arch.strip().lower())


def machine(architecture: str, snapshot_id: str | None, gib: int) -> dict[str, Any]:
    """RegisterImage's arguments for the machine: an HVM with ENA, booting from the snapshot as its root disk."""
    return {
        "Architecture": architecture,
        "VirtualizationType": "hvm",
        "EnaSupport": True,
        "RootDeviceName": ROOT_DEVICE_NAME,
        "BlockDeviceMappings": [
            {
                "DeviceName": ROOT_DEVICE_NAME,
                "Ebs": {"SnapshotId": snapshot_id, "VolumeSize": gib, "DeleteOnTermination": True},
            }
        ],
    }
