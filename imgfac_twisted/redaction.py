"""Keeping secrets out of logs, messages and answers: one place that hides them.

- :func:`redact_url`: a URL with the password of its user info hidden;
- :func:`scrub`: a text with every known secret hidden.

Both leave ``***`` where the secret was, so a reader sees that something
was there.
"""

from __future__ import annotations

from collections.abc import Iterable

#: What stands where a secret was.
REDACTED = "***"


def redact_url(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***`` (anything else unchanged)."""
    scheme, separator, rest = url.partition("://")
    userinfo, at, location = rest.rpartition("@")
    if not separator or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:{REDACTED}@{location}"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***``, the longest first (so no part of one is left)."""
    for secret in sorted({secret for secret in secrets if secret}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
