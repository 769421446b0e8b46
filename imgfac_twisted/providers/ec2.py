"""The EC2 provider: pushes a raw image into an EBS snapshot and registers an AMI of it.

Providers: ``ec2-<region>`` for every AWS region, and the EC2-compatible
endpoints defined in the ``provider_dir`` folder (see ``ec2_endpoints``).

Credentials come in the original factory's form::

    <provider_credentials><ec2_credentials>
      <account_number>123456789012</account_number>
      <access_key>AKIA...</access_key><secret_access_key>...</secret_access_key>
      <certificate>...</certificate><key>...</key>   (accepted, ignored)
    </ec2_credentials></provider_credentials>

They live in memory for one push only.  The account number (or the access
key id when none is given) is the provider account identifier.

A push, all SDK calls through the cloud door (never on the reactor):

1. ``ebs.start_snapshot`` of the image's size rounded up to whole GiB;
2. ``ebs.put_snapshot_block`` for every block that holds data (all-zero
   blocks and holes are skipped), several in flight, each with its SHA-256,
   in the block size the service returned; the image is read a batch of
   blocks at a time, so memory stays bounded whatever its size; progress
   moves from 0 to 90 with the blocks written;
3. ``ebs.complete_snapshot``, then ``ec2.describe_snapshots`` with backoff
   until the snapshot is completed (95);
4. ``ec2.register_image``: an HVM AMI with ENA, the snapshot as its root
   device, the template's architecture; then it waits until the AMI is
   available (100).

The push fires with a PushResult: the AMI id, and ``snapshot_id`` in its
details.  A failed or cancelled push deletes what it made (the AMI, then
the snapshot); transient errors are retried with backoff (``ec2_calls``).
"""

from __future__ import annotations

import re

from twisted.internet.defer import Deferred, ensureDeferred, fail

from ..errors import InvalidCredentials
from ..registry import PluginEnvironment
from . import Credentials, PushJob, PushResult
from .ec2_calls import ClientFactory, Ec2Error, Ec2Settings, make_clients
from .ec2_delete import Ec2Delete
from .ec2_endpoints import Endpoint, aws_endpoints, load_definitions
from .ec2_push import ACCEPTED_TARGETS, Ec2Push
from .mock import credential_fields

CREDENTIALS_KIND = "ec2_credentials"
CREDENTIAL_FIELDS = ("account_number", "access_key", "secret_access_key", "certificate", "key")
REQUIRED_FIELDS = ("access_key", "secret_access_key")

_ACCOUNT = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_ACCESS_KEY = re.compile(r"^[A-Za-z0-9+/=._-]{1,256}$")


class EC2Provider:
    """Pushes raw images to AWS regions and EC2-compatible endpoints."""

    def __init__(
        self,
        environment: PluginEnvironment,
        client_factory: ClientFactory = make_clients,
        settings: Ec2Settings | None = None,
    ) -> None:
        # A bad definition file stops the daemon at start-up (ConfigError).
        self._endpoints = {**aws_endpoints(), **load_definitions(environment.config.provider_dir)}
        self._door = environment.cloud_door
        self._reactor = environment.reactor
        self._client_factory = client_factory
        self._settings = settings or Ec2Settings(puts_in_flight=max(1, min(8, environment.config.cloud_threads)))

    # -- the Provider protocol ---------------------------------------------

    def serves(self, provider_name: str) -> bool:
        """``ec2-<region>`` for the AWS regions, and every provider defined in ``provider_dir``."""
        return provider_name in self._endpoints

    def provider_names(self) -> list[str]:
        """Every provider name this plug-in serves, sorted."""
        return sorted(self._endpoints)

    def endpoint(self, provider_name: str) -> Endpoint:
        """The endpoint definition of ``provider_name`` (KeyError when not served)."""
        return self._endpoints[provider_name]

    def location(self, provider_name: str) -> tuple[str, str]:
        """The endpoint's URL (AWS's regional one for an AWS region) and its region."""
        where = self._endpoints[provider_name]
        return where.endpoint_url or f"https://ec2.{where.region}.amazonaws.com", where.region

    def accepts_target(self, target: str) -> bool:
        """True when images of ``target`` are raw disks this provider can push."""
        return target in ACCEPTED_TARGETS

    def parse_credentials(self, xml: str) -> Credentials:
        """EC2 credentials; InvalidCredentials naming what is wrong (never echoing a value)."""
        fields = credential_fields(xml, CREDENTIALS_KIND, CREDENTIAL_FIELDS, REQUIRED_FIELDS)
        account = fields.get("account_number")
        if account is not None and not _ACCOUNT.match(account):
            raise InvalidCredentials(
                f"<{CREDENTIALS_KIND}><account_number> must be 1 to 64 letters, digits, "
                "'.', '_', '@' or '-' (e.g. 123456789012)"
            )
        if not _ACCESS_KEY.match(fields["access_key"]):
            raise InvalidCredentials(
                f"<{CREDENTIALS_KIND}><access_key> must be an access key id (letters and digits, no spaces)"
            )
        secret = fields["secret_access_key"]
        if len(secret) > 1024 or any(char.isspace() or not char.isprintable() for char in secret):
            raise InvalidCredentials(
                f"<{CREDENTIALS_KIND}><secret_access_key> must be printable, without spaces, at most 1024 characters"
            )
        return Credentials(
            account_identifier=account or fields["access_key"],
            secrets={"access_key": fields["access_key"], "secret_access_key": secret},
        )

    def push(self, job: PushJob, credentials: Credentials) -> Deferred[PushResult]:
        """Push the job's target image; fire with a PushResult (AMI id, ``snapshot_id``)."""
        provider = job.builder.provider or ""
        endpoint = self._endpoints.get(provider)
        if endpoint is None:
            return fail(Ec2Error(f"the ec2 plug-in does not serve provider {provider!r}"))
        push = Ec2Push(endpoint, job, credentials, self._door, self._reactor, self._settings, self._client_factory)
        return ensureDeferred(push.run())

    def delete(
        self, provider_name: str, identifier: str, details: dict[str, str], credentials: Credentials | None
    ) -> Deferred[None]:
        """Deregister the AMI ``identifier`` and delete its snapshot (``details['snapshot_id']``); gone is fine."""
        endpoint = self._endpoints.get(provider_name)
        if endpoint is None:
            return fail(Ec2Error(f"the ec2 plug-in does not serve provider {provider_name!r}"))
        if credentials is None:
            return fail(
                Ec2Error(
                    f"{provider_name}: no provider account of this daemon holds the credentials of the account "
                    f"that pushed AMI {identifier}: it cannot be deregistered"
                )
            )
        removal = Ec2Delete(
            endpoint, credentials, self._door, self._reactor, self._settings.cleanup_retry, self._client_factory
        )
        return ensureDeferred(removal.run(identifier, details.get("snapshot_id")))


#: Error codes that mean the AMI or snapshot is not there (any more): already deleted.
