"""Order use cases: place, update and change the status of imaging orders (HL7 ORM/OMI, later FHIR).

Each function runs inside one unit of work supplied by the caller, so the message log row, the state change
and the timeline entry commit together (ARCHITECTURE invariants 2 and 6).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from radsync.app.commands import ChangeStepStatus, PlaceOrder, UpdateOrder, UpdatePatient
from radsync.app.patients import PatientService, apply_update
from radsync.app.ports import OrderKey, TimelineEntry, UnitOfWork
from radsync.app.stations import StationDirectory
from radsync.domain.errors import IdentityConflict, UnknownOrder
from radsync.domain.order import ImagingOrder, RequestedProcedure, ScheduledStep
from radsync.domain.patient import Patient, PatientUpdate
from radsync.domain.status import StepEvent

NewUid = Callable[[], str]  # a new Study Instance UID, unique every call (UUID-derived in production)
# Called in the same unit of work after an order is placed or updated: late ORM, images that arrived before
# their order reconcile at once (app.reconcile.Reconciler.on_order_placed).
OrderPlacedHook = Callable[[UnitOfWork, ImagingOrder], object]


class OrderService:
    """The order use cases, with the site policy they need (stations, UID generation)."""

    def __init__(
        self, stations: StationDirectory, new_uid: NewUid, on_placed: OrderPlacedHook | None = None,
        patients: PatientService | None = None,
    ) -> None:
        self._stations = stations
        self._new_uid = new_uid
        self._on_placed = on_placed
        self.patients = patients or PatientService()  # merges and identifier changes (ADT A40/A34/A47)

    def place(self, uow: UnitOfWork, command: PlaceOrder | UpdateOrder) -> ImagingOrder:
        """Create the order or merge it into the known one; return what is now stored."""
        incoming = command.order
        incoming.validate()
        patient = self._apply_patient(uow, command.patient)
        if patient.id != incoming.patient_id:  # the order named an alias: it belongs to the surviving patient
            incoming = replace(incoming, patient_id=patient.id)
        existing = uow.orders.find(OrderKey.of(incoming))
        if existing is not None and existing.patient_id != patient.id:
            raise IdentityConflict(
                "order already belongs to another patient; radsync does not move orders silently",
                field="order.accession",
            )
        reschedule = isinstance(command, UpdateOrder)
        merged = self._merge(existing, incoming, reschedule=reschedule)
        # Only a new order can take another order's Study UID; one radsync has just generated (the incoming
        # procedure had none) is fresh and unique (NewUid), so nobody owns it: no lookup for either.
        given_uids = {p.study_instance_uid for p in incoming.procedures if p.study_instance_uid}
        for procedure in merged.procedures if existing is None else ():
            if procedure.study_instance_uid not in given_uids:
                continue
            owner = uow.orders.study_uid_owner(procedure.study_instance_uid)
            if owner is not None:
                raise IdentityConflict(
                    "Study Instance UID already belongs to another order", field="procedure.study_instance_uid"
                )
        uow.orders.save(merged)
        kind = "order.created" if existing is None else "order.updated"
        off_worklist = [s.step_id for _, s in merged.steps() if not s.station_ae_titles]
        summary = f"{len(merged.steps())} scheduled step(s)"
        if off_worklist:
            summary += f"; {len(off_worklist)} not on any worklist (no station configured for the modality)"
        detail: dict[str, object] = {"steps": [s.step_id for _, s in merged.steps()]}
        if off_worklist:
            detail["not_on_worklist"] = off_worklist
        uow.orders.add_timeline(
            merged, TimelineEntry(kind=kind, summary=summary, detail=detail, message_id=uow.message_id)
        )
        if self._on_placed is not None:
            self._on_placed(uow, merged)
        return merged

    def change_status(self, uow: UnitOfWork, command: ChangeStepStatus) -> ImagingOrder:
        order = uow.orders.find(command.key)
        if order is None:
            raise UnknownOrder("no such order", field="order.number")
        wanted = set(command.step_ids)
        known = {s.step_id for _, s in order.steps()}
        missing = wanted - known
        if missing:
            raise UnknownOrder(f"unknown scheduled step {sorted(missing)[0]}", field="step.id")
        procedures = tuple(
            replace(
                p,
                steps=tuple(s.after(command.event) if not wanted or s.step_id in wanted else s for s in p.steps),
            )
            for p in order.procedures
        )
        changed = replace(order, procedures=procedures)
        uow.orders.save(changed)
        uow.orders.add_timeline(
            changed,
            TimelineEntry(
                kind=f"step.{command.event.value}",
                summary=command.reason or command.event.value,
                detail={"steps": sorted(wanted) or sorted(known)},
                message_id=uow.message_id,
            ),
        )
        return changed

    def update_patient(self, uow: UnitOfWork, command: UpdatePatient) -> Patient:
        """Apply demographics; worklist items join the patient row, so they show the change at once."""
        return self._apply_patient(uow, command.patient)

    # -- internals -------------------------------------------------------------------------------------

    def _apply_patient(self, uow: UnitOfWork, update: PatientUpdate) -> Patient:
        return apply_update(uow, update)  # out-of-order guard, aliases, history: app/patients.py

    def _merge(self, existing: ImagingOrder | None, incoming: ImagingOrder, *, reschedule: bool) -> ImagingOrder:
        old_procedures = {p.procedure_id: p for p in existing.procedures} if existing else {}
        procedures: list[RequestedProcedure] = []
        for procedure in incoming.procedures:
            old = old_procedures.pop(procedure.procedure_id, None)
            study_uid = (old.study_instance_uid if old else "") or procedure.study_instance_uid or self._new_uid()
            old_steps = {s.step_id: s for s in old.steps} if old else {}
            steps = tuple(self._merge_step(old_steps.pop(s.step_id, None), s, reschedule) for s in procedure.steps)
            steps += tuple(old_steps.values())  # steps the message did not mention are kept as they are
            procedures.append(replace(procedure, study_instance_uid=study_uid, steps=steps))
        procedures.extend(old_procedures.values())
        merged = replace(incoming, procedures=tuple(procedures))
        if existing is not None:
            merged = replace(
                merged,
                accession=incoming.accession or existing.accession,
                placer_number=incoming.placer_number or existing.placer_number,
                filler_number=incoming.filler_number or existing.filler_number,
            )
        return merged

    def _merge_step(self, old: ScheduledStep | None, new: ScheduledStep, reschedule: bool) -> ScheduledStep:
        step = new
        if not step.station_ae_titles:
            stations = self._stations.for_modality(step.modality)
            step = replace(
                step,
                station_ae_titles=tuple(s.ae_title for s in stations),
                station_name=step.station_name or (stations[0].name if len(stations) == 1 else ""),
                location=step.location or (stations[0].location if len(stations) == 1 else ""),
            )
        if old is None:
            return step
        status = old.after(StepEvent.RESCHEDULE).status if reschedule else old.status
        return replace(step, status=status)
