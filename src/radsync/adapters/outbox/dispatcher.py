"""The outbox's face to the composition root: one delivery worker per configured destination, started and
stopped together, woken after an enqueue commits.

``start()`` and ``stop()`` are synchronous and touch the database; from async code call them through
``asyncio.to_thread``. ``notify()`` is cheap, non-blocking and safe from any thread or event loop.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
from collections.abc import Callable

from sqlalchemy import Engine

from radsync.adapters.blobstore import FileBlobStore
from radsync.adapters.outbox.dicom_forward import ForwardingSource
from radsync.adapters.outbox.engine import bookkeeping_engine
from radsync.adapters.outbox.metrics import OutboxMetrics
from radsync.adapters.outbox.operations import OutboxOperations, QueueStats
from radsync.adapters.outbox.retry import RetryPolicy
from radsync.adapters.outbox.store import Clock, QueueStore
from radsync.adapters.outbox.transports import Transport, build_transport
from radsync.adapters.outbox.worker import DestinationWorker, WorkerThread
from radsync.adapters.persistence.archive_queries import SqlArchiveReader
from radsync.adapters.persistence.engine import Engines
from radsync.app.outbox import DestinationRoutes, OutboxEvent
from radsync.config import DicomDestinationSettings, HL7DestinationSettings, Settings

log = logging.getLogger("radsync.outbox")

TransportFactory = Callable[[HL7DestinationSettings], Transport]


def destination_routes(settings: Settings) -> DestinationRoutes:
    """Which configured destination wants which event; what ``SqlOutbox`` needs to route and validate."""
    routes: dict[str, tuple[OutboxEvent, ...]] = {d.name: d.events for d in settings.hl7_destinations}
    routes |= {d.name: ("forward",) for d in forwarding_destinations(settings)}
    return DestinationRoutes(routes)


def forwarding_destinations(settings: Settings) -> tuple[DicomDestinationSettings, ...]:
    """The ``[[dicom_destinations]]`` with ``forward = true``: each is an outbox queue named by its AE title."""
    return tuple(d for d in settings.dicom_destinations if d.forward)


def lease_for(destination: HL7DestinationSettings | DicomDestinationSettings) -> dt.timedelta:
    """How long a claim stays ours without renewal: comfortably more than one connect plus one ACK wait.

    The worker renews it whenever it records progress, so only a dead node's claims ever expire.
    """
    answer = destination.ack_timeout if isinstance(destination, HL7DestinationSettings) else destination.response_timeout
    return dt.timedelta(seconds=2 * (destination.connect_timeout + answer) + 30)


class OutboxDispatcher:
    """Delivery workers for every ``[[hl7_destinations]]`` entry and every ``[[dicom_destinations]]`` one with
    ``forward = true`` (``transport_factory`` builds the HL7 ones' transports; tests substitute it).

    ``node`` names this radsync process in claims (default: the host name). At start, rows this node left in
    ``sending`` (it was killed mid-send) go back to pending and are sent again with their control IDs. Give each
    process its own ``node`` if several share one database from the same host.
    """

    def __init__(
        self,
        settings: Settings,
        engines: Engines,
        clock: Clock,
        *,
        metrics: OutboxMetrics | None = None,
        node: str | None = None,
        poll_interval: float = 1.0,
        batch_size: int = 256,
        stop_grace: float = 5.0,
        transport_factory: TransportFactory = build_transport,
    ) -> None:
        self._destinations: tuple[HL7DestinationSettings | DicomDestinationSettings, ...] = (
            *settings.hl7_destinations, *forwarding_destinations(settings))
        self._forwarding = ForwardingSource(
            SqlArchiveReader(engines.read), FileBlobStore(settings.data_dir / "blobs"), settings.ae_title, clock
        )
        self._engines = engines
        self._clock = clock
        self._metrics = metrics if metrics is not None else OutboxMetrics.default()
        self._node = node or socket.gethostname()
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._stop_grace = stop_grace
        self._transport_factory = transport_factory
        self._bookkeeping: Engine | None = None
        self._threads: dict[str, WorkerThread] = {}
        self._lock = threading.Lock()
        self.operations = OutboxOperations(engines, clock, notify=self.notify)

    @property
    def node(self) -> str:
        return self._node

    def start(self) -> None:
        """Recover this node's interrupted sends, then start one worker thread per destination."""
        with self._lock:
            if self._threads:
                raise RuntimeError("the outbox dispatcher is already running")
            names = [d.name for d in self._destinations]
            self._bookkeeping = bookkeeping_engine(self._engines.write, len(self._destinations) + 1)
            recovered = QueueStore(self._bookkeeping, self._clock, lease=dt.timedelta(0)).recover(self._node)
            if recovered:
                log.info("outbox: %d interrupted send(s) returned to the queue (node %s)", recovered, self._node)
            for stats in self.operations.stats(names):
                if stats.destination not in names and stats.depth:
                    log.warning("outbox: %d message(s) queued for destination %s, which is not configured",
                                stats.depth, stats.destination)
            self._metrics.watch(self._queue_stats)
            for destination in self._destinations:
                thread = WorkerThread(self._worker(destination))
                self._threads[destination.name] = thread
                thread.start()
            if names:
                log.info("outbox: delivering to %s (node %s)", ", ".join(names), self._node)

    def notify(self, destination: str | None = None) -> None:
        """Wake the worker of ``destination`` (all workers when None) after an enqueue or resend committed."""
        if destination is None:
            for thread in list(self._threads.values()):
                thread.notify()
            return
        worker = self._threads.get(destination)
        if worker is not None:
            worker.notify()

    def stop(self) -> None:
        """Stop claiming; let each in-flight send finish within the grace period, else abandon it (it stays
        pending); return when every worker has ended."""
        with self._lock:
            threads, self._threads = list(self._threads.values()), {}
        stoppers = [threading.Thread(target=t.stop, args=(self._stop_grace,)) for t in threads]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        self._metrics.watch(None)
        if self._bookkeeping is not None:
            self._bookkeeping.dispose()
            self._bookkeeping = None
        if threads:
            log.info("outbox: stopped")

    # -- internals ---------------------------------------------------------------------------------------------

    def _worker(self, destination: HL7DestinationSettings | DicomDestinationSettings) -> DestinationWorker:
        assert self._bookkeeping is not None
        transport = (
            build_transport(destination, self._forwarding)
            if isinstance(destination, DicomDestinationSettings)
            else self._transport_factory(destination)
        )
        return DestinationWorker(
            destination.name,
            QueueStore(self._bookkeeping, self._clock, lease=lease_for(destination)),
            transport,
            RetryPolicy(destination),
            self._metrics,
            owner=self._node,
            clock=self._clock,
            poll_interval=self._poll_interval,
            batch_size=self._batch_size,
        )

    def _queue_stats(self) -> list[QueueStats]:
        return self.operations.stats([d.name for d in self._destinations])
