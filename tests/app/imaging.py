"""Builders for the image-side use case tests: orders placed through OrderService, instances and MPPS as plain
values (what the DICOM adapter will pass in), and one-transaction helpers."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.unit_of_work import SqlUnitOfWork, transaction
from radsync.app.commands import PlaceOrder
from radsync.app.orders import OrderService
from radsync.app.ports import OrderKey
from radsync.app.procedures import ProcedureService
from radsync.app.reconcile import Reconciler
from radsync.app.stations import Station, StationDirectory
from radsync.app.studies import InstanceReceived, StudyService
from radsync.domain.ids import EntityId, Issuer, PatientId
from radsync.domain.names import PersonName
from radsync.domain.order import ImagingOrder, RequestedProcedure, ScheduledStep
from radsync.domain.patient import PatientUpdate
from radsync.domain.reconciliation import ReconciliationPolicy
from radsync.domain.study import BlobRef, InstanceSummary, RequestItem, SeriesHeader, StudyHeader

T = TypeVar("T")

HOSP = Issuer("HOSP")
JANE = PatientId("P1", HOSP)
JOHN = PatientId("P2", HOSP)
NAMES = {JANE: ("Doe^Jane", dt.date(1980, 3, 4)), JOHN: ("Roe^John", dt.date(1975, 1, 2))}
DAY = dt.date(2024, 6, 12)
SCHEDULED = dt.datetime(2024, 6, 12, 8, 30)
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


@dataclass
class Hub:
    """The services wired as the composition root will wire them, over one database."""

    engines: Engines
    policy: ReconciliationPolicy = field(default_factory=ReconciliationPolicy)
    now: dt.datetime = dt.datetime(2024, 6, 12, 9, 0)

    def __post_init__(self) -> None:
        self.reconciler = Reconciler(self.policy)
        self.studies = StudyService(self.reconciler)
        self.procedures = ProcedureService(self.reconciler)
        counter = itertools.count(1)
        self.orders = OrderService(
            StationDirectory([Station("CT01", "CT"), Station("MR01", "MR")]),
            lambda: f"2.25.{next(counter)}",
            on_placed=self.reconciler.on_order_placed,
        )

    def run(self, work: Callable[[SqlUnitOfWork], T]) -> T:
        with transaction(self.engines.write, lambda: self.now) as uow:
            return work(uow)

    def place(
        self,
        accession: str,
        patient: PatientId = JANE,
        *,
        study_uid: str = "",
        modality: str = "CT",
        procedures: int = 1,
        start: dt.datetime = SCHEDULED,
    ) -> ImagingOrder:
        name, birth = NAMES[patient]
        order = ImagingOrder(
            patient_id=patient,
            accession=EntityId(accession),
            filler_number=EntityId(f"F-{accession}", Issuer("RIS")),
            procedures=tuple(
                RequestedProcedure(
                    f"RP{i}",
                    study_uid if i == 1 else "",
                    description=f"{modality} exam {i}",
                    steps=(ScheduledStep(f"SPS{i}", modality, start),),
                )
                for i in range(1, procedures + 1)
            ),
        )
        update = PatientUpdate(patient, {"name": PersonName.from_canonical(name), "birth_date": birth})
        return self.run(lambda uow: self.orders.place(uow, PlaceOrder(update, order)))

    def order(self, accession: str) -> ImagingOrder:
        found = self.run(lambda uow: uow.orders.find(OrderKey(accession=EntityId(accession))))
        assert found is not None
        return found

    def statuses(self, accession: str) -> list[str]:
        return [s.status.value for _, s in self.order(accession).steps()]

    def store(self, instance: InstanceReceived):  # type: ignore[no-untyped-def]
        return self.run(lambda uow: self.studies.record_instance(uow, instance))


_sop = itertools.count(1)


def instance(
    study_uid: str,
    *,
    patient: PatientId = JANE,
    name: str | None = None,
    accession: str = "",
    series: str = "",
    modality: str = "CT",
    items: tuple[RequestItem, ...] = (),
    sop: str = "",
    content: bytes = b"",
    birth: dt.date | None = None,
) -> InstanceReceived:
    """An instance as the storage adapter would describe it; ``content`` stands for the file's bytes."""
    default_name, default_birth = NAMES.get(patient, ("", None))
    sop = sop or f"1.2.826.0.1.3680043.10.{next(_sop)}"
    digest = hashlib.sha256(content or sop.encode()).hexdigest()
    return InstanceReceived(
        study_instance_uid=study_uid,
        series=SeriesHeader(series or f"{study_uid}.1", modality, 1, "Axial", request_items=items),
        instance=InstanceSummary(sop, CT_IMAGE, EXPLICIT_LE, BlobRef(digest, len(content) or 100, digest)),
        header=StudyHeader(
            patient_id=patient,
            patient_name=PersonName.from_canonical(default_name if name is None else name),
            birth_date=birth or default_birth,
            accession=EntityId(accession),
            study_date=DAY,
            modalities=(modality,),
        ),
        calling_ae_title="CT01",
    )
