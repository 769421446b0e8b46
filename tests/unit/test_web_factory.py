"""The factory API's routes, shapes and errors, in memory (treq's StubTreq, no sockets)."""

import json
import time
from urllib.parse import urlencode

import jsonschema
import pytest
from oauthlib.oauth1 import Client
from treq.testing import StubTreq
from twisted.internet.defer import ensureDeferred

from imgfac_twisted.jobs.index import BuilderIndex
from imgfac_twisted.testing import SPEC_TEMPLATE, Stack, result_of
from imgfac_twisted.web import builder_list
from imgfac_twisted.web.factory import FactoryAPI
from imgfac_twisted.web.fast_reads import FactoryRoot
from imgfac_twisted.web.oauth import OAuthVerifier
from support.factory_shapes import BUILDER_KEYS
from support.many_builders import fill_sqlite
from support.openapi_document import load_document

BASE = "http://imgfac-host:8075"
FORM = {"Content-Type": ["application/x-www-form-urlencoded"]}


class Client_:
    """A StubTreq client of one FactoryRoot, answering synchronously."""

    def __init__(self, stack, verifier=None):
        self.stack = stack
        self.api = FactoryAPI(stack.dispatcher, stack.index, stack.logs, stack.metrics, verifier)
        self.treq = StubTreq(FactoryRoot(self.api, self.api.app.resource()))

    def request(self, method, path, body=None, headers=None):
        response = result_of(self.treq.request(method, BASE + path, data=body, headers=headers or {}))
        text = result_of(self.treq.content(response)).decode("utf-8")
        return response, text

    def json(self, method, path, body=None, headers=None, expect=200):
        response, text = self.request(method, path, body, headers)
        assert response.code == expect, text
        assert response.headers.getRawHeaders("content-type") == ["application/json"]
        return json.loads(text)


@pytest.fixture
def client(stack):
    return Client_(stack)


def build(client, template=SPEC_TEMPLATE, targets="mock"):
    body = urlencode({"targets": targets, "template": template})
    return client.json("POST", "/imagefactory/images", body, FORM, expect=202)


def test_version(client):
    """GET /imagefactory names the API and its version."""
    assert client.json("GET", "/imagefactory") == {"version": "1.0", "name": "imagefactory"}


def test_build_answer_has_the_spec_shape(client):
    """POST /imagefactory/images answers 202 with the spec's nested image/build/target_images document."""
    answer = build(client)
    image_id, build_id = answer["id"], answer["build"]["id"]
    target = answer["build"]["target_images"][0]
    assert answer["_type"] == "image" and answer["href"] == f"{BASE}/imagefactory/images/{image_id}"
    assert answer["build"]["_type"] == "build"
    assert answer["build"]["href"] == f"{BASE}/imagefactory/images/{image_id}/builds/{build_id}"
    assert target == {
        "_type": "target_image",
        "id": target["id"],
        "href": f"{BASE}/imagefactory/images/{image_id}/builds/{build_id}/target_images/{target['id']}",
    }


def test_reads_of_a_builder_agree_everywhere(client):
    """The target image URL, its status, the builder URL, its status and the list all show one builder."""
    answer = build(client)
    target = answer["build"]["target_images"][0]
    detail = client.json("GET", target["href"][len(BASE) :])
    assert set(detail) == BUILDER_KEYS
    assert (detail["_type"], detail["operation"], detail["target"], detail["status"]) == (
        "target_image_status",
        "build",
        "mock",
        "BUILDING",
    )
    assert detail["href"] == target["href"]
    status = client.json("GET", target["href"][len(BASE) :] + "/status")
    assert status == {
        "status": "BUILDING",
        "_type": "target_image_status",
        "href": target["href"] + "/status",
        "id": target["id"],
    }
    builder = client.json("GET", f"/imagefactory/builders/{target['id']}")
    assert builder["_type"] == "builder" and builder["href"] == f"{BASE}/imagefactory/builders/{target['id']}"
    assert {k: v for k, v in builder.items() if k not in ("_type", "href")} == {
        k: v for k, v in detail.items() if k not in ("_type", "href")
    }
    assert client.json("GET", f"/imagefactory/builders/{target['id']}/status")["_type"] == "builder_status"
    listing = client.json("GET", "/imagefactory/builders")
    assert listing["_type"] == "builders" and [b["id"] for b in listing["builders"]] == [target["id"]]


def test_fast_reads_answer_exactly_as_klein_does(client):
    """The root's direct reads give the same bodies as the Klein routes they shortcut."""
    answer = build(client)
    target = answer["build"]["target_images"][0]
    path = target["href"][len(BASE) :]
    for suffix in ("", "/status"):
        fast = client.request("GET", path + suffix)[1]
        # A trailing query string is not a shortcut shape: it goes through Klein.
        routed = client.request("GET", path + suffix + "?via=klein")[1]
        assert fast == routed


def test_a_target_image_under_the_wrong_build_is_not_found(client):
    """A target image id under another image or build is a 404, not someone else's builder."""
    answer = build(client)
    target_id = answer["build"]["target_images"][0]["id"]
    error = client.json(
        "GET", f"/imagefactory/images/{answer['id']}/builds/wrong/target_images/{target_id}", expect=404
    )
    assert error["_type"] == "error" and target_id in error["message"]


def test_json_bodies_are_accepted(client):
    """A JSON object body works like a form."""
    body = json.dumps({"targets": "mock", "template": SPEC_TEMPLATE})
    answer = client.json("POST", "/imagefactory/images", body, {"Content-Type": ["application/json"]}, expect=202)
    assert answer["_type"] == "image"


@pytest.mark.parametrize(
    "body,headers,code,words",
    [
        (urlencode({"template": SPEC_TEMPLATE}), FORM, 400, ["targets"]),
        (urlencode({"targets": "mock"}), FORM, 400, ["template"]),
        ("", FORM, 400, ["targets", "template"]),
        (urlencode({"targets": "bogus", "template": SPEC_TEMPLATE}), FORM, 400, ["bogus", "mock"]),
        (urlencode({"targets": "mock", "template": "<template>"}), FORM, 400, ["well-formed"]),
        ("{not json", {"Content-Type": ["application/json"]}, 400, ["JSON"]),
        ("[1]", {"Content-Type": ["application/json"]}, 400, ["object"]),
        ('{"targets": 1, "template": "x"}', {"Content-Type": ["application/json"]}, 400, ["targets"]),
        ("targets=mock", {"Content-Type": ["text/plain"]}, 415, ["text/plain"]),
    ],
)
def test_bad_build_requests(client, body, headers, code, words):
    """Bad parameters and bodies get a JSON error with the right code naming what is wrong."""
    error = client.json("POST", "/imagefactory/images", body, headers, expect=code)
    for word in words:
        assert word in error["message"]


@pytest.mark.parametrize(
    "method,path,code",
    [
        ("GET", "/imagefactory/builders/nope", 404),
        ("GET", "/imagefactory/builders/nope/status", 404),
        ("GET", "/nothing/here", 404),
        ("DELETE", "/imagefactory", 405),
        ("POST", "/imagefactory/builders", 405),
        ("GET", "/imagefactory/images", 405),
        ("PUT", "/imagefactory/images/00000000-0000-0000-0000-000000000000", 400),
    ],
)
def test_routing_errors_are_json(client, method, path, code):
    """Unknown ids and paths are 404, wrong methods 405 with Allow; always JSON, never HTML."""
    response, text = client.request(method, path, "" if method in ("POST", "PUT") else None, FORM)
    assert response.code == code
    assert response.headers.getRawHeaders("content-type") == ["application/json"]
    assert json.loads(text)["code"] == code
    if code == 405:
        assert response.headers.getRawHeaders("allow")


def test_rebuild_of_an_unknown_image_is_404(client):
    """PUT on an image id nobody knows is a 404."""
    error = client.json(
        "PUT",
        "/imagefactory/images/00000000-0000-0000-0000-000000000000",
        urlencode({"targets": "mock"}),
        FORM,
        expect=404,
    )
    assert "00000000" in error["message"]


def test_push_answer_and_details(client, stack):
    """A push answers 202 with the provider image, whose details name the target image and provider."""
    answer = build(client)
    target = answer["build"]["target_images"][0]
    stack.run_for(1.1)
    credentials = (
        "<provider_credentials><mock_credentials><username>u</username><password>p-XYZ</password>"
        "</mock_credentials></provider_credentials>"
    )
    pushed = client.json(
        "POST",
        target["href"][len(BASE) :] + "/provider_images",
        urlencode({"provider": "mock", "credentials": credentials}),
        FORM,
        expect=202,
    )
    assert set(pushed) == {"_type", "id", "href"} and pushed["_type"] == "provider_image"
    assert pushed["href"] == target["href"] + "/provider_images/" + pushed["id"]
    stack.run_for(1.1)
    detail = client.json("GET", pushed["href"][len(BASE) :])
    assert detail["_type"] == "provider_image_status" and detail["operation"] == "push"
    assert (detail["target_image_id"], detail["provider"], detail["provider_account_identifier"]) == (
        target["id"],
        "mock",
        "u",
    )
    assert detail["status"] == "COMPLETED" and detail["identifier_on_provider"].startswith("mock-")
    assert "p-XYZ" not in json.dumps(detail)
    other = client.json(
        "POST",
        "/imagefactory/provider_images",
        urlencode(
            {
                "image_id": answer["id"],
                "build_id": "wrong",
                "target_image_id": target["id"],
                "provider": "mock",
                "credentials": credentials,
            }
        ),
        FORM,
        expect=400,
    )
    assert target["id"] in other["message"]


def signed_headers(method, url, body, key="client1", secret="our-secret"):
    client = Client(key, client_secret=secret)
    _, headers, _ = client.sign(url, method, body, {"Content-Type": "application/x-www-form-urlencoded"})
    return {name: [value] for name, value in headers.items()}


def test_writes_need_a_valid_oauth_signature(stack):
    """With OAuth on, unsigned or wrongly signed writes get 401 with WWW-Authenticate; signed ones pass; reads are open."""
    client = Client_(stack, OAuthVerifier({"client1": "our-secret"}, stack.clock, 300))
    stack.clock.advance(time.time())
    body = urlencode({"targets": "mock", "template": SPEC_TEMPLATE})
    response, text = client.request("POST", "/imagefactory/images", body, FORM)
    assert response.code == 401 and response.headers.getRawHeaders("www-authenticate")[0].startswith("OAuth")
    assert json.loads(text)["_type"] == "error"
    bad = signed_headers("POST", BASE + "/imagefactory/images", body, secret="wrong")
    assert client.request("POST", "/imagefactory/images", body, bad)[0].code == 401
    good = signed_headers("POST", BASE + "/imagefactory/images", body)
    assert client.request("POST", "/imagefactory/images", body, good)[0].code == 202
    assert client.request("POST", "/imagefactory/images", body, good)[0].code == 401, "a replay must be refused"
    assert client.request("GET", "/imagefactory/builders")[0].code == 200


def test_cancel(client, stack):
    """DELETE on a running builder cancels it (202); on a finished one it is a 409."""
    target_id = build(client)["build"]["target_images"][0]["id"]
    client.json("DELETE", f"/imagefactory/builders/{target_id}", expect=202)
    detail = client.json("GET", f"/imagefactory/builders/{target_id}")
    assert detail["status"] == "FAILED" and "cancel" in detail["status_detail"]
    client.json("DELETE", f"/imagefactory/builders/{target_id}", expect=409)


def test_builder_log(client, stack):
    """A builder's log tells its story as text; offset pages on; the status header says when it is whole."""
    target_id = build(client)["build"]["target_images"][0]["id"]
    stack.run_for(1.1)
    response, text = client.request("GET", f"/imagefactory/builders/{target_id}/log")
    assert response.code == 200 and response.headers.getRawHeaders("x-builder-status") == ["COMPLETED"]
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
    lines = text.splitlines()
    assert "NEW: build mock" in lines[0] and "BUILDING -> COMPLETED" in lines[-1]
    assert "mock build of 'f14jeos'" in text
    assert client.request("GET", f"/imagefactory/builders/{target_id}/log?offset={len(text) - 10}")[1] == text[-10:]
    assert client.request("GET", f"/imagefactory/builders/{target_id}/log?offset=x")[0].code == 400
    assert client.request("GET", "/imagefactory/builders/nope/log")[0].code == 404


@pytest.mark.parametrize(
    "accept,html",
    [
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("*/*", False),
        (None, False),
        ("application/json", False),
        ("application/json, text/html", False),
        ("text/html;q=0.5, application/json", False),
        ("application/json;q=0.1, text/html", True),
    ],
)
def test_builders_page_for_browsers_json_for_the_rest(client, accept, html):
    """A browser asking for /imagefactory/builders gets the status page; every other client the spec's JSON."""
    response, text = client.request("GET", "/imagefactory/builders", headers={"Accept": [accept]} if accept else {})
    content_type = response.headers.getRawHeaders("content-type")[0]
    if html:
        assert content_type.startswith("text/html") and "<html" in text.lower()
    else:
        assert content_type == "application/json" and json.loads(text)["_type"] == "builders"


def test_openapi_document_is_served(client):
    """GET /imagefactory/openapi.json gives an OpenAPI 3.1 document."""
    assert client.json("GET", "/imagefactory/openapi.json")["openapi"].startswith("3.1")


def test_raw_image_before_completion_is_not_found(client):
    """A target image that is not COMPLETED cannot be downloaded yet (404)."""
    href = build(client)["build"]["target_images"][0]["href"][len(BASE) :]
    error = client.json("GET", href + "/raw_image", expect=404)
    assert "BUILDING" in error["message"]


@pytest.fixture
def many(tmp_path):
    """A client of a stack whose store already holds 450 builders (the last 3 PENDING), and their ids."""
    ids = fill_sqlite(str(tmp_path / "many"), 450, unfinished=3)
    stack = Stack(str(tmp_path / "many"))
    yield Client_(stack), ids
    stack.close()


def test_pages_follow_next_to_the_end(many):
    """``limit`` pages oldest first; ``next`` carries the limit and the last id, and is null on the last page."""
    client, ids = many
    seen, path, pages = [], "/imagefactory/builders?limit=200", 0
    while path is not None:
        page = client.json("GET", path)
        assert page["_type"] == "builders" and page["href"] == f"{BASE}/imagefactory/builders"
        assert all(set(b) == BUILDER_KEYS and b["_type"] == "builder" for b in page["builders"])
        seen += [b["id"] for b in page["builders"]]
        pages += 1
        path = page["next"] and page["next"][len(BASE) :]
        if path is not None:
            assert path == f"/imagefactory/builders?limit=200&marker={seen[-1]}"
    assert seen == ids and pages == 3
    exact = client.json("GET", f"/imagefactory/builders?limit=50&marker={ids[399]}")
    assert [b["id"] for b in exact["builders"]] == ids[400:] and exact["next"] is None


@pytest.mark.parametrize(
    "query, named",
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("limit=-5", "limit"),
        ("limit=10&marker=no-such-builder", "marker"),
        ("marker=", "marker"),
        ("unfinished=maybe", "unfinished"),
        ("unfinished=1&limit=10", "unfinished"),
    ],
)
def test_bad_list_arguments_answer_400_naming_them(many, query, named):
    client, _ = many
    answer = client.json("GET", f"/imagefactory/builders?{query}", expect=400)
    assert answer["code"] == 400 and named in answer["message"]


def test_the_streamed_full_list_is_the_spec_document_of_every_builder(many, monkeypatch):
    """Without ``limit`` every builder is listed (written a store page at a time), the same bytes as one document."""
    client, ids = many
    monkeypatch.setattr(builder_list, "STREAM_PAGE", 200)  # three store pages
    response, text = client.request("GET", "/imagefactory/builders")
    assert response.code == 200 and response.headers.getRawHeaders("content-type") == ["application/json"]
    paged = []
    for marker in (None, ids[199], ids[399]):
        query = "limit=200" + (f"&marker={marker}" if marker else "")
        paged += client.json("GET", f"/imagefactory/builders?{query}")["builders"]
    expected = {"_type": "builders", "href": f"{BASE}/imagefactory/builders", "builders": paged}
    assert text == json.dumps(expected) and len(paged) == 450
    after = json.loads(client.request("GET", f"/imagefactory/builders?marker={ids[99]}")[1])
    assert [b["id"] for b in after["builders"]] == ids[100:]


def test_unfinished_lists_only_the_unfinished(many):
    client, ids = many
    answer = client.json("GET", "/imagefactory/builders?unfinished=1")
    assert [b["id"] for b in answer["builders"]] == ids[-3:]
    assert {b["status"] for b in answer["builders"]} == {"PENDING"}


def test_a_builder_the_index_does_not_hold_is_read_from_the_store(many):
    """Reads of a finished builder the index let go (or never loaded) answer from the store, 404 when unknown."""
    client, ids = many
    stack = client.stack
    # As the daemon starts: the index holds only the unfinished builders.
    stack.index = BuilderIndex(stack.store, stack.store.thd_list_unfinished_builders())
    client = Client_(stack)
    assert stack.index.get(ids[5]) is None
    assert client.json("GET", f"/imagefactory/builders/{ids[5]}")["status"] == "COMPLETED"
    assert stack.index.get(ids[5]) is not None
    detail = client.json("GET", f"/imagefactory/builders/{ids[6]}/status")
    assert detail["_type"] == "builder_status"
    assert client.request("GET", "/imagefactory/builders/no-such-builder")[0].code == 404
    # A deleted builder is not brought back by a read begun before the deletion.
    stack.index.remove([ids[5]])
    assert client.request("GET", f"/imagefactory/builders/{ids[5]}")[0].code == 404


def test_pages_and_the_full_list_match_the_openapi_document(many):
    """The full list is a BuildersList, a page a BuildersPage, as the OpenAPI document says."""
    client, ids = many
    document = load_document()
    listing = document["paths"]["/imagefactory/builders"]["get"]["responses"]["200"]["content"]["application/json"]
    schema = {**listing["schema"], "components": document["components"]}
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    for path in (
        "/imagefactory/builders",
        "/imagefactory/builders?limit=7",
        f"/imagefactory/builders?limit=7&marker={ids[-2]}",
    ):
        validator.validate(client.json("GET", path))
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**client.json("GET", "/imagefactory/builders?limit=2"), "next": 5})


def test_a_stream_goes_on_after_the_last_builder_still_there_when_its_page_s_last_was_deleted(many, monkeypatch):
    """Builders deleted while the list streams: the next store page starts after the last one of the page left."""
    client, ids = many
    monkeypatch.setattr(builder_list, "STREAM_PAGE", 200)
    index, store = client.stack.index, client.stack.store
    page = result_of(ensureDeferred(index.page(200, None)))
    for gone in ids[198:201]:
        result_of(store.delete_target_image(gone))
    following, full = result_of(ensureDeferred(builder_list._after(index, page)))
    assert [b.id for b in following] == ids[201:401] and full
