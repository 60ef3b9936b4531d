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
