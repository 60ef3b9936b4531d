"""The MPPS lifecycle table (PS3.4 F.7) and what each status does to scheduled steps."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from radsync.domain.errors import InvalidValue, MissingValue
from radsync.domain.ids import Code
from radsync.domain.mpps import (
    MPPS_TRANSITIONS,
    MppsChange,
    MppsNotInProgress,
    MppsStatus,
    PerformedProcedureStep,
    PerformedSeries,
    new_mpps,
)
from radsync.domain.status import TRANSITIONS, StepEvent, StepStatus
from radsync.domain.study import RequestItem

S = MppsStatus


def in_progress(**kw: object) -> PerformedProcedureStep:
    return PerformedProcedureStep("1.2.3", S.IN_PROGRESS, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("current", "wanted"), list(itertools.product(S, S)))
def test_every_pair_of_the_table(current: MppsStatus, wanted: MppsStatus) -> None:
    mpps = PerformedProcedureStep("1.2.3", current)
    if current is S.IN_PROGRESS:
        assert mpps.after(MppsChange(status=wanted)).status is wanted
        assert MPPS_TRANSITIONS[(current, wanted)] is wanted
    else:
        with pytest.raises(MppsNotInProgress):
            mpps.after(MppsChange(status=wanted))


def test_an_n_set_without_status_keeps_in_progress_and_updates_attributes() -> None:
    end = dt.datetime(2024, 6, 12, 9, 0)
    series = (PerformedSeries("1.2.3.1", "Axial"),)
    mpps = in_progress(description="CT chest").after(MppsChange(end=end, performed_series=series))
    assert (mpps.status, mpps.end, mpps.performed_series, mpps.description) == (
        S.IN_PROGRESS,
        end,
        series,
        "CT chest",
    )


def test_n_create_must_be_in_progress_and_have_a_uid() -> None:
    assert new_mpps(in_progress()).status is S.IN_PROGRESS
    with pytest.raises(InvalidValue):
        new_mpps(PerformedProcedureStep("1.2.3", S.COMPLETED))
    with pytest.raises(MissingValue):
        new_mpps(PerformedProcedureStep("", S.IN_PROGRESS))


def test_completed_refuses_a_second_n_set() -> None:
    done = in_progress().after(MppsChange(status=S.COMPLETED))
    with pytest.raises(MppsNotInProgress) as raised:
        done.after(MppsChange(description="again"))
    assert raised.value.field == "mpps.status"


@pytest.mark.parametrize(
    ("status", "event", "step_after"),
    [
        (S.IN_PROGRESS, StepEvent.START, StepStatus.IN_PROGRESS),
        (S.COMPLETED, StepEvent.COMPLETE, StepStatus.COMPLETED),
        (S.DISCONTINUED, StepEvent.DISCONTINUE, StepStatus.DISCONTINUED),
    ],
)
def test_each_status_moves_a_started_step_through_the_step_table(
    status: MppsStatus, event: StepEvent, step_after: StepStatus
) -> None:
    mpps = PerformedProcedureStep("1.2.3", status)
    assert mpps.step_event() is event
    assert TRANSITIONS[(StepStatus.IN_PROGRESS, event)] is step_after


def test_wrong_worklist_entry_asks_for_the_step_back_on_the_worklist() -> None:
    reason = Code("110514", "DCM", "Incorrect worklist entry selected")
    mpps = PerformedProcedureStep("1.2.3", S.DISCONTINUED, discontinuation_reason=reason)
    assert mpps.step_event() is StepEvent.RESCHEDULE


def test_unscheduled_means_no_usable_scheduled_step_attributes() -> None:
    assert in_progress(scheduled_steps=(RequestItem(),)).is_unscheduled
    assert not in_progress(scheduled_steps=(RequestItem(scheduled_step_id="SPS1"),)).is_unscheduled
