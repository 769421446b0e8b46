"""Integration tests: the real ``twistd imagefactory`` daemon, driven over HTTPS.

Each daemon is a subprocess (tests/support/daemon.py) with its own state directory,
a generated self-signed certificate that every request verifies against, and
OAuth 1.0a signatures made by requests-oauthlib (an independent client).
"""

from __future__ import annotations

import hashlib
import re
import signal
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from requests_oauthlib import OAuth1

from support.daemon import Daemon, DaemonPool, mock_config, oauth
from support.factory_shapes import BUILDER_KEYS, PUSH_BUILDER_KEYS

# -- fixtures' data -----------------------------------------------------------

#: The spec's example template (POST /imagefactory/images).
F14 = (
    "<template><name>f14jeos</name><os><name>Fedora</name> <version>14</version> <arch>x86_64</arch> "
    "<install type='url'> <url>http://download.fedoraproject.org/pub/fedora/linux/releases/14/Fedora/"
    "x86_64/os/</url></install><rootpw>p@55w0rd!</rootpw></os><description>Fedora 14</description>"
    "</template>"
)
FAIL_TEMPLATE = F14.replace("<name>f14jeos</name>", "<name>FAIL</name>")
NO_ARCH_TEMPLATE = F14.replace("<arch>x86_64</arch>", "")
XXE_TEMPLATE = '<?xml version="1.0"?>\n<!DOCTYPE template [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n' + F14.replace(
    "<description>Fedora 14</description>", "<description>&xxe;</description>"
)
_LOLS = "".join(f'<!ENTITY lol{n} "{("&lol" + str(n - 1) + ";") * 10}">' for n in range(1, 10))
BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE template [<!ENTITY lol0 "lol">'
    + _LOLS
    + "]>\n"
    + F14.replace("<description>Fedora 14</description>", "<description>&lol9;</description>")
)

PASSWORD = "s3cr3t-pw-XYZ"


def mock_credentials(username: str = "u", password: str = PASSWORD) -> str:
    return (
        f"<provider_credentials><mock_credentials><username>{username}</username>"
        f"<password>{password}</password></mock_credentials></provider_credentials>"
    )


STATUS_KEYS = {"status", "_type", "href", "id"}
#: twistd re-raises the signal it was stopped with after a clean shutdown, so a clean SIGTERM
#: stop shows as -SIGTERM (older twistd versions exit 0).
CLEAN_EXIT = (0, -signal.SIGTERM)
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# -- helpers ------------------------------------------------------------------


def assert_json_error(answer: requests.Response, code: int, *needles: str) -> dict[str, Any]:
    """``answer`` is a JSON error with status ``code`` whose message contains every needle."""
    assert answer.status_code == code, f"expected {code}, got {answer.status_code}: {answer.text[:2000]}"
    assert answer.headers.get("Content-Type", "").startswith("application/json"), answer.headers
    assert "<html" not in answer.text.lower()
    body = answer.json()
    assert isinstance(body.get("message"), str) and body["message"], body
    for needle in needles:
        assert needle.lower() in body["message"].lower(), f"{needle!r} not in {body['message']!r}"
    return body


def create_image(daemon: Daemon, template: str = F14, targets: str = "mock", **kwargs: Any) -> dict[str, Any]:
    """POST /imagefactory/images (form, signed) and return the 202 document."""
    answer = daemon.post("/imagefactory/images", data={"targets": targets, "template": template}, **kwargs)
    assert answer.status_code == 202, f"{answer.status_code}: {answer.text}\n{daemon.diagnostics(30)}"
    return answer.json()


def first_target(image: dict[str, Any]) -> dict[str, Any]:
    return image["build"]["target_images"][0]


def wait_status(daemon: Daemon, href: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
    return daemon.poll(href, lambda doc: doc["status"] == status, timeout)


def mock_image_digest(daemon: Daemon, builder_id: str) -> str:
    """The template digest the mock target wrote into the builder's image file (in the image store)."""
    text = (daemon.state_dir / "images" / builder_id / "mock.img").read_text(encoding="utf-8")
    match = re.search(r"template-sha256: ([0-9a-f]{64})", text)
    assert match, text
    return match.group(1)


def push_nested(
    daemon: Daemon, target: dict[str, Any], provider: str = "mock", credentials: str | None = None, **kwargs: Any
) -> requests.Response:
    return daemon.post(
        target["href"] + "/provider_images",
        data={"provider": provider, "credentials": credentials or mock_credentials()},
        **kwargs,
    )


def ids_from_target_href(href: str) -> tuple[str, str, str]:
    match = re.search(r"/imagefactory/images/([^/]+)/builds/([^/]+)/target_images/([^/]+)$", href)
    assert match, href
    return match.group(1), match.group(2), match.group(3)


# -- module daemons and servers -----------------------------------------------


@pytest.fixture(scope="module")
def slow_daemon(module_daemon_factory: DaemonPool) -> Daemon:
    """A TLS + OAuth daemon whose mock builds/pushes take 4 s (to see them in flight)."""
    return module_daemon_factory.make(mock_config(mock_duration=4.0), name="slow")


@pytest.fixture(scope="module")
def limits_daemon(module_daemon_factory: DaemonPool) -> Daemon:
    """A daemon with a 64 KiB body cap and a 1 s template fetch timeout."""
    return module_daemon_factory.make(mock_config(max_body_bytes=65536, template_fetch_timeout=1.0), name="limits")


@pytest.fixture(scope="module")
def completed_build(daemon: Daemon) -> dict[str, Any]:
    """An image of the spec template built for mock, its builder COMPLETED."""
    image = create_image(daemon)
    target = first_target(image)
    final = daemon.wait_final(target["href"])
    assert final["status"] == "COMPLETED", final
    return {
        "image": image,
        "target": target,
        "image_id": image["id"],
        "build_id": image["build"]["id"],
        "target_id": target["id"],
    }


class _TemplateHandler(BaseHTTPRequestHandler):
    pages = {
        "/f14.xml": F14.encode("utf-8"),
        "/big.xml": b"<template>" + b" " * (1024 * 1024 + 4096) + b"</template>",
    }

    def do_GET(self) -> None:
        body = self.pages.get(self.path)
        try:
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "9")
                self.end_headers()
                self.wfile.write(b"not found")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon hung up once the body passed its cap

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def template_server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving /f14.xml (the spec template), /big.xml (> 1 MiB), 404 otherwise."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TemplateHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers; yields its http URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept_forever() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            held.append(connection)

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/template.xml"
    finally:
        stop.set()
        thread.join(timeout=10)
        for connection in held:
            connection.close()
        listener.close()


# -- version and TLS ----------------------------------------------------------


def _served_certificate_der(daemon: Daemon) -> bytes:
    return ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", daemon.port), timeout=10))


def _file_certificate_der(daemon: Daemon) -> bytes:
    text = daemon.pem_path.read_text(encoding="ascii")
    match = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)
    assert match, "no certificate in the generated PEM file"
    return ssl.PEM_cert_to_DER_cert(match.group(0))


def test_version_over_verified_tls_and_certificate_reused_after_restart(daemon_factory: DaemonPool) -> None:
    """GET /imagefactory answers the spec's version document over TLS verified against the
    generated self-signed certificate (both for 127.0.0.1 and localhost); the certificate is
    the one in <state_dir>/tls/imagefactory.pem and the same one is served after a restart."""
    daemon = daemon_factory()
    for host in (daemon.host, f"localhost:{daemon.port}"):
        answer = daemon.get("/imagefactory", host=host)
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("application/json")
        assert answer.json() == {"version": "1.0", "name": "imagefactory"}
    # The verification is real: the system CAs do not trust the self-signed certificate.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(daemon.url("/imagefactory"), verify=True, timeout=10)

    pem_before = daemon.pem_path.read_bytes()
    served_before = _served_certificate_der(daemon)
    assert served_before == _file_certificate_der(daemon)

    daemon.restart()
    assert daemon.pem_path.read_bytes() == pem_before
    served_after = _served_certificate_der(daemon)
    assert hashlib.sha256(served_after).hexdigest() == hashlib.sha256(served_before).hexdigest()
    assert daemon.get_json("/imagefactory") == {"version": "1.0", "name": "imagefactory"}


# -- building ------------------------------------------------------------------


def _check_started_document(document: dict[str, Any], base: str, targets: int = 1) -> None:
    """The exact shape of the spec's POST /imagefactory/images answer."""
    assert set(document) == {"_type", "href", "id", "build"}
    assert document["_type"] == "image"
    assert UUID_RE.match(document["id"])
    assert document["href"] == f"{base}/imagefactory/images/{document['id']}"
    build = document["build"]
    assert set(build) == {"target_images", "_type", "href", "id"}
    assert build["_type"] == "build"
    assert UUID_RE.match(build["id"])
    assert build["href"] == f"{document['href']}/builds/{build['id']}"
    assert isinstance(build["target_images"], list) and len(build["target_images"]) == targets
    for target in build["target_images"]:
        assert set(target) == {"_type", "href", "id"}
        assert target["_type"] == "target_image"
        assert UUID_RE.match(target["id"])
        assert target["href"] == f"{build['href']}/target_images/{target['id']}"


def test_build_answer_shape_and_builder_documents(daemon: Daemon) -> None:
    """POST /imagefactory/images (form, signed, spec template, targets=mock) answers 202 with the
    spec's document, hrefs built from the client's Host header; the target image, builder and
    status URLs and the builders list show the builder with the spec's keys (+ status_detail),
    and it reaches COMPLETED / 100."""
    image = create_image(daemon)
    _check_started_document(image, daemon.base_url)

    localhost = f"localhost:{daemon.port}"
    other = create_image(daemon, host=localhost)
    _check_started_document(other, f"https://{localhost}")

    target = first_target(image)
    image_id, build_id, target_id = image["id"], image["build"]["id"], target["id"]
    final = daemon.wait_final(target["href"])
    assert final["status"] == "COMPLETED", final
    assert final["completed"] == 100

    detail = daemon.get_json(target["href"])
    assert set(detail) == BUILDER_KEYS
    assert detail == {
        "status": "COMPLETED",
        "_type": "target_image_status",
        "completed": 100,
        "provider_account_identifier": None,
        "image_id": image_id,
        "href": target["href"],
        "operation": "build",
        "id": target_id,
        "build_id": build_id,
        "target": "mock",
        "provider": None,
        "target_image_id": None,
        "status_detail": detail["status_detail"],
        "image_size": detail["image_size"],
        "image_sha256": detail["image_sha256"],
        "stage": None,
        "stages": detail["stages"],
        # Only builders run by a worker of several nodes (PostgreSQL) name it.
        "worker": None,
    }
    assert detail["image_size"] > 0 and len(detail["image_sha256"]) == 64

    status = daemon.get_json(target["href"] + "/status")
    assert status == {
        "status": "COMPLETED",
        "_type": "target_image_status",
        "href": target["href"] + "/status",
        "id": target_id,
    }

    builder_href = f"{daemon.base_url}/imagefactory/builders/{target_id}"
    builder = daemon.get_json(builder_href)
    assert set(builder) == BUILDER_KEYS
    assert builder["_type"] == "builder"
    assert builder["href"] == builder_href
    assert {
        key: builder[key]
        for key in (
            "status",
            "completed",
            "operation",
            "target",
            "provider",
            "image_id",
            "build_id",
            "id",
            "target_image_id",
        )
    } == {
        "status": "COMPLETED",
        "completed": 100,
        "operation": "build",
        "target": "mock",
        "provider": None,
        "image_id": image_id,
        "build_id": build_id,
        "id": target_id,
        "target_image_id": None,
    }

    builder_status = daemon.get_json(builder_href + "/status")
    assert builder_status == {
        "status": "COMPLETED",
        "_type": "builder_status",
        "href": builder_href + "/status",
        "id": target_id,
    }

    listing = daemon.get_json("/imagefactory/builders")
    assert set(listing) == {"_type", "href", "builders"}
    assert listing["_type"] == "builders"
    assert listing["href"] == f"{daemon.base_url}/imagefactory/builders"
    mine = [entry for entry in listing["builders"] if entry["id"] == target_id]
    assert len(mine) == 1
    assert set(mine[0]) == BUILDER_KEYS
    assert mine[0]["_type"] == "builder"
    assert mine[0]["href"] == builder_href
    assert mine[0]["status"] == "COMPLETED"
    assert other["build"]["target_images"][0]["id"] in {entry["id"] for entry in listing["builders"]}

    # The document seen through localhost carries localhost hrefs too.
    other_target = first_target(other)
    seen = daemon.get_json(other_target["href"])
    assert seen["href"] == other_target["href"]
    assert seen["href"].startswith(f"https://{localhost}/")


def test_build_progress_is_visible_while_building(slow_daemon: Daemon) -> None:
    """While a (4 s) mock build runs, polling shows BUILDING with 0 < completed < 100, never going
    backwards, then COMPLETED with 100."""
    target = first_target(create_image(slow_daemon))
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        document = slow_daemon.get_json(target["href"])
        seen.append((document["status"], document["completed"]))
        if document["status"] in ("COMPLETED", "FAILED"):
            break
        time.sleep(0.05)
    assert seen[-1] == ("COMPLETED", 100), seen
    assert {status for status, _ in seen} <= {"NEW", "PENDING", "BUILDING", "COMPLETED"}, seen
    assert any(status == "BUILDING" and 0 < completed < 100 for status, completed in seen), seen
    values = [completed for _, completed in seen]
    assert values == sorted(values), f"progress went backwards: {seen}"


@pytest.mark.parametrize("signature_method", ["HMAC-SHA1", "HMAC-SHA256"])
def test_json_body_build(daemon: Daemon, signature_method: str) -> None:
    """A POST with a JSON body (Content-Type: application/json), signed with HMAC-SHA1 or
    HMAC-SHA256, starts a build like the form does, and it completes."""
    answer = daemon.post(
        "/imagefactory/images", json={"targets": "mock", "template": F14}, auth=oauth(signature_method)
    )
    assert answer.status_code == 202, answer.text
    document = answer.json()
    _check_started_document(document, daemon.base_url)
    assert daemon.wait_final(first_target(document)["href"])["status"] == "COMPLETED"


def test_multipart_form_body_build(daemon: Daemon) -> None:
    """A signed POST with a multipart/form-data body starts a build (202) that completes."""
    answer = daemon.post("/imagefactory/images", files={"targets": (None, "mock"), "template": (None, F14)})
    assert answer.status_code == 202, answer.text
    _check_started_document(answer.json(), daemon.base_url)
    assert daemon.wait_final(first_target(answer.json())["href"])["status"] == "COMPLETED"


@pytest.mark.parametrize(
    "body, needle",
    [
        (b"{not json", "JSON"),
        (b'["targets", "mock"]', "object"),
        (b'{"targets": ["mock"], "template": "x"}', "targets"),
    ],
    ids=["broken", "not-an-object", "non-string-parameter"],
)
def test_malformed_json_body_is_400(daemon: Daemon, body: bytes, needle: str) -> None:
    """A JSON body that is not valid JSON, not an object, or has non-string parameters is a 400."""
    answer = daemon.post("/imagefactory/images", data=body, headers={"Content-Type": "application/json"})
    assert_json_error(answer, 400, needle)


def test_targets_deduplicated_and_unknown_target_refused(daemon: Daemon) -> None:
    """targets "mock,mock" makes one target image; "mock,nope" is a 400 naming "nope" and listing
    the known targets."""
    document = create_image(daemon, targets="mock,mock")
    _check_started_document(document, daemon.base_url, targets=1)

    answer = daemon.post("/imagefactory/images", data={"targets": "mock,nope", "template": F14})
    body = assert_json_error(answer, 400, "nope", "mock")
    assert "known" in body["message"]


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"template": F14}, "targets"),
        ({"targets": "mock"}, "template"),
        ({"targets": "", "template": F14}, "targets"),
        ({"targets": "mock", "template": "  "}, "template"),
    ],
    ids=["no-targets", "no-template", "empty-targets", "blank-template"],
)
def test_missing_parameter_is_400_naming_it(daemon: Daemon, data: dict[str, str], needle: str) -> None:
    """A build request without targets or template is a 400 whose message names the parameter."""
    assert_json_error(daemon.post("/imagefactory/images", data=data), 400, needle)


def test_invalid_template_is_400_naming_arch(daemon: Daemon) -> None:
    """A template without <arch> is refused with a 400 whose message says arch."""
    assert_json_error(
        daemon.post("/imagefactory/images", data={"targets": "mock", "template": NO_ARCH_TEMPLATE}), 400, "arch"
    )


def test_xxe_template_refused_without_leaking_files(daemon: Daemon) -> None:
    """A template with a DOCTYPE declaring an external entity (file:///etc/passwd) is a 400 and
    the response never contains the file's content."""
    answer = daemon.post("/imagefactory/images", data={"targets": "mock", "template": XXE_TEMPLATE})
    assert_json_error(answer, 400)
    assert "root:" not in answer.text


def test_billion_laughs_template_refused(daemon: Daemon) -> None:
    """A "billion laughs" entity expansion template is refused with a 400, quickly."""
    started = time.monotonic()
    answer = daemon.post("/imagefactory/images", data={"targets": "mock", "template": BILLION_LAUGHS})
    assert_json_error(answer, 400)
    assert "lollol" not in answer.text
    assert time.monotonic() - started < 10


def test_template_given_as_image_uuid(daemon: Daemon, completed_build: dict[str, Any]) -> None:
    """template=<UUID of an existing image> builds a new image from that image's template (202,
    completes, same template digest); an unknown UUID is a 400."""
    document = create_image(daemon, template=completed_build["image_id"])
    _check_started_document(document, daemon.base_url)
    assert document["id"] != completed_build["image_id"]
    target = first_target(document)
    assert daemon.wait_final(target["href"])["status"] == "COMPLETED"
    assert mock_image_digest(daemon, target["id"]) == mock_image_digest(daemon, completed_build["target_id"])
    assert mock_image_digest(daemon, target["id"]) == hashlib.sha256(F14.encode()).hexdigest()

    unknown = str(uuid.uuid4())
    assert_json_error(daemon.post("/imagefactory/images", data={"targets": "mock", "template": unknown}), 400, unknown)


def test_template_given_as_url(daemon: Daemon, template_server: str) -> None:
    """template=<http URL> is fetched and built (202, completes, the served template's digest);
    a URL answering 404 is a 400; a body larger than 1 MiB is a 400."""
    document = create_image(daemon, template=f"{template_server}/f14.xml")
    target = first_target(document)
    assert daemon.wait_final(target["href"])["status"] == "COMPLETED"
    assert mock_image_digest(daemon, target["id"]) == hashlib.sha256(F14.encode()).hexdigest()

    missing = f"{template_server}/missing.xml"
    assert_json_error(daemon.post("/imagefactory/images", data={"targets": "mock", "template": missing}), 400, "404")

    big = f"{template_server}/big.xml"
    assert_json_error(daemon.post("/imagefactory/images", data={"targets": "mock", "template": big}), 400, "larger")


def test_template_url_that_never_answers_times_out(limits_daemon: Daemon, silent_server: str) -> None:
    """A template URL whose server accepts but never answers is a 400 mentioning the timeout,
    after about template_fetch_timeout (1 s) seconds."""
    started = time.monotonic()
    answer = limits_daemon.post("/imagefactory/images", data={"targets": "mock", "template": silent_server}, timeout=30)
    elapsed = time.monotonic() - started
    body = assert_json_error(answer, 400)
    assert re.search(r"within|time", body["message"], re.I), body
    assert "1" in body["message"]
    assert 0.8 <= elapsed < 15, elapsed


def assert_rebuilt(daemon: Daemon, answer: Any, completed_build: dict[str, Any]) -> None:
    """A rebuild's answer: 202, the spec's document, the same image, a new build that completes."""
    assert answer.status_code == 202, answer.text
    document = answer.json()
    _check_started_document(document, daemon.base_url)
    assert document["id"] == completed_build["image_id"]
    assert document["build"]["id"] != completed_build["build_id"]
    assert daemon.wait_final(first_target(document)["href"])["status"] == "COMPLETED"


def test_rebuild_with_put(daemon: Daemon, completed_build: dict[str, Any]) -> None:
    """PUT /imagefactory/images/<id> with targets=mock (form, as in the spec's curl example; the
    template is optional) answers 202 with the same image id and a new build, which completes."""
    image_id = completed_build["image_id"]
    answer = daemon.put(f"/imagefactory/images/{image_id}", data={"targets": "mock"})
    assert_rebuilt(daemon, answer, completed_build)

    with_template = daemon.put(f"/imagefactory/images/{image_id}", data={"targets": "mock", "template": F14})
    assert with_template.status_code == 202, with_template.text
    assert with_template.json()["id"] == image_id


def test_rebuild_with_put_json_body(daemon: Daemon, completed_build: dict[str, Any]) -> None:
    """PUT /imagefactory/images/<id> with a JSON body (targets only) answers 202, same image id,
    new build id; an unknown image id is a 404."""
    image_id = completed_build["image_id"]
    answer = daemon.put(f"/imagefactory/images/{image_id}", json={"targets": "mock"})
    assert_rebuilt(daemon, answer, completed_build)

    unknown = str(uuid.uuid4())
    assert_json_error(daemon.put(f"/imagefactory/images/{unknown}", json={"targets": "mock"}), 404)


def test_failing_template_ends_failed_with_reason(daemon: Daemon) -> None:
    """A template named FAIL makes the mock build end FAILED with a non-empty status_detail."""
    target = first_target(create_image(daemon, template=FAIL_TEMPLATE))
    final = daemon.wait_final(target["href"])
    assert final["status"] == "FAILED", final
    assert isinstance(final["status_detail"], str) and final["status_detail"].strip()
    assert daemon.get_json(target["href"] + "/status")["status"] == "FAILED"


# -- pushing ------------------------------------------------------------------


def _check_push_answer(daemon: Daemon, answer: requests.Response, target: dict[str, Any]) -> dict[str, Any]:
    assert answer.status_code == 202, answer.text
    document = answer.json()
    assert set(document) == {"_type", "id", "href"}
    assert document["_type"] == "provider_image"
    assert UUID_RE.match(document["id"])
    assert document["href"] == f"{target['href']}/provider_images/{document['id']}"
    return document


def test_push_and_secrets_never_leak(daemon_factory: DaemonPool) -> None:
    """Pushing a COMPLETED target image to mock (nested URI and the alternate /provider_images URI)
    answers 202 {_type, id, href}; the provider image shows operation push, provider mock, the
    target image id and the user name as account, and COMPLETES with an identifier_on_provider.
    The credentials' password never appears in a response, the daemon's log or its state files."""
    daemon = daemon_factory()
    texts: list[str] = []
    image = create_image(daemon)
    target = first_target(image)
    image_id, build_id, target_id = image["id"], image["build"]["id"], target["id"]
    assert daemon.wait_final(target["href"])["status"] == "COMPLETED"

    nested = push_nested(daemon, target)
    texts.append(nested.text)
    pushed = _check_push_answer(daemon, nested, target)

    alternate = daemon.post(
        "/imagefactory/provider_images",
        data={
            "image_id": image_id,
            "build_id": build_id,
            "target_image_id": target_id,
            "provider": "mock",
            "credentials": mock_credentials(),
        },
    )
    texts.append(alternate.text)
    pushed_too = _check_push_answer(daemon, alternate, target)
    assert pushed_too["id"] != pushed["id"]

    for document in (pushed, pushed_too):
        final = daemon.wait_final(document["href"])
        assert final["status"] == "COMPLETED", final
        detail = daemon.get(document["href"])
        texts.append(detail.text)
        detail = detail.json()
        assert set(detail) == PUSH_BUILDER_KEYS
        assert {
            key: detail[key]
            for key in (
                "_type",
                "operation",
                "provider",
                "target_image_id",
                "provider_account_identifier",
                "image_id",
                "build_id",
                "id",
                "href",
                "status",
                "completed",
                "target",
            )
        } == {
            "_type": "provider_image_status",
            "operation": "push",
            "provider": "mock",
            "target_image_id": target_id,
            "provider_account_identifier": "u",
            "image_id": image_id,
            "build_id": build_id,
            "id": document["id"],
            "href": document["href"],
            "status": "COMPLETED",
            "completed": 100,
            "target": "mock",
        }
        assert isinstance(detail["identifier_on_provider"], str) and detail["identifier_on_provider"]

        status = daemon.get(document["href"] + "/status")
        texts.append(status.text)
        assert status.json() == {
            "status": "COMPLETED",
            "_type": "provider_image_status",
            "href": document["href"] + "/status",
            "id": document["id"],
        }

        builder = daemon.get(f"/imagefactory/builders/{document['id']}")
        texts.append(builder.text)
        assert builder.json()["_type"] == "builder"
        assert builder.json()["operation"] == "push"
        assert builder.json()["identifier_on_provider"] == detail["identifier_on_provider"]

    listing = daemon.get("/imagefactory/builders")
    texts.append(listing.text)
    assert {pushed["id"], pushed_too["id"], target_id} <= {entry["id"] for entry in listing.json()["builders"]}

    # A refused push (bad credentials) does not echo the password either.
    refused = push_nested(daemon, target, credentials=mock_credentials().replace("<username>u</username>", ""))
    texts.append(refused.text)
    assert_json_error(refused, 400)

    for text in texts:
        assert PASSWORD not in text
    assert daemon.stop() in CLEAN_EXIT
    assert PASSWORD not in daemon.log_text()
    assert PASSWORD not in daemon.output_text()
    assert daemon.sqlite_path.exists()
    for path in daemon.state_dir.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), f"password found in {path}"


def test_push_of_unfinished_target_image_refused(slow_daemon: Daemon) -> None:
    """Pushing a target image that is still building (not COMPLETED) is a 400."""
    target = first_target(create_image(slow_daemon))
    assert slow_daemon.get_json(target["href"])["status"] in ("NEW", "PENDING", "BUILDING")
    assert_json_error(push_nested(slow_daemon, target), 400, "COMPLETED")


def test_push_refusals(daemon: Daemon, completed_build: dict[str, Any]) -> None:
    """Unknown provider → 400 naming it; malformed credentials → 400; missing parameters → 400;
    a build id that does not match in the nested URL → 404, in the alternate URI's body → 400."""
    target = completed_build["target"]
    assert_json_error(push_nested(daemon, target, provider="nope-cloud"), 400, "nope-cloud")
    for credentials in (
        "not xml at all <",
        "<provider_credentials><mock_credentials><username>u</username></mock_credentials></provider_credentials>",
        "<provider_credentials><ec2_credentials/></provider_credentials>",
        "<something_else/>",
    ):
        assert_json_error(push_nested(daemon, target, credentials=credentials), 400)
    assert_json_error(daemon.post(target["href"] + "/provider_images", data={"provider": "mock"}), 400, "credentials")

    wrong_build = str(uuid.uuid4())
    nested = (
        f"/imagefactory/images/{completed_build['image_id']}/builds/{wrong_build}"
        f"/target_images/{completed_build['target_id']}/provider_images"
    )
    assert_json_error(daemon.post(nested, data={"provider": "mock", "credentials": mock_credentials()}), 404)

    alternate = daemon.post(
        "/imagefactory/provider_images",
        data={
            "image_id": completed_build["image_id"],
            "build_id": wrong_build,
            "target_image_id": completed_build["target_id"],
            "provider": "mock",
            "credentials": mock_credentials(),
        },
    )
    assert_json_error(alternate, 400)
    assert_json_error(
        daemon.post(
            "/imagefactory/provider_images",
            data={"image_id": completed_build["image_id"], "provider": "mock", "credentials": mock_credentials()},
        ),
        400,
        "build_id",
        "target_image_id",
    )


def test_push_failure_ends_failed(daemon: Daemon, completed_build: dict[str, Any]) -> None:
    """A push with user name FAIL ends FAILED with a non-empty status_detail."""
    answer = push_nested(daemon, completed_build["target"], credentials=mock_credentials(username="FAIL"))
    pushed = _check_push_answer(daemon, answer, completed_build["target"])
    final = daemon.wait_final(pushed["href"])
    assert final["status"] == "FAILED", final
    assert final["status_detail"] and final["status_detail"].strip()
    assert final["provider_account_identifier"] == "FAIL"


# -- OAuth ---------------------------------------------------------------------


def test_unsigned_write_is_401(daemon: Daemon) -> None:
    """An unsigned POST is a 401 with a WWW-Authenticate: OAuth header and a JSON body;
    reads need no signature."""
    answer = daemon.post("/imagefactory/images", signed=False, data={"targets": "mock", "template": F14})
    assert_json_error(answer, 401)
    assert answer.headers.get("WWW-Authenticate", "").startswith("OAuth")
    assert daemon.get("/imagefactory/builders").status_code == 200
    assert daemon.get("/imagefactory").status_code == 200


def test_wrong_secret_and_unknown_key_are_401(daemon: Daemon) -> None:
    """A request signed with a wrong secret, by an unknown consumer key, or with the PLAINTEXT
    signature method, is a 401."""
    for auth in (
        oauth(secret="not-our-secret"),
        oauth(key="nobody", secret="our-secret"),
        oauth(signature_method="PLAINTEXT"),
    ):
        answer = daemon.post("/imagefactory/images", data={"targets": "mock", "template": F14}, auth=auth)
        assert_json_error(answer, 401)
        assert answer.headers.get("WWW-Authenticate", "").startswith("OAuth")


def test_replayed_request_is_401(daemon: Daemon) -> None:
    """The exact same signed request sent twice: the first is accepted (202), the replay is a 401."""
    prepared = requests.Request(
        "POST", daemon.url("/imagefactory/images"), data={"targets": "mock", "template": F14}, auth=oauth()
    ).prepare()
    with requests.Session() as session:
        first = session.send(prepared, verify=daemon.verify, timeout=10)
        second = session.send(prepared, verify=daemon.verify, timeout=10)
    assert first.status_code == 202, first.text
    assert_json_error(second, 401)


def test_a_request_replayed_after_a_restart_is_401(daemon_factory: DaemonPool) -> None:
    """The spent nonce outlives the daemon: the same signed request after a restart is still a replay."""
    daemon = daemon_factory(mock_config())
    prepared = requests.Request(
        "POST", daemon.url("/imagefactory/images"), data={"targets": "mock", "template": F14}, auth=oauth()
    ).prepare()
    with requests.Session() as session:
        assert session.send(prepared, verify=daemon.verify, timeout=10).status_code == 202
    daemon.restart()
    with requests.Session() as session:
        replayed = session.send(prepared, verify=daemon.verify, timeout=10)
    assert_json_error(replayed, 401, "replayed")


def test_stale_timestamp_is_401(daemon: Daemon) -> None:
    """A signature whose timestamp is an hour old is a 401."""
    auth = oauth(timestamp=str(int(time.time()) - 3600))
    answer = daemon.post("/imagefactory/images", data={"targets": "mock", "template": F14}, auth=auth)
    assert_json_error(answer, 401, "timestamp")


def test_consumer_key_with_space_slash_and_non_ascii(daemon: Daemon) -> None:
    """The consumer key "weird key/é" from the config file can sign writes."""
    try:
        prepared = requests.Request(
            "POST",
            daemon.url("/imagefactory/images"),
            data={"targets": "mock", "template": F14},
            auth=OAuth1("weird key/é", "s2"),
        ).prepare()
    except Exception as error:  # the client library itself refuses such a key
        pytest.skip(f"requests-oauthlib cannot sign with this key: {error!r}")
    with requests.Session() as session:
        answer = session.send(prepared, verify=daemon.verify, timeout=10)
    assert answer.status_code == 202, answer.text


def test_no_oauth_accepts_unsigned_writes(daemon_factory: DaemonPool) -> None:
    """With --no_oauth an unsigned POST starts a build (202)."""
    daemon = daemon_factory(extra_args=["--no_oauth"])
    answer = daemon.post("/imagefactory/images", signed=False, data={"targets": "mock", "template": F14})
    assert answer.status_code == 202, answer.text
    assert daemon.wait_final(first_target(answer.json())["href"])["status"] == "COMPLETED"


# -- errors ---------------------------------------------------------------------


def test_unknown_objects_are_404_json(daemon: Daemon, completed_build: dict[str, Any]) -> None:
    """An unknown builder id (detail, status, cancel) or target image is a 404 JSON error."""
    unknown = str(uuid.uuid4())
    assert_json_error(daemon.get(f"/imagefactory/builders/{unknown}"), 404)
    assert_json_error(daemon.get(f"/imagefactory/builders/{unknown}/status"), 404)
    assert_json_error(daemon.delete(f"/imagefactory/builders/{unknown}"), 404)
    assert_json_error(
        daemon.get(
            f"/imagefactory/images/{completed_build['image_id']}/builds/"
            f"{completed_build['build_id']}/target_images/{unknown}"
        ),
        404,
    )
    assert_json_error(
        daemon.get(
            f"/imagefactory/images/{completed_build['image_id']}/builds/{unknown}"
            f"/target_images/{completed_build['target_id']}/status"
        ),
        404,
    )
    assert_json_error(daemon.get(f"{completed_build['target']['href']}/provider_images/{unknown}"), 404)


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("DELETE", "/imagefactory", "GET"),
        ("POST", "/imagefactory/builders", "GET"),
        ("PUT", "/imagefactory/images", "POST"),
    ],
)
def test_wrong_method_is_405_with_allow(daemon: Daemon, method: str, path: str, allowed: str) -> None:
    """A method a resource does not support is a 405 JSON error with an Allow header."""
    answer = daemon.request(method, path, signed=True)
    assert_json_error(answer, 405)
    assert allowed in [part.strip() for part in answer.headers.get("Allow", "").split(",")], answer.headers


@pytest.mark.parametrize("path", ["/nope", "/imagefactory/nope", "/imagefactory/images/x/y", "/"])
def test_unknown_path_is_404_json(daemon: Daemon, path: str) -> None:
    """An unknown path is a 404 JSON error, never an HTML page."""
    assert_json_error(daemon.get(path), 404)


@pytest.mark.parametrize(
    "path",
    [
        "/imagefactory/builders/%ff",
        "/imagefactory/builders/%ff/status",
        "/imagefactory/images/%ff/builds/%fe/target_images/%fd",
        "/imagefactory/images/a/builds/b/target_images/%ff/status",
        "/imagefactory/images/a/builds/b/target_images/c/provider_images/%ff",
    ],
)
def test_non_utf8_id_in_url_is_a_client_error(daemon: Daemon, path: str) -> None:
    """An id that is not UTF-8 once percent-decoded (%ff) names no object: a 4xx JSON error, never a 500."""
    answer = daemon.get(path)
    assert answer.status_code in (400, 404), f"{answer.status_code}: {answer.text}"
    assert_json_error(answer, answer.status_code)


def test_body_over_cap_is_413(limits_daemon: Daemon) -> None:
    """A request body larger than max_body_bytes (64 KiB here; 100 KiB sent, with a Content-Length
    or chunked) is a 413 JSON error."""
    answer = limits_daemon.post("/imagefactory/images", data={"targets": "mock", "template": F14 + " " * (100 * 1024)})
    assert_json_error(answer, 413)

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 1024

    # Without a Content-Length (chunked), the cap holds too.
    chunked = limits_daemon.post(
        "/imagefactory/images",
        signed=False,
        data=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "chunked" in chunked.request.headers.get("Transfer-Encoding", "")
    assert_json_error(chunked, 413)
    # The daemon still serves afterwards.
    assert limits_daemon.get_json("/imagefactory") == {"version": "1.0", "name": "imagefactory"}


def test_unsupported_body_type_is_415(daemon: Daemon) -> None:
    """A signed POST whose body is text/plain is a 415 JSON error."""
    answer = daemon.post("/imagefactory/images", data=b"targets=mock", headers={"Content-Type": "text/plain"})
    assert_json_error(answer, 415)


def test_cancel_running_builder_and_completed_builder(
    slow_daemon: Daemon, daemon: Daemon, completed_build: dict[str, Any]
) -> None:
    """DELETE /imagefactory/builders/<id> (signed) on a running builder answers 202 and the
    builder ends FAILED saying it was cancelled; on a COMPLETED builder it is a 409; unsigned 401."""
    target = first_target(create_image(slow_daemon))
    assert_json_error(slow_daemon.delete(f"/imagefactory/builders/{target['id']}", signed=False), 401)
    answer = slow_daemon.delete(f"/imagefactory/builders/{target['id']}")
    assert answer.status_code == 202, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    final = slow_daemon.wait_final(target["href"], timeout=10)
    assert final["status"] == "FAILED", final
    assert "cancel" in final["status_detail"].lower(), final

    assert_json_error(daemon.delete(f"/imagefactory/builders/{completed_build['target_id']}"), 409)
    assert daemon.get_json(completed_build["target"]["href"])["status"] == "COMPLETED"


def test_cancel_is_never_lost(daemon_factory: DaemonPool) -> None:
    """Every cancel answered 202 ends its builder FAILED ("cancelled"), whatever step the builder
    was in when the cancel arrived: 200 builds, each cancelled 0-10 ms after it was started."""
    daemon = daemon_factory(mock_config(mock_duration=1.0, max_concurrent_builds=50))
    cancelled: list[dict[str, Any]] = []
    with requests.Session() as session:
        for attempt in range(200):
            started = session.post(
                daemon.url("/imagefactory/images"),
                auth=oauth(),
                verify=daemon.verify,
                timeout=10,
                data={"targets": "mock", "template": F14},
            )
            assert started.status_code == 202, started.text
            target = first_target(started.json())
            time.sleep((attempt % 40) * 0.00025)
            answer = session.delete(
                daemon.url(f"/imagefactory/builders/{target['id']}"), auth=oauth(), verify=daemon.verify, timeout=10
            )
            assert answer.status_code in (202, 409), answer.text
            if answer.status_code == 202:
                cancelled.append(target)
    assert cancelled
    lost = []
    for target in cancelled:
        final = daemon.wait_final(target["href"], timeout=30)
        if final["status"] != "FAILED" or "cancel" not in (final["status_detail"] or "").lower():
            lost.append((target["id"], final["status"], final["status_detail"]))
    assert not lost, f"{len(lost)} of {len(cancelled)} cancels answered 202 were lost: {lost[:5]}"


# -- plain HTTP ----------------------------------------------------------------------


def test_no_ssl_serves_plain_http(daemon_factory: DaemonPool) -> None:
    """With --no_ssl the API is plain HTTP and the hrefs it returns start with http://."""
    daemon = daemon_factory(ssl=False)
    assert daemon.base_url.startswith("http://")
    assert daemon.get_json("/imagefactory") == {"version": "1.0", "name": "imagefactory"}
    document = create_image(daemon)
    _check_started_document(document, daemon.base_url)
    assert document["href"].startswith("http://")
    final = daemon.wait_final(first_target(document)["href"])
    assert final["status"] == "COMPLETED"
    assert final["href"].startswith("http://")
    # TLS is really off: a TLS handshake gets no TLS answer (an error or no answer at all).
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(f"https://127.0.0.1:{daemon.port}/imagefactory", verify=False, timeout=1)


# -- restarts ----------------------------------------------------------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_restart_fails_in_flight_builders_and_keeps_finished_ones(daemon_factory: DaemonPool, stop_signal: int) -> None:
    """After the daemon stops (SIGTERM) or is killed (SIGKILL) during a build and starts again on
    the same state directory, the image, build and builder still exist; the in-flight builder is
    FAILED with a status_detail saying the daemon stopped/restarted; a builder COMPLETED before
    is still COMPLETED; the image can be rebuilt."""
    daemon = daemon_factory(mock_config(mock_duration=0.2))
    finished = first_target(create_image(daemon))
    assert daemon.wait_final(finished["href"])["status"] == "COMPLETED"

    daemon.extra_args = ["--mock_duration", "20"]
    daemon.restart()
    in_flight_image = create_image(daemon)
    in_flight = first_target(in_flight_image)
    wait_status(daemon, in_flight["href"], "BUILDING")

    status = daemon.stop(stop_signal)
    if stop_signal == signal.SIGTERM:
        assert status in CLEAN_EXIT, daemon.diagnostics()
    daemon.extra_args = []
    daemon.start_ready()

    failed = daemon.get_json(in_flight["href"])
    assert failed["status"] == "FAILED", failed
    detail = failed["status_detail"].lower()
    assert "daemon" in detail, failed
    assert ("restart" in detail) if stop_signal == signal.SIGKILL else re.search(r"stop|restart", detail), failed
    assert daemon.get_json(f"/imagefactory/builders/{in_flight['id']}")["status"] == "FAILED"

    kept = daemon.get_json(finished["href"])
    assert (kept["status"], kept["completed"]) == ("COMPLETED", 100)
    assert kept["status_detail"] is None or "restart" not in kept["status_detail"]
    assert {finished["id"], in_flight["id"]} <= {b["id"] for b in daemon.get_json("/imagefactory/builders")["builders"]}

    rebuilt = daemon.put(f"/imagefactory/images/{in_flight_image['id']}", json={"targets": "mock"})
    assert rebuilt.status_code == 202, rebuilt.text
    assert daemon.wait_final(first_target(rebuilt.json())["href"])["status"] == "COMPLETED"


def test_port_in_use_exits_nonzero_naming_it(daemon_factory: DaemonPool) -> None:
    """A daemon whose port is taken exits quickly with a non-zero status and says which address/port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        daemon = daemon_factory(port=port, start=False)
        started = time.monotonic()
        daemon.start()
        try:
            status = daemon.process.wait(timeout=30)
        except Exception:
            daemon.kill()
            raise
        elapsed = time.monotonic() - started
    assert status != 0, daemon.diagnostics()
    assert elapsed < 20
    said = daemon.output_text() + daemon.log_text()
    assert f"127.0.0.1:{port}" in said or str(port) in said, daemon.diagnostics()
    assert re.search(r"in use|listen", said, re.I), daemon.diagnostics()
