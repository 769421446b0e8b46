"""The builder state machine's allowed transitions."""

import pytest

from imgfac_twisted.errors import InvalidTransition
from imgfac_twisted.model import Builder, BuilderChange, Operation, Status, check_transition


def a_builder(status: Status = Status.NEW, completed: int = 0) -> Builder:
    return Builder(
        id="b", operation=Operation.BUILD, status=status, completed=completed, image_id="i", build_id="d", target="mock"
    )


@pytest.mark.parametrize(
    "old,new",
    [
        (Status.NEW, Status.PENDING),
        (Status.PENDING, Status.BUILDING),
        (Status.PENDING, Status.PUSHING),
        (Status.BUILDING, Status.COMPLETED),
        (Status.PUSHING, Status.FAILED),
        (Status.NEW, Status.FAILED),
        (Status.BUILDING, Status.BUILDING),
        # Started again: its worker was lost.
        (Status.BUILDING, Status.PENDING),
        (Status.PUSHING, Status.PENDING),
    ],
)
def test_allowed_transitions(old, new):
    """The moves of a builder's normal life are allowed."""
    check_transition(old, new)


@pytest.mark.parametrize(
    "old,new",
    [
        (Status.COMPLETED, Status.BUILDING),
        (Status.FAILED, Status.COMPLETED),
        (Status.NEW, Status.COMPLETED),
        (Status.BUILDING, Status.NEW),
        (Status.PENDING, Status.NEW),
        (Status.COMPLETED, Status.COMPLETED),
        (Status.FAILED, Status.FAILED),
    ],
)
def test_forbidden_transitions(old, new):
    """A final status is never left, and no step is skipped or undone."""
    with pytest.raises(InvalidTransition):
        check_transition(old, new)


def test_completed_defaults_to_100_on_completion():
    """Moving to COMPLETED sets completed to 100; other moves keep it."""
    building = a_builder(Status.BUILDING, 40)
    assert building.moved(Status.COMPLETED, now=1.0).completed == 100
    assert building.moved(Status.FAILED, now=1.0).completed == 40


def test_completed_out_of_range_is_refused():
    """Progress outside 0..100 is a programming error, refused."""
    with pytest.raises(ValueError):
        a_builder(Status.BUILDING).moved(Status.BUILDING, 101, now=1.0)


def test_change_kinds():
    """Creation and status moves are STATUS, same-status moves PERCENTAGE, failures FAILURE."""
    new = a_builder()
    building = new.moved(Status.PENDING, now=1).moved(Status.BUILDING, now=2)
    assert BuilderChange(None, new).kind == "STATUS"
    assert BuilderChange(building, building.moved(Status.BUILDING, 50, now=3)).kind == "PERCENTAGE"
    assert BuilderChange(building, building.moved(Status.FAILED, now=3)).kind == "FAILURE"


def test_a_stage_writes_its_times_as_text_once() -> None:
    """A stage's ISO 8601 times are made once and kept (status polls show every builder's stages), and
    equality still compares only the stage's fields."""
    from imgfac_twisted.model import Stage, StageName, iso8601_utc

    stage = Stage(StageName.INSTALLING, 1_700_000_000.25, None)
    assert stage.started_text == iso8601_utc(1_700_000_000.25) == "2023-11-14T22:13:20.250Z"
    assert stage.ended_text is None
    assert stage.started_text is stage.started_text
    ended = stage.ended(1_700_000_100.0)
    assert ended.ended_text == "2023-11-14T22:15:00.000Z"
    assert stage == Stage(StageName.INSTALLING, 1_700_000_000.25, None)
