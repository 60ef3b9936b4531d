"""The Query/Retrieve SCP as services the DicomServer binds (PS3.4 Annex C; Patient Root and Study Root models).

``query_retrieve_services`` wires qr_find.py (C-FIND), qr_retrieve.py (C-GET, C-MOVE) and egress.py over the archive
read side (app/archive.py, adapters/persistence/archive_queries.py) and the blob store. Two pynetdicom facts shape
the wiring:

* C-FIND is one intervention event for every FIND SOP class, so the Q/R handler takes over EVT_C_FIND and hands
  other SOP classes (Modality Worklist) to the handler of the service that lists them (``earlier``: the server's
  own service list, read per request);
* a C-GET sends its C-STORE sub-operations on the SCU's own association, so the storage contexts must accept the
  SCU's SCP role: ``storage_roles`` does that per association (EVT_CONN_OPEN).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pynetdicom import evt

from radsync.adapters.blobstore import FileBlobStore
from radsync.adapters.dicom.qr_find import QR_FIND_SOP_CLASSES, QueryRetrieveFind
from radsync.adapters.dicom.qr_retrieve import (
    GET_SOP_CLASSES,
    MOVE_SOP_CLASSES,
    STORAGE_SOP_CLASSES,
    STORED_SYNTAXES,
    Egress,
    RetrieveGet,
    RetrieveMove,
    storage_roles,
)
from radsync.adapters.dicom.service import DicomService
from radsync.adapters.persistence.archive_queries import SqlArchiveReader
from radsync.adapters.persistence.engine import Engines
from radsync.app.archive import ArchiveReader
from radsync.app.study_ports import BlobStore
from radsync.clock import utc_now
from radsync.config import Settings

if TYPE_CHECKING:
    from radsync.bootstrap import Container


def answer_charsets(settings: Settings) -> Mapping[str, str]:
    """Calling AE title -> C-FIND answer character set: stations as for the worklist, destinations override."""
    return {s.ae_title: s.charset for s in settings.stations} | {
        d.ae_title: d.charset for d in settings.dicom_destinations
    }


def query_retrieve_service(
    settings: Settings,
    reader: ArchiveReader,
    blobs: BlobStore,
    earlier: Sequence[DicomService] = (),
) -> DicomService:
    """C-FIND, C-GET and C-MOVE for both information models, as one service."""
    egress = Egress(blobs, settings.ae_title, utc_now)
    destinations = {d.ae_title: (d.host, d.port) for d in settings.dicom_destinations}
    return DicomService(
        name="Query/Retrieve",
        # The storage SOP classes are the C-GET sub-operations' contexts (the Storage SCP registers them too).
        sop_classes=(*QR_FIND_SOP_CLASSES, *GET_SOP_CLASSES, *MOVE_SOP_CLASSES, *STORAGE_SOP_CLASSES),
        transfer_syntaxes=tuple(str(s) for s in STORED_SYNTAXES),
        handlers=(
            (evt.EVT_C_FIND, QueryRetrieveFind(reader, max_answers=settings.qr_max_answers,
                                               retrieve_ae_title=settings.ae_title, services=earlier,
                                               charsets=answer_charsets(settings))),
            (evt.EVT_C_GET, RetrieveGet(reader, egress)),
            (evt.EVT_C_MOVE, RetrieveMove(reader, egress, destinations)),
            (evt.EVT_CONN_OPEN, storage_roles),
        ),
    )


def query_retrieve_services(
    settings: Settings,
    engines: Engines,
    earlier: Sequence[DicomService] = (),
    container: Container | None = None,
) -> list[DicomService]:
    """The Q/R services over radsync's database and the container's blob store (else ``data_dir / "blobs"``)."""
    blobs: BlobStore = container.blobs if container is not None else FileBlobStore(settings.data_dir / "blobs")
    return [query_retrieve_service(settings, SqlArchiveReader(engines.read), blobs, earlier)]
