"""A split racing a C-STORE into the series it moves (issue 5 §4), on SQLite and PostgreSQL.

The split holds its transaction open (a real StudyService.split inside a real unit of work) while another thread
records a later instance of the series being moved, under the original Study Instance UID, as the Storage SCP
would. The instance must wait for the split and then follow it: an instance indexed under the old study while its
series belongs to the new one would be lost to Q/R of either study.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from radsync.adapters.persistence.tables import instances, series, studies
from radsync.app.reconcile import Split
from radsync.domain.ids import EntityId
from tests.app.imaging import instance
from tests.app.test_grouping import MR_SERIES, STUDY, two_series_study
from tests.app.test_reports import OutboundHub

NEW = "1.2.3.600.77"


@pytest.fixture
def hub(engines) -> OutboundHub:  # type: ignore[no-untyped-def]
    return OutboundHub(engines)


def test_a_c_store_into_a_series_being_split_waits_for_the_split_and_follows_it(hub: OutboundHub) -> None:
    two_series_study(hub)
    inside, release = threading.Event(), threading.Event()

    def splitting() -> str:
        def work(uow):  # type: ignore[no-untyped-def]
            view = hub.studies.split(uow, Split(STUDY, (MR_SERIES,), EntityId("A2"), "alice", "MR apart", NEW))
            inside.set()
            assert release.wait(20)
            return view.study.study_instance_uid

        return hub.run(work)

    late = instance(STUDY, series=MR_SERIES, modality="MR", sop="1.2.3.600.2.99")
    with ThreadPoolExecutor(2) as pool:
        split_done = pool.submit(splitting)
        assert inside.wait(20)
        store_done = pool.submit(hub.store, late)
        time.sleep(0.7)
        waited = not store_done.done()
        release.set()
        assert split_done.result(20) == NEW
        store_done.result(20)

    assert waited, "the C-STORE went ahead of an uncommitted split of its series"
    with hub.engines.read.connect() as conn:
        row = conn.execute(
            select(instances.c.study_pk, series.c.study_pk.label("series_study_pk"), studies.c.study_instance_uid)
            .join(series, series.c.pk == instances.c.series_pk)
            .join(studies, studies.c.pk == instances.c.study_pk)
            .where(instances.c.sop_instance_uid == "1.2.3.600.2.99")
        ).one()
        moved = conn.execute(
            select(instances.c.sop_instance_uid)
            .join(studies, studies.c.pk == instances.c.study_pk)
            .where(studies.c.study_instance_uid == NEW)
        ).scalars().all()
    assert row.study_pk == row.series_study_pk and row.study_instance_uid == NEW
    assert "1.2.3.600.2.99" in moved and len(moved) == 2


def test_a_split_waits_for_a_c_store_in_flight_into_the_series_and_moves_its_instance_too(hub: OutboundHub) -> None:
    two_series_study(hub)
    inside, release = threading.Event(), threading.Event()

    def storing() -> None:
        def work(uow):  # type: ignore[no-untyped-def]
            hub.studies.record_instance(uow, instance(STUDY, series=MR_SERIES, modality="MR", sop="1.2.3.600.2.98"))
            inside.set()
            assert release.wait(20)

        hub.run(work)

    def splitting() -> str:
        command = Split(STUDY, (MR_SERIES,), EntityId("A2"), "alice", "MR apart", NEW)
        return hub.run(lambda uow: hub.studies.split(uow, command)).study.study_instance_uid

    with ThreadPoolExecutor(2) as pool:
        store_done = pool.submit(storing)
        assert inside.wait(20)
        split_done = pool.submit(splitting)
        time.sleep(0.7)
        waited = not split_done.done()
        release.set()
        store_done.result(20)
        assert split_done.result(20) == NEW

    assert waited, "the split went ahead of an uncommitted C-STORE into the study"
    with hub.engines.read.connect() as conn:
        rows = conn.execute(
            select(instances.c.sop_instance_uid, instances.c.study_pk, series.c.study_pk.label("series_study_pk"))
            .join(series, series.c.pk == instances.c.series_pk)
            .where(series.c.series_instance_uid == MR_SERIES)
        ).all()
        new_pk = conn.execute(select(studies.c.pk).where(studies.c.study_instance_uid == NEW)).scalar_one()
    assert len(rows) == 2 and all(r.study_pk == r.series_study_pk == new_pk for r in rows)
