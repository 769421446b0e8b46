"""The XML documents of the Conductor API, shaped element for element as the spec's examples.

Built with lxml (text and attributes are escaped by the serializer, never by
string formatting).  Statuses are the factory builder's, except that a
builder whose work has not started (``NEW``) shows ``New``, as in the spec.

A few elements are not in the spec's examples but were in the real
Conductor's answers, and aeolus-cli reads them: ``<environment>`` on images,
``<target>`` on the target images of a new image, ``<provider>`` and
``<account>`` on started provider images, ``<content>`` in every DELETE
answer, and the listings of providers, provider types and environments.
"""

from __future__ import annotations

from collections.abc import Iterable

from lxml import etree

from ...jobs.accounts import ProviderAccount
from ...model import Build, Builder, Image, Status

PREFIX = "/conductor/api"
DELETED = "DELETED"
#: The one environment: every image is in it (Conductor's pools had several; this daemon has none).
DEFAULT_ENVIRONMENT = "default"
#: Display names of the provider types (= targets) aeolus-cli lists; others show their target name.
PROVIDER_TYPE_NAMES = {
    "mock": "Mock",
    "ec2": "Amazon EC2",
    "rhevm": "RHEV-M",
    "vsphere": "VMware vSphere",
    "openstack-kvm": "OpenStack",
    "gce": "Google Compute Engine",
    "hyperv": "Hyper-V",
    "ova": "OVA",
}


def conductor_status(status: Status) -> str:
    """The status a Conductor client sees: ``New`` for NEW, the factory's status otherwise."""
    return "New" if status == Status.NEW else status.value


def href(base: str, collection: str, object_id: str) -> str:
    """The absolute URL of an object of ``collection`` (``images``, ``builds``, ...)."""
    return f"{base}{PREFIX}/{collection}/{object_id}"


def _child(parent: etree._Element, tag: str, text: str | None = None, **attributes: str) -> etree._Element:
    element = etree.SubElement(parent, tag, attributes)
    if text is not None:
        element.text = text
    return element


def _reference(parent: etree._Element, tag: str, base: str, collection: str, object_id: str) -> etree._Element:
    return _child(parent, tag, href=href(base, collection, object_id), id=object_id)


def _root(tag: str, base: str, collection: str, object_id: str) -> etree._Element:
    return etree.Element(tag, href=href(base, collection, object_id), id=object_id)


def collection(tag: str, members: Iterable[etree._Element]) -> etree._Element:
    """``<tag>`` holding ``members``."""
    root = etree.Element(tag)
    root.extend(members)
    return root


def image_element(base: str, image: Image, build_ids: Iterable[str]) -> etree._Element:
    """An image: name, description, os, os_version, arch from its template, and its builds."""
    root = _root("image", base, "images", image.id)
    _child(root, "name", image.name)
    _child(root, "environment", DEFAULT_ENVIRONMENT)
    _child(root, "description", image.description or "")
    _child(root, "os", image.os_name)
    _child(root, "os_version", image.os_version)
    _child(root, "arch", image.os_arch)
    builds = _child(root, "builds", type="xs:list")
    for build_id in build_ids:
        _reference(builds, "build", base, "builds", build_id)
    return root


def build_element(base: str, build: Build) -> etree._Element:
    """A build and the image it belongs to."""
    root = _root("build", base, "builds", build.id)
    _child(root, "image", build.image_id, href=href(base, "images", build.image_id), type="xs:string")
    return root


def target_image_element(
    base: str, builder: Builder, template_id: str, provider_image_ids: Iterable[str]
) -> etree._Element:
    """A target image: its template's id, build, status and provider images."""
    root = _root("target_image", base, "target_images", builder.id)
    _child(root, "object_type", "target_image")
    _child(root, "template", template_id)
    _reference(root, "build", base, "builds", builder.build_id)
    _child(root, "status", conductor_status(builder.status))
    pushed = _child(root, "provider_images")
    for provider_image_id in provider_image_ids:
        _reference(pushed, "provider_image", base, "provider_images", provider_image_id)
    if builder.status == Status.COMPLETED:
        # What is inside: the installed system's packages, as the original factory's ICICLE.
        etree.SubElement(root, "icicle", href=href(base, "target_images", builder.id) + "/icicle")
    return root


def provider_image_element(base: str, builder: Builder) -> etree._Element:
    """A provider image: its id on the provider (e.g. the AMI, once pushed), status, provider, target image."""
    root = _root("provider_image", base, "provider_images", builder.id)
    _child(root, "object_type", "provider_image")
    _child(root, "target_identifier", builder.identifier_on_provider or "")
    _child(root, "status", conductor_status(builder.status))
    _child(root, "provider", builder.provider or "")
    assert builder.target_image_id is not None
    _reference(root, "target_image", base, "target_images", builder.target_image_id)
    return root


def started_image_element(
    base: str, image_id: str, build_id: str, target_builders: Iterable[Builder], pushes: Iterable[Builder] = ()
) -> etree._Element:
    """The answer to a new image: the image, its build, each target image's status and target (spec's nesting).

    ``pushes`` are provider images already there (an import's): each is
    listed, with its status, under its target image.
    """
    pushes = list(pushes)
    root = _root("image", base, "images", image_id)
    build = _reference(root, "build", base, "builds", build_id)
    target_images = _child(build, "target_images")
    for builder in target_builders:
        target_image = _reference(target_images, "target_image", base, "target_images", builder.id)
        _child(target_image, "status", conductor_status(builder.status))
        _child(target_image, "target", builder.target)
        provider_images = _child(target_image, "provider_images")
        for push in pushes:
            if push.target_image_id == builder.id:
                provider_image = _reference(provider_images, "provider_image", base, "provider_images", push.id)
                _child(provider_image, "status", conductor_status(push.status))
    return root


def started_pushes_element(base: str, pushes: Iterable[tuple[Builder, str]]) -> etree._Element:
    """The answer to a push: every provider image started (with the account's name), its status and provider."""
    root = etree.Element("provider_images")
    for builder, account_name in pushes:
        provider_image = _reference(root, "provider_image", base, "provider_images", builder.id)
        _child(provider_image, "status", conductor_status(builder.status))
        _child(provider_image, "provider", builder.provider or "")
        _child(provider_image, "account", account_name)
    return root


def account_element(base: str, account: ProviderAccount) -> etree._Element:
    """A provider account: name, provider and provider type (never its credentials)."""
    root = _root("provider_account", base, "provider_accounts", account.name)
    _child(root, "name", account.name)
    _child(root, "provider", account.provider)
    _child(root, "provider_type", account.provider_type)
    return root


def provider_element(base: str, name: str, provider_type: str, url: str, deltacloud_provider: str) -> etree._Element:
    """A provider a configured account pushes to (Conductor's ``<provider>``, as aeolus-cli lists it)."""
    root = etree.Element("provider")
    _child(root, "name", name)
    _child(root, "url", url)
    _child(root, "provider_type", provider_type)
    _child(root, "deltacloud_provider", deltacloud_provider)
    return root


def provider_type_element(target: str) -> etree._Element:
    """A provider type: a target this daemon builds (aeolus-cli's ``list --targets`` reads these)."""
    root = etree.Element("provider_type")
    _child(root, "name", PROVIDER_TYPE_NAMES.get(target, target))
    _child(root, "deltacloud_driver", target)
    return root


def environment_element(base: str, name: str) -> etree._Element:
    """An environment (only ``default``, holding every image)."""
    root = _root("environment", base, "environments", name)
    _child(root, "name", name)
    return root


def marked_deleted(element: etree._Element, contents: Iterable[tuple[str, str]] = ()) -> etree._Element:
    """``element`` with ``<status>DELETED</status>`` (replacing its status, or added) and ``<content>``.

    ``<content>`` lists each provider content (provider, identifier there)
    of the deleted objects, as the real Conductor did; aeolus-cli reads it
    after every DELETE and fails without it.
    """
    status = element.find("status")
    if status is None:
        status = _child(element, "status")
    status.text = DELETED
    content = _child(element, "content")
    for provider, identifier in contents:
        provider_content = _child(content, "provider_content")
        _child(provider_content, "provider", provider)
        _child(provider_content, "target_identifier", identifier)
    return element
