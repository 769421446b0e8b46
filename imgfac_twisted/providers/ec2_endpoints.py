"""Where the EC2 provider pushes: the AWS regions, and EC2-compatible endpoints from files.

Every current commercial AWS region is a provider named ``ec2-<region>``
(``ec2-us-east-1``, ...).  Other EC2-compatible clouds (or a moto server in
tests) are defined by JSON files in the ``provider_dir`` folder, one provider
per file::

    {"name": "moto-east", "type": "ec2", "region": "us-east-1",
     "endpoint_url": "http://127.0.0.1:5000"}

Optional keys: ``ebs_endpoint_url`` (when the EBS direct API lives elsewhere
than EC2; default ``endpoint_url``), ``ca_bundle`` (a CA file to verify an
HTTPS endpoint with).  Keys starting with ``_`` are comments.  Files whose
``type`` is not ``ec2`` belong to other plug-ins and are left alone.  Every
mistake in every file is reported together, each naming its file, in one
ConfigError, so the daemon does not start with a half-read folder.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError

#: The commercial AWS regions (partition ``aws``), as of botocore 1.44.
AWS_REGIONS: tuple[str, ...] = (
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
)

AWS_PREFIX = "ec2-"
DEFINITION_TYPE = "ec2"
#: A definition file is a few hundred bytes; anything much bigger is a mistake.
MAX_DEFINITION_BYTES = 64 * 1024
#: Provider names other plug-ins own.
RESERVED_NAMES = frozenset({"mock"})

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_REQUIRED = ("name", "type", "region", "endpoint_url")
_OPTIONAL = ("ebs_endpoint_url", "ca_bundle")


@dataclass(frozen=True)
class Endpoint:
    """One EC2 provider: its name, region and (for non-AWS clouds) URLs."""

    name: str
    region: str
    #: None for AWS itself (boto3 knows the regional endpoints).
    endpoint_url: str | None = None
    ebs_endpoint_url: str | None = None
    #: A CA file for HTTPS verification; None uses the system's CAs.
    ca_bundle: str | None = None
    #: The file it came from (None for the AWS regions).
    source: str | None = None

    @property
    def is_aws(self) -> bool:
        return self.endpoint_url is None


def aws_endpoints() -> dict[str, Endpoint]:
    """``ec2-<region>`` for every AWS region."""
    return {AWS_PREFIX + region: Endpoint(name=AWS_PREFIX + region, region=region) for region in AWS_REGIONS}


def load_definitions(provider_dir: str) -> dict[str, Endpoint]:
    """The EC2 endpoints defined by ``*.json`` files in ``provider_dir`` (none if it does not exist).

    Raises ConfigError naming every bad file and what is wrong with it.
    """
    try:
        names = sorted(os.listdir(provider_dir))
    except FileNotFoundError:
        return {}
    except NotADirectoryError:
        raise ConfigError(f"provider_dir {provider_dir} is not a folder") from None
    except OSError as error:
        raise ConfigError(f"provider_dir {provider_dir} cannot be read: {error.strerror}") from None
    problems: list[str] = []
    found: dict[str, Endpoint] = {}
    builtin = aws_endpoints()
    for file_name in names:
        if not file_name.endswith(".json") or file_name.startswith("."):
            continue
        path = os.path.join(provider_dir, file_name)
        if not os.path.isfile(path):
            continue
        try:
            endpoint = parse_definition(_read(path), path)
        except ValueError as error:
            problems.append(f"provider definition {path}: {error}")
            continue
        if endpoint is None:
            continue
        if endpoint.name in builtin or endpoint.name in RESERVED_NAMES:
            problems.append(f"provider definition {path}: name {endpoint.name!r} is a built-in provider's name")
        elif endpoint.name in found:
            problems.append(
                f"provider definition {path}: name {endpoint.name!r} is already defined by "
                f"{found[endpoint.name].source}"
            )
        else:
            found[endpoint.name] = endpoint
    if problems:
        raise ConfigError("; ".join(problems))
    return found


def _read(path: str) -> Any:
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
        raise ValueError("is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}") from None


def parse_definition(document: Any, source: str | None = None) -> Endpoint | None:
    """The Endpoint a definition describes; None for another plug-in's type; ValueError if wrong."""
    if not isinstance(document, dict):
        raise ValueError("must be a JSON object")
    kind = document.get("type")
    if kind is None:
        raise ValueError('lacks "type" (give "ec2")')
    if not isinstance(kind, str):
        raise ValueError('"type" must be a string')
    if kind != DEFINITION_TYPE:
        return None
    mistakes = []
    missing = [key for key in _REQUIRED if key not in document]
    if missing:
        mistakes.append(f"lacks {', '.join(repr(key) for key in missing)}")
    unknown = sorted(key for key in document if key not in _REQUIRED + _OPTIONAL and not key.startswith("_"))
    if unknown:
        mistakes.append(f"unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(_REQUIRED + _OPTIONAL)})")
    for key in _REQUIRED + _OPTIONAL:
        if key in document and not isinstance(document[key], str):
            mistakes.append(f"{key!r} must be a string")
    if mistakes:
        raise ValueError("; ".join(mistakes))
    name, region = document["name"], document["region"]
    if not _NAME.match(name):
        mistakes.append(
            f"name {name!r} must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if not _REGION.match(region):
        mistakes.append(f"region {region!r} must be lower-case letters, digits and '-' (e.g. us-east-1)")
    for key in ("endpoint_url", "ebs_endpoint_url"):
        if key in document:
            problem = _url_problem(document[key])
            if problem:
                # A URL with user info is not echoed: it may hold a password.
                shown = "" if "@" in document[key] else f" {document[key]!r}"
                mistakes.append(f"{key}{shown} {problem}")
    if "ca_bundle" in document and not os.path.isfile(document["ca_bundle"]):
        mistakes.append(f"ca_bundle {document['ca_bundle']!r} is not a file")
    if mistakes:
        raise ValueError("; ".join(mistakes))
    return Endpoint(
        name=name,
        region=region,
        endpoint_url=document["endpoint_url"],
        ebs_endpoint_url=document.get("ebs_endpoint_url"),
        ca_bundle=document.get("ca_bundle"),
        source=source,
    )


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
