"""The OpenAPI 3.1 document the daemon serves (``imgfac_twisted/web/openapi.json``) stays true.

* It is a valid OpenAPI 3.1 document (openapi-spec-validator).
* Its paths and methods are exactly FactoryAPI's Klein routes (HEAD aside, which
  twisted.web answers wherever GET is), with the same path parameters.
* Schemathesis generates requests from it (examples, coverage and fuzzing phases,
  valid and invalid data) against the real ``twistd imagefactory`` over TLS and
  checks every answer against it: no 5xx, only documented status codes, content
  types, headers and body schemas, and every error the JSON error document. Once
  against a ``--no_oauth`` daemon (writes are accepted and really build), once
  against a daemon with OAuth, where every unsigned write must be the documented
  401; then stateful scenarios along the document's links, and real builds and
  pushes, whose documents random ids never reach.

The product bugs these tests found are fixed; each keeps a regression test at the end.
Run with ``pytest -s`` to see what schemathesis sent and what came back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from support.daemon import Daemon, DaemonPool, mock_config
from support.openapi_document import load_document

WRITE_METHODS = {"post", "put", "delete"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
#: Hypothesis examples per operation and generation mode in the fuzzing phase (the examples and
#: coverage phases add their own, bounded, cases), and stateful scenarios. The environment can ask
#: for more (e.g. OPENAPI_TEST_EXAMPLES=500 OPENAPI_TEST_SEED=$RANDOM to hunt for bugs).
MAX_EXAMPLES = int(os.environ.get("OPENAPI_TEST_EXAMPLES", "40"))
STATEFUL_EXAMPLES = max(MAX_EXAMPLES * 5 // 8, 1)
REQUEST_TIMEOUT = 10.0
#: A generated template may be an http(s) URL, which the daemon fetches: give up quickly.
FETCH_TIMEOUT = 1.0

F14 = (
    "<template><name>f14jeos</name><os><name>Fedora</name><version>14</version><arch>x86_64</arch>"
    "<install type='url'><url>http://download.fedoraproject.org/pub/fedora/linux/releases/14/Fedora/"
    "x86_64/os/</url></install><rootpw>p@55w0rd!</rootpw></os><description>Fedora 14</description>"
    "</template>"
)
TI = "/imagefactory/images/{image_id}/builds/{build_id}/target_images/{target_image_id}"
CREDENTIALS = (
    "<provider_credentials><mock_credentials><username>u</username><password>p</password>"
    "</mock_credentials></provider_credentials>"
)

# -- the document itself ------------------------------------------------------


# -- the live daemon --------------------------------------------------------------
#
# Schemathesis' lazy loader (``schemathesis.pytest.from_fixture``) does not work with pytest 9.2
# (it sets ``Function._nodeid``, which pytest no longer has), so the schema is loaded eagerly
# from the installed document, the one the daemon serves (test_served_document_is_the_packaged_one),
# and each generated case is sent to the daemon of the test's fixture.

#: Generation is deterministic (a fixed seed), so CI runs are repeatable.
SEED = int(os.environ.get("OPENAPI_TEST_SEED", "20120210"))
SCHEMATHESIS_CONFIG = {
    "seed": SEED,
    "request-timeout": REQUEST_TIMEOUT,
    "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
}
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    print_blob=True,
    derandomize=True,
)
STATEFUL_SETTINGS = settings(
    max_examples=STATEFUL_EXAMPLES,
    stateful_step_count=6,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    print_blob=True,
    derandomize=True,
)

schema = schemathesis.openapi.from_dict(load_document(), config=schemathesis.Config.from_dict(SCHEMATHESIS_CONFIG))


@pytest.fixture(scope="module")
def open_daemon(module_daemon_factory: DaemonPool) -> Daemon:
    """A TLS daemon that accepts unsigned writes, so generated writes really build (and push)."""
    return module_daemon_factory.make(
        mock_config(template_fetch_timeout=FETCH_TIMEOUT, mock_duration=0.2), name="open", extra_args=["--no_oauth"]
    )


@pytest.fixture(scope="module")
def oauth_daemon(module_daemon_factory: DaemonPool) -> Daemon:
    """A TLS daemon with OAuth on: unsigned writes must be refused with 401."""
    return module_daemon_factory.make(mock_config(template_fetch_timeout=FETCH_TIMEOUT), name="oauth")


class Tally:
    """What schemathesis sent and got, printed at the end of the module (``pytest -s`` shows it)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: dict[str, dict[int, int]] = {}
        self.seconds = 0.0

    def add(self, case: Any, code: int, elapsed: float) -> None:
        self.seconds += elapsed
        label = f"{case.operation.method.upper()} {case.operation.path}"
        if case.method.upper() != case.operation.method.upper():
            label = "(undocumented methods on documented paths)"
        counts = self.calls.setdefault(label, {})
        counts[code] = counts.get(code, 0) + 1

    def report(self) -> str:
        total = sum(sum(codes.values()) for codes in self.calls.values())
        lines = [
            f"schemathesis, {self.name}: {len(self.calls)} operations, {total} requests "
            f"({self.seconds:.1f} s waiting for answers)"
        ]
        for label, codes in sorted(self.calls.items()):
            lines.append(f"  {label}: " + ", ".join(f"{code}x{count}" for code, count in sorted(codes.items())))
        return "\n".join(lines)


@pytest.fixture(scope="module")
def open_tally() -> Iterator[Tally]:
    tally = Tally("--no_oauth daemon")
    yield tally
    print("\n" + tally.report())


@pytest.fixture(scope="module")
def stateful_tally() -> Iterator[Tally]:
    tally = Tally("--no_oauth daemon, stateful")
    yield tally
    print("\n" + tally.report())


@pytest.fixture(scope="module")
def oauth_tally() -> Iterator[Tally]:
    tally = Tally("OAuth daemon, unsigned")
    yield tally
    print("\n" + tally.report())


def _request_body(response: Any) -> bytes:
    body = response.request.body or b""
    return body.encode("utf-8") if isinstance(body, str) else body


def assert_error_document(response: Any) -> None:
    """Every error is the JSON error document whose code is the status (README), 401 and 405 with their headers."""
    code = response.status_code
    assert response.headers.get("content-type") == ["application/json"], (code, response.headers)
    assert_matches(load_document(), "Error", json.loads(response.content))
    assert json.loads(response.content)["code"] == code
    if code == 401:
        assert response.headers.get("www-authenticate") == ['OAuth realm="imagefactory"']
    if code == 405:
        assert response.headers.get("allow"), "405 without Allow"


def assert_matches(document: dict[str, Any], name: str, instance: Any) -> None:
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    )
    validator.validate(instance)


def check_answer(case: Any, response: Any, tally: Tally) -> None:
    """Count one answer and run every check on it."""
    tally.add(case, response.status_code, response.elapsed)
    case.validate_response(response, checks=CHECKS)
    if response.status_code >= 400:
        assert_error_document(response)


def call(case: Any, daemon: Daemon, **kwargs: Any) -> Any:
    return case.call(base_url=daemon.base_url, verify=daemon.verify, timeout=REQUEST_TIMEOUT, **kwargs)


@schema.parametrize()
@SETTINGS
def test_no_oauth_daemon_conforms(case: Any, open_daemon: Daemon, open_tally: Tally) -> None:
    """Generated requests (valid and not) get only documented answers from a --no_oauth daemon."""
    check_answer(case, call(case, open_daemon), open_tally)


@schema.parametrize()
@SETTINGS
def test_oauth_daemon_conforms_and_refuses_unsigned_writes(case: Any, oauth_daemon: Daemon, oauth_tally: Tally) -> None:
    """With OAuth on, reads conform as above and every unsigned write is the documented 401."""
    response = call(case, oauth_daemon)
    check_answer(case, response, oauth_tally)
    # The coverage phase also sends methods an operation does not have (405): not writes of the API.
    if case.method.lower() in WRITE_METHODS and case.method.lower() == case.operation.method.lower():
        assert response.status_code == 401, f"unsigned {case.method} {case.formatted_path} -> {response.status_code}"


def test_stateful_scenarios_follow_links(open_daemon: Daemon, stateful_tally: Tally) -> None:
    """Sequences along the document's links (build, then read, log, rebuild, push, cancel) conform.

    The links carry real ids, so this reaches the 200 answers (and their schemas) of the reads
    that random ids never find.
    """

    class Scenarios(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": open_daemon.base_url, "verify": open_daemon.verify, "timeout": REQUEST_TIMEOUT}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            # Only the checks above: the stateful ones (use_after_free...) take DELETE as a delete,
            # and a cancelled builder rightly stays readable.
            check_answer(case, response, stateful_tally)

    Scenarios.run(settings=STATEFUL_SETTINGS)
    answered = stateful_tally.calls
    assert 202 in answered.get("POST /imagefactory/images", {}), answered
    real_reads = [
        label for label, codes in answered.items() if label.startswith("GET ") and "{" in label and 200 in codes
    ]
    assert real_reads, f"no read of a real object answered 200: {answered}"


def test_real_builds_and_pushes_conform(open_daemon: Daemon) -> None:
    """Every read of real objects, pushes included (random ids never reach them), conforms.

    A completed build, a completed push (by each push URL), a failed push, a rebuild without a
    template, and the cancel refusals: each answer is checked against the document.
    """
    tally = Tally("--no_oauth daemon, real builds and pushes")
    reads = (
        "/imagefactory/builders",
        "/imagefactory/builders/{builder_id}",
        "/imagefactory/builders/{builder_id}/status",
        "/imagefactory/builders/{builder_id}/log",
    )

    def request(
        method: str, path: str, path_parameters: dict[str, str] | None = None, body: dict[str, str] | None = None
    ) -> Any:
        operation = schema[path][method]
        case = operation.Case(
            path_parameters=path_parameters or {},
            **({"body": body, "media_type": "application/json"} if body is not None else {}),
        )
        response = call(case, open_daemon)
        check_answer(case, response, tally)
        return response

    image = request("POST", "/imagefactory/images", body={"targets": "mock", "template": F14}).json()
    target_image_id = image["build"]["target_images"][0]["id"]
    ids = {"image_id": image["id"], "build_id": image["build"]["id"], "target_image_id": target_image_id}
    open_daemon.wait_final(f"/imagefactory/builders/{target_image_id}")
    rebuilt = request("PUT", "/imagefactory/images/{image_id}", {"image_id": image["id"]}, {"targets": "mock"})
    assert rebuilt.json()["id"] == image["id"]
    pushes = [
        request("POST", TI + "/provider_images", ids, {"provider": "mock", "credentials": CREDENTIALS}).json(),
        request(
            "POST", "/imagefactory/provider_images", body={**ids, "provider": "mock", "credentials": CREDENTIALS}
        ).json(),
        request(
            "POST",
            TI + "/provider_images",
            ids,
            {"provider": "mock", "credentials": CREDENTIALS.replace("<username>u<", "<username>FAIL<")},
        ).json(),
    ]
    finals = [open_daemon.wait_final(f"/imagefactory/builders/{push['id']}")["status"] for push in pushes]
    assert finals == ["COMPLETED", "COMPLETED", "FAILED"]
    assert request("DELETE", "/imagefactory/builders/{builder_id}", {"builder_id": pushes[0]["id"]}).status_code == 409
    for path in (TI, TI + "/status"):
        assert request("GET", path, ids).status_code == 200
    for push in pushes:
        for path in (TI + "/provider_images/{provider_image_id}", TI + "/provider_images/{provider_image_id}/status"):
            assert request("GET", path, {**ids, "provider_image_id": push["id"]}).status_code == 200
    for builder_id in [target_image_id] + [push["id"] for push in pushes]:
        for path in reads[1:]:
            assert request("GET", path, {"builder_id": builder_id}).status_code == 200
    listed = request("GET", reads[0]).json()["builders"]
    assert {"build", "push"} <= {builder["operation"] for builder in listed}
    print("\n" + tally.report())


def test_served_document_is_the_packaged_one(open_daemon: Daemon, document: dict[str, Any]) -> None:
    answer = open_daemon.get("/imagefactory/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json() == document


# -- regressions: product bugs schemathesis found (now fixed) ------------------------------------


def built(daemon: Daemon) -> dict[str, Any]:
    answer = daemon.post("/imagefactory/images", signed=False, json={"targets": "mock", "template": F14})
    assert answer.status_code == 202, answer.text
    return answer.json()


def test_bug_form_body_with_non_ascii_text(open_daemon: Daemon) -> None:
    """Form bodies with UTF-8 text are read as text (they once were a 500)."""
    template = F14.replace("Fedora 14", "Fédora 14")
    answer = open_daemon.post("/imagefactory/images", signed=False, data={"targets": "mock", "template": template})
    assert answer.status_code == 202, answer.text


def test_bug_malformed_multipart_body_gets_a_json_error(open_daemon: Daemon) -> None:
    """A multipart body that cannot be parsed is the API's JSON 400, not twisted.web's bare one."""
    answer = open_daemon.post(
        "/imagefactory/images", signed=False, data=b"targets=mock", headers={"Content-Type": "multipart/form-data"}
    )
    assert answer.status_code == 400
    assert answer.headers.get("Content-Type") == "application/json", answer.headers


def test_bug_log_offset_far_past_the_end(open_daemon: Daemon) -> None:
    """A log offset past anything a file can hold answers an empty log, not a 500."""
    builder_id = built(open_daemon)["build"]["target_images"][0]["id"]
    answer = open_daemon.get(f"/imagefactory/builders/{builder_id}/log", params={"offset": str(2**63)})
    assert answer.status_code in (200, 400), answer.text


@pytest.mark.parametrize(
    "path, body",
    [
        ("/imagefactory/images", b'{"targets": "mock", "template": "<template>\\ud800</template>"}'),
        (
            "/imagefactory/provider_images",
            b'{"image_id": "a", "build_id": "b", "target_image_id": "\\ud800", "provider": "mock", "credentials": "x"}',
        ),
    ],
)
def test_bug_json_string_with_lone_surrogate(open_daemon: Daemon, path: str, body: bytes) -> None:
    """JSON strings that are not valid Unicode are a 400, not a 500."""
    answer = open_daemon.post(path, signed=False, data=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text


def test_bug_put_with_multipart_body(open_daemon: Daemon) -> None:
    """PUT reads multipart bodies as POST does."""
    image_id = built(open_daemon)["id"]
    answer = open_daemon.put(f"/imagefactory/images/{image_id}", signed=False, files={"targets": (None, "mock")})
    assert answer.status_code == 202, answer.text
