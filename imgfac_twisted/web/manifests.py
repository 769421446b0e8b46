"""What is inside a target image, in two formats: the original factory's ICICLE XML and SPDX 2.3 JSON.

Both list the packages of the build's installed system (name, version,
architecture) as its package manager named them at the end of the
install; an image of the Mock OS (or made without a base image) has none.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from lxml import etree

from .. import __version__
from ..model import Builder, Image, iso8601_utc
from ..os import Package

#: ``<os><name>`` (lower case) to the package URL type and namespace of its packages.
PURL_FAMILIES: dict[str, tuple[str, str]] = {
    "debian": ("deb", "debian"),
    "ubuntu": ("deb", "ubuntu"),
    "fedora": ("rpm", "fedora"),
    "rhel": ("rpm", "redhat"),
    "rhel-8": ("rpm", "redhat"),
    "redhat": ("rpm", "redhat"),
    "centos": ("rpm", "centos"),
    "centos-stream": ("rpm", "centos"),
}


def icicle_xml(image: Image, packages: list[Package]) -> bytes:
    """``<icicle><description/><packages><package name version arch/>...</packages></icicle>``."""
    icicle = etree.Element("icicle")
    etree.SubElement(icicle, "description").text = image.description or image.name
    listed = etree.SubElement(icicle, "packages")
    for package in packages:
        etree.SubElement(listed, "package", name=package.name, version=package.version, arch=package.arch)
    return etree.tostring(icicle, xml_declaration=True, encoding="UTF-8")


def purl(os_name: str, package: Package) -> str | None:
    """The package URL of one package of that OS (``pkg:deb/debian/openssh-server@1:9.2p1-2?arch=amd64``)."""
    family = PURL_FAMILIES.get(os_name.strip().lower())
    if family is None:
        return None
    kind, namespace = family
    # The version is written as the package manager writes it: ':' (epoch),
    # '+' and '~' are legal in a purl version and kept readable.
    version = quote(package.version, safe=":+~")
    return f"pkg:{kind}/{namespace}/{quote(package.name, safe='+')}@{version}?arch={quote(package.arch, safe='')}"


def spdx_document(image: Image, builder: Builder, packages: list[Package], namespace: str) -> dict[str, Any]:
    """An SPDX 2.3 document of the target image: the image as a package containing each installed package.

    ``namespace`` is the document's unique URI (the SBOM's own URL).
    """
    image_id = "SPDXRef-Image"
    listed = [_spdx_package(index, image.os_name, package) for index, package in enumerate(packages, start=1)]
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{image.name} ({builder.target} target image {builder.id})",
        "documentNamespace": namespace,
        "creationInfo": {
            # SPDX wants whole seconds.
            "created": iso8601_utc(builder.updated).split(".")[0] + "Z",
            "creators": [f"Tool: imgfac-twisted-{__version__}"],
        },
        "packages": [
            {
                "SPDXID": image_id,
                "name": image.name,
                "versionInfo": builder.id,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": False,
                "primaryPackagePurpose": "OPERATING-SYSTEM",
                "description": f"{image.os_name} {image.os_version} {image.os_arch}, {builder.target} image",
                **(
                    {"checksums": [{"algorithm": "SHA256", "checksumValue": builder.artifact_sha256}]}
                    if builder.artifact_sha256
                    else {}
                ),
            },
            *listed,
        ],
        "relationships": [
            {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": image_id},
            *(
                {"spdxElementId": image_id, "relationshipType": "CONTAINS", "relatedSpdxElement": package["SPDXID"]}
                for package in listed
            ),
        ],
    }


def spdx_json(image: Image, builder: Builder, packages: list[Package], namespace: str) -> bytes:
    """``spdx_document`` as JSON bytes."""
    return json.dumps(spdx_document(image, builder, packages, namespace), indent=1).encode("utf-8")


def _spdx_package(index: int, os_name: str, package: Package) -> dict[str, Any]:
    document: dict[str, Any] = {
        "SPDXID": f"SPDXRef-Package-{index}",
        "name": package.name,
        "versionInfo": package.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": False,
        "comment": f"architecture {package.arch}",
    }
    locator = purl(os_name, package)
    if locator is not None:
        document["externalRefs"] = [
            {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": locator}
        ]
    return document
