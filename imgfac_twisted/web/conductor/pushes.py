"""A Conductor push: one request pushes a target image, a build's or an image's latest build's
target images to one or more provider accounts.

Everything is checked before the first push starts (each account takes
some of the target images, each of them COMPLETED and pushable), so a
refused request starts nothing.
"""

from __future__ import annotations

from ...errors import InvalidRequest
from ...jobs.accounts import ProviderAccount
from ...jobs.dispatcher import Dispatcher
from ...jobs.index import BuilderIndex
from ...model import Builder, Operation, Status
from ...store import IStore
from . import lookups
from . import representations as xml
from .errors import ConductorError, incorrect


async def start_pushes(
    dispatcher: Dispatcher,
    store: IStore,
    index: BuilderIndex,
    kind: str,
    object_id: str,
    accounts: list[ProviderAccount],
) -> list[tuple[Builder, str]]:
    """Push what ``kind`` (``target_image_id``, ``build_id``, ``image_id``) ``object_id`` names to every account.

    Returns each provider image's builder with its account's name.  A push
    that cannot be started is a PushError naming those started before it.
    """
    candidates, what = await _candidates(store, index, kind, object_id)
    plan = [
        (account, builder) for account in accounts for builder in await _matching(dispatcher, account, candidates, what)
    ]
    started: list[tuple[Builder, str]] = []
    for account, builder in plan:
        try:
            provider_image = await dispatcher.start_push_with_credentials(
                builder.id, account.provider, account.credentials
            )
        except Exception as error:
            done = f"; started before it: {', '.join(b.id for b, _ in started)}" if started else ""
            reason = getattr(error, "message", None) or type(error).__name__
            raise ConductorError(
                "PushError",
                500,
                f"the push of target image {builder.id} to account "
                f"{account.name!r} could not be started: {reason}{done}",
            ) from error
        pushed = await index.lookup(provider_image.id)
        if pushed is not None:
            started.append((pushed, account.name))
    return started


async def _candidates(store: IStore, index: BuilderIndex, kind: str, object_id: str) -> tuple[list[Builder], str]:
    """The target image builders a push of ``kind`` covers, and a name for them."""
    if kind == "target_image_id":
        return [await lookups.target_builder(index, object_id)], f"target image {object_id}"
    if kind == "build_id":
        build = await lookups.build(store, object_id)
    else:
        await lookups.image(store, object_id)
        builds = [b for b in await store.list_builds() if b.image_id == object_id]
        if not builds:
            raise incorrect(f"image {object_id} has no build to push")
        build = max(builds, key=lambda b: b.created)
    builders = await index.scan(lambda b: b.operation == Operation.BUILD and b.build_id == build.id)
    return builders, f"build {build.id}"


async def _matching(
    dispatcher: Dispatcher, account: ProviderAccount, candidates: list[Builder], what: str
) -> list[Builder]:
    """The candidates ``account`` takes, each checked pushable.

    Those whose target is the account's provider type (``ec2``); where none
    is, those its plug-in accepts (``openstack-kvm`` for ``openstack``),
    never ``mock`` images, which every test plug-in accepts.
    """
    matching = [b for b in candidates if b.target == account.provider_type]
    if not matching:
        provider = dispatcher.provider(account.provider)
        matching = [b for b in candidates if b.target != "mock" and provider.accepts_target(b.target)]
    if not matching:
        targets = ", ".join(sorted({b.target for b in candidates})) or "none"
        raise incorrect(
            f"account {account.name!r} takes target images of target {account.provider_type!r}; "
            f"{what} has none (its targets: {targets})"
        )
    for builder in matching:
        if builder.status != Status.COMPLETED:
            raise incorrect(
                f"target image {builder.id} is {xml.conductor_status(builder.status)}: "
                "only a COMPLETED target image can be pushed"
            )
        try:
            await dispatcher.check_pushable(builder.id, account.provider)
        except InvalidRequest as error:
            raise incorrect(error.message) from None
    return matching
