"""Worklist answers: exactly the requested keys, complete values, per-station character sets, valid encoding."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydicom import Dataset
from pydicom.sequence import Sequence
from pynetdicom.dsutils import decode, encode

from radsync.adapters.dicom.charset import response_charset, transliterate
from radsync.adapters.dicom.elements import TransferSyntax
from radsync.adapters.dicom.mapping import ATTRIBUTES, ResponsePlan, Shape, all_sub_keys
from radsync.adapters.dicom.query import parse_request
from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.worklist import SqlWorklistReader
from radsync.app.worklist import AnyOf, WorklistItem, WorklistQuery
from radsync.domain.status import StepStatus

SYNTAXES = {
    "implicit little": TransferSyntax(True, True),
    "explicit little": TransferSyntax(False, True),
    "explicit big": TransferSyntax(False, False),
}
EVERYTHING: Shape = tuple((a.tag, None) for a in ATTRIBUTES)


@pytest.fixture(scope="module")
def items(sqlite_worklist: Engines) -> dict[str, WorklistItem]:
    every = WorklistQuery(step_status=AnyOf(tuple(s.value for s in StepStatus)))
    return {i.step.step_id: i for i in SqlWorklistReader(sqlite_worklist.read).find(every)}


def answer(item: WorklistItem, shape: Shape, charset: str = "ISO_IR 192",
           syntax: TransferSyntax = SYNTAXES["implicit little"]) -> Dataset:
    """Encode the answer as pynetdicom does, then decode it as the modality does."""
    ds = ResponsePlan(shape, response_charset(charset), syntax, None).dataset(item)
    data = encode(ds, syntax.implicit_vr, syntax.little_endian)
    assert data
    return decode(BytesIO(data), syntax.implicit_vr, syntax.little_endian)


def shape_of(request: dict[str, Any]) -> Shape:
    ds = Dataset()
    for keyword, value in request.items():
        if isinstance(value, list):
            setattr(ds, keyword, Sequence([_item(i) for i in value]))
        else:
            setattr(ds, keyword, value)
    return parse_request(ds).shape


def _item(keys: dict[str, Any]) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _canonical(ds: Dataset) -> Dataset:
    """Convert every raw element (recursively), so pydicom re-encodes from values."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _canonical(item)
    return ds


@pytest.mark.parametrize("syntax", list(SYNTAXES), ids=list(SYNTAXES))
@pytest.mark.parametrize("step", ["SPS1", "SPS5", "SPS6", "SPS13"])
def test_answer_bytes_equal_pydicoms_own_encoding(syntax: str, step: str, items: dict[str, WorklistItem]) -> None:
    ts = SYNTAXES[syntax]
    ours = encode(ResponsePlan(EVERYTHING, response_charset("ISO_IR 192"), ts, None).dataset(items[step]),
                  ts.implicit_vr, ts.little_endian)
    assert ours is not None
    theirs = encode(_canonical(decode(BytesIO(ours), ts.implicit_vr, ts.little_endian)), ts.implicit_vr,
                    ts.little_endian)
    assert ours == theirs


def test_answer_holds_exactly_the_requested_keys(items: dict[str, WorklistItem]) -> None:
    shape = shape_of({"PatientName": "", "PatientID": "", "QueryRetrieveLevel": "WORKLIST",
                      "ScheduledProcedureStepSequence": [{"Modality": "", "ScheduledStationAETitle": ""}]})
    ds = answer(items["SPS1"], shape)
    assert [e.keyword for e in ds] == ["SpecificCharacterSet", "PatientName", "PatientID",
                                       "ScheduledProcedureStepSequence"]
    (sps,) = ds.ScheduledProcedureStepSequence
    assert [e.keyword for e in sps] == ["Modality", "ScheduledStationAETitle"]
    assert (ds.PatientName, ds.PatientID, sps.Modality, sps.ScheduledStationAETitle) == ("Smith^John", "PID1", "CT",
                                                                                          "CT01")


def test_requested_keys_without_a_value_are_present_and_empty(items: dict[str, WorklistItem]) -> None:
    shape = shape_of({"PatientWeight": "", "PregnancyStatus": None, "ReferencedStudySequence": [],
                      "PatientBirthDate": "", "AccessionNumber": ""})
    ds = answer(items["SPS13"], shape)  # PID6: no weight; order without accession
    assert ds["PatientWeight"].is_empty and ds["PregnancyStatus"].is_empty
    assert ds.ReferencedStudySequence == [] and ds.AccessionNumber == ""
    assert ds.PatientBirthDate == "19550505"


def test_type_1_keys_carry_values(items: dict[str, WorklistItem]) -> None:
    shape = shape_of({"StudyInstanceUID": "", "RequestedProcedureID": "", "PatientID": "", "PatientName": "",
                      "ScheduledProcedureStepSequence": []})
    for step, item in items.items():
        ds = answer(item, shape)
        (sps,) = ds.ScheduledProcedureStepSequence
        for value in (ds.StudyInstanceUID, ds.RequestedProcedureID, ds.PatientID, sps.ScheduledProcedureStepID,
                      sps.Modality, sps.ScheduledStationAETitle, sps.ScheduledProcedureStepStartDate,
                      sps.ScheduledProcedureStepStartTime):
            assert value, step
        if step != "SPS10":  # the one patient registered without a name
            assert ds.PatientName


def test_empty_sequence_in_the_request_returns_every_known_sub_key(items: dict[str, WorklistItem]) -> None:
    for request in ([], [{}]):
        ds = answer(items["SPS1"], shape_of({"ScheduledProcedureStepSequence": request}))
        (sps,) = ds.ScheduledProcedureStepSequence
        sps_attribute = next(a for a in ATTRIBUTES if a.keyword == "ScheduledProcedureStepSequence")
        assert [int(e.tag) for e in sps] == [tag for tag, _ in all_sub_keys(sps_attribute)]
        assert sps.ScheduledProcedureStepStatus == "SCHEDULED"
        assert sps.ScheduledProcedureStepStartDate == "20240105" and sps.ScheduledProcedureStepStartTime == "083000"
        assert sps.ScheduledPerformingPhysicianName == "Brown^Kim"
        assert sps.ScheduledStationName == "CT scanner 1" and sps.ScheduledProcedureStepLocation == "RAD-CT"
        (protocol,) = sps.ScheduledProtocolCodeSequence
        assert (protocol.CodeValue, protocol.CodingSchemeDesignator, protocol.CodeMeaning) == (
            "P-CT-CHEST", "99RADPROT", "Chest routine non-contrast")


def test_mapping_of_order_procedure_and_patient(items: dict[str, WorklistItem]) -> None:
    ds = answer(items["SPS1"], EVERYTHING)
    assert ds.AccessionNumber == "A1001"
    assert ds.IssuerOfAccessionNumberSequence[0].LocalNamespaceEntityID == "RIS_HUB"
    assert ds.PlacerOrderNumberImagingServiceRequest == "PL1001"
    assert ds.OrderPlacerIdentifierSequence[0].LocalNamespaceEntityID == "HIS_ORD"
    assert ds.FillerOrderNumberImagingServiceRequest == "FL1001"
    assert ds.ReferringPhysicianName == "Jones^Alice^^Dr" and ds.RequestingPhysician == "Smith^Robert^^Dr"
    assert ds.AdmissionID == "V-PID1" and ds.IssuerOfAdmissionIDSequence[0].LocalNamespaceEntityID == "GENHOSP"
    assert ds.CurrentPatientLocation == "RADOPD"
    assert ds.IssuerOfPatientID == "GENHOSP"
    qualifiers = ds.IssuerOfPatientIDQualifiersSequence[0]
    assert (qualifiers.UniversalEntityID, qualifiers.UniversalEntityIDType) == ("1.2.3.4.5", "ISO")
    other = ds.OtherPatientIDsSequence[0]
    assert (other.PatientID, other.IssuerOfPatientID, other.TypeOfPatientID) == ("OLD-77", "OLDHOSP", "TEXT")
    assert ds.PatientBirthDate == "19700412" and ds.PatientSex == "M" and ds.PatientWeight == "81"
    assert ds.MedicalAlerts == "Claustrophobic"
    assert ds.RequestedProcedureDescription == "Procedure RP1"
    code = ds.RequestedProcedureCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == ("C-RP1", "99RADPROC", "Procedure RP1")
    assert ds.RequestedProcedurePriority == "ROUTINE" and ds.PatientTransportArrangements == "WALK"
    assert ds.ReferencedStudySequence == [] and ds.ReferencedPatientSequence == []
    assert ds.IssueDateOfImagingServiceRequest == ""


def test_multi_valued_station_and_allergies(items: dict[str, WorklistItem]) -> None:
    ds = answer(items["SPS5"], shape_of({"ScheduledProcedureStepSequence": [{"ScheduledStationAETitle": ""}]}))
    assert list(ds.ScheduledProcedureStepSequence[0].ScheduledStationAETitle) == ["US1", "US2"]
    assert answer(items["SPS3"], shape_of({"Allergies": ""})).Allergies == "Iodine"


def test_no_empty_issuer_items(items: dict[str, WorklistItem]) -> None:
    ds = answer(items["SPS13"], shape_of({"IssuerOfAccessionNumberSequence": [], "OtherPatientIDsSequence": []}))
    assert ds.IssuerOfAccessionNumberSequence == [] and ds.OtherPatientIDsSequence == []


def test_names_keep_ideographic_and_phonetic_groups_in_utf8(items: dict[str, WorklistItem]) -> None:
    ds = answer(items["SPS6"], shape_of({"PatientName": ""}))
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.get_item(0x00100010).value == "Yamada^Tarou=山田^太郎=やまだ^たろう".encode()


def test_latin1_station_gets_latin1_bytes(items: dict[str, WorklistItem]) -> None:
    ds = answer(items["SPS5"], shape_of({"PatientName": ""}), charset="ISO_IR 100")
    assert ds.get_item(0x00080005).value.rstrip() == b"ISO_IR 100"
    assert ds.get_item(0x00100010).value.startswith(bytes.fromhex("4D FC 6C 6C 65 72"))
    assert ds.PatientName == "Müller^Zoë"


def _transliterated(charset: str) -> float:
    return REGISTRY.get_sample_value("radsync_mwl_transliterated_total", {"charset": charset}) or 0.0


def test_ascii_station_gets_transliterated_upper_case_names_and_no_charset(items: dict[str, WorklistItem]) -> None:
    before = _transliterated("ASCII")
    ds = answer(items["SPS5"], shape_of({"PatientName": ""}), charset="ASCII")
    assert "SpecificCharacterSet" not in ds
    assert ds.get_item(0x00100010).value.rstrip() == b"MULLER^ZOE"
    assert _transliterated("ASCII") == before + 1


def test_latin1_station_drops_groups_it_cannot_carry(items: dict[str, WorklistItem]) -> None:
    before = _transliterated("ISO_IR 100")
    ds = answer(items["SPS6"], shape_of({"PatientName": ""}), charset="ISO_IR 100")
    assert ds.PatientName == "Yamada^Tarou"
    assert _transliterated("ISO_IR 100") == before + 1


def test_transliteration() -> None:
    assert transliterate("Zoë Ñúñez", "ascii") == "Zoe Nunez"
    assert transliterate("Łukasz Gößmann", "ascii") == "Lukasz Gossmann"
    assert transliterate("Łukasz Gößmann", "latin-1") == "Lukasz Gößmann"
    assert transliterate("Őrs", "latin-1") == "Ors"
    assert transliterate("山田", "latin-1") == "??"
    assert response_charset("ISO_IR 100").text("Łódź") == b"L\xf3dz"  # ó is Latin-1, Ł and ź are not


def test_timezone_offset_is_returned_when_asked(items: dict[str, WorklistItem]) -> None:
    from zoneinfo import ZoneInfo

    plan = ResponsePlan(shape_of({"TimezoneOffsetFromUTC": ""}), response_charset("ISO_IR 192"),
                        SYNTAXES["implicit little"], ZoneInfo("Europe/Berlin"))
    ds = decode(BytesIO(encode(plan.dataset(items["SPS1"]), True, True) or b""), True, True)
    assert ds.TimezoneOffsetFromUTC == "+0100"  # 5 January: CET


def test_encoded_answers_are_reused_for_the_same_item(items: dict[str, WorklistItem]) -> None:
    plan = ResponsePlan(EVERYTHING, response_charset("ISO_IR 192"), SYNTAXES["implicit little"], None)
    first = plan.elements(items["SPS1"])
    assert plan.elements(items["SPS1"]) is first
    assert plan.elements(items["SPS2"]) is not first
    assert plan.dataset(items["SPS1"]) is not plan.dataset(items["SPS1"]), "each answer is its own Dataset"
