"""The durable HL7 intake: every message logged raw and applied before its ACK leaves (ARCHITECTURE invariants 2, 3, 8).

A writer thread owns the database side (a lone connection's messages are written by the event loop itself,
see the end of this docstring). It takes up to ``settings.hl7_max_batch`` queued messages, opens one
transaction and, for each message in turn:

1. deduplicates by (sender = MSH-3^MSH-4, MSH-10): the same normalised content answered AA/AE before gets the
   stored ACK back and changes nothing; the same control ID with other content is processed and flagged
   ``duplicate-control-id`` (FIELD-NOTES 9: senders reuse control IDs);
2. records the raw bytes in the message log, with the answer expected, and runs the message's commands;

then COMMITs once (group commit: one fsync for the batch) and only then resolves each message's future with its
ACK, so an AA is never sent for something a crash could lose.

Batches are optimistic: the first attempt runs without per-message SAVEPOINTs (each costs two statements). If any
message's commands fail, the whole batch is rolled back and redone with each message's commands in a SAVEPOINT
of its own (``connection.begin_nested()``): the bad message rolls back alone, its log row stays with outcome and
ACK, and the others commit. Either way each message is atomic and the answers are the same.

An unexpected exception costs that message an AE 207 (not replayed to a resend) and a log line without PHI; the
intake keeps running. If the batch transaction itself fails, each message is retried in a transaction of its
own, and answered AR 207 if that fails too.

The asyncio side calls ``await intake.submit(raw_bytes, peer)``; decoding and mapping run there, before the
message is queued, so they overlap with the writer's fsync.

A lone connection's message is written on the event loop itself (``submit(..., alone=True)``, SQLite only) when
the writer thread is idle and no other process holds SQLite's writer lock (the loop never waits for it): with one
connection nothing can overlap (its sender waits for each ACK), so the hops to the writer thread and back are pure
cost: ~0.2 ms of a ~1.4 ms message, measured (docs/hl7.md, "One connection"). One lock (``_writing``) lets only one
of the two write at a time, on the one writer connection; everything else (dedup, batch rules, durable-before-answer)
is the same code. The writer-lock probe costs two ``flock`` calls per such message (the write then takes the lock
as usual), ~2 µs against the ~0.2 ms saved.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import queue
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from radsync.adapters.hl7 import charsets
from radsync.adapters.hl7.ack import build_ack, error_from_domain
from radsync.adapters.hl7.datatypes import site_zone
from radsync.adapters.hl7.errors import AckCode, ErrorCode, Hl7Error
from radsync.adapters.hl7.inbound import InboundContext, Prepared, execute, prepare
from radsync.adapters.hl7.order_control import OrderControlTable
from radsync.adapters.persistence.engine import Engines, writer_lock_is_free
from radsync.adapters.persistence.message_log import InboundRecord, SqlMessageLog
from radsync.adapters.persistence.unit_of_work import SqlUnitOfWork
from radsync.app.orders import OrderService
from radsync.app.outbound import NO_OUTBOUND, Outbound
from radsync.config import Settings
from radsync.domain.errors import DomainError

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
DUPLICATE_FLAG = "duplicate-control-id"
INTERNAL_OUTCOME = "ERROR"  # answered AE 207; a resend is processed again rather than answered from the log
REPLAYABLE = frozenset({"AA", "AE"})  # definitive answers; an AR may change after configuration
PREPARE_ON_LOOP_LIMIT = 256 * 1024  # bigger messages are decoded in the writer thread, off the event loop


class _Redo(Exception):
    """A message's commands failed in an optimistic batch: roll the batch back and redo it with savepoints."""


class IntakeClosed(RuntimeError):
    """The intake is stopping: the message was not taken (the sender gets no ACK and will resend)."""


def content_hash(raw: bytes) -> str:
    """SHA-256 of the message with terminators normalised, so a resend with CR LF instead of CR is the same."""
    body = charsets.strip_preamble(raw)
    body = body.replace(b"\r\n", b"\r") if b"\r" in body else body.replace(b"\n", b"\r")
    return hashlib.sha256(body.rstrip(b"\r\n \t\x00")).hexdigest()


@dataclass(slots=True)
class _Pending:
    raw: bytes
    peer: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[bytes]
    prepared: Prepared | None
    digest: str = ""  # content_hash(raw), when worked out before the writer
    accept: bytes = b""  # the AA answer, built before the writer for a message prepare() found nothing wrong with


class Hl7Intake:
    """Durable, deduplicating, group-committing intake of inbound HL7 messages."""

    def __init__(
        self,
        settings: Settings,
        engines: Engines,
        order_service: OrderService,
        clock: Clock,
        *,
        controls: OrderControlTable | None = None,
        processing_ids: frozenset[str] = frozenset({"P"}),
        outbound: Outbound = NO_OUTBOUND,
    ) -> None:
        self._engines = engines
        self._outbound = outbound  # results forwarded by inbound ORU^R01 go through the outbox
        self._queued = False  # the current batch queued outbound messages: wake the outbox after its commit
        self._service = order_service
        self._clock = clock
        self._zone = site_zone(settings.timezone)
        self._max_batch = settings.hl7_max_batch
        self._context = InboundContext(
            zone=self._zone,
            controls=controls or OrderControlTable(),
            fallback_charset=settings.hl7_fallback_charset,
            processing_ids=processing_ids,
        )
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # held by whoever writes: the writer thread, or a loop for a lone connection
        # Only SQLite lets a loop see beforehand that a write would wait (the writer-lock file); a PostgreSQL write can
        # wait on row locks another session holds, so there the writer thread does every write.
        self._loop_may_write = engines.write.dialect.name == "sqlite"
        self._closed = True
        self._thread: threading.Thread | None = None
        self._connection: Connection | None = None  # the writer thread's own, kept open between batches
        self._last_stamp: tuple[dt.datetime | None, str] = (None, "")  # (second, MSH-7) of the last ACK

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._closed = False
            self._thread = threading.Thread(target=self._run, name="hl7-intake-writer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking messages, finish (commit and answer) every message already queued, end the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- the asyncio side -----------------------------------------------------------------------------------

    async def submit(self, raw: bytes, peer: str = "", *, alone: bool = False) -> bytes:
        """Log, apply and commit one message; return its ACK bytes (raises ``inbound.NotHl7``, ``IntakeClosed``).

        ``alone``: the message came on the only open connection, so it may be written right here (module docstring).
        """
        pending = self._pending(raw, peer)
        if alone and self._loop_may_write and pending.prepared is not None:
            answer = self._write_here(pending)
            if answer is not None:
                return answer
        with self._lock:
            if self._closed:
                raise IntakeClosed("the HL7 intake is not running")
            self._queue.put(pending)
        return await pending.future

    def _pending(self, raw: bytes, peer: str) -> _Pending:
        """What the writer needs, with as much worked out here as can be: the writer's time is spent under the
        database's one write lock, which every receiving process waits for (persistence/engine.py)."""
        loop = asyncio.get_running_loop()
        if len(raw) > PREPARE_ON_LOOP_LIMIT:
            return _Pending(raw, peer, loop, loop.create_future(), None)
        prepared = prepare(raw, self._context)
        accept = self._ack(prepared, None, self._clock()) if prepared.error is None else b""
        return _Pending(raw, peer, loop, loop.create_future(), prepared, content_hash(raw), accept)

    def _write_here(self, pending: _Pending) -> bytes | None:
        """Write one message on the calling thread if the writer thread is idle, nothing waits for it and no other
        process is writing (the event loop must not wait for the database's write lock); its answer, or None to
        queue it as usual (writer busy, messages queued, another writer, or the intake stopping)."""
        if not self._writing.acquire(blocking=False):
            return None
        try:
            if self._closed or not self._queue.empty() or not writer_lock_is_free(self._engines.write):
                return None
            [(_, answer)] = self._process([pending])
        finally:
            self._writing.release()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    # -- the writer thread ----------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._take_batches()
        finally:
            with self._writing:
                self._drop_connection()

    def _take_batches(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            stopping = self._take_waiting(batch)
            with self._writing:
                answers = self._process(batch)
            _resolve(answers)

    def _take_waiting(self, batch: list[_Pending]) -> bool:
        """Add the messages queued now to ``batch``, up to the batch limit; True if the stop marker was met."""
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            batch.append(item)
        return False

    def _in_writer_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def _stop_after_this_batch(self) -> None:
        """Put back the stop marker a top-up took (the writer loop sees it once the batch is done)."""
        self._queue.put(None)

    def _writer_connection(self) -> Connection:
        """The writer's connection, opened once and kept: a pool checkout, reset and check-in per batch cost
        ~0.2 ms, a tenth of an order's write time. Any failure drops it, so the next batch starts on a fresh one."""
        if self._connection is None or self._connection.closed:
            self._connection = self._engines.write.connect()
        return self._connection

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # already broken: the pool discards it
                log.debug("closing the HL7 writer connection failed", exc_info=True)

    def _process(self, batch: list[_Pending]) -> list[tuple[_Pending, bytes | BaseException]]:
        """Write the batch and wake the outbox if it queued messages; the answers, each only once on disk."""
        self._queued = False
        answers = self._write(batch)
        if self._queued and self._outbound.notify is not None:
            self._outbound.notify()
        return answers

    def _write(self, batch: list[_Pending], *, optimistic: bool = True) -> list[tuple[_Pending, bytes | BaseException]]:
        """Apply and commit the batch (durable when this returns); each message's answer."""
        now = self._clock()
        try:
            connection = self._writer_connection()
            with connection.begin():
                return [(item, self._one(connection, item, now, optimistic)) for item in batch]
        except _Redo:  # the transaction is rolled back: nothing of the optimistic attempt stays
            return self._write(batch, optimistic=False)
        except Exception as exc:
            self._drop_connection()
            if len(batch) > 1:
                log.warning("HL7 batch of %d failed to commit (%s); retrying one by one", len(batch), type(exc).__name__)
                return [answer for item in batch for answer in self._write([item])]
            log.error("HL7 message could not be committed (%s); answered AR 207", type(exc).__name__)
            log.debug("commit failure", exc_info=True)
            return [(batch[0], self._system_failure(batch[0], now))]

    def _one(
        self, connection: Connection, item: _Pending, now: dt.datetime, optimistic: bool
    ) -> bytes | BaseException:
        try:
            prepared = item.prepared or prepare(item.raw, self._context)
        except Exception as exc:  # NotHl7 for a big block decoded here
            return exc
        header = prepared.header
        messages = SqlMessageLog(connection)
        digest = item.digest or content_hash(item.raw)
        flags = ""
        if header.control_id:
            previous = messages.previous(header.sender[:200], header.control_id[:200])
            for earlier in previous:
                if earlier.content_hash == digest and earlier.outcome in REPLAYABLE and earlier.ack:
                    log.info("HL7 resend of control ID %s answered from the message log", header.control_id)
                    return earlier.ack
            if previous:
                flags = DUPLICATE_FLAG
                log.warning("HL7 control ID %s reused with different content; processed and flagged", header.control_id)
        # The log row is written once, with the answer expected: the refusal prepare() already found, or AA. Only
        # a message whose commands fail needs a second write. A failure to write fails the batch; _write then
        # retries message by message.
        if prepared.error is not None:
            _log_refusal(prepared, prepared.error)
            outcome, error = (INTERNAL_OUTCOME if prepared.internal else prepared.error.ack.value), prepared.error
        else:
            outcome, error = AckCode.ACCEPT.value, None
        answer = item.accept if error is None and item.accept else self._ack(prepared, error, now)
        record = InboundRecord(
            protocol="hl7",
            sender=header.sender[:200],
            receiver=header.receiver[:200],
            control_id=header.control_id[:200],
            message_type=header.message_type[:32],
            content_hash=digest,
            raw=item.raw,
            peer=item.peer[:200],
        )
        pk = messages.record_inbound(record, now, flags, outcome=outcome, ack=answer, error=_error_text(error))
        if prepared.error is None:
            failure = self._apply(connection, prepared, pk, now, optimistic)
            if failure is not None:
                outcome, error = failure
                answer = self._ack(prepared, error, now)
                flags = ",".join(f for f in (flags, error.flag) if f)
                messages.record_outcome(pk, outcome, answer, error=_error_text(error), flags=flags)
        return answer

    def _apply(
        self, connection: Connection, prepared: Prepared, pk: int, now: dt.datetime, optimistic: bool
    ) -> tuple[str, Hl7Error] | None:
        """Run the commands; return (outcome, error) if they failed.

        Optimistic: straight in the batch transaction, and any failure raises ``_Redo`` (the batch is rolled back
        and redone). Otherwise in a savepoint of their own, so a failure rolls back this message's commands only.
        """
        if optimistic:
            try:
                uow = SqlUnitOfWork(connection, now, message_id=pk, outbound=self._outbound)
                execute(self._service, uow, prepared.commands)
            except Exception as exc:
                raise _Redo from exc
            self._queued = self._queued or bool(uow.outbox.enqueued)
            return None
        try:
            with connection.begin_nested():
                uow = SqlUnitOfWork(connection, now, message_id=pk, outbound=self._outbound)
                execute(self._service, uow, prepared.commands)
                self._queued = self._queued or bool(uow.outbox.enqueued)
        except DomainError as exc:
            error = error_from_domain(exc, prepared.header.structure)
            _log_refusal(prepared, error)
            return AckCode.ERROR.value, error
        except Exception as exc:
            log.error("HL7 message %s failed (%s); answered AE 207", prepared.header.control_id, type(exc).__name__)
            log.debug("HL7 processing failure", exc_info=True)
            return INTERNAL_OUTCOME, Hl7Error(ErrorCode.INTERNAL, f"application internal error ({type(exc).__name__})")
        log.debug("HL7 %s %s applied", prepared.header.message_type, prepared.header.control_id)
        return None

    def _ack(self, prepared: Prepared, error: Hl7Error | None, now: dt.datetime) -> bytes:
        code = AckCode.ACCEPT if error is None else error.ack
        return build_ack(prepared.message, code, control_id=new_control_id(), timestamp=self._timestamp(now),
                         error=error)

    def _system_failure(self, item: _Pending, now: dt.datetime) -> bytes | BaseException:
        try:
            prepared = item.prepared or prepare(item.raw, self._context)
        except Exception as exc:
            return exc
        error = Hl7Error(ErrorCode.INTERNAL, "message could not be stored; send it again later", ack=AckCode.REJECT)
        return self._ack(prepared, error, now)

    def ack_timestamp(self) -> str:
        """MSH-7 for an answer built outside the writer (framing refusals)."""
        return self._timestamp(self._clock())

    def _timestamp(self, now: dt.datetime) -> str:
        """MSH-7 of the ACK: the clock's UTC instant in the site zone, with its offset.

        Kept for the second it names: every message of a batch (and of the next batches that second) shares
        it, and the zone conversion and formatting cost ~12 µs a message in the writer (profiled).
        """
        second = now.replace(microsecond=0)
        stamp = self._last_stamp  # read once: the loop thread (framing refusals) may call this too
        if stamp[0] != second:
            aware = second.replace(tzinfo=dt.UTC)
            local = aware.astimezone(self._zone) if self._zone is not None else aware.astimezone()
            stamp = self._last_stamp = (second, local.strftime("%Y%m%d%H%M%S%z"))
        return stamp[1]


def new_control_id() -> str:
    """A fresh MSH-10 for an ACK: 20 characters (ST 20), 80 random bits, unique across nodes."""
    return secrets.token_hex(10).upper()


def _error_text(error: Hl7Error | None) -> str:
    if error is None:
        return ""
    where = f" at {error.location}" if error.location else ""
    return f"{error.code.value}{where}: {error.message}"


def _log_refusal(prepared: Prepared, error: Hl7Error) -> None:
    log.warning(
        "HL7 %s %s answered %s %d at %s",
        prepared.header.message_type, prepared.header.control_id, error.ack.value, error.code.value,
        error.location or "-",
    )
    log.debug("HL7 %s refusal detail: %s", prepared.header.control_id, error.message)


def _resolve(answers: list[tuple[_Pending, bytes | BaseException]]) -> None:
    """Hand the batch's answers to their event loops: one wake-up per loop and batch, not one per message."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Pending, bytes | BaseException]]] = {}
    for item, answer in answers:
        by_loop.setdefault(item.loop, []).append((item, answer))
    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, settled)
        except RuntimeError:  # the loop is closed: nobody waits for these answers any more
            pass


def _settle(answers: list[tuple[_Pending, bytes | BaseException]]) -> None:
    for item, answer in answers:
        if item.future.done():
            continue
        if isinstance(answer, BaseException):
            item.future.set_exception(answer)
        else:
            item.future.set_result(answer)
