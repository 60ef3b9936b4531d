"""Several receiving processes on one DICOM port: how radsync's C-STORE scales with associations.

Why processes: pynetdicom decodes every PDU in Python under one GIL, so in one process four parallel C-STORE
associations receive about as fast as one (PERF-NOTES.md). Each worker here is a complete ``DicomServer``
(Verification, MWL, Storage, MPPS, Storage Commitment; Query/Retrieve when added to it) accepting from one
listening socket the supervisor made and handed to every worker; the least busy worker takes each new association
(server.SharedListenerAssociationServer). Why not SO_REUSEPORT (each worker binding the port, as before): the
kernel then picks by a hash of the addresses, not by load, and 4 storescu associations on 2 workers were split
3:1 in three measured rounds out of three. They share the database
(SQLite in WAL mode with busy_timeout and BEGIN IMMEDIATE on the write engine, so concurrent writers queue
instead of failing; PostgreSQL as is) and the content-addressed blob store (writes are atomic links that never
replace a file, so two processes storing the same bytes cannot conflict).

Count (``dicom_processes``): 0 = auto = min(4, CPU count). A worker is CPU-bound while receiving, so more
workers than cores gain nothing and cost memory (~60 MB each) and SQLite writer contention; four covers the
typical handful of modalities sending at once. 1 = no workers: the listener runs inside the serving process.

Supervision (the serving process, ``DicomWorkers``): the listening socket is made first (port 0 becomes a
concrete port) and kept open for the workers' lifetime, so a restarted worker gets it too; workers are started
with the ``spawn`` method (the socket is passed to them by multiprocessing) (no inherited threads, locks or database connections) and each reports ready after its listener
accepts; ``start`` returns only when all are ready, so /healthz reports the DICOM listener only when accepting.
A worker that dies is restarted (at most once per second). ``stop`` signals every worker, which stops accepting,
aborts open associations and exits (SIGTERM); stragglers are killed after a grace period.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from radsync.config import Settings

if TYPE_CHECKING:
    from radsync.bootstrap import Container

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0
RESTART_BACKOFF_SECONDS = 1.0


class DicomListener(Protocol):
    def start(self) -> int: ...

    def stop(self) -> None: ...


def process_count(settings: Settings) -> int:
    """The number of receiving processes: ``dicom_processes``, or min(4, CPU count) when 0."""
    if settings.dicom_processes:
        return settings.dicom_processes
    return max(1, min(4, os.cpu_count() or 1))


def dicom_listener(settings: Settings, container: Container) -> DicomListener:
    """The DICOM listener for ``radsync serve``: in process for 1, supervised workers otherwise."""
    from radsync.adapters.dicom.server import DicomServer

    count = process_count(settings)
    if count == 1:
        return DicomServer(settings, container.engines, container)
    return DicomWorkers(settings, count)


class DicomWorkers:
    """Start, watch and stop ``count`` worker processes sharing one DICOM port."""

    def __init__(self, settings: Settings, count: int) -> None:
        self._settings = settings
        self._worker_settings = settings  # the same, with the concrete port once it is reserved
        self._count = count
        self._context = multiprocessing.get_context("spawn")
        self._ready: Any = self._context.Queue()
        self._processes: list[Any] = []
        self._port: int | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._listener: socket.socket | None = None  # the one listening socket every worker accepts from

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p.pid is not None]

    def start(self) -> int:
        """Start every worker; return the shared port once all of them accept connections."""
        self._listener = _listen(self._settings.host, self._settings.dicom_port)
        try:
            self._port = self._listener.getsockname()[1]
            worker_settings = self._settings.model_copy(update={"dicom_port": self._port})
            self._worker_settings = worker_settings
            for index in range(self._count):
                self._processes.append(self._spawn(index))
            self._await_ready(self._count)
        except BaseException:
            self.stop()
            raise
        self._watcher = threading.Thread(target=self._watch, name="dicom-workers", daemon=True)
        self._watcher.start()
        log.info("DICOM listening on %s:%d in %d processes", self._settings.host, self._port, self._count)
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
                log.warning("DICOM worker %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join(5)
        self._processes = []
        if self._watcher is not None:
            self._watcher.join(2)
            self._watcher = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    # -- internals -------------------------------------------------------------------------------------------

    def _spawn(self, index: int) -> Any:
        process = self._context.Process(
            target=run_worker,
            args=(self._worker_settings, index, os.getpid(), self._ready, self._listener),
            name=f"radsync-dicom-{index}",
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
                raise TimeoutError(f"only {ready} of {expected} DICOM workers became ready")
            try:
                message = self._ready.get(timeout=min(remaining, 0.5))
            except Exception:  # queue.Empty
                if any(p.exitcode is not None for p in self._processes) and not self._stopping.is_set():
                    dead = [p for p in self._processes if p.exitcode is not None]
                    raise RuntimeError(f"DICOM worker exited during start (exit code {dead[0].exitcode})") from None
                continue
            if message[0] == "ready":
                ready += 1
            else:
                raise RuntimeError(f"DICOM worker failed to start: {message[1]}")

    def _watch(self) -> None:
        """Restart a worker that died (not during stop)."""
        while not self._stopping.wait(0.5):
            for index, process in enumerate(list(self._processes)):
                if process.exitcode is None or self._stopping.is_set():
                    continue
                log.error("DICOM worker %s exited with %s; restarting it", process.pid, process.exitcode)
                time.sleep(RESTART_BACKOFF_SECONDS)
                if self._stopping.is_set():
                    return
                replacement = self._spawn(index)
                self._processes[index] = replacement
                try:
                    self._await_ready(1)
                except Exception:
                    log.exception("restarted DICOM worker did not become ready")


def _listen(host: str, port: int) -> socket.socket:
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


def run_worker(settings: Settings, index: int, supervisor_pid: int, ready: Any, listener: socket.socket) -> None:
    """A worker process: build the container, serve DICOM on the shared port until SIGTERM (or orphaned).

    Stopping is a signal, not a shared ``multiprocessing.Event``: setting such an Event waits for every waiter
    to wake, and a waiter killed with SIGKILL never does -- the supervisor would hang on stop after a crash.
    """
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the supervisor decides
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if not logging.getLogger().handlers:
        logging.basicConfig(level=settings.log_level,
                            format=f"%(asctime)s %(levelname)s %(name)s[dicom-{index}]: %(message)s")
    from radsync.adapters.dicom.server import DicomServer
    from radsync.bootstrap import build_container

    try:
        container = build_container(settings)
        server = DicomServer(settings, container.engines, container, listener=listener)
        server.start()
    except BaseException as error:
        ready.put(("failed", f"{type(error).__name__}: {error}"))
        raise
    ready.put(("ready", os.getpid()))
    try:
        while not stop.wait(0.5):
            if os.getppid() != supervisor_pid:  # the supervisor died without stopping us
                break
    finally:
        server.stop()
        container.engines.dispose()
