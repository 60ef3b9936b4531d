"""Study, MPPS and procedure-lookup repositories: round trips and lookups on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.tables import metadata
from radsync.adapters.persistence.unit_of_work import transaction
from radsync.domain.ids import Code, EntityId, Issuer, PatientId
from radsync.domain.mpps import MppsStatus, PerformedProcedureStep, PerformedSeries
from radsync.domain.names import PersonName
from radsync.domain.patient import Sex
from radsync.domain.reconciliation import ProcedureMatch, Subject
from radsync.domain.study import (
    BlobRef,
    DecisionRecord,
    InstanceSummary,
    LinkSource,
    RequestItem,
    SeriesHeader,
    Study,
    StudyHeader,
    StudyLink,
    StudyState,
)
from tests.app.imaging import JANE, JOHN, Hub

NOW = dt.datetime(2024, 6, 12, 9, 0)
HEADER = StudyHeader(
    patient_id=PatientId("P1", Issuer("HOSP", "1.2.3.4", "ISO")),
    patient_name=PersonName.from_canonical("Müller^Jürgen=山田^太郎"),
    birth_date=dt.date(1980, 3, 4),
    sex=Sex.MALE,
    accession=EntityId("A1", Issuer("RIS")),
    study_date=dt.date(2024, 6, 12),
    study_time=dt.time(8, 31, 5, 250000),
    description="CT chest",
    modalities=("CT", "SR"),
    request_items=(
        RequestItem(EntityId("A1", Issuer("RIS")), "RP1", "SPS1", "2.25.1"),
        RequestItem(EntityId("A2"), "RP2"),
    ),
    referenced_mpps=("1.2.9.1",),
)


def uow_of(engines):  # type: ignore[no-untyped-def]
    return transaction(engines.write, lambda: NOW)


def blob(n: int) -> InstanceSummary:
    digest = f"{n:064x}"
    return InstanceSummary(
        f"1.2.3.4.{n}",
        "1.2.840.10008.5.1.4.1.1.2",
        "1.2.840.10008.1.2.1",
        BlobRef(digest, 1000 + n, digest),
        instance_number=n,
    )


def test_metadata_and_migrations_agree(engines: Engines) -> None:
    with engines.write.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_study_header_round_trips_exactly(engines: Engines) -> None:
    with uow_of(engines) as uow:
        uow.studies.add_study(Study("1.2.3", HEADER, StudyState.UNASSIGNED, "unknown_accession"))
    with uow_of(engines) as uow:
        study = uow.studies.get("1.2.3")
    assert study == Study("1.2.3", HEADER, StudyState.UNASSIGNED, "unknown_accession")


def test_hot_path_primitives(engines: Engines) -> None:
    with uow_of(engines) as uow:
        location = uow.studies.add_study(Study("1.2.3", HEADER, StudyState.UNASSIGNED))
        assert uow.studies.add_study(Study("1.2.3", HEADER, StudyState.UNASSIGNED)) is None  # skip, no error
        assert uow.studies.locate("1.2.3", "1.2.3.1").series_key is None
        series_key = uow.studies.add_series(location, SeriesHeader("1.2.3.1", "CT", 1))
        assert uow.studies.add_series(location, SeriesHeader("1.2.3.1", "CT", 1)) == series_key
        found = uow.studies.locate("1.2.3", "1.2.3.1")
        assert (found.key, found.series_key, found.state, found.patient_id.value) == (
            location.key,
            series_key,
            StudyState.UNASSIGNED,
            "P1",
        )
        assert uow.studies.add_instance(found, series_key, blob(1))
        assert not uow.studies.add_instance(found, series_key, blob(1))  # same SOP UID: skipped
        uow.studies.touch(found, quarantined=True)
        stored = uow.studies.instance("1.2.3.4.1")
        assert (stored.sha256, stored.study_instance_uid, stored.series_instance_uid) == (
            f"{1:064x}",
            "1.2.3",
            "1.2.3.1",
        )
        assert uow.studies.locate("9.9.9", "1.2.3.1") is None


def test_links_history_and_queues(engines: Engines) -> None:
    hub = Hub(engines)
    order = hub.place("A1")
    procedure_uid = order.procedures[0].study_instance_uid
    link = StudyLink(procedure_uid, EntityId("A1"), "RP1", ("SPS1",), LinkSource.MANUAL, "manual")
    with uow_of(engines) as uow:
        uow.studies.add_study(Study("1.2.3", HEADER, StudyState.UNASSIGNED))
        uow.studies.add_links("1.2.3", [link], "alice")
        uow.studies.add_links("1.2.3", [link], "alice")  # idempotent
        uow.studies.set_state("1.2.3", StudyState.MATCHED, "")
        uow.studies.record_decision(
            "1.2.3", DecisionRecord(NOW, "alice", "manual", "matched", "", {"why": "x"})
        )
    with uow_of(engines) as uow:
        assert uow.studies.get("1.2.3").links == (link,)
        location = uow.studies.locate("1.2.3", "")
        assert uow.studies.linked_patient_ids(location) == [PatientId("P1", Issuer("HOSP"))]
        assert [h.evidence for h in uow.studies.history("1.2.3")] == [{"why": "x"}]
        assert [
            s.study.study_instance_uid for s in uow.studies.in_state(StudyState.MATCHED, limit=10, offset=0)
        ] == ["1.2.3"]
        assert uow.studies.in_state(StudyState.UNASSIGNED, limit=10, offset=0) == []
        assert uow.studies.remove_links("1.2.3", None) == [link]
        assert uow.studies.get("1.2.3").links == ()


def test_waiting_for_finds_studies_by_uid_accession_request_item_and_patient(engines: Engines) -> None:
    def header(**kw: object) -> StudyHeader:
        return StudyHeader(patient_id=JANE, **kw)  # type: ignore[arg-type]

    with uow_of(engines) as uow:
        uow.studies.add_study(Study("1.1", header(), StudyState.UNASSIGNED))  # by UID
        uow.studies.add_study(Study("1.2", header(accession=EntityId("A1")), StudyState.UNASSIGNED))
        uow.studies.add_study(
            Study("1.3", header(request_items=(RequestItem(EntityId("A1")),)), StudyState.MATCHED)
        )
        uow.studies.add_study(Study("1.4", header(), StudyState.UNASSIGNED))  # by patient
        uow.studies.add_study(Study("1.5", header(accession=EntityId("A1")), StudyState.CONFLICT))  # never
        uow.studies.add_study(
            Study("1.6", StudyHeader(patient_id=JOHN), StudyState.UNASSIGNED)
        )  # other patient
        found = uow.studies.waiting_for(["1.1"], ["A1"], "P1")
        several = uow.studies.waiting_for(["1.1", "9.9"], ["A1", "Z9"], "P1")  # the IN-list form
        without_numbers = uow.studies.waiting_for([], [], "")
        by_uid_only = uow.studies.waiting_for(["1.1"], [], "")
        both = uow.mpps.waiting_with_studies(["1.1"], ["A1"], "P1")  # studies and MPPS in one statement
        both_several = uow.mpps.waiting_with_studies(["1.1", "9.9"], ["A1", "Z9"], "P1")
        both_without_numbers = uow.mpps.waiting_with_studies([], [], "")
    assert both == both_several == (found, [])
    assert both_without_numbers == ([], [])
    assert found == several == [
        ("1.1", StudyState.UNASSIGNED),
        ("1.2", StudyState.UNASSIGNED),
        ("1.3", StudyState.MATCHED),
        ("1.4", StudyState.UNASSIGNED),
    ]
    assert without_numbers == []
    assert by_uid_only == [("1.1", StudyState.UNASSIGNED)]


def test_mpps_round_trip_and_step_links(engines: Engines) -> None:
    hub = Hub(engines)
    order = hub.place("A1")
    procedure_uid = order.procedures[0].study_instance_uid
    step = PerformedProcedureStep(
        "1.2.9.1",
        MppsStatus.IN_PROGRESS,
        JANE,
        PersonName.of("Doe", "Jane"),
        dt.date(1980, 3, 4),
        Sex.FEMALE,
        (RequestItem(EntityId("A1"), "RP1", "SPS1", procedure_uid),),
        "PPS1",
        "CT01",
        "CT room 1",
        "CT",
        dt.datetime(2024, 6, 12, 8, 35),
        None,
        "CT chest",
        (Code("C1", "L", "Chest"),),
        None,
        (PerformedSeries("1.2.9.1.1", "Axial", "Chest", ("1.2.9.1.1.1",)),),
    )
    with uow_of(engines) as uow:
        assert uow.mpps.add(step)
        assert not uow.mpps.add(step)
        assert uow.mpps.waiting_for([procedure_uid], ["A1"], "P1") == ["1.2.9.1"]
        assert uow.mpps.waiting_with_studies([procedure_uid], ["A1"], "P1") == ([], ["1.2.9.1"])
        assert uow.mpps.waiting_with_studies([procedure_uid, "9.9"], ["A1", "Z9"], "") == ([], ["1.2.9.1"])
        assert uow.mpps.waiting_with_studies(["9.9"], [], "P1") == ([], ["1.2.9.1"])  # by patient
        assert uow.mpps.waiting_with_studies(["9.9"], ["Z9"], "P9") == ([], [])
        candidates = uow.procedures.by_procedure_uids([procedure_uid])
        uow.mpps.link_steps(
            "1.2.9.1", [ProcedureMatch(candidates[0], ("SPS1",), "request_attributes")], LinkSource.AUTO
        )
        uow.mpps.set_state("1.2.9.1", StudyState.MATCHED, "")
    with uow_of(engines) as uow:
        record = uow.mpps.get("1.2.9.1")
        assert (record.mpps, record.state, record.steps) == (
            step,
            StudyState.MATCHED,
            ((procedure_uid, "SPS1"),),
        )
        assert uow.mpps.waiting_for([procedure_uid], ["A1"], "P1") == []  # matched: not waiting
        assert uow.mpps.waiting_for([procedure_uid, "9.9"], ["A1", "Z9"], "P1") == []
        assert uow.mpps.waiting_with_studies([procedure_uid], ["A1"], "P1") == ([], [])


def test_procedure_lookup_views(engines: Engines) -> None:
    hub = Hub(engines)
    a1 = hub.place("A1")
    hub.place("B1", JOHN, modality="MR")
    with uow_of(engines) as uow:
        by_accession = uow.procedures.by_accession(EntityId("A1"))
        assert [
            (p.procedure_uid, p.patient.id, p.steps[0].step_id, p.filler_number.value) for p in by_accession
        ] == [(a1.procedures[0].study_instance_uid, JANE, "SPS1", "F-A1")]
        assert by_accession[0].patient.name == PersonName.of("Doe", "Jane")
        assert uow.procedures.by_accession(EntityId("A1", Issuer("OTHER"))) == []
        subject = Subject.of_study("9.9", StudyHeader(patient_id=JOHN, modalities=("CT",)))
        assert [p.accession.value for p in uow.procedures.for_subject(subject)] == [
            "B1"
        ]  # patient's open order
        nearby = Subject.of_study(
            "9.9",
            StudyHeader(
                patient_id=PatientId("X"), modalities=("MR",), patient_name=PersonName.of("Doe", "Jane")
            ),
        )
        suggested = uow.procedures.suggestions(nearby, dt.date(2024, 6, 13), 2, 10)
        assert sorted(p.accession.value for p in suggested) == ["A1", "B1"]  # A1 by name, B1 by modality+date
        assert uow.procedures.suggestions(nearby, dt.date(2024, 7, 30), 2, 10)[0].accession.value == "A1"


def test_quarantined_instances_put_a_study_on_the_conflict_list(engines: Engines) -> None:
    with uow_of(engines) as uow:
        location = uow.studies.add_study(Study("1.2.3", HEADER, StudyState.MATCHED))
        series_key = uow.studies.add_series(location, SeriesHeader("1.2.3.1", "CT"))
        uow.studies.add_instance(location, series_key, blob(1))
        uow.studies.add_instance(location, series_key, blob(2), quarantine="patient_id_mismatch")
        uow.studies.touch(location, quarantined=True)
        [summary] = uow.studies.in_state(StudyState.CONFLICT, limit=10, offset=0)
    assert (summary.instance_count, summary.quarantined_instances, summary.series_count) == (1, 1, 1)
