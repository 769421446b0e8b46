"""The Conductor API's routes (Klein), over the same dispatcher, store and index as the factory API.

Routes are thin: read the XML body, check, ask the dispatcher or the
deleter, shape the XML answer.  Credentials and Accept are checked before
routing (``resource.ConductorResource``); errors become ``<error>``
documents in ``errors``.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any, Iterable

from klein import Klein
from lxml import etree
from twisted.internet.defer import ensureDeferred
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from ...errors import InvalidRequest, UnknownObject
from ...jobs.accounts import ProviderAccount
from ...jobs.deletions import DeleteFailed, Deleter
from ...jobs.dispatcher import Dispatcher
from ...jobs.index import BuilderIndex
from ...model import Build, Builder, Operation, Status
from ...store import IStore
from ...xmlsafe import parse_xml
from ..errors import UnsupportedMediaType
from ..factory import base_url
from ..params import media_type
from . import representations as xml
from .errors import ConductorError, incorrect, insufficient, not_found, render_failure, xml_document

XML_TYPES = (b"application/xml", b"text/xml")
ID_PARAMETERS = ("target_image_id", "build_id", "image_id")


def _text(root: etree._Element, name: str) -> str:
    """The text of ``<name>`` under ``root`` (a child element is taken as XML text), stripped; '' when absent."""
    element = root.find(name)
    if element is None:
        return ""
    children = list(element)
    if children:
        return etree.tostring(children[0], encoding="unicode").strip()
    return (element.text or "").strip()


def _names(text: str) -> list[str]:
    """The distinct names of a comma-separated list."""
    return list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))


class ConductorAPI:
    """The Conductor routes, holding their collaborators (nothing per request)."""

    app = Klein()

    def __init__(self, dispatcher: Dispatcher, store: IStore, index: BuilderIndex, deleter: Deleter,
                 accounts: dict[str, ProviderAccount], max_body_bytes: int) -> None:
        self._dispatcher = dispatcher
        self._store = store
        self._index = index
        self._deleter = deleter
        self._accounts = accounts
        self._max_body_bytes = max_body_bytes
        #: Build id -> id of the template it was made from.  Builds never change, so a target
        #: image's read needs the store once per build, not once per request (pollers).
        self._build_templates: dict[str, str] = {}
        self._openapi = (files("imgfac_twisted.web.conductor") / "openapi.json").read_bytes()

    @app.handle_errors(Exception)
    def error(self, request: IRequest, failure: Failure) -> bytes:
        return render_failure(request, failure)

    # -- images ------------------------------------------------------------

    @app.route("/conductor/api/images", methods=["GET"])
    def images(self, request: IRequest) -> Any:
        async def answer() -> bytes:
            base = base_url(request)
            builds = await self._store.list_builds()
            members = [xml.image_element(base, image, [b.id for b in builds if b.image_id == image.id])
                       for image in await self._store.list_images()]
            return xml_document(request, 200, xml.collection("images", members))

        return ensureDeferred(answer())

    @app.route("/conductor/api/images/<image_id>", methods=["GET"])
    def image(self, request: IRequest, image_id: str) -> Any:
        return ensureDeferred(self._image_answer(request, image_id, deleting=False))

    @app.route("/conductor/api/images/<image_id>", methods=["DELETE"])
    def delete_image(self, request: IRequest, image_id: str) -> Any:
        return ensureDeferred(self._image_answer(request, image_id, deleting=True))

    async def _image_answer(self, request: IRequest, image_id: str, deleting: bool) -> bytes:
        try:
            image = await self._store.get_image(image_id)
        except UnknownObject:
            raise not_found("ImageNotFound", f"no image with id {image_id!r}") from None
        builds = [b.id for b in await self._store.list_builds() if b.image_id == image_id]
        element = xml.image_element(base_url(request), image, builds)
        if deleting:
            await self._deleted(self._deleter.delete_image(image_id), "ImageNotFound", "ImageDeleteFailure",
                                f"no image with id {image_id!r}")
            element = xml.marked_deleted(element)
        return xml_document(request, 200, element)

    @app.route("/conductor/api/images", methods=["POST"])
    def create_image(self, request: IRequest) -> Any:
        root = self._body(request, "image")
        targets, template = _text(root, "targets"), _text(root, "tdl")
        missing = [name for name, value in (("targets", targets), ("tdl", template)) if not value]
        if missing:
            raise insufficient(f"<image> needs {' and '.join(f'<{name}>' for name in missing)} "
                               "(a comma-separated list of targets, and the TDL template escaped or in CDATA)")
        known = self._dispatcher.known_targets()
        unknown = [name for name in _names(targets) if name not in known]
        if unknown:
            raise not_found("TargetNotFound", f"unknown target {', '.join(map(repr, unknown))}: "
                                              f"known targets are {', '.join(known)}")

        async def start() -> bytes:
            started = await self._dispatcher.start_build(template, targets)
            base = base_url(request)
            builders = [self._index.get(t.id) for t in started.target_images]
            element = xml.started_image_element(base, started.image.id, started.build.id,
                                                [b for b in builders if b is not None])
            request.setHeader(b"location", xml.href(base, "images", started.image.id).encode("utf-8"))
            return xml_document(request, 201, element)

        return ensureDeferred(start())

    # -- builds ------------------------------------------------------------

    @app.route("/conductor/api/builds", methods=["GET"])
    def builds(self, request: IRequest) -> Any:
        async def answer() -> bytes:
            base = base_url(request)
            members = [xml.build_element(base, build) for build in await self._store.list_builds()]
            return xml_document(request, 200, xml.collection("builds", members))

        return ensureDeferred(answer())

    @app.route("/conductor/api/builds/<build_id>", methods=["GET"])
    def build(self, request: IRequest, build_id: str) -> Any:
        return ensureDeferred(self._build_answer(request, build_id, deleting=False))

    @app.route("/conductor/api/builds/<build_id>", methods=["DELETE"])
    def delete_build(self, request: IRequest, build_id: str) -> Any:
        return ensureDeferred(self._build_answer(request, build_id, deleting=True))

    async def _build_answer(self, request: IRequest, build_id: str, deleting: bool) -> bytes:
        build = await self._get_build(build_id)
        element = xml.build_element(base_url(request), build)
        if deleting:
            await self._deleted(self._deleter.delete_build(build_id), "BuildNotFound", "BuildDeleteFailure",
                                f"no build with id {build_id!r}")
            element = xml.marked_deleted(element)
        return xml_document(request, 200, element)

    async def _template_of(self, build_id: str) -> str:
        """The id of the template the build was made from (remembered: builds never change)."""
        template_id = self._build_templates.get(build_id)
        if template_id is None:
            template_id = self._build_templates[build_id] = (await self._get_build(build_id)).template_id
        return template_id

    async def _get_build(self, build_id: str) -> Build:
        try:
            return await self._store.get_build(build_id)
        except UnknownObject:
            raise not_found("BuildNotFound", f"no build with id {build_id!r}") from None

    # -- target images -----------------------------------------------------

    @app.route("/conductor/api/target_images", methods=["GET"])
    def target_images(self, request: IRequest) -> Any:
        async def answer() -> bytes:
            base = base_url(request)
            templates = {build.id: build.template_id for build in await self._store.list_builds()}
            builders = self._index.all()
            members = [xml.target_image_element(base, builder, templates.get(builder.build_id, ""),
                                                self._pushes_of(builder.id, builders))
                       for builder in builders if builder.operation == Operation.BUILD]
            return xml_document(request, 200, xml.collection("target_images", members))

        return ensureDeferred(answer())

    @app.route("/conductor/api/target_images/<target_image_id>", methods=["GET"])
    def target_image(self, request: IRequest, target_image_id: str) -> Any:
        return ensureDeferred(self._target_image_answer(request, target_image_id, deleting=False))

    @app.route("/conductor/api/target_images/<target_image_id>", methods=["DELETE"])
    def delete_target_image(self, request: IRequest, target_image_id: str) -> Any:
        return ensureDeferred(self._target_image_answer(request, target_image_id, deleting=True))

    async def _target_image_answer(self, request: IRequest, target_image_id: str, deleting: bool) -> bytes:
        builder = self._target_builder(target_image_id)
        element = xml.target_image_element(base_url(request), builder, await self._template_of(builder.build_id),
                                           self._pushes_of(builder.id, self._index.all()))
        if deleting:
            await self._deleted(self._deleter.delete_target_image(target_image_id), "TargetImageNotFound",
                                "TargetImageDeleteFailure", f"no target image with id {target_image_id!r}")
            element = xml.marked_deleted(element)
        return xml_document(request, 200, element)

    def _target_builder(self, target_image_id: str) -> Builder:
        found = self._index.get(target_image_id)
        if found is None or found.operation != Operation.BUILD:
            raise not_found("TargetImageNotFound", f"no target image with id {target_image_id!r}")
        return found

    @staticmethod
    def _pushes_of(target_image_id: str, builders: Iterable[Builder]) -> list[str]:
        return [b.id for b in builders if b.operation == Operation.PUSH and b.target_image_id == target_image_id]

    # -- provider images ---------------------------------------------------

    @app.route("/conductor/api/provider_images", methods=["GET"])
    def provider_images(self, request: IRequest) -> bytes:
        base = base_url(request)
        members = [xml.provider_image_element(base, builder)
                   for builder in self._index.all() if builder.operation == Operation.PUSH]
        return xml_document(request, 200, xml.collection("provider_images", members))

    @app.route("/conductor/api/provider_images/<provider_image_id>", methods=["GET"])
    def provider_image(self, request: IRequest, provider_image_id: str) -> bytes:
        builder = self._push_builder(provider_image_id)
        return xml_document(request, 200, xml.provider_image_element(base_url(request), builder))

    @app.route("/conductor/api/provider_images/<provider_image_id>", methods=["DELETE"])
    def delete_provider_image(self, request: IRequest, provider_image_id: str) -> Any:
        builder = self._push_builder(provider_image_id)
        element = xml.provider_image_element(base_url(request), builder)

        async def delete() -> bytes:
            await self._deleted(self._deleter.delete_provider_image(provider_image_id), "ProviderImageNotFound",
                                "ProviderImageDeleteFailure", f"no provider image with id {provider_image_id!r}")
            return xml_document(request, 200, xml.marked_deleted(element))

        return ensureDeferred(delete())

    def _push_builder(self, provider_image_id: str) -> Builder:
        found = self._index.get(provider_image_id)
        if found is None or found.operation != Operation.PUSH:
            raise not_found("ProviderImageNotFound", f"no provider image with id {provider_image_id!r}")
        return found

    @app.route("/conductor/api/provider_images", methods=["POST"])
    def push(self, request: IRequest) -> Any:
        root = self._body(request, "provider_image")
        given = {name: _text(root, name) for name in ID_PARAMETERS if _text(root, name)}
        account_names = _names(_text(root, "provider_account"))
        if not given or not account_names:
            needs = [] if given else ["one of <target_image_id>, <build_id> or <image_id>"]
            needs += [] if account_names else ["<provider_account> (a comma-separated list of account names)"]
            raise insufficient(f"<provider_image> needs {' and '.join(needs)}")
        if len(given) > 1:
            raise incorrect(f"<provider_image> must name one of <target_image_id>, <build_id> or <image_id>, "
                            f"not {' and '.join(f'<{name}>' for name in given)}")
        unknown = [name for name in account_names if name not in self._accounts]
        if unknown:
            raise not_found("ProviderAccountNotFound", f"no provider account {', '.join(map(repr, unknown))}: "
                            f"known accounts are {', '.join(sorted(self._accounts)) or 'none'}")
        accounts = [self._accounts[name] for name in account_names]
        (kind, object_id), = given.items()
        return ensureDeferred(self._push(request, kind, object_id, accounts))

    async def _push(self, request: IRequest, kind: str, object_id: str, accounts: list[ProviderAccount]) -> bytes:
        candidates, what = await self._push_candidates(kind, object_id)
        plan = [(account, builder) for account in accounts
                for builder in await self._matching(account, candidates, what)]
        started: list[Builder] = []
        for account, builder in plan:
            try:
                provider_image = await self._dispatcher.start_push_with_credentials(
                    builder.id, account.provider, account.credentials)
            except Exception as error:
                done = f"; started before it: {', '.join(b.id for b in started)}" if started else ""
                reason = getattr(error, "message", None) or type(error).__name__
                raise ConductorError("PushError", 500, f"the push of target image {builder.id} to account "
                                     f"{account.name!r} could not be started: {reason}{done}") from error
            pushed = self._index.get(provider_image.id)
            if pushed is not None:
                started.append(pushed)
        return xml_document(request, 201, xml.started_pushes_element(base_url(request), started))

    async def _push_candidates(self, kind: str, object_id: str) -> tuple[list[Builder], str]:
        """The target image builders a push of ``kind`` (``target_image_id``, ...) covers, and a name for them."""
        if kind == "target_image_id":
            return [self._target_builder(object_id)], f"target image {object_id}"
        if kind == "build_id":
            build = await self._get_build(object_id)
        else:
            try:
                await self._store.get_image(object_id)
            except UnknownObject:
                raise not_found("ImageNotFound", f"no image with id {object_id!r}") from None
            builds = [b for b in await self._store.list_builds() if b.image_id == object_id]
            if not builds:
                raise incorrect(f"image {object_id} has no build to push")
            build = max(builds, key=lambda b: b.created)
        builders = [b for b in self._index.all() if b.operation == Operation.BUILD and b.build_id == build.id]
        return builders, f"build {build.id}"

    async def _matching(self, account: ProviderAccount, candidates: list[Builder], what: str) -> list[Builder]:
        """The candidates ``account`` takes (target = its provider type), each checked pushable."""
        matching = [b for b in candidates if b.target == account.provider_type]
        if not matching:
            targets = ", ".join(sorted({b.target for b in candidates})) or "none"
            raise incorrect(f"account {account.name!r} takes target images of target {account.provider_type!r}; "
                            f"{what} has none (its targets: {targets})")
        for builder in matching:
            if builder.status != Status.COMPLETED:
                raise incorrect(f"target image {builder.id} is {xml.conductor_status(builder.status)}: "
                                "only a COMPLETED target image can be pushed")
            try:
                await self._dispatcher.check_pushable(builder.id, account.provider)
            except InvalidRequest as error:
                raise incorrect(error.message) from None
        return matching

    # -- provider accounts ---------------------------------------------------

    @app.route("/conductor/api/provider_accounts", methods=["GET"])
    def provider_accounts(self, request: IRequest) -> bytes:
        base = base_url(request)
        members = [xml.account_element(base, account) for _, account in sorted(self._accounts.items())]
        return xml_document(request, 200, xml.collection("provider_accounts", members))

    @app.route("/conductor/api/provider_accounts/<name>", methods=["GET"])
    def provider_account(self, request: IRequest, name: str) -> bytes:
        account = self._accounts.get(name)
        if account is None:
            raise not_found("ProviderAccountNotFound", f"no provider account {name!r}")
        return xml_document(request, 200, xml.account_element(base_url(request), account))

    @app.route("/conductor/api/openapi.json", methods=["GET"])
    def openapi(self, request: IRequest) -> bytes:
        """The OpenAPI 3.1 document of this API."""
        request.setHeader(b"content-type", b"application/json")
        return self._openapi

    # -- helpers -------------------------------------------------------------

    def _body(self, request: IRequest, root_tag: str) -> etree._Element:
        """The request's XML body, parsed with the hardened parser, its root checked."""
        request.content.seek(0)
        body = request.content.read()
        kind = media_type(request)
        if kind and kind not in XML_TYPES:
            raise UnsupportedMediaType(f"request body of type {kind.decode('ascii', 'replace')} is not supported: "
                                       "send application/xml")
        if not body.strip():
            raise insufficient(f"the request needs an XML body: <{root_tag}>...</{root_tag}>")
        root = parse_xml(body, max_bytes=self._max_body_bytes, what="request body", error=InvalidRequest)
        if root.tag != root_tag:
            raise incorrect(f"the request body must be a <{root_tag}> document, not <{root.tag}>")
        return root

    async def _deleted(self, deleting: Any, not_found_code: str, failure_code: str, missing: str) -> None:
        try:
            await deleting
        except UnknownObject:
            raise not_found(not_found_code, missing) from None
        except DeleteFailed as error:
            raise ConductorError(failure_code, 500, error.message) from None
