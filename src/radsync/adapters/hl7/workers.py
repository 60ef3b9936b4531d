"""Several HL7 MLLP receiving processes on one port: how the HL7 intake scales with connections.

Why processes: in one process the intake costs ~570 µs of GIL-held CPU per ORM^O01 with 8 connections (the
event loop's MLLP framing and mapping ~230 µs, the writer thread's statements and group commit ~270 µs), so it
tops out near one core however many senders there are. Each worker here is a complete intake (``Hl7Intake``, its
writer thread and group commit, behind ``Hl7Server``'s connection handling) accepting from the one listening
socket the serving process made (``adapters.workers.WorkerPool``, shared with the DICOM workers). Everything the
in-process listener guarantees still holds, because every guarantee lives in the database transaction, not in
the process:

- an ACK leaves only after its message and effects are committed (each worker's own group commit);
- a connection is accepted by exactly one worker, which answers its messages in order;
- a message's dedup lookup (sender + MSH-10) runs inside the write transaction that records it: on SQLite write
  transactions are serialized across processes (BEGIN IMMEDIATE, and the write lock in persistence/engine.py);
  on PostgreSQL the lookup takes a transaction-level advisory lock on the (sender, control ID), so the same
  control ID arriving on two connections at once is processed once and answered from the log the second time;
- bad input is answered or dropped by the worker that read it; a worker that dies anyway is restarted;
- SIGTERM: a worker stops accepting, takes no new message, waits until every message it already took is
  committed and answered, then closes its connections (``_Draining``).

Which worker accepts: every worker waits for the listening socket to become readable; a worker then waits
``ACCEPT_DELAY_PER_CONNECTION`` per connection it already serves before it calls ``accept``, so the least busy one
takes the connection (the others get EAGAIN and wait again). asyncio's own ``create_server`` accepts up to 100
pending connections at once in whichever process wakes first, which would leave one worker with all of them.

Count (``hl7_processes``): 1 = the in-process listener (the serving process runs the intake); 0 = auto, chosen
by measurement (docs/hl7.md, "Receiving processes").
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from hl7.mllp import HL7StreamReader, HL7StreamWriter
from hl7.mllp.streams import HL7StreamProtocol
from sqlalchemy import Connection, text

from radsync.adapters.hl7.inbound import prepare
from radsync.adapters.hl7.intake import Hl7Intake, IntakeClosed
from radsync.adapters.hl7.server import Hl7Server, _ObservedReader
from radsync.adapters.persistence.engine import is_sqlite, writer_lock
from radsync.adapters.workers import WorkerPool, notifier, orphaned, prepare_worker
from radsync.clock import utc_now
from radsync.config import Settings

if TYPE_CHECKING:
    from radsync.bootstrap import Container

log = logging.getLogger(__name__)

ACCEPT_DELAY_PER_CONNECTION = 0.002
RECENT_ACCEPT_SECONDS = 0.1
DRAIN_SECONDS = 5.0  # a stopping worker's wait for the messages it took (the supervisor kills after 10 s)
AUTO_PROCESSES_POSTGRESQL = 2  # hl7_processes = 0 on PostgreSQL; why: docs/hl7.md, "Receiving processes"


class Hl7Listener(Protocol):
    async def start(self) -> int: ...

    async def stop(self) -> None: ...


def process_count(settings: Settings) -> int:
    """The number of HL7 receiving processes: ``hl7_processes``, or when 0: 1 on SQLite, min(2, CPU count) on
    PostgreSQL (measured: docs/hl7.md, "Receiving processes")."""
    if settings.hl7_processes:
        return settings.hl7_processes
    if is_sqlite(settings.effective_database_url):
        return 1
    return max(1, min(AUTO_PROCESSES_POSTGRESQL, os.cpu_count() or 1))


def hl7_listener(settings: Settings, container: Container) -> Hl7Listener:
    """The HL7 listener for ``radsync serve``: the intake in process for 1, supervised workers otherwise."""
    count = process_count(settings)
    if count == 1:
        return InProcessHl7(settings, container)
    return _Supervised(Hl7Workers(settings, count, notify=container.outbox.notify))


class InProcessHl7:
    """The intake and its MLLP server in the serving process."""

    def __init__(self, settings: Settings, container: Container) -> None:
        self.intake = Hl7Intake(settings, container.engines, container.orders, utc_now, outbound=container.outbound)
        self._server = Hl7Server(self.intake, settings.host, settings.hl7_port, settings.hl7_max_message_bytes)

    async def start(self) -> int:
        self.intake.start()
        try:
            return await self._server.start()
        except BaseException:
            await asyncio.to_thread(self.intake.stop)
            raise

    async def stop(self) -> None:
        await self._server.stop()
        await asyncio.to_thread(self.intake.stop)


class Hl7Workers(WorkerPool):
    """Start, watch and stop ``count`` worker processes sharing one HL7 port."""

    def __init__(self, settings: Settings, count: int, *, notify: Callable[[], None] | None = None) -> None:
        super().__init__(settings, count, protocol="HL7", port_setting="hl7_port", target=run_worker, notify=notify)


class _Supervised:
    """``Hl7Workers`` behind the listener interface ``run_service`` awaits."""

    def __init__(self, workers: Hl7Workers) -> None:
        self.workers = workers

    async def start(self) -> int:
        return await asyncio.to_thread(self.workers.start)

    async def stop(self) -> None:
        await asyncio.to_thread(self.workers.stop)


def run_worker(settings: Settings, index: int, supervisor_pid: int, ready: Any, listener: socket.socket,
               wake: socket.socket | None = None) -> None:
    """A worker process: serve HL7 on the shared port until SIGTERM (or orphaned)."""
    prepare_worker(settings, f"hl7-{index}")
    asyncio.run(_serve(settings, supervisor_pid, ready, listener, wake))


async def _serve(settings: Settings, supervisor_pid: int, ready: Any, listener: socket.socket,
                 wake: socket.socket | None) -> None:
    from radsync.bootstrap import build_container

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        container = build_container(settings, outbox_notify=notifier(wake) if wake is not None else None)
        intake = WorkerIntake(settings, container.engines, container.orders, utc_now, outbound=container.outbound)
        draining = _Draining(intake)
        server = SharedListenerHl7Server(draining, listener, settings.hl7_max_message_bytes)  # type: ignore[arg-type]
        intake.start()
        await server.start()
    except BaseException as error:
        ready.put(("failed", f"{type(error).__name__}: {error}"))
        raise
    ready.put(("ready", os.getpid()))
    try:
        while not stop.is_set() and not orphaned(supervisor_pid):
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
    finally:
        server.close_listener()  # no new connection
        await draining.drain(DRAIN_SECONDS)  # every message taken is committed and its ACK written
        await server.stop()
        await asyncio.to_thread(intake.stop)
        container.engines.dispose()


class WorkerIntake(Hl7Intake):
    """The intake of a worker process: the same writer, with the two things several writer processes need.

    - SQLite: each batch is collected once the cross-process writer lock is held (persistence/engine.py,
      ``writer_lock``). The plain intake takes its batch and then begins; with other processes writing, that
      BEGIN waits, and the messages arriving meanwhile wait for the next transaction: batches fell to one or two
      messages, each paying a commit. Topped up under the lock they hold what the worker's connections sent.
    - PostgreSQL: before the batch's transaction, a session-level advisory lock per (sender, control ID) of the
      batch, taken in key order on a connection of its own and released after the commit, so a duplicate being
      written by another process waits for that commit and is then found by the dedup lookup (which runs in the
      transaction, under READ COMMITTED). SQLite needs none: its writers are serialized anyway.
    """

    _nested = False  # inside our own _process: the redo of a batch or its one-by-one retries
    _locks: Connection | None = None  # PostgreSQL: the connection holding the advisory locks

    def _process(self, batch: list[Any], *, optimistic: bool = True) -> Any:
        if self._nested:
            return super()._process(batch, optimistic=optimistic)
        stop = False
        with writer_lock(self._engines.write):
            if threading.current_thread() is self._thread:  # only the writer's own batches take more
                stop = self._top_up(batch)
            self._nested = True
            try:
                self._lock_control_ids(batch)
                return super()._process(batch, optimistic=optimistic)
            finally:
                self._nested = False
                self._unlock_control_ids()
                if stop:
                    self._queue.put(None)

    def _top_up(self, batch: list[Any]) -> bool:
        """Add what is queued now; True if the stop marker was met (it goes back behind this batch)."""
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            batch.append(item)
        return False

    def _lock_control_ids(self, batch: list[Any]) -> None:
        if self._engines.write.dialect.name != "postgresql":
            return
        keys = sorted({key for item in batch if (key := self._dedup_key(item)) is not None})
        if not keys:
            return
        try:
            if self._locks is None or self._locks.closed:
                self._locks = self._engines.write.connect().execution_options(isolation_level="AUTOCOMMIT")
            self._locks.execute(_ADVISORY_LOCK, {"keys": keys})
        except Exception:
            log.warning("HL7 dedup locks not taken; the batch goes on without them", exc_info=True)
            self._drop_locks()

    def _unlock_control_ids(self) -> None:
        if self._locks is not None and not self._locks.closed:
            try:
                self._locks.execute(_ADVISORY_UNLOCK)
            except Exception:
                self._drop_locks()  # closing the session releases its locks

    def _drop_locks(self) -> None:
        locks, self._locks = self._locks, None
        if locks is not None:
            try:
                locks.invalidate()
                locks.close()
            except Exception:
                log.debug("closing the HL7 dedup lock connection failed", exc_info=True)

    def _dedup_key(self, item: Any) -> int | None:
        if item.prepared is None:  # a large message, decoded here as the writer would
            try:
                item.prepared = prepare(item.raw, self._context)
            except Exception:
                return None  # NotHl7: answered by the writer, nothing to deduplicate
        header = item.prepared.header
        if not header.control_id:
            return None
        # the same truncation as the message log's columns, which the dedup lookup compares
        name = f"{header.sender[:200]}\x00{header.control_id[:200]}".encode()
        return int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big", signed=True)

    def stop(self, timeout: float = 30.0) -> None:
        super().stop(timeout)
        self._drop_locks()


# keys sorted and unique: every process takes them in the same order, so two batches cannot deadlock
_ADVISORY_LOCK = text("SELECT count(pg_advisory_lock(k)) FROM unnest(CAST(:keys AS bigint[])) AS k")
_ADVISORY_UNLOCK = text("SELECT pg_advisory_unlock_all()")


class _Draining:
    """The intake as the server sees it, counting the messages in flight so a stop can wait for their ACKs.

    After ``drain`` starts, a new message is not taken (``IntakeClosed``: the connection ends unanswered and the
    sender resends it, to another worker or after the restart); the ones taken before are committed and answered.
    """

    def __init__(self, intake: Hl7Intake) -> None:
        self._intake = intake
        self._in_flight = 0
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def submit(self, raw: bytes, peer: str = "", **options: Any) -> bytes:
        if self._closing:
            raise IntakeClosed("the HL7 worker is stopping")
        self._in_flight += 1
        self._idle.clear()
        try:
            return await self._intake.submit(raw, peer, **options)
        finally:
            # The server writes the ACK in the same step as this returns, before anything else runs.
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    def ack_timestamp(self) -> str:
        return self._intake.ack_timestamp()

    async def drain(self, timeout: float) -> None:
        self._closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("HL7 worker stopping with %d message(s) unanswered", self._in_flight)


class SharedListenerHl7Server(Hl7Server):
    """``Hl7Server`` on a listening socket that other processes accept from too; the least busy one accepts.

    Only ``start`` differs: the connections are served by ``Hl7Server`` itself (same framing, refusals, ACKs).
    """

    def __init__(self, intake: Hl7Intake, listener: socket.socket, max_message_bytes: int) -> None:
        host, port = listener.getsockname()[:2]
        super().__init__(intake, host, port, max_message_bytes)
        self._listener = listener
        self._acceptor: _Acceptor | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()

        def connected(reader: HL7StreamReader, writer: HL7StreamWriter) -> None:
            task = loop.create_task(self._serve(reader, writer))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

        def protocol() -> HL7StreamProtocol:  # as Hl7Server.start builds it
            return HL7StreamProtocol(_ObservedReader(limit=self._limit, loop=loop), connected, loop=loop)

        self._acceptor = _Acceptor(self._listener, protocol, lambda: len(self._connections))
        self._server = self._acceptor  # type: ignore[assignment]  # what Hl7Server.stop closes and awaits
        port = int(self._listener.getsockname()[1])
        log.info("HL7 MLLP worker accepting on %s:%d", self._host, port)
        return port

    def close_listener(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()


class _Acceptor:
    """Accept connections one at a time from a shared listening socket, after a delay growing with ``busy()``.

    Closing closes only the acceptor (the task), never the socket: the supervisor keeps it for the other workers
    and for restarts.
    """

    def __init__(self, listener: socket.socket, protocol: Callable[[], asyncio.Protocol], busy: Callable[[], int]):
        self._listener = listener
        self._protocol = protocol
        self._busy = busy
        listener.setblocking(False)
        self._task: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        accepted_at = 0.0
        while True:
            await _readable(loop, self._listener)
            busy = self._busy() + (time.monotonic() - accepted_at < RECENT_ACCEPT_SECONDS)
            if busy:
                await asyncio.sleep(ACCEPT_DELAY_PER_CONNECTION * busy)
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                continue  # another worker took it
            except OSError as exc:  # e.g. out of descriptors: keep the listener, try again shortly
                log.warning("HL7 accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            accepted_at = time.monotonic()
            sock.setblocking(False)
            try:
                await loop.connect_accepted_socket(self._protocol, sock)
            except Exception as exc:  # the peer already left
                log.debug("HL7 connection setup failed: %s", exc)
                sock.close()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def wait_closed(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    future: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not future.done():
            future.set_result(None)

    loop.add_reader(sock.fileno(), ready)
    try:
        await future
    finally:
        loop.remove_reader(sock.fileno())
