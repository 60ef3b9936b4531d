"""Repositories: the only row <-> domain mapping (STYLE.md §8), over one SQLAlchemy connection."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, or_, select, update

from radsync.adapters.persistence import codec as c
from radsync.adapters.persistence import fast_sql
from radsync.adapters.persistence.tables import (
    order_timeline,
    orders,
    patients,
    requested_procedures,
    scheduled_steps,
    step_stations,
)
from radsync.app.ports import OrderKey, TimelineEntry
from radsync.domain.ids import EntityId, PatientId
from radsync.domain.names import fold
from radsync.domain.order import ImagingOrder, Priority, RequestedProcedure, ScheduledStep, Visit
from radsync.domain.patient import Patient, Sex
from radsync.domain.status import StepStatus

# Statements built once: building a Core statement costs far more than running it on SQLite, and the HL7 intake
# runs these for every message (PERF-NOTES; ~20 statements per order inside a budget of ~2 ms).
_PATIENT_BY_ID = select(patients).where(
    patients.c.patient_id == bindparam("v"), patients.c.issuer == bindparam("i"),
    patients.c.issuer_uid == bindparam("u"),
)
_PATIENT_PK_BY_ID = select(patients.c.pk).where(
    patients.c.patient_id == bindparam("v"), patients.c.issuer == bindparam("i"),
    patients.c.issuer_uid == bindparam("u"),
)
_INSERT_PATIENT = insert(patients).returning(patients.c.pk)
_UPDATE_PATIENT = update(patients).where(patients.c.pk == bindparam("_pk"))


# One lookup for an order by any of its numbers; the precedence (filler, placer, accession) is applied to the few
# candidate rows in Python. One variant per combination of numbers present (an empty number must not match).
_ORDER_NUMBERS = (
    ("filler", orders.c.filler_number, orders.c.filler_issuer),
    ("placer", orders.c.placer_number, orders.c.placer_issuer),
    ("accession", orders.c.accession, orders.c.accession_issuer),
)
_ORDER_CANDIDATES: dict[tuple[bool, bool, bool], Any] = {}


def _order_candidates(present: tuple[bool, bool, bool]) -> Any:
    statement = _ORDER_CANDIDATES.get(present)
    if statement is None:
        clauses = [number == bindparam(name) for (name, number, _), on in zip(_ORDER_NUMBERS, present, strict=True) if on]
        columns = [orders.c.pk] + [c for _, number, issuer in _ORDER_NUMBERS for c in (number, issuer)]
        statement = _ORDER_CANDIDATES[present] = select(*columns).where(or_(*clauses)).order_by(orders.c.pk.desc())
    return statement


_INSERT_ORDER = insert(orders).returning(orders.c.pk)
_UPDATE_ORDER = update(orders).where(orders.c.pk == bindparam("_pk"))
_PROCEDURES_OF_ORDER = select(requested_procedures.c.procedure_id, requested_procedures.c.pk).where(
    requested_procedures.c.order_pk == bindparam("o")
)
_INSERT_PROCEDURE = insert(requested_procedures).returning(requested_procedures.c.pk)
_UPDATE_PROCEDURE = update(requested_procedures).where(requested_procedures.c.pk == bindparam("_pk"))
_STEPS_OF_PROCEDURE = select(
    scheduled_steps.c.step_id, scheduled_steps.c.pk, scheduled_steps.c.station_ae_titles
).where(scheduled_steps.c.procedure_pk == bindparam("p"))
_INSERT_STEP = insert(scheduled_steps).returning(scheduled_steps.c.pk)
_UPDATE_STEP = update(scheduled_steps).where(scheduled_steps.c.pk == bindparam("_pk"))
_STUDY_UID_OWNER = (
    select(orders.c.filler_number, orders.c.placer_number, orders.c.accession)
    .join(requested_procedures, requested_procedures.c.order_pk == orders.c.pk)
    .where(requested_procedures.c.study_instance_uid == bindparam("uid"))
)
_INSERT_TIMELINE = insert(order_timeline)
_INSERT_STEP_STATION = insert(step_stations)


def _identifier_params(pid: PatientId) -> dict[str, str]:
    return {"v": pid.value, "i": pid.issuer.namespace, "u": pid.issuer.universal_id}


def name_search_key(patient: Patient) -> str:
    """The folded alphabetic name that MWL and Q/R name matching run against (an indexed column)."""
    return fold(patient.name.alphabetic.joined())


class SqlPatientRepository:
    def __init__(self, connection: Connection, now: dt.datetime) -> None:
        self._conn = connection
        self._now = now
        # Primary keys seen in this unit of work, None for "not stored" (rows are never deleted inside one; save()
        # records what it inserts), so a use case that reads, saves and then links a patient looks it up once.
        self._pks: dict[tuple[str, str, str], int | None] = {}

    def get(self, patient_id: PatientId) -> Patient | None:
        found = fast_sql.rows(self._conn, _PATIENT_BY_ID, _identifier_params(patient_id))
        row = found[0] if found else None
        self._pks[_pk_key(patient_id)] = row.pk if row is not None else None
        return patient_from_row(row._asdict()) if row is not None else None

    def pk_of(self, patient_id: PatientId) -> int | None:
        key = _pk_key(patient_id)
        if key not in self._pks:
            self._pks[key] = fast_sql.scalar(self._conn, _PATIENT_PK_BY_ID, _identifier_params(patient_id))
        return self._pks[key]

    def forget(self) -> None:
        """Drop the primary-key cache: a merge or identifier change deleted or re-keyed a patient row."""
        self._pks.clear()

    def save(self, patient: Patient) -> None:
        values = _patient_values(patient) | {"updated_at": self._now}
        pk = self.pk_of(patient.id)
        if pk is None:
            self._pks[_pk_key(patient.id)] = fast_sql.scalar(self._conn, _INSERT_PATIENT, values)
        else:
            fast_sql.rows(self._conn, _UPDATE_PATIENT, values | {"_pk": pk})


def _pk_key(pid: PatientId) -> tuple[str, str, str]:
    return (pid.value, pid.issuer.namespace, pid.issuer.universal_id)


def _patient_values(p: Patient) -> dict[str, Any]:
    return {
        "patient_id": p.id.value,
        "issuer": p.id.issuer.namespace,
        "issuer_uid": p.id.issuer.universal_id,
        "issuer_uid_type": p.id.issuer.universal_id_type,
        "name": p.name.canonical(),
        "name_fold": name_search_key(p),
        "birth_date": p.birth_date.strftime("%Y%m%d") if p.birth_date else "",
        "sex": p.sex.value,
        "source_time": p.source_time,
        "details": {
            "type_code": p.id.type_code,
            "other_ids": [c.patient_id_json(o) for o in p.other_ids],
            "mother_birth_name": c.name_json(p.mother_birth_name),
            "address": p.address,
            "weight_kg": p.weight_kg,
            "size_m": p.size_m,
            "medical_alerts": list(p.medical_alerts),
            "allergies": list(p.allergies),
            "pregnancy_status": p.pregnancy_status,
            "patient_state": p.patient_state,
            "confidentiality": p.confidentiality,
        },
    }


# The columns ``patient_from_row`` reads, for the readers that join patients into their own selects.
PATIENT_COLUMNS = (
    patients.c.patient_id,
    patients.c.issuer,
    patients.c.issuer_uid,
    patients.c.issuer_uid_type,
    patients.c.name,
    patients.c.birth_date,
    patients.c.sex,
    patients.c.details,
)


def patient_from_row(row: Any) -> Patient:
    d = row["details"]
    return Patient(
        id=PatientId(
            row["patient_id"],
            c.issuer_from([row["issuer"], row["issuer_uid"], row["issuer_uid_type"]]),
            d.get("type_code", ""),
        ),
        name=c.name_from(row["name"]),
        birth_date=dt.datetime.strptime(row["birth_date"], "%Y%m%d").date() if row["birth_date"] else None,
        sex=Sex(row["sex"]),
        other_ids=tuple(c.patient_id_from(o) for o in d.get("other_ids", [])),
        mother_birth_name=c.name_from(d.get("mother_birth_name")),
        address=d.get("address", ""),
        weight_kg=d.get("weight_kg", ""),
        size_m=d.get("size_m", ""),
        medical_alerts=tuple(d.get("medical_alerts", ())),
        allergies=tuple(d.get("allergies", ())),
        pregnancy_status=d.get("pregnancy_status"),
        patient_state=d.get("patient_state", ""),
        confidentiality=d.get("confidentiality", ""),
        source_time=row.get("source_time"),
    )


class SqlOrderRepository:
    def __init__(self, connection: Connection, now: dt.datetime, patients_repo: SqlPatientRepository) -> None:
        self._conn = connection
        self._now = now
        self._patients = patients_repo
        # Order primary keys by lookup key within this unit of work, including "not stored" (None) answers;
        # save() records the key of an order it inserts. Orders are never deleted inside a unit of work.
        self._pks: dict[OrderKey, int | None] = {}

    # -- lookups -------------------------------------------------------------------------------------

    def _order_pk(self, key: OrderKey) -> int | None:
        if key in self._pks:
            return self._pks[key]
        wanted = (key.filler_number, key.placer_number, key.accession)
        present = tuple(bool(e.value) for e in wanted)
        pk = None
        if any(present):
            params = {name: e.value for (name, _, _), e in zip(_ORDER_NUMBERS, wanted, strict=True) if e.value}
            rows = fast_sql.rows(self._conn, _order_candidates(present), params)  # type: ignore[arg-type]
            # filler first, then placer, then accession; the newest order wins; an issuer, when given, must match
            for position, entity in enumerate(wanted):
                if not entity.value:
                    continue
                number, namespace = 1 + 2 * position, entity.issuer.namespace
                pk = next((r[0] for r in rows if r[number] == entity.value
                           and (not namespace or r[number + 1] == namespace)), None)
                if pk is not None:
                    break
        self._pks[key] = pk
        return pk

    def find(self, key: OrderKey) -> ImagingOrder | None:
        pk = self._order_pk(key)
        return self._load(pk) if pk is not None else None

    def study_uid_owner(self, study_instance_uid: str) -> OrderKey | None:
        found = fast_sql.rows(self._conn, _STUDY_UID_OWNER, {"uid": study_instance_uid})
        if not found:
            return None
        filler, placer, accession = found[0]
        return OrderKey(EntityId(filler), EntityId(placer), EntityId(accession))

    def orders_of_patient(self, patient_id: PatientId, *, open_only: bool) -> Iterator[ImagingOrder]:
        patient_pk = self._patients.pk_of(patient_id)
        if patient_pk is None:
            return
        query = select(orders.c.pk).where(orders.c.patient_pk == patient_pk)
        if open_only:
            open_statuses = [s.value for s in StepStatus if not s.is_final]
            query = query.where(
                orders.c.pk.in_(
                    select(scheduled_steps.c.order_pk).where(scheduled_steps.c.status.in_(open_statuses))
                )
            )
        for pk in self._conn.execute(query).scalars().all():
            yield self._load(pk)

    def _load(self, pk: int) -> ImagingOrder:
        order_row = self._conn.execute(
            select(orders, patients.c.patient_id, patients.c.issuer, patients.c.issuer_uid,
                   patients.c.issuer_uid_type, patients.c.details.label("patient_details"))
            .join(patients, patients.c.pk == orders.c.patient_pk)
            .where(orders.c.pk == pk)
        ).one()._mapping
        proc_rows = self._conn.execute(
            select(requested_procedures).where(requested_procedures.c.order_pk == pk)
            .order_by(requested_procedures.c.pk)
        ).all()
        step_rows = self._conn.execute(
            select(scheduled_steps).where(scheduled_steps.c.order_pk == pk).order_by(scheduled_steps.c.pk)
        ).all()
        steps_by_proc: dict[int, list[ScheduledStep]] = {}
        for s in step_rows:
            steps_by_proc.setdefault(s.procedure_pk, []).append(step_from_row(s._mapping))
        procedures = tuple(
            procedure_from_row(p._mapping, tuple(steps_by_proc.get(p.pk, []))) for p in proc_rows
        )
        d = order_row["details"]
        return ImagingOrder(
            patient_id=PatientId(
                order_row["patient_id"],
                c.issuer_from([order_row["issuer"], order_row["issuer_uid"], order_row["issuer_uid_type"]]),
                order_row["patient_details"].get("type_code", ""),
            ),
            accession=c.entity_from(d["accession"]),
            placer_number=c.entity_from(d["placer_number"]),
            filler_number=c.entity_from(d["filler_number"]),
            visit=Visit(
                admission_id=c.entity_from(d["visit"]["admission_id"]),
                referring_physician=c.name_from(d["visit"]["referring_physician"]),
                location=d["visit"]["location"],
                patient_class=d["visit"]["patient_class"],
            ),
            requesting_physician=c.name_from(d["requesting_physician"]),
            ordered_at=c.datetime_from(d["ordered_at"]),
            medical_alerts=tuple(d["medical_alerts"]),
            patient_state=d["patient_state"],
            procedures=procedures,
        )

    # -- writes ----------------------------------------------------------------------------------------

    def save(self, order: ImagingOrder) -> None:
        patient_pk = self._patients.pk_of(order.patient_id)
        if patient_pk is None:
            raise LookupError("the order's patient must be saved first")
        values = _order_values(order) | {"patient_pk": patient_pk, "updated_at": self._now}
        key = OrderKey.of(order)
        order_pk = self._order_pk(key)
        inserted = order_pk is None
        if order_pk is None:
            order_pk = fast_sql.scalar(self._conn, _INSERT_ORDER, values | {"created_at": self._now})
            self._pks = {k: v for k, v in self._pks.items() if v is not None}  # "not stored" answers are stale now
            self._pks[key] = order_pk
        else:
            self._conn.execute(_UPDATE_ORDER, values | {"_pk": order_pk})
        existing_procs = {} if inserted else {
            r.procedure_id: r.pk for r in self._conn.execute(_PROCEDURES_OF_ORDER, {"o": order_pk})
        }
        for procedure in order.procedures:
            proc_values = {
                "order_pk": order_pk,
                "procedure_id": procedure.procedure_id,
                "study_instance_uid": procedure.study_instance_uid,
                "details": _procedure_details(procedure),
            }
            proc_pk = existing_procs.get(procedure.procedure_id)
            if proc_pk is None:
                proc_pk = fast_sql.scalar(self._conn, _INSERT_PROCEDURE, proc_values)
                self._save_steps(order_pk, proc_pk, patient_pk, procedure.steps, new_procedure=True)
            else:
                self._conn.execute(_UPDATE_PROCEDURE, proc_values | {"_pk": proc_pk})
                self._save_steps(order_pk, proc_pk, patient_pk, procedure.steps)

    def _save_steps(
        self, order_pk: int, proc_pk: int, patient_pk: int, steps: tuple[ScheduledStep, ...], *,
        new_procedure: bool = False,
    ) -> None:
        existing = {} if new_procedure else {
            r.step_id: (r.pk, r.station_ae_titles) for r in self._conn.execute(_STEPS_OF_PROCEDURE, {"p": proc_pk})
        }
        for step in steps:
            stations = "\\".join(step.station_ae_titles)
            values = {
                "procedure_pk": proc_pk,
                "order_pk": order_pk,
                "patient_pk": patient_pk,
                "step_id": step.step_id,
                "modality": step.modality,
                "start_at": step.start,
                "status": step.status.value,
                "station_ae_titles": stations,
                "details": _step_details(step),
                "updated_at": self._now,
            }
            known = existing.get(step.step_id)
            if known is None:
                step_pk = fast_sql.scalar(self._conn, _INSERT_STEP, values)
            else:
                step_pk = known[0]
                self._conn.execute(_UPDATE_STEP, values | {"_pk": step_pk})
                if known[1] == stations:
                    continue
                self._conn.execute(delete(step_stations).where(step_stations.c.step_pk == step_pk))
            if step.station_ae_titles:
                fast_sql.execute_many(
                    self._conn,
                    _INSERT_STEP_STATION,
                    [{"step_pk": step_pk, "ae_title": ae} for ae in dict.fromkeys(step.station_ae_titles)],
                )

    def add_timeline(self, order: ImagingOrder, entry: TimelineEntry) -> None:
        order_pk = self._order_pk(OrderKey.of(order))
        if order_pk is None:
            raise LookupError("timeline entry for an order that is not stored")
        fast_sql.rows(
            self._conn,
            _INSERT_TIMELINE,
            {
                "order_pk": order_pk,
                "at": self._now,
                "kind": entry.kind,
                "summary": entry.summary,
                "detail": entry.detail,
                "message_pk": entry.message_id,
            },
        )


def _order_values(order: ImagingOrder) -> dict[str, Any]:
    return {
        "accession": order.accession.value,
        "accession_issuer": order.accession.issuer.namespace,
        "placer_number": order.placer_number.value,
        "placer_issuer": order.placer_number.issuer.namespace,
        "filler_number": order.filler_number.value,
        "filler_issuer": order.filler_number.issuer.namespace,
        "details": {
            "accession": c.entity_json(order.accession),
            "placer_number": c.entity_json(order.placer_number),
            "filler_number": c.entity_json(order.filler_number),
            "visit": {
                "admission_id": c.entity_json(order.visit.admission_id),
                "referring_physician": c.name_json(order.visit.referring_physician),
                "location": order.visit.location,
                "patient_class": order.visit.patient_class,
            },
            "requesting_physician": c.name_json(order.requesting_physician),
            "ordered_at": c.datetime_json(order.ordered_at),
            "medical_alerts": list(order.medical_alerts),
            "patient_state": order.patient_state,
        },
    }


def _procedure_details(p: RequestedProcedure) -> dict[str, Any]:
    return {
        "description": p.description,
        "code": c.code_json(p.code),
        "priority": p.priority.value,
        "reason": p.reason,
        "reason_code": c.code_json(p.reason_code),
        "transport": p.transport,
        "comments": p.comments,
    }


def procedure_from_row(row: Any, steps: tuple[ScheduledStep, ...]) -> RequestedProcedure:
    d = row["details"]
    return RequestedProcedure(
        procedure_id=row["procedure_id"],
        study_instance_uid=row["study_instance_uid"],
        description=d["description"],
        code=c.code_from(d["code"]),
        priority=Priority(d["priority"]),
        reason=d["reason"],
        reason_code=c.code_from(d["reason_code"]),
        transport=d["transport"],
        comments=d["comments"],
        steps=steps,
    )


def _step_details(s: ScheduledStep) -> dict[str, Any]:
    return {
        "station_name": s.station_name,
        "location": s.location,
        "end": c.datetime_json(s.end),
        "performing_physician": c.name_json(s.performing_physician),
        "description": s.description,
        "protocol_codes": [c.code_json(code) for code in s.protocol_codes],
    }


def step_from_row(row: Any) -> ScheduledStep:
    d = row["details"]
    return ScheduledStep(
        step_id=row["step_id"],
        modality=row["modality"],
        start=row["start_at"],
        station_ae_titles=tuple(a for a in row["station_ae_titles"].split("\\") if a),
        station_name=d["station_name"],
        location=d["location"],
        end=c.datetime_from(d["end"]),
        performing_physician=c.name_from(d["performing_physician"]),
        description=d["description"],
        protocol_codes=tuple(c.code_from(x) for x in d["protocol_codes"] if x),  # type: ignore[misc]
        status=StepStatus(row["status"]),
    )
