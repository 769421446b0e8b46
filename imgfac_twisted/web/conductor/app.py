"""The Conductor API's routes (Klein), over the same dispatcher, store and index as the factory API.

Routes are thin: read the XML body (``bodies``), check what it asks for
(``checks``), ask the dispatcher, the importer or the deleter (a push:
``pushes``), shape the XML answer (``representations``); objects by id come
from ``lookups``.  The target and provider image reads pollers hit hardest
are answered before routing (``fast_reads``).  Credentials and Accept are
checked before routing (``resource.ConductorResource``, which also takes
ActiveResource's ``.xml`` off the path); errors become ``<error>`` documents
in ``errors``.

Besides the spec's routes, those aeolus-cli used on the real Conductor:
imports (``POST images`` with ``<target_identifier>``), the listings under
an image, a build and a target image, ``providers``, ``provider_types`` and
``environments`` (one, ``default``, holding every image).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files

from klein import Klein
from lxml import etree
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from ...errors import InvalidRequest, UnknownObject
from ...jobs.accounts import ProviderAccount
from ...jobs.deletions import DeleteFailed, Deleter
from ...jobs.dispatcher import Dispatcher
from ...jobs.imports import ImportedImage, Importer
from ...jobs.index import BuilderIndex
from ...model import Build, Builder, Image, Operation
from ...store import IStore
from ..manifests import icicle_xml
from ..responses import base_url
from . import lookups
from . import representations as xml
from .bodies import read_body
from .bodies import text as _text
from .checks import build_asked, import_asked, push_asked
from .errors import ConductorError, incorrect, not_found, render_failure, xml_document
from .fast_reads import ConductorReads, provider_contents, pushes_of
from .pushes import start_pushes


class ConductorAPI:
    """The Conductor routes, holding their collaborators (nothing per request)."""

    app = Klein()

    def __init__(
        self,
        dispatcher: Dispatcher,
        store: IStore,
        index: BuilderIndex,
        deleter: Deleter,
        accounts: dict[str, ProviderAccount],
        max_body_bytes: int,
        importer: Importer | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._importer = importer
        self._store = store
        self._index = index
        self._deleter = deleter
        self._accounts = accounts
        self._max_body_bytes = max_body_bytes
        self._reads = ConductorReads(store, index)
        self._openapi = (files("imgfac_twisted.web.conductor") / "openapi.json").read_bytes()

    @app.handle_errors(Exception)
    def error(self, request: IRequest, failure: Failure) -> bytes:
        return render_failure(request, failure)

    def fast_read(self, request: IRequest) -> bytes | None:
        """A target or provider image by id without Klein's routing (``ConductorReads.fast_read``); None otherwise."""
        return self._reads.fast_read(request)

    # -- images ------------------------------------------------------------

    @app.route("/conductor/api/images", methods=["GET"])
    async def images(self, request: IRequest) -> bytes:
        return await self._images_answer(request)

    @app.route("/conductor/api/environments/<name>/images", methods=["GET"])
    async def environment_images(self, request: IRequest, name: str) -> bytes:
        """Every image for ``default``; no image for any other environment (as the real Conductor answered)."""
        if name != xml.DEFAULT_ENVIRONMENT:
            return xml_document(request, 200, xml.collection("images", []))
        return await self._images_answer(request)

    async def _images_answer(self, request: IRequest) -> bytes:
        base = base_url(request)
        builds = await self._store.list_builds()
        members = [
            xml.image_element(base, image, [b.id for b in builds if b.image_id == image.id])
            for image in await self._store.list_images()
        ]
        return xml_document(request, 200, xml.collection("images", members))

    @app.route("/conductor/api/environments", methods=["GET"])
    def environments(self, request: IRequest) -> bytes:
        return xml_document(
            request,
            200,
            xml.collection("environments", [xml.environment_element(base_url(request), xml.DEFAULT_ENVIRONMENT)]),
        )

    @app.route("/conductor/api/images/<image_id>/builds", methods=["GET"])
    async def image_builds(self, request: IRequest, image_id: str) -> bytes:
        await self._get_image(image_id)
        base = base_url(request)
        members = [
            xml.build_element(base, build) for build in await self._store.list_builds() if build.image_id == image_id
        ]
        return xml_document(request, 200, xml.collection("builds", members))

    @app.route("/conductor/api/images/<image_id>", methods=["GET"])
    async def image(self, request: IRequest, image_id: str) -> bytes:
        return await self._image_answer(request, image_id, deleting=False)

    @app.route("/conductor/api/images/<image_id>", methods=["DELETE"])
    async def delete_image(self, request: IRequest, image_id: str) -> bytes:
        return await self._image_answer(request, image_id, deleting=True)

    async def _image_answer(self, request: IRequest, image_id: str, deleting: bool) -> bytes:
        image = await self._get_image(image_id)
        builds = [b.id for b in await self._store.list_builds() if b.image_id == image_id]
        element = xml.image_element(base_url(request), image, builds)
        if deleting:
            element = await self._deleted(
                element,
                lambda b: b.image_id == image_id,
                lambda: self._deleter.delete_image(image_id),
                "Image",
                f"no image with id {image_id!r}",
            )
        return xml_document(request, 200, element)

    async def _get_image(self, image_id: str) -> Image:
        return await lookups.image(self._store, image_id)

    @app.route("/conductor/api/images", methods=["POST"])
    async def create_image(self, request: IRequest) -> bytes:
        root = self._body(request, "image")
        if _text(root, "target_identifier"):
            return await self._import(request, root)
        targets, template = build_asked(root, self._dispatcher.known_targets())
        started = await self._dispatcher.start_build(template, targets)
        base = base_url(request)
        builders = [self._index.get(t.id) for t in started.target_images]
        element = xml.started_image_element(
            base, started.image.id, started.build.id, [b for b in builders if b is not None]
        )
        request.setHeader(b"location", xml.href(base, "images", started.image.id).encode("utf-8"))
        return xml_document(request, 201, element)

    async def _import(self, request: IRequest, root: etree._Element) -> bytes:
        """An image already on a provider: the 2012 form names an account, the 2011 form a target and provider."""
        if self._importer is None:
            raise ConductorError("NotFound", 404, "this daemon does not import images")
        asked = import_asked(root, self._accounts)
        try:
            imported = await self._importer.import_image(*asked)
        except InvalidRequest as error:
            raise incorrect(error.message) from None
        return self._imported_answer(request, imported)

    def _imported_answer(self, request: IRequest, imported: ImportedImage) -> bytes:
        base = base_url(request)
        element = xml.started_image_element(
            base, imported.image.id, imported.build.id, [imported.target_builder], [imported.push_builder]
        )
        request.setHeader(b"location", xml.href(base, "images", imported.image.id).encode("utf-8"))
        return xml_document(request, 201, element)

    # -- builds ------------------------------------------------------------

    @app.route("/conductor/api/builds", methods=["GET"])
    async def builds(self, request: IRequest) -> bytes:
        base = base_url(request)
        members = [xml.build_element(base, build) for build in await self._store.list_builds()]
        return xml_document(request, 200, xml.collection("builds", members))

    @app.route("/conductor/api/builds/<build_id>", methods=["GET"])
    async def build(self, request: IRequest, build_id: str) -> bytes:
        return await self._build_answer(request, build_id, deleting=False)

    @app.route("/conductor/api/builds/<build_id>", methods=["DELETE"])
    async def delete_build(self, request: IRequest, build_id: str) -> bytes:
        return await self._build_answer(request, build_id, deleting=True)

    async def _build_answer(self, request: IRequest, build_id: str, deleting: bool) -> bytes:
        build = await self._get_build(build_id)
        element = xml.build_element(base_url(request), build)
        if deleting:
            element = await self._deleted(
                element,
                lambda b: b.build_id == build_id,
                lambda: self._deleter.delete_build(build_id),
                "Build",
                f"no build with id {build_id!r}",
            )
        return xml_document(request, 200, element)

    @app.route("/conductor/api/builds/<build_id>/target_images", methods=["GET"])
    async def build_target_images(self, request: IRequest, build_id: str) -> bytes:
        template_id = await self._reads.template_of(build_id)
        base = base_url(request)
        builders = await self._index.scan(lambda b: b.build_id == build_id)
        members = [
            xml.target_image_element(base, builder, template_id, pushes_of(builder.id, builders))
            for builder in builders
            if builder.operation == Operation.BUILD
        ]
        return xml_document(request, 200, xml.collection("target_images", members))

    async def _get_build(self, build_id: str) -> Build:
        return await lookups.build(self._store, build_id)

    # -- target images -----------------------------------------------------

    @app.route("/conductor/api/target_images", methods=["GET"])
    async def target_images(self, request: IRequest) -> bytes:
        base = base_url(request)
        templates = {build.id: build.template_id for build in await self._store.list_builds()}
        builders = await self._index.scan(lambda b: True)
        members = [
            xml.target_image_element(
                base, builder, templates.get(builder.build_id, ""), pushes_of(builder.id, builders)
            )
            for builder in builders
            if builder.operation == Operation.BUILD
        ]
        return xml_document(request, 200, xml.collection("target_images", members))

    @app.route("/conductor/api/target_images/<target_image_id>", methods=["GET"])
    async def target_image(self, request: IRequest, target_image_id: str) -> bytes:
        return await self._target_image_answer(request, target_image_id, deleting=False)

    @app.route("/conductor/api/target_images/<target_image_id>", methods=["DELETE"])
    async def delete_target_image(self, request: IRequest, target_image_id: str) -> bytes:
        return await self._target_image_answer(request, target_image_id, deleting=True)

    async def _target_image_answer(self, request: IRequest, target_image_id: str, deleting: bool) -> bytes:
        builder = await self._target_builder(target_image_id)
        element = xml.target_image_element(
            base_url(request),
            builder,
            await self._reads.template_of(builder.build_id),
            await self._reads.pushes_of(builder.id),
        )
        if deleting:
            element = await self._deleted(
                element,
                lambda b: b.target_image_id == target_image_id,
                lambda: self._deleter.delete_target_image(target_image_id),
                "TargetImage",
                f"no target image with id {target_image_id!r}",
            )
        return xml_document(request, 200, element)

    @app.route("/conductor/api/target_images/<target_image_id>/icicle", methods=["GET"])
    async def target_image_icicle(self, request: IRequest, target_image_id: str) -> bytes:
        """The packages inside a COMPLETED target image (ICICLE XML, as the factory API serves it); 404 before."""
        builder = await self._target_builder(target_image_id)
        try:
            image, packages = await self._dispatcher.contents(builder)
        except UnknownObject as error:
            raise not_found("TargetImageNotFound", error.message) from None
        request.setHeader(b"content-type", b"application/xml; charset=utf-8")
        return icicle_xml(image, packages)

    @app.route("/conductor/api/target_images/<target_image_id>/provider_images", methods=["GET"])
    async def target_image_provider_images(self, request: IRequest, target_image_id: str) -> bytes:
        await self._target_builder(target_image_id)
        base = base_url(request)
        pushes = await self._index.scan(
            lambda b: b.operation == Operation.PUSH and b.target_image_id == target_image_id, after=target_image_id
        )
        members = [xml.provider_image_element(base, builder) for builder in pushes]
        return xml_document(request, 200, xml.collection("provider_images", members))

    async def _target_builder(self, target_image_id: str) -> Builder:
        return await lookups.target_builder(self._index, target_image_id)

    # -- provider images ---------------------------------------------------

    @app.route("/conductor/api/provider_images", methods=["GET"])
    async def provider_images(self, request: IRequest) -> bytes:
        base = base_url(request)
        pushes = await self._index.scan(lambda b: b.operation == Operation.PUSH)
        members = [xml.provider_image_element(base, builder) for builder in pushes]
        return xml_document(request, 200, xml.collection("provider_images", members))

    @app.route("/conductor/api/provider_images/<provider_image_id>", methods=["GET"])
    async def provider_image(self, request: IRequest, provider_image_id: str) -> bytes:
        builder = await self._push_builder(provider_image_id)
        return xml_document(request, 200, xml.provider_image_element(base_url(request), builder))

    @app.route("/conductor/api/provider_images/<provider_image_id>", methods=["DELETE"])
    async def delete_provider_image(self, request: IRequest, provider_image_id: str) -> bytes:
        builder = await self._push_builder(provider_image_id)
        element = await self._deleted(
            xml.provider_image_element(base_url(request), builder),
            lambda b: b.id == provider_image_id,
            lambda: self._deleter.delete_provider_image(provider_image_id),
            "ProviderImage",
            f"no provider image with id {provider_image_id!r}",
        )
        return xml_document(request, 200, element)

    async def _push_builder(self, provider_image_id: str) -> Builder:
        return await lookups.push_builder(self._index, provider_image_id)

    @app.route("/conductor/api/provider_images", methods=["POST"])
    async def push(self, request: IRequest) -> bytes:
        root = self._body(request, "provider_image")
        kind, object_id, accounts = push_asked(root, self._accounts)
        return await self._push(request, kind, object_id, accounts)

    async def _push(self, request: IRequest, kind: str, object_id: str, accounts: list[ProviderAccount]) -> bytes:
        started = await start_pushes(self._dispatcher, self._store, self._index, kind, object_id, accounts)
        return xml_document(request, 201, xml.started_pushes_element(base_url(request), started))

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

    @app.route("/conductor/api/providers", methods=["GET"])
    def providers(self, request: IRequest) -> bytes:
        """The providers the configured accounts push to."""
        base = base_url(request)
        names = sorted({(account.provider, account.provider_type) for account in self._accounts.values()})
        members = [
            xml.provider_element(base, name, kind, *self._dispatcher.provider(name).location(name))
            for name, kind in names
        ]
        return xml_document(request, 200, xml.collection("providers", members))

    @app.route("/conductor/api/provider_types", methods=["GET"])
    def provider_types(self, request: IRequest) -> bytes:
        """The targets this daemon builds (aeolus-cli lists them as its targets)."""
        members = [xml.provider_type_element(target) for target in self._dispatcher.known_targets()]
        return xml_document(request, 200, xml.collection("provider_types", members))

    @app.route("/conductor/api/openapi.json", methods=["GET"])
    def openapi(self, request: IRequest) -> bytes:
        """The OpenAPI 3.1 document of this API."""
        request.setHeader(b"content-type", b"application/json")
        return self._openapi

    # -- helpers -------------------------------------------------------------

    def _body(self, request: IRequest, root_tag: str) -> etree._Element:
        return read_body(request, root_tag, self._max_body_bytes)

    async def _deleted(
        self,
        element: etree._Element,
        under: Callable[[Builder], bool],
        delete: Callable[[], Awaitable[object]],
        kind: str,
        missing: str,
    ) -> etree._Element:
        """Delete the ``kind`` object ``element`` shows; ``element`` marked deleted with the provider contents
        ``under`` it (read before they go).  Errors: ``<kind>NotFound`` (404), ``<kind>DeleteFailure`` (500)."""
        contents = await provider_contents(self._index, under)
        try:
            await delete()
        except UnknownObject:
            raise not_found(f"{kind}NotFound", missing) from None
        except DeleteFailed as error:
            raise ConductorError(f"{kind}DeleteFailure", 500, error.message) from None
        return xml.marked_deleted(element, contents)
