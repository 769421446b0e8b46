"""Schemathesis against the live Conductor API: generated requests (valid and not) get only documented answers.

The document is the installed ``imgfac_twisted/web/conductor/openapi.json``.
Every generated request carries the test user's Basic credentials; the
checks: no 5xx, only documented status codes and content types, and every
error is the ``<error><code/><message/></error>`` XML document (401 with
``WWW-Authenticate: Basic``, 405 with ``Allow``).  Without credentials every
operation must be the documented 401.
"""

from __future__ import annotations

import json
import os
from importlib.resources import files
from typing import Any

import bcrypt
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from lxml import etree
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance

from support.daemon import Daemon, DaemonPool, mock_config

USER, PASSWORD = "admin", "schemathesis-pass"
MAX_EXAMPLES = int(os.environ.get("OPENAPI_TEST_EXAMPLES", "25"))
SEED = int(os.environ.get("OPENAPI_TEST_SEED", "20130111"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance]
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    print_blob=True,
    derandomize=True,
)
MOCK_CREDENTIALS = (
    "<provider_credentials><mock_credentials><username>u</username><password>p</password>"
    "</mock_credentials></provider_credentials>"
)


def load_document() -> dict[str, Any]:
    return json.loads((files("imgfac_twisted.web.conductor") / "openapi.json").read_text(encoding="utf-8"))


schema = schemathesis.openapi.from_dict(
    load_document(),
    config=schemathesis.Config.from_dict(
        {"seed": SEED, "request-timeout": 20.0, "generation": {"max-examples": MAX_EXAMPLES, "database": "none"}}
    ),
)


@pytest.fixture(scope="module")
def conductor(module_daemon_factory: DaemonPool, tmp_path_factory: pytest.TempPathFactory) -> Daemon:
    folder = tmp_path_factory.mktemp("accounts")
    (folder / "mock-acc.xml").write_text(MOCK_CREDENTIALS)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    config = mock_config(
        conductor=True,
        conductor_users={USER: hashed},
        mock_duration=0.2,
        template_fetch_timeout=1.0,
        provider_accounts={"mock-acc": {"provider": "mock", "credentials": str(folder / "mock-acc.xml")}},
    )
    return module_daemon_factory.make(config, name="conductor-schemathesis")


def assert_error_document(response: Any) -> None:
    """An error answer is the XML error document; 401 and 405 carry their headers."""
    assert response.headers.get("content-type") == ["application/xml; charset=utf-8"], response.headers
    document = etree.fromstring(response.content)
    assert document.tag == "error" and [child.tag for child in document] == ["code", "message"]
    if response.status_code == 401:
        assert response.headers.get("www-authenticate") == ['Basic realm="imagefactory"']
    if response.status_code == 405:
        assert response.headers.get("allow")


def call(case: Any, daemon: Daemon, **kwargs: Any) -> Any:
    return case.call(base_url=daemon.base_url, verify=daemon.verify, timeout=20.0, **kwargs)


@schema.parametrize()
@SETTINGS
def test_conductor_api_conforms(case: Any, conductor: Daemon) -> None:
    """With credentials: no 5xx, documented codes and types, XML error documents."""
    response = call(case, conductor, auth=(USER, PASSWORD))
    case.validate_response(response, checks=CHECKS)
    if response.status_code >= 400:
        assert_error_document(response)


@schema.parametrize()
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
def test_without_credentials_everything_is_401(case: Any, conductor: Daemon) -> None:
    """Without credentials every request, reads included, is the documented 401."""
    response = call(case, conductor)
    if case.method.lower() == case.operation.method.lower() and "authorization" not in {
        name.lower() for name in (case.headers or {})
    }:
        assert response.status_code in (401, 413), (case.method, case.formatted_path, response.status_code)
        assert_error_document(response)
