"""egress.apply_current_truth on in-memory copies: what changes, what is recorded, what never changes."""

from __future__ import annotations

import datetime as dt
import io

from pydicom import dcmread
from pydicom.data import get_testdata_file

from radsync.adapters.dicom.egress import apply_current_truth
from radsync.app.archive import Demographics, LinkedOrder, StudyRecord
from radsync.domain.ids import EntityId, Issuer, PatientId
from radsync.domain.names import PersonName
from radsync.domain.patient import Sex
from radsync.domain.study import StudyState

NOW = dt.datetime(2026, 1, 2, 3, 4, 5)


CT_STUDY_UID = str(dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True).StudyInstanceUID)


def study(state: StudyState = StudyState.MATCHED, name: str = "Müller^Zoë", uid: str = CT_STUDY_UID) -> StudyRecord:
    """The study the CT file is filed under (its own Study Instance UID unless it was split off)."""
    patient = Demographics(PatientId("P1", Issuer("HOSP")), PersonName.from_canonical(name), dt.date(1980, 3, 4),
                           Sex.FEMALE)
    orders = (LinkedOrder(EntityId("ACC1"), "RP1", "1.2.3", "CT chest", ("SPS1",)),
              LinkedOrder(EntityId("ACC2"), "RP1", "1.2.4", "CT ribs", ()))
    return StudyRecord(uid, state, patient, EntityId("ACC1"), orders if state is StudyState.MATCHED else (),
                       patient, EntityId(""))


def ct() -> tuple[bytes, object]:
    raw = open(get_testdata_file("CT_small.dcm"), "rb").read()
    return raw, dcmread(io.BytesIO(raw))


def test_matched_study_is_coerced_and_the_old_values_are_recorded() -> None:
    _, ds = ct()
    old_name = str(ds.PatientName)  # type: ignore[attr-defined]
    changed = apply_current_truth(ds, study(), modifying_system="RADSYNC", now=NOW)  # type: ignore[arg-type]
    assert "PatientName" in changed and "AccessionNumber" in changed and "RequestAttributesSequence" in changed
    assert str(ds.PatientName) == "Müller^Zoë"  # type: ignore[attr-defined]
    assert ds.SpecificCharacterSet == "ISO_IR 100"  # type: ignore[attr-defined]  # Latin-1 carries it: unchanged
    record = ds.OriginalAttributesSequence[0]  # type: ignore[attr-defined]
    assert record.ReasonForTheAttributeModification == "COERCE"
    assert record.AttributeModificationDateTime == "20260102030405"
    assert str(record.ModifiedAttributesSequence[0].PatientName) == old_name
    assert [i.AccessionNumber for i in ds.RequestAttributesSequence] == ["ACC1", "ACC2"]  # type: ignore[attr-defined]
    buffer = io.BytesIO()
    ds.save_as(buffer)  # type: ignore[attr-defined]
    again = dcmread(io.BytesIO(buffer.getvalue()))
    assert str(again.PatientName) == "Müller^Zoë"
    assert again.PixelData == dcmread(get_testdata_file("CT_small.dcm")).PixelData


def test_a_name_outside_the_files_charset_switches_the_copy_to_utf8() -> None:
    _, ds = ct()
    apply_current_truth(ds, study(name="Łukasiewicz^Jan"), modifying_system="RADSYNC", now=NOW)  # type: ignore[arg-type]
    assert ds.SpecificCharacterSet == "ISO_IR 192"  # type: ignore[attr-defined]
    old = ds.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]  # type: ignore[attr-defined]
    assert old.SpecificCharacterSet == "ISO_IR 100"
    buffer = io.BytesIO()
    ds.save_as(buffer)  # type: ignore[attr-defined]
    assert str(dcmread(io.BytesIO(buffer.getvalue())).PatientName) == "Łukasiewicz^Jan"


def test_nothing_to_change_adds_no_record_and_unassigned_studies_leave_as_received() -> None:
    _, ds = ct()
    apply_current_truth(ds, study(), modifying_system="RADSYNC", now=NOW)  # type: ignore[arg-type]
    assert apply_current_truth(ds, study(), modifying_system="RADSYNC", now=NOW) == ()  # type: ignore[arg-type]
    assert len(ds.OriginalAttributesSequence) == 1  # type: ignore[attr-defined]
    _, fresh = ct()
    as_received = as_received_study(str(fresh.PatientID), str(fresh.get("IssuerOfPatientID", "")))  # type: ignore[attr-defined]
    assert apply_current_truth(fresh, as_received, modifying_system="RADSYNC", now=NOW) == ()  # type: ignore[arg-type]
    assert "OriginalAttributesSequence" not in fresh  # type: ignore[operator]


def test_an_unassigned_study_re_keyed_by_a_merge_leaves_under_the_survivor_id_only() -> None:
    _, ds = ct()
    received_id, received_name = str(ds.PatientID), str(ds.PatientName)  # type: ignore[attr-defined]
    changed = apply_current_truth(ds, as_received_study("SURVIVOR", "HOSP"), modifying_system="RADSYNC", now=NOW)  # type: ignore[arg-type]
    assert set(changed) == {"PatientID", "IssuerOfPatientID"}
    assert (ds.PatientID, ds.IssuerOfPatientID, str(ds.PatientName)) == ("SURVIVOR", "HOSP", received_name)  # type: ignore[attr-defined]
    assert ds.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0].PatientID == received_id  # type: ignore[attr-defined]


def as_received_study(patient_id: str, issuer: str) -> StudyRecord:
    """An unassigned study as the reader shows it: the identifier it is keyed by, nothing else from radsync."""
    patient = Demographics(PatientId(patient_id, Issuer(issuer)))
    return StudyRecord(CT_STUDY_UID, StudyState.UNASSIGNED, patient, EntityId(""), (), patient, EntityId(""))


def test_a_series_split_off_leaves_under_its_new_study_uid_with_the_old_one_recorded() -> None:
    for state in (StudyState.MATCHED, StudyState.UNASSIGNED):
        _, ds = ct()
        changed = apply_current_truth(ds, study(state, uid="2.25.42"), modifying_system="RADSYNC", now=NOW)  # type: ignore[arg-type]
        assert "StudyInstanceUID" in changed
        assert ds.StudyInstanceUID == "2.25.42"  # type: ignore[attr-defined]
        old = ds.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0]  # type: ignore[attr-defined]
        assert old.StudyInstanceUID == CT_STUDY_UID
