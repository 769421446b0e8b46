"""The Conductor API on fakes: Basic auth, Accept, XML shapes, every route and error code (StubTreq, a Clock, no sockets)."""

from __future__ import annotations

import base64
import os
from typing import Any

import bcrypt
import pytest
from lxml import etree
from treq.testing import StubTreq
from twisted.internet.defer import fail

from imgfac_twisted.errors import AuthenticationFailed, ConfigError
from imgfac_twisted.jobs.accounts import ProviderAccount, load_accounts
from imgfac_twisted.jobs.deletions import Deleter
from imgfac_twisted.model import Build, Builder, Image, Operation, Status
from imgfac_twisted.providers import Credentials
from imgfac_twisted.providers.mock import MockProvider
from imgfac_twisted.testing import SPEC_TEMPLATE, FakeReactor, InlineDoor, Stack, result_of
from imgfac_twisted.web.basic_auth import BasicAuthenticator, parse_basic
from imgfac_twisted.web.conductor import representations as xml
from imgfac_twisted.web.conductor.app import ConductorAPI
from imgfac_twisted.web.conductor.resource import ConductorResource, accepts
from support.conductor_shapes import (
    SPEC_BUILD,
    SPEC_IMAGE,
    SPEC_PROVIDER_IMAGE,
    SPEC_STARTED_IMAGE,
    SPEC_STARTED_PUSHES,
    SPEC_TARGET_IMAGE,
    shape,
    spec_shape,
)

BASE = "http://conductor-host:8075"
API = "/conductor/api"
PASSWORD = "s3cret pass"
#: As ``htpasswd -nB`` writes it ($2y$), at the lowest cost to keep the tests quick.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
XML_HEADERS = {"Content-Type": ["application/xml"]}


def basic(user: str = "admin", password: str = PASSWORD) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


# -- Basic auth ------------------------------------------------------------------


class CountingDoor(InlineDoor):
    """An inline door that counts its calls (bcrypt checks)."""

    calls = 0

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return super().run(fn, *args, **kwargs)


def test_a_right_password_against_a_2y_hash_is_accepted():
    """htpasswd's $2y$ hashes are checked (as $2b$) and the user name comes back."""
    auth = BasicAuthenticator({"admin": HASH}, InlineDoor(), FakeReactor())
    assert result_of(auth.authenticate(basic())) == "admin"


@pytest.mark.parametrize(
    "header",
    [
        None,
        b"",
        b"Bearer abc",
        b"Basic !!!notbase64",
        b"Basic " + base64.b64encode(b"nocolon"),
        basic(password="wrong"),
        basic(user="nobody"),
    ],
)
def test_missing_malformed_or_wrong_credentials_are_refused(header):
    """No header, another scheme, bad base64, no colon, a wrong password or an unknown user: AuthenticationFailed."""
    auth = BasicAuthenticator({"admin": HASH}, InlineDoor(), FakeReactor())
    with pytest.raises(AuthenticationFailed):
        result_of(auth.authenticate(header))


def test_an_unknown_user_costs_a_bcrypt_check_too():
    """The door is used for an unknown user as well, so timing does not tell users apart."""
    door = CountingDoor()
    auth = BasicAuthenticator({"admin": HASH}, door, FakeReactor())
    with pytest.raises(AuthenticationFailed):
        result_of(auth.authenticate(basic(user="nobody")))
    assert door.calls == 1


def test_a_successful_check_is_remembered_for_a_while_only():
    """The same user and password skip bcrypt until cache_seconds pass; a wrong password is never cached."""
    door, clock = CountingDoor(), FakeReactor()
    auth = BasicAuthenticator({"admin": HASH}, door, clock, cache_seconds=60)
    result_of(auth.authenticate(basic()))
    result_of(auth.authenticate(basic()))
    assert door.calls == 1
    with pytest.raises(AuthenticationFailed):
        result_of(auth.authenticate(basic(password="wrong")))
    assert door.calls == 2
    clock.advance(61)
    result_of(auth.authenticate(basic()))
    assert door.calls == 3


def test_parse_basic_reads_utf8_and_colons_in_passwords():
    """The password is everything after the first colon."""
    assert parse_basic(b"Basic " + base64.b64encode("é:a:b".encode())) == ("é", "a:b")


@pytest.mark.parametrize(
    "header, ok",
    [
        (None, True),
        (b"*/*", True),
        (b"application/*", True),
        (b"application/xml", True),
        (b"text/xml", True),
        (b"application/json, application/xml;q=0.5", True),
        (b"application/json", False),
        (b"text/html", False),
        (b"application/xml;q=0", False),
    ],
)
def test_accept_header(header, ok):
    """Absent, wildcards and the XML types are fine; anything else (or XML at q=0) is not."""
    assert accepts(header, frozenset({b"*/*", b"application/*", b"application/xml", b"text/*", b"text/xml"})) is ok


# -- accounts and config ----------------------------------------------------------


def test_accounts_are_loaded_and_every_bad_one_reported_at_once(tmp_path):
    """Unknown provider, unreadable file, invalid credentials: one ConfigError naming each account, no secret."""
    good = tmp_path / "good.xml"
    good.write_text(
        "<provider_credentials><mock_credentials><username>u</username><password>TOPSECRET</password>"
        "</mock_credentials></provider_credentials>"
    )
    bad = tmp_path / "bad.xml"
    bad.write_text(
        "<provider_credentials><mock_credentials><username>u</username></mock_credentials></provider_credentials>"
    )
    provider = MockProvider(type("Env", (), {"config": type("C", (), {"mock_duration": 0})()})())
    kinds = {"mock": "mock"}
    loaded = load_accounts({"ok": {"provider": "mock", "credentials": str(good)}}, kinds.get, lambda _: provider)
    assert loaded["ok"].provider_type == "mock" and loaded["ok"].credentials.account_identifier == "u"
    assert "TOPSECRET" not in repr(loaded)
    with pytest.raises(ConfigError) as refused:
        load_accounts(
            {
                "a": {"provider": "nowhere", "credentials": str(good)},
                "b": {"provider": "mock", "credentials": str(tmp_path / "missing.xml")},
                "c": {"provider": "mock", "credentials": str(bad)},
            },
            kinds.get,
            lambda _: provider,
        )
    message = refused.value.message
    assert "'a': unknown provider 'nowhere'" in message
    assert "'b': credentials file" in message and "cannot be read" in message
    assert "'c': credentials file" in message and "<password>" in message


def test_config_checks_users_and_accounts():
    """conductor_users must hold bcrypt hashes; provider_accounts need provider and credentials; users are redacted."""
    from imgfac_twisted.config import merge_config

    config = merge_config(
        {
            "conductor": True,
            "conductor_users": {"admin": HASH},
            "provider_accounts": {"acc": {"provider": "mock", "credentials": "/x.xml"}},
        },
        {},
    )
    assert config.conductor and config.provider_accounts["acc"]["provider"] == "mock"
    assert HASH not in str(config.redacted()) and HASH not in repr(config)
    with pytest.raises(ConfigError) as refused:
        merge_config(
            {"conductor_users": {"admin": "plaintext"}, "provider_accounts": {"acc": {"provider": "mock"}}}, {}
        )
    assert "conductor_users" in refused.value.message and "'admin'" in refused.value.message
    assert "plaintext" not in refused.value.message
    assert "provider_accounts" in refused.value.message and "'acc'" in refused.value.message


# -- XML shapes against the spec's examples ---------------------------------------


def test_xml_documents_have_the_spec_shapes():
    """Every document is, element for element and attribute for attribute, the spec's example."""
    image = Image("i1", "t1", "tmpl1", "foo", "Fedora", "14", "x86_64", 1.0)
    build = Build("b1", "i1", "t1", 1.0)
    target = Builder("ti1", Operation.BUILD, Status.COMPLETED, 100, "i1", "b1", "ec2", created=1.0)
    push = Builder(
        "pi1",
        Operation.PUSH,
        Status.NEW,
        0,
        "i1",
        "b1",
        "ec2",
        provider="ec2-us-east-1",
        target_image_id="ti1",
        identifier_on_provider="ami-1",
    )
    assert shape(xml.image_element(BASE, image, ["b1"])) == spec_shape(SPEC_IMAGE)
    assert shape(xml.build_element(BASE, build)) == spec_shape(SPEC_BUILD)
    # The spec's shape; a COMPLETED one adds (additively) a link to its package list.
    completed = xml.target_image_element(BASE, target, "t1", [])
    assert completed[-1].tag == "icicle" and completed[-1].get("href") == completed.get("href") + "/icicle"
    completed.remove(completed[-1])
    assert shape(completed) == spec_shape(SPEC_TARGET_IMAGE)
    assert shape(xml.provider_image_element(BASE, push)) == spec_shape(SPEC_PROVIDER_IMAGE)
    assert shape(xml.started_image_element(BASE, "i1", "b1", [target])) == spec_shape(SPEC_STARTED_IMAGE)
    assert shape(xml.started_pushes_element(BASE, [(push, "ec2-acc")])) == spec_shape(SPEC_STARTED_PUSHES)
    element = xml.provider_image_element(BASE, push)
    assert element.get("href") == f"{BASE}/conductor/api/provider_images/pi1" and element.findtext("status") == "New"
    assert element.findtext("target_identifier") == "ami-1" and element.findtext("object_type") == "provider_image"


def test_statuses_are_the_factorys_but_new_shows_as_new():
    """NEW -> New; every other status as the factory names it."""
    assert [xml.conductor_status(s) for s in Status] == ["New", "PENDING", "BUILDING", "PUSHING", "COMPLETED", "FAILED"]


def test_text_is_escaped_by_the_serializer():
    """A description with markup characters comes out as text, not markup."""
    image = Image("i1", "t1", "<b>&", "x</description><evil/>", "Fedora", "14", "x86_64", 1.0)
    parsed = etree.fromstring(etree.tostring(xml.image_element(BASE, image, [])))
    assert parsed.findtext("name") == "<b>&" and parsed.findtext("description") == "x</description><evil/>"


# -- the routes, in memory ------------------------------------------------------------


class Conductor:
    """A StubTreq client of the Conductor resource on a fake Stack, with one mock account."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.accounts = {"mock-acc": ProviderAccount("mock-acc", "mock", "mock", Credentials("mockuser"))}
        self.deleter = Deleter(
            stack.store,
            stack.index,
            stack.dispatcher,
            self.accounts,
            InlineDoor(),
            stack.config.state_dir,
            stack.updater,
        )
        self.api = ConductorAPI(stack.dispatcher, stack.store, stack.index, self.deleter, self.accounts, 1024 * 1024)
        auth = BasicAuthenticator({"admin": HASH}, InlineDoor(), stack.clock)
        self.treq = StubTreq(ConductorResource(self.api.app.resource(), auth))

    def request(
        self,
        method: str,
        path: str,
        body: str | bytes | None = None,
        headers: dict | None = None,
        auth: bytes | None = None,
    ) -> tuple[Any, bytes]:
        sent = {"Authorization": [(auth or basic()).decode()], **(headers or {})}
        if body is not None and "Content-Type" not in sent:
            sent.update(XML_HEADERS)
        response = result_of(self.treq.request(method, BASE + API + path, data=body, headers=sent))
        return response, result_of(self.treq.content(response))

    def xml(self, method: str, path: str, body: str | None = None, expect: int = 200, **kwargs: Any) -> etree._Element:
        response, content = self.request(method, path, body, **kwargs)
        assert response.code == expect, content
        assert response.headers.getRawHeaders("content-type") == ["application/xml; charset=utf-8"]
        return etree.fromstring(content)

    def error(self, method: str, path: str, body: str | None = None, expect: int = 400, **kwargs: Any) -> str:
        document = self.xml(method, path, body, expect=expect, **kwargs)
        assert document.tag == "error" and [child.tag for child in document] == ["code", "message"]
        return document.findtext("code")


@pytest.fixture
def stack_settings():
    """Mock builds of half a second (the ``stack`` fixture is tests/conftest.py's)."""
    return {"mock_duration": 0.5}


@pytest.fixture
def conductor(stack):
    return Conductor(stack)


def new_image(conductor: Conductor, targets: str = "mock", template: str = SPEC_TEMPLATE) -> etree._Element:
    body = f"<image><targets>{targets}</targets><tdl><![CDATA[{template}]]></tdl></image>"
    return conductor.xml("POST", "/images", body, expect=201)


def completed_build(conductor: Conductor) -> etree._Element:
    answer = new_image(conductor)
    conductor.stack.run_for(3)
    return answer


def test_post_images_answers_201_with_the_nested_document(conductor):
    """The image, its build and a New target image per target; Location names the image."""
    escaped = SPEC_TEMPLATE.replace("&", "&amp;").replace("<", "&lt;")
    response, content = conductor.request(
        "POST", "/images", f"<image><targets>mock</targets><tdl>{escaped}</tdl></image>"
    )
    assert response.code == 201, content
    answer = etree.fromstring(content)
    assert response.headers.getRawHeaders("location") == [answer.get("href")]
    target = answer.find("build/target_images/target_image")
    # The status at the time of the answer (inline doors: the work has already started).
    assert target.findtext("status") in ("New", "PENDING", "BUILDING")


def test_template_as_a_child_element_is_accepted(conductor):
    """<tdl><template>...</template></tdl> works as well as escaped text or CDATA."""
    conductor.xml("POST", "/images", f"<image><targets>mock</targets><tdl>{SPEC_TEMPLATE}</tdl></image>", expect=201)


def test_reads_list_and_show_every_object(conductor):
    """images, builds, target_images, provider_images: lists and single objects, linked to each other."""
    answer = completed_build(conductor)
    image_id, build_id = answer.get("id"), answer.find("build").get("id")
    target_id = answer.find("build/target_images/target_image").get("id")
    image = conductor.xml("GET", f"/images/{image_id}")
    assert image.findtext("name") == "f14jeos" and image.findtext("os") == "Fedora"
    assert [b.get("id") for b in image.find("builds")] == [build_id]
    assert [i.get("id") for i in conductor.xml("GET", "/images")] == [image_id]
    assert conductor.xml("GET", f"/builds/{build_id}").findtext("image") == image_id
    assert [b.get("id") for b in conductor.xml("GET", "/builds")] == [build_id]
    target = conductor.xml("GET", f"/target_images/{target_id}")
    assert target.findtext("status") == "COMPLETED" and target.find("build").get("id") == build_id
    build = result_of(conductor.stack.store.get_build(build_id))
    assert target.findtext("template") == build.template_id
    assert [t.get("id") for t in conductor.xml("GET", "/target_images")] == [target_id]


def test_push_of_a_build_to_an_account(conductor):
    """A build pushed to the mock account gives one provider image, COMPLETED once the push ran."""
    answer = completed_build(conductor)
    build_id = answer.find("build").get("id")
    started = conductor.xml(
        "POST",
        "/provider_images",
        f"<provider_image><build_id>{build_id}</build_id>"
        "<provider_account>mock-acc</provider_account></provider_image>",
        expect=201,
    )
    (pushed,) = started
    assert pushed.tag == "provider_image" and pushed.findtext("status") in ("New", "PENDING", "PUSHING")
    conductor.stack.run_for(3)
    detail = conductor.xml("GET", f"/provider_images/{pushed.get('id')}")
    assert detail.findtext("status") == "COMPLETED" and detail.findtext("provider") == "mock"
    assert detail.findtext("target_identifier").startswith("mock-")
    target = conductor.xml("GET", f"/target_images/{detail.find('target_image').get('id')}")
    assert [p.get("id") for p in target.find("provider_images")] == [pushed.get("id")]


def test_push_by_image_and_by_target_image(conductor):
    """An image push covers its latest build; a target image push that one target image."""
    answer = completed_build(conductor)
    target_id = answer.find("build/target_images/target_image").get("id")
    by_image = conductor.xml(
        "POST",
        "/provider_images",
        f"<provider_image><image_id>{answer.get('id')}</image_id>"
        "<provider_account>mock-acc</provider_account></provider_image>",
        expect=201,
    )
    by_target = conductor.xml(
        "POST",
        "/provider_images",
        f"<provider_image><target_image_id>{target_id}"
        "</target_image_id><provider_account>mock-acc</provider_account></provider_image>",
        expect=201,
    )
    assert len(by_image) == 1 and len(by_target) == 1


def test_delete_of_each_level_answers_deleted_and_removes_what_hangs_under_it(conductor, stack):
    """DELETE answers the object's XML with status DELETED; the object and its children are gone (index too)."""
    answer = completed_build(conductor)
    build_id = answer.find("build").get("id")
    target_id = answer.find("build/target_images/target_image").get("id")
    pushed = conductor.xml(
        "POST",
        "/provider_images",
        f"<provider_image><build_id>{build_id}</build_id>"
        "<provider_account>mock-acc</provider_account></provider_image>",
        expect=201,
    )[0]
    stack.run_for(3)
    deleted = conductor.xml("DELETE", f"/provider_images/{pushed.get('id')}")
    assert deleted.findtext("status") == "DELETED" and deleted.get("id") == pushed.get("id")
    assert conductor.error("GET", f"/provider_images/{pushed.get('id')}", expect=404) == "ProviderImageNotFound"
    assert stack.index.get(pushed.get("id")) is None
    deleted = conductor.xml("DELETE", f"/target_images/{target_id}")
    assert deleted.findtext("status") == "DELETED" and deleted.findtext("object_type") == "target_image"
    deleted = conductor.xml("DELETE", f"/builds/{build_id}")
    assert deleted.findtext("status") == "DELETED" and deleted.findtext("image") == answer.get("id")
    deleted = conductor.xml("DELETE", f"/images/{answer.get('id')}")
    assert deleted.findtext("status") == "DELETED" and deleted.findtext("name") == "f14jeos"
    assert (
        len(conductor.xml("GET", "/images")) == 0
        and result_of(stack.store.list_builders()) == []
        and len(stack.index) == 0
    )
    stack.run_for(0.5)
    deletions = [event.body for event in stack.events if event.body["event"] == "DELETED"]
    assert {(body["id"], body["_type"]) for body in deletions} == {
        (pushed.get("id"), "provider_image"),
        (target_id, "target_image"),
    }
    pushed_events = [event for event in stack.events if event.body["id"] == pushed.get("id")]
    assert pushed_events[-1].routing_key == "provider_image.push.deleted"
    assert pushed_events[-1].body["old_status"] == "COMPLETED" and pushed_events[-1].body["new_status"] == "DELETED"
    assert [event.body["sequence"] for event in pushed_events] == list(range(1, len(pushed_events) + 1))
    assert result_of(stack.store.count_pending_events()) == 0


def test_deleting_a_running_build_cancels_it_first(conductor, stack):
    """A build still running is stopped (FAILED, cancelled), then deleted with its files; its events say both."""
    answer = new_image(conductor)
    target_id = answer.find("build/target_images/target_image").get("id")
    stack.run_for(0.2)
    assert not stack.index.get(target_id).status.is_final
    conductor.xml("DELETE", f"/images/{answer.get('id')}")
    assert stack.index.get(target_id) is None
    assert not os.path.exists(os.path.join(stack.config.state_dir, "builders", target_id))
    stack.run_for(0.5)
    last_two = [event.body for event in stack.events if event.body["id"] == target_id][-2:]
    assert [(body["event"], body["new_status"]) for body in last_two] == [("FAILURE", "FAILED"), ("DELETED", "DELETED")]


def test_provider_accounts_never_show_credentials(conductor):
    """name, provider and provider type; nothing of the credentials."""
    accounts = conductor.xml("GET", "/provider_accounts")
    (account,) = accounts
    assert [child.tag for child in account] == ["name", "provider", "provider_type"]
    assert account.get("id") == "mock-acc" and account.get("href") == f"{BASE}{API}/provider_accounts/mock-acc"
    assert conductor.xml("GET", "/provider_accounts/mock-acc").findtext("provider_type") == "mock"
    assert conductor.error("GET", "/provider_accounts/nope", expect=404) == "ProviderAccountNotFound"


def test_every_error_code_a_request_can_cause(conductor, stack, monkeypatch):
    """Each spec code that can arise, from the request that should cause it, with its status."""
    answer = completed_build(conductor)
    build_id = answer.find("build").get("id")
    push = "<provider_image><build_id>{}</build_id><provider_account>{}</provider_account></provider_image>"
    e = conductor.error
    assert e("GET", "/images/nope", expect=404) == "ImageNotFound"
    assert e("GET", "/builds/nope", expect=404) == "BuildNotFound"
    assert e("GET", "/target_images/nope", expect=404) == "TargetImageNotFound"
    assert e("GET", "/provider_images/nope", expect=404) == "ProviderImageNotFound"
    assert e("DELETE", "/images/nope", expect=404) == "ImageNotFound"
    assert e("DELETE", "/builds/nope", expect=404) == "BuildNotFound"
    assert e("DELETE", "/target_images/nope", expect=404) == "TargetImageNotFound"
    assert e("DELETE", "/provider_images/nope", expect=404) == "ProviderImageNotFound"
    assert e("POST", "/images", "<image><targets>nowhere</targets><tdl>x</tdl></image>", expect=404) == "TargetNotFound"
    assert e("POST", "/images", "<image><targets>mock</targets></image>") == "InsufficientParametersSupplied"
    assert e("POST", "/images", "") == "InsufficientParametersSupplied"
    assert (
        e("POST", "/images", "<image><targets>mock</targets><tdl>&lt;nope/&gt;</tdl></image>")
        == "ParameterDataIncorrect"
    )
    assert e("POST", "/images", "<image><targets>") == "ParameterDataIncorrect"
    assert e("POST", "/images", "<other/>") == "ParameterDataIncorrect"
    assert (
        e("POST", "/provider_images", "<provider_image><provider_account>mock-acc</provider_account></provider_image>")
        == "InsufficientParametersSupplied"
    )
    assert (
        e("POST", "/provider_images", f"<provider_image><build_id>{build_id}</build_id></provider_image>")
        == "InsufficientParametersSupplied"
    )
    assert (
        e("POST", "/provider_images", push.format(build_id, "mock-acc,nope"), expect=404) == "ProviderAccountNotFound"
    )
    assert e("POST", "/provider_images", push.format("nope", "mock-acc"), expect=404) == "BuildNotFound"
    assert (
        e(
            "POST",
            "/provider_images",
            "<provider_image><image_id>nope</image_id><provider_account>mock-acc</provider_account></provider_image>",
            expect=404,
        )
        == "ImageNotFound"
    )
    assert (
        e(
            "POST",
            "/provider_images",
            "<provider_image><target_image_id>nope</target_image_id><provider_account>"
            "mock-acc</provider_account></provider_image>",
            expect=404,
        )
        == "TargetImageNotFound"
    )
    assert (
        e(
            "POST",
            "/provider_images",
            f"<provider_image><build_id>{build_id}</build_id><image_id>x</image_id>"
            "<provider_account>mock-acc</provider_account></provider_image>",
        )
        == "ParameterDataIncorrect"
    )
    running = new_image(conductor).find("build").get("id")
    assert e("POST", "/provider_images", push.format(running, "mock-acc")) == "ParameterDataIncorrect"
    stack.run_for(3)

    monkeypatch.setattr(
        stack.dispatcher, "start_push_with_credentials", lambda *args: fail(RuntimeError("the store is gone"))
    )
    assert e("POST", "/provider_images", push.format(build_id, "mock-acc"), expect=500) == "PushError"
    monkeypatch.undo()

    conductor.xml("POST", "/provider_images", push.format(build_id, "mock-acc"), expect=201)
    stack.run_for(3)
    monkeypatch.setattr(MockProvider, "delete", lambda *args: fail(RuntimeError("the cloud says no")))
    target_id = answer.find("build/target_images/target_image").get("id")
    pushed_id = [b.id for b in result_of(stack.store.list_builders()) if b.operation == Operation.PUSH][0]
    assert e("DELETE", f"/provider_images/{pushed_id}", expect=500) == "ProviderImageDeleteFailure"
    assert e("DELETE", f"/target_images/{target_id}", expect=500) == "TargetImageDeleteFailure"
    assert e("DELETE", f"/builds/{build_id}", expect=500) == "BuildDeleteFailure"
    assert e("DELETE", f"/images/{answer.get('id')}", expect=500) == "ImageDeleteFailure"
    assert stack.index.get(pushed_id) is not None, "a refused delete removes nothing"


def test_http_level_errors_are_xml(conductor):
    """401 with WWW-Authenticate: Basic, 404 for unknown paths, 405 with Allow, 406, 415: all <error> documents."""
    response, _ = conductor.request("GET", "/images", auth=basic(password="wrong"))
    assert response.code == 401
    assert response.headers.getRawHeaders("www-authenticate") == ['Basic realm="imagefactory"']
    assert conductor.error("GET", "/images", expect=401, auth=basic(password="wrong")) == "Unauthorized"
    assert conductor.error("GET", "/nothing/here", expect=404) == "NotFound"
    response, _ = conductor.request("PUT", "/images")
    assert response.code == 405 and "POST" in response.headers.getRawHeaders("allow")[0]
    assert conductor.error("PUT", "/images", expect=405) == "MethodNotAllowed"
    assert conductor.error("GET", "/images", expect=406, headers={"Accept": ["application/json"]}) == "NotAcceptable"
    assert (
        conductor.error(
            "POST",
            "/images",
            "targets=mock",
            expect=415,
            headers={"Content-Type": ["application/x-www-form-urlencoded"]},
        )
        == "UnsupportedMediaType"
    )


def test_openapi_document_is_served_as_json(conductor):
    """GET /conductor/api/openapi.json answers the document (Accept: application/json allowed here)."""
    response, content = conductor.request("GET", "/openapi.json", headers={"Accept": ["application/json"]})
    assert response.code == 200 and content.startswith(b"{")


# -- EC2 delete (fake cloud) -------------------------------------------------------


class FakeEc2:
    """Records DeregisterImage/DeleteSnapshot calls; answers each with the next scripted error, if any."""

    def __init__(self, *errors: Exception | None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self._errors = list(errors)

    def _answer(self, name: str, kwargs: dict) -> dict:
        self.calls.append((name, kwargs))
        error = self._errors.pop(0) if self._errors else None
        if error is not None:
            raise error
        return {}

    def deregister_image(self, **kwargs: Any) -> dict:
        return self._answer("DeregisterImage", kwargs)

    def delete_snapshot(self, **kwargs: Any) -> dict:
        return self._answer("DeleteSnapshot", kwargs)


def ec2_provider(cloud: FakeEc2, clock: Any):
    from imgfac_twisted.config import Config
    from imgfac_twisted.providers.ec2 import EC2Provider
    from imgfac_twisted.registry import PluginEnvironment

    environment = PluginEnvironment(Config(provider_dir="/nonexistent"), clock, InlineDoor())
    return EC2Provider(environment, client_factory=lambda *args: (cloud, cloud))


EC2_CREDENTIALS = Credentials("123456789012", {"access_key": "AKIAX", "secret_access_key": "SECRETVALUE"})


def client_error(code: str, status: int = 400) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


def test_ec2_delete_deregisters_the_ami_then_deletes_its_snapshot():
    """Both calls, in that order, with the ids of the push."""
    cloud = FakeEc2()
    result_of(
        ec2_provider(cloud, FakeReactor()).delete("ec2-us-east-1", "ami-1", {"snapshot_id": "snap-1"}, EC2_CREDENTIALS)
    )
    assert cloud.calls == [("DeregisterImage", {"ImageId": "ami-1"}), ("DeleteSnapshot", {"SnapshotId": "snap-1"})]


def test_ec2_delete_of_what_is_already_gone_succeeds():
    """InvalidAMIID.NotFound and InvalidSnapshot.NotFound mean done (a repeated delete)."""
    cloud = FakeEc2(client_error("InvalidAMIID.NotFound"), client_error("InvalidSnapshot.NotFound"))
    result_of(
        ec2_provider(cloud, FakeReactor()).delete("ec2-us-east-1", "ami-1", {"snapshot_id": "snap-1"}, EC2_CREDENTIALS)
    )
    assert len(cloud.calls) == 2


def test_ec2_delete_retries_throttling_and_fails_on_a_refusal_without_the_secret():
    """Throttling is retried after a pause; an AuthFailure fails at once, naming the call, never the secret."""
    from imgfac_twisted.providers.ec2_calls import Ec2Error

    clock = FakeReactor()
    cloud = FakeEc2(client_error("RequestLimitExceeded", 503), None, client_error("AuthFailure", 401))
    deleting = ec2_provider(cloud, clock).delete("ec2-us-east-1", "ami-1", {"snapshot_id": "snap-1"}, EC2_CREDENTIALS)
    assert len(cloud.calls) == 1
    clock.advance(30)
    with pytest.raises(Ec2Error) as refused:
        result_of(deleting)
    assert [name for name, _ in cloud.calls] == ["DeregisterImage", "DeregisterImage", "DeleteSnapshot"]
    assert "DeleteSnapshot" in refused.value.message and "AuthFailure" in refused.value.message
    assert "SECRETVALUE" not in refused.value.message


def test_ec2_delete_without_credentials_says_so():
    """No configured account holds the push's credentials: a clear error, no call made."""
    from imgfac_twisted.providers.ec2_calls import Ec2Error

    cloud = FakeEc2()
    with pytest.raises(Ec2Error, match="no provider account of this daemon holds the credentials"):
        result_of(ec2_provider(cloud, FakeReactor()).delete("ec2-us-east-1", "ami-1", {}, None))
    assert cloud.calls == []
