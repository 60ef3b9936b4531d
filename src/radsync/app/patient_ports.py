"""Ports of the patient-identity use cases (app/patients.py): aliases, history, identity moves."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol

from radsync.domain.ids import PatientId


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One change of a patient: what it was, what it became, who caused it (a message or an API user)."""

    kind: str  # patient.created, demographics.updated, demographics.stale, merge, identifier.changed, alias.added
    old: dict[str, Any] = field(default_factory=dict)
    new: dict[str, Any] = field(default_factory=dict)
    actor: str = ""  # API user; empty when ``message_id`` names the message
    message_id: int | None = None
    source_time: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class MovedRecords:
    """What a merge or identifier change moved; ``study_uids``: moved studies that are not MATCHED."""

    orders: int = 0
    steps: int = 0
    studies: int = 0
    mpps: int = 0
    study_uids: tuple[str, ...] = ()
    mpps_uids: tuple[str, ...] = ()  # moved MPPS that are not MATCHED

    def as_dict(self) -> dict[str, int]:
        return {"orders": self.orders, "steps": self.steps, "studies": self.studies, "mpps": self.mpps}


class PatientIdentity(Protocol):
    def alias_target(self, alias: PatientId) -> PatientId | None:
        """The current identifier of the patient ``alias`` names, if it is an alias."""
        ...

    def identify(self, value: str, issuer: str | None) -> tuple[list[PatientId], bool]:
        """Patients with this ID (issuer namespace when given), else those it is an alias of (``True``)."""
        ...

    def add_alias(self, alias: PatientId, survivor: PatientId, kind: str, message_id: int | None) -> None: ...

    def aliases(self, patient: PatientId) -> list[dict[str, str]]: ...

    def record(self, patient: PatientId, entry: HistoryEntry) -> None: ...

    def history(self, patient: PatientId) -> list[dict[str, Any]]: ...

    def move_everything(self, prior: PatientId, survivor: PatientId) -> MovedRecords: ...

    def rename(self, prior: PatientId, survivor: PatientId) -> MovedRecords: ...

    def move_received(self, prior: PatientId, survivor: PatientId) -> MovedRecords: ...
