"""Imports: recording an image that already exists on a provider (e.g. an AMI), without building or uploading it.

The 2011-12 factory and Conductor both did this (``aeolus-image import``):
the client names the target, the provider, the image's identifier there and
an image descriptor (``<image><name/><description/></image>``), and gets an
image with one build, one COMPLETED target image and one COMPLETED provider
image, recorded in one transaction.  Nothing runs: no builder is launched.

An imported provider image was not made by this daemon, so deleting it never
removes it from the provider (its ``provider_details`` say ``imported``):
the DELETE answer lists it as provider content left in place.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from ..errors import InvalidRequest
from ..model import (
    Build,
    Builder,
    Image,
    Operation,
    ProviderImage,
    Status,
    TargetImage,
    build_builder,
    new_id,
    push_builder,
)
from ..providers import Provider
from ..store import IStore
from ..xmlsafe import parse_xml
from .updates import BuilderUpdater

#: An image descriptor is a few lines of XML.
MAX_DESCRIPTOR_BYTES = 64 * 1024
#: What ``provider_details`` of an imported provider image say (see ``is_imported``).
IMPORTED_DETAILS = json.dumps({"imported": "true"})


@dataclass(frozen=True)
class ImportedImage:
    """What an import recorded: the image, its build and the two COMPLETED builders."""

    image: Image
    build: Build
    target_builder: Builder
    push_builder: Builder


@dataclass(frozen=True)
class Descriptor:
    """The name and description an image descriptor gives."""

    name: str
    description: str | None


def is_imported(builder: Builder) -> bool:
    """True for the provider image of an import (the daemon never made it, so never deletes it there)."""
    return builder.operation == Operation.PUSH and builder.provider_details == IMPORTED_DETAILS


def parse_descriptor(text: str, default_name: str) -> Descriptor:
    """Name and description of an ``<image>`` descriptor (hardened parser); ``default_name`` when it names none."""
    if not text.strip():
        return Descriptor(name=default_name, description=None)
    root = parse_xml(text, max_bytes=MAX_DESCRIPTOR_BYTES, what="image_descriptor", error=InvalidRequest)
    if root.tag != "image":
        raise InvalidRequest(f"image_descriptor must be an <image> document, not <{root.tag}>")
    name = (root.findtext("name") or "").strip() or default_name
    description = (root.findtext("description") or "").strip() or None
    return Descriptor(name=name, description=description)


class Importer:
    """Records imports through the store and the one update function (creation events included)."""

    def __init__(
        self,
        store: IStore,
        updater: BuilderUpdater,
        known_targets: Callable[[], list[str]],
        provider: Callable[[str], Provider],
        clock: IReactorTime,
    ) -> None:
        """``provider(name)`` is the plug-in serving a provider name (InvalidRequest when none does)."""
        self._store = store
        self._updater = updater
        self._known_targets = known_targets
        self._provider = provider
        self._clock = clock

    async def import_image(
        self, target: str, provider: str, identifier: str, descriptor_xml: str, account_identifier: str | None = None
    ) -> ImportedImage:
        """Record ``identifier`` on ``provider`` as a COMPLETED provider image of a new image; InvalidRequest if unusable."""
        self._check(target, provider, identifier)
        descriptor = parse_descriptor(descriptor_xml, default_name=identifier)
        now = self._clock.seconds()
        # The descriptor stands where a built image's template stands (every build names one).
        stored = await self._store.add_template(descriptor_xml.strip() or "<image><name/></image>", now)
        image = Image(
            id=new_id(),
            template_id=stored.id,
            name=descriptor.name,
            description=descriptor.description,
            os_name="",
            os_version="",
            os_arch="",
            created=now,
        )
        build = Build(id=new_id(), image_id=image.id, template_id=stored.id, created=now)
        target_image = TargetImage(id=new_id(), build_id=build.id, image_id=image.id, target=target, created=now)
        provider_image = ProviderImage(
            id=new_id(),
            target_image_id=target_image.id,
            build_id=build.id,
            image_id=image.id,
            provider=provider,
            provider_account_identifier=account_identifier,
            created=now,
        )
        target_builder = build_builder(target_image, now, Status.COMPLETED)
        pushed = push_builder(
            provider_image,
            target,
            now,
            Status.COMPLETED,
            identifier_on_provider=identifier,
            provider_details=IMPORTED_DETAILS,
        )
        builders = [target_builder, pushed]
        await self._updater.record_created(
            builders,
            lambda events: self._store.record_import(image, build, target_image, provider_image, builders, events),
        )
        return ImportedImage(image=image, build=build, target_builder=target_builder, push_builder=pushed)

    def _check(self, target: str, provider: str, identifier: str) -> None:
        """InvalidRequest naming every parameter that is missing or names nothing known."""
        missing = [
            name
            for name, value in (("target_name", target), ("provider_name", provider), ("target_identifier", identifier))
            if not value.strip()
        ]
        if missing:
            raise InvalidRequest(f"missing parameter{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
        known = self._known_targets()
        if target not in known:
            raise InvalidRequest(f"unknown target {target!r}: known targets are {', '.join(known)}")
        if not self._provider(provider).accepts_target(target):
            raise InvalidRequest(f"provider {provider!r} does not take {target!r} images")
        if len(identifier) > 256 or any(not character.isprintable() for character in identifier):
            raise InvalidRequest("target_identifier must be printable text of at most 256 characters")
