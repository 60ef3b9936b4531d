"""The worklist query: what a modality may ask for, and when a scheduled step matches it.

One ``WorklistQuery`` holds the matching constraints of a Modality Worklist C-FIND (PS3.4 K.2.2, K.6.1.2) already
parsed out of DICOM: the DICOM adapter builds it from the identifier, a FHIR search could build it from URL
parameters. ``WorklistQuery.matches`` is the reference semantics (PS3.4 C.2.2.2, MAPPING.md §3.2); the persistence
adapter turns the same query into one indexed SQL statement and uses ``matches`` for whatever SQL cannot express.

Matching rules, in domain words:

* ``None`` is universal matching: the key constrains nothing (C.2.2.2.3).
* ``Exact`` is single value matching: equal after trimming padding, case-sensitive, except person names.
* ``Wildcard`` uses ``*`` (any run of characters, also none) and ``?`` (exactly one character) (C.2.2.2.4).
* ``AnyOf`` matches when any listed value (exact or wildcard) does: list of UID matching (C.2.2.2.2), also
  accepted for other keys because modalities send ``CT\\PT``.
* ``IsEmpty`` is empty value matching (the ``""`` key): only items without a value match.
* A stored empty value never matches a real key (K.2.2.1.1.1): ``Exact("X")`` does not match ``""``.
* Person names match case- and accent-insensitively (``radsync.domain.names.fold``) against the alphabetic group;
  a query with ``=`` matches group by group, a query with non-Latin letters also tries the ideographic and
  phonetic groups (MAPPING.md §3.2 rule 5).
* Dates and times compare by meaning. The Scheduled Procedure Step start date and time form one combined range
  (PS3.4 Table K.6-1, C.2.2.2.5.1): ``InstantRange`` is the continuous interval, so a night shift crosses midnight;
  a time without a date is ``TimeOfDayRange``.
* Multi-valued stored attributes (Scheduled Station AE Title) match when any value matches (K.2.2.3).
* Only steps still to be done (``StepStatus.on_worklist``) are listed unless the query matches on the status.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any, Protocol

from radsync.domain.ids import Code
from radsync.domain.names import NameGroup, PersonName, fold
from radsync.domain.order import ImagingOrder, RequestedProcedure, ScheduledStep
from radsync.domain.patient import Patient
from radsync.domain.status import StepStatus

# -- constraints -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exact:
    """Single value matching."""

    value: str


@dataclass(frozen=True, slots=True)
class Wildcard:
    """Wildcard matching: ``*`` any run of characters (also none), ``?`` exactly one character."""

    pattern: str


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Any of the values (each exact or a wildcard pattern) matches."""

    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IsEmpty:
    """Empty value matching: the stored value must be empty."""


TextMatch = Exact | Wildcard | AnyOf | IsEmpty


@dataclass(frozen=True, slots=True)
class DateRange:
    """Inclusive date range; ``None`` leaves that end open. A single date has ``lower == upper``."""

    lower: dt.date | None = None
    upper: dt.date | None = None


@dataclass(frozen=True, slots=True)
class InstantRange:
    """Inclusive range of wall-clock instants in the site's time zone; ``None`` leaves that end open."""

    lower: dt.datetime | None = None
    upper: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class TimeOfDayRange:
    """Inclusive time-of-day range on any date. ``lower > upper`` wraps around midnight (a shifted night shift)."""

    lower: dt.time | None = None
    upper: dt.time | None = None


StartMatch = InstantRange | TimeOfDayRange


def is_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


# -- the query ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorklistQuery:
    """Matching constraints of one worklist query, one field per supported key (``None`` = universal)."""

    # Scheduled Procedure Step (the one item of the Scheduled Procedure Step Sequence)
    station_ae_title: TextMatch | None = None
    modality: TextMatch | None = None
    start: StartMatch | None = None
    performing_physician: TextMatch | None = None
    step_id: TextMatch | None = None
    step_description: TextMatch | None = None
    station_name: TextMatch | None = None
    step_location: TextMatch | None = None
    step_status: TextMatch | None = None
    protocol_code: TextMatch | None = None
    protocol_code_scheme: TextMatch | None = None
    # Requested Procedure
    procedure_id: TextMatch | None = None
    study_instance_uid: TextMatch | None = None
    procedure_description: TextMatch | None = None
    procedure_code: TextMatch | None = None
    procedure_code_scheme: TextMatch | None = None
    priority: TextMatch | None = None
    # Imaging Service Request and visit
    accession: TextMatch | None = None
    placer_number: TextMatch | None = None
    filler_number: TextMatch | None = None
    requesting_physician: TextMatch | None = None
    referring_physician: TextMatch | None = None
    admission_id: TextMatch | None = None
    patient_location: TextMatch | None = None
    # Patient
    patient_id: TextMatch | None = None
    patient_issuer: TextMatch | None = None
    patient_name: TextMatch | None = None
    birth_date: DateRange | IsEmpty | None = None
    sex: TextMatch | None = None
    # At most this many items are wanted; the reader may stop after ``limit + 1`` to tell the caller there is more.
    limit: int | None = None

    def statuses(self) -> frozenset[str] | None:
        """The default status filter (steps still to be done), or ``None`` when the query matches on the status."""
        if self.step_status is not None:
            return None
        return ON_WORKLIST

    def constrained(self) -> list[str]:
        """Names of the fields that constrain (everything but universal keys and the limit)."""
        return [f.name for f in fields(self) if f.name != "limit" and getattr(self, f.name) is not None]

    def matches(self, item: WorklistItem) -> bool:
        """Whether ``item`` is an answer to this query: the reference semantics every reader must agree with."""
        return self.matcher()(item)

    def matcher(self) -> Callable[[WorklistItem], bool]:
        """``matches`` with the constrained keys looked up once, for filtering many items."""
        statuses = self.statuses()
        checks = [(_CHECKS[name], getattr(self, name)) for name in self.constrained()]

        def matches(item: WorklistItem) -> bool:
            if statuses is not None and item.step.status.value not in statuses:
                return False
            return all(check(constraint, item) for check, constraint in checks)

        return matches


ON_WORKLIST = frozenset(s.value for s in StepStatus if s.on_worklist)


# -- the read model ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorklistItem:
    """One Modality Worklist item: a scheduled step with its requested procedure, order and patient (PS3.4 K.6).

    ``order`` carries no procedures and ``procedure`` no steps here: the item is exactly one step's context.
    """

    patient: Patient
    order: ImagingOrder
    procedure: RequestedProcedure
    step: ScheduledStep

    @property
    def procedure_description(self) -> str:
        """Requested Procedure Description, falling back to the code meaning (Type 1C: one of them is present)."""
        code = self.procedure.code
        return self.procedure.description or (code.meaning if code else "")

    @property
    def step_description(self) -> str:
        """SPS Description, falling back to the first protocol's meaning (Type 1C with the protocol codes)."""
        codes = self.step.protocol_codes
        return self.step.description or (codes[0].meaning if codes else "")

    @property
    def medical_alerts(self) -> tuple[str, ...]:
        """The order's alerts (OBR-13) first, then the patient's, without repeats."""
        return tuple(dict.fromkeys(a for a in (*self.order.medical_alerts, *self.patient.medical_alerts) if a))

    @property
    def patient_state(self) -> str:
        return self.order.patient_state or self.patient.patient_state


class WorklistReader(Protocol):
    """Port: find the items that answer a query (implemented over SQL in adapters/persistence/worklist.py)."""

    def find(self, query: WorklistQuery) -> list[WorklistItem]:
        """Return the matching items ordered by start, at most ``query.limit + 1`` of them when a limit is set."""
        ...


def find_scheduled_steps(reader: WorklistReader, query: WorklistQuery) -> list[WorklistItem]:
    """The worklist use case: the items answering ``query`` (called by the MWL C-FIND SCP, later FHIR search)."""
    return reader.find(query)


# -- matching primitives -----------------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def wildcard_regex(pattern: str) -> re.Pattern[str]:
    """Compile a DICOM wildcard pattern: ``*`` any run, ``?`` one character, everything else literal."""
    parts = (".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile("".join(parts), re.DOTALL)


def _value_matches(query_value: str, stored: str) -> bool:
    if is_wildcard(query_value):
        return wildcard_regex(query_value).fullmatch(stored) is not None
    return query_value == stored


def text_matches(match: TextMatch, stored: str) -> bool:
    """Match one stored value: trimmed of DICOM padding, case-sensitive; an empty value never matches a real key."""
    stored = stored.strip()
    if isinstance(match, IsEmpty):
        return not stored
    if not stored:
        return False
    if isinstance(match, Exact):
        return match.value.strip() == stored
    if isinstance(match, Wildcard):
        return wildcard_regex(match.pattern).fullmatch(stored) is not None
    return any(_value_matches(v.strip(), stored) for v in match.values)


def values_match(match: TextMatch, stored: Sequence[str]) -> bool:
    """Match a multi-valued attribute: any value matching is a match (K.2.2.3); no values is an empty value."""
    if isinstance(match, IsEmpty):
        return not any(v.strip() for v in stored)
    return any(text_matches(match, value) for value in stored)


_LATIN_LIMIT = 0x24F  # end of Latin Extended-B: letters above it are not alphabetic-group material


def _has_non_latin(text: str) -> bool:
    return any(ord(ch) > _LATIN_LIMIT and ch.isalpha() for ch in text)


def _group_matches(query_group: str, group: NameGroup) -> bool:
    query = fold(query_group.strip().rstrip("^"))
    stored = fold(group.joined())
    if not stored:
        return False
    return _value_matches(query, stored)


def _single_name_matches(query: str, name: PersonName) -> bool:
    groups = (name.alphabetic, name.ideographic, name.phonetic)
    if "=" in query:
        wanted = [(q, g) for q, g in zip(query.split("="), groups, strict=False) if q.strip() not in ("", "*")]
        return all(_group_matches(q, g) for q, g in wanted)
    if query.strip() in ("", "*"):
        return True
    targets = groups if _has_non_latin(query) else groups[:1]
    return any(_group_matches(query, g) for g in targets)


def name_matches(match: TextMatch, name: PersonName) -> bool:
    """Person name matching: case- and accent-insensitive, group-aware (MAPPING.md §3.2 rule 5)."""
    if isinstance(match, IsEmpty):
        return name.is_empty()
    if name.is_empty():
        return False
    if isinstance(match, Exact):
        return _single_name_matches(match.value, name)
    if isinstance(match, Wildcard):
        return _single_name_matches(match.pattern, name)
    return any(_single_name_matches(v, name) for v in match.values)


def start_matches(match: StartMatch, start: dt.datetime) -> bool:
    """Combined date-time range (an interval of instants) or a time-of-day window on any date."""
    if isinstance(match, InstantRange):
        return (match.lower is None or start >= match.lower) and (match.upper is None or start <= match.upper)
    t = start.time()
    lower, upper = match.lower, match.upper
    if lower is not None and upper is not None and lower > upper:
        return t >= lower or t <= upper
    return (lower is None or t >= lower) and (upper is None or t <= upper)


def date_matches(match: DateRange | IsEmpty, value: dt.date | None) -> bool:
    if isinstance(match, IsEmpty):
        return value is None
    if value is None:
        return False
    return (match.lower is None or value >= match.lower) and (match.upper is None or value <= match.upper)


def _codes_match(match: TextMatch, codes: Iterable[Code | None], part: Callable[[Code], str]) -> bool:
    return values_match(match, [part(c) for c in codes if c is not None])


# -- the key table: which part of an item each query field matches ------------------------------------------------

# The constraint is the field's value (its type depends on the field, see WorklistQuery).
_Check = Callable[[Any, WorklistItem], bool]


def _text(get: Callable[[WorklistItem], str]) -> _Check:
    return lambda m, item: text_matches(m, get(item))


def _name(get: Callable[[WorklistItem], PersonName]) -> _Check:
    return lambda m, item: name_matches(m, get(item))


_CHECKS: dict[str, _Check] = {
    "station_ae_title": lambda m, i: values_match(m, i.step.station_ae_titles),
    "modality": _text(lambda i: i.step.modality),
    "start": lambda m, i: start_matches(m, i.step.start),
    "performing_physician": _name(lambda i: i.step.performing_physician),
    "step_id": _text(lambda i: i.step.step_id),
    "step_description": _text(lambda i: i.step_description),
    "station_name": _text(lambda i: i.step.station_name),
    "step_location": _text(lambda i: i.step.location),
    "step_status": _text(lambda i: i.step.status.value),
    "protocol_code": lambda m, i: _codes_match(m, i.step.protocol_codes, lambda c: c.value),
    "protocol_code_scheme": lambda m, i: _codes_match(m, i.step.protocol_codes, lambda c: c.scheme),
    "procedure_id": _text(lambda i: i.procedure.procedure_id),
    "study_instance_uid": _text(lambda i: i.procedure.study_instance_uid),
    "procedure_description": _text(lambda i: i.procedure_description),
    "procedure_code": lambda m, i: _codes_match(m, [i.procedure.code], lambda c: c.value),
    "procedure_code_scheme": lambda m, i: _codes_match(m, [i.procedure.code], lambda c: c.scheme),
    "priority": _text(lambda i: i.procedure.priority.value),
    "accession": _text(lambda i: i.order.accession.value),
    "placer_number": _text(lambda i: i.order.placer_number.value),
    "filler_number": _text(lambda i: i.order.filler_number.value),
    "requesting_physician": _name(lambda i: i.order.requesting_physician),
    "referring_physician": _name(lambda i: i.order.visit.referring_physician),
    "admission_id": _text(lambda i: i.order.visit.admission_id.value),
    "patient_location": _text(lambda i: i.order.visit.location),
    "patient_id": _text(lambda i: i.patient.id.value),
    "patient_issuer": _text(lambda i: i.patient.id.issuer.namespace),
    "patient_name": _name(lambda i: i.patient.name),
    "birth_date": lambda m, i: date_matches(m, i.patient.birth_date),
    "sex": _text(lambda i: i.patient.sex.value),
}

assert set(_CHECKS) == {f.name for f in fields(WorklistQuery)} - {"limit"}, "every query field needs a check"
