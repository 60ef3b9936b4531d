"""The worker processes' outbox wake-up (adapters/workers.py): a datagram from a worker wakes the serving
process's dispatcher; a full buffer or a gone supervisor never blocks or fails the worker. (Across real
processes: tests/adapters/hl7/test_hl7_workers.py.)"""

from __future__ import annotations

import threading

from radsync.adapters.workers import OutboxWaker, notifier


def test_a_wake_up_from_a_worker_calls_notify_in_the_serving_process() -> None:
    woken = threading.Semaphore(0)
    waker = OutboxWaker(woken.release)
    waker.start()
    try:
        notify = notifier(waker.sender.dup())
        notify()
        assert woken.acquire(timeout=5)
        notify()
        notify()
        assert woken.acquire(timeout=5) and woken.acquire(timeout=5)
    finally:
        waker.stop()


def test_notify_never_blocks_or_raises() -> None:
    waker = OutboxWaker(lambda: None)  # not started: nothing reads
    sender = waker.sender.dup()
    notify = notifier(sender)
    for _ in range(100_000):  # far more than the socket buffer holds
        notify()
    waker.stop()
    notify()  # the reading end is gone
    sender.close()
    notify()  # even our own end is closed

