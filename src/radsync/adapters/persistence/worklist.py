"""The worklist read side: one indexed SQL query per Modality Worklist C-FIND.

``SqlWorklistReader.find`` turns a ``WorklistQuery`` into a single SELECT over scheduled_steps joined with
requested_procedures, orders and patients (no N+1: everything an answer needs comes back in one row), filtered on
indexed columns:

=================================  ==========================================================================
query key                          index used
=================================  ==========================================================================
Accession Number                   ix_orders_accession, then ix_scheduled_steps_order_pk
Scheduled Station AE Title         ix_step_stations_ae_title (``pk IN (SELECT step_pk ...)``)
SPS start date / time              ix_scheduled_steps_status_start (status IN (...) AND start_at range)
Patient ID                         uq_patients_identifier, then ix_scheduled_steps_patient_pk
Patient's Name (prefix)            ix_patients_name_fold (SQLite GLOB) / ix_patients_name_fold_pattern (PG LIKE)
Study Instance UID (list)          uq_requested_procedures_study_instance_uid
Requested Procedure ID, SPS ID     ix_requested_procedures_procedure_id, ix_scheduled_steps_step_id
=================================  ==========================================================================

Wildcards: PostgreSQL's LIKE is case-sensitive, so ``*``/``?`` become ``%``/``_`` with ``%``, ``_`` and ``\\``
escaped; SQLite's LIKE ignores ASCII case and its prefix optimisation needs a NOCASE index, so on SQLite the pattern
runs as GLOB (case-sensitive, same ``*``/``?``, only ``[`` to escape) on the existing BINARY indexes. Person names
match ``patients.name_fold``, the folded alphabetic group, with the folded pattern.

Keys kept in JSON detail columns (physicians, descriptions, priority, admission ID, ...), time-of-day windows and
person-name queries that need the ideographic or phonetic group are not expressible here; for those the rows are
streamed and filtered with ``WorklistQuery.matches``, the reference semantics, which is applied to every row anyway.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import typing
from collections import OrderedDict
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, Text, cast, false, func, or_, select

from radsync.adapters.persistence import codec as c
from radsync.adapters.persistence.repositories import patient_from_row, procedure_from_row, step_from_row
from radsync.adapters.persistence.tables import (
    orders,
    patients,
    requested_procedures,
    scheduled_steps,
    step_stations,
)
from radsync.app.worklist import (
    AnyOf,
    DateRange,
    Exact,
    InstantRange,
    IsEmpty,
    TextMatch,
    WorklistItem,
    WorklistQuery,
    is_wildcard,
)
from radsync.domain.ids import PatientId
from radsync.domain.names import fold
from radsync.domain.order import ImagingOrder, Visit

s, p, o, pt = scheduled_steps, requested_procedures, orders, patients

# JSON detail columns come back as text: the text is part of the cache key, and is parsed only on a cache miss.
_COLUMNS = (
    s.c.pk.label("s_pk"),
    s.c.step_id,
    s.c.modality,
    s.c.start_at,
    s.c.status,
    s.c.station_ae_titles,
    cast(s.c.details, Text).label("s_details"),
    p.c.procedure_id,
    p.c.study_instance_uid,
    cast(p.c.details, Text).label("p_details"),
    o.c.pk.label("o_pk"),
    cast(o.c.details, Text).label("o_details"),
    pt.c.pk.label("pt_pk"),
    pt.c.patient_id,
    pt.c.issuer,
    pt.c.issuer_uid,
    pt.c.issuer_uid_type,
    pt.c.name,
    pt.c.birth_date,
    pt.c.sex,
    cast(pt.c.details, Text).label("pt_details"),
)

_STREAM_BATCH = 500
# Items kept decoded between queries. Modalities poll the same worklist every few minutes; an unchanged row is
# not decoded again. The key is the row's whole content, so a changed row is a new entry (never a stale answer).
ITEM_CACHE_SIZE = 10_000


class SqlWorklistReader:
    """``WorklistReader`` over the read engine (``Engines.read``): one connection and one SELECT per query.

    Identical rows give the identical ``WorklistItem`` object across queries (see ``ITEM_CACHE_SIZE``), which also
    lets the DICOM adapter reuse an item's encoded answer.
    """

    def __init__(self, engine: Engine, cache_size: int = ITEM_CACHE_SIZE) -> None:
        self._engine = engine
        self._items = _ItemCache(cache_size)

    def find(self, query: WorklistQuery) -> list[WorklistItem]:
        statement, exact = worklist_statement(query, self._engine.dialect.name)
        limit = None if query.limit is None else query.limit + 1
        if exact and limit is not None:
            statement = statement.limit(limit)
        matches = query.matcher()
        items: list[WorklistItem] = []
        with self._engine.connect() as conn:
            result = conn.execution_options(yield_per=_STREAM_BATCH).execute(statement)
            for row in result:
                item = self._items.get(tuple(row))
                if matches(item):
                    items.append(item)
                    if limit is not None and len(items) >= limit:
                        break
            result.close()
        return items


# -- the statement -----------------------------------------------------------------------------------------------


def worklist_statement(query: WorklistQuery, dialect: str) -> tuple[Select[Any], bool]:
    """The SELECT for ``query`` and whether its WHERE clause expresses the whole query (then LIMIT is safe)."""
    builder = WhereClauses(dialect)
    # A step whose modality has no configured station is on nobody's worklist: Scheduled Station AE Title is a
    # Type 1 return key (PS3.4 K.6), so it could not be answered correctly anyway (docs/worklist.md, Stations).
    builder.add(s.c.station_ae_titles != "")
    statuses = query.statuses()
    if statuses is not None:
        builder.add(builder.likely(s.c.status.in_(sorted(statuses))))
    builder.text(s.c.status, query.step_status)
    builder.text(s.c.modality, query.modality)
    builder.text(s.c.step_id, query.step_id)
    builder.text(p.c.procedure_id, query.procedure_id)
    builder.text(p.c.study_instance_uid, query.study_instance_uid)
    builder.text(o.c.accession, query.accession)
    builder.text(o.c.placer_number, query.placer_number)
    builder.text(o.c.filler_number, query.filler_number)
    builder.text(pt.c.patient_id, query.patient_id)
    builder.text(pt.c.issuer, query.patient_issuer)
    builder.text(pt.c.sex, query.sex)
    builder.stations(query.station_ae_title)
    builder.start(query.start)
    builder.birth_date(query.birth_date)
    builder.patient_name(query.patient_name)
    for residual in (
        "performing_physician", "step_description", "station_name", "step_location", "protocol_code",
        "protocol_code_scheme", "procedure_description", "procedure_code", "procedure_code_scheme", "priority",
        "requesting_physician", "referring_physician", "admission_id", "patient_location",
    ):
        if getattr(query, residual) is not None:
            builder.exact = False
    statement = (
        select(*_COLUMNS)
        .select_from(
            s.join(p, p.c.pk == s.c.procedure_pk).join(o, o.c.pk == s.c.order_pk).join(pt, pt.c.pk == s.c.patient_pk)
        )
        .where(*builder.clauses)
        .order_by(s.c.start_at, s.c.pk)
    )
    return statement, builder.exact


class WhereClauses:
    """Collects WHERE clauses; ``exact`` turns False when a constraint is left to ``WorklistQuery.matches``."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"
        self.clauses: list[ColumnElement[bool]] = []
        self.exact = True

    def add(self, clause: ColumnElement[bool]) -> None:
        self.clauses.append(clause)

    def likely(self, clause: ColumnElement[bool]) -> ColumnElement[bool]:
        """Mark a clause most rows satisfy, so SQLite's planner (no statistics) prefers a selective index.

        Without it SQLite treats ``status IN (...)`` as selective and walks ix_scheduled_steps_status_start over
        every open step even when the query names an accession; ``likely()`` only changes the plan, never the
        result. PostgreSQL plans from its statistics and needs no hint.
        """
        return cast_bool(func.likely(clause)) if self.sqlite else clause

    def text(self, column: Any, match: TextMatch | None) -> None:
        if match is not None:
            self.add(self._text_clause(column, match))

    def _text_clause(self, column: Any, match: TextMatch) -> ColumnElement[bool]:
        if isinstance(match, IsEmpty):
            return cast_bool(column == "")
        values = match.values if isinstance(match, AnyOf) else (match.value,) if isinstance(match, Exact) else (
            match.pattern,
        )
        exact = sorted({v.strip() for v in values if not is_wildcard(v)} - {""})
        patterns = [v.strip() for v in values if is_wildcard(v)]
        alternatives: list[ColumnElement[bool]] = []
        if len(exact) == 1:
            alternatives.append(cast_bool(column == exact[0]))
        elif exact:
            alternatives.append(cast_bool(column.in_(exact)))
        alternatives.extend(self._pattern(column, pattern) for pattern in patterns)
        if not alternatives:
            return false()
        return alternatives[0] if len(alternatives) == 1 else or_(*alternatives)

    def _pattern(self, column: Any, pattern: str) -> ColumnElement[bool]:
        """Case-sensitive wildcard match: GLOB on SQLite, LIKE with escapes on PostgreSQL."""
        if self.sqlite:
            return cast_bool(column.op("GLOB")(pattern.replace("[", "[[]")))
        escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return cast_bool(column.like(escaped.replace("*", "%").replace("?", "_"), escape="\\"))

    def stations(self, match: TextMatch | None) -> None:
        """Multi-valued Scheduled Station AE Title: one step_stations row per (step, AE title)."""
        if match is None:
            return
        if isinstance(match, IsEmpty):
            self.add(s.c.station_ae_titles == "")  # never true for a listed step: such a query finds nothing
            return
        matching = select(step_stations.c.step_pk).where(self._text_clause(step_stations.c.ae_title, match))
        self.add(s.c.pk.in_(matching))

    def start(self, match: object) -> None:
        if match is None:
            return
        if isinstance(match, InstantRange):
            if match.lower is not None:
                self.add(s.c.start_at >= match.lower)
            if match.upper is not None:
                self.add(s.c.start_at <= match.upper)
            return
        self.exact = False  # a time-of-day window on any date: no index can serve it

    def birth_date(self, match: DateRange | IsEmpty | None) -> None:
        if match is None:
            return
        if isinstance(match, IsEmpty):
            self.add(pt.c.birth_date == "")
            return
        self.add(pt.c.birth_date != "")
        if match.lower is not None:
            self.add(pt.c.birth_date >= match.lower.strftime("%Y%m%d"))
        if match.upper is not None:
            self.add(pt.c.birth_date <= match.upper.strftime("%Y%m%d"))

    def patient_name(self, match: TextMatch | None) -> None:
        """Latin single-group names run on the folded alphabetic group; anything else is left to ``matches``."""
        if match is None:
            return
        if isinstance(match, IsEmpty):
            self.add(pt.c.name == "")
            return
        values = match.values if isinstance(match, AnyOf) else (
            (match.value,) if isinstance(match, Exact) else (match.pattern,)
        )
        if any("=" in v or _non_latin(v) for v in values):
            self.exact = False
            return
        folded = tuple(fold(v.strip().rstrip("^")) for v in values)
        if any(v in ("", "*") for v in folded):
            return
        self.add(self._text_clause(pt.c.name_fold, AnyOf(folded)))


def cast_bool(clause: Any) -> ColumnElement[bool]:
    """Type a SQL expression built from an untyped column as the boolean clause it is."""
    return typing.cast(ColumnElement[bool], clause)


def _non_latin(text: str) -> bool:
    return any(ord(ch) > 0x24F and ch.isalpha() for ch in text)


# -- rows to the read model --------------------------------------------------------------------------------------


class _ItemCache:
    """Row content -> ``WorklistItem``, least recently used first out; safe to share between threads."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[Any, ...], WorklistItem] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, row: tuple[Any, ...]) -> WorklistItem:
        with self._lock:
            item = self._items.get(row)
            if item is not None:
                self._items.move_to_end(row)
                return item
        item = _item_from_row(row)
        with self._lock:
            self._items[row] = item
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        return item


def _item_from_row(row: tuple[Any, ...]) -> WorklistItem:
    (_s_pk, step_id, modality, start_at, status, stations, s_details, procedure_id, study_uid, p_details, _o_pk,
     o_details, _pt_pk, patient_id, issuer, issuer_uid, issuer_uid_type, name, birth_date, sex, pt_details) = row
    patient = patient_from_row(
        {
            "patient_id": patient_id,
            "issuer": issuer,
            "issuer_uid": issuer_uid,
            "issuer_uid_type": issuer_uid_type,
            "name": name,
            "birth_date": birth_date,
            "sex": sex,
            "details": json.loads(pt_details),
        }
    )
    order = _order_from_details(json.loads(o_details), patient.id)
    procedure = procedure_from_row(
        {"procedure_id": procedure_id, "study_instance_uid": study_uid, "details": json.loads(p_details)}, ()
    )
    step = step_from_row(
        {
            "step_id": step_id,
            "modality": modality,
            "start_at": _naive(start_at),
            "station_ae_titles": stations,
            "details": json.loads(s_details),
            "status": status,
        }
    )
    return WorklistItem(patient=patient, order=order, procedure=procedure, step=step)


def _naive(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=None) if value.tzinfo is not None else value


def _order_from_details(d: dict[str, Any], patient_id: PatientId) -> ImagingOrder:
    """The order part of ``SqlOrderRepository._load`` (same JSON layout), without its procedures."""
    visit = d["visit"]
    return ImagingOrder(
        patient_id=patient_id,
        accession=c.entity_from(d["accession"]),
        placer_number=c.entity_from(d["placer_number"]),
        filler_number=c.entity_from(d["filler_number"]),
        visit=Visit(
            admission_id=c.entity_from(visit["admission_id"]),
            referring_physician=c.name_from(visit["referring_physician"]),
            location=visit["location"],
            patient_class=visit["patient_class"],
        ),
        requesting_physician=c.name_from(d["requesting_physician"]),
        ordered_at=c.datetime_from(d["ordered_at"]),
        medical_alerts=tuple(d["medical_alerts"]),
        patient_state=d["patient_state"],
    )
