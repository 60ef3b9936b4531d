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

Supervision (the serving process, ``DicomWorkers``) is the shared ``adapters.workers.WorkerPool``, also used by
the HL7 workers: one listening socket made first and kept for restarts, ``spawn``ed workers, ``start`` returning
only when every worker accepts (so /healthz reports the DICOM listener only then), a dead worker restarted, SIGTERM
to stop (a worker stops accepting, aborts open associations and exits), and the outbox wake-up: a forwarding
entry queued by a worker wakes the serving process's dispatcher at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from radsync.adapters.workers import WorkerPool, notifier, orphaned, prepare_worker
from radsync.config import Settings

if TYPE_CHECKING:
    import socket

    from radsync.bootstrap import Container


class DicomListener(Protocol):
    def start(self) -> int: ...

    def stop(self) -> None: ...


def process_count(settings: Settings) -> int:
    """The number of receiving processes: ``dicom_processes``, or min(4, CPU count) when 0 (measured against one
    process on this 2-CPU machine: docs/dicom.md "Receiving processes")."""
    if settings.dicom_processes:
        return settings.dicom_processes
    return max(1, min(4, os.cpu_count() or 1))


def dicom_listener(settings: Settings, container: Container) -> DicomListener:
    """The DICOM listener for ``radsync serve``: in process for 1, supervised workers otherwise."""
    from radsync.adapters.dicom.server import DicomServer

    count = process_count(settings)
    if count == 1:
        return DicomServer(settings, container.engines, container)
    return DicomWorkers(settings, count, notify=container.outbox.notify)


class DicomWorkers(WorkerPool):
    """Start, watch and stop ``count`` worker processes sharing one DICOM port."""

    def __init__(self, settings: Settings, count: int, *, notify: Callable[[], None] | None = None) -> None:
        super().__init__(settings, count, protocol="DICOM", port_setting="dicom_port", target=run_worker,
                         notify=notify)


def run_worker(settings: Settings, index: int, supervisor_pid: int, ready: Any, listener: socket.socket,
               wake: socket.socket | None = None) -> None:
    """A worker process: build the container, serve DICOM on the shared port until SIGTERM (or orphaned)."""
    stop = prepare_worker(settings, f"dicom-{index}")
    from radsync.adapters.dicom.server import DicomServer
    from radsync.bootstrap import build_container

    try:
        container = build_container(settings, outbox_notify=notifier(wake) if wake is not None else None)
        server = DicomServer(settings, container.engines, container, listener=listener)
        server.start()
    except BaseException as error:
        ready.put(("failed", f"{type(error).__name__}: {error}"))
        raise
    ready.put(("ready", os.getpid()))
    try:
        while not stop.wait(0.5):
            if orphaned(supervisor_pid):  # the supervisor died without stopping us
                break
    finally:
        server.stop()
        container.engines.dispose()
