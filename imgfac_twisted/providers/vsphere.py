"""The vSphere provider: imports ``vsphere`` (streamOptimized vmdk) and ``ova`` images as VM templates.

Providers are the vCenters defined in the ``provider_dir`` folder (see
``vsphere_sites``).  Credentials come in the factory's XML form::

    <provider_credentials><vsphere_credentials>
      <username>administrator@vsphere.local</username><password>p</password>
    </vsphere_credentials></provider_credentials>

They live in memory for one push only; the user name is the provider
account identifier.

A push (``vsphere_push``) imports the image through an OVF import lease
(pyVmomi) as a VM named after the template plus the first 8 characters of
the provider image id, marks it a template in the site's folder, and
records the VM's managed object id (``vm-70``) as the identifier on the
provider.  A failed or cancelled push destroys the VM it made.  ``delete``
destroys the VM.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, ensureDeferred, fail

from ..errors import InvalidCredentials
from ..registry import PluginEnvironment
from . import Credentials, PushJob, PushResult
from .mock import credential_fields
from .vsphere_calls import VSphereError, call, connect, destroy_vm, disconnect, secret_values
from .vsphere_disk import TARGETS
from .vsphere_push import VSpherePush
from .vsphere_sites import Site, load_sites

CREDENTIALS_KIND = "vsphere_credentials"
FIELDS = ("username", "password")
MAX_FIELD = 1024


class VSphereProvider:
    """Imports images as VM templates into the vCenters defined in ``provider_dir``."""

    def __init__(self, environment: PluginEnvironment) -> None:
        # A bad definition file stops the daemon at start-up (ConfigError).
        self._sites = load_sites(environment.config.provider_dir)
        self._door = environment.cloud_door
        self._reactor = environment.reactor

    def serves(self, provider_name: str) -> bool:
        """Every ``vsphere`` provider defined in ``provider_dir``."""
        return provider_name in self._sites

    def provider_names(self) -> list[str]:
        """Every provider name this plug-in serves, sorted."""
        return sorted(self._sites)

    def site(self, provider_name: str) -> Site:
        """The definition of ``provider_name`` (KeyError when not served)."""
        return self._sites[provider_name]

    def location(self, provider_name: str) -> tuple[str, str]:
        """The vCenter's SDK URL and the datacenter the images go to."""
        site = self._sites[provider_name]
        return site.url, site.datacenter

    def accepts_target(self, target: str) -> bool:
        """True for ``vsphere`` (streamOptimized vmdk) and ``ova`` images."""
        return target in TARGETS

    def parse_credentials(self, xml: str) -> Credentials:
        """A user name and password; InvalidCredentials naming what is wrong (never a value)."""
        fields = credential_fields(xml, CREDENTIALS_KIND, FIELDS, FIELDS)
        for name, value in fields.items():
            if len(value) > MAX_FIELD or not value.isprintable():
                raise InvalidCredentials(
                    f"<{CREDENTIALS_KIND}><{name}> must be printable, at most {MAX_FIELD} characters"
                )
        return Credentials(account_identifier=fields["username"], secrets=dict(fields))

    def push(self, job: PushJob, credentials: Credentials) -> Deferred[PushResult]:
        """Import the job's target image as a template VM; fire with a PushResult (the VM's id)."""
        provider = job.builder.provider or ""
        site = self._sites.get(provider)
        if site is None:
            return fail(VSphereError(f"the vsphere plug-in does not serve provider {provider!r}"))
        return ensureDeferred(self._push(site, job, credentials))

    async def _push(self, site: Site, job: PushJob, credentials: Credentials) -> PushResult:
        path = await job.image_file()
        return await VSpherePush(site, job, credentials, self._door, self._reactor).run(path)

    def delete(
        self, provider_name: str, identifier: str, details: dict[str, str], credentials: Credentials | None
    ) -> Deferred[None]:
        """Destroy the VM ``identifier``; one already gone is fine."""
        site = self._sites.get(provider_name)
        if site is None:
            return fail(VSphereError(f"the vsphere plug-in does not serve provider {provider_name!r}"))
        if credentials is None:
            return fail(
                VSphereError(
                    f"{provider_name}: no provider account of this daemon holds the credentials of the account "
                    f"that pushed VM {identifier}: it cannot be destroyed"
                )
            )
        return self._door.run(destroy_template, site, credentials, identifier)


def destroy_template(site: Site, credentials: Credentials, identifier: str) -> None:
    """Destroy one pushed VM; one already gone is not an error (blocking)."""
    secrets = secret_values(credentials)
    inventory = call(site.name, "log in", secrets, connect, site, credentials)
    try:
        call(site.name, f"destroy VM {identifier}", secrets, destroy_vm, inventory.service, identifier)
    finally:
        disconnect(inventory)
