"""Identifiers and codes: value objects shared by every boundary."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Issuer:
    """An assigning authority (HL7 HD: namespace ID, universal ID, universal ID type)."""

    namespace: str = ""
    universal_id: str = ""
    universal_id_type: str = ""

    def is_empty(self) -> bool:
        return not (self.namespace or self.universal_id)


NO_ISSUER = Issuer()


@dataclass(frozen=True, slots=True)
class PatientId:
    """A patient identifier; unique only together with its issuer."""

    value: str
    issuer: Issuer = NO_ISSUER
    type_code: str = ""

    def __str__(self) -> str:
        return f"{self.value}^^^{self.issuer.namespace}" if self.issuer.namespace else self.value


@dataclass(frozen=True, slots=True)
class EntityId:
    """An order number or accession number with its issuer (HL7 EI)."""

    value: str
    issuer: Issuer = NO_ISSUER

    def __bool__(self) -> bool:
        return bool(self.value)


@dataclass(frozen=True, slots=True)
class Code:
    """A coded concept (HL7 CE/CWE, DICOM code sequence item, FHIR Coding)."""

    value: str
    scheme: str = ""
    meaning: str = ""
