"""The identity check made before any link: is the patient in the DICOM header the order's patient?

Patient ID and its issuer must agree (an unqualified ID from a modality may be taken as the order's issuer --
FIELD-NOTES §15). Name and birth date are compared per a site policy (FIELD-NOTES §2, dcm4chee#4701):

* ``strict``   -- family and given name equal after folding (case, accents, punctuation), birth date equal;
* ``tolerant`` -- as strict, but one typo or transposition per name part, or family/given swapped, is fine;
* ``lenient``  -- patient ID (+ issuer) only.

A value missing on either side is not compared (and the evidence says so): an empty Patient's Name
cannot contradict anything. A missing Patient ID is never a match -- the identity is unknown.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from radsync.domain.ids import Issuer, PatientId
from radsync.domain.names import PersonName
from radsync.domain.patient import Patient
from radsync.domain.similarity import names_within


class IdentityMode(Enum):
    STRICT = "strict"
    TOLERANT = "tolerant"
    LENIENT = "lenient"


class Reason(StrEnum):
    """Why a study is UNASSIGNED or in CONFLICT; stable codes for the API, the CLI and the history."""

    NO_PATIENT_ID = "no_patient_id"
    NO_ACCESSION = "no_accession"  # nothing names an order and the patient has no open order
    UNKNOWN_ACCESSION = "unknown_accession"  # accession / request attributes name no known order
    NO_CANDIDATE = "no_candidate"  # the patient's open orders do not fit modality and date
    SEVERAL_CANDIDATES = "several_candidates"
    PATIENT_ID_MISMATCH = "patient_id_mismatch"
    ISSUER_MISMATCH = "patient_issuer_mismatch"
    NAME_MISMATCH = "name_mismatch"
    BIRTH_DATE_MISMATCH = "birth_date_mismatch"
    UNLINKED = "unlinked"


@dataclass(frozen=True, slots=True)
class IdentityPolicy:
    mode: IdentityMode = IdentityMode.STRICT
    # An image without Issuer of Patient ID matches an order patient with an issuer when the ID values agree.
    accept_unqualified_patient_id: bool = True


@dataclass(frozen=True, slots=True)
class IdentityCheck:
    """``same`` is True (same patient), False (another patient) or None (cannot tell: no Patient ID)."""

    same: bool | None
    reason: str = ""
    fields: dict[str, str] = field(default_factory=dict)


def check_identity(
    patient_id: PatientId,
    name: PersonName,
    birth_date: dt.date | None,
    patient: Patient,
    policy: IdentityPolicy,
) -> IdentityCheck:
    """Compare what a study (or MPPS) says about its patient with the order's patient record."""
    received = patient_id.value.strip()
    if not received:
        return IdentityCheck(None, Reason.NO_PATIENT_ID, {"patient_id": "missing"})
    if received != patient.id.value.strip():
        return IdentityCheck(False, Reason.PATIENT_ID_MISMATCH, {"patient_id": "differs"})
    fields = {"patient_id": "equal"}
    issuer_verdict = _compare_issuers(patient_id.issuer, patient.id.issuer, policy)
    fields["issuer"] = issuer_verdict
    if issuer_verdict == "differs" or issuer_verdict == "missing":
        return IdentityCheck(False, Reason.ISSUER_MISMATCH, fields)
    if policy.mode is IdentityMode.LENIENT:
        fields["name"] = fields["birth_date"] = "not compared (lenient)"
        return IdentityCheck(True, "", fields)
    tolerant = policy.mode is IdentityMode.TOLERANT
    agrees = names_within(name, patient.name, 1 if tolerant else 0, allow_swap=tolerant)
    if agrees is None:
        fields["name"] = "not compared (missing)"
    elif not agrees:
        fields["name"] = "differs"
        return IdentityCheck(False, Reason.NAME_MISMATCH, fields)
    else:
        fields["name"] = (
            "within one edit"
            if tolerant and not names_within(name, patient.name, 0, allow_swap=False)
            else "equal"
        )
    if birth_date is None or patient.birth_date is None:
        fields["birth_date"] = "not compared (missing)"
    elif birth_date != patient.birth_date:
        fields["birth_date"] = "differs"
        return IdentityCheck(False, Reason.BIRTH_DATE_MISMATCH, fields)
    else:
        fields["birth_date"] = "equal"
    return IdentityCheck(True, "", fields)


def _compare_issuers(received: Issuer, known: Issuer, policy: IdentityPolicy) -> str:
    if received.is_empty() and known.is_empty():
        return "none on either side"
    if received.is_empty():
        return "assumed (unqualified ID)" if policy.accept_unqualified_patient_id else "missing"
    if known.is_empty():
        return "not compared (order has none)"
    if received.namespace and known.namespace:
        return "equal" if received.namespace == known.namespace else "differs"
    if received.universal_id and known.universal_id:
        return "equal" if received.universal_id == known.universal_id else "differs"
    return "not compared (different forms)"
