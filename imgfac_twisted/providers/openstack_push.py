"""One push to OpenStack: a Glance image created, its data streamed from disk, checked once active.

Every client call runs on the cloud door.  Progress moves from 0 to 95
with the bytes sent (read by a timer on the reactor), 100 once Glance says
``active`` and its ``os_hash_value`` equals the hash computed while
streaming.  A failed or cancelled push stops the upload and deletes the
image it created before it ends.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall, deferLater

from ..doors import shielded
from ..model import Image
from . import Credentials, PushJob, PushResult
from .openstack_calls import Connection, OpenStackError, StreamingReader, call, connect, file_hash, secret_values
from .openstack_clouds import Cloud
from .pushing import PushSteps, message_of

#: Targets whose images Glance takes, and the disk format each is.
DISK_FORMATS = {"openstack-kvm": "qcow2"}
#: How often progress is read while the data goes up (seconds).
PROGRESS_EVERY = 0.5
#: How long Glance may take to make an uploaded image active (seconds), and the pause between looks.
ACTIVE_WAIT = 600.0
ACTIVE_POLL = 0.5
#: How long a stopped upload's thread may take to return before the image is deleted anyway
#: (a thread stuck in a socket write cannot be stopped; Glance refuses the rest of a deleted image's data).
SETTLE_WAIT = 5.0


def image_properties(job: PushJob, disk_format: str) -> dict[str, str]:
    """What the Glance image is created with: formats, a name, and the template's facts."""
    image: Image = job.image
    name = f"{image.name or 'imagefactory'}-{job.builder.id}"
    properties = {
        "name": name,
        "disk_format": disk_format,
        "container_format": "bare",
        "hw_disk_bus": "virtio",
        "imagefactory_build_id": job.target_builder.build_id or "",
        "imagefactory_target_image_id": job.target_builder.id,
    }
    facts = {"os_distro": image.os_name, "os_version": image.os_version, "architecture": image.os_arch}
    properties.update({key: value.lower() if key == "os_distro" else value for key, value in facts.items() if value})
    return properties


class GlancePush(PushSteps):
    """Creates the Glance image, uploads the data, waits for ``active`` and checks the hash; cleans up."""

    error_type = OpenStackError

    def __init__(self, cloud: Cloud, job: PushJob, credentials: Credentials, door: Any, reactor: IReactorTime) -> None:
        super().__init__(job, door, reactor, secret_values(credentials))
        self._cloud = cloud
        self._credentials = credentials
        self._connection: Connection | None = None
        self._reader: StreamingReader | None = None
        self.image_id: str | None = None

    async def run(self, path: str) -> PushResult:
        try:
            return await self._cleaning_up(self._run(path))
        finally:
            if self._reader is not None:
                # After the clean-up: the upload's thread has returned (or been given up on).
                await self._blocking(self._reader.close)

    async def _run(self, path: str) -> PushResult:
        job, cloud = self._job, self._cloud
        target = job.target_builder
        disk_format = DISK_FORMATS.get(target.target or "")
        if disk_format is None:
            raise OpenStackError(
                f"{cloud.name}: the openstack providers take {', '.join(DISK_FORMATS)} images; "
                f"target image {target.id} was built for {target.target!r}"
            )
        size = await self._image_size(path)
        await self._log(
            f"pushing {os.path.basename(path)} ({size} bytes) to {cloud.name} (Keystone {cloud.auth_url}) "
            f"for account {self._credentials.account_identifier}"
        )
        self._connection = await self._call("authenticate", connect, cloud, self._credentials)
        await self._log(f"authenticated; Glance at {self._connection.endpoint}")
        glance = self._connection.glance
        properties = image_properties(job, disk_format)
        creating = self._door.run(call, cloud.name, "create image", self._secrets, glance.images.create, **properties)
        # Noted as soon as Glance answers, even when the push was cancelled meanwhile: the clean-up deletes it.
        created = await shielded(self._calls.add(creating.addCallback(self._note_image)))
        await self._log(f"created Glance image {self.image_id} ({created['name']})")
        digest, algorithm = await self._upload(path, size)
        image = await self._wait_until_active()
        await self._check_hash(image, digest, algorithm, path)
        await self._report(100)
        return PushResult(identifier=self.image_id or "")

    async def _upload(self, path: str, size: int) -> tuple[str, str]:
        """Stream the file to Glance (progress 0..95); the hash computed on the way and its algorithm."""
        reader = self._reader = await self._blocking(StreamingReader, path)
        ticker = LoopingCall(self._tick, reader, size)
        ticker.clock = self._reactor
        ticker.start(PROGRESS_EVERY).addErrback(lambda _: None)
        began = self._reactor.seconds()
        try:
            assert self._connection is not None
            await self._call("upload image data", self._connection.glance.images.upload, self.image_id, reader, size)
        finally:
            if ticker.running:
                ticker.stop()
        took = max(self._reactor.seconds() - began, 1e-6)
        await self._log(f"uploaded {reader.sent} bytes ({reader.sent / took / 1e6:.1f} MB/s)")
        await self._report(95)
        return reader.hexdigest(), reader.algorithm

    def _tick(self, reader: StreamingReader, size: int) -> None:
        percent = 95 * reader.sent // size if size else 95
        self._report(min(percent, 95)).addErrback(lambda _: None)

    async def _wait_until_active(self) -> dict[str, Any]:
        assert self._connection is not None
        first = self._reactor.seconds()
        while True:
            image = await self._call("show image", self._connection.glance.images.get, self.image_id)
            status = image.get("status")
            if status == "active":
                return dict(image)
            if status in ("killed", "deleted", "deactivated"):
                raise OpenStackError(f"{self._cloud.name}: Glance image {self.image_id} is {status}")
            waited = self._reactor.seconds() - first
            if waited > ACTIVE_WAIT:
                raise OpenStackError(
                    f"{self._cloud.name}: Glance image {self.image_id} is still {status} after {waited:.0f} s"
                )
            await deferLater(self._reactor, ACTIVE_POLL, lambda: None)

    async def _check_hash(self, image: dict[str, Any], digest: str, algorithm: str, path: str) -> None:
        reported, value = image.get("os_hash_algo"), image.get("os_hash_value")
        if not reported or not value:
            await self._log("Glance reports no os_hash_value: the upload's hash is not compared")
            return
        if reported != algorithm:
            # A Glance set to hash otherwise: read the file once more in its algorithm.
            digest = await self._blocking(file_hash, path, reported)
        if value != digest:
            raise OpenStackError(
                f"{self._cloud.name}: Glance image {self.image_id} has {reported} {value[:16]}..., "
                f"the image file has {digest[:16]}...: the upload was corrupted"
            )
        await self._log(f"Glance image {self.image_id} is active; its {reported} matches the image file")

    def _note_image(self, created: Any) -> Any:
        self.image_id = created["id"]
        return created

    # -- cleaning up -----------------------------------------------------------

    async def _clean_up(self, cause: BaseException) -> str | None:
        """Stop the upload and delete the image this push made (best effort); a note if it remains."""
        if self._reader is not None:
            self._reader.stop()
        await self._settle(SETTLE_WAIT)
        if self.image_id is None or self._connection is None:
            return None
        try:
            await self._call("delete image", self._connection.glance.images.delete, self.image_id)
        except Exception as error:
            note = f"Glance image {self.image_id} could not be deleted ({message_of(error)}): delete it by hand"
            await self._log(note)
            return note
        await self._log(f"deleted Glance image {self.image_id}")
        return None

    # -- calls -----------------------------------------------------------------

    async def _call(self, action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a client call on the door; its errors become OpenStackErrors naming ``action``."""
        return await shielded(
            self._calls.add(self._door.run(call, self._cloud.name, action, self._secrets, fn, *args, **kwargs))
        )
