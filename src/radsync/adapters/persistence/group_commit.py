"""Group commit for short write transactions arriving on many threads at once (C-STORE: one per association).

Why: every C-STORE must be indexed durably before its status goes out (ARCHITECTURE invariant 2), so each one
costs a commit (an fsync of the SQLite WAL), and on SQLite every writer takes the one write lock: four
associations in one process then queue on the lock (SQLite's busy handler sleeps 1, 2, 5, 10 ms between tries)
and pay four fsyncs where one would do.

How (leader/follower, no thread of its own): a caller queues its work and takes the commit lock; whoever holds it
runs *every* queued work in one transaction -- each in a savepoint when there are several, so a refused one rolls
back alone -- commits once, and hands each caller its result or exception. A caller whose work an earlier leader
already committed finds it done when it gets the lock. One caller alone runs exactly one transaction of its own,
as ``transaction()`` would: no hand-off to another thread, no added latency. Each work still commits atomically
with its effects; several merely share the commit (as the HL7 intake does, docs/architecture.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from sqlalchemy import Engine

from radsync.adapters.persistence.unit_of_work import Clock, SqlUnitOfWork
from radsync.app.outbound import NO_OUTBOUND, Outbound

T = TypeVar("T")


class _Work(Generic[T]):
    __slots__ = ("done", "error", "result", "work")

    def __init__(self, work: Callable[[SqlUnitOfWork], T]) -> None:
        self.work = work
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class GroupCommit:
    """Run ``work(uow)`` in a transaction shared with whatever other threads submit meanwhile (module docstring)."""

    def __init__(self, engine: Engine, clock: Clock, outbound: Outbound = NO_OUTBOUND) -> None:
        self._engine = engine
        self._clock = clock
        self._outbound = outbound
        self._commit_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queued: list[_Work[object]] = []

    def run(self, work: Callable[[SqlUnitOfWork], T]) -> T:
        """Committed when this returns; raises what ``work`` raised (its effects rolled back) or the commit's error."""
        item: _Work[T] = _Work(work)
        with self._queue_lock:
            self._queued.append(item)  # type: ignore[arg-type]
        with self._commit_lock:
            if not item.done:
                with self._queue_lock:
                    batch, self._queued = self._queued, []
                self._commit(batch)
        return item.outcome()

    def _commit(self, batch: list[_Work[object]]) -> None:
        notify = False
        try:
            with self._engine.begin() as connection:
                now = self._clock()
                for item in batch:
                    uow = SqlUnitOfWork(connection, now, outbound=self._outbound)
                    if len(batch) == 1:
                        item.result = item.work(uow)  # raising rolls the whole (one-work) transaction back
                    else:
                        try:
                            with connection.begin_nested():
                                item.result = item.work(uow)
                        except Exception as error:  # this work alone is rolled back; the others go on
                            item.error = error
                            continue
                    notify = notify or bool(uow.outbox.enqueued)
        except BaseException as error:  # the commit itself (or the only work) failed: nothing of the batch holds
            for item in batch:
                if item.error is None:
                    item.error = error
            notify = False
        finally:
            for item in batch:
                item.done = True
        if notify and self._outbound.notify is not None:
            self._outbound.notify()
