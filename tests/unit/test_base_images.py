"""One base image per build, shared by its targets; progress and cancellation."""

import os

import pytest
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import Clock

from imgfac_twisted.errors import ImageFactoryError
from imgfac_twisted.jobs.base_images import BaseImages, Follower, NoInstaller
from imgfac_twisted.jobs.logs import BuilderLogs
from imgfac_twisted.template import parse_template
from imgfac_twisted.testing import SPEC_TEMPLATE, InlineDoor, result_of

MOCK_OS = SPEC_TEMPLATE.replace("<name>Fedora</name>", "<name>Mock</name>")


class SlowOS:
    """An OS plug-in whose installs finish when the test says so."""

    name = "Slow"
    boot_tested = False

    def __init__(self):
        self.installs = []

    def handles(self, template):
        return template.os_name == "Mock"

    def install(self, job):
        done = Deferred()
        self.installs.append((job, done))
        return done


@pytest.fixture
def setup(tmp_path):
    system = SlowOS()
    logs = BuilderLogs(str(tmp_path), InlineDoor(), Clock())
    return (
        system,
        BaseImages(Clock(), {"slow": system}, str(tmp_path), logs, install_slots=1, save_manifest=no_manifests),
        logs,
    )


def follow(progress):
    """A follower of an install that passes its progress to ``progress`` and ignores its stages."""
    return Follower(progress=progress, stage=lambda stage: None)


def no_manifests(build_id, packages):
    """Where a test's installs put their package lists: nowhere."""
    return succeed(None)


def finish(job, done):
    with open(job.image_path, "wb") as image:
        image.write(b"disk")
    job.record_manifest([])
    done.callback(None)


def test_targets_of_a_build_share_one_install(setup):
    """Two targets of one build wait for one install, both get its image, both see its progress and log."""
    system, images, logs = setup
    template = parse_template(MOCK_OS)
    seen = {"a": [], "b": []}
    first = images.wait_for("build1", template, "a", follow(seen["a"].append))
    second = images.wait_for("build1", template, "b", follow(seen["b"].append))
    assert len(system.installs) == 1
    job, done = system.installs[0]
    job.progress(40)
    job.log("half way")
    finish(job, done)
    assert result_of(first) == result_of(second) == job.image_path.removesuffix(".partial")
    assert os.path.exists(result_of(first)) and not os.path.exists(job.image_path)
    assert seen == {"a": [40], "b": [40]}
    assert b"half way" in result_of(logs.read("a")) and b"half way" in result_of(logs.read("b"))
    late = images.wait_for("build1", template, "c", follow(lambda percent: None))
    assert result_of(late) == result_of(first), "a finished base image is handed out again"


class EagerOS(SlowOS):
    """An OS plug-in that logs a line the moment its install starts."""

    def install(self, job):
        job.log("downloading the installer")
        return super().install(job)


def test_the_first_builder_sees_the_install_s_first_line(tmp_path):
    """The install starts only once its first builder listens: a line logged at once is not lost."""
    logs = BuilderLogs(str(tmp_path), InlineDoor(), Clock())
    images = BaseImages(Clock(), {"eager": EagerOS()}, str(tmp_path), logs, install_slots=1, save_manifest=no_manifests)
    images.wait_for("build1", parse_template(MOCK_OS), "a", follow(lambda percent: None))
    assert b"downloading the installer" in result_of(logs.read("a"))


def test_installs_beyond_the_limit_wait(setup):
    """With one install slot, a second build's install starts when the first ends."""
    system, images, _ = setup
    template = parse_template(MOCK_OS)
    images.wait_for("build1", template, "a", follow(lambda p: None))
    images.wait_for("build2", template, "b", follow(lambda p: None))
    assert len(system.installs) == 1
    finish(*system.installs[0])
    assert len(system.installs) == 2


def test_install_is_cancelled_when_nobody_waits(setup):
    """Cancelling every waiter cancels the install; the partial image is removed."""
    system, images, _ = setup
    template = parse_template(MOCK_OS)
    waiter = images.wait_for("build1", template, "a", follow(lambda p: None))
    job, done = system.installs[0]
    with open(job.image_path, "wb") as image:
        image.write(b"half")
    waiter.cancel()
    with pytest.raises(CancelledError):
        result_of(waiter)
    assert done.called, "the install was cancelled"
    assert not os.path.exists(job.image_path)


def test_unknown_operating_system(setup):
    """A template whose OS no plug-in installs fails, naming the OS and the installers there are."""
    _, images, _ = setup
    waiter = images.wait_for("build1", parse_template(SPEC_TEMPLATE), "a", follow(lambda p: None))
    with pytest.raises(NoInstaller, match="'Fedora'.*Slow"):
        result_of(waiter)


def test_failed_install_fails_every_waiter(setup):
    """An install that fails fails all its waiters with its reason."""
    system, images, _ = setup
    template = parse_template(MOCK_OS)
    waiters = [images.wait_for("build1", template, name, follow(lambda p: None)) for name in "ab"]
    system.installs[0][1].errback(ImageFactoryError("disk full"))
    for waiter in waiters:
        with pytest.raises(ImageFactoryError, match="disk full"):
            result_of(waiter)
    late = images.wait_for("build1", template, "c", follow(lambda p: None))
    with pytest.raises(ImageFactoryError, match="disk full"):
        result_of(late)
    assert len(system.installs) == 1, "a failed install is not tried again for the same build"


def test_wait_for_slot_fires_once_the_install_holds_a_local_session(setup):
    """With one slot, build2's builders wait (PENDING) until build1's install is done; then build2's starts."""
    system, images, _ = setup
    template = parse_template(MOCK_OS)
    first = images.wait_for_slot("build1", template, "a", follow(lambda p: None))
    assert first.called, "a free slot: at once"
    second = images.wait_for_slot("build2", template, "b", follow(lambda p: None))
    assert not second.called and len(system.installs) == 1
    finish(*system.installs[0])
    assert second.called and len(system.installs) == 2


def test_wait_for_slot_fires_when_the_install_fails_before_a_slot(setup):
    """No installer for the OS: the slot wait ends at once, and waiting for the image then says why."""
    _, images, _ = setup
    template = parse_template(SPEC_TEMPLATE)
    assert images.wait_for_slot("build1", template, "a", follow(lambda p: None)).called
    with pytest.raises(NoInstaller):
        result_of(images.wait_for("build1", template, "a", follow(lambda p: None)))


def test_cancelled_slot_wait_cancels_an_install_nobody_waits_for(setup):
    """The only builder of build2 is cancelled while waiting for a slot: build2's install never runs."""
    system, images, _ = setup
    template = parse_template(MOCK_OS)
    images.wait_for("build1", template, "a", follow(lambda p: None))
    waiting = images.wait_for_slot("build2", template, "b", follow(lambda p: None))
    waiting.cancel()
    with pytest.raises(CancelledError):
        result_of(waiting)
    finish(*system.installs[0])
    assert len(system.installs) == 1, "build2's install was cancelled before it got a slot"


def test_wound_down_waits_for_an_abandoned_install_to_end(setup):
    """The last builder leaves: wound_down fires only when the install itself has ended (its clean-up done)."""
    system, images, _ = setup
    template = parse_template(MOCK_OS)
    # An OS whose cancel takes a while, as a VM's does: the result is held until the clean-up is done.
    installing = Deferred(lambda cancelled: cancelled.pause())
    system.install = lambda job: installing
    waiter = images.wait_for("build1", template, "a", follow(lambda p: None))
    waiter.cancel()
    with pytest.raises(CancelledError):
        result_of(waiter)
    ended = images.wound_down("build1")
    assert not ended.called, "the install has not ended yet"
    installing.unpause()
    assert ended.called


def test_wound_down_is_at_once_when_others_still_wait(setup):
    """One of two builders leaves: the install goes on for the other, and the one leaving need not wait."""
    _, images, _ = setup
    template = parse_template(MOCK_OS)
    leaving = images.wait_for("build1", template, "a", follow(lambda p: None))
    images.wait_for("build1", template, "b", follow(lambda p: None))
    leaving.cancel()
    assert images.wound_down("build1").called
