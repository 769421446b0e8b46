"""Deleting images, builds, target images and provider images, with everything under them.

A deletion, whatever its level:

1. stops every builder under the object that is still running (it ends
   FAILED, "cancelled"), and waits until it has;
2. removes every pushed image under it from its cloud through the provider
   plug-in (EC2: deregister the AMI, delete its snapshot), with the
   credentials of the configured provider account that pushed it (an
   imported image was not made here and stays on its provider);
3. removes the records and puts one DELETED event per builder in the outbox
   (one store transaction, through the update function), and forgets the
   builders (the index: both APIs then answer 404);
4. removes the files: builder folders (images, logs) and, for a build or an
   image, the build's base image folder.

When a cloud refuses (step 2) nothing of the records is removed, so the
deletion can be asked again: an image already gone from the cloud counts as
deleted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import gatherResults
from twisted.logger import Logger

from ..doors import IDoor
from ..errors import ImageFactoryError
from ..events import Event
from ..model import Builder, Operation
from ..store import IStore
from .accounts import ProviderAccount
from .dispatcher import Dispatcher
from .imports import is_imported
from .index import BuilderIndex
from .updates import BuilderUpdater
from .work import discard_path


class DeleteFailed(ImageFactoryError):
    """An object could not be deleted (its cloud refused, or something unexpected); the message says why."""


class Deleter:
    """Deletes objects and what hangs under them (see the module docstring)."""

    log = Logger()

    def __init__(
        self,
        store: IStore,
        index: BuilderIndex,
        dispatcher: Dispatcher,
        accounts: dict[str, ProviderAccount],
        disk_door: IDoor,
        state_dir: str,
        updater: BuilderUpdater,
    ) -> None:
        self._store = store
        self._index = index
        self._updater = updater
        self._dispatcher = dispatcher
        self._accounts = accounts
        self._disk_door = disk_door
        self._state_dir = state_dir

    async def delete_image(self, image_id: str) -> None:
        """Delete an image, its builds and everything under them; UnknownObject when there is none."""
        await self._store.get_image(image_id)
        builds = [build.id for build in await self._store.list_builds() if build.image_id == image_id]
        await self._delete(
            f"image {image_id}",
            lambda b: b.image_id == image_id,
            lambda events: self._store.delete_image(image_id, events),
            builds,
        )

    async def delete_build(self, build_id: str) -> None:
        """Delete a build and its target and provider images."""
        await self._store.get_build(build_id)
        await self._delete(
            f"build {build_id}",
            lambda b: b.build_id == build_id,
            lambda events: self._store.delete_build(build_id, events),
            [build_id],
        )

    async def delete_target_image(self, target_image_id: str) -> None:
        """Delete a target image and its provider images."""
        await self._store.get_target_image(target_image_id)
        await self._delete(
            f"target image {target_image_id}",
            lambda b: target_image_id in (b.id, b.target_image_id),
            lambda events: self._store.delete_target_image(target_image_id, events),
            [],
            after=target_image_id,
        )

    async def delete_provider_image(self, provider_image_id: str) -> None:
        """Delete a provider image, from its cloud too."""
        await self._store.get_provider_image(provider_image_id)
        await self._delete(
            f"provider image {provider_image_id}",
            lambda b: b.id == provider_image_id,
            lambda events: self._store.delete_provider_image(provider_image_id, events),
            [],
            after=provider_image_id,
        )

    async def _delete(
        self,
        what: str,
        under: Callable[[Builder], bool],
        remove_records: Callable[[list[Event]], Any],
        build_ids: list[str],
        after: str | None = None,
    ) -> None:
        """Stop, remove from the clouds and delete the builders ``under`` an object, then its records and files.

        With ``after`` (a target or provider image's id) the store is read only from that builder on:
        it and what hangs under it (pushes) were made after it.
        """
        if after is None:
            builders = await self._index.scan(under)
        else:
            first = await self._index.lookup(after)
            builders = [first] if first is not None and under(first) else []
            builders += await self._index.scan(under, after=after)
        try:
            await self._stop_running(builders)
            for builder in builders:
                await self._remove_from_cloud(builder)
        except ImageFactoryError as error:
            raise DeleteFailed(f"{what} was not deleted: {error.message}") from None
        except Exception:
            self.log.failure("deleting {what} failed", what=what)
            raise DeleteFailed(f"{what} was not deleted: unexpected error; the daemon's log has the details") from None
        # As they are now: a builder stopped above has ended since the list was made.
        await self._updater.delete([self._index.get(builder.id) or builder for builder in builders], remove_records)
        await self._remove_files(os.path.join(self._state_dir, "builders", builder.id) for builder in builders)
        stored = [builder.artifact_path for builder in builders if builder.artifact_path]
        await gatherResults([self._dispatcher.image_store.delete(path) for path in stored], consumeErrors=True)
        await self._remove_files(os.path.join(self._state_dir, "builds", build_id) for build_id in build_ids)
        self.log.info("deleted {what} ({count} builders)", what=what, count=len(builders))

    async def _stop_running(self, builders: list[Builder]) -> None:
        running = [builder.id for builder in builders if not builder.status.is_final]
        for builder_id in running:
            self._dispatcher.cancel(builder_id)
        await gatherResults([self._dispatcher.stopped(builder_id) for builder_id in running], consumeErrors=True)

    async def _remove_from_cloud(self, builder: Builder) -> None:
        # Re-read: a push stopped above may have ended since the list was made.
        current = self._index.get(builder.id) or builder
        if current.operation != Operation.PUSH or not current.identifier_on_provider or not current.provider:
            return
        if is_imported(current):
            # Imported, not made here: it stays on the provider (the DELETE answer lists it).
            return
        provider = self._dispatcher.provider(current.provider)
        details = json.loads(current.provider_details or "{}")
        await provider.delete(current.provider, current.identifier_on_provider, details, self.credentials_for(current))

    def credentials_for(self, builder: Builder) -> Any:
        """The credentials of the configured account that pushed ``builder``'s image, or None."""
        for account in self._accounts.values():
            if (
                account.provider == builder.provider
                and account.credentials.account_identifier == builder.provider_account_identifier
            ):
                return account.credentials
        return None

    async def _remove_files(self, paths: Iterable[str]) -> None:
        await gatherResults([self._disk_door.run(discard_path, path) for path in paths], consumeErrors=True)
