"""JSON forms of domain value objects, for the ``details`` columns. The only place that knows them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from radsync.domain.ids import Code, EntityId, Issuer, PatientId
from radsync.domain.names import PersonName


def issuer_json(issuer: Issuer) -> list[str]:
    return [issuer.namespace, issuer.universal_id, issuer.universal_id_type]


def issuer_from(data: list[str] | None) -> Issuer:
    return Issuer(*data) if data else Issuer()


def entity_json(entity: EntityId) -> list[Any]:
    return [entity.value, issuer_json(entity.issuer)]


def entity_from(data: list[Any] | None) -> EntityId:
    return EntityId(data[0], issuer_from(data[1])) if data else EntityId("")


def patient_id_json(pid: PatientId) -> list[Any]:
    return [pid.value, issuer_json(pid.issuer), pid.type_code]


def patient_id_from(data: list[Any]) -> PatientId:
    return PatientId(data[0], issuer_from(data[1]), data[2])


def code_json(code: Code | None) -> list[str] | None:
    return [code.value, code.scheme, code.meaning] if code else None


def code_from(data: list[str] | None) -> Code | None:
    return Code(*data) if data else None


def name_json(name: PersonName) -> str:
    return name.canonical()


def name_from(data: str | None) -> PersonName:
    return PersonName.from_canonical(data or "")


def datetime_json(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def datetime_from(data: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(data) if data else None
