"""Stored MPPS instances, the scheduled steps each performs, and their reconciliation history."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, literal_column, or_, select, union_all, update

from radsync.adapters.persistence import codec as c
from radsync.adapters.persistence import fast_sql
from radsync.adapters.persistence.studies import decision_from_row, waiting_statement
from radsync.adapters.persistence.tables import (
    mpps,
    mpps_request_items,
    mpps_steps,
    reconciliation_decisions,
    requested_procedures,
    scheduled_steps,
    studies,
)
from radsync.adapters.persistence.upsert import insert_or_skip
from radsync.app.study_ports import MppsRecord
from radsync.domain.mpps import MppsStatus, PerformedProcedureStep, PerformedSeries
from radsync.domain.patient import Sex
from radsync.domain.reconciliation import ProcedureMatch
from radsync.domain.study import DecisionRecord, LinkSource, RequestItem, StudyState


def _waiting(single: bool) -> Any:
    """Unassigned MPPS that name one of the order's study UIDs or accessions, or its patient (late ORM).

    ``single``: one study UID and one accession, compared with plain parameters (None matches nothing); otherwise
    IN lists expanded at execution. Both built once.
    """

    def matches(column: Any, name: str) -> Any:
        return column == bindparam(name[:-1]) if single else column.in_(bindparam(name, expanding=True))

    return (
        select(mpps.c.sop_instance_uid)
        .where(
            mpps.c.state == StudyState.UNASSIGNED.value,
            or_(
                mpps.c.pk.in_(
                    select(mpps_request_items.c.mpps_pk).where(
                        or_(
                            matches(mpps_request_items.c.accession, "accessions"),
                            matches(mpps_request_items.c.study_instance_uid, "uids"),
                        )
                    )
                ),
                mpps.c.patient_id == bindparam("patient_id"),  # None (no patient) matches nothing
            ),
        )
        .order_by(mpps.c.pk)
    )


_WAITING = _waiting(single=False)
_WAITING_ONE = _waiting(single=True)


def _waiting_with_studies(single: bool) -> Any:
    """The studies' and the MPPS' late-ORM lookups as one statement (one round trip per placed order).

    Rows: (kind 0 = study, 1 = MPPS; uid; state; pk), studies first, each kind in primary-key order as the two
    separate statements return them.
    """
    study_part = waiting_statement(single).order_by(None).add_columns(studies.c.pk, literal_column("0").label("kind"))
    mpps_part = _waiting(single).order_by(None).add_columns(mpps.c.state, mpps.c.pk, literal_column("1").label("kind"))
    union = union_all(study_part, mpps_part).subquery()
    return select(union.c.kind, union.c.study_instance_uid, union.c.state, union.c.pk).order_by(union.c.kind, union.c.pk)


_WAITING_BOTH = _waiting_with_studies(single=False)
_WAITING_BOTH_ONE = _waiting_with_studies(single=True)


class SqlMppsRepository:
    def __init__(self, connection: Connection, now: dt.datetime) -> None:
        self._conn = connection
        self._now = now

    def get(self, sop_instance_uid: str) -> MppsRecord | None:
        row = self._conn.execute(select(mpps).where(mpps.c.sop_instance_uid == sop_instance_uid)).first()
        if row is None:
            return None
        steps = self._conn.execute(
            select(requested_procedures.c.study_instance_uid, scheduled_steps.c.step_id)
            .select_from(
                mpps_steps.join(scheduled_steps, scheduled_steps.c.pk == mpps_steps.c.step_pk).join(
                    requested_procedures, requested_procedures.c.pk == scheduled_steps.c.procedure_pk
                )
            )
            .where(mpps_steps.c.mpps_pk == row.pk)
            .order_by(scheduled_steps.c.pk)
        ).all()
        return MppsRecord(
            _mpps_from(row._mapping),
            StudyState(row.state),
            row.reason,
            tuple((uid, step_id) for uid, step_id in steps),
        )

    def add(self, step: PerformedProcedureStep) -> bool:
        values = _values(step, self._now) | {
            "sop_instance_uid": step.sop_instance_uid,
            "state": StudyState.UNASSIGNED.value,
            "created_at": self._now,
        }
        pk = insert_or_skip(self._conn, mpps, values, ["sop_instance_uid"])
        if pk is None:
            return False
        rows = [
            {
                "mpps_pk": pk,
                "accession": i.accession.value,
                "accession_issuer": i.accession.issuer.namespace,
                "procedure_id": i.requested_procedure_id,
                "step_id": i.scheduled_step_id,
                "study_instance_uid": i.study_instance_uid,
            }
            for i in dict.fromkeys(step.scheduled_steps)
            if not i.is_empty()
        ]
        if rows:
            self._conn.execute(insert(mpps_request_items), rows)
        return True

    def save(self, step: PerformedProcedureStep) -> None:
        self._conn.execute(
            update(mpps)
            .where(mpps.c.sop_instance_uid == step.sop_instance_uid)
            .values(_values(step, self._now))
        )

    def set_state(self, sop_instance_uid: str, state: StudyState, reason: str) -> None:
        self._conn.execute(
            update(mpps)
            .where(mpps.c.sop_instance_uid == sop_instance_uid)
            .values(state=state.value, reason=reason, updated_at=self._now)
        )

    def link_steps(
        self, sop_instance_uid: str, matches: Sequence[ProcedureMatch], source: LinkSource
    ) -> None:
        pk = self._pk(sop_instance_uid)
        for match in matches:
            rows = self._conn.execute(
                select(scheduled_steps.c.pk, scheduled_steps.c.order_pk)
                .join(requested_procedures, requested_procedures.c.pk == scheduled_steps.c.procedure_pk)
                .where(
                    requested_procedures.c.study_instance_uid == match.candidate.procedure_uid,
                    scheduled_steps.c.step_id.in_(match.step_ids),
                )
            ).all()
            for row in rows:
                self._conn.execute(
                    delete(mpps_steps).where(mpps_steps.c.mpps_pk == pk, mpps_steps.c.step_pk == row.pk)
                )
                self._conn.execute(
                    insert(mpps_steps).values(
                        mpps_pk=pk,
                        step_pk=row.pk,
                        order_pk=row.order_pk,
                        rule=match.rule,
                        source=source.value,
                        created_at=self._now,
                    )
                )

    def waiting_for(
        self, study_uids: Collection[str], accessions: Collection[str], patient_id: str
    ) -> list[str]:
        uids, numbers = list(study_uids), list(accessions)
        if len(uids) <= 1 and len(numbers) <= 1:
            params = {"uid": uids[0] if uids else None, "accession": numbers[0] if numbers else None}
            return list(self._conn.execute(_WAITING_ONE, params | {"patient_id": patient_id or None}).scalars())
        lists: dict[str, object] = {"uids": uids, "accessions": numbers, "patient_id": patient_id or None}
        return list(self._conn.execute(_WAITING, lists).scalars())

    def waiting_with_studies(
        self, study_uids: Collection[str], accessions: Collection[str], patient_id: str
    ) -> tuple[list[tuple[str, StudyState]], list[str]]:
        """``studies.waiting_for`` and ``waiting_for`` with the same arguments, in one statement."""
        uids, numbers = list(study_uids), list(accessions)
        if len(uids) <= 1 and len(numbers) <= 1:
            params: dict[str, Any] = {"uid": uids[0] if uids else None, "accession": numbers[0] if numbers else None}
            # the one-value form runs on every order placed (HL7 intake): straight on the cursor
            rows: Any = fast_sql.rows(self._conn, _WAITING_BOTH_ONE, params | {"patient_id": patient_id or None})
        else:
            params = {"uids": uids, "accessions": numbers}
            rows = self._conn.execute(_WAITING_BOTH, params | {"patient_id": patient_id or None}).all()
        found_studies = [(r[1], StudyState(r[2])) for r in rows if r[0] == 0]
        return found_studies, [r[1] for r in rows if r[0] == 1]

    def record_decision(self, sop_instance_uid: str, record: DecisionRecord) -> None:
        self._conn.execute(
            insert(reconciliation_decisions).values(
                mpps_pk=self._pk(sop_instance_uid),
                at=record.at,
                actor=record.actor[:200],
                rule=record.rule,
                outcome=record.outcome,
                reason=record.reason,
                evidence=record.evidence,
            )
        )

    def history(self, sop_instance_uid: str) -> list[DecisionRecord]:
        rows = self._conn.execute(
            select(reconciliation_decisions)
            .join(mpps, mpps.c.pk == reconciliation_decisions.c.mpps_pk)
            .where(mpps.c.sop_instance_uid == sop_instance_uid)
            .order_by(reconciliation_decisions.c.at, reconciliation_decisions.c.pk)
        )
        return [decision_from_row(r._mapping) for r in rows]

    def _pk(self, sop_instance_uid: str) -> int:
        pk = self._conn.execute(select(mpps.c.pk).where(mpps.c.sop_instance_uid == sop_instance_uid)).scalar()
        if pk is None:
            raise LookupError("MPPS is not stored")
        return int(pk)


def _values(step: PerformedProcedureStep, now: dt.datetime) -> dict[str, Any]:
    return {
        "status": step.status.value,
        "patient_id": step.patient_id.value,
        "patient_issuer": step.patient_id.issuer.namespace,
        "modality": step.modality,
        "station_ae_title": step.station_ae_title[:16],
        "start_at": step.start,
        "end_at": step.end,
        "updated_at": now,
        "details": {
            "patient_id": c.patient_id_json(step.patient_id),
            "patient_name": c.name_json(step.patient_name),
            "birth_date": step.birth_date.isoformat() if step.birth_date else None,
            "sex": step.sex.value,
            "scheduled_steps": [
                {
                    "accession": c.entity_json(i.accession),
                    "procedure_id": i.requested_procedure_id,
                    "step_id": i.scheduled_step_id,
                    "study_instance_uid": i.study_instance_uid,
                }
                for i in step.scheduled_steps
            ],
            "pps_id": step.pps_id,
            "station_name": step.station_name,
            "description": step.description,
            "procedure_codes": [c.code_json(x) for x in step.procedure_codes],
            "discontinuation_reason": c.code_json(step.discontinuation_reason),
            "performed_series": [
                {
                    "series_instance_uid": s.series_instance_uid,
                    "description": s.description,
                    "protocol_name": s.protocol_name,
                    "referenced_sop_instance_uids": list(s.referenced_sop_instance_uids),
                }
                for s in step.performed_series
            ],
        },
    }


def _mpps_from(row: Any) -> PerformedProcedureStep:
    d = row["details"]
    return PerformedProcedureStep(
        sop_instance_uid=row["sop_instance_uid"],
        status=MppsStatus(row["status"]),
        patient_id=c.patient_id_from(d["patient_id"]),
        patient_name=c.name_from(d["patient_name"]),
        birth_date=dt.date.fromisoformat(d["birth_date"]) if d["birth_date"] else None,
        sex=Sex(d["sex"]),
        scheduled_steps=tuple(
            RequestItem(
                c.entity_from(i["accession"]), i["procedure_id"], i["step_id"], i["study_instance_uid"]
            )
            for i in d["scheduled_steps"]
        ),
        pps_id=d["pps_id"],
        station_ae_title=row["station_ae_title"],
        station_name=d["station_name"],
        modality=row["modality"],
        start=row["start_at"],
        end=row["end_at"],
        description=d["description"],
        procedure_codes=tuple(code for x in d["procedure_codes"] if (code := c.code_from(x)) is not None),
        discontinuation_reason=c.code_from(d["discontinuation_reason"]),
        performed_series=tuple(
            PerformedSeries(
                s["series_instance_uid"],
                s["description"],
                s["protocol_name"],
                tuple(s["referenced_sop_instance_uids"]),
            )
            for s in d["performed_series"]
        ),
    )
