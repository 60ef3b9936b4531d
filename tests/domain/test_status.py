"""The step lifecycle table, row by row, and the pairs it refuses."""

from __future__ import annotations

import pytest

from radsync.domain.errors import InvalidTransition
from radsync.domain.status import TRANSITIONS, StepEvent, StepStatus, transition


@pytest.mark.parametrize(("current", "event", "expected"), [(s, e, n) for (s, e), n in TRANSITIONS.items()])
def test_every_row_of_the_table_is_applied(current: StepStatus, event: StepEvent, expected: StepStatus) -> None:
    assert transition(current, event) is expected


REFUSED = [(s, e) for s in StepStatus for e in StepEvent if (s, e) not in TRANSITIONS]


@pytest.mark.parametrize(("current", "event"), REFUSED)
def test_pairs_outside_the_table_are_refused(current: StepStatus, event: StepEvent) -> None:
    with pytest.raises(InvalidTransition):
        transition(current, event)


def test_final_steps_cannot_be_rescheduled_or_started() -> None:
    for final in (StepStatus.COMPLETED, StepStatus.DISCONTINUED, StepStatus.CANCELED):
        assert final.is_final
        for event in (StepEvent.RESCHEDULE, StepEvent.START, StepEvent.ARRIVE):
            with pytest.raises(InvalidTransition):
                transition(final, event)


def test_only_scheduled_and_arrived_steps_are_on_the_worklist() -> None:
    assert {s for s in StepStatus if s.on_worklist} == {StepStatus.SCHEDULED, StepStatus.ARRIVED}


def test_cancel_after_start_discontinues_instead_of_erasing_the_acquisition() -> None:
    assert transition(StepStatus.IN_PROGRESS, StepEvent.CANCEL) is StepStatus.DISCONTINUED
