"""A provider file's name, checked the same way by the ec2, openstack and vsphere plug-ins."""

from __future__ import annotations

import pytest

from imgfac_twisted.providers.definitions import name_mistakes
from imgfac_twisted.providers.ec2_endpoints import parse_definition
from imgfac_twisted.providers.openstack_clouds import parse_cloud
from imgfac_twisted.providers.vsphere_sites import parse_site

FORM = "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
RESERVED = "is a built-in provider's name (or prefix)"


@pytest.mark.parametrize("name", ["a", "os-lab", "Vc_1.two", "x" * 64])
def test_a_good_name_has_no_mistake(name: str) -> None:
    assert name_mistakes(name) == []


@pytest.mark.parametrize("name", ["", "-lab", ".x", "a b", "x" * 65, "lab/1"])
def test_a_malformed_name_is_refused(name: str) -> None:
    assert name_mistakes(name) == [f"name {name!r} {FORM}"]


@pytest.mark.parametrize("name", ["mock", "ec2-us-east-1"])
def test_another_plug_ins_name_is_refused_unless_told_not_to_look(name: str) -> None:
    assert name_mistakes(name) == [f"name {name!r} {RESERVED}"]
    assert name_mistakes(name, reserved=False) == []


def test_each_plug_in_refuses_a_malformed_name_in_its_words() -> None:
    documents = {
        parse_definition: {"type": "ec2", "name": "bad name", "region": "us-east-1", "endpoint_url": "http://m"},
        parse_cloud: {"type": "openstack", "name": "bad name", "auth_url": "https://k/v3"},
        parse_site: {
            "type": "vsphere", "name": "bad name", "url": "https://vc/sdk", "datacenter": "d", "datastore": "s",
            "cluster": "c",
        },
    }  # fmt: skip
    for parse, document in documents.items():
        with pytest.raises(ValueError) as raised:
            parse(document)  # type: ignore[operator]
        assert f"name 'bad name' {FORM}" in str(raised.value), parse
