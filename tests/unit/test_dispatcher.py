"""The dispatcher and the builder state machine, on fakes with a driven Clock."""

import os

import pytest
from twisted.internet.defer import ensureDeferred

from imgfac_twisted.errors import InvalidCredentials, InvalidRequest, InvalidTemplate
from imgfac_twisted.model import Status
from imgfac_twisted.testing import SPEC_TEMPLATE, Stack, result_of, template_named

MOCK_CREDENTIALS = (
    "<provider_credentials><mock_credentials><username>alice</username>"
    "<password>pw-SECRET-42</password></mock_credentials></provider_credentials>"
)


def start_build(stack, template=SPEC_TEMPLATE, targets="mock", image_id=None):
    return result_of(ensureDeferred(stack.dispatcher.start_build(template, targets, image_id)))


def status_of(stack, builder_id):
    return stack.index.get(builder_id).status


def test_mock_build_runs_through_every_status_to_completed(stack):
    """A mock build goes NEW, PENDING, BUILDING (progress rising), COMPLETED 100, with an image file."""
    started = start_build(stack)
    builder_id = started.target_images[0].id
    assert status_of(stack, builder_id) == Status.BUILDING
    stack.run_for(0.5)
    halfway = stack.index.get(builder_id)
    assert halfway.status == Status.BUILDING and 0 < halfway.completed < 100
    stack.run_for(1.0)
    done = stack.index.get(builder_id)
    assert (done.status, done.completed) == (Status.COMPLETED, 100)
    assert os.path.isfile(done.artifact_path)
    events = [e.body for e in stack.events if e.body["id"] == builder_id]
    assert [e["new_status"] for e in events[:3]] == ["NEW", "PENDING", "BUILDING"]
    assert events[0]["old_status"] is None and events[-1]["new_status"] == "COMPLETED"
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    percents = [e["completed"] for e in events if e["event"] == "PERCENTAGE"]
    assert percents == sorted(percents) and percents[-1] == 90
    assert result_of(stack.store.get_builder(builder_id)) == done
    assert result_of(stack.store.count_pending_events()) == 0, "delivered events leave the outbox"


def test_template_named_fail_fails_with_a_reason(stack):
    """The mock build of a template named FAIL ends FAILED, says why and leaves no image."""
    builder_id = start_build(stack, template_named("FAIL")).target_images[0].id
    stack.run_for(2)
    failed = stack.index.get(builder_id)
    assert failed.status == Status.FAILED
    assert "FAIL" in failed.status_detail
    assert failed.artifact_path is None
    assert stack.events[-1].body["event"] == "FAILURE"
    assert stack.events[-1].body["status_detail"] == failed.status_detail


def test_builds_beyond_the_limit_wait_pending(tmp_path):
    """With one slot, a second build waits PENDING until the first ends."""
    stack = Stack(str(tmp_path), max_concurrent_builds=1)
    first = start_build(stack).target_images[0].id
    second = start_build(stack).target_images[0].id
    assert (status_of(stack, first), status_of(stack, second)) == (Status.BUILDING, Status.PENDING)
    stack.run_for(1.1)
    assert (status_of(stack, first), status_of(stack, second)) == (Status.COMPLETED, Status.BUILDING)
    stack.run_for(1.1)
    assert status_of(stack, second) == Status.COMPLETED


def test_cancel_running_and_pending_builders(tmp_path):
    """Cancelled builders, running or waiting, end FAILED saying they were cancelled; a finished one cannot be."""
    stack = Stack(str(tmp_path), max_concurrent_builds=1)
    running = start_build(stack).target_images[0].id
    waiting = start_build(stack).target_images[0].id
    assert stack.dispatcher.cancel(waiting) and stack.dispatcher.cancel(running)
    for builder_id in (running, waiting):
        assert status_of(stack, builder_id) == Status.FAILED
        assert "cancel" in stack.index.get(builder_id).status_detail
    assert not stack.dispatcher.cancel(running)
    third = start_build(stack).target_images[0].id
    stack.run_for(1.1)
    assert status_of(stack, third) == Status.COMPLETED, "a cancelled build must give its slot back"


def test_stopping_fails_running_builders(stack):
    """Stopping the dispatcher records every running builder FAILED before it returns."""
    stack.dispatcher.startService()
    builder_id = start_build(stack).target_images[0].id
    result_of(stack.dispatcher.stopService())
    assert status_of(stack, builder_id) == Status.FAILED
    assert "stopped" in result_of(stack.store.get_builder(builder_id)).status_detail


def test_restart_fails_builders_left_unfinished(tmp_path):
    """Builders a previous daemon left BUILDING are FAILED at the next start, saying it restarted."""
    before = Stack(str(tmp_path))
    builder_id = start_build(before).target_images[0].id
    finished = start_build(before).target_images[0].id
    before.run_for(0.3)
    before.dispatcher.cancel(finished)
    before.close()  # as if killed: nothing more is written
    after = Stack(str(tmp_path))
    after.dispatcher.startService()
    recovered = after.index.get(builder_id)
    assert recovered.status == Status.FAILED and "restarted" in recovered.status_detail
    assert "cancel" in after.index.get(finished).status_detail


def test_unknown_target_names_the_known_ones(stack):
    """An unknown target is refused naming it and listing the known targets; nothing is recorded."""
    with pytest.raises(InvalidRequest, match=r"'nope'.*known targets are mock"):
        start_build(stack, targets="mock,nope")
    assert result_of(stack.store.list_builders()) == []


def test_repeated_targets_make_one_target_image(stack):
    """``mock,mock`` asks for one mock target image, not two."""
    assert len(start_build(stack, targets="mock, mock").target_images) == 1


def test_bad_template_is_refused(stack):
    """An invalid template is refused before anything is recorded."""
    with pytest.raises(InvalidTemplate):
        start_build(stack, template="<template><name>x</name></template>")
    assert result_of(stack.store.list_builders()) == []


def test_template_by_image_uuid_and_rebuild(stack):
    """A template given as an image's UUID reuses its template; a rebuild keeps the image and adds a build."""
    first = start_build(stack)
    again = start_build(stack, template=first.image.id)
    assert again.image.id != first.image.id and again.image.template_id == first.image.template_id
    rebuilt = start_build(stack, template=None, image_id=first.image.id)
    assert rebuilt.image.id == first.image.id and rebuilt.build.id != first.build.id
    with pytest.raises(InvalidRequest, match="no known image"):
        start_build(stack, template="00000000-0000-0000-0000-000000000000")
    with pytest.raises(InvalidRequest, match="URL"):
        start_build(stack, template="neither xml nor uuid")


def test_push_of_a_completed_target_image(stack):
    """A push runs PENDING, PUSHING, COMPLETED with an identifier; the password is not stored."""
    target_image = start_build(stack).target_images[0]
    stack.run_for(1.1)
    pushed = result_of(ensureDeferred(stack.dispatcher.start_push(target_image.id, "mock", MOCK_CREDENTIALS)))
    assert status_of(stack, pushed.id) == Status.PUSHING
    stack.run_for(1.1)
    builder = stack.index.get(pushed.id)
    assert builder.status == Status.COMPLETED and builder.identifier_on_provider.startswith("mock-")
    assert (builder.provider, builder.target_image_id, builder.provider_account_identifier) == (
        "mock",
        target_image.id,
        "alice",
    )
    with open(os.path.join(stack.config.state_dir, "imagefactory.sqlite"), "rb") as database:
        assert b"pw-SECRET-42" not in database.read()


def test_push_refusals(stack):
    """Pushes of unfinished target images, to unknown providers or with bad credentials are refused."""
    target_image = start_build(stack).target_images[0]
    with pytest.raises(InvalidRequest, match="COMPLETED"):
        result_of(ensureDeferred(stack.dispatcher.start_push(target_image.id, "mock", MOCK_CREDENTIALS)))
    stack.run_for(1.1)
    with pytest.raises(InvalidRequest, match="unknown provider 'nowhere': known providers are mock"):
        result_of(ensureDeferred(stack.dispatcher.start_push(target_image.id, "nowhere", MOCK_CREDENTIALS)))
    with pytest.raises(InvalidCredentials, match="password"):
        result_of(
            ensureDeferred(
                stack.dispatcher.start_push(
                    target_image.id,
                    "mock",
                    "<provider_credentials><mock_credentials><username>u</username></mock_credentials></provider_credentials>",
                )
            )
        )


def test_push_as_fail_user_fails(stack):
    """The mock provider fails pushes for the user name FAIL, with a reason."""
    target_image = start_build(stack).target_images[0]
    stack.run_for(1.1)
    credentials = MOCK_CREDENTIALS.replace("alice", "FAIL")
    pushed = result_of(ensureDeferred(stack.dispatcher.start_push(target_image.id, "mock", credentials)))
    stack.run_for(1.1)
    assert status_of(stack, pushed.id) == Status.FAILED
    assert "FAIL" in stack.index.get(pushed.id).status_detail


def test_push_of_a_target_the_provider_cannot_take(stack):
    """A provider that cannot take the target image's format refuses the push at once (400), recording nothing."""

    class RawOnly:
        def serves(self, name):
            return name == "rawcloud"

        def accepts_target(self, target):
            return target == "ec2"

    stack.dispatcher._providers["rawcloud"] = RawOnly()
    target_image = start_build(stack).target_images[0]
    stack.run_for(1.1)
    before = len(stack.index)
    with pytest.raises(InvalidRequest, match="cannot take 'mock' images"):
        result_of(ensureDeferred(stack.dispatcher.start_push(target_image.id, "rawcloud", MOCK_CREDENTIALS)))
    assert len(stack.index) == before


def test_unknown_provider_lists_the_names_clients_can_use(stack):
    """The 400 for an unknown provider names the usable providers, with the AWS regions summed up."""

    class Regions:
        def serves(self, name):
            return False

        def provider_names(self):
            return ["ec2-eu-west-1", "ec2-us-east-1", "moto-east"]

    stack.dispatcher._providers["ec2"] = Regions()
    target_image = start_build(stack).target_images[0]
    stack.run_for(1.1)
    with pytest.raises(InvalidRequest) as refused:
        result_of(ensureDeferred(stack.dispatcher.start_push(target_image.id, "nowhere", MOCK_CREDENTIALS)))
    assert "moto-east" in refused.value.message and "ec2-<region> (2 AWS regions" in refused.value.message
    assert "mock" in refused.value.message


def test_a_build_s_work_files_go_once_its_targets_end(stack, tmp_path):
    """When the last target of a build ends, the build's folder (base image, install files) is removed; logs stay."""
    started = start_build(stack, targets="mock")
    build_folder = tmp_path / "builds" / started.build.id
    build_folder.mkdir(parents=True)
    (build_folder / "base.raw").write_bytes(b"a base image")
    stack.run_for(0.5)
    assert build_folder.exists(), "still needed while a target is being made"
    stack.run_for(2)
    builder_id = started.target_images[0].id
    assert stack.index.get(builder_id).status == Status.COMPLETED
    assert not build_folder.exists()
    assert b"COMPLETED" in result_of(stack.logs.read(builder_id))
