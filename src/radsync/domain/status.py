"""Procedure step status: the lifecycle as a table, checked against IHE SWF.b and PS3.4 Annex F.

One row per allowed (status, event) pair; anything else raises ``InvalidTransition``. Keeping it as data lets
the tests walk every row and the docs print it.
"""

from __future__ import annotations

from enum import Enum

from radsync.domain.errors import InvalidTransition


class StepStatus(Enum):
    """Scheduled Procedure Step status. ``value`` is the DICOM (0040,0020) term where DICOM has one."""

    SCHEDULED = "SCHEDULED"
    ARRIVED = "ARRIVED"
    ON_HOLD = "ON HOLD"
    IN_PROGRESS = "STARTED"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"
    CANCELED = "CANCELED"

    @property
    def is_final(self) -> bool:
        return self in FINAL

    @property
    def on_worklist(self) -> bool:
        """Whether a modality sees the step by default (PS3.4 K.6: only what is still to be done)."""
        return self in (StepStatus.SCHEDULED, StepStatus.ARRIVED)


FINAL = frozenset({StepStatus.COMPLETED, StepStatus.DISCONTINUED, StepStatus.CANCELED})


class StepEvent(Enum):
    """What can happen to a step, whoever reports it (RIS order control, MPPS, images, operator)."""

    RESCHEDULE = "reschedule"
    ARRIVE = "arrive"
    HOLD = "hold"
    START = "start"
    COMPLETE = "complete"
    DISCONTINUE = "discontinue"
    CANCEL = "cancel"


S, E = StepStatus, StepEvent

TRANSITIONS: dict[tuple[StepStatus, StepEvent], StepStatus] = {
    (S.SCHEDULED, E.RESCHEDULE): S.SCHEDULED,
    (S.ARRIVED, E.RESCHEDULE): S.SCHEDULED,
    (S.ON_HOLD, E.RESCHEDULE): S.SCHEDULED,
    (S.SCHEDULED, E.ARRIVE): S.ARRIVED,
    (S.ARRIVED, E.ARRIVE): S.ARRIVED,
    (S.SCHEDULED, E.HOLD): S.ON_HOLD,
    (S.ARRIVED, E.HOLD): S.ON_HOLD,
    (S.ON_HOLD, E.HOLD): S.ON_HOLD,
    (S.SCHEDULED, E.START): S.IN_PROGRESS,
    (S.ARRIVED, E.START): S.IN_PROGRESS,
    (S.ON_HOLD, E.START): S.IN_PROGRESS,
    (S.IN_PROGRESS, E.START): S.IN_PROGRESS,
    (S.SCHEDULED, E.COMPLETE): S.COMPLETED,
    (S.ARRIVED, E.COMPLETE): S.COMPLETED,
    (S.IN_PROGRESS, E.COMPLETE): S.COMPLETED,
    (S.COMPLETED, E.COMPLETE): S.COMPLETED,
    (S.SCHEDULED, E.DISCONTINUE): S.DISCONTINUED,
    (S.ARRIVED, E.DISCONTINUE): S.DISCONTINUED,
    (S.ON_HOLD, E.DISCONTINUE): S.DISCONTINUED,
    (S.IN_PROGRESS, E.DISCONTINUE): S.DISCONTINUED,
    (S.DISCONTINUED, E.DISCONTINUE): S.DISCONTINUED,
    (S.SCHEDULED, E.CANCEL): S.CANCELED,
    (S.ARRIVED, E.CANCEL): S.CANCELED,
    (S.ON_HOLD, E.CANCEL): S.CANCELED,
    (S.CANCELED, E.CANCEL): S.CANCELED,
    # A cancel after the exam started cannot undo the acquisition: the step is discontinued instead
    # (FIELD-NOTES §7: never delete, keep the record, raise it on the timeline).
    (S.IN_PROGRESS, E.CANCEL): S.DISCONTINUED,
}
del S, E


def transition(current: StepStatus, event: StepEvent) -> StepStatus:
    """Return the status after ``event``; raise ``InvalidTransition`` for a pair the table does not allow."""
    try:
        return TRANSITIONS[(current, event)]
    except KeyError:
        raise InvalidTransition(
            f"cannot {event.value} a step that is {current.value}", field="step.status"
        ) from None
