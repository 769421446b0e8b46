"""The OpenAPI 3.1 document of the factory API (``imgfac_twisted/web/openapi.json``) stays true, read alone:
valid OpenAPI 3.1, exactly FactoryAPI's Klein routes, signed writes and open reads, unique operation ids and
links, closed schemas, the source and installed copies alike (the daemon against it:
tests/integration/test_openapi_daemon.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from imgfac_twisted.web.factory import FactoryAPI
from support.klein_routes import klein_routes
from support.openapi_document import operations, resolve

WRITE_METHODS = {"post", "put", "delete"}


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)


def test_document_matches_the_klein_routes(document: dict[str, Any]) -> None:
    """Every route is documented with its method and parameters, and nothing else is."""
    routes = klein_routes(FactoryAPI.app)
    documented: dict[tuple[str, str], set[str]] = {}
    for path, method, operation in operations(document):
        item = document["paths"][path]
        parameters = [resolve(document, p) for p in item.get("parameters", []) + operation.get("parameters", [])]
        documented[(path, method)] = {p["name"] for p in parameters if p["in"] == "path"}
        assert set(re.findall(r"{([^}]+)}", path)) == documented[(path, method)], (path, method)
    missing = sorted(set(routes) - set(documented))
    extra = sorted(set(documented) - set(routes))
    assert not missing, f"routes not in openapi.json: {missing}"
    assert not extra, f"openapi.json documents operations the app does not have: {extra}"
    for key, arguments in routes.items():
        assert documented[key] == arguments, f"{key}: route arguments {arguments} != documented {documented[key]}"


def test_writes_are_signed_and_reads_are_open(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["oauth1"]["type"] == "http" and schemes["oauth1"]["scheme"] == "OAuth"
    for path, method, operation in operations(document):
        if method in WRITE_METHODS:
            assert operation["security"] == [{"oauth1": []}], (path, method)
            codes = set(operation["responses"])
            assert {"401", "500"} <= codes, (path, method)
            if "requestBody" in operation:
                assert {"400", "413", "415"} <= codes, (path, method)
                assert set(operation["requestBody"]["content"]) == {
                    "application/x-www-form-urlencoded",
                    "multipart/form-data",
                    "application/json",
                }, (path, method)
        else:
            assert operation.get("security") == [], (path, method)
            assert "401" not in operation["responses"], (path, method)


def test_operation_ids_are_unique_and_links_point_at_them(document: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids))
    by_id = {operation["operationId"]: (path, operation) for path, _, operation in operations(document)}
    for path, method, operation in operations(document):
        for response in operation["responses"].values():
            for name, link in resolve(document, response).get("links", {}).items():
                target_path, _ = by_id[link["operationId"]]
                assert set(link["parameters"]) == set(re.findall(r"{([^}]+)}", target_path)), (path, method, name)


def test_schemas_of_fixed_shapes_are_closed(document: dict[str, Any]) -> None:
    """Objects the daemon answers with have exactly their properties, all required but the provider's extras."""
    schemas = document["components"]["schemas"]
    # What a provider reports besides the identifier: only some providers have it.
    optional = {"PushBuilder": {"snapshot_id"}}
    for name in (
        "Version",
        "Error",
        "BuildBuilder",
        "PushBuilder",
        "BuilderStatus",
        "BuildersList",
        "ImageCreated",
        "ProviderImageCreated",
    ):
        schema = schemas[name]
        assert schema["additionalProperties"] is False, name
        assert set(schema["required"]) == set(schema["properties"]) - optional.get(name, set()), name
    assert schemas["Status"]["enum"] == ["NEW", "PENDING", "BUILDING", "PUSHING", "COMPLETED", "FAILED"]


def test_source_and_installed_documents_agree(document: dict[str, Any]) -> None:
    """The tests run against the installed package: make sure it is not a stale copy of the checkout's."""
    source = Path(__file__).resolve().parents[2] / "imgfac_twisted" / "web" / "openapi.json"
    if not source.exists():
        pytest.skip("not run from a checkout")
    assert json.loads(source.read_text(encoding="utf-8")) == document, (
        "imgfac_twisted/web/openapi.json differs from the installed one: reinstall the project"
    )
