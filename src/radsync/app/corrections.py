"""Link corrections reach the RIS (issue 5 item 3): the one place that tells an order's placer its studies changed.

When an operator links, unlinks, splits or reconciles, each affected order gets, in the same transaction:

* a timeline entry (``study.link_changed``; ``study.unlinked`` for an unlink) with who, why and the Study Instance UIDs fulfilling it before and after, and the same in its patient's history (issue 5 item 5);
* an order status message (ORC-1 SC, ORM^O01 or OMI^O23 per destination; app/status_out.py builds the context) to
  every "status" destination, carrying the Study Instance UIDs that fulfil the order *now* -- unless the change
  already moved the order's status, in which case ``status_out.on_progress`` sent that message a moment ago.

An order with nothing performed yet (no IP/CM/DC status) gets the timeline entry only: there is no status to
report, and its studies go out with its first status message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from radsync.app import status_out
from radsync.app.outbound import context_of, send
from radsync.app.patient_ports import HistoryEntry
from radsync.app.ports import OrderKey, TimelineEntry, UnitOfWork
from radsync.domain.order import ImagingOrder
from radsync.domain.reconciliation import ProcedureCandidate


@dataclass(frozen=True, slots=True)
class _Before:
    order: ImagingOrder
    study_uids: tuple[str, ...]


class LinkCorrection:
    """Snapshot the affected orders before a link change (``affects``), then ``report`` once it is applied."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow
        self._before: dict[tuple[str, str, str], _Before] = {}

    def affects(self, procedures: Iterable[ProcedureCandidate]) -> LinkCorrection:
        for p in procedures:
            key = OrderKey(p.filler_number, p.placer_number, p.accession)
            identity = p.order_identity()
            if identity in self._before:
                continue
            order = self._uow.orders.find(key)
            if order is not None:
                self._before[identity] = _Before(order, self._uow.reports.linked_study_uids(OrderKey.of(order)))
        return self

    def report(
        self, *, study_instance_uid: str, change: str, actor: str, why: str, kind: str = "study.link_changed"
    ) -> list[str]:
        """Timeline entry (``kind``) and status message per affected order; returns the control IDs queued."""
        uow = self._uow
        control_ids: list[str] = []
        for before in self._before.values():
            after = uow.orders.find(OrderKey.of(before.order))
            if after is None:
                continue
            now_uids = uow.reports.linked_study_uids(OrderKey.of(after))
            sent: list[str] = []
            status = status_out.placer_status(after)
            if status is not None and status is status_out.placer_status(before.order):
                # exactly the studies fulfilling the order now: none after an unlink (context_of would fall back
                # to the order's own scheduled UID, which no stored study has)
                ctx = replace(context_of(uow, after), study_uids=tuple(now_uids))
                sent = send(uow, "status", ctx, uow.wire.status_message_type,
                            lambda address, c=ctx, s=status: uow.wire.order_status(c, s, address))
            control_ids.extend(sent)
            uow.identities.record(after.patient_id, HistoryEntry(  # GET /api/patients/{id}/history shows it
                kind,
                old={"accession": after.accession.value, "studies": list(before.study_uids)},
                new={"accession": after.accession.value, "studies": list(now_uids), "change": change,
                     "study_instance_uid": study_instance_uid, "why": why},
                actor=actor,
                message_id=uow.message_id,
            ))
            uow.orders.add_timeline(
                after,
                TimelineEntry(
                    kind,
                    f"{change} by {actor}: studies {len(before.study_uids)} -> {len(now_uids)}",
                    {
                        "study_instance_uid": study_instance_uid,
                        "change": change,
                        "actor": actor,
                        "why": why,
                        "studies": {"old": list(before.study_uids), "new": list(now_uids)},
                        "control_ids": sent,
                    },
                    uow.message_id,
                ),
            )
        return control_ids
