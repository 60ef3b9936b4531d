"""The image-side SCPs -- Storage (PS3.4 B), MPPS (PS3.4 F.7), Storage Commitment (PS3.4 J) -- built from the
container, for ``DicomServer.services``. They write; MWL and Verification (server.py) only read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from radsync.adapters.dicom.commitment import ReportDelivery, commitment_service
from radsync.adapters.dicom.mpps import mpps_service
from radsync.adapters.dicom.service import DicomService
from radsync.adapters.dicom.storage import StorageTarget, storage_service
from radsync.clock import utc_now

if TYPE_CHECKING:
    from radsync.bootstrap import Container


def image_services(container: Container) -> list[DicomService]:
    settings = container.settings
    target = StorageTarget(
        blobs=container.blobs,
        engine=container.engines.write,
        studies=container.studies,
        clock=utc_now,
        duplicate_is_warning=settings.dicom_duplicate_status == "warning",
        outbound=container.outbound,
    )
    return [
        storage_service(target),
        mpps_service(container.engines.write, container.procedures, utc_now, container.outbound),
        commitment_service(container.engines.read, container.blobs, utc_now, ReportDelivery(
            settings.ae_title, {d.ae_title: (d.host, d.port) for d in settings.dicom_destinations})),
    ]
