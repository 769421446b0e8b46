"""Removing a pushed image from EC2: deregister the AMI, delete its snapshot; gone already is fine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime

from . import Credentials
from .ec2_calls import ClientFactory, RetryPolicy, with_retries
from .ec2_endpoints import Endpoint

GONE_CODES = frozenset(
    {
        "InvalidAMIID.NotFound",
        "InvalidAMIID.Unavailable",
        "InvalidAMIID.Malformed",
        "InvalidSnapshot.NotFound",
        "InvalidSnapshotID.Malformed",
    }
)


class Ec2Delete:
    """Removes one pushed image: DeregisterImage, then DeleteSnapshot, each retried while transient."""

    def __init__(
        self,
        endpoint: Endpoint,
        credentials: Credentials,
        door: Any,
        reactor: IReactorTime,
        policy: RetryPolicy,
        client_factory: ClientFactory,
    ) -> None:
        self._endpoint = endpoint
        self._access_key = credentials.secrets["access_key"]
        self._secret_key = credentials.secrets["secret_access_key"]
        self._door = door
        self._reactor = reactor
        self._policy = policy
        self._client_factory = client_factory

    async def run(self, image_id: str, snapshot_id: str | None) -> None:
        ec2, _ = await self._door.run(self._client_factory, self._endpoint, self._access_key, self._secret_key, 2)
        if image_id:
            await self._call("DeregisterImage", ec2.deregister_image, ImageId=image_id)
        if snapshot_id:
            await self._call("DeleteSnapshot", ec2.delete_snapshot, SnapshotId=snapshot_id)

    async def _call(self, action: str, fn: Callable[..., Any], **kwargs: Any) -> None:
        """Call the SDK on the door, retrying transient errors; an object already gone is fine."""
        # A snapshot still in use by the AMI being deregistered frees up soon.
        await with_retries(
            self._reactor,
            self._policy,
            self._endpoint.name,
            action,
            lambda: self._door.run(fn, **kwargs),
            secrets=(self._secret_key,),
            also_transient=("InvalidSnapshot.InUse",),
            gone=GONE_CODES,
        )
