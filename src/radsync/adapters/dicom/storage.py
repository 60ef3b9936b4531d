"""Storage SCP (PS3.4 Annex B): C-STORE of every standard Storage SOP Class, kept exactly as received.

Per C-STORE request, in this order (ARCHITECTURE invariant 2, durable before acknowledge)::

    file = preamble + File Meta (PS3.10 7.1) + event.request.DataSet.getvalue()   # the raw received bytes
    writing = io_pool.submit(blobs.put, file)        # temp file, fsync, atomic link, fsync dir: on another thread
    header = instance_header.read_header(file)       # meanwhile: only the tags reconciliation needs
    blob = writing.result()                          # the file is durable (or the C-STORE fails)
    commits.run(studies.record_instance(...))        # one short write transaction, shared with other associations
    return status                                    # only now does the modality hear "success"

Why the overlap: the header read (~1 ms of CPU) and the file's two fsyncs (0.3-2 ms each on a shared disk) are
independent, and on one association each C-STORE waits for the previous one's status, so every millisecond of
the handler is a millisecond per instance. The index row is still written only after the file is durable. A
header that is then refused (0xA900, 0xC000) has its just-written file removed again ("nothing written"); a file
that was already there is left alone. Why ``GroupCommit``: concurrent associations in one process share one
commit instead of queueing on SQLite's write lock (adapters/persistence/group_commit.py).

Why raw bytes: decoding the data set into a pydicom Dataset and ``save_as`` halves throughput (PERF-NOTES.md), and
re-encoding could change what the modality sent. Compressed transfer syntaxes are accepted and stored as received
(``TRANSFER_SYNTAXES``); the header is read without touching the pixel data.

Outcome → status (PS3.4 B.2.3), the one table of this SCP (``OUTCOME_STATUS``):

================================  ===============================================================================
stored                            Success 0x0000
identical resend                  Success 0x0000; nothing is written (same content = same blob key) or indexed
same UID, other content           original kept, newcomer stored under its own key and recorded as a duplicate;
                                  Warning 0xB000 with an Error Comment (default) or Success
                                  (``dicom_duplicate_status = "success"``)
quarantined (patient differs)     Success 0x0000: stored and flagged; the study is unchanged (FIELD-NOTES §2)
no SOP Instance / Study / Series  Failure 0xA900 "data set does not match SOP class"; nothing written
UID, or UID differs from command
undecodable header                Failure 0xC000 "cannot understand"; nothing written
disk or database unavailable      Failure 0xA700 "out of resources"
================================  ===============================================================================

Logs above DEBUG carry UIDs and outcomes, never patient names or IDs.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import evt
from pynetdicom.presentation import AllStoragePresentationContexts
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from radsync.adapters.blobstore import BlobStoreError, FileBlobStore
from radsync.adapters.dicom.instance_header import HeaderError, file_meta_bytes, read_header
from radsync.adapters.dicom.service import DicomService
from radsync.adapters.dicom.status import NStatus, n_failure
from radsync.adapters.persistence.group_commit import GroupCommit
from radsync.adapters.persistence.unit_of_work import Clock
from radsync.app.outbound import NO_OUTBOUND, Outbound
from radsync.app.studies import InstanceReceived, InstanceRecorded, StudyService
from radsync.domain.errors import DomainError
from radsync.domain.study import BlobRef, InstanceOutcome, InstanceSummary

log = logging.getLogger(__name__)

# Uncompressed, deflate, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE: what modalities send.
TRANSFER_SYNTAXES: tuple[str, ...] = (
    ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian,
    JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless,
    JPEG2000Lossless, JPEG2000, RLELossless,
)
STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)

OUTCOME_STATUS: dict[InstanceOutcome, NStatus] = {
    InstanceOutcome.STORED: NStatus.SUCCESS,
    InstanceOutcome.IDENTICAL_RESEND: NStatus.SUCCESS,
    InstanceOutcome.CONFLICTING_DUPLICATE: NStatus.WARNING_DUPLICATE_KEPT_ASIDE,
    InstanceOutcome.QUARANTINED: NStatus.SUCCESS,
}
DUPLICATE_COMMENT = "SOP Instance UID known with other content: original kept"
# Threads that write files while the handler reads the header; one per association sending at once is enough.
WRITER_THREADS = 8


@dataclass(frozen=True, slots=True)
class StorageTarget:
    """What the Storage SCP writes to: the blob store, the write engine, the use case and its clock."""

    blobs: FileBlobStore
    engine: Engine
    studies: StudyService
    clock: Clock
    duplicate_is_warning: bool = True
    outbound: Outbound = NO_OUTBOUND  # order status messages caused by reconciled images (app/status_out.py)
    commits: GroupCommit | None = field(default=None, compare=False)  # built from the fields above when None


class StoreHandler:
    """EVT_C_STORE: raw bytes to disk, index, then answer (see the module docstring)."""

    def __init__(self, target: StorageTarget) -> None:
        self._target = target
        self._commits = target.commits or GroupCommit(target.engine, target.clock, target.outbound)
        self._writers = ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="blob-write")

    def __call__(self, event: Any) -> Dataset | int:
        request = event.request
        calling_ae = _calling_ae(event)
        transfer_syntax = str(event.context.transfer_syntax)
        try:
            file_bytes = file_meta_bytes(
                str(request.AffectedSOPClassUID or ""),
                str(request.AffectedSOPInstanceUID or ""),
                transfer_syntax,
                calling_ae,
            ) + request.DataSet.getvalue()
        except Exception as error:  # the File Meta could not be built from the command's UIDs
            log.warning("C-STORE from %s refused: %s", calling_ae, type(error).__name__)
            return n_failure(NStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, "invalid Affected SOP UIDs")
        writing = self._writers.submit(self._target.blobs.put_reporting, file_bytes)
        try:
            header = read_header(file_bytes)
        except HeaderError as error:
            self._discard(writing)
            log.warning("C-STORE from %s refused: %s", calling_ae, error)
            return n_failure(NStatus.CANNOT_UNDERSTAND, str(error))
        problem = _identity_problem(header, request)
        if problem:
            self._discard(writing)
            log.warning("C-STORE from %s refused: %s", calling_ae, problem)
            return n_failure(NStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, problem)
        try:
            blob, _ = writing.result()
            recorded = self.record(blob, header, transfer_syntax, calling_ae)
        except (OSError, BlobStoreError, SQLAlchemyError) as error:
            log.error("C-STORE of %s failed: %s", header.sop_instance_uid, type(error).__name__)
            return n_failure(NStatus.OUT_OF_RESOURCES, f"not stored: {type(error).__name__}")
        except DomainError as error:
            log.warning("C-STORE of %s refused: %s", header.sop_instance_uid, error)
            return n_failure(NStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, str(error))
        return self._answer(recorded)

    def store(self, file_bytes: bytes, header: Any, transfer_syntax: str, calling_ae: str) -> InstanceRecorded:
        """Write the file, then index it in one transaction; return what happened."""
        return self.record(self._target.blobs.put(file_bytes), header, transfer_syntax, calling_ae)

    def record(self, blob: BlobRef, header: Any, transfer_syntax: str, calling_ae: str) -> InstanceRecorded:
        """Index a durable file (group commit with the other associations); return what happened."""
        command = InstanceReceived(
            study_instance_uid=header.study_instance_uid,
            series=header.series,
            instance=InstanceSummary(
                header.sop_instance_uid, header.sop_class_uid, transfer_syntax, blob, header.instance_number
            ),
            header=header.study,
            calling_ae_title=calling_ae,
        )
        studies = self._target.studies
        recorded = self._commits.run(lambda uow: studies.record_instance(uow, command))
        log.debug("stored %s: %s (%s)", header.sop_instance_uid, recorded.outcome.value, recorded.study_state.value)
        return recorded

    def _discard(self, writing: Future[tuple[BlobRef, bool]]) -> None:
        """A refused C-STORE leaves nothing behind: remove the file if this request created it."""
        try:
            blob, created = writing.result()
            if created:
                self._target.blobs.discard(blob.key)
        except (OSError, BlobStoreError) as error:
            log.warning("refused C-STORE: its file could not be removed: %s", type(error).__name__)

    def _answer(self, recorded: InstanceRecorded) -> Dataset | int:
        status = OUTCOME_STATUS[recorded.outcome]
        if status is NStatus.WARNING_DUPLICATE_KEPT_ASIDE:
            if not self._target.duplicate_is_warning:
                return int(NStatus.SUCCESS)
            return n_failure(status, DUPLICATE_COMMENT)
        return int(status)


def _identity_problem(header: Any, request: Any) -> str:
    """Why the header cannot be indexed (PS3.4 B.2.3 0xA900), or ``""``."""
    for value, name in (
        (header.sop_instance_uid, "SOP Instance UID"),
        (header.sop_class_uid, "SOP Class UID"),
        (header.study_instance_uid, "Study Instance UID"),
        (header.series.series_instance_uid, "Series Instance UID"),
    ):
        if not value:
            return f"{name} missing"
    if request.AffectedSOPInstanceUID and str(request.AffectedSOPInstanceUID) != header.sop_instance_uid:
        return "SOP Instance UID differs from the command's"
    if request.AffectedSOPClassUID and str(request.AffectedSOPClassUID) != header.sop_class_uid:
        return "SOP Class UID differs from the command's"
    return ""


def _calling_ae(event: Any) -> str:
    try:
        return str(event.assoc.requestor.ae_title).strip()
    except AttributeError:
        return ""


def storage_service(target: StorageTarget) -> DicomService:
    """The Storage SCP: every standard Storage SOP Class, with the compressed transfer syntaxes too."""
    return DicomService(
        name="Storage",
        sop_classes=STORAGE_SOP_CLASSES,
        handlers=((evt.EVT_C_STORE, StoreHandler(target)),),
        transfer_syntaxes=TRANSFER_SYNTAXES,
    )

