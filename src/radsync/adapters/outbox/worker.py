"""One destination's delivery loop: claim the ready head of its queue, send in order, record every outcome.

Each destination runs in its own thread on a private event loop (``WorkerThread``) that serves its one MLLP
connection. Database work runs on a second thread of the worker (``_db``, one at a time, in submission order), so
it never blocks an event loop (ARCHITECTURE "blocking work never runs on the event loop") and it overlaps the
network: while batch k is being sent, message by message, the next batch is already being claimed and batch k-1's
acknowledgements recorded. At thousands of messages a second that overlap is most of the difference between the
outbox and a bare send loop (bench/outbox_delivery.py).

Per claimed batch (the ready prefix of the queue, at most ``batch_size`` rows):

- send each message and wait for its ACK; positive ACKs are recorded in groups (with the claim of a later batch,
  and every ``flush_interval`` during a long batch). A crash before a group is recorded re-sends those messages
  with the same control IDs: at-least-once, as the outbox promises, at a fraction of the commits;
- on a failure, record it (retry later or dead letter, see ``retry.py``) and hand the rest of the batch and the
  next, pre-claimed batch back untouched, in the same transaction, so nothing overtakes the failed message;
- on stop, finish the message in flight (its ACK may still come) and hand the rest back; if the grace period
  runs out the send is abandoned and the message stays pending, to be sent again with the same control ID.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from radsync.adapters.outbox.metrics import OutboxMetrics
from radsync.adapters.outbox.retry import RetryPolicy
from radsync.adapters.outbox.store import Claim, ClaimedMessage, Clock, OutboxState, QueueStore, SentMark
from radsync.adapters.outbox.transports import DeliveryError, DestinationUnavailable, Transport

log = logging.getLogger("radsync.outbox")

T = TypeVar("T")


class DestinationWorker:
    def __init__(
        self,
        name: str,
        store: QueueStore,
        transport: Transport,
        policy: RetryPolicy,
        metrics: OutboxMetrics,
        *,
        owner: str,
        clock: Clock,
        poll_interval: float = 1.0,
        batch_size: int = 256,
        flush_interval: float = 0.25,
    ) -> None:
        self.name = name
        self._store = store
        self._transport = transport
        self._policy = policy
        self._owner = owner
        self._clock = clock
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._sent = metrics.sent.labels(name)
        self._failed = metrics.failed.labels(name)
        self._dead = metrics.dead.labels(name)
        self._latency = metrics.ack_latency.labels(name)
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"outbox-db-{name}")
        self._wake = asyncio.Event()
        self._stopping = False
        self._outage = 0  # consecutive "destination unavailable" failures, for the outage backoff

    # -- called on the worker's loop (other threads go through WorkerThread) -----------------------------------

    def wake(self) -> None:
        self._wake.set()

    def wake_pending(self) -> bool:
        return self._wake.is_set()

    def request_stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Deliver until ``request_stop``; survives database and transport errors (retrying after a pause)."""
        carry: list[SentMark] = []  # acknowledged, to be recorded with the next claim
        ahead: Claim | None = None  # the next batch, claimed while the previous one was sent
        dirty = False
        try:
            while not self._stopping:
                self._wake.clear()  # before claiming: a notify from now on makes the next sleep return at once
                try:
                    if dirty:
                        await self._in_db(self._store.settle, self._owner, sent=carry)
                        self._count_sent(len(carry), 0)
                        carry = []
                        await self._in_db(self._store.release_owned, self._owner, self.name)
                        dirty = False
                    if ahead is None:
                        claim = await self._in_db(self._store.claim, self.name, self._owner, self._batch_size, carry)
                        self._count_sent(len(carry), claim.lost)
                        carry = []
                    else:
                        claim, ahead = ahead, None
                    if claim.messages:
                        ahead, carry = await self._deliver(claim.messages, carry)
                    elif not carry:
                        await self._sleep(claim.head_due_at)
                    # else: the queue ran dry behind a finished batch; record its ACKs with a claim right away
                except Exception as exc:  # the worker must outlive a database outage
                    dirty, ahead = True, None
                    log.error("destination=%s: outbox worker error (%s); retrying in %g s",
                              self.name, type(exc).__name__, self._poll_interval)
                    log.debug("destination=%s: outbox worker error", self.name, exc_info=True)
                    await self._sleep(None)
        finally:
            try:
                release = [m.id for m in ahead.messages] if ahead is not None else []
                if carry or release:
                    self._settle_now(carry, release=release)
            finally:
                self._db.shutdown(wait=True)
                await self._transport.close()

    # -- internals ---------------------------------------------------------------------------------------------

    async def _deliver(
        self, messages: Sequence[ClaimedMessage], carry: list[SentMark]
    ) -> tuple[Claim | None, list[SentMark]]:
        """Send a claimed batch in order while the next one is claimed (recording ``carry`` with it).

        Returns the next batch and the acknowledgements not recorded yet when the whole batch went; otherwise
        everything is settled here and it returns ``(None, [])``.
        """
        ids = [m.id for m in messages]
        ahead_job = self._db.submit(self._store.claim, self.name, self._owner, self._batch_size, carry, ids)
        ahead_future = asyncio.wrap_future(ahead_job)
        ahead_future.add_done_callback(functools.partial(self._count_recorded, len(carry)))
        flushes: list[asyncio.Future[Any]] = []
        acked: list[SentMark] = []
        position = 0  # messages[position:] are neither acknowledged nor failed
        last_flush = time.monotonic()
        settled = False
        try:
            while position < len(messages) and not self._stopping:
                message = messages[position]
                try:
                    receipt = await self._transport.deliver(message.control_id, message.payload)
                except DeliveryError as error:
                    ahead = await ahead_future
                    rest = ids[position + 1:] + [m.id for m in ahead.messages]
                    await asyncio.gather(*flushes)
                    await self._record_failure(message, error, acked, rest)
                    settled = True
                    return None, []
                self._outage = 0
                acked.append(SentMark(message.id, self._clock(), receipt.latency, receipt.ack_code))
                self._latency.observe(receipt.latency)
                log.debug("destination=%s id=%s control_id=%s: %s in %.1f ms", self.name, message.id,
                          message.control_id, receipt.ack_code, receipt.latency * 1000)
                position += 1
                if position < len(messages) and time.monotonic() - last_flush >= self._flush_interval:
                    # A long batch (slow ACKs): record progress and keep our claims alive, without waiting.
                    renew = ids[position:]
                    if ahead_future.done() and not ahead_future.exception():
                        renew += [m.id for m in ahead_future.result().messages]
                    flushes.append(self._submit(self._store.settle, self._owner, sent=acked, renew=renew))
                    flushes[-1].add_done_callback(functools.partial(self._count_recorded, len(acked)))
                    acked, last_flush = [], time.monotonic()
            ahead = await ahead_future
            await asyncio.gather(*flushes)
            if position == len(messages):
                settled = True
                return ahead, acked
            # Stop requested: hand back what was not sent, including the next batch.
            self._settle_now(acked, release=ids[position:] + [m.id for m in ahead.messages])
            settled = True
            return None, []
        finally:
            if not settled:
                # Cancelled mid-send (stop grace exceeded) or an unexpected error: record what was acknowledged
                # and hand back the rest, including the next batch once its claim is through, so it is sent
                # again (same control IDs) later.
                release = ids[position:]
                try:
                    release += [m.id for m in ahead_job.result(timeout=30).messages]
                except Exception:
                    pass  # no next batch was claimed (or the claim failed): nothing more to hand back
                self._settle_now(acked, release=release)

    async def _record_failure(
        self, message: ClaimedMessage, error: DeliveryError, acked: Sequence[SentMark], rest: Sequence[int]
    ) -> None:
        self._outage = self._outage + 1 if isinstance(error, DestinationUnavailable) else 0
        now = self._clock()
        mark = self._policy.after_failure(message, error, now, outage_failures=self._outage)
        lost = await self._in_db(self._store.settle, self._owner, sent=acked, failure=mark, release=rest)
        self._count_sent(len(acked), lost)
        self._failed.inc()
        log.debug("destination=%s id=%s control_id=%s: %s", self.name, message.id, message.control_id, error.message)
        if mark.state is OutboxState.DEAD:
            self._dead.inc()
            log.error("destination=%s id=%s control_id=%s: dead letter after %d attempt(s) (%s); the queue moves on",
                      self.name, message.id, message.control_id, mark.attempts, error.reason)
        else:
            log.warning("destination=%s id=%s control_id=%s: delivery failed (%s) after %d of %d counted "
                        "attempt(s); retry in %.1f s", self.name, message.id, message.control_id, error.reason,
                        mark.attempts, self._policy.max_attempts, (mark.next_attempt_at - now).total_seconds())

    def _settle_now(self, acked: Sequence[SentMark], *, release: Sequence[int] = ()) -> None:
        """Record outcomes synchronously: for the last words of a stopping or cancelled worker."""
        lost = self._store.settle(self._owner, sent=acked, release=release)
        self._count_sent(len(acked), lost)

    def _count_recorded(self, recorded: int, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        result = future.result()
        self._count_sent(recorded, result if isinstance(result, int) else result.lost)

    def _count_sent(self, recorded: int, lost: int) -> None:
        if recorded:
            self._sent.inc(recorded - lost)
        if lost:
            log.warning("destination=%s: %d acknowledged row(s) had been taken over by another node", self.name, lost)

    def _submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """Run ``fn`` on the worker's database thread (in submission order); the result as an asyncio future."""
        return asyncio.wrap_future(self._db.submit(fn, *args, **kwargs))

    async def _in_db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._submit(fn, *args, **kwargs)

    async def _sleep(self, due: dt.datetime | None) -> None:
        """Wait for a notify, a stop, the poll interval, or the head of the queue becoming due."""
        timeout = self._poll_interval
        if due is not None:
            timeout = min(timeout, max(0.0, (due - self._clock()).total_seconds()))
        if self._stopping or self._wake.is_set():
            return
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            pass


class WorkerThread:
    """Runs a ``DestinationWorker`` on its own event loop in its own thread; the thread-safe handle to it."""

    def __init__(self, worker: DestinationWorker) -> None:
        self.worker = worker
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._main, name=f"outbox-{worker.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        """Wake the worker (cheap when it is already awake); safe from any thread."""
        if self.worker.wake_pending():
            return
        try:
            self._loop.call_soon_threadsafe(self.worker.wake)
        except RuntimeError:  # the loop is closed: the worker has stopped
            pass

    def stop(self, grace: float) -> None:
        """Ask the worker to stop; cancel its in-flight send if it takes longer than ``grace`` seconds."""
        if not self._thread.is_alive():
            return
        try:
            self._loop.call_soon_threadsafe(self.worker.request_stop)
        except RuntimeError:
            return
        self._thread.join(grace)
        if self._thread.is_alive():
            log.warning("destination=%s: in-flight send abandoned at stop; it stays pending", self.worker.name)
            try:
                self._loop.call_soon_threadsafe(self._cancel)
            except RuntimeError:
                return
            self._thread.join(grace)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._task = self._loop.create_task(self.worker.run())
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("destination=%s: outbox worker crashed", self.worker.name)
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()
