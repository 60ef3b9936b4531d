"""``/api/patients``: a patient, its history, and demographic corrections by an operator (issue 5 items 3, 5).

``GET /api/patients/{id}`` and ``GET /api/patients/{id}/history`` (``?issuer=`` when several patients share the
ID); an identifier that was merged away resolves to the surviving patient and the answer says so
(``resolved_from``). ``PATCH /api/patients/{id}`` corrects demographics: the user is the ``X-Radsync-User``
header or the body's ``actor``; the change is audited, shows at once in the worklist and Q/R answers, and goes to
destinations subscribed to ``patient`` as ADT^A08.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Header
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.unit_of_work import SqlUnitOfWork, transaction
from radsync.app.outbound import Outbound
from radsync.app.patients import CorrectPatient, PatientService, PatientView
from radsync.clock import utc_now
from radsync.domain.errors import MissingValue
from radsync.domain.ids import PatientId
from radsync.domain.names import PersonName
from radsync.domain.patient import Patient, PatientUpdate, Sex

_SEX = {"M": Sex.MALE, "F": Sex.FEMALE, "O": Sex.OTHER, "": Sex.UNKNOWN}


class PatientCorrection(BaseModel):
    """Only the fields given change; ``""`` clears one (``null`` is the same as leaving it out)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str | None = Field(default=None, max_length=400, description="`Family^Given^Middle^Prefix^Suffix`")
    birth_date: dt.date | Literal[""] | None = None
    sex: Literal["M", "F", "O", ""] | None = None
    address: str | None = Field(default=None, max_length=400)
    actor: str | None = Field(default=None, max_length=200, description="Who corrects (else X-Radsync-User).")

    def values(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.name is not None:
            out["name"] = PersonName.from_canonical(self.name)
        if self.birth_date is not None:
            out["birth_date"] = self.birth_date or None
        if self.sex is not None:
            out["sex"] = _SEX[self.sex]
        if self.address is not None:
            out["address"] = self.address
        return out


def patients_router(
    engines: Engines, service: PatientService, outbound: Outbound, clock: Callable[[], dt.datetime] = utc_now
) -> APIRouter:
    router = APIRouter(prefix="/api/patients", tags=["patients"])

    @router.get("/{patient_id}")
    def get_patient(patient_id: str, issuer: str | None = None) -> dict[str, Any]:
        with engines.read.connect() as connection, connection.begin():
            view = service.view(_uow(connection, clock), patient_id, issuer)
        return patient_json(view)

    @router.get("/{patient_id}/history")
    def get_history(patient_id: str, issuer: str | None = None) -> dict[str, Any]:
        """Every change of the patient, oldest first: old and new values, who or what caused it, when."""
        with engines.read.connect() as connection, connection.begin():
            view = service.view(_uow(connection, clock), patient_id, issuer, with_history=True)
        return patient_json(view) | {"history": view.history or []}

    @router.patch("/{patient_id}")
    def correct(
        patient_id: str,
        body: PatientCorrection,
        issuer: str | None = None,
        x_radsync_user: str | None = Header(default=None, max_length=200),
    ) -> dict[str, Any]:
        actor = (body.actor or x_radsync_user or "").strip()
        if not actor:
            raise MissingValue("say who corrects: the X-Radsync-User header or the body's actor", field="actor")
        values = body.values()
        if not values:
            raise MissingValue("nothing to correct: give name, birth_date, sex or address", field="body")
        command = CorrectPatient(patient_id, issuer, PatientUpdate(PatientId(patient_id), values), actor)
        with transaction(engines.write, clock, outbound) as uow:
            view = service.correct(uow, command)
        return patient_json(view)

    return router


def _uow(connection: Connection, clock: Callable[[], dt.datetime]) -> SqlUnitOfWork:
    return SqlUnitOfWork(connection, clock())


def patient_json(view: PatientView) -> dict[str, Any]:
    p: Patient = view.patient
    body: dict[str, Any] = {
        "patient_id": p.id.value,
        "issuer": p.id.issuer.namespace,
        "name": p.name.canonical(),
        "birth_date": p.birth_date.isoformat() if p.birth_date else None,
        "sex": p.sex.value,
        "address": p.address,
        "source_time": p.source_time.isoformat() if p.source_time else None,
        "aliases": view.aliases,
        "resolved_from": None,
    }
    if view.resolved_from is not None:
        body["resolved_from"] = {
            "patient_id": view.resolved_from.value,
            "issuer": view.resolved_from.issuer.namespace,
            "note": "this identifier was merged into (or changed to) the patient shown",
        }
    return body
