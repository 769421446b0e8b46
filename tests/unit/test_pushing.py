"""PushSteps: what the ec2, openstack and vsphere pushes share around their own steps."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from imgfac_twisted.errors import ImageFactoryError
from imgfac_twisted.providers.pushing import PushSteps, message_of
from imgfac_twisted.testing import InlineDoor
from support.push_fakes import PushJob


class ProviderError(ImageFactoryError):
    pass


class Steps(PushSteps):
    """Steps that fail as told; a clean-up that leaves ``note``."""

    error_type = ProviderError

    def __init__(self, job: PushJob, note: str | None = None) -> None:
        super().__init__(job, InlineDoor(), Clock(), ("s3cret",))
        self.note = note
        self.cleaned: list[BaseException] = []

    async def fail_with(self, error: BaseException) -> str:
        await self._log("using s3cret")
        raise error

    async def _clean_up(self, cause: BaseException) -> str | None:
        self.cleaned.append(cause)
        return self.note


def result_of(deferred: Deferred[object]) -> object:
    results: list[object] = []
    deferred.addBoth(results.append)
    assert results, "the steps ended at once"
    return results[0]


def test_an_error_is_cleaned_up_and_gets_the_note_in_the_providers_error(tmp_path: Path) -> None:
    job = PushJob(str(tmp_path / "disk"), "t", "p")
    steps = Steps(job, note="image 7 could not be deleted")
    error = ProviderError("upload failed")
    result = result_of(ensureDeferred(steps._cleaning_up(steps.fail_with(error))))
    assert isinstance(result, Failure) and result.check(ProviderError)
    assert result.value.message == "upload failed; image 7 could not be deleted"
    assert steps.cleaned == [error]
    assert job.logs == ["using ***"], "the secret is scrubbed from the log"


def test_a_cancel_is_cleaned_up_and_goes_on_as_it_is(tmp_path: Path) -> None:
    steps = Steps(PushJob(str(tmp_path / "disk"), "t", "p"), note="left")
    result = result_of(ensureDeferred(steps._cleaning_up(steps.fail_with(CancelledError()))))
    assert isinstance(result, Failure) and result.check(CancelledError)
    assert len(steps.cleaned) == 1


def test_an_image_file_that_cannot_be_read_is_the_providers_error(tmp_path: Path) -> None:
    steps = Steps(PushJob(str(tmp_path / "gone"), "t", "p"))
    result = result_of(ensureDeferred(steps._image_size(str(tmp_path / "gone"))))
    assert isinstance(result, Failure) and result.check(ProviderError)
    assert result.value.message == "the image file of target image t cannot be read: No such file or directory"
    (tmp_path / "disk").write_bytes(b"x" * 17)
    assert result_of(ensureDeferred(steps._image_size(str(tmp_path / "disk")))) == 17


def test_progress_only_rises(tmp_path: Path) -> None:
    job = PushJob(str(tmp_path / "disk"), "t", "p")
    steps = Steps(job)
    for percent in (5, 3, 5, 40, 100):
        steps._report(percent)
    assert job.percents == [5, 40, 100]


def test_message_of_an_error() -> None:
    assert message_of(ProviderError("said")) == "said"
    assert message_of(OSError("plain")) == "plain"
    assert message_of(CancelledError()) == "CancelledError"
