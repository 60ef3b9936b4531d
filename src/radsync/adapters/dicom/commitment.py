"""Storage Commitment Push Model SCP (PS3.4 Annex J): "are these instances safely yours now?"

N-ACTION (J.3.2, Action Type 1 "Request Storage Commitment") names a Transaction UID and a Referenced SOP
Sequence. radsync answers the N-ACTION at once (Success: the request is accepted), then checks every item and
reports the result with an N-EVENT-REPORT (J.3.3): Event Type 1 when every instance is committed, 2 when some
failed; committed items go in Referenced SOP Sequence, the others in Failed SOP Sequence with a Failure Reason.

An instance is committed only when it is *safely stored*: indexed in the database (the C-STORE transaction
committed) **and** its file is present in the blob store with the recorded size and a File Meta naming the same
SOP Class. Failure reasons (J.3.3.1.1.1): 0x0112 no such object instance (unknown, or its file is missing),
0x0119 class/instance conflict (stored under another SOP Class), 0x0110 processing failure (unreadable).

Delivery (J.3.3, J.6): the report goes on the same association once the N-ACTION response has left (the sending
thread waits until the N-ACTION response is queued for the wire: dimse.FindResponseProvider.wait_until_answered), and
waits at most ``REPORT_ANSWER_SECONDS`` for its answer there: a requester releasing right after the response never
answers, and its release waits as long as the report does. If the requester has released (or is releasing) by then (many modalities release at once and listen for the report), radsync
opens a new association to it -- its address comes from ``[[dicom_destinations]]`` by AE title -- proposing the SCP
role for Storage Commitment (J.3.3, PS3.7 D.3.3.4), and tries a few times with backoff. A requester with no
configured address, or one that stays unreachable, is logged as undelivered; the modality then asks again, as
PS3.4 J.3.3 expects it to when no report arrives. Reports are not kept across a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.sequence import Sequence
from pynetdicom import AE, build_role, evt
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]
from sqlalchemy import Engine

from radsync.adapters.blobstore import FileBlobStore
from radsync.adapters.dicom.instance_header import items_of, text_of
from radsync.adapters.dicom.service import DicomService
from radsync.adapters.dicom.status import NStatus, n_failure
from radsync.adapters.persistence.unit_of_work import Clock, transaction

log = logging.getLogger(__name__)

# The well-known SOP Instance of the Storage Commitment Push Model SOP Class (PS3.4 J.3.1).
COMMITMENT_INSTANCE_UID = "1.2.840.10008.1.20.1.1"
REQUEST_COMMITMENT = 1  # N-ACTION Action Type ID (J.3.2.1)
ALL_COMMITTED = 1  # N-EVENT-REPORT Event Type ID: storage commitment request successful (J.3.3.1)
SOME_FAILED = 2  # ... complete, failures exist
RESPONSE_WAIT_SECONDS = 10.0  # how long a report waits for its N-ACTION response to be queued (normally < 1 ms)
# How long a report on the requester's own association waits for its answer. A listening requester answers at
# once; one that released right after the N-ACTION response ignores the report, and the association (its release
# included) is held while radsync waits, so the wait is short and the report then goes on a new association.
REPORT_ANSWER_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Verdict:
    sop_class_uid: str
    sop_instance_uid: str
    failure: NStatus | None = None  # None = committed


class CommitmentChecker:
    """Decides, per referenced instance, whether radsync holds it safely (database and disk)."""

    def __init__(self, engine: Engine, blobs: FileBlobStore, clock: Clock) -> None:
        self._engine = engine
        self._blobs = blobs
        self._clock = clock

    def check(self, references: list[tuple[str, str]]) -> list[Verdict]:
        with transaction(self._engine, self._clock) as uow:
            stored = {uid: uow.studies.instance(uid) for _, uid in references}
        return [self._verdict(cls, uid, stored.get(uid)) for cls, uid in references]

    def _verdict(self, sop_class: str, uid: str, stored: Any) -> Verdict:
        if not uid or stored is None:
            return Verdict(sop_class, uid, NStatus.NO_SUCH_SOP_INSTANCE)
        try:
            path = self._blobs.path(stored.blob_key)
            meta = read_file_meta_info(path)
        except FileNotFoundError:
            log.error("storage commitment: file of %s is missing from the blob store", uid)
            return Verdict(sop_class, uid, NStatus.NO_SUCH_SOP_INSTANCE)
        except Exception:
            log.exception("storage commitment: file of %s cannot be read", uid)
            return Verdict(sop_class, uid, NStatus.PROCESSING_FAILURE)
        if sop_class and str(meta.get("MediaStorageSOPClassUID", "")) != sop_class:
            return Verdict(sop_class, uid, NStatus.CLASS_INSTANCE_CONFLICT)
        return Verdict(sop_class, uid)


def event_report(transaction_uid: str, verdicts: list[Verdict]) -> tuple[int, Dataset]:
    """The N-EVENT-REPORT Event Type ID and Event Information (PS3.4 Table J.3-2)."""
    info = Dataset()
    info.TransactionUID = transaction_uid
    committed, failed = Sequence(), Sequence()
    for verdict in verdicts:
        item = Dataset()
        item.ReferencedSOPClassUID = verdict.sop_class_uid
        item.ReferencedSOPInstanceUID = verdict.sop_instance_uid
        if verdict.failure is None:
            committed.append(item)
        else:
            item.FailureReason = int(verdict.failure)
            failed.append(item)
    if committed:
        info.ReferencedSOPSequence = committed
    if failed:
        info.FailedSOPSequence = failed
    return (SOME_FAILED if failed else ALL_COMMITTED), info


class ReportDelivery:
    """Sends an N-EVENT-REPORT on the requesting association, or on a new one when the requester has gone."""

    def __init__(
        self, ae_title: str, addresses: Mapping[str, tuple[str, int]], retry_delays: Seq[float] = (1.0, 3.0, 10.0)
    ) -> None:
        self._ae_title = ae_title
        self._addresses = dict(addresses)
        self._retry_delays = tuple(retry_delays)

    def deliver(
        self, assoc: Any, event_type: int, report: Dataset, after_response: tuple[int, int] | None = None
    ) -> bool:
        """Runs on its own thread; True when the requester answered the report.

        ``after_response``: the N-ACTION's Message ID and the provider's response mark taken in its handler; the
        report is sent only once that response is queued, so it never overtakes the response on the wire
        (dimse.FindResponseProvider.wait_until_answered).
        """
        wait = getattr(getattr(assoc, "dimse", None), "wait_until_answered", None)
        if after_response is not None and callable(wait):
            wait("N_ACTION", after_response[0], after_response[1], RESPONSE_WAIT_SECONDS)
        if assoc.is_established and not _releasing(assoc) and _send(assoc, event_type, report, REPORT_ANSWER_SECONDS):
            return True
        requester = str(assoc.requestor.ae_title).strip()
        address = self._addresses.get(requester)
        if address is None:
            log.warning("storage commitment %s: association closed and no [[dicom_destinations]] entry for the "
                        "requester's AE title; report not delivered", report.TransactionUID)
            return False
        for delay in (0.0, *self._retry_delays):
            time.sleep(delay)
            if self._on_new_association(requester, address, event_type, report):
                return True
        log.warning("storage commitment %s: requester unreachable after %d attempts; report not delivered",
                    report.TransactionUID, len(self._retry_delays) + 1)
        return False

    def _on_new_association(self, requester: str, address: tuple[str, int], event_type: int, report: Dataset) -> bool:
        ae = AE(ae_title=self._ae_title)
        ae.add_requested_context(StorageCommitmentPushModel)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        role = build_role(StorageCommitmentPushModel, scp_role=True)  # we send the report: the SCP role
        try:
            assoc = ae.associate(address[0], address[1], ae_title=requester, ext_neg=[role])
        except Exception:
            log.exception("storage commitment %s: cannot associate with the requester", report.TransactionUID)
            return False
        if not assoc.is_established:
            return False
        try:
            return _send(assoc, event_type, report)
        finally:
            assoc.release()


class CommitmentHandler:
    """EVT_N_ACTION: accept the request, then report (see the module docstring)."""

    def __init__(self, checker: CommitmentChecker, delivery: ReportDelivery) -> None:
        self._checker = checker
        self._delivery = delivery

    def __call__(self, event: Any) -> tuple[Dataset | int, Dataset | None]:
        request = event.request
        if request.ActionTypeID != REQUEST_COMMITMENT:
            return n_failure(NStatus.NO_SUCH_ACTION_TYPE, "only Action Type 1 is supported"), None
        try:
            info = event.action_information
        except Exception:
            return n_failure(NStatus.PROCESSING_FAILURE, "action information cannot be decoded"), None
        transaction_uid = text_of(info, "TransactionUID")
        if not transaction_uid:
            return n_failure(NStatus.MISSING_ATTRIBUTE_VALUE, "Transaction UID missing"), None
        references = [
            (text_of(item, "ReferencedSOPClassUID"), text_of(item, "ReferencedSOPInstanceUID"))
            for item in items_of(info, "ReferencedSOPSequence")
        ]
        try:
            verdicts = self._checker.check(references)
        except Exception:
            log.exception("storage commitment %s could not be checked", transaction_uid)
            return n_failure(NStatus.PROCESSING_FAILURE, "commitment could not be checked"), None
        event_type, report = event_report(transaction_uid, verdicts)
        log.info("storage commitment %s: %d committed, %d failed", transaction_uid,
                 sum(v.failure is None for v in verdicts), sum(v.failure is not None for v in verdicts))
        mark = getattr(getattr(event.assoc, "dimse", None), "response_mark", None)
        after_response = (int(request.MessageID), mark()) if callable(mark) else None
        threading.Thread(
            target=self._delivery.deliver, args=(event.assoc, event_type, report, after_response),
            name="commitment-report",
            daemon=True,
        ).start()
        return int(NStatus.SUCCESS), None


def _releasing(assoc: Any) -> bool:
    """The requester has asked to release (an A-RELEASE waits, unread, in the association's queue): a report
    sent now would go unanswered. Peeked, not taken: the association's own reactor answers the release."""
    peek = getattr(getattr(assoc, "dul", None), "peek_next_pdu", None)
    return callable(peek) and isinstance(peek(), A_RELEASE)


def _send(assoc: Any, event_type: int, report: Dataset, answer_seconds: float | None = None) -> bool:
    """Send the N-EVENT-REPORT and wait for its answer (``answer_seconds``: at most that long, else the
    association's DIMSE timeout)."""
    kept = assoc.dimse_timeout
    if answer_seconds is not None:
        assoc.dimse_timeout = answer_seconds
    try:
        status, _ = assoc.send_n_event_report(
            report, event_type, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID
        )
    except Exception:
        log.exception("storage commitment %s: sending the report failed", report.TransactionUID)
        return False
    finally:
        assoc.dimse_timeout = kept
    if "Status" not in status:  # no answer: the association was aborted or timed out
        return False
    if status.Status != 0:
        log.warning("storage commitment %s: requester answered the report with 0x%04X", report.TransactionUID,
                    status.Status)
    return True  # answered: a refusal is the requester's decision, sending again would not change it


def commitment_service(
    engine: Engine, blobs: FileBlobStore, clock: Clock, delivery: ReportDelivery
) -> DicomService:
    return DicomService(
        name="Storage Commitment",
        sop_classes=(StorageCommitmentPushModel,),
        handlers=((evt.EVT_N_ACTION, CommitmentHandler(CommitmentChecker(engine, blobs, clock), delivery)),),
    )
