"""SqlArchiveReader on SQLite and PostgreSQL: current truth, grouped accessions, quarantine, every key kind."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from radsync.adapters.persistence.archive_queries import SqlArchiveReader
from radsync.adapters.persistence.engine import Engines
from radsync.app.archive import ArchiveQuery, Level, RetrieveRequest, find_patients, resolve_retrieve
from radsync.app.commands import UpdatePatient
from radsync.app.worklist import AnyOf, DateRange, Exact, IsEmpty, Wildcard
from radsync.domain.names import PersonName
from radsync.domain.patient import PatientUpdate
from tests.app.imaging import JANE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dicom"))
from qr_archive import QUARANTINED_SOP, SERIES_CT, STUDY_MATCHED, STUDY_UNASSIGNED, build_archive  # noqa: E402


def uids(records) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(r.study_instance_uid for r in records)


def test_archive_queries_answer_current_truth(engines: Engines, tmp_path: Path) -> None:
    archive = build_archive(engines, tmp_path)
    reader = SqlArchiveReader(engines.read)
    assert uids(reader.find_studies(ArchiveQuery())) == sorted([STUDY_MATCHED, STUDY_UNASSIGNED])
    assert uids(reader.find_studies(ArchiveQuery(patient_id=Exact("P1")))) == [STUDY_MATCHED]
    for accession in ("ACC1", "ACC2"):
        assert uids(reader.find_studies(ArchiveQuery(accession=Exact(accession)))) == [STUDY_MATCHED]
    assert uids(reader.find_studies(ArchiveQuery(accession=Exact("UNKNOWN-ACC")))) == [STUDY_UNASSIGNED]
    assert uids(reader.find_studies(ArchiveQuery(patient_name=Wildcard("nob*")))) == [STUDY_UNASSIGNED]
    january = DateRange(dt.date(2024, 1, 1), dt.date(2024, 1, 31))
    assert uids(reader.find_studies(ArchiveQuery(study_date=january))) == [STUDY_UNASSIGNED]
    assert uids(reader.find_studies(ArchiveQuery(study_date=IsEmpty()))) == []
    assert uids(reader.find_studies(ArchiveQuery(modalities=AnyOf(("MR", "XA"))))) == [STUDY_MATCHED]
    [study] = reader.studies([STUDY_MATCHED])
    assert (study.series_count, study.instance_count) == (2, 3)  # the quarantined instance is not counted
    assert [o.accession.value for o in study.orders] == ["ACC1", "ACC2"]
    sent = resolve_retrieve(reader, RetrieveRequest(Level.STUDY, study_instance_uids=(STUDY_MATCHED,)))
    assert len(sent) == 3 and QUARANTINED_SOP not in {i.sop_instance_uid for i in sent}
    instances = reader.find_instances(ArchiveQuery(study_instance_uid=Exact(STUDY_MATCHED),
                                                   series_instance_uid=Exact(SERIES_CT)))
    assert len(instances) == 2
    assert {p.patient.patient_id.value for p in find_patients(reader, ArchiveQuery())} == {"P1", "X9"}
    # A correction is one row: the next query shows it and matches on it.
    update = PatientUpdate(JANE, {"name": PersonName.from_canonical("Smith^Jane")})
    archive.hub.run(lambda uow: archive.hub.orders.update_patient(uow, UpdatePatient(update)))
    [corrected] = reader.find_studies(ArchiveQuery(patient_name=Wildcard("smith*")))
    assert corrected.patient.name.canonical() == "Smith^Jane"
    assert reader.find_studies(ArchiveQuery(patient_name=Wildcard("doe*"))) == []


def test_counts_are_read_only_when_a_query_asks_for_them(engines: Engines, tmp_path: Path) -> None:
    """Counting reads every instance entry of the answered studies: a query without count keys must not pay it."""
    build_archive(engines, tmp_path)
    reader = SqlArchiveReader(engines.read)
    [counted] = reader.find_studies(ArchiveQuery(patient_id=Exact("P1")))
    assert (counted.series_count, counted.instance_count) == (2, 3)  # the quarantined instance is not counted
    [uncounted] = reader.find_studies(ArchiveQuery(patient_id=Exact("P1"), counts=False))
    assert (uncounted.series_count, uncounted.instance_count) == (0, 0)
    assert uncounted.patient == counted.patient


def test_a_c_find_asks_for_counts_only_with_a_count_key() -> None:
    from pydicom.dataset import Dataset

    from radsync.adapters.dicom.qr_keys import parse_find

    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientID = "P1"
    identifier.PatientName = ""
    assert parse_find(identifier, patient_root=False).query.counts is False
    identifier.NumberOfStudyRelatedInstances = ""
    assert parse_find(identifier, patient_root=False).query.counts is True
