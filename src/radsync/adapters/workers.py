"""Worker processes sharing one listening port, for DICOM (dicom/workers.py) and HL7 MLLP (hl7/workers.py).

Why processes: each protocol's receiving work (pynetdicom's PDU decoding; MLLP framing, HL7 mapping and the
statements of the HL7 intake) runs in Python under one GIL, so one process tops out near one core however many
connections arrive. A worker is a complete listener of its protocol with its own database engines, sharing the
database and the blob store with the others.

Supervision (the serving process, ``WorkerPool``): the listening socket is made first (port 0 becomes a concrete
port) and kept open for the workers' lifetime, so a restarted worker gets it too; workers are started with the
``spawn`` method (the socket is passed to them by multiprocessing; no inherited threads, locks or database
connections) and each reports ready once its listener accepts; ``start`` returns only when all are ready, so
/healthz reports the listener only when every worker accepts. A worker that dies is restarted (at most once per
second). ``stop`` signals every worker (SIGTERM), which stops accepting, finishes or ends its connections and
exits; stragglers are killed after a grace period. Every worker accepts from the same socket; the least busy one
takes each new connection because a worker waits a little per connection it already serves before it accepts
(dicom/server.py, hl7/workers.py).

Outbound wake-up (``OutboxWaker``): a worker's transaction may queue outbox messages (a forwarded result, a
status message, a DICOM forward), but the delivery workers run in the serving process. Each worker gets one end
of a datagram socket pair; after a commit that queued something it sends one byte, and a thread of the serving
process wakes the dispatcher (``OutboxDispatcher.notify``) at once, instead of at its next poll (1 s). A lost
datagram (buffer full) costs nothing: a full buffer already holds wake-ups, and the poll remains.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from radsync.config import Settings

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0
RESTART_BACKOFF_SECONDS = 1.0

# target(settings, index, supervisor_pid, ready_queue, listener, wake_socket_or_None)
WorkerTarget = Callable[[Settings, int, int, Any, socket.socket, "socket.socket | None"], None]


class WorkerPool:
    """Start, watch and stop ``count`` worker processes accepting from one listening socket.

    ``protocol`` names the workers in logs and process names; ``port_setting`` is the Settings field of the port
    (rewritten to the concrete port for the workers); ``notify`` (optional) is called in the serving process when
    a worker's commit queued outbox messages.
    """

    def __init__(
        self,
        settings: Settings,
        count: int,
        *,
        protocol: str,
        port_setting: str,
        target: WorkerTarget,
        notify: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._worker_settings = settings  # the same, with the concrete port once it is reserved
        self._count = count
        self._protocol = protocol
        self._port_setting = port_setting
        self._target = target
        self._context = multiprocessing.get_context("spawn")
        self._ready: Any = self._context.Queue()
        self._processes: list[Any] = []
        self._port: int | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._listener: socket.socket | None = None  # the one listening socket every worker accepts from
        self._waker = OutboxWaker(notify) if notify is not None else None
        self._accepting: set[int] = set()

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None]

    @property
    def listener(self) -> socket.socket | None:
        """The shared listening socket (while started), for a listener of the serving process itself."""
        return self._listener

    @property
    def accepting(self) -> list[int]:
        """The workers that reported ready (a restarted one joins once it accepts)."""
        return [pid for pid in self.pids if pid in self._accepting]

    def start(self) -> int:
        """Start every worker; return the shared port once all of them accept connections."""
        self._listener = listen(self._settings.host, getattr(self._settings, self._port_setting))
        try:
            self._port = self._listener.getsockname()[1]
            self._worker_settings = self._settings.model_copy(update={self._port_setting: self._port})
            if self._waker is not None:
                self._waker.start()
            for index in range(self._count):
                self._processes.append(self._spawn(index))
            self._await_ready(self._count)
        except BaseException:
            self.stop()
            raise
        self._watcher = threading.Thread(target=self._watch, name=f"{self._protocol.lower()}-workers", daemon=True)
        self._watcher.start()
        log.info("%s listening on %s:%d in %d processes", self._protocol, self._settings.host, self._port, self._count)
        return self._port

    def stop(self) -> None:
        """Signal every worker to stop, wait for them, terminate stragglers; safe to call twice."""
        self._stopping.set()
        for process in self._processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: the worker stops its listener and exits
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in self._processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("%s worker %s did not stop in time; killing it", self._protocol, process.pid)
                process.kill()
                process.join(5)
        self._processes = []
        self._accepting.clear()
        if self._watcher is not None:
            self._watcher.join(2)
            self._watcher = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._waker is not None:
            self._waker.stop()  # after the workers: their last commits' wake-ups are still delivered

    # -- internals -------------------------------------------------------------------------------------------

    def _spawn(self, index: int) -> Any:
        wake = self._waker.sender if self._waker is not None else None
        process = self._context.Process(
            target=self._target,
            args=(self._worker_settings, index, os.getpid(), self._ready, self._listener, wake),
            name=f"radsync-{self._protocol.lower()}-{index}",
            daemon=False,
        )
        process.start()
        return process

    def _await_ready(self, expected: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        ready = 0
        while ready < expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"only {ready} of {expected} {self._protocol} workers became ready")
            try:
                message = self._ready.get(timeout=min(remaining, 0.5))
            except Exception:  # queue.Empty
                if any(p.exitcode is not None for p in self._processes) and not self._stopping.is_set():
                    dead = [p for p in self._processes if p.exitcode is not None]
                    raise RuntimeError(
                        f"{self._protocol} worker exited during start (exit code {dead[0].exitcode})"
                    ) from None
                continue
            if message[0] == "ready":
                ready += 1
                self._accepting.add(message[1])
            else:
                raise RuntimeError(f"{self._protocol} worker failed to start: {message[1]}")

    def _watch(self) -> None:
        """Restart a worker that died (not during stop)."""
        while not self._stopping.wait(0.5):
            for index, process in enumerate(list(self._processes)):
                if process.exitcode is None or self._stopping.is_set():
                    continue
                log.error("%s worker %s exited with %s; restarting it", self._protocol, process.pid, process.exitcode)
                self._accepting.discard(process.pid)
                time.sleep(RESTART_BACKOFF_SECONDS)
                if self._stopping.is_set():
                    return
                replacement = self._spawn(index)
                self._processes[index] = replacement
                try:
                    self._await_ready(1)
                except Exception:
                    log.exception("restarted %s worker did not become ready", self._protocol)


class OutboxWaker:
    """The serving process's end of the workers' outbox wake-up: a datagram socket pair and a reading thread.

    ``sender`` is handed to every worker (``notifier`` turns it into the ``Outbound.notify`` callable); each
    datagram received calls ``notify`` (the dispatcher's) once.
    """

    _STOP = b"\x00"

    def __init__(self, notify: Callable[[], None]) -> None:
        self._notify = notify
        self.receiver, self.sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="outbox-waker", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.sender.send(self._STOP)
            self._thread.join(5)
            self._thread = None
        self.receiver.close()
        self.sender.close()

    def _run(self) -> None:
        while True:
            try:
                data = self.receiver.recv(64)
            except OSError:
                return
            if data == self._STOP:
                return
            try:
                self._notify()
            except Exception:  # the dispatcher is stopping; its poll picks the rows up later
                log.debug("outbox wake-up failed", exc_info=True)


def notifier(sender: socket.socket) -> Callable[[], None]:
    """A worker's ``Outbound.notify``: one datagram to the serving process, never blocking, never raising."""
    sender.setblocking(False)

    def notify() -> None:
        try:
            sender.send(b"!")
        except OSError:  # buffer full (wake-ups already pending) or the supervisor is gone: the poll remains
            pass

    return notify


def listen(host: str, port: int) -> socket.socket:
    """The listening socket all workers accept from (port 0 → ephemeral); the supervisor keeps it for restarts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def prepare_worker(settings: Settings, name: str) -> threading.Event:
    """Common start of a worker process: Ctrl-C left to the supervisor, SIGTERM sets the returned event, and
    logging tagged with the worker's name.

    Stopping is a signal, not a shared ``multiprocessing.Event``: setting such an Event waits for every waiter
    to wake, and a waiter killed with SIGKILL never does -- the supervisor would hang on stop after a crash.
    """
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the supervisor decides
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if not logging.getLogger().handlers:
        logging.basicConfig(level=settings.log_level,
                            format=f"%(asctime)s %(levelname)s %(name)s[{name}]: %(message)s")
    return stop


def orphaned(supervisor_pid: int) -> bool:
    """The supervisor died without stopping this worker (kill -9 of the serving process)."""
    return os.getppid() != supervisor_pid
