"""The factory's REST API over one requests session, with the CLI's error messages."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from .. import __version__
from .settings import ENV_URL, EXIT_CLIENT, EXIT_SERVER, HTTP_TIMEOUT, PREFIX, PROG, TLS_HINT, CLIError, Settings


def _short_reason(error: BaseException) -> str:
    """The useful end of a requests/urllib3 exception's message."""
    text = str(error)
    reason = getattr(error.args[0], "reason", None) if error.args else None
    if reason is not None:
        text = str(reason)
    for pattern in (
        r"certificate verify failed: [^(]*",
        r"\[Errno -?\d+\] [^')\"]*",
        r"[Hh]ostname mismatch[^')\"]*",
        r"wrong version number",
        r"record layer failure",
    ):
        match = re.search(pattern, text)
        if match:
            return match.group(0).strip()
    text = re.sub(r"<[^>]* object at 0x[0-9a-f]+>: ", "", text)
    return text


def object_path(href: str) -> str:
    """The path of an href the API answered (the CLI keeps talking to its own --url)."""
    return urlsplit(href).path


def builder_path(builder_id: str) -> str:
    return f"{PREFIX}/builders/{quote(builder_id, safe='')}"


class Client:
    """The factory's REST API over one requests session."""

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        self.settings = settings
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = f"{PROG}/{__version__}"
        self.session.headers["Accept"] = "application/json"

    def url(self, path: str) -> str:
        return self.settings.url + path

    def request(self, method: str, path: str, *, signed: bool = False, **kwargs: Any) -> requests.Response:
        """Send one request; raise CLIError for a connection problem or an error answer."""
        auth = self.settings.oauth() if signed else None
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        # Per request: requests lets $REQUESTS_CA_BUNDLE override a session's verify.
        kwargs.setdefault("verify", self.settings.verify)
        try:
            response = self.session.request(method, self.url(path), auth=auth, **kwargs)
        except requests.exceptions.SSLError as error:
            reason = _short_reason(error)
            hint = TLS_HINT
            if "wrong version number" in reason or "record layer" in reason:
                hint = f"does the daemon run without TLS (--no_ssl)? then use an http:// URL; else {TLS_HINT}"
            raise CLIError(f"TLS connection to {self.settings.url} failed: {reason}", EXIT_SERVER, hint) from None
        except requests.exceptions.Timeout:
            raise CLIError(f"{self.settings.url} did not answer in time ({method} {path})", EXIT_SERVER) from None
        except requests.exceptions.ConnectionError as error:
            raise CLIError(
                f"cannot connect to {self.settings.url}: {_short_reason(error)}",
                EXIT_SERVER,
                f"is the daemon running? (--url or {ENV_URL} says where)",
            ) from None
        except requests.exceptions.RequestException as error:
            raise CLIError(f"request to {self.settings.url} failed: {_short_reason(error)}", EXIT_SERVER) from None
        if response.status_code >= 400:
            raise self._error(method, response, signed, auth is not None)
        if response.status_code >= 300:
            raise CLIError(f"{method} {path} answered {response.status_code} {response.reason}", EXIT_SERVER)
        return response

    def _error(self, method: str, response: requests.Response, signed: bool, had_auth: bool) -> CLIError:
        status = response.status_code
        message = None
        try:
            document = response.json()
            if isinstance(document, dict) and isinstance(document.get("message"), str):
                message = document["message"]
        except ValueError:
            pass
        if not message:
            message = f"{response.reason or 'error'} (the answer is not an Image Factory error document)"
        code = EXIT_CLIENT if status < 500 else EXIT_SERVER
        if status == 401:
            if had_auth:
                hint = (
                    "check the OAuth key and secret (" + self.settings.credentials_source + "): they must match "
                    'an entry of the daemon\'s "clients"; a stale timestamp means a wrong clock'
                )
            else:
                hint = (
                    "this write must be signed with OAuth and no key/secret is configured: "
                    + self.settings.credentials_hint()
                )
            return CLIError(f"OAuth authentication failed (401): {message}", code, hint)
        return CLIError(f"{message} ({status})", code)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise CLIError(
                f"{method} {path} answered {response.status_code} without JSON: is --url an Image Factory?", EXIT_SERVER
            ) from None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.json("GET", path, **kwargs)

    def write(self, method: str, path: str, data: dict[str, str] | None = None) -> Any:
        """A signed write (unsigned when no key/secret is configured)."""
        return self.json(method, path, signed=True, data=data)

    def log(self, builder_id: str, offset: int) -> tuple[bytes, str]:
        """Log bytes from ``offset`` on and the builder's status (``X-Builder-Status``)."""
        response = self.request(
            "GET", builder_path(builder_id) + "/log", params={"offset": str(offset)}, headers={"Accept": "text/plain"}
        )
        return response.content, response.headers.get("X-Builder-Status", "")
