"""What can be wrong with an inbound HL7 message, in HL7's own terms (v2.5.1 ch. 2.15.5 ERR, table 0357).

``Hl7Error`` carries the table 0357 code, the location (ERL: segment^sequence^field^repetition^component^
sub-component) and whether the answer is AR (reject: unsupported type, version, processing ID, charset; the
sender may retry after configuration) or AE (application error: fix the data). ack.py turns it into an ERR
segment; ack.py also holds the one table that translates domain errors (MAPPING.md §6.5).
"""

from __future__ import annotations

from enum import Enum, IntEnum
from typing import NamedTuple


class ErrorCode(IntEnum):
    """HL7 table 0357 (message error condition codes)."""

    SEGMENT_SEQUENCE = 100
    REQUIRED_FIELD_MISSING = 101
    DATA_TYPE = 102
    TABLE_VALUE_NOT_FOUND = 103
    UNSUPPORTED_MESSAGE_TYPE = 200
    UNSUPPORTED_EVENT = 201
    UNSUPPORTED_PROCESSING_ID = 202
    UNSUPPORTED_VERSION = 203
    UNKNOWN_KEY = 204
    DUPLICATE_KEY = 205
    RECORD_LOCKED = 206
    INTERNAL = 207

    @property
    def text(self) -> str:
        return _TEXT[self]


_TEXT = {
    ErrorCode.SEGMENT_SEQUENCE: "Segment sequence error",
    ErrorCode.REQUIRED_FIELD_MISSING: "Required field missing",
    ErrorCode.DATA_TYPE: "Data type error",
    ErrorCode.TABLE_VALUE_NOT_FOUND: "Table value not found",
    ErrorCode.UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    ErrorCode.UNSUPPORTED_EVENT: "Unsupported event code",
    ErrorCode.UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    ErrorCode.UNSUPPORTED_VERSION: "Unsupported version id",
    ErrorCode.UNKNOWN_KEY: "Unknown key identifier",
    ErrorCode.DUPLICATE_KEY: "Duplicate key identifier",
    ErrorCode.RECORD_LOCKED: "Application record locked",
    ErrorCode.INTERNAL: "Application internal error",
}


class AckCode(Enum):
    """MSA-1 acknowledgment codes, original mode (HL7 table 0008)."""

    ACCEPT = "AA"
    ERROR = "AE"
    REJECT = "AR"


class Location(NamedTuple):
    """An ERL: where in the message the error is. Zero means "not narrower than this".

    A NamedTuple because the mapping builds one per field it reads (cheap), and only errors use them.
    """

    segment: str
    sequence: int = 1
    field: int = 0
    repetition: int = 0
    component: int = 0
    subcomponent: int = 0

    def parts(self) -> list[str]:
        """``[segment, sequence, field, repetition, component, sub-component]`` without trailing zeros."""
        numbers = [self.sequence, self.field, self.repetition, self.component, self.subcomponent]
        while numbers and not numbers[-1]:
            numbers.pop()
        return [self.segment, *(str(n) for n in numbers)]

    def __str__(self) -> str:
        return "^".join(self.parts())


class Hl7Error(Exception):
    """An inbound message answered with AE or AR and an ERR segment.

    ``message`` goes back to the sender (MSA-3 / ERR-8) and may quote the sender's own data; log it only at
    DEBUG (no PHI above DEBUG), log ``code`` and ``location`` at higher levels.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        location: Location | None = None,
        *,
        ack: AckCode = AckCode.ERROR,
        flag: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.location = location
        self.ack = ack
        self.flag = flag  # added to the message log's flags (e.g. ``reversed-merge``) for a person to look at

    def __repr__(self) -> str:
        return f"Hl7Error({self.code.value}, at={self.location}, ack={self.ack.value})"


def rejected(code: ErrorCode, message: str, location: Location | None = None) -> Hl7Error:
    """An AR: the message is of a kind radsync does not accept (type, event, version, processing ID, charset)."""
    return Hl7Error(code, message, location, ack=AckCode.REJECT)
