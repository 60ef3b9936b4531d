"""The patient-identity rules without a database: which merge plan applies, what a change was, what is stale."""

from __future__ import annotations

import datetime as dt

import pytest

from radsync.domain.errors import IdentityConflict, ReversedMerge, SameIdentifier
from radsync.domain.ids import Issuer, PatientId
from radsync.domain.names import PersonName
from radsync.domain.patient import Patient, PatientUpdate
from radsync.domain.patient_identity import MergePlan, Resolved, demographic_changes, plan_merge

A, B, C = (PatientId(v, Issuer("HOSP")) for v in ("A", "B", "C"))


def test_merge_plans() -> None:
    assert plan_merge(A, B, Resolved(A), Resolved(B)) is MergePlan.MERGE
    assert plan_merge(A, B, Resolved(A), Resolved(None)) is MergePlan.RENAME
    assert plan_merge(A, B, Resolved(None), Resolved(B)) is MergePlan.ALIAS_ONLY
    assert plan_merge(A, B, Resolved(None), Resolved(None)) is MergePlan.ALIAS_ONLY
    assert plan_merge(A, B, Resolved(B, via_alias=True), Resolved(B)) is MergePlan.REPEATED  # A into B again


def test_refused_merges() -> None:
    with pytest.raises(SameIdentifier):
        plan_merge(A, A, Resolved(A), Resolved(A))
    with pytest.raises(SameIdentifier):  # an unqualified MRG-1 is the same identifier as PID-3
        plan_merge(PatientId("A"), A, Resolved(None), Resolved(A))
    with pytest.raises(ReversedMerge):  # A into B earlier, now B into A: A resolves to B through its alias
        plan_merge(B, A, Resolved(B), Resolved(B, via_alias=True))
    with pytest.raises(IdentityConflict):  # A was merged into C: it cannot also go into B
        plan_merge(A, B, Resolved(C, via_alias=True), Resolved(B))


def test_a_different_issuer_is_another_identifier() -> None:
    assert plan_merge(PatientId("A", Issuer("X")), A, Resolved(None), Resolved(A)) is MergePlan.ALIAS_ONLY


def test_demographic_changes_name_only_what_changed() -> None:
    old = Patient(A, PersonName.from_canonical("Doe^Jane"), dt.date(1970, 4, 12))
    new = Patient(A, PersonName.from_canonical("Doe^Janet"), dt.date(1970, 4, 12), source_time=dt.datetime(2024, 1, 1))
    assert demographic_changes(old, new) == ({"name": "Doe^Jane"}, {"name": "Doe^Janet"})
    assert demographic_changes(None, old) == (
        {"name": None, "birth_date": None}, {"name": "Doe^Jane", "birth_date": "1970-04-12"})


def test_an_older_update_is_stale_and_a_newer_one_advances_the_source_time() -> None:
    stored = Patient(A, source_time=dt.datetime(2024, 6, 11, 12))
    older = PatientUpdate(A, {"name": PersonName.from_canonical("Old^Name")}, dt.datetime(2024, 6, 11, 11))
    newer = PatientUpdate(A, {}, dt.datetime(2024, 6, 11, 13))
    assert older.is_stale(stored) and not newer.is_stale(stored)
    assert not PatientUpdate(A, {}).is_stale(stored)  # no source time (API): never stale
    assert newer.apply_to(stored).source_time == dt.datetime(2024, 6, 11, 13)
    assert PatientUpdate(A, {}).apply_to(stored).source_time == dt.datetime(2024, 6, 11, 12)
