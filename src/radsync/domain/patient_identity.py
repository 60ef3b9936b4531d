"""The patient-identity rules: what a merge or change of identifier does, and what a demographic change was.

A patient is one row keyed by (ID, issuer). A merge (ADT A40, A34) or change of identifier (A47) names a
*prior* identifier (MRG-1) and a *survivor* (PID-3); afterwards the prior identifier is an *alias* of the
survivor, so anything arriving later under it lands on the survivor. Which of the cases below applies depends
only on what each identifier resolves to now, so the rule is decided here, once, without a database.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from enum import Enum

from radsync.domain.errors import IdentityConflict, ReversedMerge, SameIdentifier
from radsync.domain.ids import Issuer, PatientId
from radsync.domain.patient import Patient


class IdentityChange(Enum):
    """Why an identifier moves: the kind recorded with the alias and in the history."""

    MERGE = "merge"  # ADT A40 (and A34)
    CHANGE_ID = "change_id"  # ADT A47


@dataclass(frozen=True, slots=True)
class Resolved:
    """What an identifier names now: the current identifier of its patient row, and whether through an alias."""

    current: PatientId | None  # None: no patient and no alias has this identifier
    via_alias: bool = False


class MergePlan(Enum):
    """What a merge does, given what its two identifiers resolve to."""

    REPEATED = "repeated"  # the prior identifier already is an alias of the survivor: nothing to do (AA)
    ALIAS_ONLY = "alias_only"  # the prior patient is unknown: remember the alias (images may still come)
    RENAME = "rename"  # the survivor is unknown: the prior patient takes the new identifier
    MERGE = "merge"  # both known: everything of the prior moves to the survivor, whose row stays


def same_identifier(a: PatientId, b: PatientId) -> bool:
    """Equal IDs whose issuers do not contradict each other (an unqualified ID is taken as the other's)."""
    return a.value.strip() == b.value.strip() and issuers_agree(a.issuer, b.issuer)


def issuers_agree(a: Issuer, b: Issuer) -> bool:
    if a.is_empty() or b.is_empty():
        return True
    if a.namespace and b.namespace:
        return a.namespace == b.namespace
    return a.universal_id == b.universal_id


def plan_merge(prior_id: PatientId, survivor_id: PatientId, prior: Resolved, survivor: Resolved) -> MergePlan:
    """The rule for ADT A40/A34/A47; raises for the merges that must be refused (answered AE).

    * MRG-1 equal to PID-3: ``SameIdentifier`` (HL7 205);
    * the survivor identifier is an alias of the prior's patient (A into B, then B into A): ``ReversedMerge``;
    * the prior identifier is an alias of a third patient: ``IdentityConflict`` (it was merged elsewhere).
    """
    if same_identifier(prior_id, survivor_id):
        raise SameIdentifier("MRG-1 names the same patient identifier as PID-3", field="merge.prior_id")
    if prior.current is not None and survivor.current is not None and prior.current == survivor.current:
        if survivor.via_alias and not prior.via_alias:
            raise ReversedMerge(
                "this merge reverses an earlier one: the surviving identifier was merged into the prior patient",
                field="patient.id",
            )
        return MergePlan.REPEATED
    if prior.via_alias:
        raise IdentityConflict(
            "the prior identifier was already merged into another patient", field="merge.prior_id"
        )
    if prior.current is None:
        return MergePlan.ALIAS_ONLY
    if survivor.current is None:
        return MergePlan.RENAME
    return MergePlan.MERGE


# Fields that are not demographics: the identifier is audited as such, the source time is bookkeeping.
_DEMOGRAPHICS = tuple(f.name for f in fields(Patient) if f.name not in {"id", "source_time"})


def demographic_changes(old: Patient | None, new: Patient) -> tuple[dict[str, object], dict[str, object]]:
    """The fields that differ, as (old values, new values) in JSON-ready form, for the patient history.

    For a new patient (``old`` None) only what the message stated: the fields that differ from an empty record.
    """
    before: dict[str, object] = {}
    after: dict[str, object] = {}
    reference = old if old is not None else Patient(id=new.id)
    for name in _DEMOGRAPHICS:
        now = getattr(new, name)
        if getattr(reference, name) == now:
            continue
        before[name] = shown(getattr(old, name)) if old is not None else None
        after[name] = shown(now)
    return before, after


def shown(value: object) -> object:
    """A demographic value as the history shows it (names canonical, dates ISO, enums by value)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, PatientId):
        return identifier_text(value)
    if isinstance(value, tuple):
        return [shown(v) for v in value]
    canonical = getattr(value, "canonical", None)
    if callable(canonical):
        return canonical()
    return str(value)


def identifier_text(pid: PatientId) -> str:
    """``ID^^^ISSUER`` (HL7 CX form), or the bare ID without an issuer."""
    return str(pid)
