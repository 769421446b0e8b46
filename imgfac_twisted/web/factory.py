"""The Image Factory v1 REST API (JSON) as a Klein app.

Routes are thin: check auth and parameters, ask the dispatcher, shape the
answer.  Reads of builders are answered from the in-memory index; the
``fast_reads.FactoryRoot`` resource serves those same reads without Klein's
routing, because clients poll them hard (see ``fast_reads.READ_SHAPES``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from klein import Klein
from prometheus_client import CONTENT_TYPE_LATEST
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from .. import API_NAME, API_VERSION
from ..errors import InvalidRequest, UnknownObject
from ..jobs.dispatcher import Dispatcher
from ..jobs.imports import Importer
from ..jobs.index import BuilderIndex
from ..jobs.logs import IBuilderLogs
from ..metrics import Metrics
from ..model import Builder, Image, Status
from ..os import Package
from . import builder_list
from . import representations as shapes
from .assets import Assets, wants_html
from .builder_checks import found_builder, found_push, found_target
from .errors import Conflict, json_body, render_failure
from .manifests import icicle_xml, spdx_json
from .oauth import OAuthVerifier
from .params import provider_credentials, read_params, required
from .responses import base_url, stored_download


def signed(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse the request (401) unless it carries a valid OAuth signature."""

    @functools.wraps(handler)
    def check_then_handle(self: FactoryAPI, request: IRequest, *args: Any, **kwargs: Any) -> Any:
        checking = self.authenticate(request)
        if checking is None:
            return handler(self, request, *args, **kwargs)

        def handle(_: object) -> Any:
            answer = handler(self, request, *args, **kwargs)
            # An async handler's coroutine: Klein would await it, a Deferred's callback does not.
            return ensureDeferred(answer) if inspect.iscoroutine(answer) else answer

        return checking.addCallback(handle)

    return check_then_handle


class FactoryAPI:
    """The factory's routes, holding the collaborators they use (nothing per request)."""

    app = Klein()

    def __init__(
        self,
        dispatcher: Dispatcher,
        index: BuilderIndex,
        logs: IBuilderLogs,
        metrics: Metrics,
        verifier: OAuthVerifier | None,
        importer: Importer | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._importer = importer
        self._metrics = metrics
        self._index = index
        self._logs = logs
        self._verifier = verifier
        self._assets = Assets()

    def authenticate(self, request: IRequest) -> Deferred[str] | None:
        """Raise AuthenticationFailed unless OAuth is off or the request is correctly signed.

        With nonces shared by several nodes, fire once the nonce is spent in the store (or fail
        if another node had spent it); otherwise return None, the request checked.
        """
        if self._verifier is None:
            return None
        request.content.seek(0)
        body = request.content.read()
        headers = {
            name.decode("latin-1"): values[-1].decode("latin-1")
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        uri = base_url(request) + request.uri.decode("ascii", "replace")
        method = request.method.decode("ascii")
        if self._verifier.shares_nonces:
            return ensureDeferred(self._verifier.verify_shared(method, uri, headers, body))
        self._verifier.verify(method, uri, headers, body)
        return None

    # -- errors ----------------------------------------------------------

    @app.handle_errors(Exception)
    def error(self, request: IRequest, failure: Failure) -> bytes:
        return render_failure(request, failure)

    # -- reads -----------------------------------------------------------

    @app.route("/imagefactory", methods=["GET"])
    def version(self, request: IRequest) -> bytes:
        return json_body(request, 200, {"version": API_VERSION, "name": API_NAME})

    @app.route("/imagefactory/builders", methods=["GET"])
    def builders(self, request: IRequest) -> bytes | Deferred[bytes]:
        """Builders (every one, a page, or the unfinished: ``builder_list``), or the live status page for a browser."""
        if wants_html(request.getHeader(b"accept")):
            return self._static(request, "builders.html")
        wanted = builder_list.asked(request)
        return ensureDeferred(builder_list.builders_answer(request, self._index, base_url(request), wanted))

    @app.route("/imagefactory/builders/<builder_id>", methods=["GET"])
    def builder(self, request: IRequest, builder_id: str) -> bytes | Deferred[bytes]:
        return self._read(
            builder_id,
            lambda found: found_builder(builder_id, found),
            lambda found: self._detail(request, found, "builder", shapes.builder_path(found.id)),
        )

    @app.route("/imagefactory/builders/<builder_id>/status", methods=["GET"])
    def builder_status(self, request: IRequest, builder_id: str) -> bytes | Deferred[bytes]:
        return self._read(
            builder_id,
            lambda found: found_builder(builder_id, found),
            lambda found: self._status(request, found, "builder_status", shapes.builder_path(found.id)),
        )

    @app.route("/imagefactory/builders/<builder_id>/log", methods=["GET"])
    async def builder_log(self, request: IRequest, builder_id: str) -> bytes:
        """The builder's log as text, from byte ``offset`` (a query argument) on.

        ``X-Builder-Status`` tells a client following the log when to stop.
        """
        found = found_builder(builder_id, await self._index.lookup(builder_id))
        try:
            offset = int(request.args.get(b"offset", [b"0"])[-1])
        except ValueError:
            raise InvalidRequest("offset must be a whole number of bytes") from None
        if offset < 0:
            raise InvalidRequest("offset must not be negative")

        def answer(data: bytes) -> bytes:
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setHeader(b"x-builder-status", found.status.value.encode("ascii"))
            return data

        # Read the status before the log, so a final status means the log is whole.
        return answer(await self._logs.read(builder_id, offset))

    @app.route("/imagefactory/images/<image_id>/builds/<build_id>/target_images/<target_image_id>", methods=["GET"])
    def target_image(
        self, request: IRequest, image_id: str, build_id: str, target_image_id: str
    ) -> bytes | Deferred[bytes]:
        return self._read(
            target_image_id,
            lambda found: found_target(found, image_id, build_id, target_image_id),
            lambda found: self._detail(request, found, "target_image_status", shapes.object_path(found)),
        )

    @app.route(
        "/imagefactory/images/<image_id>/builds/<build_id>/target_images/<target_image_id>/status", methods=["GET"]
    )
    def target_image_status(
        self, request: IRequest, image_id: str, build_id: str, target_image_id: str
    ) -> bytes | Deferred[bytes]:
        return self._read(
            target_image_id,
            lambda found: found_target(found, image_id, build_id, target_image_id),
            lambda found: self._status(request, found, "target_image_status", shapes.object_path(found)),
        )

    @app.route(
        "/imagefactory/images/<image_id>/builds/<build_id>/target_images/<target_image_id>/raw_image", methods=["GET"]
    )
    async def raw_image(
        self, request: IRequest, image_id: str, build_id: str, target_image_id: str
    ) -> Resource | bytes:
        """The target image file as made, byte for byte (ranges, ETag), once COMPLETED; 404 before.
        From an S3 image store: 302 to a presigned URL of the object."""
        found = await self._target_builder(image_id, build_id, target_image_id)
        if found.status != Status.COMPLETED or found.artifact_path is None:
            # Not there yet (or never made): as the issue asks, 404 until COMPLETED.
            raise UnknownObject(
                f"target image {target_image_id} is {found.status.value}: its image can be downloaded once COMPLETED"
            )
        return await stored_download(request, found.artifact_path, found.artifact_sha256, self._dispatcher.image_store)

    @app.route(
        "/imagefactory/images/<image_id>/builds/<build_id>/target_images/<target_image_id>/icicle", methods=["GET"]
    )
    async def icicle(self, request: IRequest, image_id: str, build_id: str, target_image_id: str) -> bytes:
        """The packages inside a COMPLETED target image, as the original factory's ICICLE XML; 404 before."""
        _, image, packages = await self._contents(image_id, build_id, target_image_id)
        request.setHeader(b"content-type", b"application/xml; charset=utf-8")
        return icicle_xml(image, packages)

    @app.route(
        "/imagefactory/images/<image_id>/builds/<build_id>/target_images/<target_image_id>/sbom", methods=["GET"]
    )
    async def sbom(self, request: IRequest, image_id: str, build_id: str, target_image_id: str) -> bytes:
        """The packages inside a COMPLETED target image, as an SPDX 2.3 JSON document; 404 before."""
        found, image, packages = await self._contents(image_id, build_id, target_image_id)
        request.setHeader(b"content-type", b"application/spdx+json")
        return spdx_json(image, found, packages, base_url(request) + shapes.object_path(found) + "/sbom")

    @app.route(
        "/imagefactory/images/<image_id>/builds/<build_id>/target_images/<target_image_id>"
        "/provider_images/<provider_image_id>",
        methods=["GET"],
    )
    def provider_image(
        self, request: IRequest, image_id: str, build_id: str, target_image_id: str, provider_image_id: str
    ) -> bytes | Deferred[bytes]:
        return self._read(
            provider_image_id,
            lambda found: found_push(found, image_id, build_id, target_image_id, provider_image_id),
            lambda found: self._detail(request, found, "provider_image_status", shapes.object_path(found)),
        )

    @app.route(
        "/imagefactory/images/<image_id>/builds/<build_id>/target_images/<target_image_id>"
        "/provider_images/<provider_image_id>/status",
        methods=["GET"],
    )
    def provider_image_status(
        self, request: IRequest, image_id: str, build_id: str, target_image_id: str, provider_image_id: str
    ) -> bytes | Deferred[bytes]:
        return self._read(
            provider_image_id,
            lambda found: found_push(found, image_id, build_id, target_image_id, provider_image_id),
            lambda found: self._status(request, found, "provider_image_status", shapes.object_path(found)),
        )

    @app.route("/imagefactory/static/<name>", methods=["GET"])
    def static(self, request: IRequest, name: str) -> bytes:
        """The status page's style sheet and script."""
        return self._static(request, name)

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> Deferred[bytes]:
        """The daemon's metrics in Prometheus' text format."""
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return self._metrics.render()

    @app.route("/imagefactory/openapi.json", methods=["GET"])
    def openapi(self, request: IRequest) -> bytes:
        """The OpenAPI 3.1 document of this API."""
        request.setHeader(b"content-type", b"application/json")
        return self._assets.openapi

    def _static(self, request: IRequest, name: str) -> bytes:
        found = self._assets.get(name)
        if found is None:
            raise UnknownObject(f"no file {name!r}")
        body, content_type = found
        request.setHeader(b"content-type", content_type)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return body

    def _detail(self, request: IRequest, builder: Builder, _type: str, path: str) -> bytes:
        return json_body(request, 200, shapes.builder_document(builder, _type, base_url(request) + path))

    def _status(self, request: IRequest, builder: Builder, _type: str, path: str) -> bytes:
        return json_body(request, 200, shapes.status_document(builder, _type, base_url(request) + path + "/status"))

    def _read(
        self, builder_id: str, check: Callable[[Builder | None], Builder], answer: Callable[[Builder], bytes]
    ) -> bytes | Deferred[bytes]:
        """``answer(check(builder))``: at once when the index holds it (the hot path), else once the store is read."""
        held = self._index.get(builder_id)
        if held is not None:
            return answer(check(held))
        return ensureDeferred(self._index.lookup(builder_id)).addCallback(lambda found: answer(check(found)))

    async def _contents(
        self, image_id: str, build_id: str, target_image_id: str
    ) -> tuple[Builder, Image, list[Package]]:
        """A COMPLETED target image's builder, image and packages (UnknownObject before it is COMPLETED)."""
        found = await self._target_builder(image_id, build_id, target_image_id)
        image, packages = await self._dispatcher.contents(found)
        return found, image, packages

    async def _target_builder(self, image_id: str, build_id: str, target_image_id: str) -> Builder:
        found = await self._index.lookup(target_image_id)
        return found_target(found, image_id, build_id, target_image_id)

    # -- writes ----------------------------------------------------------

    @app.route("/imagefactory/images", methods=["POST"])
    @signed
    def create_image(self, request: IRequest) -> Any:
        """A new image built for ``targets`` from ``template``; or, given ``target_identifier``, an import."""
        params = read_params(request)
        if params.get("target_identifier", "").strip() and not params.get("targets", "").strip():
            return self._import(request, params)
        targets, template = required(params, "targets", "template")
        return self._started(request, self._dispatcher.start_build(template, targets))

    @app.route("/imagefactory/images/<image_id>", methods=["PUT"])
    @signed
    def rebuild_image(self, request: IRequest, image_id: str) -> Any:
        """A new build of the image; with ``build_id``, more target images in that build.

        An image id never seen, with a template, is created under that id
        (Conductor chose its images' ids before asking the factory).
        """
        params = read_params(request)
        (targets,) = required(params, "targets")
        build_id = params.get("build_id", "").strip() or None
        return self._started(
            request, self._dispatcher.start_build(params.get("template"), targets, image_id, build_id=build_id)
        )

    def _import(self, request: IRequest, params: dict[str, str]) -> Any:
        """Record an image already on a provider (no build, no upload); 200 with the nested objects."""
        if self._importer is None:
            raise UnknownObject("this daemon does not import images")
        target, provider, identifier = required(params, "target_name", "provider_name", "target_identifier")
        importing = self._importer.import_image(target, provider, identifier, params.get("image_descriptor", ""))
        base = base_url(request)
        return ensureDeferred(importing).addCallback(
            lambda imported: json_body(request, 200, shapes.imported_image_document(base, imported))
        )

    @app.route(
        "/imagefactory/images/<image_id>/builds/<build_id>/target_images/<target_image_id>/provider_images",
        methods=["POST"],
    )
    @signed
    def push_target_image(self, request: IRequest, image_id: str, build_id: str, target_image_id: str) -> Any:
        provider, credentials = required(read_params(request), "provider", "credentials")
        return self._pushed(
            request,
            self._dispatcher.start_push(
                target_image_id, provider, provider_credentials(credentials), image_id, build_id
            ),
        )

    @app.route("/imagefactory/provider_images", methods=["POST"])
    @signed
    def push(self, request: IRequest) -> Any:
        params = read_params(request)
        image_id, build_id, target_image_id, provider, credentials = required(
            params, "image_id", "build_id", "target_image_id", "provider", "credentials"
        )
        credentials = provider_credentials(credentials)

        async def start() -> Any:
            try:
                return await self._dispatcher.start_push(target_image_id, provider, credentials, image_id, build_id)
            except UnknownObject as error:
                # Here the ids are parameters, not the URL: a bad one is a bad request.
                raise InvalidRequest(error.message) from None

        return self._pushed(request, start())

    @app.route("/imagefactory/builders/<builder_id>", methods=["DELETE"])
    @signed
    async def cancel_builder(self, request: IRequest, builder_id: str) -> bytes:
        found = found_builder(builder_id, await self._index.lookup(builder_id))
        if not self._dispatcher.cancel(builder_id):
            raise Conflict(f"builder {builder_id} is {found.status.value}: only a running builder can be cancelled")
        return json_body(
            request,
            202,
            shapes.status_document(
                found, "builder_status", base_url(request) + shapes.builder_path(builder_id) + "/status"
            ),
        )

    def _started(self, request: IRequest, starting: Any) -> Any:
        base = base_url(request)
        return ensureDeferred(starting).addCallback(
            lambda started: json_body(request, 202, shapes.started_build_document(base, started))
        )

    def _pushed(self, request: IRequest, starting: Any) -> Any:
        base = base_url(request)

        def answer(provider_image: Any) -> bytes:
            path = shapes.provider_image_path(
                provider_image.image_id, provider_image.build_id, provider_image.target_image_id, provider_image.id
            )
            return json_body(request, 202, {"_type": "provider_image", "id": provider_image.id, "href": base + path})

        return ensureDeferred(starting).addCallback(answer)
