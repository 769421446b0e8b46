"""Providers: how a target image is pushed to a cloud account.

A provider plug-in says which provider names it ``serves`` (``mock``,
``ec2-us-east-1``, ...), turns the credentials XML of a push request into
credentials (``parse_credentials``, in memory only: never stored, logged or
returned) and pushes (``push(job, credentials)``), firing with a
PushResult: the image's identifier on the provider and facts worth showing.  ``delete`` removes a pushed image from the
provider again (for EC2: deregister the AMI, delete its snapshot); an image
already gone counts as deleted.  Plug-ins are found by entry point (group
``imgfac_twisted.providers``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from ..model import Builder, Image

#: Credentials XML is small; anything bigger is a mistake or an attack.
MAX_CREDENTIALS_BYTES = 64 * 1024


@dataclass(frozen=True)
class Credentials:
    """Provider credentials, kept in memory for one push only."""

    #: Shown as the builder's ``provider_account_identifier``.
    account_identifier: str
    #: The secret parts; never stored, logged or returned.
    secrets: dict[str, str] = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class PushResult:
    """A finished push: the image's id on the provider, and facts worth showing (e.g. ``snapshot_id``)."""

    identifier: str
    details: dict[str, str] = field(default_factory=dict)


class PushJob(Protocol):
    """What a provider plug-in is given for one push (``jobs.work.ProviderPushJob`` implements it)."""

    @property
    def builder(self) -> Builder:
        """The provider image's builder."""

    @property
    def target_builder(self) -> Builder:
        """The pushed target image's builder (COMPLETED, with its artifact path)."""

    @property
    def image(self) -> Image:
        """The image the target image was built for (its os_arch, name, ...; empty for an imported one)."""

    @property
    def work_dir(self) -> str:
        """A directory of this builder's own, in the state directory."""

    @property
    def reactor(self) -> Any:
        """The reactor, for timers."""

    def log(self, message: str) -> Deferred[None]:
        """Add a line to the builder's log (shown at ``/imagefactory/builders/<id>/log``)."""

    def progress(self, percent: int) -> Deferred[None]:
        """Record how far the push got (0..100)."""

    def image_file(self) -> Deferred[str]:
        """Fire with the path of a local file holding the target image (read from the image store)."""


class Provider(Protocol):
    """What the dispatcher needs of a provider plug-in."""

    def serves(self, provider_name: str) -> bool:
        """True when this plug-in pushes to the provider so named."""

    def provider_names(self) -> list[str]:
        """Every provider name this plug-in serves, sorted (listed to a client that named another)."""

    def location(self, provider_name: str) -> tuple[str, str]:
        """The provider's URL (empty when it has none) and its name in its own cloud (an EC2 region)."""

    def accepts_target(self, target: str) -> bool:
        """True when this provider can take images of ``target`` (e.g. EC2 takes raw ``ec2`` images)."""

    def parse_credentials(self, xml: str) -> Credentials:
        """Credentials from the push request's XML; InvalidCredentials when unusable."""

    def push(self, job: PushJob, credentials: Credentials) -> Deferred[PushResult]:
        """Push the target image; fire with its PushResult."""

    def delete(
        self, provider_name: str, identifier: str, details: dict[str, str], credentials: Credentials | None
    ) -> Deferred[None]:
        """Remove the pushed image ``identifier`` (with what ``details`` names, e.g. its snapshot) from the provider.

        ``credentials`` are None when no configured account holds them; a
        provider that needs them fails.  Fires with None; an image already
        gone is not an error.
        """
