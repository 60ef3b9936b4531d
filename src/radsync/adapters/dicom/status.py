"""DIMSE status codes radsync answers with, and the one table that turns errors into them.

Codes are PS3.4 Table K.4-1 (Modality Worklist C-FIND), PS3.7 C.1 (general) and PS3.4 A.4 (Verification). Handlers
return or yield these names, never bare numbers (STYLE.md §9.6). A failure carries an Error Comment, cut to the 64
characters of its LO value: a longer one can keep the response from being sent at all (FIELD-NOTES K.72).
"""

from __future__ import annotations

from enum import IntEnum

from pydicom import Dataset

from radsync.domain.errors import DomainError, InvalidValue, MissingValue


class Status(IntEnum):
    """DIMSE status values used by radsync's SCPs."""

    SUCCESS = 0x0000
    # C-FIND pending: one answer per response (PS3.4 K.4.1.2.2)
    PENDING = 0xFF00
    # Pending, and one or more optional keys were not supported for matching (they were ignored)
    PENDING_WARNING = 0xFF01
    # Matching stopped because the peer sent a C-CANCEL
    CANCEL = 0xFE00
    # Refused: more matches than the configured cap (settings.mwl_max_answers), or no resources
    OUT_OF_RESOURCES = 0xA700
    # The identifier cannot be read as a worklist query (undecodable, or a key value of the wrong form)
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    # Unable to process: an error inside radsync (C000-CFFF, PS3.4 K.4-1)
    UNABLE_TO_PROCESS = 0xC000
    # Unable to process: the worklist database could not be read
    UNABLE_TO_READ_WORKLIST = 0xC001


ERROR_COMMENT_MAX = 64


class InvalidIdentifier(Exception):
    """A C-FIND identifier that is not a usable worklist query; ``keyword`` names the offending attribute."""

    def __init__(self, message: str, keyword: str = "") -> None:
        super().__init__(message)
        self.keyword = keyword


# Domain errors -> status. Queries raise few domain errors; the table exists so MPPS/Storage add rows here.
_DOMAIN_ERRORS: tuple[tuple[type[DomainError], Status], ...] = (
    (InvalidValue, Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
    (MissingValue, Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
)


def status_for(error: BaseException) -> Status:
    """The DIMSE failure status for an error raised while answering a request."""
    if isinstance(error, InvalidIdentifier):
        return Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    for kind, status in _DOMAIN_ERRORS:
        if isinstance(error, kind):
            return status
    return Status.UNABLE_TO_PROCESS


def error_comment(text: str) -> str:
    """An Error Comment (0000,0902): printable ASCII, at most 64 characters."""
    cleaned = "".join(ch if " " <= ch <= "~" and ch != "\\" else "?" for ch in text)
    return cleaned[:ERROR_COMMENT_MAX]


def failure(status: Status, comment: str = "") -> Dataset:
    """A status dataset for a failure response, with an Error Comment when one is given."""
    ds = Dataset()
    ds.Status = int(status)
    if comment:
        ds.ErrorComment = error_comment(comment)
    return ds


# -- Storage (PS3.4 B.2.3), MPPS (PS3.4 F.7.2, PS3.7 C) and Storage Commitment (PS3.4 J.3) --------------------
# Appended as a second class so the C-FIND names above keep their meaning; values shared with them (0xA700,
# 0xA900, 0xC000) carry the storage-specific meaning here.


class NStatus(IntEnum):
    """DIMSE status values of radsync's Storage, MPPS and Storage Commitment SCPs."""

    SUCCESS = 0x0000
    # C-STORE warning range (PS3.4 B.2.3, Bxxx): radsync uses it for "same SOP Instance UID, other content:
    # the original is kept, the newcomer stored aside" when ``dicom_duplicate_status = "warning"``.
    WARNING_DUPLICATE_KEPT_ASIDE = 0xB000
    # C-STORE failures (PS3.4 B.2.3)
    OUT_OF_RESOURCES = 0xA700  # the blob store or the database could not take the instance
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # required identifying attributes missing or inconsistent
    CANNOT_UNDERSTAND = 0xC000  # the data set cannot be parsed
    # N-service failures (PS3.7 C.4)
    INVALID_ATTRIBUTE_VALUE = 0x0106
    PROCESSING_FAILURE = 0x0110  # also: N-SET on a final MPPS (PS3.4 F.7.2.2.3)
    DUPLICATE_SOP_INSTANCE = 0x0111
    NO_SUCH_SOP_INSTANCE = 0x0112  # also a Storage Commitment failure reason: "no such object instance"
    CLASS_INSTANCE_CONFLICT = 0x0119  # Storage Commitment failure reason (PS3.4 J.3.3.1.1.1)
    MISSING_ATTRIBUTE = 0x0120
    MISSING_ATTRIBUTE_VALUE = 0x0121
    NO_SUCH_ACTION_TYPE = 0x0123
    DUPLICATE_TRANSACTION_UID = 0x0131  # Storage Commitment failure reason


def n_status_for(error: BaseException) -> NStatus:
    """The N-CREATE / N-SET failure status for an error raised by the MPPS use cases (PS3.4 F.7.2)."""
    from radsync.domain.mpps import DuplicateMpps, MppsNotInProgress, UnknownMpps

    table: tuple[tuple[type[BaseException], NStatus], ...] = (
        (DuplicateMpps, NStatus.DUPLICATE_SOP_INSTANCE),
        (UnknownMpps, NStatus.NO_SUCH_SOP_INSTANCE),
        (MppsNotInProgress, NStatus.PROCESSING_FAILURE),
        (InvalidValue, NStatus.INVALID_ATTRIBUTE_VALUE),
        (MissingValue, NStatus.MISSING_ATTRIBUTE_VALUE),
    )
    for kind, status in table:
        if isinstance(error, kind):
            return status
    return NStatus.PROCESSING_FAILURE


def n_failure(status: NStatus, comment: str = "") -> Dataset:
    """A status dataset for an N-service or C-STORE answer, with an Error Comment when one is given."""
    ds = Dataset()
    ds.Status = int(status)
    if comment:
        ds.ErrorComment = error_comment(comment)
    return ds


# -- Query/Retrieve C-GET / C-MOVE (PS3.4 C.4.2.1.5, C.4.3.1.4) -------------------------------------------------
# The final C-GET/C-MOVE responses are built by pynetdicom from the handler's sub-operation results; these names
# are what radsync's Q/R handlers and tests mean by them (the C-FIND statuses are in ``Status`` above).


class RetrieveStatus(IntEnum):
    """Final statuses of radsync's C-GET and C-MOVE SCPs."""

    SUCCESS = 0x0000
    CANCEL = 0xFE00
    # One or more C-STORE sub-operations failed or had warnings; the Failed SOP Instance UID List names them.
    SUB_OPERATIONS_COMPLETE_WITH_FAILURES = 0xB000
    # The Move Destination is not in [[dicom_destinations]], or could not be associated with.
    MOVE_DESTINATION_UNKNOWN = 0xA801
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    UNABLE_TO_PROCESS = 0xC000
