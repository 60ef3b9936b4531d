"""The reconciliation sweep as `radsync serve` runs it: periodically, in its own transaction, until stopped."""

from __future__ import annotations

import asyncio

from radsync.app.outbound import NO_OUTBOUND
from radsync.domain.study import StudyState
from radsync.maintenance import ReconcileSweeper
from tests.app.imaging import Hub, instance


def test_the_sweeper_matches_a_study_left_unassigned_by_a_race(engines) -> None:
    hub = Hub(engines)
    hub.orders._on_placed = None  # the race: the order commits without seeing the study
    hub.store(instance("1.2.3.500", accession="R1"))
    hub.place("R1")
    sweeper = ReconcileSweeper(engines, hub.reconciler, lambda: hub.now, NO_OUTBOUND, interval=0.05)

    async def run_until_matched() -> StudyState:
        stop = asyncio.Event()
        task = asyncio.create_task(sweeper.run(stop))
        state = StudyState.UNASSIGNED
        for _ in range(100):  # bounded: 5 s at most
            await asyncio.sleep(0.05)
            state = hub.run(lambda uow: uow.studies.get("1.2.3.500")).state
            if state is not StudyState.UNASSIGNED:
                break
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        return state

    assert asyncio.run(run_until_matched()) is StudyState.MATCHED
    assert hub.statuses("R1") == ["COMPLETED"]


def test_a_zero_interval_turns_the_sweep_off(engines) -> None:
    hub = Hub(engines)
    sweeper = ReconcileSweeper(engines, hub.reconciler, lambda: hub.now, NO_OUTBOUND, interval=0)
    asyncio.run(asyncio.wait_for(sweeper.run(asyncio.Event()), timeout=1))  # returns at once, never waits
