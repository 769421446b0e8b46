"""What users see of a build beyond its status: its stages (details, events, metrics) and the packages inside
each target image (ICICLE XML and SPDX 2.3 JSON), through the real daemon over TLS, and the rendering of
both documents for a real package list.

A real Debian system's manifest is checked end to end in test_real_debian.py.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from imgfac_twisted.model import Builder, Image, Operation, Status
from imgfac_twisted.os import Package
from imgfac_twisted.web.manifests import icicle_xml, purl, spdx_json
from support.daemon import Daemon

TEMPLATE = (
    "<template><name>contents</name><os><name>Mock</name><version>1</version><arch>x86_64</arch>"
    "<install type='url'><url>http://example.invalid/</url></install></os>"
    "<disk><size>64M</size></disk><description>what is inside</description></template>"
)
PACKAGES = [
    Package("openssh-server", "1:9.2p1-2+deb12u3", "amd64"),
    Package("libc6", "2.36-9+deb12u9", "amd64"),
    Package("tzdata", "2024a-0+deb12u1", "all"),
]


def _build(daemon: Daemon, targets: str) -> list[dict[str, Any]]:
    answer = daemon.post("/imagefactory/images", data={"targets": targets, "template": TEMPLATE})
    assert answer.status_code == 202, answer.text
    return answer.json()["build"]["target_images"]


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_stages_of_a_mock_os_build_in_details_events_and_metrics(daemon: Daemon) -> None:
    """A Mock-OS build for a converted target runs waiting, installing, converting in order, each with an
    ISO 8601 start and end; the stage shows while it runs, in events too; /metrics has their durations."""
    target_image = _build(daemon, "openstack-kvm")[0]
    seen_stages: set[str] = set()

    def ended(detail: dict[str, Any]) -> bool:
        if detail.get("stage"):
            seen_stages.add(detail["stage"])
        return detail["status"] in ("COMPLETED", "FAILED")

    detail = daemon.poll(target_image["href"], ended, timeout=120, interval=0.05)
    assert detail["status"] == "COMPLETED", detail
    assert detail["stage"] is None
    names = [stage["name"] for stage in detail["stages"]]
    assert names == ["waiting", "installing", "converting"], names
    starts = [_seconds(stage["started_at"]) for stage in detail["stages"]]
    ends = [_seconds(stage["ended_at"]) for stage in detail["stages"]]
    assert all(start <= end for start, end in zip(starts, ends))
    assert all(end <= next_start for end, next_start in zip(ends, starts[1:])), "stages follow each other"
    assert ends[-1] - starts[0] < 120
    assert seen_stages <= set(names) and seen_stages, "the running stage shows while the builder runs"
    builder = daemon.get_json(f"/imagefactory/builders/{target_image['id']}")
    assert builder["stages"] == detail["stages"]
    metrics = daemon.get("/metrics").text
    for name in names:
        assert f'imagefactory_stage_duration_seconds_count{{stage="{name}"}}' in metrics, name
    log = daemon.get(f"/imagefactory/builders/{target_image['id']}/log").text
    assert log.index("stage: installing") < log.index("stage: converting") < log.index("COMPLETED")


def test_packages_of_a_target_image_are_served_once_completed(daemon: Daemon, tmp_path: Path) -> None:
    """ICICLE and SBOM answer 404 until the target image is COMPLETED, then the Mock OS's empty package list:
    ICICLE as application/xml, the SBOM as a valid SPDX 2.3 document describing the image."""
    target_image = _build(daemon, "openstack-kvm")[0]
    early = daemon.get(target_image["href"] + "/icicle")
    if early.status_code != 404:  # only if the build raced ahead of this request
        assert daemon.get_json(target_image["href"])["status"] == "COMPLETED"
    else:
        assert early.json()["code"] == 404 and "COMPLETED" in early.json()["message"]
    detail = daemon.wait_final(target_image["href"], timeout=120)
    assert detail["status"] == "COMPLETED", detail
    icicle = daemon.get(target_image["href"] + "/icicle")
    assert icicle.status_code == 200 and icicle.headers["content-type"].startswith("application/xml")
    document = etree.fromstring(icicle.content)
    assert document.tag == "icicle" and document.findtext("description") == "what is inside"
    assert document.find("packages") is not None and len(document.find("packages")) == 0
    sbom = daemon.get(target_image["href"] + "/sbom")
    assert sbom.status_code == 200 and sbom.headers["content-type"] == "application/spdx+json"
    path = tmp_path / "image.spdx.json"
    path.write_bytes(sbom.content)
    assert validate_full_spdx_document(parse_file(str(path))) == []
    assert sbom.json()["documentNamespace"].endswith(target_image["href"].split("/imagefactory", 1)[1] + "/sbom")
    missing = daemon.get(target_image["href"].rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000/icicle")
    assert missing.status_code == 404


def _builder(target: str = "openstack-kvm") -> Builder:
    return Builder(
        id="7c0ffee0-0000-4000-8000-000000000001",
        operation=Operation.BUILD,
        status=Status.COMPLETED,
        completed=100,
        image_id="i",
        build_id="b",
        target=target,
        artifact_sha256="ab" * 32,
        created=1_700_000_000.0,
        updated=1_700_000_100.5,
    )


def _image(os_name: str = "Debian") -> Image:
    return Image(
        id="i",
        template_id="t",
        name="deb12",
        description=None,
        os_name=os_name,
        os_version="12",
        os_arch="x86_64",
        created=1_700_000_000.0,
    )


def test_icicle_lists_every_package_with_its_version_and_arch() -> None:
    """The original factory's ICICLE shape: one <package name version arch/> per package, in order."""
    document = etree.fromstring(icicle_xml(_image(), PACKAGES))
    assert [dict(package.attrib) for package in document.iterfind("packages/package")] == [
        {"name": p.name, "version": p.version, "arch": p.arch} for p in PACKAGES
    ]
    assert document.findtext("description") == "deb12"


def test_spdx_document_is_valid_and_has_a_purl_per_package(tmp_path: Path) -> None:
    """Each package is an SPDX package with its version and a purl (epoch kept); the image CONTAINS them all;
    spdx-tools finds nothing wrong with the document."""
    path = tmp_path / "doc.spdx.json"
    path.write_bytes(spdx_json(_image(), _builder(), PACKAGES, "https://factory.test/sbom/1"))
    assert validate_full_spdx_document(parse_file(str(path))) == []
    document = json.loads(path.read_text())
    by_name = {package["name"]: package for package in document["packages"]}
    ssh = by_name["openssh-server"]
    assert ssh["versionInfo"] == "1:9.2p1-2+deb12u3"
    assert ssh["externalRefs"][0]["referenceLocator"] == "pkg:deb/debian/openssh-server@1:9.2p1-2+deb12u3?arch=amd64"
    contained = {r["relatedSpdxElement"] for r in document["relationships"] if r["relationshipType"] == "CONTAINS"}
    assert contained == {by_name[p.name]["SPDXID"] for p in PACKAGES}
    assert by_name["deb12"]["checksums"] == [{"algorithm": "SHA256", "checksumValue": "ab" * 32}]


@pytest.mark.parametrize(
    "os_name, expected",
    [
        ("Fedora", "pkg:rpm/fedora/bash@5.2.26-3.fc40?arch=x86_64"),
        ("RHEL-8", "pkg:rpm/redhat/bash@5.2.26-3.fc40?arch=x86_64"),
        ("Ubuntu", "pkg:deb/ubuntu/bash@5.2.26-3.fc40?arch=x86_64"),
        ("Mock", None),
    ],
)
def test_purl_type_and_namespace_follow_the_os(os_name: str, expected: str | None) -> None:
    """rpm for the Red Hat family, deb for Debian and Ubuntu, each with its vendor; none for an unknown OS."""
    assert purl(os_name, Package("bash", "5.2.26-3.fc40", "x86_64")) == expected


def test_stage_timestamps_are_whole_utc_iso8601() -> None:
    """The SPDX creation time is in whole seconds, UTC, as SPDX requires."""
    document = json.loads(spdx_json(_image(), _builder(), [], "https://factory.test/sbom/2"))
    assert document["creationInfo"]["created"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_700_000_100))
