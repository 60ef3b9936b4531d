"""The archive read side in SQL: Q/R queries over studies, series and instances with the current truth joined in.

``SqlArchiveReader`` implements ``app.archive.ArchiveReader``. A study's current truth is not stored on the study:
a MATCHED study reads its patient through study_links -> orders -> patients and its accessions from the linked
orders, so a demographic correction is one UPDATE of the patients row and shows in the next answer (issue 5 item
1: cost independent of the number of instances). Unassigned and conflict studies answer with their columns as
received.

Patient-level and accession keys therefore run as two indexed branches whose results are united:

=====================  ===========================================================  ==============================
key                    MATCHED branch (current truth)                                UNASSIGNED / CONFLICT branch
=====================  ===========================================================  ==============================
Patient ID             uq_patients_identifier -> ix_orders_patient_pk ->             ix_studies_patient_id
                       ix_study_links_order_pk
Accession Number       ix_orders_accession -> ix_study_links_order_pk                ix_studies_accession
Patient's Name         ix_patients_name_fold (GLOB / LIKE prefix)                    ix_studies_state, then the name
                                                                                     column alone matched in Python
                                                                                     (bounded by the queue's size)
=====================  ===========================================================  ==============================

Study-level keys: Study Instance UID (uq_studies_study_instance_uid), Study Date (ix_studies_study_date), Modalities
in Study (ix_series_modality, through the series). Series and instance queries go through the study's and series'
unique UIDs. Whatever SQL leaves open is decided by ``app.archive.*_matches``, applied to every candidate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Select, and_, func, select

from radsync.adapters.persistence import codec as c
from radsync.adapters.persistence.repositories import PATIENT_COLUMNS, patient_from_row
from radsync.adapters.persistence.tables import (
    instances,
    orders,
    patients,
    requested_procedures,
    series,
    studies,
    study_links,
)
from radsync.adapters.persistence.worklist import WhereClauses, cast_bool
from radsync.app.archive import (
    ArchiveQuery,
    Demographics,
    InstanceRecord,
    LinkedOrder,
    SeriesRecord,
    StudyRecord,
    instance_matches,
    series_matches,
    study_matches,
)
from radsync.app.worklist import AnyOf, DateRange, Exact, IsEmpty, TextMatch, name_matches
from radsync.domain.ids import EntityId, Issuer, PatientId
from radsync.domain.patient import Sex
from radsync.domain.study import StudyState

_MATCHED = StudyState.MATCHED.value
_NOT_MATCHED = (StudyState.UNASSIGNED.value, StudyState.CONFLICT.value)
_PATIENT_KEYS = ("patient_id", "patient_issuer", "patient_name", "birth_date", "sex")
# Series columns an answer needs (not the JSON details: PostgreSQL cannot GROUP BY json).
_SERIES_COLUMNS = (
    series.c.pk,
    series.c.study_pk,
    series.c.series_instance_uid,
    series.c.modality,
    series.c.series_number,
    series.c.description,
)


class SqlArchiveReader:
    """``ArchiveReader`` over the read engine: a few indexed statements per query, no file access."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name

    # -- studies ---------------------------------------------------------------------------------------------

    def find_studies(self, query: ArchiveQuery) -> list[StudyRecord]:
        with self._engine.connect() as conn:
            pks = self._candidate_studies(conn, query)
            found: list[StudyRecord] = []
            limit = None if query.limit is None else query.limit + 1
            for chunk in _chunks(pks, 500):
                for record in self._load_studies(conn, studies.c.pk.in_(chunk), counts=query.counts):
                    if study_matches(query, record):
                        found.append(record)
                        if limit is not None and len(found) >= limit:
                            return found
            return found

    def studies(self, study_instance_uids: Collection[str]) -> list[StudyRecord]:
        if not study_instance_uids:
            return []
        with self._engine.connect() as conn:
            return self._load_studies(conn, studies.c.study_instance_uid.in_(list(study_instance_uids)), counts=True)

    def _candidate_studies(self, conn: Connection, query: ArchiveQuery) -> list[int]:
        """Study pks the indexed keys allow, ascending; the caller applies the full semantics."""
        common = self._study_clauses(query)
        patient_keyed = any(getattr(query, k) is not None for k in _PATIENT_KEYS) or query.accession is not None
        if not patient_keyed:
            return list(conn.execute(select(studies.c.pk).where(*common).order_by(studies.c.pk)).scalars())
        # MATCHED: through the links to the current patient and the linked orders.
        linked = WhereClauses(self._dialect)
        linked.text(patients.c.patient_id, query.patient_id)
        linked.text(patients.c.issuer, query.patient_issuer)
        linked.text(patients.c.sex, query.sex)
        linked.birth_date(query.birth_date)
        linked.patient_name(query.patient_name)
        linked.text(orders.c.accession, query.accession)
        via_links = (
            select(study_links.c.study_pk)
            .select_from(
                study_links.join(orders, orders.c.pk == study_links.c.order_pk).join(
                    patients, patients.c.pk == orders.c.patient_pk
                )
            )
            .where(*linked.clauses)
        )
        matched = select(studies.c.pk).where(studies.c.state == _MATCHED, studies.c.pk.in_(via_links), *common)
        # UNASSIGNED / CONFLICT: the columns as received (names are left to study_matches).
        received = WhereClauses(self._dialect)
        received.text(studies.c.patient_id, query.patient_id)
        received.text(studies.c.patient_issuer, query.patient_issuer)
        received.text(studies.c.sex, query.sex)
        received.text(studies.c.accession, query.accession)
        as_received = select(studies.c.pk).where(
            studies.c.state.in_(_NOT_MATCHED), *received.clauses, *_date_clauses(studies.c.birth_date, query.birth_date),
            *common,
        )
        pks = set(conn.execute(matched).scalars())
        if query.patient_name is None:
            pks.update(conn.execute(as_received).scalars())
        else:  # names as received are not folded in the table: match the name column alone, then load the hits
            rows = conn.execute(as_received.with_only_columns(studies.c.pk, studies.c.patient_name))
            pks.update(pk for pk, name in rows if name_matches(query.patient_name, c.name_from(name)))
        return sorted(pks)

    def _study_clauses(self, query: ArchiveQuery) -> list[ColumnElement[bool]]:
        where = WhereClauses(self._dialect)
        where.text(studies.c.study_instance_uid, query.study_instance_uid)
        clauses = list(where.clauses)
        clauses.extend(_date_clauses(studies.c.study_date, query.study_date))
        if query.modalities is not None and not isinstance(query.modalities, IsEmpty):
            by_modality = WhereClauses(self._dialect)
            by_modality.text(series.c.modality, _upper(query.modalities))
            clauses.append(studies.c.pk.in_(select(series.c.study_pk).where(*by_modality.clauses)))
        return clauses

    def _load_studies(self, conn: Connection, where: ColumnElement[bool], *, counts: bool) -> list[StudyRecord]:
        """The studies with their current truth; series and instance counts only when ``counts`` (else 0)."""
        rows = conn.execute(select(studies).where(where).order_by(studies.c.pk)).all()
        if not rows:
            return []
        pks = [r.pk for r in rows]
        matched = [r.pk for r in rows if r.state == _MATCHED]
        links = self._links(conn, matched) if matched else {}
        series_counts: dict[int, int] = {} if not counts else dict(
            conn.execute(  # type: ignore[arg-type]
                select(series.c.study_pk, func.count(func.distinct(instances.c.series_pk)))
                .select_from(series.join(instances, instances.c.series_pk == series.c.pk))
                .where(series.c.study_pk.in_(pks), instances.c.quarantine == "")
                .group_by(series.c.study_pk)
            ).all()
        )
        instance_counts: dict[int, int] = {} if not counts else dict(
            conn.execute(  # type: ignore[arg-type]
                select(instances.c.study_pk, func.count())
                .where(instances.c.study_pk.in_(pks), instances.c.quarantine == "")
                .group_by(instances.c.study_pk)
            ).all()
        )
        return [
            _study_record(r._mapping, links.get(r.pk), series_counts.get(r.pk, 0), instance_counts.get(r.pk, 0))
            for r in rows
        ]

    def _links(self, conn: Connection, study_pks: Sequence[int]) -> dict[int, tuple[Demographics, list[LinkedOrder]]]:
        rows = conn.execute(
            select(
                study_links.c.study_pk,
                study_links.c.step_ids,
                requested_procedures.c.procedure_id,
                requested_procedures.c.study_instance_uid.label("procedure_uid"),
                requested_procedures.c.details.label("procedure_details"),
                orders.c.details.label("order_details"),
                *PATIENT_COLUMNS,
            )
            .select_from(
                study_links.join(requested_procedures, requested_procedures.c.pk == study_links.c.procedure_pk)
                .join(orders, orders.c.pk == study_links.c.order_pk)
                .join(patients, patients.c.pk == orders.c.patient_pk)
            )
            .where(study_links.c.study_pk.in_(list(study_pks)))
            .order_by(study_links.c.study_pk, study_links.c.pk)
        ).all()
        out: dict[int, tuple[Demographics, list[LinkedOrder]]] = {}
        for r in rows:
            entry = out.get(r.study_pk)
            if entry is None:
                held = patient_from_row(r._mapping)
                patient = Demographics(held.id, held.name, held.birth_date, held.sex)
                entry = out[r.study_pk] = (patient, [])
            entry[1].append(
                LinkedOrder(
                    c.entity_from(r.order_details["accession"]),
                    r.procedure_id,
                    r.procedure_uid,
                    (r.procedure_details or {}).get("description", ""),
                    tuple(s for s in r.step_ids.split("\\") if s),
                    c.name_from(((r.order_details or {}).get("visit") or {}).get("referring_physician")),
                )
            )
        return out

    # -- series and instances ---------------------------------------------------------------------------------

    def find_series(self, query: ArchiveQuery) -> list[SeriesRecord]:
        with self._engine.connect() as conn:
            where = WhereClauses(self._dialect)
            where.text(studies.c.study_instance_uid, query.study_instance_uid)
            where.text(series.c.series_instance_uid, query.series_instance_uid)
            if query.modality is not None:
                where.text(series.c.modality, _upper(query.modality))
            statement = (
                select(*_SERIES_COLUMNS, func.count(instances.c.pk).label("instance_count"))
                .select_from(
                    series.join(studies, studies.c.pk == series.c.study_pk).join(
                        instances, and_(instances.c.series_pk == series.c.pk, instances.c.quarantine == "")
                    )
                )
                .where(*where.clauses)
                .group_by(*_SERIES_COLUMNS)
                .order_by(series.c.study_pk, series.c.series_number, series.c.pk)
            )
            rows = conn.execute(statement).all()
            studies_by_pk = self._studies_by_pk(conn, {r.study_pk for r in rows}, query)
            found = []
            for r in rows:
                study = studies_by_pk.get(r.study_pk)
                if study is None:
                    continue
                record = _series_record(r._mapping, study)
                if series_matches(query, record):
                    found.append(record)
                    if query.limit is not None and len(found) > query.limit:
                        break
            return found

    def find_instances(self, query: ArchiveQuery) -> list[InstanceRecord]:
        where = WhereClauses(self._dialect)
        where.text(studies.c.study_instance_uid, query.study_instance_uid)
        where.text(series.c.series_instance_uid, query.series_instance_uid)
        where.text(instances.c.sop_instance_uid, query.sop_instance_uid)
        where.text(instances.c.sop_class_uid, query.sop_class_uid)
        with self._engine.connect() as conn:
            records = self._instances(conn, where.clauses, query)
        found = [r for r in records if instance_matches(query, r)]
        return found if query.limit is None else found[: query.limit + 1]

    def instances_of(
        self,
        study_instance_uids: Collection[str] = (),
        series_instance_uids: Collection[str] = (),
        sop_instance_uids: Collection[str] = (),
    ) -> list[InstanceRecord]:
        clauses: list[ColumnElement[bool]] = []
        if study_instance_uids:
            clauses.append(studies.c.study_instance_uid.in_(list(study_instance_uids)))
        if series_instance_uids:
            clauses.append(series.c.series_instance_uid.in_(list(series_instance_uids)))
        if sop_instance_uids:
            clauses.append(instances.c.sop_instance_uid.in_(list(sop_instance_uids)))
        if not clauses:
            return []
        with self._engine.connect() as conn:
            return self._instances(conn, clauses, ArchiveQuery())

    def _instances(
        self, conn: Connection, clauses: Iterable[ColumnElement[bool]], query: ArchiveQuery
    ) -> list[InstanceRecord]:
        statement: Select[Any] = (
            select(
                instances.c.sop_instance_uid,
                instances.c.sop_class_uid,
                instances.c.transfer_syntax_uid,
                instances.c.instance_number,
                instances.c.blob_key,
                *_SERIES_COLUMNS,
            )
            .select_from(
                instances.join(series, series.c.pk == instances.c.series_pk).join(
                    studies, studies.c.pk == instances.c.study_pk
                )
            )
            .where(instances.c.quarantine == "", *clauses)
            .order_by(series.c.study_pk, series.c.series_number, series.c.pk, instances.c.instance_number,
                      instances.c.pk)
        )
        rows = conn.execute(statement).all()
        studies_by_pk = self._studies_by_pk(conn, {r.study_pk for r in rows}, query)
        series_records: dict[int, SeriesRecord] = {}
        counts: dict[int, int] = {}
        for r in rows:
            counts[r.pk] = counts.get(r.pk, 0) + 1
        out = []
        for r in rows:
            study = studies_by_pk.get(r.study_pk)
            if study is None:
                continue
            record = series_records.get(r.pk)
            if record is None:
                record = series_records[r.pk] = _series_record(dict(r._mapping) | {"instance_count": counts[r.pk]}, study)
            out.append(
                InstanceRecord(
                    record, r.sop_instance_uid, r.sop_class_uid, r.transfer_syntax_uid, r.instance_number, r.blob_key
                )
            )
        return out

    def _studies_by_pk(self, conn: Connection, pks: Collection[int], query: ArchiveQuery) -> dict[int, StudyRecord]:
        """The studies of found series/instances; patient/study keys given at a lower level still have to match."""
        if not pks:
            return {}
        found: dict[int, StudyRecord] = {}
        upper = ArchiveQuery(**{k: getattr(query, k) for k in _PATIENT_KEYS + ("accession",)})
        keys = dict(
            conn.execute(
                select(studies.c.study_instance_uid, studies.c.pk).where(studies.c.pk.in_(list(pks)))
            ).all()
        )
        for record in self._load_studies(conn, studies.c.pk.in_(list(pks)), counts=False):
            if study_matches(upper, record):
                found[keys[record.study_instance_uid]] = record
        return found


# -- helpers -------------------------------------------------------------------------------------------------------


def _date_clauses(column: Any, match: DateRange | IsEmpty | None) -> list[ColumnElement[bool]]:
    """DA range on a YYYYMMDD text column: string order is date order."""
    if match is None:
        return []
    if isinstance(match, IsEmpty):
        return [cast_bool(column == "")]
    clauses = [cast_bool(column != "")]
    if match.lower is not None:
        clauses.append(cast_bool(column >= match.lower.strftime("%Y%m%d")))
    if match.upper is not None:
        clauses.append(cast_bool(column <= match.upper.strftime("%Y%m%d")))
    return clauses


def _upper(match: TextMatch) -> TextMatch:
    if isinstance(match, Exact):
        return Exact(match.value.upper())
    if isinstance(match, AnyOf):
        return AnyOf(tuple(v.upper() for v in match.values))
    return match


def _chunks(values: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _date(text: str) -> dt.date | None:
    return dt.datetime.strptime(text, "%Y%m%d").date() if text else None


def _study_record(
    row: Any, link: tuple[Demographics, list[LinkedOrder]] | None, series_count: int, instance_count: int
) -> StudyRecord:
    d = row["details"]
    received = Demographics(
        c.patient_id_from(d["patient_id"]) if d.get("patient_id") else PatientId(row["patient_id"],
                                                                                   Issuer(row["patient_issuer"])),
        c.name_from(row["patient_name"]),
        _date(row["birth_date"]),
        Sex(row["sex"]),
    )
    received_accession = c.entity_from(d.get("accession")) if d.get("accession") else EntityId(row["accession"])
    received_referring = c.name_from(d.get("referring_physician"))
    state = StudyState(row["state"])
    if state is StudyState.MATCHED and link is not None:
        current, linked = link
        # What the patient record does not know (no birth date, sex unknown) stays as received: the database wins
        # where it has a value, and nothing known is blanked on the way out.
        patient = replace(
            current,
            birth_date=current.birth_date or received.birth_date,
            sex=current.sex if current.sex is not Sex.UNKNOWN else received.sex,
        )
        accession = linked[0].accession if linked else received_accession
        orders_ = tuple(linked)
        referring = next((o.referring_physician for o in linked if not o.referring_physician.is_empty()),
                         received_referring)
    else:
        patient, accession, orders_, referring = received, received_accession, (), received_referring
    return StudyRecord(
        study_instance_uid=row["study_instance_uid"],
        state=state,
        patient=patient,
        accession=accession,
        orders=orders_,
        received=received,
        received_accession=received_accession,
        study_date=_date(row["study_date"]),
        study_time=dt.time.fromisoformat(row["study_time"]) if row["study_time"] else None,
        description=row["description"],
        modalities=tuple(m for m in row["modalities"].split("\\") if m),
        series_count=series_count,
        instance_count=instance_count,
        referring_physician=referring,
        study_id=d.get("study_id", ""),
    )


def _series_record(row: Any, study: StudyRecord) -> SeriesRecord:
    return SeriesRecord(
        study,
        row["series_instance_uid"],
        row["modality"],
        row["series_number"],
        row["description"],
        row["instance_count"],
    )
