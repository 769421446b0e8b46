"""The OpenStack provider: pushes ``openstack-kvm`` (qcow2) images into Glance, authenticating with Keystone.

Providers are the clouds defined in the ``provider_dir`` folder (see
``openstack_clouds``).  Credentials come in the factory's XML form, with a
password::

    <provider_credentials><openstack_credentials>
      <username>u</username><password>p</password><project_name>proj</project_name>
      <user_domain_name>Default</user_domain_name><project_domain_name>Default</project_domain_name>
    </openstack_credentials></provider_credentials>

(the domains default to ``Default``), or with an application credential
(``<application_credential_id/>``, ``<application_credential_secret/>``
inside ``<openstack_credentials>``).  They live in memory for one push
only.  The user name (or the application credential id) is the provider
account identifier.

A push (``openstack_push``): authenticate, create the Glance image
(qcow2/bare, named after the template, with ``os_distro``, ``os_version``,
``architecture``, ``hw_disk_bus``, ``imagefactory_build_id`` and
``imagefactory_target_image_id``), stream the file to it with progress,
wait until ``active`` and compare Glance's ``os_hash_value`` with the hash
computed while streaming.  The Glance image id is the identifier on the
provider.  A failed or cancelled push deletes the image it made.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, fail

from ..errors import InvalidCredentials
from ..registry import PluginEnvironment
from . import Credentials, PushJob, PushResult
from .mock import credential_fields
from .openstack_calls import OpenStackError, call, connect, secret_values
from .openstack_clouds import Cloud, load_clouds
from .openstack_push import DISK_FORMATS, GlancePush

CREDENTIALS_KIND = "openstack_credentials"
PASSWORD_FIELDS = ("username", "password", "project_name", "user_domain_name", "project_domain_name")
APPLICATION_FIELDS = ("application_credential_id", "application_credential_secret")
DEFAULT_DOMAIN = "Default"
MAX_FIELD = 1024


class OpenStackProvider:
    """Pushes qcow2 images to the Glance of the OpenStack clouds defined in ``provider_dir``."""

    def __init__(self, environment: PluginEnvironment) -> None:
        # A bad definition file stops the daemon at start-up (ConfigError).
        self._clouds = load_clouds(environment.config.provider_dir)
        self._door = environment.cloud_door
        self._reactor = environment.reactor

    def serves(self, provider_name: str) -> bool:
        """Every ``openstack`` provider defined in ``provider_dir``."""
        return provider_name in self._clouds

    def provider_names(self) -> list[str]:
        """Every provider name this plug-in serves, sorted."""
        return sorted(self._clouds)

    def cloud(self, provider_name: str) -> Cloud:
        """The definition of ``provider_name`` (KeyError when not served)."""
        return self._clouds[provider_name]

    def location(self, provider_name: str) -> tuple[str, str]:
        """The cloud's Keystone URL and its region (empty when any region will do)."""
        cloud = self._clouds[provider_name]
        return cloud.auth_url, cloud.region or ""

    def accepts_target(self, target: str) -> bool:
        """True for the qcow2 ``openstack-kvm`` images."""
        return target in DISK_FORMATS

    def parse_credentials(self, xml: str) -> Credentials:
        """A password or an application credential; InvalidCredentials naming what is wrong (never a value)."""
        fields = credential_fields(xml, CREDENTIALS_KIND, PASSWORD_FIELDS + APPLICATION_FIELDS, ())
        for name, value in fields.items():
            if len(value) > MAX_FIELD or not value.isprintable():
                raise InvalidCredentials(
                    f"<{CREDENTIALS_KIND}><{name}> must be printable, at most {MAX_FIELD} characters"
                )
        if any(name in fields for name in APPLICATION_FIELDS):
            return _application_credential(fields)
        missing = [name for name in PASSWORD_FIELDS[:3] if name not in fields]
        if missing:
            raise InvalidCredentials(
                f"<{CREDENTIALS_KIND}> lacks {', '.join(f'<{name}>' for name in missing)} "
                "(or give <application_credential_id> and <application_credential_secret>)"
            )
        secrets = {name: fields.get(name, DEFAULT_DOMAIN) for name in PASSWORD_FIELDS}
        return Credentials(account_identifier=fields["username"], secrets=secrets)

    def push(self, job: PushJob, credentials: Credentials) -> Deferred[PushResult]:
        """Push the job's target image into Glance; fire with a PushResult (the Glance image id)."""
        provider = job.builder.provider or ""
        cloud = self._clouds.get(provider)
        if cloud is None:
            return fail(OpenStackError(f"the openstack plug-in does not serve provider {provider!r}"))
        return ensureDeferred(self._push(cloud, job, credentials))

    async def _push(self, cloud: Cloud, job: PushJob, credentials: Credentials) -> PushResult:
        path = await job.image_file()
        return await GlancePush(cloud, job, credentials, self._door, self._reactor).run(path)

    def delete(
        self, provider_name: str, identifier: str, details: dict[str, str], credentials: Credentials | None
    ) -> Deferred[None]:
        """Delete the Glance image ``identifier``; one already gone is fine."""
        cloud = self._clouds.get(provider_name)
        if cloud is None:
            return fail(OpenStackError(f"the openstack plug-in does not serve provider {provider_name!r}"))
        if credentials is None:
            return fail(
                OpenStackError(
                    f"{provider_name}: no provider account of this daemon holds the credentials of the account "
                    f"that pushed Glance image {identifier}: it cannot be deleted"
                )
            )
        return self._door.run(delete_image, cloud, credentials, identifier)


def delete_image(cloud: Cloud, credentials: Credentials, identifier: str) -> None:
    """Delete one Glance image; an image already gone is not an error (blocking)."""
    secrets = secret_values(credentials)
    connection = call(cloud.name, "authenticate", secrets, connect, cloud, credentials)
    call(cloud.name, "delete image", secrets, _delete, connection.glance, identifier)


def _delete(glance: Any, identifier: str) -> None:
    from glanceclient import exc as glance_errors  # type: ignore[import-untyped]

    try:
        glance.images.delete(identifier)
    except glance_errors.HTTPNotFound:
        pass


def _application_credential(fields: dict[str, str]) -> Credentials:
    missing = [name for name in APPLICATION_FIELDS if name not in fields]
    if missing:
        raise InvalidCredentials(f"<{CREDENTIALS_KIND}> lacks {', '.join(f'<{name}>' for name in missing)}")
    secrets = {name: fields[name] for name in APPLICATION_FIELDS}
    return Credentials(account_identifier=fields["application_credential_id"], secrets=secrets)
