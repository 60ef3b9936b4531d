"""Background maintenance that runs beside the listeners in `radsync serve`.

Today one job: the reconciliation sweep (``Reconciler.sweep``), the safety net for an order committed while a new
study's transaction was still open (possible on PostgreSQL, or with several radsync nodes on one database).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.unit_of_work import transaction
from radsync.app.outbound import Outbound
from radsync.app.reconcile import Reconciler

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]

# Only studies that received images this recently can have raced with their order; the window is several sweep
# intervals wide so a sweep delayed by load never misses one.
SWEEP_WINDOW = dt.timedelta(minutes=15)


class ReconcileSweeper:
    """Every ``interval`` seconds, re-decide the unassigned studies that received images within ``SWEEP_WINDOW``."""

    def __init__(
        self, engines: Engines, reconciler: Reconciler, clock: Clock, outbound: Outbound, interval: float
    ) -> None:
        self._engines = engines
        self._reconciler = reconciler
        self._clock = clock
        self._outbound = outbound
        self._interval = interval

    def sweep_once(self) -> list[str]:
        """One sweep in one transaction; returns the Study Instance UIDs it matched."""
        with transaction(self._engines.write, self._clock, self._outbound) as uow:
            return self._reconciler.sweep(uow, since=uow.now() - SWEEP_WINDOW)

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep until ``stop`` is set; a failed sweep is logged and retried at the next interval."""
        if self._interval <= 0:
            return
        while True:
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._interval)
                return
            except TimeoutError:
                pass
            try:
                matched = await asyncio.to_thread(self.sweep_once)
            except Exception:
                log.exception("reconciliation sweep failed; retrying in %.0f s", self._interval)
                continue
            if matched:
                log.info("reconciliation sweep matched %d waiting stud(ies)", len(matched))
