"""The ``mock`` target: never installs anything, whatever the template's OS.

It advances in steps over ``mock_duration`` seconds and writes a small,
real image file into the builder's directory.  A template named ``FAIL``
makes it fail half-way, so failure paths can be tested end to end.
"""

from __future__ import annotations

import hashlib
import os

from twisted.internet.defer import Deferred, ensureDeferred

from ..errors import ImageFactoryError
from ..mocking import MOCK_STEPS, advance_in_steps
from ..registry import PluginEnvironment
from . import Artifact, BuildJob

FAIL_TEMPLATE_NAME = "FAIL"


class MockBuildFailed(ImageFactoryError):
    """The mock build of a template named FAIL."""


class MockTarget:
    """A target that makes a small deterministic file instead of a disk image."""

    name = "mock"
    #: Made without the build's base image: its builders never wait for an install.
    uses_base_image = False

    def __init__(self, environment: PluginEnvironment) -> None:
        self._duration = environment.config.mock_duration

    def build(self, job: BuildJob) -> Deferred[Artifact]:
        """Pretend to build, then write ``mock.img``; fire with its Artifact."""
        return ensureDeferred(self._build(job))

    async def _build(self, job: BuildJob) -> Artifact:
        failure = None
        if job.template.name == FAIL_TEMPLATE_NAME:
            failure = MockBuildFailed(f"the mock target fails templates named {FAIL_TEMPLATE_NAME} on purpose")
        await job.log(
            f"mock build of {job.template.name!r} ({job.template.os_name} {job.template.os_version} "
            f"{job.template.os_arch}): nothing is installed"
        )
        await advance_in_steps(job.reactor, self._duration, job.progress, MOCK_STEPS // 2, failure)
        path = write_mock_image(job.work_dir, job.template.xml)
        await job.log(f"wrote {path}")
        return await job.artifact(path)


def write_mock_image(work_dir: str, template_xml: str) -> str:
    """Write the mock image (a few hundred bytes, so writing it inline is harmless)."""
    path = os.path.join(work_dir, "mock.img")
    digest = hashlib.sha256(template_xml.encode("utf-8")).hexdigest()
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as stream:
        stream.write(f"imagefactory mock image\ntemplate-sha256: {digest}\n")
    # Renamed into place only when complete: a half-written file never
    # carries the final name.
    os.replace(partial, path)
    return path
