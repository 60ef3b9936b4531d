"""Worklist matching semantics in domain terms (PS3.4 C.2.2.2, MAPPING.md §3.2): no database, no DICOM."""

from __future__ import annotations

import datetime as dt

import pytest

from radsync.app.worklist import (
    AnyOf,
    DateRange,
    Exact,
    InstantRange,
    IsEmpty,
    TimeOfDayRange,
    Wildcard,
    WorklistItem,
    WorklistQuery,
    date_matches,
    name_matches,
    start_matches,
    text_matches,
    values_match,
)
from radsync.domain.ids import Code, EntityId, PatientId
from radsync.domain.names import NameGroup, PersonName
from radsync.domain.order import ImagingOrder, RequestedProcedure, ScheduledStep
from radsync.domain.patient import Patient
from radsync.domain.status import StepStatus


@pytest.mark.parametrize(
    ("match", "stored", "expected"),
    [
        (Exact("CT"), "CT", True),
        (Exact("CT"), "ct", False),  # case-sensitive outside person names
        (Exact("A1 "), "A1", True),  # padding is not significant
        (Exact("X"), "", False),  # an unknown value never matches a real key
        (Wildcard("A10?"), "A101", True),
        (Wildcard("A10?"), "A1011", False),
        (Wildcard("*"), "", False),  # the parser turns a lone * into universal matching before it gets here
        (Wildcard("a.b*"), "a.bcd", True),
        (Wildcard("a.b*"), "axbcd", False),  # regex characters are literal
        (Wildcard("1.2.(3)*"), "1.2.(3).4", True),
        (AnyOf(("A1", "B*")), "B7", True),
        (AnyOf(("A1", "B*")), "C", False),
        (IsEmpty(), "", True),
        (IsEmpty(), "x", False),
    ],
)
def test_text_matching(match: object, stored: str, expected: bool) -> None:
    assert text_matches(match, stored) is expected  # type: ignore[arg-type]


def test_multi_valued_attribute_matches_when_any_value_does() -> None:
    assert values_match(Exact("US2"), ("US1", "US2"))
    assert not values_match(Exact("US3"), ("US1", "US2"))
    assert values_match(IsEmpty(), ())
    assert not values_match(IsEmpty(), ("US1",))


YAMADA = PersonName(NameGroup("Yamada", "Tarou"), NameGroup("山田", "太郎"), NameGroup("やまだ", "たろう"))


@pytest.mark.parametrize(
    ("match", "name", "expected"),
    [
        (Exact("SMITH^JOHN"), PersonName.of("Smith", "John"), True),
        (Exact("smith^john^^^"), PersonName.of("Smith", "John"), True),  # trailing empty components
        (Exact("SMITH"), PersonName.of("Smith", "John"), False),  # single value: the whole name
        (Wildcard("SMITH*"), PersonName.of("Smith", "John"), True),
        (Wildcard("müller*"), PersonName.of("MULLER", "ZOE"), True),  # accent-insensitive both ways
        (Wildcard("MULLER*"), PersonName.of("Müller", "Zoë"), True),
        (Wildcard("s?ith^*"), PersonName.of("Smith", "John"), True),
        (Wildcard("山田*"), YAMADA, True),  # non-Latin query tries the ideographic group
        (Wildcard("やまだ*"), YAMADA, True),  # ... and the phonetic group
        (Wildcard("山田*"), PersonName.of("Yamada"), False),
        (Exact("Yamada^Tarou=山田^太郎"), YAMADA, True),  # group by group
        (Exact("Yamada^Tarou=山本^太郎"), YAMADA, False),
        (Wildcard("*=*=やまだ*"), YAMADA, True),
        (Wildcard("S*"), PersonName(), False),  # no name never matches a real key
        (IsEmpty(), PersonName(), True),
        (IsEmpty(), YAMADA, False),
        (AnyOf(("DOE*", "SMITH^JOHN")), PersonName.of("Smith", "John"), True),
    ],
)
def test_person_name_matching(match: object, name: PersonName, expected: bool) -> None:
    assert name_matches(match, name) is expected  # type: ignore[arg-type]


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2024, 6, day, hour, minute)


@pytest.mark.parametrize(
    ("match", "start", "expected"),
    [
        # combined date-time range: 11 June 22:00 -> 12 June 06:00 (a night shift)
        (InstantRange(at(11, 22), at(12, 6)), at(11, 23, 30), True),
        (InstantRange(at(11, 22), at(12, 6)), at(12, 5, 59), True),
        (InstantRange(at(11, 22), at(12, 6)), at(12, 6, 1), False),
        (InstantRange(at(11, 22), at(12, 6)), at(11, 21), False),
        (InstantRange(None, at(12, 6)), at(1, 0), True),
        (InstantRange(at(12, 6), None), at(30, 0), True),
        (TimeOfDayRange(dt.time(8), dt.time(12)), at(3, 9), True),
        (TimeOfDayRange(dt.time(8), dt.time(12)), at(3, 13), False),
        (TimeOfDayRange(dt.time(22), dt.time(6)), at(3, 23), True),  # wraps (time zone shifted)
        (TimeOfDayRange(dt.time(22), dt.time(6)), at(3, 5), True),
        (TimeOfDayRange(dt.time(22), dt.time(6)), at(3, 12), False),
        (TimeOfDayRange(None, dt.time(6)), at(3, 5), True),
    ],
)
def test_start_matching(match: object, start: dt.datetime, expected: bool) -> None:
    assert start_matches(match, start) is expected  # type: ignore[arg-type]


def test_date_matching() -> None:
    assert date_matches(DateRange(dt.date(1970, 1, 1), dt.date(1980, 1, 1)), dt.date(1975, 5, 5))
    assert not date_matches(DateRange(dt.date(1970, 1, 1), None), dt.date(1969, 12, 31))
    assert not date_matches(DateRange(None, None), None)
    assert date_matches(IsEmpty(), None)


NO_NAME = PersonName()


def item(status: StepStatus = StepStatus.SCHEDULED, *, stations: tuple[str, ...] = ("CT01",),
         performing: PersonName = NO_NAME, protocols: tuple[Code, ...] = ()) -> WorklistItem:
    pid = PatientId("P1")
    return WorklistItem(
        patient=Patient(id=pid, name=PersonName.of("Doe", "Jane")),
        order=ImagingOrder(patient_id=pid, accession=EntityId("A1")),
        procedure=RequestedProcedure("RP1", "1.2.3", code=Code("C1", "99X", "Chest CT")),
        step=ScheduledStep("S1", "CT", at(11, 8), stations, performing_physician=performing,
                           protocol_codes=protocols, status=status),
    )


def test_only_steps_still_to_be_done_are_listed_by_default() -> None:
    query = WorklistQuery()
    assert query.matches(item(StepStatus.SCHEDULED)) and query.matches(item(StepStatus.ARRIVED))
    for status in (StepStatus.IN_PROGRESS, StepStatus.COMPLETED, StepStatus.CANCELED, StepStatus.DISCONTINUED,
                   StepStatus.ON_HOLD):
        assert not query.matches(item(status))


def test_a_query_on_the_status_gets_what_it_asks_for() -> None:
    query = WorklistQuery(step_status=Exact("CANCELED"))
    assert query.matches(item(StepStatus.CANCELED))
    assert not query.matches(item(StepStatus.SCHEDULED))


def test_all_keys_must_match() -> None:
    query = WorklistQuery(accession=Exact("A1"), station_ae_title=Exact("CT01"), modality=Exact("CT"))
    assert query.matches(item())
    assert not query.matches(item(stations=("CT02",)))


def test_fallback_descriptions_are_matched_as_returned() -> None:
    chest = item(protocols=(Code("P1", "99P", "Chest routine"),))
    assert chest.procedure_description == "Chest CT" and chest.step_description == "Chest routine"
    assert WorklistQuery(procedure_description=Wildcard("Chest*")).matches(chest)
    assert WorklistQuery(step_description=Exact("Chest routine")).matches(chest)
    assert WorklistQuery(protocol_code=Exact("P1"), protocol_code_scheme=Exact("99P")).matches(chest)


def test_constrained_lists_only_the_keys_that_constrain() -> None:
    assert WorklistQuery(limit=10).constrained() == []
    assert WorklistQuery(accession=Exact("A1"), start=InstantRange()).constrained() == ["start", "accession"]
