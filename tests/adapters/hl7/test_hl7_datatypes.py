"""HL7 data types → domain values: TS/DTM, birth dates, names, identifiers, DICOM VR limits (MAPPING.md §2)."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest

from radsync.adapters.hl7 import datatypes as t
from radsync.adapters.hl7 import vr
from radsync.adapters.hl7.codec import Message
from radsync.adapters.hl7.errors import Hl7Error, Location
from radsync.domain.ids import Issuer, PatientId
from radsync.domain.patient import Sex

AT = Location("OBR", 1, 27)
BERLIN = ZoneInfo("Europe/Berlin")
UTC = ZoneInfo("UTC")
D = dt.datetime

# (TS as sent, site zone, naive wall-clock time stored) -- FIELD-NOTES D.27-30
TIMESTAMPS = [
    ("2024", BERLIN, D(2024, 1, 1)),
    ("202403", BERLIN, D(2024, 3, 1)),
    ("20240305", BERLIN, D(2024, 3, 5)),
    ("2024030515", BERLIN, D(2024, 3, 5, 15)),
    ("202403051558", BERLIN, D(2024, 3, 5, 15, 58)),
    ("20240305155850", BERLIN, D(2024, 3, 5, 15, 58, 50)),
    ("20240305155850.8", BERLIN, D(2024, 3, 5, 15, 58, 50, 800000)),
    ("20240305155850.8211", BERLIN, D(2024, 3, 5, 15, 58, 50, 821100)),
    ("20240305155850.8211-0217", UTC, D(2024, 3, 5, 18, 15, 50, 821100)),
    ("20250204141403.403+0100", BERLIN, D(2025, 2, 4, 14, 14, 3, 403000)),
    ("20250204141403.403+0100", UTC, D(2025, 2, 4, 13, 14, 3, 403000)),
    ("19691231000000+0800", UTC, D(1969, 12, 30, 16)),
    ("20240611110000+0200", BERLIN, D(2024, 6, 11, 11)),
    ("20240612100000+0900", BERLIN, D(2024, 6, 12, 3)),
    ("20240611110000+0000", ZoneInfo("America/New_York"), D(2024, 6, 11, 7)),
    ("2024061108-0500", UTC, D(2024, 6, 11, 13)),
    # DST change night in Berlin (FIELD-NOTES D.30): local times without offset are kept as they are ...
    ("20201025003000", BERLIN, D(2020, 10, 25, 0, 30)),
    ("20201025023000", BERLIN, D(2020, 10, 25, 2, 30)),
    # ... and UTC instants either side of the 01:00 UTC switch land on the right wall clock
    ("20201025003000+0000", BERLIN, D(2020, 10, 25, 2, 30)),  # still CEST (+2)
    ("20201025013000+0000", BERLIN, D(2020, 10, 25, 2, 30)),  # already CET (+1): 02:30 the second time
    ("20200329020000+0100", BERLIN, D(2020, 3, 29, 3)),  # 02:00 CET does not exist: it is 03:00 CEST
]


@pytest.mark.parametrize(("text", "zone", "expected"), TIMESTAMPS)
def test_timestamps_of_any_precision(text: str, zone: dt.tzinfo, expected: dt.datetime) -> None:
    assert t.timestamp(text, zone, AT) == expected


def test_offsets_convert_to_this_machines_zone_when_none_is_configured() -> None:
    aware = dt.datetime(2024, 6, 11, 9, 0, tzinfo=dt.UTC)
    assert t.timestamp("20240611090000+0000", None, AT) == aware.astimezone().replace(tzinfo=None)


def test_the_legacy_precision_component_is_ignored() -> None:
    msg = Message("MSH|^~\\&|A\rOBR|1|||||20190924143134^S\r")
    obr = msg.segment("OBR")
    assert obr is not None
    assert t.timestamp(obr.value(6), None, AT) == D(2019, 9, 24, 14, 31, 34)


@pytest.mark.parametrize("bad", ["2024-06-11", "20241311", "20240230", "2024061125", "abc", "20240611+01"])
def test_malformed_timestamps_are_a_data_type_error(bad: str) -> None:
    with pytest.raises(Hl7Error) as caught:
        t.timestamp(bad, BERLIN, AT)
    assert caught.value.code == 102
    assert caught.value.location == AT


def test_empty_and_null_timestamps_are_absent() -> None:
    assert t.timestamp("", BERLIN, AT) is None
    assert t.timestamp('""', BERLIN, AT) is None


@pytest.fixture(params=["UTC", "Pacific/Kiritimati", "America/Adak", "Asia/Kathmandu"])
def host_zone(request: pytest.FixtureRequest) -> Iterator[str]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    try:
        yield request.param
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("19660119", dt.date(1966, 1, 19)),
        ("196601190000+0200", dt.date(1966, 1, 19)),
        ("196601192330-1100", dt.date(1966, 1, 19)),
        ("19660119000000.0000+1400", dt.date(1966, 1, 19)),
        ("1962", None),
        ("196203", None),
        ('""', None),
    ],
)
def test_birth_dates_never_shift_whatever_the_host_zone(host_zone: str, text: str, expected: dt.date | None) -> None:
    assert t.birth_date(text, Location("PID", 1, 7)) == expected


def _composite(field: str) -> Message:
    return Message(f"MSH|^~\\&|A\rPID|1||||{field}\r")


def _pid5(field: str):  # type: ignore[no-untyped-def]
    pid = _composite(field).segment("PID")
    assert pid is not None
    return pid.repetitions(5)


@pytest.mark.parametrize(
    ("xpn", "pn"),
    [
        ("DOE^JOHN^Q^JR^DR^PHD", "DOE^JOHN^Q^DR^JR PHD"),  # suffix/prefix swap, degree after the suffix
        ("Doe^Jane^Marie^^Mrs", "Doe^Jane^Marie^Mrs"),
        ("Okafor^Chidi^^^Mr", "Okafor^Chidi^^Mr"),
        ("van&der&Berg^Anna", "van^Anna"),  # FN.1 only
        ("Doe^Jane^^^", "Doe^Jane"),
        ("JOHNSON \\T\\ JOHNSON^MARY", "JOHNSON & JOHNSON^MARY"),
        ("O\\S\\NEIL^PAT", "O NEIL^PAT"),  # ^ may not become a PN delimiter
        ("A\\E\\B^C", "A/B^C"),  # nor \ a value delimiter
        ("X=Y^Z", "X Y^Z"),  # nor = a group delimiter
        ("^\\", "^/"),  # a given name that is just a backslash (FIELD-NOTES B.11)
        ("SMYTHE^JON^^^^^A~SMITH^JOHN^^^^^L", "SMITH^JOHN"),  # the legal name wins
        ("Yamada^Taro^^^^^L^A~山田^太郎^^^^^L^I~やまだ^たろう^^^^^L^P", "Yamada^Taro=山田^太郎=やまだ^たろう"),
        ("山田^太郎", "山田^太郎"),  # untyped: alphabetic group, as dcm4chee and mwlkit do
        ("~SMITH^ANN", "SMITH^ANN"),
    ],
)
def test_xpn_to_person_name(xpn: str, pn: str) -> None:
    assert t.person_name_from_xpn(_pid5(xpn), Location("PID", 1, 5)).canonical() == pn


def test_a_name_longer_than_pn_allows_is_refused() -> None:
    with pytest.raises(Hl7Error) as caught:
        t.person_name_from_xpn(_pid5("A" * 60 + "^" + "B" * 10), Location("PID", 1, 5))
    assert caught.value.code == 102


def test_xcn_and_cnn_to_person_name() -> None:
    msg = Message("MSH|^~\\&|A\rPV1|1" + "|" * 7 + "R5678^Jones^Alice^^^Dr^MD\rOBR|1" + "|" * 33 + "T001&Brown&Kim&&&Dr^20240612\r")
    pv1, obr = msg.segment("PV1"), msg.segment("OBR")
    assert pv1 is not None and obr is not None
    assert t.first_person(pv1.repetitions(8), pv1.at(8)).canonical() == "Jones^Alice^^Dr^MD"
    assert t.person_name_from_xcn(obr.rep(34).sub(1), obr.at(34)).canonical() == "Brown^Kim^^Dr"


def test_cx_with_hd_issuer() -> None:
    msg = Message("MSH|^~\\&|A\rPID|1||200345678^^^GENHOSP&2.16.840.1.113883.3.9999.1&ISO^MR\r")
    pid = msg.segment("PID")
    assert pid is not None
    assert t.patient_id_from_cx(pid.rep(3), pid.at(3)) == PatientId(
        "200345678", Issuer("GENHOSP", "2.16.840.1.113883.3.9999.1", "ISO"), "MR"
    )


@pytest.mark.parametrize(("value", "sex"), [("M", Sex.MALE), ("F", Sex.FEMALE), ("O", Sex.OTHER), ("A", Sex.OTHER),
                                            ("N", Sex.OTHER), ("U", Sex.UNKNOWN), ("f", Sex.FEMALE), ('""', Sex.UNKNOWN)])
def test_sex_table_0001(value: str, sex: Sex) -> None:
    assert t.sex(value, Location("PID", 1, 8)) is sex


def test_sex_outside_table_0001_is_refused() -> None:
    with pytest.raises(Hl7Error) as caught:
        t.sex("Male", Location("PID", 1, 8))
    assert caught.value.code == 103


# -- DICOM VR limits -------------------------------------------------------------------------------------


def test_short_strings_lose_backslashes_and_control_characters_but_are_never_truncated() -> None:
    where = Location("OBR", 1, 18)
    assert vr.bounded(" A\\B\tC ", vr.SH, "SH", "accession", where) == "A/B C"
    with pytest.raises(Hl7Error) as caught:
        vr.bounded("A" * 17, vr.SH, "SH", "accession number", where)
    assert caught.value.code == 102 and caught.value.location == where
    assert "OBR-18 accession number" in caught.value.message


def test_medical_alerts_are_split_into_lo_values_at_word_boundaries() -> None:
    text = "Fall from ladder & blunt trauma; GCS 14^15; r/o liver laceration | splenic injury; side: left\\right"
    values = vr.lo_values(text)
    assert all(len(v) <= 64 for v in values)
    assert " ".join(values) == text.replace("\\", "/")
    assert vr.lo_values("x" * 150) == ("x" * 64, "x" * 64, "x" * 22)


@pytest.mark.parametrize(
    ("uid", "ok"),
    [("2.25.186720139475620031884613650946921155417", True), ("1.2.840.10008.1.1", True), ("2.25.0123", False),
     ("1.2.", False), ("1..2", False), ("2.25." + "1" * 61, False), ("1.2.3\x00", True), ("1.2.a", False)],
)
def test_uid_syntax(uid: str, ok: bool) -> None:
    where = Location("ZDS", 1, 1)
    if ok:
        assert vr.uid(uid, where) == uid.rstrip("\x00")
    else:
        with pytest.raises(Hl7Error):
            vr.uid(uid, where)


def test_code_strings_and_ae_titles() -> None:
    where = Location("IPC", 1, 9)
    assert vr.code_string(" ct ", "modality", where) == "CT"
    with pytest.raises(Hl7Error):
        vr.code_string("C-T", "modality", where)
    assert vr.ae_title(" CT2SCANNER ", where) == "CT2SCANNER"
    for bad in ("A\\B", "X" * 17):
        with pytest.raises(Hl7Error):
            vr.ae_title(bad, where)
