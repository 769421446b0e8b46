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

import re
from dataclasses import dataclass
from typing import Any

from . import definitions

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
#: Provider names other plug-ins own.
RESERVED_NAMES = frozenset({"mock"})

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

    Raises ConfigError naming every bad file and what is wrong with it; this plug-in also
    reports the files that are not JSON at all.
    """
    builtin = aws_endpoints()
    return definitions.load_definitions(
        provider_dir,
        parse_definition,
        reserved=lambda name: name in builtin or name in RESERVED_NAMES,
        report_unparsable=True,
    )


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
    mistakes = definitions.key_mistakes(document, _REQUIRED, _OPTIONAL)
    if mistakes:
        raise ValueError("; ".join(mistakes))
    name, region = document["name"], document["region"]
    # Its reserved names are checked with the built-in ones, when all files are read.
    mistakes += definitions.name_mistakes(name, reserved=False)
    if not _REGION.match(region):
        mistakes.append(f"region {region!r} must be lower-case letters, digits and '-' (e.g. us-east-1)")
    mistakes += definitions.url_mistakes(document, ("endpoint_url", "ebs_endpoint_url"))
    mistakes += definitions.ca_bundle_mistakes(document)
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
