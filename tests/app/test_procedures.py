"""MPPS use cases (PS3.4 F.7) against a real database: steps move on, the worklist follows."""

from __future__ import annotations

import datetime as dt

import pytest

from radsync.adapters.persistence.worklist import SqlWorklistReader
from radsync.app.procedures import MppsCreate, MppsSet
from radsync.app.worklist import WorklistQuery
from radsync.domain.ids import Code, PatientId
from radsync.domain.mpps import (
    DuplicateMpps,
    MppsChange,
    MppsNotInProgress,
    MppsStatus,
    PerformedProcedureStep,
    PerformedSeries,
    UnknownMpps,
)
from radsync.domain.names import PersonName
from radsync.domain.order import ImagingOrder
from radsync.domain.reconciliation import RULE_PATIENT_MODALITY_DATE, RULE_REQUEST_ATTRIBUTES
from radsync.domain.study import InstanceOutcome, RequestItem, StudyState
from tests.app.imaging import JANE, JOHN, SCHEDULED, Hub, instance


@pytest.fixture
def hub(engines) -> Hub:  # type: ignore[no-untyped-def]
    return Hub(engines)


def step_refs(*orders: ImagingOrder) -> tuple[RequestItem, ...]:
    return tuple(
        RequestItem(o.accession, p.procedure_id, s.step_id, p.study_instance_uid)
        for o in orders
        for p in o.procedures
        for s in p.steps
    )


def mpps(uid: str, *refs: RequestItem, patient: PatientId = JANE, modality: str = "CT") -> MppsCreate:
    return MppsCreate(
        PerformedProcedureStep(
            uid,
            MppsStatus.IN_PROGRESS,
            patient,
            PersonName.of("Doe", "Jane") if patient == JANE else PersonName(),
            modality=modality,
            start=SCHEDULED + dt.timedelta(minutes=5),
            scheduled_steps=refs,
            station_ae_title="CT01",
        )
    )


def create(hub: Hub, command: MppsCreate):  # type: ignore[no-untyped-def]
    return hub.run(lambda uow: hub.procedures.mpps_create(uow, command))


def n_set(hub: Hub, uid: str, **change: object):  # type: ignore[no-untyped-def]
    command = MppsSet(uid, MppsChange(**change))  # type: ignore[arg-type]
    return hub.run(lambda uow: hub.procedures.mpps_set(uow, command))


def worklist_step_ids(hub: Hub) -> list[str]:
    return [
        f"{i.order.accession.value}/{i.step.step_id}"
        for i in SqlWorklistReader(hub.engines.read).find(WorklistQuery())
    ]


def test_in_progress_starts_the_step_and_takes_it_off_the_worklist(hub: Hub) -> None:
    order = hub.place("A1")
    assert worklist_step_ids(hub) == ["A1/SPS1"]
    result = create(hub, mpps("1.2.9.1", *step_refs(order)))
    assert result.state is StudyState.MATCHED
    assert hub.statuses("A1") == ["STARTED"]
    assert worklist_step_ids(hub) == []


def test_completed_completes_the_step_and_a_further_n_set_is_refused(hub: Hub) -> None:
    order = hub.place("A1")
    create(hub, mpps("1.2.9.1", *step_refs(order)))
    series = (PerformedSeries("1.2.9.1.1", "Axial", "Chest"),)
    done = n_set(
        hub,
        "1.2.9.1",
        status=MppsStatus.COMPLETED,
        end=SCHEDULED + dt.timedelta(minutes=20),
        performed_series=series,
    )
    assert done.steps == {"RP1/SPS1": {"from": "STARTED", "to": "COMPLETED"}}
    assert hub.statuses("A1") == ["COMPLETED"]
    with pytest.raises(MppsNotInProgress):
        n_set(hub, "1.2.9.1", status=MppsStatus.DISCONTINUED)
    stored = hub.run(lambda uow: uow.mpps.get("1.2.9.1"))
    assert (stored.mpps.status, stored.mpps.performed_series) == (MppsStatus.COMPLETED, series)


def test_interim_n_set_updates_attributes_and_moves_no_step(hub: Hub) -> None:
    order = hub.place("A1")
    create(hub, mpps("1.2.9.1", *step_refs(order)))
    interim = n_set(hub, "1.2.9.1", description="contrast given")
    assert interim.steps is None and interim.mpps.status is MppsStatus.IN_PROGRESS
    assert hub.run(lambda uow: uow.mpps.get("1.2.9.1")).mpps.description == "contrast given"


def test_discontinued_discontinues_the_step(hub: Hub) -> None:
    order = hub.place("A1")
    create(hub, mpps("1.2.9.1", *step_refs(order)))
    n_set(
        hub,
        "1.2.9.1",
        status=MppsStatus.DISCONTINUED,
        discontinuation_reason=Code("110513", "DCM", "Discontinued for unspecified reason"),
    )
    assert hub.statuses("A1") == ["DISCONTINUED"]


def test_wrong_worklist_entry_is_not_a_discontinued_exam(hub: Hub) -> None:
    order = hub.place("A1")
    create(hub, mpps("1.2.9.1", *step_refs(order)))
    result = n_set(
        hub,
        "1.2.9.1",
        status=MppsStatus.DISCONTINUED,
        discontinuation_reason=Code("110514", "DCM", "Incorrect worklist entry selected"),
    )
    # RESCHEDULE from STARTED is not in the step table: nothing changes, and the timeline says why.
    assert result.steps == {"RP1/SPS1": {"not_applied": "cannot reschedule a step that is STARTED"}}
    assert hub.statuses("A1") == ["STARTED"]


def test_an_mpps_for_three_steps_updates_them_all(hub: Hub) -> None:
    orders = [hub.place(acc) for acc in ("A1", "A2", "A3")]
    create(hub, mpps("1.2.9.1", *step_refs(*orders)))
    assert [hub.statuses(o.accession.value) for o in orders] == [["STARTED"]] * 3
    n_set(hub, "1.2.9.1", status=MppsStatus.COMPLETED)
    assert [hub.statuses(o.accession.value) for o in orders] == [["COMPLETED"]] * 3


def test_duplicate_create_and_unknown_set_are_refused(hub: Hub) -> None:
    order = hub.place("A1")
    create(hub, mpps("1.2.9.1", *step_refs(order)))
    with pytest.raises(DuplicateMpps):
        create(hub, mpps("1.2.9.1", *step_refs(order)))
    with pytest.raises(UnknownMpps):
        n_set(hub, "1.2.9.404", status=MppsStatus.COMPLETED)


def test_unscheduled_mpps_with_one_fitting_order_is_linked(hub: Hub) -> None:
    hub.place("A1", modality="MR")
    result = create(hub, mpps("1.2.9.1", modality="MR"))
    assert (result.state, result.decision.rule) == (StudyState.MATCHED, RULE_PATIENT_MODALITY_DATE)
    assert hub.statuses("A1") == ["STARTED"]


def test_unscheduled_mpps_waits_and_the_late_order_picks_it_up(hub: Hub) -> None:
    result = create(hub, mpps("1.2.9.1", modality="MR"))
    assert result.state is StudyState.UNASSIGNED
    n_set(hub, "1.2.9.1", status=MppsStatus.COMPLETED)
    hub.place("A1", modality="MR")
    record = hub.run(lambda uow: uow.mpps.get("1.2.9.1"))
    assert record.state is StudyState.MATCHED and record.steps
    assert hub.statuses("A1") == ["COMPLETED"]  # the MPPS's current status applies at once


def test_mpps_naming_another_patients_step_is_a_conflict_and_moves_nothing(hub: Hub) -> None:
    order = hub.place("B1", JOHN)
    result = create(hub, mpps("1.2.9.1", *step_refs(order), patient=JANE))
    assert result.state is StudyState.CONFLICT
    assert hub.statuses("B1") == ["SCHEDULED"]


def test_images_leave_an_mpps_started_step_to_its_mpps(hub: Hub) -> None:
    order = hub.place("A1", study_uid="1.2.3.100")
    create(hub, mpps("1.2.9.1", *step_refs(order)))
    stored = hub.store(instance("1.2.3.100"))
    assert (stored.outcome, stored.study_state) == (InstanceOutcome.STORED, StudyState.MATCHED)
    assert hub.statuses("A1") == ["STARTED"]  # the first image is not "exam complete" (FIELD-NOTES §18)
    n_set(hub, "1.2.9.1", status=MppsStatus.COMPLETED)
    assert hub.statuses("A1") == ["COMPLETED"]


def test_mpps_history_records_the_decision(hub: Hub) -> None:
    order = hub.place("A1")
    create(hub, mpps("1.2.9.1", *step_refs(order)))
    history = hub.run(lambda uow: uow.mpps.history("1.2.9.1"))
    assert [(h.rule, h.outcome, h.evidence["trigger"]) for h in history] == [
        (RULE_REQUEST_ATTRIBUTES, "matched", "n_create")
    ]
    assert history[0].evidence["links"] == [
        {
            "procedure_uid": order.procedures[0].study_instance_uid,
            "accession": "A1",
            "procedure_id": "RP1",
            "steps": ["SPS1"],
            "rule": RULE_REQUEST_ATTRIBUTES,
        }
    ]
