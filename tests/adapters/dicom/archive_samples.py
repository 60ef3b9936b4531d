"""Helpers for the Storage / MPPS / Storage Commitment tests: a live archive (DicomServer with the image-side
services over a fresh data dir) and pydicom's bundled test files, re-UID'd so every test has its own study."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from radsync.adapters.dicom.server import DicomServer
from radsync.adapters.persistence.unit_of_work import SqlUnitOfWork, transaction
from radsync.app.commands import PlaceOrder
from radsync.bootstrap import Container, build_container
from radsync.config import Settings
from radsync.domain.ids import EntityId, Issuer, PatientId
from radsync.domain.names import PersonName
from radsync.domain.order import ImagingOrder, RequestedProcedure, ScheduledStep
from radsync.domain.patient import PatientUpdate

DCMTK_STORESCU = "/usr/bin/storescu"  # pynetdicom's own storescu script in .venv/bin would shadow dcmtk's
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
HOSP = Issuer("HOSP")
NOW = dt.datetime(2024, 6, 12, 9, 0)


def archive_settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"data_dir": data_dir, "dicom_port": 0, "hl7_port": 0, "http_port": 0,
                                 "dicom_processes": 1, **overrides}
    return Settings(**values)  # type: ignore[arg-type]


@contextmanager
def running_archive(data_dir: Path, **overrides: object) -> Iterator[tuple[Container, int]]:
    container = build_container(archive_settings(data_dir, **overrides))
    server = DicomServer(container.settings, container.engines, container)
    port = server.start()
    try:
        yield container, port
    finally:
        server.stop()
        container.engines.dispose()


def run(container: Container, work):  # type: ignore[no-untyped-def]
    with transaction(container.engines.write, lambda: NOW) as uow:
        return work(uow)


def sample(name: str, out: Path, *, patient_id: str = "P1", accession: str = "", study_uid: str = "",
           series_uid: str = "", name_value: str = "Doe^Jane") -> Path:
    """A pydicom test file with fresh UIDs (and the given patient / accession), written to ``out``."""
    ds = dcmread(get_testdata_file(name))  # type: ignore[arg-type]
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = "HOSP"
    ds.PatientName = name_value
    ds.PatientBirthDate = "19800304"
    ds.AccessionNumber = accession
    ds.StudyDate = "20240612"
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


def dataset_bytes(path: Path) -> bytes:
    """The data set part of a Part 10 file (what travels in a C-STORE), without preamble and File Meta."""
    raw = path.read_bytes()
    meta_length = int.from_bytes(raw[140:144], "little")  # (0002,0000) File Meta Information Group Length
    return raw[144 + meta_length:]


def place_order(container: Container, accession: str, patient: str = "P1", *, modality: str = "CT",
                study_uid: str = "") -> ImagingOrder:
    order = ImagingOrder(
        patient_id=PatientId(patient, HOSP),
        accession=EntityId(accession),
        filler_number=EntityId(f"F-{accession}", Issuer("RIS")),
        procedures=(RequestedProcedure("RP1", study_uid, description="exam",
                                       steps=(ScheduledStep("SPS1", modality, NOW),)),),
    )
    update = PatientUpdate(PatientId(patient, HOSP), {"name": PersonName.from_canonical("Doe^Jane"),
                                                      "birth_date": dt.date(1980, 3, 4)})
    return run(container, lambda uow: container.orders.place(uow, PlaceOrder(update, order)))


def step_statuses(container: Container, accession: str) -> list[str]:
    from radsync.app.ports import OrderKey

    def find(uow: SqlUnitOfWork) -> list[str]:
        order = uow.orders.find(OrderKey(accession=EntityId(accession)))
        assert order is not None
        return [s.status.value for _, s in order.steps()]

    return run(container, find)
