"""Regrouping stored series between studies (grouped procedures: split), kept apart from the C-STORE path.

A split moves index rows only: ``series.study_pk`` and ``instances.study_pk`` of the chosen series point at the new
study row, and the quarantine counters follow. No file is read or written (ARCHITECTURE invariant 5): the new
Study Instance UID reaches an outgoing copy at egress (adapters/dicom/egress.py), like every other current truth.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from sqlalchemy import Connection, func, select, update

from radsync.adapters.persistence.tables import instances, series, studies
from radsync.app.study_ports import SeriesBrief


class SqlStudyRegrouping:
    def __init__(self, connection: Connection, now: dt.datetime) -> None:
        self._conn = connection
        self._now = now

    def lock(self, study_instance_uid: str) -> None:
        """Hold the study row until commit (PostgreSQL ``FOR UPDATE``; SQLite's one writer holds everything).

        A C-STORE into the study locks the same row before it looks up its series (studies.py ``locate``): a
        split never moves a series under an instance being indexed, and an instance waiting for a split reads
        where its series went once the split commits.
        """
        self._conn.execute(
            select(studies.c.pk).where(studies.c.study_instance_uid == study_instance_uid).with_for_update()
        )

    def series_of(self, study_instance_uid: str) -> list[SeriesBrief]:
        rows = self._conn.execute(
            select(series.c.series_instance_uid, series.c.modality)
            .join(studies, studies.c.pk == series.c.study_pk)
            .where(studies.c.study_instance_uid == study_instance_uid)
            .order_by(series.c.pk)
        )
        return [SeriesBrief(r.series_instance_uid, r.modality) for r in rows]

    def study_of_series(self, series_instance_uid: str) -> str | None:
        return self._conn.execute(
            select(studies.c.study_instance_uid)
            .join(series, series.c.study_pk == studies.c.pk)
            .where(series.c.series_instance_uid == series_instance_uid)
        ).scalar()

    def move_series(self, from_study_uid: str, to_study_uid: str, series_uids: Collection[str]) -> int:
        """Move the series (and their instances) from one study to another; return the instances moved."""
        source = self._study_pk(from_study_uid)
        target = self._study_pk(to_study_uid)
        series_pks = list(
            self._conn.execute(
                select(series.c.pk).where(
                    series.c.study_pk == source, series.c.series_instance_uid.in_(list(series_uids))
                )
            ).scalars()
        )
        if not series_pks:
            return 0
        quarantined = self._conn.execute(
            select(func.count()).where(instances.c.series_pk.in_(series_pks), instances.c.quarantine != "")
        ).scalar_one()
        self._conn.execute(update(series).where(series.c.pk.in_(series_pks)).values(study_pk=target))
        moved = self._conn.execute(
            update(instances).where(instances.c.series_pk.in_(series_pks)).values(study_pk=target)
        ).rowcount
        if quarantined:
            self._conn.execute(
                update(studies)
                .where(studies.c.pk == source)
                .values(quarantined_instances=func.max(studies.c.quarantined_instances - quarantined, 0)
                        if self._conn.dialect.name == "sqlite"
                        else func.greatest(studies.c.quarantined_instances - quarantined, 0))
            )
            self._conn.execute(
                update(studies)
                .where(studies.c.pk == target)
                .values(quarantined_instances=studies.c.quarantined_instances + quarantined)
            )
        for pk in (source, target):
            self._conn.execute(update(studies).where(studies.c.pk == pk).values(updated_at=self._now))
        return int(moved or 0)

    def _study_pk(self, study_instance_uid: str) -> int:
        return int(
            self._conn.execute(
                select(studies.c.pk).where(studies.c.study_instance_uid == study_instance_uid)
            ).scalar_one()
        )
