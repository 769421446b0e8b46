"""The Conductor API's OpenAPI document (``imgfac_twisted/web/conductor/openapi.json``) stays true.

* It is a valid OpenAPI 3.1 document (openapi-spec-validator).
* Its paths and methods are exactly ConductorAPI's Klein routes, with the same path parameters.
* Every operation takes Basic auth, answers XML (the document itself aside) and documents the
  error answers it can give.
"""

from __future__ import annotations

import json
import re
from importlib.resources import files
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from imgfac_twisted.web.conductor.app import ConductorAPI
from support.klein_routes import klein_routes

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return json.loads((files("imgfac_twisted.web.conductor") / "openapi.json").read_text(encoding="utf-8"))


def operations(document: dict[str, Any]):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def test_document_is_valid_openapi_3_1(document):
    """openapi-spec-validator accepts it."""
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)


def test_document_matches_the_klein_routes(document):
    """Every route is documented with its method and path parameters, and nothing else is."""
    documented: dict[tuple[str, str], set[str]] = {}
    for path, method, operation in operations(document):
        parameters = document["paths"][path].get("parameters", []) + operation.get("parameters", [])
        documented[(path, method)] = {p["name"] for p in parameters if p["in"] == "path"}
        assert set(re.findall(r"{([^}]+)}", path)) == documented[(path, method)], (path, method)
    routes = klein_routes(ConductorAPI.app)
    assert sorted(set(routes) - set(documented)) == [], "routes missing from the document"
    assert sorted(set(documented) - set(routes)) == [], "documented operations the app does not have"
    for key, arguments in routes.items():
        assert documented[key] == arguments, key


def test_every_operation_needs_basic_auth_and_answers_xml(document):
    """Basic auth everywhere; XML answers; bodies XML with 400/415; every operation documents 401/406/500."""
    assert document["components"]["securitySchemes"]["basic"] == {"type": "http", "scheme": "basic"}
    for path, method, operation in operations(document):
        assert operation["security"] == [{"basic": []}], (path, method)
        codes = set(operation["responses"])
        assert {"401", "406", "500"} <= codes, (path, method)
        ok = next(code for code in codes if code.startswith("2"))
        content = operation["responses"][ok]["content"]
        assert set(content) == ({"application/json"} if path.endswith("openapi.json") else {"application/xml"})
        if "requestBody" in operation:
            assert set(operation["requestBody"]["content"]) == {"application/xml", "text/xml"}
            assert {"400", "404", "415"} <= codes, (path, method)


def test_error_codes_are_listed(document):
    """Every code the spec lists that can arise, and ours for HTTP-level errors, is in the Error schema."""
    codes = set(document["components"]["schemas"]["Error"]["properties"]["code"]["enum"])
    spec = {
        "BuildDeleteFailure",
        "BuildNotFound",
        "ImageDeleteFailure",
        "ImageNotFound",
        "InsufficientParametersSupplied",
        "ParameterDataIncorrect",
        "PushError",
        "ProviderAccountNotFound",
        "ProviderImageDeleteFailure",
        "ProviderImageNotFound",
        "TargetImageDeleteFailure",
        "TargetImageNotFound",
        "TargetNotFound",
    }
    assert spec <= codes
    assert {
        "Unauthorized",
        "NotFound",
        "MethodNotAllowed",
        "NotAcceptable",
        "RequestTooLarge",
        "UnsupportedMediaType",
        "InternalError",
    } <= codes
