"""Durable state behind one interface.

``IStore`` is what the dispatcher and the web layer use; ``SQLiteStore`` is
the embedded default.  Every method returns a Deferred and does its blocking
work through a door, never on the reactor thread.  Methods that change a
builder are guarded (``UPDATE ... WHERE status = expected``) so that several
daemons sharing one database cannot both move the same builder.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Interface


class IStore(Interface):
    """Images, builds, target and provider images, builders and templates."""

    def add_template(xml: str, now: float) -> Deferred:
        """Keep ``xml`` as a template, once per distinct text; fire with its StoredTemplate."""

    def get_template(template_id: str) -> Deferred:
        """Fire with the StoredTemplate, or fail with UnknownObject."""

    def record_build(image, build, target_images, builders, new_image: bool) -> Deferred:
        """In one transaction: the image (when ``new_image``), the build, its target images and builders."""

    def record_push(provider_image, builder) -> Deferred:
        """In one transaction: a provider image and its push builder."""

    def save_builder(builder, expected_status) -> Deferred:
        """Write ``builder`` if its stored status is still ``expected_status``.

        Fails with InvalidTransition when another writer moved it first.
        """

    def get_image(image_id: str) -> Deferred:
        """Fire with the Image, or fail with UnknownObject."""

    def get_build(build_id: str) -> Deferred:
        """Fire with the Build, or fail with UnknownObject."""

    def get_target_image(target_image_id: str) -> Deferred:
        """Fire with the TargetImage, or fail with UnknownObject."""

    def get_provider_image(provider_image_id: str) -> Deferred:
        """Fire with the ProviderImage, or fail with UnknownObject."""

    def get_builder(builder_id: str) -> Deferred:
        """Fire with the Builder, or fail with UnknownObject."""

    def list_builders() -> Deferred:
        """Fire with every Builder, oldest first."""

    def list_unfinished_builders() -> Deferred:
        """Fire with every Builder whose status is not final."""
