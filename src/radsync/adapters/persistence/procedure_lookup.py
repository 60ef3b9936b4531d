"""Requested procedures as reconciliation candidates: one joined query per question, then their steps.

A read-only view over the order tables. Patient and step rows are turned into domain values by the mapping in
repositories.py (reused, not repeated), so there is still one row <-> domain mapping for those tables.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, exists, false, or_, select

from radsync.adapters.persistence import codec as c
from radsync.adapters.persistence.repositories import PATIENT_COLUMNS, patient_from_row, step_from_row
from radsync.adapters.persistence.tables import orders, patients, requested_procedures, scheduled_steps
from radsync.domain.ids import EntityId
from radsync.domain.names import fold
from radsync.domain.order import ScheduledStep
from radsync.domain.reconciliation import ProcedureCandidate, Subject
from radsync.domain.status import StepStatus

_OPEN = [s.value for s in StepStatus if not s.is_final]


class SqlProcedureLookup:
    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def for_subject(self, subject: Subject) -> list[ProcedureCandidate]:
        patient_id = subject.patient_id.value.strip()
        return self._candidates(
            or_(
                requested_procedures.c.study_instance_uid.in_(subject.study_uids()),
                orders.c.accession.in_(subject.accessions()),
                and_(patients.c.patient_id == patient_id, _has_open_step()) if patient_id else false(),
            )
        )

    def by_accession(self, accession: EntityId) -> list[ProcedureCandidate]:
        clause = orders.c.accession == accession.value
        if accession.issuer.namespace:
            clause = and_(clause, orders.c.accession_issuer == accession.issuer.namespace)
        return self._candidates(clause)

    def by_procedure_uids(self, procedure_uids: Collection[str]) -> list[ProcedureCandidate]:
        return self._candidates(requested_procedures.c.study_instance_uid.in_(list(procedure_uids)))

    def suggestions(
        self, subject: Subject, around: dt.date, days: int, limit: int
    ) -> list[ProcedureCandidate]:
        start = dt.datetime.combine(around - dt.timedelta(days=days), dt.time.min)
        end = dt.datetime.combine(around + dt.timedelta(days=days + 1), dt.time.min)
        near = _open_steps().where(scheduled_steps.c.start_at >= start, scheduled_steps.c.start_at < end)
        if subject.modalities:
            near = near.where(scheduled_steps.c.modality.in_(sorted(subject.modalities)))
        near = near.order_by(scheduled_steps.c.start_at).limit(limit)
        clauses: list[ColumnElement[bool]] = [
            requested_procedures.c.pk.in_(list(self._conn.execute(near).scalars()))
        ]
        name_key = fold(subject.patient_name.alphabetic.joined())
        if name_key:
            clauses.append(and_(patients.c.name_fold == name_key, _has_open_step()))
        return self._candidates(or_(*clauses))

    def _candidates(self, where: Any) -> list[ProcedureCandidate]:
        rows = self._conn.execute(
            select(
                requested_procedures.c.pk,
                requested_procedures.c.procedure_id,
                requested_procedures.c.study_instance_uid,
                requested_procedures.c.details.label("procedure_details"),
                orders.c.details.label("order_details"),
                *PATIENT_COLUMNS,
            )
            .join(orders, orders.c.pk == requested_procedures.c.order_pk)
            .join(patients, patients.c.pk == orders.c.patient_pk)
            .where(where)
            .order_by(requested_procedures.c.pk)
        ).all()
        if not rows:
            return []
        steps: dict[int, list[ScheduledStep]] = {r.pk: [] for r in rows}
        for s in self._conn.execute(
            select(scheduled_steps)
            .where(scheduled_steps.c.procedure_pk.in_(list(steps)))
            .order_by(scheduled_steps.c.pk)
        ):
            steps[s.procedure_pk].append(step_from_row(s._mapping))
        result = []
        for r in rows:
            order = r.order_details
            result.append(
                ProcedureCandidate(
                    procedure_uid=r.study_instance_uid,
                    procedure_id=r.procedure_id,
                    accession=c.entity_from(order["accession"]),
                    patient=patient_from_row(r._mapping),
                    steps=tuple(steps[r.pk]),
                    filler_number=c.entity_from(order["filler_number"]),
                    placer_number=c.entity_from(order["placer_number"]),
                    description=r.procedure_details.get("description", ""),
                )
            )
        return result


def _open_steps() -> Any:
    return select(scheduled_steps.c.procedure_pk).where(scheduled_steps.c.status.in_(_OPEN))


def _has_open_step() -> Any:
    """Correlated, so a patient's few procedures are checked through the (procedure, step) unique index."""
    return exists().where(
        scheduled_steps.c.procedure_pk == requested_procedures.c.pk, scheduled_steps.c.status.in_(_OPEN)
    )
