"""Which builder a factory API URL names: the builder read by id, checked against the rest of the URL.

Each takes what the index (or the store) found for the last id of the URL,
None included, and answers the builder or raises UnknownObject (404) naming
what is not there.
"""

from __future__ import annotations

from ..errors import UnknownObject
from ..model import Builder, Operation

__all__ = ["found_builder", "found_push", "found_target"]


def found_builder(builder_id: str, found: Builder | None) -> Builder:
    """``/builders/<builder_id>``."""
    if found is None:
        raise UnknownObject(f"no builder with id {builder_id!r}")
    return found


def found_target(found: Builder | None, image_id: str, build_id: str, target_image_id: str) -> Builder:
    """``/images/<image_id>/builds/<build_id>/target_images/<target_image_id>``."""
    if found is None or found.operation != Operation.BUILD or (found.image_id, found.build_id) != (image_id, build_id):
        raise UnknownObject(f"no target image {target_image_id!r} in build {build_id!r} of image {image_id!r}")
    return found


def found_push(
    found: Builder | None, image_id: str, build_id: str, target_image_id: str, provider_image_id: str
) -> Builder:
    """``.../target_images/<target_image_id>/provider_images/<provider_image_id>``."""
    if (
        found is None
        or found.operation != Operation.PUSH
        or (found.image_id, found.build_id, found.target_image_id) != (image_id, build_id, target_image_id)
    ):
        raise UnknownObject(
            f"no provider image {provider_image_id!r} of target image {target_image_id!r} "
            f"in build {build_id!r} of image {image_id!r}"
        )
    return found
