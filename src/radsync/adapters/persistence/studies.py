"""Stored studies, series and instances; links to requested procedures; the reconciliation history.

The row <-> domain mapping for the image tables (the order tables' mapping stays in repositories.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, or_, select, update

from radsync.adapters.persistence import codec as c
from radsync.adapters.persistence import fast_sql
from radsync.adapters.persistence.tables import (
    instance_duplicates,
    instances,
    orders,
    patients,
    reconciliation_decisions,
    requested_procedures,
    series,
    studies,
    study_links,
    study_request_items,
)
from radsync.adapters.persistence.upsert import insert_or_skip
from radsync.app.study_ports import StoredInstance, StudyLocation, StudySummary
from radsync.domain.errors import InvalidValue
from radsync.domain.ids import EntityId, Issuer, PatientId
from radsync.domain.patient import Sex
from radsync.domain.study import (
    DecisionRecord,
    InstanceSummary,
    LinkSource,
    RequestItem,
    SeriesHeader,
    Study,
    StudyHeader,
    StudyLink,
    StudyState,
)

# The hot path's statements, built once (constructing them per call costs more than running them).
_LOCATE = (
    select(
        studies.c.pk,
        studies.c.state,
        studies.c.patient_id,
        studies.c.patient_issuer,
        series.c.pk.label("series_pk"),
    )
    .select_from(
        studies.outerjoin(
            series,
            and_(series.c.study_pk == studies.c.pk, series.c.series_instance_uid == bindparam("series_uid")),
        )
    )
    .where(studies.c.study_instance_uid == bindparam("study_uid"))
)
_TOUCH = update(studies).where(studies.c.pk == bindparam("key")).values(last_received_at=bindparam("at"))
_TOUCH_QUARANTINED = _TOUCH.values(quarantined_instances=studies.c.quarantined_instances + 1)
# PostgreSQL: the C-STORE's touch comes first and locks the study row, in a statement of its own (READ COMMITTED
# takes a fresh snapshot per statement), before the series is looked up: a C-STORE waits for a split of that
# study in flight and then reads where the series went; a split waits for the C-STOREs holding the row
# (study_split.py). Still three statements per instance of a known series. SQLite's one writer (BEGIN
# IMMEDIATE) serialises them already and keeps the touch after the insert.
_LOCK_TOUCH = (
    update(studies)
    .where(studies.c.study_instance_uid == bindparam("study_uid"))
    .values(last_received_at=bindparam("at"))
    .returning(studies.c.pk)
)
# Run for every placed order (late ORM): built once. The usual order has one study UID and one accession: that
# form compares with plain parameters (None matches nothing), the general one expands IN lists at execution.
def waiting_statement(single: bool) -> Any:
    def matches(column: Any, name: str) -> Any:
        return column == bindparam(name[:-1]) if single else column.in_(bindparam(name, expanding=True))

    return (
        select(studies.c.study_instance_uid, studies.c.state)
        .where(
            studies.c.state.in_([StudyState.UNASSIGNED.value, StudyState.MATCHED.value]),
            or_(
                matches(studies.c.study_instance_uid, "uids"),
                matches(studies.c.accession, "accessions"),
                studies.c.pk.in_(
                    select(study_request_items.c.study_pk).where(
                        or_(
                            matches(study_request_items.c.accession, "accessions"),
                            matches(study_request_items.c.study_instance_uid, "uids"),
                        )
                    )
                ),
                and_(
                    studies.c.state == StudyState.UNASSIGNED.value,
                    studies.c.patient_id == bindparam("patient_id"),  # None (no patient) matches nothing
                ),
            ),
        )
        .order_by(studies.c.pk)
    )


_WAITING = waiting_statement(single=False)
_WAITING_ONE = waiting_statement(single=True)


class SqlStudyRepository:
    def __init__(self, connection: Connection, now: dt.datetime) -> None:
        self._conn = connection
        self._now = now
        self._locks_rows = connection.dialect.name != "sqlite"
        self._touched: set[int] = set()  # studies ``locate`` locked and touched at ``now`` (PostgreSQL)

    # -- the C-STORE hot path -----------------------------------------------------------------------------

    def locate(self, study_instance_uid: str, series_instance_uid: str) -> StudyLocation | None:
        # The C-STORE hot path's statements run through fast_sql (the DBAPI cursor, compiled once): ~60-90 us of
        # SQLAlchemy's per-statement overhead each, three per instance.
        if self._locks_rows:
            key = fast_sql.scalar(self._conn, _LOCK_TOUCH, {"study_uid": study_instance_uid, "at": self._now})
            if key is None:
                return None
            self._touched.add(key)
        found = fast_sql.rows(self._conn, _LOCATE, {"study_uid": study_instance_uid, "series_uid": series_instance_uid})
        if not found:
            return None
        row = found[0]
        return StudyLocation(
            row.pk,
            study_instance_uid,
            StudyState(row.state),
            PatientId(row.patient_id, Issuer(row.patient_issuer)),
            row.series_pk,
        )

    def add_instance(
        self, location: StudyLocation, series_key: int, instance: InstanceSummary, quarantine: str = ""
    ) -> bool:
        values = {
            "study_pk": location.key,
            "series_pk": series_key,
            "sop_instance_uid": instance.sop_instance_uid,
            "sop_class_uid": instance.sop_class_uid,
            "transfer_syntax_uid": instance.transfer_syntax_uid,
            "instance_number": instance.instance_number,
            "size": instance.blob.size,
            "sha256": instance.blob.sha256,
            "blob_key": instance.blob.key,
            "received_at": self._now,
            "quarantine": quarantine,
        }
        return insert_or_skip(self._conn, instances, values, ["sop_instance_uid"]) is not None

    def touch(self, location: StudyLocation, *, quarantined: bool = False) -> None:
        if not quarantined and location.key in self._touched:
            return  # done by ``locate`` with the same time, in this transaction
        fast_sql.rows(self._conn, _TOUCH_QUARANTINED if quarantined else _TOUCH, {"key": location.key, "at": self._now})

    # -- new studies, series, re-sends ----------------------------------------------------------------------

    def instance(self, sop_instance_uid: str) -> StoredInstance | None:
        row = self._conn.execute(
            select(
                instances.c.pk,
                instances.c.sha256,
                instances.c.blob_key,
                studies.c.study_instance_uid,
                studies.c.state,
                series.c.series_instance_uid,
            )
            .join(studies, studies.c.pk == instances.c.study_pk)
            .join(series, series.c.pk == instances.c.series_pk)
            .where(instances.c.sop_instance_uid == sop_instance_uid)
        ).first()
        if row is None:
            return None
        return StoredInstance(
            row.pk,
            sop_instance_uid,
            row.sha256,
            row.blob_key,
            row.study_instance_uid,
            row.series_instance_uid,
            StudyState(row.state),
        )

    def add_study(self, study: Study) -> StudyLocation | None:
        values = _header_values(study.header) | {
            "study_instance_uid": study.study_instance_uid,
            "state": study.state.value,
            "reason": study.reason,
            "received_at": self._now,
            "last_received_at": self._now,
            "updated_at": self._now,
        }
        pk = insert_or_skip(self._conn, studies, values, ["study_instance_uid"])
        if pk is None:
            return None
        self._insert_items(pk, study.header.request_items)
        return StudyLocation(pk, study.study_instance_uid, study.state, study.header.patient_id)

    def add_series(self, location: StudyLocation, header: SeriesHeader) -> int:
        values = {
            "study_pk": location.key,
            "series_instance_uid": header.series_instance_uid,
            "modality": header.modality,
            "series_number": header.series_number,
            "description": header.description,
            "details": {
                "request_items": [_item_json(i) for i in header.request_items],
                "referenced_mpps": list(header.referenced_mpps),
            },
            "received_at": self._now,
        }
        pk = insert_or_skip(self._conn, series, values, ["series_instance_uid"])
        if pk is not None:
            return pk
        row = self._conn.execute(
            select(series.c.pk, series.c.study_pk).where(
                series.c.series_instance_uid == header.series_instance_uid
            )
        ).one()
        if row.study_pk != location.key:
            raise InvalidValue(
                "Series Instance UID already belongs to another study", field="series.series_instance_uid"
            )
        return int(row.pk)

    def add_duplicate(
        self,
        original: StoredInstance,
        instance: InstanceSummary,
        study_instance_uid: str,
        series_instance_uid: str,
        calling_ae_title: str,
    ) -> bool:
        values = {
            "instance_pk": original.key,
            "sop_instance_uid": instance.sop_instance_uid,
            "study_instance_uid": study_instance_uid,
            "series_instance_uid": series_instance_uid,
            "transfer_syntax_uid": instance.transfer_syntax_uid,
            "size": instance.blob.size,
            "sha256": instance.blob.sha256,
            "blob_key": instance.blob.key,
            "received_at": self._now,
            "calling_ae_title": calling_ae_title[:16],
        }
        return (
            insert_or_skip(self._conn, instance_duplicates, values, ["sop_instance_uid", "sha256"])
            is not None
        )

    def duplicates_of(self, sop_instance_uid: str) -> list[str]:
        """Blob keys of the copies set aside for this SOP Instance UID, oldest first."""
        return list(
            self._conn.execute(
                select(instance_duplicates.c.blob_key)
                .where(instance_duplicates.c.sop_instance_uid == sop_instance_uid)
                .order_by(instance_duplicates.c.pk)
            ).scalars()
        )

    # -- the study as a whole --------------------------------------------------------------------------------

    def get(self, study_instance_uid: str) -> Study | None:
        row = self._conn.execute(
            select(studies).where(studies.c.study_instance_uid == study_instance_uid)
        ).first()
        return self._studies([row._mapping])[0] if row else None

    def save_header(self, study_instance_uid: str, header: StudyHeader) -> None:
        pk = self._pk(study_instance_uid)
        self._conn.execute(
            update(studies)
            .where(studies.c.pk == pk)
            .values(_header_values(header) | {"updated_at": self._now})
        )
        self._conn.execute(delete(study_request_items).where(study_request_items.c.study_pk == pk))
        self._insert_items(pk, header.request_items)

    def set_state(self, study_instance_uid: str, state: StudyState, reason: str) -> None:
        self._conn.execute(
            update(studies)
            .where(studies.c.study_instance_uid == study_instance_uid)
            .values(state=state.value, reason=reason, updated_at=self._now)
        )

    def add_links(self, study_instance_uid: str, links: Sequence[StudyLink], actor: str) -> None:
        if not links:
            return
        pk = self._pk(study_instance_uid)
        targets = {
            r.study_instance_uid: (r.pk, r.order_pk)
            for r in self._conn.execute(
                select(
                    requested_procedures.c.pk,
                    requested_procedures.c.order_pk,
                    requested_procedures.c.study_instance_uid,
                ).where(requested_procedures.c.study_instance_uid.in_([link.procedure_uid for link in links]))
            )
        }
        for link in links:
            procedure_pk, order_pk = targets[link.procedure_uid]
            insert_or_skip(
                self._conn,
                study_links,
                {
                    "study_pk": pk,
                    "procedure_pk": procedure_pk,
                    "order_pk": order_pk,
                    "step_ids": "\\".join(link.step_ids),
                    "source": link.source.value,
                    "rule": link.rule,
                    "created_at": self._now,
                    "created_by": actor[:200],
                },
                ["study_pk", "procedure_pk"],
            )

    def remove_links(
        self, study_instance_uid: str, procedure_uids: Collection[str] | None
    ) -> list[StudyLink]:
        study = self.get(study_instance_uid)
        if study is None:
            return []
        removed = [
            link for link in study.links if procedure_uids is None or link.procedure_uid in procedure_uids
        ]
        if removed:
            procedure_pks = select(requested_procedures.c.pk).where(
                requested_procedures.c.study_instance_uid.in_([link.procedure_uid for link in removed])
            )
            self._conn.execute(
                delete(study_links).where(
                    study_links.c.study_pk == self._pk(study_instance_uid),
                    study_links.c.procedure_pk.in_(procedure_pks),
                )
            )
        return removed

    def linked_patient_ids(self, location: StudyLocation) -> list[PatientId]:
        rows = self._conn.execute(
            select(patients.c.patient_id, patients.c.issuer)
            .distinct()
            .select_from(
                study_links.join(orders, orders.c.pk == study_links.c.order_pk).join(
                    patients, patients.c.pk == orders.c.patient_pk
                )
            )
            .where(study_links.c.study_pk == location.key)
        )
        return [PatientId(r.patient_id, Issuer(r.issuer)) for r in rows]

    def waiting_for(
        self, study_uids: Collection[str], accessions: Collection[str], patient_id: str
    ) -> list[tuple[str, StudyState]]:
        uids, numbers = list(study_uids), list(accessions)
        if len(uids) <= 1 and len(numbers) <= 1:
            params = {"uid": uids[0] if uids else None, "accession": numbers[0] if numbers else None}
            rows = self._conn.execute(_WAITING_ONE, params | {"patient_id": patient_id or None})
        else:
            rows = self._conn.execute(
                _WAITING, {"uids": uids, "accessions": numbers, "patient_id": patient_id or None}
            )
        return [(r.study_instance_uid, StudyState(r.state)) for r in rows]

    def in_state(self, state: StudyState, *, limit: int, offset: int) -> list[StudySummary]:
        where = studies.c.state == state.value
        if state is StudyState.CONFLICT:  # instances quarantined out of an otherwise fine study show here too
            where = or_(where, studies.c.quarantined_instances > 0)
        rows = self._conn.execute(
            select(studies)
            .where(where)
            .order_by(studies.c.received_at, studies.c.pk)
            .limit(limit)
            .offset(offset)
        ).all()
        return self._summaries([r._mapping for r in rows])

    def received_since(self, state: StudyState, since: dt.datetime, *, limit: int) -> list[StudySummary]:
        rows = self._conn.execute(
            select(studies)
            .where(studies.c.state == state.value, studies.c.last_received_at >= since)
            .order_by(studies.c.last_received_at.desc(), studies.c.pk.desc())
            .limit(limit)
        ).all()
        return self._summaries([r._mapping for r in rows])

    def summary(self, study_instance_uid: str) -> StudySummary | None:
        row = self._conn.execute(
            select(studies).where(studies.c.study_instance_uid == study_instance_uid)
        ).first()
        return self._summaries([row._mapping])[0] if row else None

    def record_decision(self, study_instance_uid: str, record: DecisionRecord) -> None:
        self._conn.execute(
            insert(reconciliation_decisions).values(
                study_pk=self._pk(study_instance_uid), **_decision_values(record)
            )
        )

    def history(self, study_instance_uid: str) -> list[DecisionRecord]:
        rows = self._conn.execute(
            select(reconciliation_decisions)
            .join(studies, studies.c.pk == reconciliation_decisions.c.study_pk)
            .where(studies.c.study_instance_uid == study_instance_uid)
            .order_by(reconciliation_decisions.c.at, reconciliation_decisions.c.pk)
        )
        return [decision_from_row(r._mapping) for r in rows]

    # -- internals -------------------------------------------------------------------------------------------

    def _pk(self, study_instance_uid: str) -> int:
        pk = self._conn.execute(
            select(studies.c.pk).where(studies.c.study_instance_uid == study_instance_uid)
        ).scalar()
        if pk is None:
            raise LookupError("study is not stored")
        return int(pk)

    def _insert_items(self, study_pk: int, items: Sequence[RequestItem]) -> None:
        rows = [{"study_pk": study_pk} | _item_columns(i) for i in dict.fromkeys(items) if not i.is_empty()]
        if rows:
            self._conn.execute(insert(study_request_items), rows)

    def _studies(self, rows: Sequence[Any]) -> list[Study]:
        pks = [r["pk"] for r in rows]
        items: dict[int, list[RequestItem]] = {pk: [] for pk in pks}
        for r in self._conn.execute(
            select(study_request_items)
            .where(study_request_items.c.study_pk.in_(pks))
            .order_by(study_request_items.c.pk)
        ):
            items[r.study_pk].append(_item_from(r._mapping))
        links: dict[int, list[StudyLink]] = {pk: [] for pk in pks}
        for r in self._conn.execute(
            select(
                study_links,
                requested_procedures.c.study_instance_uid,
                requested_procedures.c.procedure_id,
                orders.c.details.label("order_details"),
            )
            .join(requested_procedures, requested_procedures.c.pk == study_links.c.procedure_pk)
            .join(orders, orders.c.pk == study_links.c.order_pk)
            .where(study_links.c.study_pk.in_(pks))
            .order_by(study_links.c.pk)
        ):
            links[r.study_pk].append(
                StudyLink(
                    r.study_instance_uid,
                    c.entity_from(r.order_details["accession"]),
                    r.procedure_id,
                    tuple(s for s in r.step_ids.split("\\") if s),
                    LinkSource(r.source),
                    r.rule,
                )
            )
        return [
            Study(
                r["study_instance_uid"],
                _header_from(r, tuple(items[r["pk"]])),
                StudyState(r["state"]),
                r["reason"],
                tuple(links[r["pk"]]),
            )
            for r in rows
        ]

    def _summaries(self, rows: Sequence[Any]) -> list[StudySummary]:
        if not rows:
            return []
        pks = [r["pk"] for r in rows]
        series_counts: dict[int, int] = dict(
            self._conn.execute(  # type: ignore[arg-type]
                select(series.c.study_pk, func.count())
                .where(series.c.study_pk.in_(pks))
                .group_by(series.c.study_pk)
            ).all()
        )
        instance_counts: dict[int, int] = dict(
            self._conn.execute(  # type: ignore[arg-type]
                select(instances.c.study_pk, func.count())
                .where(instances.c.study_pk.in_(pks), instances.c.quarantine == "")
                .group_by(instances.c.study_pk)
            ).all()
        )
        return [
            StudySummary(
                study,
                series_counts.get(r["pk"], 0),
                instance_counts.get(r["pk"], 0),
                r["quarantined_instances"],
                r["received_at"],
                r["last_received_at"],
            )
            for study, r in zip(self._studies(rows), rows, strict=True)
        ]


# -- row <-> domain ------------------------------------------------------------------------------------------


def _item_columns(item: RequestItem) -> dict[str, str]:
    return {
        "accession": item.accession.value,
        "accession_issuer": item.accession.issuer.namespace,
        "procedure_id": item.requested_procedure_id,
        "step_id": item.scheduled_step_id,
        "study_instance_uid": item.study_instance_uid,
    }


def _item_from(row: Any) -> RequestItem:
    return RequestItem(
        EntityId(row["accession"], Issuer(row["accession_issuer"])),
        row["procedure_id"],
        row["step_id"],
        row["study_instance_uid"],
    )


def _item_json(item: RequestItem) -> dict[str, Any]:
    return {
        "accession": c.entity_json(item.accession),
        "procedure_id": item.requested_procedure_id,
        "step_id": item.scheduled_step_id,
        "study_instance_uid": item.study_instance_uid,
    }


def _header_values(h: StudyHeader) -> dict[str, Any]:
    return {
        "patient_id": h.patient_id.value,
        "patient_issuer": h.patient_id.issuer.namespace,
        "patient_name": h.patient_name.canonical(),
        "birth_date": h.birth_date.strftime("%Y%m%d") if h.birth_date else "",
        "sex": h.sex.value,
        "accession": h.accession.value,
        "accession_issuer": h.accession.issuer.namespace,
        "study_date": h.study_date.strftime("%Y%m%d") if h.study_date else "",
        "study_time": h.study_time.isoformat() if h.study_time else "",
        "description": h.description,
        "modalities": "\\".join(h.modalities),
        "details": {
            "patient_id": c.patient_id_json(h.patient_id),
            "accession": c.entity_json(h.accession),
            "referenced_mpps": list(h.referenced_mpps),
            "referring_physician": c.name_json(h.referring_physician),
            "study_id": h.study_id,
        },
    }


def _header_from(row: Any, items: tuple[RequestItem, ...]) -> StudyHeader:
    d = row["details"]
    return StudyHeader(
        patient_id=c.patient_id_from(d["patient_id"]),
        patient_name=c.name_from(row["patient_name"]),
        birth_date=_date(row["birth_date"]),
        sex=Sex(row["sex"]),
        accession=c.entity_from(d["accession"]),
        study_date=_date(row["study_date"]),
        study_time=dt.time.fromisoformat(row["study_time"]) if row["study_time"] else None,
        description=row["description"],
        modalities=tuple(m for m in row["modalities"].split("\\") if m),
        request_items=items,
        referenced_mpps=tuple(d.get("referenced_mpps", ())),
        referring_physician=c.name_from(d.get("referring_physician")),
        study_id=d.get("study_id", ""),
    )


def _date(text: str) -> dt.date | None:
    return dt.datetime.strptime(text, "%Y%m%d").date() if text else None


def _decision_values(record: DecisionRecord) -> dict[str, Any]:
    return {
        "at": record.at,
        "actor": record.actor[:200],
        "rule": record.rule,
        "outcome": record.outcome,
        "reason": record.reason,
        "evidence": record.evidence,
    }


def decision_from_row(row: Any) -> DecisionRecord:
    return DecisionRecord(
        row["at"], row["actor"], row["rule"], row["outcome"], row["reason"], row["evidence"]
    )
