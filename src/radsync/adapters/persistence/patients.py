"""Patient identity in SQL: aliases, the patient history, and the moves a merge or identifier change makes.

Everything runs on the caller's connection, so a merge (orders, steps, studies, MPPS, aliases, history) commits
or rolls back as one (issue 5 item 2). The patient row itself is read and written by ``SqlPatientRepository``
(repositories.py); this module owns the tables and statements of the identity model (tables ``patient_aliases``
and ``patient_history``) and the rewrite of received identifiers on studies and MPPS.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, insert, or_, select, update

from radsync.adapters.persistence import codec as c
from radsync.adapters.persistence import fast_sql
from radsync.adapters.persistence.repositories import SqlPatientRepository
from radsync.adapters.persistence.tables import (
    message_log,
    mpps,
    orders,
    patient_aliases,
    patient_history,
    patients,
    scheduled_steps,
    studies,
)
from radsync.app.patient_ports import HistoryEntry, MovedRecords
from radsync.domain.ids import Issuer, PatientId

_ALIAS_CANDIDATES = (
    select(patient_aliases.c.issuer, patient_aliases.c.issuer_uid, patients.c.patient_id, patients.c.issuer.label("pi"),
           patients.c.issuer_uid.label("pu"), patients.c.issuer_uid_type.label("pt"), patients.c.details)
    .join(patients, patients.c.pk == patient_aliases.c.patient_pk)
    .where(patient_aliases.c.patient_id == bindparam("v"))
)
_PK_BY_ID = select(patients.c.pk).where(
    patients.c.patient_id == bindparam("v"), patients.c.issuer == bindparam("i"),
    patients.c.issuer_uid == bindparam("u"),
)
_INSERT_HISTORY = insert(patient_history)


class SqlPatientIdentity:
    """Aliases, history and identity moves over one connection (the unit of work's)."""

    def __init__(self, connection: Connection, now: dt.datetime, patient_rows: SqlPatientRepository) -> None:
        self._conn = connection
        self._now = now
        self._rows = patient_rows  # its primary-key cache serves the history insert on the HL7 hot path

    # -- aliases -------------------------------------------------------------------------------------------

    def alias_target(self, alias: PatientId) -> PatientId | None:
        """The current identifier of the patient ``alias`` was merged into, if it is an alias.

        An alias without issuer (a modality's unqualified ID) resolves when exactly one alias has that value.
        """
        if not alias.value.strip():
            return None
        rows = fast_sql.rows(self._conn, _ALIAS_CANDIDATES, {"v": alias.value.strip()})
        wanted = alias.issuer
        exact = [r for r in rows if (r.issuer, r.issuer_uid) == (wanted.namespace, wanted.universal_id)]
        if not exact and wanted.is_empty() and len(rows) == 1:
            exact = rows
        if not exact and not wanted.is_empty():
            exact = [r for r in rows if not r.issuer and not r.issuer_uid]  # an alias stored unqualified
        if len(exact) != 1:
            return None
        r = exact[0]
        return PatientId(r.patient_id, Issuer(r.pi, r.pu, r.pt), (r.details or {}).get("type_code", ""))

    def identify(self, value: str, issuer: str | None) -> tuple[list[PatientId], bool]:
        """Patients with this ID (and issuer namespace, when given); else those it is an alias of (``True``)."""
        for table, via_alias in ((patients, False), (patient_aliases, True)):
            query = select(table.c.patient_pk if via_alias else table.c.pk).where(table.c.patient_id == value)
            if issuer is not None:
                query = query.where(table.c.issuer == issuer)
            pks = list(dict.fromkeys(self._conn.execute(query).scalars()))
            if pks:
                rows = self._conn.execute(
                    select(patients.c.patient_id, patients.c.issuer, patients.c.issuer_uid,
                           patients.c.issuer_uid_type, patients.c.details).where(patients.c.pk.in_(pks))
                ).all()
                return [PatientId(r.patient_id, Issuer(r.issuer, r.issuer_uid, r.issuer_uid_type),
                                  (r.details or {}).get("type_code", "")) for r in rows], via_alias
        return [], False

    def add_alias(self, alias: PatientId, survivor: PatientId, kind: str, message_id: int | None) -> None:
        """Remember ``alias`` as an identifier of ``survivor`` (replacing an earlier alias with that value)."""
        key = _ident(alias)
        self._conn.execute(delete(patient_aliases).where(
            patient_aliases.c.patient_id == key["v"], patient_aliases.c.issuer == key["i"],
            patient_aliases.c.issuer_uid == key["u"],
        ))
        self._conn.execute(insert(patient_aliases).values(
            patient_pk=self._pk(survivor), patient_id=alias.value, issuer=alias.issuer.namespace,
            issuer_uid=alias.issuer.universal_id, issuer_uid_type=alias.issuer.universal_id_type, kind=kind,
            created_at=self._now, message_pk=message_id,
        ))

    def aliases(self, patient: PatientId) -> list[dict[str, str]]:
        rows = self._conn.execute(
            select(patient_aliases).where(patient_aliases.c.patient_pk == self._pk(patient))
            .order_by(patient_aliases.c.pk)
        ).all()
        return [{"patient_id": r.patient_id, "issuer": r.issuer, "issuer_uid": r.issuer_uid, "kind": r.kind,
                 "since": r.created_at.isoformat()} for r in rows]

    # -- history -------------------------------------------------------------------------------------------

    def record(self, patient: PatientId, entry: HistoryEntry) -> None:
        pk = self._rows.pk_of(patient)
        if pk is None:
            raise LookupError("history for a patient that is not stored")
        fast_sql.rows(self._conn, _INSERT_HISTORY, {
            "patient_pk": pk, "at": self._now, "kind": entry.kind, "patient_id": patient.value,
            "issuer": patient.issuer.namespace, "actor": entry.actor[:200], "message_pk": entry.message_id,
            "source_time": entry.source_time, "old": entry.old, "new": entry.new,
        })

    def history(self, patient: PatientId) -> list[dict[str, Any]]:
        """Every recorded change, oldest first, with the message (sender, control ID) that caused it."""
        rows = self._conn.execute(
            select(patient_history, message_log.c.sender, message_log.c.control_id, message_log.c.message_type)
            .outerjoin(message_log, message_log.c.pk == patient_history.c.message_pk)
            .where(patient_history.c.patient_pk == self._pk(patient))
            .order_by(patient_history.c.at, patient_history.c.pk)
        ).all()
        out = []
        for r in rows:
            entry: dict[str, Any] = {
                "at": r.at.isoformat(), "kind": r.kind,
                "patient_id": r.patient_id, "issuer": r.issuer,
                "old": r.old, "new": r.new,
                "source_time": r.source_time.isoformat() if r.source_time else None,
            }
            if r.message_pk is not None:
                entry["by"] = {"message_id": r.message_pk, "sender": r.sender, "control_id": r.control_id,
                               "message_type": r.message_type}
            else:
                entry["by"] = {"user": r.actor}
            out.append(entry)
        return out

    # -- moves ---------------------------------------------------------------------------------------------

    def move_everything(self, prior: PatientId, survivor: PatientId) -> MovedRecords:
        """Orders, steps, aliases and history of ``prior`` go to ``survivor``; the prior row is deleted."""
        old, new = self._pk(prior), self._pk(survivor)
        moved_orders = self._conn.execute(update(orders).where(orders.c.patient_pk == old).values(patient_pk=new))
        moved_steps = self._conn.execute(
            update(scheduled_steps).where(scheduled_steps.c.patient_pk == old).values(patient_pk=new)
        )
        self._conn.execute(update(patient_aliases).where(patient_aliases.c.patient_pk == old).values(patient_pk=new))
        self._conn.execute(update(patient_history).where(patient_history.c.patient_pk == old).values(patient_pk=new))
        self._conn.execute(delete(patients).where(patients.c.pk == old))
        self._rows.forget()
        received = self.move_received(prior, survivor)
        return MovedRecords(moved_orders.rowcount, moved_steps.rowcount, received.studies, received.mpps,
                            received.study_uids, received.mpps_uids)

    def rename(self, prior: PatientId, survivor: PatientId) -> MovedRecords:
        """The prior patient row takes the survivor's identifier (A47, or a merge into an unknown survivor)."""
        pk = self._pk(prior)
        details = self._conn.execute(select(patients.c.details).where(patients.c.pk == pk)).scalar_one()
        self._conn.execute(update(patients).where(patients.c.pk == pk).values(
            patient_id=survivor.value, issuer=survivor.issuer.namespace, issuer_uid=survivor.issuer.universal_id,
            issuer_uid_type=survivor.issuer.universal_id_type,
            details=dict(details) | {"type_code": survivor.type_code}, updated_at=self._now,
        ))
        self._rows.forget()
        count_orders = self._conn.execute(select(orders.c.pk).where(orders.c.patient_pk == pk)).all()
        received = self.move_received(prior, survivor)
        return MovedRecords(len(count_orders), 0, received.studies, received.mpps, received.study_uids,
                            received.mpps_uids)

    def move_received(self, prior: PatientId, survivor: PatientId) -> MovedRecords:
        """Studies and MPPS received under ``prior`` (unqualified or same issuer) are re-keyed to ``survivor``.

        The identifier as received is kept in ``details.received_patient_id``. Returns the UIDs of the studies
        and MPPS that are not MATCHED, for the caller to reconcile again.
        """
        study_uids: list[str] = []
        mpps_uids: list[str] = []
        counts = []
        for table in (studies, mpps):
            where = and_(table.c.patient_id == prior.value,
                         or_(table.c.patient_issuer == prior.issuer.namespace, table.c.patient_issuer == ""))
            uid = studies.c.study_instance_uid if table is studies else mpps.c.sop_instance_uid
            columns = [table.c.pk, table.c.details, table.c.state, uid.label("uid")]
            rows = self._conn.execute(select(*columns).where(where)).all()
            for r in rows:
                details = dict(r.details)
                details.setdefault("received_patient_id", details.get("patient_id"))
                details["patient_id"] = c.patient_id_json(survivor)
                self._conn.execute(update(table).where(table.c.pk == r.pk).values(
                    patient_id=survivor.value, patient_issuer=survivor.issuer.namespace, details=details,
                    updated_at=self._now,
                ))
                if r.state != "matched":
                    (study_uids if table is studies else mpps_uids).append(r.uid)
            counts.append(len(rows))
        return MovedRecords(0, 0, counts[0], counts[1], tuple(study_uids), tuple(mpps_uids))

    # -- internals -----------------------------------------------------------------------------------------

    def _pk(self, patient: PatientId) -> int:
        pk = self._conn.execute(_PK_BY_ID, _ident(patient)).scalar()
        if pk is None:
            raise LookupError("patient is not stored")
        return int(pk)


def _ident(pid: PatientId) -> dict[str, str]:
    return {"v": pid.value, "i": pid.issuer.namespace, "u": pid.issuer.universal_id}
