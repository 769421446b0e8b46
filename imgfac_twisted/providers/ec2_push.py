"""One push to EC2: the image's non-zero blocks into an EBS snapshot (EBS direct APIs), then an AMI.

The push writes up to ``puts_in_flight`` blocks at once, reading the image
on the cloud door; every SDK call is retried while transient
(``ec2_calls.with_retries``); whatever a failed or cancelled push made
(snapshot, AMI) is deleted again before it ends.

How the blocks are written is ``ec2_block_writer``'s; what the AMI is
(name, architecture, root disk), ``ec2_ami``'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from ..doors import shielded
from ..redaction import scrub
from . import Credentials, PushJob, PushResult
from .ec2_ami import ARCHITECTURES, ROOT_DEVICE_NAME, ami_name, architecture_of, machine
from .ec2_block_writer import BlockWriter
from .ec2_blocks import Block, BlockReader, volume_size_gib
from .ec2_calls import ClientFactory, Ec2Error, Ec2ServiceError, Ec2Settings, Problem, RetryPolicy, with_retries
from .ec2_endpoints import Endpoint
from .pushing import PushSteps, message_of

T = TypeVar("T")

#: Targets whose image is a raw disk the EC2 provider can write into a snapshot.
#: (``mock`` images are tiny raw files: handy in tests.)
ACCEPTED_TARGETS = ("ec2", "mock")

#: The tag a snapshot carries with the id of the provider image it was made for.
PROVIDER_IMAGE_TAG = "imagefactory:provider_image"
#: At most this many retry lines go to a push's log (the rest are counted).
MAX_RETRY_LOG_LINES = 20


class Ec2Push(PushSteps):
    """One push: snapshot, blocks, AMI; cleanup when anything fails or the push is cancelled."""

    error_type = Ec2Error

    def __init__(
        self,
        endpoint: Endpoint,
        job: PushJob,
        credentials: Credentials,
        door: Any,
        reactor: IReactorTime,
        settings: Ec2Settings,
        client_factory: ClientFactory,
    ) -> None:
        super().__init__(job, door, reactor, (credentials.secrets["secret_access_key"],))
        self._endpoint = endpoint
        self._settings = settings
        self._client_factory = client_factory
        self._access_key = credentials.secrets["access_key"]
        self._secret_key = credentials.secrets["secret_access_key"]
        self._account = credentials.account_identifier
        self._ec2: Any = None
        self._ebs: Any = None
        self._stopping = False
        self._retry_lines = 0
        self.snapshot_id: str | None = None
        self.image_id: str | None = None

    # -- the whole push ------------------------------------------------------

    async def run(self) -> PushResult:
        return await self._cleaning_up(self._run())

    async def _run(self) -> PushResult:
        job, endpoint, settings = self._job, self._endpoint, self._settings
        target_builder = job.target_builder
        if target_builder.target not in ACCEPTED_TARGETS:
            raise Ec2Error(
                f"{endpoint.name}: the ec2 providers push the raw images of the 'ec2' target; "
                f"target image {target_builder.id} was built for {target_builder.target!r}"
            )
        image = job.image
        # An imported image's arch is not known here (empty).
        os_arch = image.os_arch or None
        architecture = architecture_of(os_arch)
        if architecture is None:
            raise Ec2Error(
                f"{endpoint.name}: EC2 has no architecture for the template's arch {os_arch!r} "
                f"(known: {', '.join(sorted(ARCHITECTURES))})"
            )
        if os_arch is None:
            await self._log(f"the template's architecture is not known here: registering {architecture}")
        # From the image store: the file itself, or a copy fetched (S3) into the push's folder.
        path = await job.image_file()
        where = "AWS" if endpoint.is_aws else endpoint.endpoint_url
        await self._log(
            f"pushing {os.path.basename(path)} to {endpoint.name} ({where}, region {endpoint.region}) "
            f"for account {self._account}"
        )
        size = await self._image_size(path)
        self._ec2, self._ebs = await self._blocking(
            self._client_factory, endpoint, self._access_key, self._secret_key, settings.puts_in_flight + 2
        )
        gib = volume_size_gib(size)
        started = await self._call(
            "StartSnapshot",
            self._ebs.start_snapshot,
            observe=self._note_snapshot,
            VolumeSize=gib,
            ClientToken=job.builder.id,
            Description=f"Image Factory provider image {job.builder.id} of target image {target_builder.id}",
            Tags=[{"Key": PROVIDER_IMAGE_TAG, "Value": job.builder.id}],
        )
        block_size = started.get("BlockSize")
        if not isinstance(block_size, int) or not 0 < block_size <= 64 * 1024 * 1024:
            raise Ec2Error(f"{endpoint.name}: StartSnapshot answered an unusable block size {block_size!r}")
        await self._log(
            f"started snapshot {self.snapshot_id} ({gib} GiB, blocks of {block_size} bytes) for {size} bytes of image"
        )
        begun = self._reactor.seconds()
        # A batch feeds every put in flight, however large the blocks (AWS: 512 KiB).
        batch_bytes = max(settings.max_batch_bytes, settings.puts_in_flight * block_size)
        reader = BlockReader(path, block_size, batch_bytes, settings.max_scan_bytes)
        await self._blocking(reader.open)
        writer = BlockWriter(self._read_batch, self._put, self._report, settings.puts_in_flight)
        written = await writer.write(reader, size)
        took = max(self._reactor.seconds() - begun, 1e-6)
        await self._log(
            f"wrote {written} blocks ({written * block_size} bytes, "
            f"{written * block_size / took / 1e6:.2f} MB/s); "
            f"skipped {reader.zero_blocks} blocks of zeros and the file's holes"
        )
        completed = await self._call(
            "CompleteSnapshot", self._ebs.complete_snapshot, SnapshotId=self.snapshot_id, ChangedBlocksCount=written
        )
        if completed.get("Status") == "error":
            raise Ec2Error(f"{endpoint.name}: CompleteSnapshot: snapshot {self.snapshot_id} is in state error")
        await self._wait_for_snapshot()
        await self._report(95)
        await self._log(f"snapshot {self.snapshot_id} completed")
        await self._register(architecture, gib, image.name or None)
        await self._wait_for_image()
        await self._report(100)
        await self._log(
            f"registered AMI {self.image_id} ({architecture}, root device {ROOT_DEVICE_NAME} "
            f"on snapshot {self.snapshot_id})"
        )
        return PushResult(identifier=self.image_id or "", details={"snapshot_id": self.snapshot_id or ""})

    # -- blocks ----------------------------------------------------------------

    def _read_batch(self, reader: BlockReader) -> Deferred[list[Block]]:
        """The next batch of non-zero blocks, read on the door."""
        return self._track(self._door.run(reader.next_batch))

    async def _put(self, block: Block) -> None:
        await self._call(
            "PutSnapshotBlock",
            self._ebs.put_snapshot_block,
            SnapshotId=self.snapshot_id,
            BlockIndex=block.index,
            BlockData=block.data,
            DataLength=len(block.data),
            Checksum=block.checksum,
            ChecksumAlgorithm="SHA256",
        )

    # -- waiting ---------------------------------------------------------------

    async def _wait_for_snapshot(self) -> None:
        async def state() -> tuple[str | None, str]:
            try:
                answer = await self._call(
                    "DescribeSnapshots", self._ec2.describe_snapshots, SnapshotIds=[self.snapshot_id]
                )
            except Ec2ServiceError as error:
                if error.code == "InvalidSnapshot.NotFound":
                    return None, ""
                raise
            found = answer.get("Snapshots") or []
            if not found:
                return None, ""
            return found[0].get("State"), found[0].get("StateMessage") or ""

        await self._wait_until(
            f"snapshot {self.snapshot_id}", state, "completed", ("error",), self._settings.snapshot_wait
        )

    async def _wait_for_image(self) -> None:
        async def state() -> tuple[str | None, str]:
            try:
                answer = await self._call("DescribeImages", self._ec2.describe_images, ImageIds=[self.image_id])
            except Ec2ServiceError as error:
                if error.code in ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"):
                    return None, ""
                raise
            found = answer.get("Images") or []
            if not found:
                return None, ""
            reason = (found[0].get("StateReason") or {}).get("Message") or ""
            return found[0].get("State"), reason

        await self._wait_until(
            f"AMI {self.image_id}",
            state,
            "available",
            ("failed", "error", "invalid", "deregistered", "disabled"),
            self._settings.image_wait,
        )

    async def _wait_until(
        self, what: str, state: Callable[[], Any], done: str, failed: tuple[str, ...], limit: float
    ) -> None:
        """Poll ``state`` with growing pauses until it is ``done``; fail on ``failed`` or after ``limit`` s."""
        name = self._endpoint.name
        first = self._reactor.seconds()
        pause = self._settings.poll_first
        while True:
            current, reason = await state()
            if current == done:
                return
            if current in failed:
                raise Ec2Error(f"{name}: {what} is in state {current}{': ' + reason if reason else ''}")
            waited = self._reactor.seconds() - first
            if current is None and waited > self._settings.not_found_grace:
                raise Ec2Error(f"{name}: {what} was not found for {waited:.0f} s")
            if waited > limit:
                raise Ec2Error(f"{name}: {what} is still {current} after {waited:.0f} s")
            await deferLater(self._reactor, pause, lambda: None)
            pause = min(pause * 2, self._settings.poll_max)

    # -- the AMI ---------------------------------------------------------------

    async def _register(self, architecture: str, gib: int, image_name: str | None) -> None:
        job = self._job
        name = ami_name(image_name, job.builder.id)
        try:
            await self._call(
                "RegisterImage",
                self._ec2.register_image,
                observe=self._note_image,
                Name=name,
                Description=f"Image Factory provider image {job.builder.id} of target image {job.target_builder.id}",
                **machine(architecture, self.snapshot_id, gib),
            )
        except Ec2ServiceError as error:
            # The name holds this push's id: a duplicate is our own attempt
            # whose answer was lost on the way back.  Find it.
            if error.code != "InvalidAMIName.Duplicate":
                raise
            answer = await self._call(
                "DescribeImages",
                self._ec2.describe_images,
                Owners=["self"],
                Filters=[{"Name": "name", "Values": [name]}],
            )
            images = answer.get("Images") or []
            if not images:
                raise
            self.image_id = images[0]["ImageId"]

    # -- cleaning up -----------------------------------------------------------

    async def _clean_up(self, cause: BaseException) -> str | None:
        """Delete the AMI and the snapshot this push made (best effort); a note of what remains, if any."""
        self._stopping = True
        await self._settle(self._settings.settle_wait)
        notes = []
        if self._ec2 is None:
            return None
        policy = self._settings.cleanup_retry
        if self.image_id:
            try:
                await self._call(
                    "DeregisterImage", self._ec2.deregister_image, policy=policy, stoppable=False, ImageId=self.image_id
                )
                await self._log(f"deregistered AMI {self.image_id}")
            except Exception as error:
                notes.append(f"AMI {self.image_id} could not be deregistered ({message_of(error)}): remove it by hand")
        if self.snapshot_id:
            try:
                await self._call(
                    "DeleteSnapshot",
                    self._ec2.delete_snapshot,
                    policy=policy,
                    stoppable=False,
                    also_transient=("InvalidSnapshot.InUse",),
                    SnapshotId=self.snapshot_id,
                )
                await self._log(f"deleted snapshot {self.snapshot_id}")
            except Exception as error:
                notes.append(
                    f"snapshot {self.snapshot_id} could not be deleted ({message_of(error)}): delete it by hand"
                )
        for note in notes:
            await self._log(note)
        return "; ".join(notes) or None

    # -- calls -----------------------------------------------------------------

    def _note_snapshot(self, answer: Any) -> None:
        if isinstance(answer, dict) and answer.get("SnapshotId"):
            self.snapshot_id = answer["SnapshotId"]

    def _note_image(self, answer: Any) -> None:
        if isinstance(answer, dict) and answer.get("ImageId"):
            self.image_id = answer["ImageId"]

    def _track(self, call: Deferred[T]) -> Deferred[T]:
        return self._calls.add(call)

    async def _call(
        self,
        action: str,
        fn: Callable[..., Any],
        observe: Callable[[Any], None] | None = None,
        policy: RetryPolicy | None = None,
        stoppable: bool = True,
        also_transient: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> Any:
        """Call the SDK on the door, retrying transient errors; raise an Ec2Error with the service's words."""
        policy = policy or self._settings.retry

        async def attempt() -> Any:
            call = self._track(self._door.run(fn, **kwargs))
            if observe is not None:
                call.addCallback(lambda answer: (observe(answer), answer)[1])
            return await shielded(call)

        async def log_retry(problem: Problem, attempts: int, delay: float) -> None:
            if self._retry_lines < MAX_RETRY_LOG_LINES:
                self._retry_lines += 1
                more = " (further retries are not logged)" if self._retry_lines == MAX_RETRY_LOG_LINES else ""
                await self._log(
                    scrub(
                        f"{action}: {problem.code}: {problem.message}; retrying in {delay:.1f} s "
                        f"(attempt {attempts + 1} of {policy.max_attempts}){more}",
                        self._secrets,
                    )
                )

        return await with_retries(
            self._reactor,
            policy,
            self._endpoint.name,
            action,
            attempt,
            secrets=self._secrets,
            also_transient=also_transient,
            stopping=lambda: stoppable and self._stopping,
            on_retry=log_retry,
        )
