"""The ``mock`` provider: pushes nowhere, in steps, and invents an identifier.

Credentials come in the original factory's form::

    <provider_credentials><mock_credentials>
      <username>u</username><password>p</password>
    </mock_credentials></provider_credentials>

The user name becomes the provider account identifier; the password is
checked to be present and then forgotten.  A user name ``FAIL`` makes the
push fail half-way, so failure paths can be tested end to end.
"""

from __future__ import annotations

import uuid

from twisted.internet.defer import Deferred, ensureDeferred, succeed

from ..errors import ImageFactoryError, InvalidCredentials
from ..mocking import MOCK_STEPS, advance_in_steps
from ..registry import PluginEnvironment
from ..xmlsafe import parse_xml
from . import MAX_CREDENTIALS_BYTES, Credentials, PushJob, PushResult

FAIL_USERNAME = "FAIL"


class MockPushFailed(ImageFactoryError):
    """The mock push for the user name FAIL."""


def credential_fields(xml: str, kind: str, names: tuple[str, ...], required: tuple[str, ...]) -> dict[str, str]:
    """The text of ``names`` under ``<provider_credentials><{kind}>``, checked.

    Raises InvalidCredentials naming what is missing; never echoes values.
    """
    root = parse_xml(xml, max_bytes=MAX_CREDENTIALS_BYTES, what="credentials", error=InvalidCredentials)
    if root.tag != "provider_credentials":
        raise InvalidCredentials(f"credentials must be a <provider_credentials> document, not <{root.tag}>")
    section = root.find(kind)
    if section is None:
        raise InvalidCredentials(f"credentials must hold a <{kind}> element for this provider")
    values = {}
    for name in names:
        text = (section.findtext(name) or "").strip()
        if text:
            values[name] = text
    missing = [name for name in required if name not in values]
    if missing:
        raise InvalidCredentials(f"<{kind}> lacks {', '.join(f'<{name}>' for name in missing)}")
    return values


class MockProvider:
    """A provider that takes mock credentials and pretends to push."""

    def __init__(self, environment: PluginEnvironment) -> None:
        self._duration = environment.config.mock_duration

    def serves(self, provider_name: str) -> bool:
        """Only the provider named ``mock``."""
        return provider_name == "mock"

    def provider_names(self) -> list[str]:
        """Only ``mock``."""
        return ["mock"]

    def location(self, provider_name: str) -> tuple[str, str]:
        """No URL: the mock provider is nowhere."""
        return "", provider_name

    def accepts_target(self, target: str) -> bool:
        """Any target: nothing is really uploaded."""
        return True

    def parse_credentials(self, xml: str) -> Credentials:
        """Mock credentials: user name (the account) and password (dropped after the check)."""
        fields = credential_fields(xml, "mock_credentials", ("username", "password"), ("username", "password"))
        return Credentials(account_identifier=fields["username"], secrets={"password": fields["password"]})

    def push(self, job: PushJob, credentials: Credentials) -> Deferred[PushResult]:
        """Pretend to push; fire with an invented identifier."""
        return ensureDeferred(self._push(job, credentials))

    async def _push(self, job: PushJob, credentials: Credentials) -> PushResult:
        failure = None
        if credentials.account_identifier == FAIL_USERNAME:
            failure = MockPushFailed(f"the mock provider fails pushes for user {FAIL_USERNAME} on purpose")
        path = await job.image_file()
        await job.log(
            f"mock push of {job.target_builder.artifact_path} (read from {path}) "
            f"for account {credentials.account_identifier}"
        )
        await advance_in_steps(job.reactor, self._duration, job.progress, MOCK_STEPS // 2, failure)
        identifier = f"mock-{uuid.uuid4()}"
        await job.log(f"pushed as {identifier}")
        return PushResult(identifier=identifier)

    def delete(
        self, provider_name: str, identifier: str, details: dict[str, str], credentials: Credentials | None
    ) -> Deferred[None]:
        """Nothing was uploaded, so nothing is to remove (no credentials needed)."""
        return succeed(None)
