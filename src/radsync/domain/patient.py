"""Patients and the rule for applying demographic updates."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from enum import Enum

from radsync.domain.ids import PatientId
from radsync.domain.names import PersonName


class Sex(Enum):
    """Administrative sex, in the DICOM vocabulary (HL7 table 0001 is mapped by the HL7 adapter)."""

    MALE = "M"
    FEMALE = "F"
    OTHER = "O"
    UNKNOWN = ""


@dataclass(frozen=True, slots=True)
class Patient:
    """A patient as the RIS/ADT knows them. ``None`` on an optional field means "not known"."""

    id: PatientId
    name: PersonName = PersonName()
    birth_date: dt.date | None = None
    sex: Sex = Sex.UNKNOWN
    other_ids: tuple[PatientId, ...] = ()
    mother_birth_name: PersonName = PersonName()
    address: str = ""
    weight_kg: str = ""
    size_m: str = ""
    medical_alerts: tuple[str, ...] = ()
    allergies: tuple[str, ...] = ()
    pregnancy_status: int | None = None
    patient_state: str = ""
    confidentiality: str = ""
    # When the source (RIS/ADT) stated the demographics last applied (EVN-2, else MSH-7): the out-of-order guard.
    source_time: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class PatientUpdate:
    """Changes to a patient: only fields present in ``values`` change; a field set to its empty value clears it.

    Why: in HL7 an empty field means "no change" and ``""`` means "delete" (MAPPING.md §1.4); the adapter
    turns that distinction into which keys are present here.
    """

    id: PatientId
    values: dict[str, object] = field(default_factory=dict)
    source_time: dt.datetime | None = None  # when the source stated these values; None = not known (API)

    def is_stale(self, patient: Patient | None) -> bool:
        """An update older than the one last applied must not roll the record back (issue 5 item 1)."""
        return (
            patient is not None and self.source_time is not None and patient.source_time is not None
            and self.source_time < patient.source_time
        )

    def apply_to(self, patient: Patient | None) -> Patient:
        base = patient if patient is not None else Patient(id=self.id)
        changed = replace(base, **self.values)  # type: ignore[arg-type]
        if self.source_time is not None and (base.source_time is None or self.source_time > base.source_time):
            changed = replace(changed, source_time=self.source_time)
        return changed
