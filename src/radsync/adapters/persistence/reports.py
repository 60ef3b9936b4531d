"""Reports table and the study links a report follows: the only row <-> domain mapping for reports."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, and_, insert, select, update

from radsync.adapters.persistence.tables import orders, reports, studies, study_links
from radsync.app.ports import OrderKey
from radsync.domain.errors import UnknownOrder
from radsync.domain.ids import EntityId, Issuer
from radsync.domain.report import Report, ReportStatus
from radsync.domain.study import StudyState


class SqlReportRepository:
    def __init__(self, connection: Connection, now: dt.datetime) -> None:
        self._conn = connection
        self._now = now

    def _pk(self, key: OrderKey) -> int:
        """The order's row, found as the order repository finds it: filler, placer, then accession."""
        for number, issuer, entity in (
            (orders.c.filler_number, orders.c.filler_issuer, key.filler_number),
            (orders.c.placer_number, orders.c.placer_issuer, key.placer_number),
            (orders.c.accession, orders.c.accession_issuer, key.accession),
        ):
            if not entity.value:
                continue
            clause = number == entity.value
            if entity.issuer.namespace:
                clause = and_(clause, issuer == entity.issuer.namespace)
            pk = self._conn.execute(select(orders.c.pk).where(clause).order_by(orders.c.pk.desc())).scalar()
            if pk is not None:
                return int(pk)
        raise UnknownOrder("no such order", field="order.accession")

    def current_status(self, key: OrderKey) -> ReportStatus | None:
        status = self._conn.execute(
            select(reports.c.status)
            .where(reports.c.order_pk == self._pk(key), reports.c.superseded_at.is_(None))
            .order_by(reports.c.pk.desc())
        ).scalar()
        return ReportStatus(status) if status else None

    def add(self, key: OrderKey, report: Report, *, source: str, message_id: int | None) -> int:
        order_pk = self._pk(key)
        self._conn.execute(
            update(reports)
            .where(reports.c.order_pk == order_pk, reports.c.superseded_at.is_(None))
            .values(superseded_at=self._now)
        )
        pk = self._conn.execute(
            insert(reports)
            .values(
                order_pk=order_pk,
                status=report.status.value,
                text=report.text,
                author=report.author.canonical(),
                author_id=report.author_id,
                observed_at=report.observed_at,
                received_at=self._now,
                source=source,
                message_pk=message_id,
            )
            .returning(reports.c.pk)
        ).scalar_one()
        return int(pk)

    def linked_study_uids(self, key: OrderKey) -> tuple[str, ...]:
        rows = self._conn.execute(
            select(studies.c.study_instance_uid)
            .join(study_links, study_links.c.study_pk == studies.c.pk)
            .where(study_links.c.order_pk == self._pk(key), studies.c.state != StudyState.CONFLICT.value)
            .order_by(study_links.c.pk)
        ).scalars()
        return tuple(dict.fromkeys(rows))

    def orders_sharing_studies(self, key: OrderKey) -> list[OrderKey]:
        own = self._pk(key)
        mine = select(study_links.c.study_pk).where(study_links.c.order_pk == own).scalar_subquery()
        rows = self._conn.execute(
            select(orders.c.filler_number, orders.c.filler_issuer, orders.c.placer_number, orders.c.placer_issuer,
                   orders.c.accession, orders.c.accession_issuer)
            .join(study_links, study_links.c.order_pk == orders.c.pk)
            .where(study_links.c.study_pk.in_(mine), orders.c.pk != own)
            .distinct()
        ).all()
        return [
            OrderKey(EntityId(r[0], Issuer(r[1])), EntityId(r[2], Issuer(r[3])), EntityId(r[4], Issuer(r[5])))
            for r in rows
        ]
