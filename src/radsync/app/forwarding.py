"""Forwarding (auto-routing): every instance of a reconciled study goes to each ``forward = true`` DICOM destination.

Only MATCHED studies are forwarded, so a downstream PACS never sees an unreconciled study; UNASSIGNED, CONFLICT
and quarantined instances never are. The entries are outbox rows written in the transaction of the change that
makes an instance forwardable (ARCHITECTURE invariant 4):

* an instance stored into a MATCHED study (``StudyService``): one entry per destination;
* a study that gains links (auto match, late order, manual reconcile or link, split): entries for every instance
  not yet queued or sent there (``Reconciler._link_study``).

An entry names the SOP Instance UID only (control ID and payload). The delivery worker reads the stored original
and applies the current truth *when it sends* (adapters/outbox/dicom_forward.py), so a correction made while an
entry waits is in the copy. Idempotent: an instance with a pending, failed, sending or sent entry for a destination
is not queued again there; a dead one may be (the operator's ``resend`` is the other way back).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from radsync.app.outbox import OutboxEvent
from radsync.app.ports import OrderKey
from radsync.domain.ids import EntityId

if TYPE_CHECKING:
    from radsync.app.ports import UnitOfWork

FORWARD_EVENT: OutboxEvent = "forward"
FORWARD_MESSAGE_TYPE = "C-STORE"


class ForwardLedger(Protocol):
    """Port: which instances a destination still needs (adapters/persistence/forwarding.py)."""

    def unforwarded(self, destination: str, study_instance_uid: str, sop_instance_uid: str = "") -> list[str]:
        """SOP Instance UIDs of the study's non-quarantined instances (only ``sop_instance_uid`` when given) with
        no pending, failed, sending or sent forward entry for ``destination``; in storage order."""
        ...

    def first_order(self, study_instance_uid: str) -> EntityId | None:
        """The accession number of the study's first linked order (the entries' order, for its timeline)."""
        ...


def forward_study(uow: UnitOfWork, study_instance_uid: str, accession: EntityId | None = None) -> int:
    """Queue every instance of a MATCHED study that a forwarding destination has not got; returns the count."""
    return _queue(uow, study_instance_uid, "", accession)


def forward_instance(uow: UnitOfWork, study_instance_uid: str, sop_instance_uid: str) -> int:
    """Queue one instance just stored into a MATCHED study."""
    if not uow.outbox.destinations(FORWARD_EVENT):
        return 0
    return _queue(uow, study_instance_uid, sop_instance_uid, uow.forwarding.first_order(study_instance_uid))


def _queue(uow: UnitOfWork, study_instance_uid: str, sop_instance_uid: str, accession: EntityId | None) -> int:
    destinations: Sequence[str] = uow.outbox.destinations(FORWARD_EVENT)
    order = OrderKey(accession=accession) if accession is not None and accession.value else None
    queued = 0
    for destination in destinations:
        for uid in uow.forwarding.unforwarded(destination, study_instance_uid, sop_instance_uid):
            uow.outbox.enqueue(destination, FORWARD_MESSAGE_TYPE, uid.encode("ascii"), uid, order)
            queued += 1
    return queued
