"""Several HL7 MLLP receiving processes on one port: how the HL7 intake scales with connections.

Why processes: in one process the intake costs ~570 µs of GIL-held CPU per ORM^O01 with 8 connections (the
event loop's MLLP framing and mapping ~230 µs, the writer thread's statements and group commit ~270 µs), so it
tops out near one core however many senders there are. ``hl7_processes = N`` makes N receiving processes: the
serving process and N - 1 workers (``SharedHl7``), each a complete intake (``Hl7Intake``, its writer thread and
group commit, behind ``Hl7Server``'s connection handling) accepting from the one listening socket the serving
process made (``adapters.workers.WorkerPool``, shared with the DICOM workers). Everything the in-process
listener guarantees still holds, because every guarantee lives in the database transaction, not in the process:

- an ACK leaves only after its message and effects are committed (each worker's own group commit);
- a connection is accepted by exactly one worker, which answers its messages in order;
- a message's dedup lookup (sender + MSH-10) runs inside the write transaction that records it: on SQLite write
  transactions are serialized across processes (BEGIN IMMEDIATE, and the write lock in persistence/engine.py);
  on PostgreSQL the lookup takes a transaction-level advisory lock on the (sender, control ID), so the same
  control ID arriving on two connections at once is processed once and answered from the log the second time;
- bad input is answered or dropped by the worker that read it; a worker that dies anyway is restarted;
- SIGTERM: a worker stops accepting, takes no new message, waits until every message it already took is
  committed and answered, then closes its connections (``_Draining``).

Which process accepts: every one waits for the listening socket to become readable, then waits
``ACCEPT_DELAY_PER_CONNECTION`` per connection it already serves before it calls ``accept``, so the least busy one
takes the connection (the others get EAGAIN and wait again); a worker counts half a connection more, so a lone
connection is served by the serving process, as with one process (a spawned worker measured 2-5 % slower per
message on one connection, cause not found). asyncio's own ``create_server`` accepts up to 100 pending
connections at once in whichever process wakes first, which would leave one process with all of them.

Count (``hl7_processes``): 1 = the in-process listener only; 0 = auto = min(2, CPU count), chosen by measurement
(docs/hl7.md, "Receiving processes").
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Engine, event

from radsync.adapters.hl7.inbound import prepare
from radsync.adapters.hl7.intake import Hl7Intake, IntakeClosed
from radsync.adapters.hl7.server import Hl7Server
from radsync.adapters.persistence.engine import writer_lock
from radsync.adapters.workers import WorkerPool, notifier, orphaned, prepare_worker
from radsync.clock import utc_now
from radsync.config import Settings

if TYPE_CHECKING:
    from radsync.bootstrap import Container

log = logging.getLogger(__name__)

ACCEPT_DELAY_PER_CONNECTION = 0.002
RECENT_ACCEPT_SECONDS = 0.1
WORKER_ACCEPT_HANDICAP = 0.5  # a worker process defers (1 ms) to the serving process when as busy
DRAIN_SECONDS = 5.0  # a stopping worker's wait for the messages it took (the supervisor kills after 10 s)
AUTO_PROCESSES = 2  # hl7_processes = 0 means min(2, CPU count); why: docs/hl7.md, "Receiving processes"


class Hl7Listener(Protocol):
    async def start(self) -> int: ...

    async def stop(self) -> None: ...


def process_count(settings: Settings) -> int:
    """The number of HL7 receiving processes: ``hl7_processes``, or min(2, CPU count) when 0 (measured:
    docs/hl7.md, "Receiving processes")."""
    if settings.hl7_processes:
        return settings.hl7_processes
    return max(1, min(AUTO_PROCESSES, os.cpu_count() or 1))


def hl7_listener(settings: Settings, container: Container) -> Hl7Listener:
    """The HL7 listener for ``radsync serve``: the intake in process for 1, supervised workers otherwise."""
    count = process_count(settings)
    if count == 1:
        return InProcessHl7(settings, container)
    return SharedHl7(settings, container, count)


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


class SharedHl7:
    """``count`` receiving processes: the serving process itself and ``count - 1`` workers, on one listening socket.

    The serving process accepts too, and first when it is as busy as a worker (a worker waits
    ``WORKER_ACCEPT_HANDICAP`` longer): a lone connection is then served exactly as with one process (a spawned
    worker measured 2-5 % slower per message on one connection), and the connections that follow are spread.
    """

    def __init__(self, settings: Settings, container: Container, count: int) -> None:
        self._settings = settings
        self.workers = Hl7Workers(settings, count - 1, notify=container.outbox.notify)
        self.intake = WorkerIntake(settings, container.engines, container.orders, utc_now, outbound=container.outbound)
        self._draining: _Draining | None = None
        self._server: SharedListenerHl7Server | None = None

    async def start(self) -> int:
        port = await asyncio.to_thread(self.workers.start)
        self.intake.start()
        try:
            listener = self.workers.listener
            assert listener is not None
            self._draining = _Draining(self.intake)
            self._server = SharedListenerHl7Server(self._draining, listener,  # type: ignore[arg-type]
                                                   self._settings.hl7_max_message_bytes)
            await self._server.start()
        except BaseException:
            await asyncio.to_thread(self.intake.stop)
            await asyncio.to_thread(self.workers.stop)
            raise
        return port

    async def stop(self) -> None:
        if self._server is not None and self._draining is not None:
            self._server.close_listener()
            await self._draining.drain(DRAIN_SECONDS)
            await self._server.stop()
        await asyncio.to_thread(self.intake.stop)
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
        server = SharedListenerHl7Server(draining, listener, settings.hl7_max_message_bytes,  # type: ignore[arg-type]
                                         handicap=WORKER_ACCEPT_HANDICAP)
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
    """The intake of one of several receiving processes: the same writer, with what several writers need.

    - SQLite: each batch is collected once the cross-process writer lock is held (persistence/engine.py,
      ``writer_lock``). The plain intake takes its batch and then begins; with other processes writing, that
      BEGIN waits, and the messages arriving meanwhile wait for the next transaction: batches fell to one or two
      messages, each paying a commit. Topped up under the lock they hold what the process's connections sent.
    - PostgreSQL: each transaction of a batch begins by taking a transaction-level advisory lock per
      (sender, control ID) of the batch, all in one statement and in key order (so two batches cannot deadlock);
      a duplicate being written by another process then waits for that commit and is found by the dedup lookup,
      which runs in the transaction under READ COMMITTED. SQLite needs none: its writers are serialized anyway.
    """

    _nested = False  # inside our own _write: the redo of a batch or its one-by-one retries

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _take_dedup_locks_on_begin(self._engines.write)

    def _write(self, batch: list[Any], *, optimistic: bool = True) -> Any:
        if self._nested:
            return super()._write(batch, optimistic=optimistic)
        try:
            return self._write_holding_the_lock(batch, optimistic)
        except OSError as exc:  # the commit could not be synced when the lock was freed: not durable, not acknowledged
            log.error("HL7 batch of %d could not be synced (%s); answered AR 207", len(batch), type(exc).__name__)
            now = self._clock()
            return [(item, self._system_failure(item, now)) for item in batch]

    def _write_holding_the_lock(self, batch: list[Any], optimistic: bool) -> Any:
        stop = False
        with writer_lock(self._engines.write):
            if self._in_writer_thread():  # only the writer's own batches take more (not a lone connection's)
                stop = self._take_waiting(batch)
            self._nested = True
            _dedup_keys.keys = sorted({key for item in batch if (key := self._dedup_key(item)) is not None})
            try:  # the block's end frees the lock and then syncs the commit: only then are the answers returned
                return super()._write(batch, optimistic=optimistic)
            finally:
                _dedup_keys.keys = None
                self._nested = False
                if stop:
                    self._stop_after_this_batch()

    def _dedup_key(self, item: Any) -> int | None:
        if self._engines.write.dialect.name != "postgresql":
            return None
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


_dedup_keys = threading.local()  # the keys of the batch this thread is writing (PostgreSQL), else None
_locking_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _take_dedup_locks_on_begin(engine: Engine) -> None:
    """On PostgreSQL, begin every transaction of a WorkerIntake batch with its advisory locks (one round trip)."""
    if engine.dialect.name != "postgresql" or engine in _locking_engines:
        return
    _locking_engines.add(engine)

    @event.listens_for(engine, "begin")
    def _lock(connection: Any) -> None:
        keys = getattr(_dedup_keys, "keys", None)
        if keys:
            cursor = connection.connection.dbapi_connection.cursor()
            try:
                cursor.execute("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::bigint[]) AS k", (keys,))
            finally:
                cursor.close()


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

    def __init__(self, intake: Hl7Intake, listener: socket.socket, max_message_bytes: int, *,
                 handicap: float = 0.0) -> None:
        host, port = listener.getsockname()[:2]
        super().__init__(intake, host, port, max_message_bytes)
        self._listener = listener
        self._handicap = handicap  # connections counted on top of the real ones when deciding to accept
        self._acceptor: _Acceptor | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        protocol = self.protocol_factory(loop)
        self._acceptor = _Acceptor(self._listener, protocol, lambda: len(self._connections) + self._handicap)
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

    def __init__(self, listener: socket.socket, protocol: Callable[[], asyncio.Protocol],
                 busy: Callable[[], float]):
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
