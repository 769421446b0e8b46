"""The Conductor API's objects by id, or the ``<error>`` that names what is not there."""

from __future__ import annotations

from ...errors import UnknownObject
from ...jobs.index import BuilderIndex
from ...model import Build, Builder, Image, Operation
from ...store import IStore
from .errors import not_found


async def image(store: IStore, image_id: str) -> Image:
    """The image ``image_id``; ImageNotFound when there is none."""
    try:
        found: Image = await store.get_image(image_id)
    except UnknownObject:
        raise not_found("ImageNotFound", f"no image with id {image_id!r}") from None
    return found


async def build(store: IStore, build_id: str) -> Build:
    """The build ``build_id``; BuildNotFound when there is none."""
    try:
        found: Build = await store.get_build(build_id)
    except UnknownObject:
        raise not_found("BuildNotFound", f"no build with id {build_id!r}") from None
    return found


async def target_builder(index: BuilderIndex, target_image_id: str) -> Builder:
    """The builder of target image ``target_image_id``; TargetImageNotFound when there is none."""
    found = await index.lookup(target_image_id)
    if found is None or found.operation != Operation.BUILD:
        raise not_found("TargetImageNotFound", f"no target image with id {target_image_id!r}")
    return found


async def push_builder(index: BuilderIndex, provider_image_id: str) -> Builder:
    """The builder of provider image ``provider_image_id``; ProviderImageNotFound when there is none."""
    found = await index.lookup(provider_image_id)
    if found is None or found.operation != Operation.PUSH:
        raise not_found("ProviderImageNotFound", f"no provider image with id {provider_image_id!r}")
    return found
