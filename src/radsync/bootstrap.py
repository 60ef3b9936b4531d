"""Composition root: builds every part from the settings and starts and stops them together.

No business rules here; this is the one module that knows every adapter (STYLE.md §8).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom.uid import generate_uid

from radsync.adapters.blobstore import FileBlobStore
from radsync.adapters.dicom.workers import dicom_listener
from radsync.adapters.hl7.datatypes import site_zone
from radsync.adapters.hl7.outbound.segments import Sender
from radsync.adapters.hl7.outbound.wire import Hl7Wire
from radsync.adapters.hl7.workers import hl7_listener
from radsync.adapters.http.app import create_app
from radsync.adapters.http.server import HttpServer
from radsync.adapters.outbox.dispatcher import OutboxDispatcher, destination_routes
from radsync.adapters.persistence.engine import Engines, create_engines
from radsync.adapters.persistence.migrate import upgrade
from radsync.app.orders import OrderService
from radsync.app.outbound import Outbound
from radsync.app.patients import PatientService
from radsync.app.procedures import ProcedureService
from radsync.app.reconcile import Reconciler
from radsync.app.stations import Station, StationDirectory
from radsync.app.studies import StudyService
from radsync.clock import utc_now
from radsync.config import ReconciliationSettings, Settings
from radsync.domain.identity import IdentityMode, IdentityPolicy
from radsync.domain.reconciliation import ReconciliationPolicy
from radsync.maintenance import ReconcileSweeper

log = logging.getLogger("radsync")


def new_study_uid() -> str:
    """A UUID-derived UID under the 2.25 root (PS3.5 B.2): unique without a registered org root."""
    return str(generate_uid(prefix=None))


@dataclass
class Listeners:
    """Where each listener accepts connections, once it does."""

    hl7: int | None = None
    dicom: int | None = None
    http: int | None = None
    host: str = "127.0.0.1"

    def all_up(self) -> bool:
        return None not in (self.hl7, self.dicom, self.http)

    def describe(self) -> dict[str, str]:
        return {
            "hl7_mllp": f"{self.host}:{self.hl7}",
            "dicom": f"{self.host}:{self.dicom}",
            "http": f"{self.host}:{self.http}",
        }


@dataclass
class Container:
    """Everything built from the settings, shared by the listeners."""

    settings: Settings
    engines: Engines
    orders: OrderService
    studies: StudyService
    procedures: ProcedureService
    reconciler: Reconciler
    blobs: FileBlobStore
    outbox: OutboxDispatcher  # delivery workers; started by run_service (tests may start it themselves)
    outbound: Outbound  # hand to transaction() / SqlUnitOfWork so use cases can queue messages
    zone: dt.tzinfo | None  # the site's time zone (settings.timezone; None = this machine's)
    listeners: Listeners = field(default_factory=Listeners)


def build_container(settings: Settings, *, outbox_notify: Callable[[], None] | None = None) -> Container:
    """Everything built from the settings. ``outbox_notify`` replaces the dispatcher's wake-up after a commit that
    queued outbox messages: a worker process (adapters/workers.py) wakes the serving process's dispatcher."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engines = create_engines(settings.effective_database_url, sqlite_synchronous=settings.sqlite_synchronous)
    upgrade(engines.write)
    stations = StationDirectory(
        Station(s.ae_title, s.modality, s.name, s.location) for s in settings.stations
    )
    reconciler = Reconciler(reconciliation_policy(settings.reconciliation))
    dispatcher = OutboxDispatcher(settings, engines, utc_now)
    zone = site_zone(settings.timezone)
    wire = Hl7Wire(
        Sender(settings.ae_title, "", zone),
        status_messages={d.name: d.status_message for d in settings.hl7_destinations},
    )
    return Container(
        settings=settings,
        engines=engines,
        orders=OrderService(stations, new_study_uid, on_placed=reconciler.on_order_placed,
                            patients=PatientService(reconciler)),
        studies=StudyService(reconciler, new_study_uid),
        procedures=ProcedureService(reconciler),
        reconciler=reconciler,
        blobs=FileBlobStore(settings.data_dir / "blobs"),
        outbox=dispatcher,
        outbound=Outbound(destination_routes(settings), wire, outbox_notify or dispatcher.notify),
        zone=zone,
        listeners=Listeners(host=settings.host),
    )


def reconciliation_policy(settings: ReconciliationSettings) -> ReconciliationPolicy:
    return ReconciliationPolicy(
        identity=IdentityPolicy(IdentityMode(settings.identity), settings.accept_unqualified_patient_id),
        date_window_days=settings.date_window_days,
        patient_rule_despite_unknown_accession=settings.patient_rule_despite_unknown_accession,
        images_complete_started_steps=settings.images_complete_started_steps,
        candidate_limit=settings.candidate_limit,
        candidate_window_days=settings.candidate_window_days,
    )


async def run_service(settings: Settings, stop: asyncio.Event) -> None:
    """Start every listener, wait for ``stop``, then stop them in reverse order."""
    container = build_container(settings)
    hl7_server = hl7_listener(settings, container)
    dicom_server = dicom_listener(settings, container)
    http_server = HttpServer(create_app(container), settings.host, settings.http_port)
    started: list[str] = []
    try:
        await asyncio.to_thread(container.outbox.start)
        started.append("outbox")
        container.listeners.hl7 = await hl7_server.start()
        started.append("hl7")
        container.listeners.dicom = await asyncio.to_thread(dicom_server.start)
        started.append("dicom")
        container.listeners.http = await http_server.start()
        started.append("http")
        log.info("radsync listening: %s", container.listeners.describe())
        sweeper = ReconcileSweeper(container.engines, container.reconciler, utc_now, container.outbound,
                                   settings.reconciliation.sweep_seconds)
        await sweeper.run(stop)
        await stop.wait()
    finally:
        log.info("radsync stopping")
        if "http" in started:
            await http_server.stop()
        if "dicom" in started:
            await asyncio.to_thread(dicom_server.stop)
        if "hl7" in started:
            await hl7_server.stop()
        if "outbox" in started:
            await asyncio.to_thread(container.outbox.stop)
        container.engines.dispose()
        log.info("radsync stopped")
