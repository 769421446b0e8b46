"""Provider definition files: the JSON files in ``provider_dir``, one provider each, read once at start.

Each provider plug-in (ec2, openstack, vsphere) takes the files whose
``type`` is its own and leaves the others alone; each parses its own keys,
and this module does what they share: reading the folder, the size limit,
required, optional and unknown keys, URLs, CA files, duplicate names.  Every
mistake of every file is reported together in one ConfigError, each naming
its file, so the daemon does not start with a half-read folder.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from ..errors import ConfigError

__all__ = [
    "MAX_DEFINITION_BYTES",
    "ca_bundle_mistakes",
    "key_mistakes",
    "load_definitions",
    "name_mistakes",
    "read_definition",
    "url_mistakes",
]

MAX_DEFINITION_BYTES = 64 * 1024
#: Names other plug-ins own: the mock provider's, and the ec2 plug-in's built-in ``ec2-<region>``.
RESERVED_NAMES = frozenset({"mock"})
RESERVED_PREFIXES = ("ec2-",)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Definition(Protocol):
    """What every plug-in's parsed definition has."""

    @property
    def name(self) -> str: ...

    @property
    def source(self) -> str | None: ...


D = TypeVar("D", bound=Definition)


def load_definitions(
    provider_dir: str,
    parse: Callable[[Any, str], D | None],
    *,
    reserved: Callable[[str], bool] = lambda name: False,
    report_unparsable: bool = False,
) -> dict[str, D]:
    """The definitions ``parse(document, path)`` takes from ``*.json`` files in ``provider_dir``, by name.

    ``parse`` returns None for a file of another plug-in and raises ValueError saying what is
    wrong with one of its own.  A name ``reserved`` refuses (a built-in provider's) or defined
    twice is a mistake.  Files that are not JSON are reported by the plug-in that
    ``report_unparsable`` (one only, so that each is reported once).  No folder: no definitions.
    """
    problems: list[str] = []
    found: dict[str, D] = {}
    for path in _definition_files(provider_dir):
        try:
            definition = parse(read_definition(path, report_unparsable), path)
        except ValueError as error:
            problems.append(f"provider definition {path}: {error}")
            continue
        if definition is None:
            continue
        if reserved(definition.name):
            problems.append(f"provider definition {path}: name {definition.name!r} is a built-in provider's name")
        elif definition.name in found:
            earlier = found[definition.name].source
            problems.append(f"provider definition {path}: name {definition.name!r} is already defined by {earlier}")
        else:
            found[definition.name] = definition
    if problems:
        raise ConfigError("; ".join(problems))
    return found


def _definition_files(provider_dir: str) -> list[str]:
    try:
        names = sorted(os.listdir(provider_dir))
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise ConfigError(f"provider_dir {provider_dir} is not a folder") from None
    except OSError as error:
        raise ConfigError(f"provider_dir {provider_dir} cannot be read: {error.strerror}") from None
    paths = [os.path.join(provider_dir, name) for name in names if name.endswith(".json") and not name.startswith(".")]
    return [path for path in paths if os.path.isfile(path)]


def read_definition(path: str, report_unparsable: bool = True) -> Any:
    """The JSON document in ``path``; ValueError when it cannot be read, is too large or (when
    ``report_unparsable``) is not JSON, else None for a file that is not JSON."""
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_DEFINITION_BYTES + 1)
    except OSError as error:
        raise ValueError(f"cannot be read: {error.strerror}") from None
    if len(raw) > MAX_DEFINITION_BYTES:
        raise ValueError(f"is larger than {MAX_DEFINITION_BYTES} bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        if report_unparsable:
            raise ValueError("is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        if report_unparsable:
            raise ValueError(f"is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}") from None
    return None


def key_mistakes(document: dict[str, Any], required: Sequence[str], optional: Sequence[str]) -> list[str]:
    """Missing required keys, unknown keys (``_`` starts a comment) and values that are not strings."""
    mistakes = []
    known = (*required, *optional)
    missing = [key for key in required if key not in document]
    if missing:
        mistakes.append(f"lacks {', '.join(repr(key) for key in missing)}")
    unknown = sorted(key for key in document if key not in known and not key.startswith("_"))
    if unknown:
        mistakes.append(f"unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(known)})")
    mistakes += [f"{key!r} must be a string" for key in known if key in document and not isinstance(document[key], str)]
    return mistakes


def url_mistakes(document: dict[str, str], keys: Sequence[str]) -> list[str]:
    """What is wrong with the URLs under ``keys`` (http or https, a host, no credentials)."""
    mistakes = []
    for key in keys:
        if key in document:
            problem = _url_problem(document[key])
            if problem:
                # A URL with user info is not echoed: it may hold a password.
                shown = "" if "@" in document[key] else f" {document[key]!r}"
                mistakes.append(f"{key}{shown} {problem}")
    return mistakes


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises on a bad port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "names no host"
    if parts.username or parts.password:
        return "must not hold credentials (they go in the push request's credentials XML)"
    return None


def ca_bundle_mistakes(document: dict[str, str]) -> list[str]:
    """A ``ca_bundle`` that is not a file."""
    if "ca_bundle" in document and not os.path.isfile(document["ca_bundle"]):
        return [f"ca_bundle {document['ca_bundle']!r} is not a file"]
    return []


def name_mistakes(name: str, reserved: bool = True) -> list[str]:
    """What is wrong with a provider's ``name``: its form, and (with ``reserved``) another plug-in's name."""
    if not _NAME.match(name):
        return [f"name {name!r} must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"]
    if reserved and (name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES)):
        return [f"name {name!r} is a built-in provider's name (or prefix)"]
    return []
