"""The routes of a Klein app in OpenAPI's terms, to check an OpenAPI document names exactly them."""

from __future__ import annotations

import re

from klein import Klein


def klein_routes(app: Klein) -> dict[tuple[str, str], set[str]]:
    """(OpenAPI-style path, lower-case method) -> path parameter names, for every route of ``app``."""
    routes: dict[tuple[str, str], set[str]] = {}
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method in ("HEAD", "OPTIONS"):
                continue
            routes[(path, method.lower())] = set(rule.arguments)
    return routes
