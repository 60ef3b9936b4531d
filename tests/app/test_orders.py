"""Order use cases against a real migrated database (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import replace

import pytest

from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.timeline import order_timeline_of
from radsync.adapters.persistence.unit_of_work import transaction
from radsync.adapters.persistence.worklist import SqlWorklistReader
from radsync.app.commands import ChangeStepStatus, PlaceOrder, UpdateOrder, UpdatePatient
from radsync.app.orders import OrderService
from radsync.app.ports import OrderKey
from radsync.app.stations import Station, StationDirectory
from radsync.app.worklist import Exact, WorklistQuery
from radsync.domain.errors import IdentityConflict, InvalidTransition, MissingValue, UnknownOrder
from radsync.domain.ids import EntityId, Issuer, PatientId
from radsync.domain.names import PersonName
from radsync.domain.order import ImagingOrder, RequestedProcedure, ScheduledStep
from radsync.domain.patient import PatientUpdate
from radsync.domain.status import StepEvent, StepStatus

PID = PatientId("100234567", Issuer("GENHOSP"))
NOW = dt.datetime(2024, 6, 11, 9, 30)


@pytest.fixture
def service() -> OrderService:
    counter = itertools.count(1)
    stations = StationDirectory([Station("CT01", "CT"), Station("CT02", "CT"), Station("MR01", "MR")])
    return OrderService(stations, lambda: f"2.25.{next(counter)}")


def make_order(accession: str = "A1", *, step_ids: tuple[str, ...] = ("SPS1",), study_uid: str = "",
               stations: tuple[str, ...] = (), start: dt.datetime = dt.datetime(2024, 6, 12, 8, 30),
               patient: PatientId = PID) -> ImagingOrder:
    steps = tuple(ScheduledStep(s, "CT", start, station_ae_titles=stations) for s in step_ids)
    return ImagingOrder(
        patient_id=patient,
        accession=EntityId(accession),
        filler_number=EntityId(f"F-{accession}", Issuer("RIS")),
        procedures=(RequestedProcedure("RP1", study_uid, description="CT chest", steps=steps),),
    )


def place(engines: Engines, service: OrderService, order: ImagingOrder, name: str = "Doe^Jane", *, update=False):
    command_type = UpdateOrder if update else PlaceOrder
    patient = PatientUpdate(order.patient_id, {"name": PersonName.from_canonical(name)})
    with transaction(engines.write, lambda: NOW) as uow:
        return service.place(uow, command_type(patient, order))


def load(engines: Engines, accession: str = "A1") -> ImagingOrder | None:
    with transaction(engines.write, lambda: NOW) as uow:
        return uow.orders.find(OrderKey(accession=EntityId(accession)))


def test_new_order_gets_a_study_uid_and_every_station_of_its_modality(engines, service) -> None:
    place(engines, service, make_order())
    stored = load(engines)
    assert stored is not None
    step = stored.procedures[0].steps[0]
    assert stored.procedures[0].study_instance_uid == "2.25.1"
    assert step.station_ae_titles == ("CT01", "CT02")
    assert step.status is StepStatus.SCHEDULED


def test_named_stations_win_over_configuration(engines, service) -> None:
    place(engines, service, make_order(stations=("CT02",)))
    assert load(engines).procedures[0].steps[0].station_ae_titles == ("CT02",)


def test_a_step_without_a_station_is_kept_but_on_no_worklist(engines, service) -> None:
    """An ultrasound order in a site with no US station: accepted and stored, listed nowhere (Type 1 station AE)."""
    order = make_order("US1")
    ultrasound = replace(order, procedures=(replace(order.procedures[0], steps=(
        replace(order.procedures[0].steps[0], modality="US"),)),))
    place(engines, service, ultrasound)
    place(engines, service, make_order("CT1"))

    assert load(engines, "US1").procedures[0].steps[0].station_ae_titles == ()
    listed = SqlWorklistReader(engines.read).find(WorklistQuery())
    assert [item.order.accession.value for item in listed] == ["CT1"]
    assert SqlWorklistReader(engines.read).find(WorklistQuery(modality=Exact("US"))) == []
    events = [e for e in order_timeline_of(engines.read, "US1")["entries"] if e["kind"] == "event"]
    assert events[0]["detail"]["not_on_worklist"] == ["SPS1"]
    assert "not on any worklist" in events[0]["summary"]


def test_study_uid_from_the_order_is_kept(engines, service) -> None:
    place(engines, service, make_order(study_uid="1.2.3.4"))
    assert load(engines).procedures[0].study_instance_uid == "1.2.3.4"


def test_resent_new_order_is_an_update_not_a_duplicate(engines, service) -> None:
    place(engines, service, make_order())
    place(engines, service, make_order())
    stored = load(engines)
    assert len(stored.procedures) == 1 and len(stored.procedures[0].steps) == 1
    assert stored.procedures[0].study_instance_uid == "2.25.1"


def test_update_reschedules_and_keeps_the_study_uid(engines, service) -> None:
    place(engines, service, make_order())
    later = dt.datetime(2024, 6, 13, 9, 15)
    place(engines, service, make_order(study_uid="9.9.9", start=later), update=True)
    stored = load(engines)
    assert stored.procedures[0].study_instance_uid == "2.25.1"
    assert stored.procedures[0].steps[0].start == later


def test_cancel_keeps_the_record_with_its_status(engines, service) -> None:
    place(engines, service, make_order())
    with transaction(engines.write, lambda: NOW) as uow:
        service.change_status(uow, ChangeStepStatus(OrderKey(accession=EntityId("A1")), StepEvent.CANCEL))
    assert load(engines).procedures[0].steps[0].status is StepStatus.CANCELED


def test_status_change_for_unknown_order_is_refused(engines, service) -> None:
    with pytest.raises(UnknownOrder), transaction(engines.write, lambda: NOW) as uow:
        service.change_status(uow, ChangeStepStatus(OrderKey(accession=EntityId("NOPE")), StepEvent.CANCEL))


def test_update_of_a_completed_step_is_refused(engines, service) -> None:
    place(engines, service, make_order())
    with transaction(engines.write, lambda: NOW) as uow:
        service.change_status(uow, ChangeStepStatus(OrderKey(accession=EntityId("A1")), StepEvent.COMPLETE))
    with pytest.raises(InvalidTransition):
        place(engines, service, make_order(), update=True)


def test_accession_of_another_patient_is_a_conflict_not_a_move(engines, service) -> None:
    place(engines, service, make_order())
    other = make_order(patient=PatientId("999", Issuer("GENHOSP")))
    with pytest.raises(IdentityConflict):
        place(engines, service, other, name="Roe^Richard")
    assert load(engines).patient_id == PID


def test_failed_command_leaves_nothing_half_written(engines, service) -> None:
    broken = make_order(step_ids=("",))
    with pytest.raises(MissingValue):
        place(engines, service, broken)
    assert load(engines) is None
    with transaction(engines.write, lambda: NOW) as uow:
        assert uow.patients.get(PID) is None


def test_patient_update_changes_demographics(engines, service) -> None:
    place(engines, service, make_order())
    with transaction(engines.write, lambda: NOW) as uow:
        service.update_patient(uow, UpdatePatient(PatientUpdate(PID, {"name": PersonName.of("Doe", "Janet")})))
    with transaction(engines.write, lambda: NOW) as uow:
        assert uow.patients.get(PID).name == PersonName.of("Doe", "Janet")
