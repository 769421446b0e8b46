"""A fake EC2 (and EBS direct) client and an EC2Provider wired to it, on a Clock and an inline door."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from twisted.internet.task import Clock

from imgfac_twisted.config import Config
from imgfac_twisted.providers.ec2 import EC2Provider
from imgfac_twisted.providers.ec2_calls import Ec2Settings, RetryPolicy
from imgfac_twisted.registry import PluginEnvironment
from imgfac_twisted.testing import InlineDoor


def client_error(code: str, message: str = "it went wrong", status: int = 400, operation: str = "Op") -> ClientError:
    """The ClientError botocore raises for an AWS error answer."""
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


class FakeCloud:
    """EC2 and EBS in memory, with errors to inject per action."""

    def __init__(self, block_size: int = 512) -> None:
        self.block_size = block_size
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.images: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        #: action -> exceptions to raise, one per call, before answering normally.
        self.errors: dict[str, list[BaseException]] = {}
        self.snapshot_states: list[str] = []
        self.image_states: list[str] = []
        self.on_put: Callable[[], None] | None = None

    def _enter(self, action: str, kwargs: dict[str, Any]) -> None:
        self.calls.append((action, kwargs))
        pending = self.errors.get(action)
        if pending:
            raise pending.pop(0)

    def count(self, action: str) -> int:
        return sum(1 for name, _ in self.calls if name == action)

    # EBS
    def start_snapshot(self, **kwargs: Any) -> dict[str, Any]:
        self._enter("StartSnapshot", kwargs)
        snapshot_id = f"snap-{len(self.snapshots):08x}"
        self.snapshots[snapshot_id] = {
            "blocks": {},
            "state": "pending",
            "size": kwargs["VolumeSize"],
            "tags": kwargs.get("Tags"),
        }
        return {
            "SnapshotId": snapshot_id,
            "BlockSize": self.block_size,
            "Status": "pending",
            "VolumeSize": kwargs["VolumeSize"],
        }

    def put_snapshot_block(self, **kwargs: Any) -> dict[str, Any]:
        self._enter("PutSnapshotBlock", kwargs)
        if self.on_put is not None:
            self.on_put()
        data = kwargs["BlockData"]
        assert len(data) == kwargs["DataLength"] == self.block_size
        assert kwargs["ChecksumAlgorithm"] == "SHA256"
        assert kwargs["Checksum"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
        self.snapshots[kwargs["SnapshotId"]]["blocks"][kwargs["BlockIndex"]] = data
        return {"Checksum": kwargs["Checksum"], "ChecksumAlgorithm": "SHA256"}

    def complete_snapshot(self, **kwargs: Any) -> dict[str, Any]:
        self._enter("CompleteSnapshot", kwargs)
        snapshot = self.snapshots[kwargs["SnapshotId"]]
        assert kwargs["ChangedBlocksCount"] == len(snapshot["blocks"])
        snapshot["state"] = "completed"
        return {"Status": "pending"}

    # EC2
    def describe_snapshots(self, **kwargs: Any) -> dict[str, Any]:
        self._enter("DescribeSnapshots", kwargs)
        snapshot_id = kwargs["SnapshotIds"][0]
        if snapshot_id not in self.snapshots:
            raise client_error("InvalidSnapshot.NotFound", f"The snapshot '{snapshot_id}' does not exist.")
        state = self.snapshot_states.pop(0) if self.snapshot_states else self.snapshots[snapshot_id]["state"]
        return {"Snapshots": [{"SnapshotId": snapshot_id, "State": state, "StateMessage": "broken disk"}]}

    def register_image(self, **kwargs: Any) -> dict[str, Any]:
        self._enter("RegisterImage", kwargs)
        image_id = f"ami-{len(self.images):08x}"
        self.images[image_id] = dict(kwargs)
        return {"ImageId": image_id}

    def describe_images(self, **kwargs: Any) -> dict[str, Any]:
        self._enter("DescribeImages", kwargs)
        if "ImageIds" in kwargs:
            image_id = kwargs["ImageIds"][0]
            state = self.image_states.pop(0) if self.image_states else "available"
            return {
                "Images": [
                    {"ImageId": image_id, "State": state, "StateReason": {"Message": "the snapshot is unusable"}}
                ]
            }
        name = kwargs["Filters"][0]["Values"][0]
        return {"Images": [{"ImageId": image_id} for image_id, image in self.images.items() if image["Name"] == name]}

    def deregister_image(self, **kwargs: Any) -> dict[str, Any]:
        self._enter("DeregisterImage", kwargs)
        del self.images[kwargs["ImageId"]]
        return {}

    def delete_snapshot(self, **kwargs: Any) -> dict[str, Any]:
        self._enter("DeleteSnapshot", kwargs)
        del self.snapshots[kwargs["SnapshotId"]]
        return {}


def make_provider(
    provider_dir, cloud: FakeCloud | None = None, door: Any = None, clock: Clock | None = None, **settings: Any
) -> EC2Provider:
    """An EC2Provider whose clients are *cloud* (a new FakeCloud by default), retrying without jitter."""
    environment = PluginEnvironment(Config(provider_dir=str(provider_dir)), clock or Clock(), door or InlineDoor())
    cloud = cloud or FakeCloud()
    settings.setdefault("retry", RetryPolicy(jitter=0))
    return EC2Provider(environment, client_factory=lambda *args: (cloud, cloud), settings=Ec2Settings(**settings))
