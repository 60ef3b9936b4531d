"""Query/Retrieve C-GET and C-MOVE SCPs (PS3.4 C.4.2, C.4.3; Patient Root and Study Root, C.6.1.2 / C.6.2.2).

Each handler: identifier -> ``RetrieveRequest`` (qr_keys.py) -> the instances to send with their studies' current
truth (app/archive.py) -> for each one, the original bytes from the blob store, the current truth applied to the
in-memory copy with the Original Attributes Sequence (egress.py), then pynetdicom's C-STORE sub-operation:

* C-GET sends on the requesting association, over the storage contexts the SCU offered with the SCP role
  (``storage_roles`` accepts those role proposals for every storage SOP class);
* C-MOVE opens an association to the Move Destination from ``[[dicom_destinations]]``, proposing one presentation
  context per SOP class and transfer syntax of the instances to send (compressed ones go as stored, never
  decompressed); an unknown Move Destination is answered 0xA801 (PS3.4 C.4.2.1.5).

pynetdicom counts the sub-operations and sends the final response: success when all completed, 0xB000 (warning)
with the Failed SOP Instance UID List when some failed, 0xFE00 after a C-CANCEL. An instance whose original cannot
be read counts as a failed sub-operation (its UID is listed) and the others still go. Quarantined instances are
never sent. The stored file is only read, never written.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import evt
from pynetdicom.presentation import (
    AllStoragePresentationContexts,
    PresentationContext,
    build_context,
)
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # generated
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from radsync.adapters.dicom.connection import tune_connection
from radsync.adapters.dicom.egress import apply_current_truth
from radsync.adapters.dicom.qr_keys import parse_retrieve
from radsync.adapters.dicom.status import InvalidIdentifier, Status, failure
from radsync.app.archive import ArchiveReader, InstanceRecord, resolve_retrieve
from radsync.app.study_ports import BlobStore

LOGGER = logging.getLogger(__name__)

PATIENT_ROOT = (str(PatientRootQueryRetrieveInformationModelGet), str(PatientRootQueryRetrieveInformationModelMove))
GET_SOP_CLASSES = (str(PatientRootQueryRetrieveInformationModelGet), str(StudyRootQueryRetrieveInformationModelGet))
MOVE_SOP_CLASSES = (
    str(PatientRootQueryRetrieveInformationModelMove),
    str(StudyRootQueryRetrieveInformationModelMove),
)
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian)
# Transfer syntaxes a C-GET SCU may offer for its storage contexts and radsync may send as stored.
STORED_SYNTAXES = (
    *UNCOMPRESSED,
    UID("1.2.840.10008.1.2.4.50"),  # JPEG Baseline
    UID("1.2.840.10008.1.2.4.51"),  # JPEG Extended
    UID("1.2.840.10008.1.2.4.57"),  # JPEG Lossless
    UID("1.2.840.10008.1.2.4.70"),  # JPEG Lossless SV1
    UID("1.2.840.10008.1.2.4.80"),  # JPEG-LS Lossless
    UID("1.2.840.10008.1.2.4.81"),  # JPEG-LS Near-lossless
    UID("1.2.840.10008.1.2.4.90"),  # JPEG 2000 Lossless
    UID("1.2.840.10008.1.2.4.91"),  # JPEG 2000
    UID("1.2.840.10008.1.2.5"),  # RLE Lossless
)
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MAX_CONTEXTS = 128  # PS3.8 §9.3.2.2: presentation context IDs are odd numbers 1-255

Response = Any
Clock = Callable[[], dt.datetime]


class Egress:
    """Reads stored originals and applies the current truth to the outgoing copy."""

    def __init__(self, blobs: BlobStore, modifying_system: str, clock: Clock) -> None:
        self._blobs = blobs
        self._system = modifying_system
        self._clock = clock

    def dataset(self, instance: InstanceRecord) -> Dataset:
        """The outgoing dataset, or a stub naming the instance (a failed sub-operation) when unreadable."""
        try:
            with self._blobs.open(instance.blob_key) as handle:
                ds = dcmread(handle)
            apply_current_truth(ds, instance.study, modifying_system=self._system, now=self._clock())
            return ds
        except Exception:
            LOGGER.exception("stored instance %s could not be read for sending", instance.sop_instance_uid)
            stub = Dataset()  # no file meta: pynetdicom's C-STORE fails and lists the UID as failed
            stub.SOPClassUID = instance.sop_class_uid
            stub.SOPInstanceUID = instance.sop_instance_uid
            return stub


def _sub_operations(event: Any, instances: list[InstanceRecord], egress: Egress) -> Iterator[Response]:
    for instance in instances:
        if event.is_cancelled:
            yield Status.CANCEL, None
            return
        yield Status.PENDING, egress.dataset(instance)


def _resolve(reader: ArchiveReader, event: Any, root_patient: bool) -> list[InstanceRecord]:
    request = parse_retrieve(event.identifier, patient_root=root_patient)
    return resolve_retrieve(reader, request)


class RetrieveGet:
    """EVT_C_GET handler: yield the number of sub-operations, then one (PENDING, dataset) per instance."""

    def __init__(self, reader: ArchiveReader, egress: Egress) -> None:
        self._reader = reader
        self._egress = egress

    def __call__(self, event: Any) -> Iterator[Response]:
        calling = str(event.assoc.requestor.ae_title).strip()
        patient_root = str(event.request.AffectedSOPClassUID) in PATIENT_ROOT
        try:
            instances = _resolve(self._reader, event, patient_root)
        except InvalidIdentifier as exc:
            LOGGER.info("C-GET from %s refused: %s", calling, exc)
            yield 1
            yield failure(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc)), None
            return
        except Exception:
            LOGGER.exception("C-GET from %s: the archive could not be read", calling)
            yield 1
            yield failure(Status.UNABLE_TO_PROCESS, "archive unavailable"), None
            return
        LOGGER.info("C-GET from %s: %d instance(s) to send", calling, len(instances))
        yield len(instances)
        yield from _sub_operations(event, instances, self._egress)


class RetrieveMove:
    """EVT_C_MOVE handler: yield the destination (address, port, association options), the count, the datasets."""

    def __init__(self, reader: ArchiveReader, egress: Egress, destinations: Mapping[str, tuple[str, int]]) -> None:
        self._reader = reader
        self._egress = egress
        self._destinations = destinations

    def __call__(self, event: Any) -> Iterator[Response]:
        calling = str(event.assoc.requestor.ae_title).strip()
        destination_ae = str(event.move_destination or "").strip()
        address = self._destinations.get(destination_ae)
        if address is None:
            LOGGER.warning("C-MOVE from %s refused: unknown move destination %r", calling, destination_ae)
            yield None, None  # pynetdicom answers 0xA801, Move Destination unknown
            return
        patient_root = str(event.request.AffectedSOPClassUID) in PATIENT_ROOT
        try:
            instances = _resolve(self._reader, event, patient_root)
            error: tuple[Status, str] | None = None
        except InvalidIdentifier as exc:
            instances, error = [], (Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc))
        except Exception:
            LOGGER.exception("C-MOVE from %s: the archive could not be read", calling)
            instances, error = [], (Status.UNABLE_TO_PROCESS, "archive unavailable")
        # The sub-association gets the per-connection tuning of every radsync association (TCP_NODELAY above all:
        # without it each C-STORE sub-operation waited ~50 ms on Nagle + delayed ACK).
        yield address[0], address[1], {"contexts": move_contexts(instances),
                                       "evt_handlers": [(evt.EVT_CONN_OPEN, tune_connection)]}
        if error is not None:
            LOGGER.info("C-MOVE from %s refused: %s", calling, error[1])
            yield 1
            yield failure(*error), None
            return
        LOGGER.info("C-MOVE from %s to %s: %d instance(s) to send", calling, destination_ae, len(instances))
        yield len(instances)
        yield from _sub_operations(event, instances, self._egress)


def move_contexts(instances: list[InstanceRecord]) -> list[PresentationContext]:
    """Presentation contexts for a C-MOVE's storage association: each SOP class in each stored transfer syntax.

    An uncompressed object may go in any uncompressed syntax the destination accepts; a compressed one only as
    stored (radsync never decodes pixel data).
    """
    wanted: dict[tuple[str, str], None] = {}
    for instance in instances:
        wanted[(instance.sop_class_uid, instance.transfer_syntax_uid)] = None
    contexts: list[PresentationContext] = []
    for sop_class, syntax in wanted:
        if len(contexts) >= MAX_CONTEXTS:
            LOGGER.warning("C-MOVE needs more than %d presentation contexts; the rest will fail", MAX_CONTEXTS)
            break
        syntaxes = [syntax] if syntax not in UNCOMPRESSED else [syntax, *(s for s in UNCOMPRESSED[:2] if s != syntax)]
        contexts.append(build_context(sop_class, syntaxes))
    if not contexts:  # nothing to send: pynetdicom still needs a context to associate
        contexts.append(build_context(SECONDARY_CAPTURE, [ExplicitVRLittleEndian]))
    return contexts


STORAGE_SOP_CLASSES = tuple(str(c.abstract_syntax) for c in AllStoragePresentationContexts)
_STORAGE = frozenset(STORAGE_SOP_CLASSES)


def storage_roles(event: Any) -> None:
    """EVT_CONN_OPEN: accept a C-GET SCU's SCP role on the storage contexts (PS3.7 D.3.3.4, PS3.4 C.4.3.1).

    Why here: the role reply is decided from the acceptor's contexts, which pynetdicom copies into each association
    just before this event, and the services only tell the server which SOP classes and syntaxes they take. The
    flags are set in place on those copies (two attributes per storage context: microseconds), so the storage
    contexts keep the transfer syntaxes the Storage SCP registered. A C-STORE without a role proposal still gets
    the default roles (the peer is SCU).
    """
    for context in event.assoc.acceptor.supported_contexts:
        if context.abstract_syntax in _STORAGE:
            context.scu_role = True
            context.scp_role = True
