"""Worklist matching, table-driven: C-FIND identifiers -> parsed query -> SQL on SQLite and PostgreSQL.

Each case is an identifier a modality could send (FIELD-NOTES item 6 and edge cases H) and the set of scheduled
step IDs it must find in the sample worklist of conftest.py. Every case runs against the SQL query layer on both
backends and against ``WorklistQuery.matches`` (the reference semantics) over all stored items, so the SQL and
the semantics cannot drift apart.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence
from pynetdicom.dsutils import decode, encode
from worklist_samples import uid  # helper module next to this file

from radsync.adapters.dicom.query import parse_request
from radsync.adapters.dicom.status import InvalidIdentifier
from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.worklist import SqlWorklistReader
from radsync.app.worklist import AnyOf, WorklistQuery
from radsync.domain.status import StepStatus

ACTIVE = {"SPS1", "SPS2", "SPS3", "SPS4", "SPS5", "SPS6", "SPS7", "SPS10", "SPS11A", "SPS11B", "SPS13"}
JOHN_SMITH = {"SPS1", "SPS2", "SPS11A", "SPS11B"}
CT_ACTIVE = {"SPS1", "SPS3", "SPS4", "SPS6", "SPS11A", "SPS11B"}
CT01_ACTIVE = {"SPS1", "SPS3", "SPS6", "SPS11A", "SPS11B"}
NO_SPS = object()


@dataclass(frozen=True)
class Case:
    id: str
    expected: set[str]
    top: dict[str, Any] = field(default_factory=dict)
    sps: Any = field(default_factory=dict)  # dict of SPS item keys, [] for zero items, NO_SPS for no sequence
    charset: str | None = None
    extra: tuple[tuple[int, str, Any], ...] = ()  # (tag, VR, value) added as is (private tags, odd keys)
    ignored: tuple[str, ...] = ()
    zone: str | None = None


CASES = [
    # universal matching and odd shapes (FIELD-NOTES H.51-54)
    Case("no SPS sequence", ACTIVE, {"PatientName": ""}, sps=NO_SPS),
    Case("SPS sequence with zero items", ACTIVE, sps=[]),
    Case("SPS item with every key empty", ACTIVE,
         sps={"Modality": "", "ScheduledStationAETitle": "", "ScheduledProcedureStepStartDate": "",
              "ScheduledProcedureStepStartTime": "", "ScheduledPerformingPhysicianName": ""}),
    Case("station AE *", ACTIVE, sps={"ScheduledStationAETitle": "*"}),
    Case("QueryRetrieveLevel is ignored with a warning", {"SPS5"},
         {"QueryRetrieveLevel": "WORKLIST", "PatientID": "PID3"}, ignored=("QueryRetrieveLevel",)),
    Case("private tag with a value is ignored with a warning", {"SPS5"}, {"PatientID": "PID3"},
         extra=((0x00090010, "LO", "ACME"), (0x00091001, "LO", "x")), ignored=("(0009,0010)", "(0009,1001)")),
    Case("empty reference sequence items are universal", ACTIVE,
         {"ReferencedStudySequence": [{"ReferencedSOPClassUID": "", "ReferencedSOPInstanceUID": ""}],
          "ReferencedPatientSequence": [{"ReferencedSOPClassUID": "", "ReferencedSOPInstanceUID": ""}]}),
    Case("description with an empty code sequence", ACTIVE,
         {"RequestedProcedureDescription": "", "RequestedProcedureCodeSequence": []}),
    Case("second SPS item ignored with a warning", {"SPS7"},
         sps=[{"Modality": "CR"}, {"Modality": "CT"}], ignored=("ScheduledProcedureStepSequence[2:]",)),
    # person names: case- and accent-insensitive, wildcard over the whole value, groups (FIELD-NOTES H.55, C.25)
    Case("name SM*", JOHN_SMITH | {"SPS3", "SPS4"}, {"PatientName": "SM*"}),
    Case("name smith^j* (case-insensitive)", JOHN_SMITH, {"PatientName": "smith^j*"}),
    Case("name SMITH^JOHN exact", JOHN_SMITH, {"PatientName": "SMITH^JOHN"}),
    Case("name smith^john exact lower case", JOHN_SMITH, {"PatientName": "smith^john"}),
    Case("name *ITH^* (suffix of the family name)", JOHN_SMITH, {"PatientName": "*ITH^*"}),
    Case("name *ITH matches only names ending in ITH", set(), {"PatientName": "*ITH"}),
    Case("name S?ITH^*", JOHN_SMITH, {"PatientName": "S?ITH^*"}),
    Case("name MULLER* finds Müller", {"SPS5"}, {"PatientName": "MULLER*"}),
    Case("name Müller^Zoë exact", {"SPS5"}, {"PatientName": "Müller^Zoë"}),
    Case("name müller* sent as ISO_IR 100", {"SPS5"}, {"PatientName": "müller*"}, charset="ISO_IR 100"),
    Case("name 山田* finds the ideographic group", {"SPS6"}, {"PatientName": "山田*"}, charset="ISO_IR 192"),
    Case("name with groups Yamada^Tarou=山田^太郎", {"SPS6"}, {"PatientName": "Yamada^Tarou=山田^太郎"},
         charset="ISO_IR 192"),
    Case("name *=*=やまだ* (phonetic group)", {"SPS6"}, {"PatientName": "*=*=やまだ*"}, charset="ISO_IR 192"),
    Case('name "" finds the patient without a name', {"SPS10"}, {"PatientName": '""'}),
    Case("name with prefix Doe^Jane^Marie^Mrs", {"SPS7"}, {"PatientName": "Doe^Jane^Marie^Mrs"}),
    Case("name with a trailing empty component", {"SPS7"}, {"PatientName": "DOE^JANE^MARIE^MRS^"}),
    Case("name O'BRIEN^SEAN (apostrophe, accent)", {"SPS13"}, {"PatientName": "O'BRIEN^SEAN"}),
    # patient and order identifiers: single value (case-sensitive), lists, wildcards, empty value
    Case("patient ID PID2", {"SPS3", "SPS4"}, {"PatientID": "PID2"}),
    Case("patient ID is case-sensitive", set(), {"PatientID": "pid2"}),
    Case("patient ID PID?", ACTIVE, {"PatientID": "PID?"}),
    Case("patient ID list PID1\\PID3", JOHN_SMITH | {"SPS5"}, {"PatientID": "PID1\\PID3"}),
    Case("patient ID with issuer", {"SPS5"}, {"PatientID": "PID3", "IssuerOfPatientID": "GENHOSP"}),
    Case("patient ID with another issuer", set(), {"PatientID": "PID3", "IssuerOfPatientID": "OTHER"}),
    Case("accession A1001", {"SPS1"}, {"AccessionNumber": "A1001"}),
    Case("accession of a two-procedure order", {"SPS11A", "SPS11B"}, {"AccessionNumber": "A1011"}),
    Case("accession list A1001\\A1003", {"SPS1", "SPS3"}, {"AccessionNumber": "A1001\\A1003"}),
    Case("accession A100?", {"SPS1", "SPS2", "SPS3", "SPS4", "SPS5", "SPS6", "SPS7"}, {"AccessionNumber": "A100?"}),
    Case("accession is case-sensitive", set(), {"AccessionNumber": "a1001"}),
    Case('accession "" finds the order without one', {"SPS13"}, {"AccessionNumber": '""'}),
    Case("SQL wildcard characters are literal: _", set(), {"PatientID": "PID_*"}),
    Case("SQL wildcard characters are literal: %", set(), {"AccessionNumber": "A%*"}),
    Case("GLOB bracket characters are literal", set(), {"PatientID": "[P]ID1*"}),
    Case("study UID list", {"SPS1", "SPS3"}, {"StudyInstanceUID": f"{uid(1)}\\{uid(3)}"}),
    Case("study UID of the second procedure", {"SPS11B"}, {"StudyInstanceUID": uid(12)}),
    Case("requested procedure ID", {"SPS11B"}, {"RequestedProcedureID": "RP11B"}),
    Case("SPS ID", {"SPS2"}, sps={"ScheduledProcedureStepID": "SPS2"}),
    Case("placer order number", {"SPS1"}, {"PlacerOrderNumberImagingServiceRequest": "PL1001"}),
    Case("filler order number", {"SPS13"}, {"FillerOrderNumberImagingServiceRequest": "FL1013"}),
    Case("admission ID", {"SPS5"}, {"AdmissionID": "V-PID3"}),
    # scheduled station, modality
    Case("station CT01", CT01_ACTIVE, sps={"ScheduledStationAETitle": "CT01"}),
    Case("multi-valued station: US2 finds US1\\US2", {"SPS5"}, sps={"ScheduledStationAETitle": "US2"}),
    Case("station AE is case-sensitive", set(), sps={"ScheduledStationAETitle": "ct01"}),
    Case("station CT0?", CT_ACTIVE, sps={"ScheduledStationAETitle": "CT0?"}),
    Case("modality CT", CT_ACTIVE, sps={"Modality": "CT"}),
    Case("modality ct (lower case tolerated)", CT_ACTIVE, sps={"Modality": "ct"}),
    Case("modality list CT\\MR", CT_ACTIVE | {"SPS2", "SPS13"}, sps={"Modality": "CT\\MR"}),
    Case("station name", CT01_ACTIVE, sps={"ScheduledStationName": "CT scanner 1"}),
    Case("SPS location", CT01_ACTIVE, sps={"ScheduledProcedureStepLocation": "RAD-CT"}),
    # dates and times: by meaning, ranges, the combined date-time range (FIELD-NOTES 6)
    Case("date 20240105", {"SPS1", "SPS2", "SPS3", "SPS10", "SPS11A", "SPS11B"},
         sps={"ScheduledProcedureStepStartDate": "20240105"}),
    Case("date 20240105 with time 0800-1200", {"SPS1", "SPS2", "SPS3", "SPS10"},
         sps={"ScheduledProcedureStepStartDate": "20240105", "ScheduledProcedureStepStartTime": "0800-1200"}),
    Case("open range 20240101-", ACTIVE, sps={"ScheduledProcedureStepStartDate": "20240101-"}),
    Case("open range -20240104", {"SPS5", "SPS7"}, sps={"ScheduledProcedureStepStartDate": "-20240104"}),
    Case("night shift crossing midnight", {"SPS4"},
         sps={"ScheduledProcedureStepStartDate": "20240105-20240106", "ScheduledProcedureStepStartTime": "2200-0600"}),
    Case("combined range over two days", {"SPS5", "SPS1", "SPS10"},
         sps={"ScheduledProcedureStepStartDate": "20240104-20240105", "ScheduledProcedureStepStartTime": "2300-0900"}),
    Case("time only, any date", {"SPS1", "SPS10", "SPS7"}, sps={"ScheduledProcedureStepStartTime": "0830-0900"}),
    Case("single time 0830 is 083000", {"SPS1"},
         sps={"ScheduledProcedureStepStartDate": "20240105", "ScheduledProcedureStepStartTime": "0830"}),
    Case("single time with fraction", {"SPS1"},
         sps={"ScheduledProcedureStepStartDate": "20240105", "ScheduledProcedureStepStartTime": "083000.000"}),
    Case("station and today", {"SPS1", "SPS3", "SPS11A", "SPS11B"},
         sps={"ScheduledStationAETitle": "CT01", "ScheduledProcedureStepStartDate": "20240105"}),
    Case("timezone offset of the query is honoured", {"SPS1", "SPS10", "SPS2"},
         {"TimezoneOffsetFromUTC": "+0100"},
         sps={"ScheduledProcedureStepStartDate": "20240105", "ScheduledProcedureStepStartTime": "0930-1100"},
         zone="UTC"),
    Case("birth date range", JOHN_SMITH, {"PatientBirthDate": "19700101-19801231"}),
    Case("birth date single", {"SPS5"}, {"PatientBirthDate": "19900101"}),
    Case('birth date ""', {"SPS7"}, {"PatientBirthDate": '""'}),
    # status: hidden unless asked for
    Case("status CANCELED", {"SPS8"}, sps={"ScheduledProcedureStepStatus": "CANCELED"}),
    Case("status list, lower case", {"SPS8", "SPS9"}, sps={"ScheduledProcedureStepStatus": "completed\\canceled"}),
    Case("status STARTED", {"SPS12"}, sps={"ScheduledProcedureStepStatus": "STARTED"}),
    Case("status ARRIVED", {"SPS7"}, sps={"ScheduledProcedureStepStatus": "ARRIVED"}),
    Case("status * keeps the default filter", ACTIVE, sps={"ScheduledProcedureStepStatus": "*"}),
    # keys kept in detail columns (matched after SQL)
    Case("performing physician BROWN*", {"SPS1"}, sps={"ScheduledPerformingPhysicianName": "BROWN*"}),
    Case("performing physician smith* (unknown never matches)", {"SPS3"},
         sps={"ScheduledPerformingPhysicianName": "smith*"}),
    Case('performing physician ""', ACTIVE - {"SPS1", "SPS3"}, sps={"ScheduledPerformingPhysicianName": '""'}),
    Case("SPS description (or the protocol's meaning when there is none)", {"SPS1", "SPS11A"},
         sps={"ScheduledProcedureStepDescription": "Chest*"}),
    Case("protocol code in the SPS item", {"SPS1", "SPS11A"},
         sps={"ScheduledProtocolCodeSequence": [{"CodeValue": "P-CT-CHEST"}]}),
    Case("requested procedure code", {"SPS3"}, {"RequestedProcedureCodeSequence": [{"CodeValue": "C-RP3"}]}),
    Case("referring physician", ACTIVE, {"ReferringPhysicianName": "JONES^ALICE*"}),
    Case("requesting physician", ACTIVE, {"RequestingPhysician": "smith^robert^^dr"}),
    Case("priority STAT", {"SPS3"}, {"RequestedProcedurePriority": "STAT"}),
    Case("priority stat (lower case)", {"SPS3"}, {"RequestedProcedurePriority": "stat"}),
    Case("sex F", {"SPS3", "SPS4", "SPS5", "SPS7"}, {"PatientSex": "F"}),
]


def _dataset(keys: dict[str, Any]) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        if isinstance(value, list):
            setattr(ds, keyword, Sequence([_dataset(item) for item in value]))
        else:
            setattr(ds, keyword, value)
    return ds


def identifier(case: Case) -> Dataset:
    """The case as pynetdicom hands it to the handler: encoded, then decoded into raw elements."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # wildcards, lower-case CS values: what modalities send, not valid values
        ds = Dataset()
        if case.charset:
            ds.SpecificCharacterSet = case.charset
        for _tag, value in _dataset(case.top).items():
            ds.add(value)
        if case.sps is not NO_SPS:
            items = case.sps if isinstance(case.sps, list) else [case.sps]
            ds.ScheduledProcedureStepSequence = Sequence([_dataset(i) for i in items])
        for tag, vr, value in case.extra:
            ds.add_new(tag, vr, value)
        data = encode(ds, True, True)
    assert data is not None
    return decode(BytesIO(data), True, True)


def _all_items(engines: Engines) -> list[Any]:
    everything = WorklistQuery(step_status=AnyOf(tuple(s.value for s in StepStatus)))
    return SqlWorklistReader(engines.read).find(everything)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_query_finds_exactly_the_expected_steps(case: Case, worklist_engines: Engines) -> None:
    request = parse_request(identifier(case), site_zone=ZoneInfo(case.zone) if case.zone else None, limit=100)
    found = [item.step.step_id for item in SqlWorklistReader(worklist_engines.read).find(request.query)]
    assert sorted(found) == sorted(case.expected)
    assert len(found) == len(set(found)), "a step is answered once, even when several of its stations match"
    assert request.ignored == case.ignored
    reference = {i.step.step_id for i in _all_items(worklist_engines) if request.query.matches(i)}
    assert reference == case.expected


def test_there_are_at_least_forty_cases() -> None:
    assert len(CASES) >= 40


def test_answers_come_in_start_order(worklist_engines: Engines) -> None:
    request = parse_request(identifier(Case("all", ACTIVE)))
    starts = [i.step.start for i in SqlWorklistReader(worklist_engines.read).find(request.query)]
    assert starts == sorted(starts)


def test_limit_returns_one_more_than_the_cap_to_signal_truncation(worklist_engines: Engines) -> None:
    request = parse_request(identifier(Case("all", ACTIVE)), limit=3)
    assert len(SqlWorklistReader(worklist_engines.read).find(request.query)) == 4
    residual = parse_request(identifier(Case("x", ACTIVE, sps={"ScheduledPerformingPhysicianName": '""'})), limit=3)
    assert len(SqlWorklistReader(worklist_engines.read).find(residual.query)) == 4


@pytest.mark.parametrize(
    "sps",
    [
        {"ScheduledProcedureStepStartDate": "2024x"},
        {"ScheduledProcedureStepStartDate": "20240105-2024"},
        {"ScheduledProcedureStepStartTime": "25"},
        {"ScheduledProcedureStepStartDate": "20240105\\20240106"},
    ],
    ids=["not a date", "bad range end", "hour 25", "date list"],
)
def test_unreadable_date_or_time_is_an_invalid_identifier(sps: dict[str, str]) -> None:
    with pytest.raises(InvalidIdentifier) as raised:
        parse_request(identifier(Case("bad", set(), sps=sps)))
    assert raised.value.keyword.startswith("ScheduledProcedureStepStart")


def test_unreadable_timezone_offset_is_an_invalid_identifier() -> None:
    with pytest.raises(InvalidIdentifier):
        parse_request(identifier(Case("bad", set(), {"TimezoneOffsetFromUTC": "CET"})))


def test_latin1_bytes_mislabelled_as_utf8_still_match(worklist_engines: Engines) -> None:
    """FIELD-NOTES C.22: a modality declares ISO_IR 192 but sends Latin-1 bytes."""
    ds = Dataset()
    ds.add_new(0x00080005, "CS", "ISO_IR 192")
    ds.add_new(0x00100010, "PN", "x")
    raw = decode(BytesIO(encode(ds, True, True) or b""), True, True)
    elem = raw.get_item(0x00100010)
    raw[0x00100010] = elem._replace(value=b"M\xfcller*", length=8)
    request = parse_request(raw)
    assert [i.step.step_id for i in SqlWorklistReader(worklist_engines.read).find(request.query)] == ["SPS5"]


def test_unknown_query_charset_is_accepted_and_reported() -> None:
    ds = Dataset()
    ds.add_new(0x00080005, "CS", "ISO_IR 999")
    ds.add_new(0x00100020, "LO", "PID3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the unknown term when writing and reading it
        raw = decode(BytesIO(encode(ds, True, True) or b""), True, True)
    request = parse_request(raw)
    assert request.charset_known is False
    assert request.query.patient_id is not None
