"""Domain errors: each names what was wrong so every adapter can translate it once (ACK ERR, DIMSE, HTTP)."""

from __future__ import annotations


class DomainError(Exception):
    """Base class; ``field`` names the offending datum in domain words (``patient.id``, ``order.accession``)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class MissingValue(DomainError):
    """A value the model requires is absent (maps to HL7 error 101, required field missing)."""


class InvalidValue(DomainError):
    """A value has the wrong form or does not fit its target (HL7 102 data type error / 103 table value)."""


class UnknownOrder(DomainError):
    """An update or cancel names an order radsync does not know (HL7 204 unknown key identifier)."""


class InvalidTransition(DomainError):
    """A status change not allowed from the current status (see ``status.TRANSITIONS``)."""


class IdentityConflict(DomainError):
    """A key already belongs to another patient; radsync refuses to merge silently."""


class SameIdentifier(DomainError):
    """A merge or identifier change names the same identifier as prior and survivor (HL7 205)."""


class ReversedMerge(DomainError):
    """A merge that undoes an earlier one (A into B, then B into A): refused and flagged for a person to look at."""

    flag = "reversed-merge"


class UnknownPatient(DomainError):
    """No patient and no alias has this identifier."""
