"""The XML documents of the Conductor API, shaped element for element as the spec's examples.

Built with lxml (text and attributes are escaped by the serializer, never by
string formatting).  Statuses are the factory builder's, except that a
builder whose work has not started (``NEW``) shows ``New``, as in the spec.
"""

from __future__ import annotations

from typing import Iterable

from lxml import etree

from ...jobs.accounts import ProviderAccount
from ...model import Build, Builder, Image, Status

PREFIX = "/conductor/api"
DELETED = "DELETED"


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


def target_image_element(base: str, builder: Builder, template_id: str,
                         provider_image_ids: Iterable[str]) -> etree._Element:
    """A target image: its template's id, build, status and provider images."""
    root = _root("target_image", base, "target_images", builder.id)
    _child(root, "object_type", "target_image")
    _child(root, "template", template_id)
    _reference(root, "build", base, "builds", builder.build_id)
    _child(root, "status", conductor_status(builder.status))
    pushed = _child(root, "provider_images")
    for provider_image_id in provider_image_ids:
        _reference(pushed, "provider_image", base, "provider_images", provider_image_id)
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


def started_image_element(base: str, image_id: str, build_id: str, target_builders: Iterable[Builder]) -> etree._Element:
    """The answer to a new image: the image, its build and each target image's status (spec's nesting)."""
    root = _root("image", base, "images", image_id)
    build = _reference(root, "build", base, "builds", build_id)
    target_images = _child(build, "target_images")
    for builder in target_builders:
        target_image = _reference(target_images, "target_image", base, "target_images", builder.id)
        _child(target_image, "status", conductor_status(builder.status))
        _child(target_image, "provider_images")
    return root


def started_pushes_element(base: str, push_builders: Iterable[Builder]) -> etree._Element:
    """The answer to a push: every provider image started, with its status."""
    root = etree.Element("provider_images")
    for builder in push_builders:
        provider_image = _reference(root, "provider_image", base, "provider_images", builder.id)
        _child(provider_image, "status", conductor_status(builder.status))
    return root


def account_element(base: str, account: ProviderAccount) -> etree._Element:
    """A provider account: name, provider and provider type (never its credentials)."""
    root = _root("provider_account", base, "provider_accounts", account.name)
    _child(root, "name", account.name)
    _child(root, "provider", account.provider)
    _child(root, "provider_type", account.provider_type)
    return root


def marked_deleted(element: etree._Element) -> etree._Element:
    """``element`` with ``<status>DELETED</status>`` (replacing its status, or added when it has none)."""
    status = element.find("status")
    if status is None:
        status = _child(element, "status")
    status.text = DELETED
    return element
