"""One push to vSphere: the image imported as a VM through an OVF import lease, then made a template.

Every pyVmomi call runs on the cloud door.  The steps: log in and find the
site's objects, ``OvfManager.CreateImportSpec`` with the factory's OVF
descriptor, ``ResourcePool.ImportVApp`` into the site's folder, the disk
streamed to the lease's device URL (progress 0..95 with the bytes sent,
the lease kept alive on the way), ``HttpNfcLeaseComplete``, then
``MarkAsTemplate``: progress 100.  The VM's managed object id (``vm-70``) is
the identifier on the provider.  A failed or cancelled push stops the
upload, aborts the lease and destroys the VM it made (vCenter does not
always do it) before it ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from ..doors import shielded
from ..errors import ImageFactoryError
from . import Credentials, PushJob, PushResult
from .pushing import PushSteps, message_of
from .vsphere_calls import (
    Inventory,
    VSphereError,
    abort_lease,
    call,
    connect,
    destroy_vm,
    device_url,
    disconnect,
    finish_import,
    import_spec,
    keep_alive,
    lease_vm,
    secret_values,
    start_import,
)
from .vsphere_disk import disk_source
from .vsphere_sites import Site
from .vsphere_upload import DiskUpload

#: How often progress is read while the disk goes up (seconds).
PROGRESS_EVERY = 0.5
#: Where progress stands once the disk is up (completing and marking the template are the rest).
UPLOADED = 95
#: How long a stopped upload's thread may take to return before the VM is destroyed anyway.
SETTLE_WAIT = 5.0


def vm_name(job: PushJob) -> str:
    """The VM's name: the template's, then the first 8 characters of the provider image id (never collides)."""
    return f"{job.image.name or 'imagefactory'}-{job.builder.id[:8]}"


class VSpherePush(PushSteps):
    """Imports the image as a template VM; on failure or cancel, aborts the lease and destroys the VM."""

    error_type = VSphereError
    cleaned_on = BaseException

    def __init__(self, site: Site, job: PushJob, credentials: Credentials, door: Any, reactor: IReactorTime) -> None:
        super().__init__(job, door, reactor, secret_values(credentials))
        self._site = site
        self._credentials = credentials
        self._inventory: Inventory | None = None
        self._lease: Any = None
        self._upload: DiskUpload | None = None
        self.vm_id: str | None = None

    async def run(self, path: str) -> PushResult:
        try:
            return await self._cleaning_up(self._run(path))
        finally:
            if self._inventory is not None:
                await shielded(self._door.run(disconnect, self._inventory))

    async def _run(self, path: str) -> PushResult:
        site, job = self._site, self._job
        name = vm_name(job)
        target = job.target_builder.target or ""
        source = await self._call("read the image file", disk_source, path, target, name, job.image)
        await self._log(
            f"importing {source.file_name} ({source.size} bytes) as VM {name} into {site.name} ({site.url}), "
            f"datacenter {site.datacenter}, cluster {site.cluster}, datastore {site.datastore}, folder {site.folder}, "
            f"for account {self._credentials.account_identifier}"
        )
        inventory = await self._call("log in", connect, site, self._credentials, keep=self._keep_inventory)
        spec = await self._call("create the import spec", import_spec, inventory, source.descriptor, name)
        await self._call("import the vApp", start_import, inventory, spec, keep=self._keep_lease)
        vm = await self._call("read the import lease", lease_vm, self._lease)
        self.vm_id = str(vm._moId)
        url, create = await self._call("read the import lease", device_url, self._lease, site)
        # Only the host: the URL's path names the lease, which lets anyone upload while it lasts.
        await self._log(f"created VM {self.vm_id}; sending the disk to {urlsplit(url).netloc}")
        # The session's cookie goes only to the vCenter itself, never to another host.
        cookie = inventory.cookie if urlsplit(url).hostname == site.host else ""
        upload = self._upload = DiskUpload(source, url, create, inventory.context, self._keep_alive, cookie=cookie)
        await self._send(upload)
        moid = await self._call("complete the import", finish_import, self._lease, vm)
        self._lease = None
        await self._log(f"VM {moid} ({name}) is a template in folder {site.folder}")
        await self._report(100)
        return PushResult(identifier=moid)

    async def _send(self, upload: DiskUpload) -> None:
        """Stream the disk (progress 0..95), logging the rate."""
        ticker = LoopingCall(self._tick, upload)
        ticker.clock = self._reactor
        ticker.start(PROGRESS_EVERY).addErrback(lambda _: None)
        began = self._reactor.seconds()
        try:
            await self._call("upload the disk", upload.run)
        finally:
            if ticker.running:
                ticker.stop()
        took = max(self._reactor.seconds() - began, 1e-6)
        await self._log(f"uploaded {upload.sent} bytes ({upload.sent / took / 1e6:.1f} MB/s)")
        await self._report(UPLOADED)

    def _tick(self, upload: DiskUpload) -> None:
        self._report(UPLOADED * upload.percent() // 100).addErrback(lambda _: None)

    def _keep_alive(self, percent: int) -> None:
        """Called by the upload's thread: ``HttpNfcLeaseProgress`` (a lost keep-alive is not fatal)."""
        try:
            keep_alive(self._lease, percent)
        except Exception:  # the upload's own errors say more
            pass

    # -- cleaning up -----------------------------------------------------------

    async def _clean_up(self, error: BaseException) -> str | None:
        """Stop the upload, abort the lease, destroy the VM this push made (best effort); a note if it remains."""
        if self._upload is not None:
            self._upload.stop()
        await self._settle(SETTLE_WAIT)
        if self._inventory is None:
            return None
        if self.vm_id is None and self._lease is not None:
            try:
                self.vm_id = str((await self._call("read the import lease", lease_vm, self._lease))._moId)
            except Exception as failure:
                await self._log(f"the import lease names no VM: {message_of(failure)}")
        if self._lease is not None:
            reason = error.message if isinstance(error, ImageFactoryError) else "the push was cancelled"
            try:
                await self._call("abort the import lease", abort_lease, self._lease, reason)
            except Exception as failure:
                await self._log(f"the import lease could not be aborted: {message_of(failure)}")
        if self.vm_id is None:
            return None
        try:
            await self._call("destroy the VM", destroy_vm, self._inventory.service, self.vm_id)
        except Exception as failure:
            note = f"VM {self.vm_id} could not be destroyed ({message_of(failure)}): destroy it by hand"
            await self._log(note)
            return note
        await self._log(f"destroyed VM {self.vm_id}")
        return None

    # -- calls -----------------------------------------------------------------

    async def _call(
        self, action: str, fn: Callable[..., Any], *args: Any, keep: Callable[[Any], Any] | None = None
    ) -> Any:
        """Run a blocking call on the door; its errors become VSphereErrors naming ``action``.

        ``keep`` gets the result even when the push was cancelled while the call ran.
        """
        running = self._door.run(call, self._site.name, action, self._secrets, fn, *args)
        if keep is not None:
            running.addCallback(keep)
        return await shielded(self._calls.add(running))

    def _keep_inventory(self, inventory: Inventory) -> Inventory:
        # Kept even when the push was cancelled while logging in: the session is then logged out.
        self._inventory = inventory
        return inventory

    def _keep_lease(self, lease: Any) -> Any:
        # Kept even when the push was cancelled during ImportVApp: the clean-up then destroys its VM.
        self._lease = lease
        return lease
