"""Reconciliation rules as a table of cases: pure domain, no database, milliseconds."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field, replace

import pytest

from radsync.domain.identity import IdentityMode, IdentityPolicy, Reason
from radsync.domain.ids import EntityId, Issuer, PatientId
from radsync.domain.mpps import MppsStatus, PerformedProcedureStep
from radsync.domain.names import PersonName
from radsync.domain.order import ScheduledStep
from radsync.domain.patient import Patient
from radsync.domain.reconciliation import (
    RULE_ACCESSION,
    RULE_MANUAL,
    RULE_NONE,
    RULE_PATIENT_MODALITY_DATE,
    RULE_REQUEST_ATTRIBUTES,
    RULE_STUDY_UID,
    ProcedureCandidate,
    ReconciliationPolicy,
    Subject,
    manual_decision,
    reconcile,
)
from radsync.domain.status import StepStatus
from radsync.domain.study import RequestItem, StudyHeader, StudyState

DAY = dt.date(2024, 6, 12)
AT = dt.datetime(2024, 6, 12, 8, 30)
HOSP = Issuer("HOSP")

JANE = Patient(PatientId("P1", HOSP), PersonName.of("Doe", "Jane"), dt.date(1980, 3, 4))
JOHN = Patient(PatientId("P2", HOSP), PersonName.of("Roe", "John"), dt.date(1975, 1, 2))


def proc(
    uid: str,
    accession: str,
    patient: Patient = JANE,
    *,
    rp: str = "RP1",
    modality: str = "CT",
    step: str = "SPS1",
    start: dt.datetime = AT,
    status: StepStatus = StepStatus.SCHEDULED,
    issuer: str = "",
) -> ProcedureCandidate:
    return ProcedureCandidate(
        procedure_uid=uid,
        procedure_id=rp,
        accession=EntityId(accession, Issuer(issuer)),
        patient=patient,
        steps=(ScheduledStep(step, modality, start, status=status),),
        filler_number=EntityId(f"F-{accession}"),
    )


def subject(
    uid: str = "1.2.826.0.1.99",
    *,
    pid: str = "P1",
    issuer: str = "HOSP",
    name: str = "Doe^Jane",
    birth: dt.date | None = dt.date(1980, 3, 4),
    accession: str = "",
    accession_issuer: str = "",
    items: tuple[RequestItem, ...] = (),
    modalities: tuple[str, ...] = ("CT",),
    on: dt.date | None = DAY,
) -> Subject:
    header = StudyHeader(
        patient_id=PatientId(pid, Issuer(issuer)),
        patient_name=PersonName.from_canonical(name),
        birth_date=birth,
        accession=EntityId(accession, Issuer(accession_issuer)),
        study_date=on,
        modalities=modalities,
        request_items=items,
    )
    return Subject.of_study(uid, header)


# The orders radsync knows in every case below.
A1 = proc("2.25.1", "A1")  # Jane, CT
A2 = proc("2.25.2", "A2", rp="RP2")  # Jane, CT, another order
A3 = proc("2.25.3", "A3", rp="RP3", modality="MR")  # Jane, MR
B1 = proc("2.25.10", "B1", JOHN)  # John, CT
KNOWN = (A1, A2, A3, B1)


@dataclass(frozen=True)
class Case:
    name: str
    subject: Subject
    state: StudyState
    rule: str
    reason: str = ""
    linked: tuple[str, ...] = ()
    known: tuple[ProcedureCandidate, ...] = KNOWN
    policy: ReconciliationPolicy = field(default_factory=ReconciliationPolicy)


CASES = [
    Case(
        "exact study UID from the worklist",
        subject("2.25.1"),
        StudyState.MATCHED,
        RULE_STUDY_UID,
        linked=("2.25.1",),
    ),
    Case(
        "accession when the modality made its own UID",
        subject(accession="A2"),
        StudyState.MATCHED,
        RULE_ACCESSION,
        linked=("2.25.2",),
    ),
    Case(
        "accession padded with a space",
        subject(accession="A2 "),
        StudyState.MATCHED,
        RULE_ACCESSION,
        linked=("2.25.2",),
    ),
    Case(
        "accession of another patient is a conflict",
        subject(accession="B1"),
        StudyState.CONFLICT,
        RULE_ACCESSION,
        Reason.PATIENT_ID_MISMATCH,
    ),
    Case(
        "wrong worklist entry: B's study UID under A's header",
        subject("2.25.10"),
        StudyState.CONFLICT,
        RULE_STUDY_UID,
        Reason.PATIENT_ID_MISMATCH,
    ),
    Case(
        "own UID but an accession of another patient is still a conflict",
        subject("2.25.1", accession="B1"),
        StudyState.CONFLICT,
        RULE_ACCESSION,
        Reason.PATIENT_ID_MISMATCH,
    ),
    Case(
        "empty accession with three request items links three orders",
        subject(
            items=(
                RequestItem(EntityId("A1"), "RP1", "SPS1", "2.25.1"),
                RequestItem(EntityId("A2"), "RP2", "SPS1", "2.25.2"),
                RequestItem(EntityId("A3"), "RP3", "SPS1", "2.25.3"),
            )
        ),
        StudyState.MATCHED,
        RULE_REQUEST_ATTRIBUTES,
        linked=("2.25.1", "2.25.2", "2.25.3"),
    ),
    Case(
        "request items by accession and RP ID only (no UIDs)",
        subject(items=(RequestItem(EntityId("A1"), "RP1"), RequestItem(EntityId("A2"), "RP2"))),
        StudyState.MATCHED,
        RULE_REQUEST_ATTRIBUTES,
        linked=("2.25.1", "2.25.2"),
    ),
    Case(
        "top-level UID of one order plus request items of two",
        subject("2.25.1", items=(RequestItem(EntityId("A1"), "RP1"), RequestItem(EntityId("A2"), "RP2"))),
        StudyState.MATCHED,
        RULE_STUDY_UID,
        linked=("2.25.1", "2.25.2"),
    ),
    Case(
        "patient + modality + date with exactly one open order",
        subject(modalities=("MR",)),
        StudyState.MATCHED,
        RULE_PATIENT_MODALITY_DATE,
        linked=("2.25.3",),
    ),
    Case(
        "patient + modality + date with two open orders",
        subject(modalities=("CT",)),
        StudyState.UNASSIGNED,
        RULE_PATIENT_MODALITY_DATE,
        Reason.SEVERAL_CANDIDATES,
    ),
    Case(
        "patient + modality, but scheduled a week earlier",
        subject(modalities=("MR",), on=DAY + dt.timedelta(7)),
        StudyState.UNASSIGNED,
        RULE_PATIENT_MODALITY_DATE,
        Reason.NO_CANDIDATE,
    ),
    Case(
        "patient + modality: completed steps are not open",
        subject(modalities=("MR",)),
        StudyState.UNASSIGNED,
        RULE_PATIENT_MODALITY_DATE,
        Reason.NO_ACCESSION,
        known=(replace(A3, steps=(ScheduledStep("SPS1", "MR", AT, status=StepStatus.COMPLETED),)),),
    ),
    Case(
        "an unknown accession is not overridden by the patient rule",
        subject(accession="ZZ9", modalities=("MR",)),
        StudyState.UNASSIGNED,
        RULE_PATIENT_MODALITY_DATE,
        Reason.UNKNOWN_ACCESSION,
    ),
    Case(
        "... unless the site allows it",
        subject(accession="ZZ9", modalities=("MR",)),
        StudyState.MATCHED,
        RULE_PATIENT_MODALITY_DATE,
        linked=("2.25.3",),
        policy=ReconciliationPolicy(patient_rule_despite_unknown_accession=True),
    ),
    Case(
        "unknown everything, with an accession",
        subject(pid="P404", accession="ZZ9"),
        StudyState.UNASSIGNED,
        RULE_PATIENT_MODALITY_DATE,
        Reason.UNKNOWN_ACCESSION,
    ),
    Case(
        "unknown everything, without an accession",
        subject(pid="P404"),
        StudyState.UNASSIGNED,
        RULE_PATIENT_MODALITY_DATE,
        Reason.NO_ACCESSION,
    ),
    Case(
        "no patient ID and no keys",
        subject(pid="", issuer=""),
        StudyState.UNASSIGNED,
        RULE_PATIENT_MODALITY_DATE,
        Reason.NO_PATIENT_ID,
    ),
    Case(
        "UID matches but the header has no patient ID",
        subject("2.25.1", pid="", issuer=""),
        StudyState.UNASSIGNED,
        RULE_STUDY_UID,
        Reason.NO_PATIENT_ID,
    ),
    Case(
        "typo'd name (transposition) under strict",
        subject("2.25.1", name="Doe^Jnae"),
        StudyState.CONFLICT,
        RULE_STUDY_UID,
        Reason.NAME_MISMATCH,
    ),
    Case(
        "typo'd name under tolerant",
        subject("2.25.1", name="Doe^Jnae"),
        StudyState.MATCHED,
        RULE_STUDY_UID,
        linked=("2.25.1",),
        policy=ReconciliationPolicy(identity=IdentityPolicy(IdentityMode.TOLERANT)),
    ),
    Case(
        "typo'd name under lenient",
        subject("2.25.1", name="Deo^Jnae"),
        StudyState.MATCHED,
        RULE_STUDY_UID,
        linked=("2.25.1",),
        policy=ReconciliationPolicy(identity=IdentityPolicy(IdentityMode.LENIENT)),
    ),
    Case(
        "two typos are too many even for tolerant",
        subject("2.25.1", name="Dough^Jane"),
        StudyState.CONFLICT,
        RULE_STUDY_UID,
        Reason.NAME_MISMATCH,
        policy=ReconciliationPolicy(identity=IdentityPolicy(IdentityMode.TOLERANT)),
    ),
    Case(
        "capitals and accents fold alike under strict",
        subject("2.25.1", name="DOÉ^JANE"),
        StudyState.MATCHED,
        RULE_STUDY_UID,
        linked=("2.25.1",),
    ),
    Case(
        "a middle name typed at the console is ignored",
        subject("2.25.1", name="Doe^Jane^M"),
        StudyState.MATCHED,
        RULE_STUDY_UID,
        linked=("2.25.1",),
    ),
    Case(
        "an empty name is not compared",
        subject("2.25.1", name=""),
        StudyState.MATCHED,
        RULE_STUDY_UID,
        linked=("2.25.1",),
    ),
    Case(
        "birth date differs under strict",
        subject("2.25.1", birth=dt.date(1980, 4, 3)),
        StudyState.CONFLICT,
        RULE_STUDY_UID,
        Reason.BIRTH_DATE_MISMATCH,
    ),
    Case(
        "unqualified patient ID is taken as the order's issuer",
        subject("2.25.1", issuer=""),
        StudyState.MATCHED,
        RULE_STUDY_UID,
        linked=("2.25.1",),
    ),
    Case(
        "... unless the site requires the issuer",
        subject("2.25.1", issuer=""),
        StudyState.CONFLICT,
        RULE_STUDY_UID,
        Reason.ISSUER_MISMATCH,
        policy=ReconciliationPolicy(identity=IdentityPolicy(accept_unqualified_patient_id=False)),
    ),
    Case(
        "another issuer is another patient",
        subject("2.25.1", issuer="OTHERHOSP"),
        StudyState.CONFLICT,
        RULE_STUDY_UID,
        Reason.ISSUER_MISMATCH,
    ),
    Case(
        "accession issuers that differ do not match",
        subject(accession="A1", accession_issuer="X", modalities=("US",)),
        StudyState.UNASSIGNED,
        RULE_PATIENT_MODALITY_DATE,
        Reason.UNKNOWN_ACCESSION,
        known=(proc("2.25.1", "A1", issuer="Y"),),
    ),
    Case(
        "one accession, CT and MR procedures: the modality picks",
        subject(accession="A7", modalities=("MR",)),
        StudyState.MATCHED,
        RULE_ACCESSION,
        linked=("2.25.72",),
        known=(proc("2.25.71", "A7", rp="RP1"), proc("2.25.72", "A7", rp="RP2", modality="MR")),
    ),
    Case(
        "one accession, two CT procedures, no UID: several candidates",
        subject(accession="A7"),
        StudyState.UNASSIGNED,
        RULE_ACCESSION,
        Reason.SEVERAL_CANDIDATES,
        known=(proc("2.25.71", "A7", rp="RP1"), proc("2.25.72", "A7", rp="RP2")),
    ),
    Case(
        "one accession, two CT procedures, UID names one: only that one",
        subject("2.25.72", accession="A7"),
        StudyState.MATCHED,
        RULE_STUDY_UID,
        linked=("2.25.72",),
        known=(proc("2.25.71", "A7", rp="RP1"), proc("2.25.72", "A7", rp="RP2")),
    ),
    Case(
        "an accession reused for another patient: this patient's order wins",
        subject(accession="R1"),
        StudyState.MATCHED,
        RULE_ACCESSION,
        linked=("2.25.81",),
        known=(proc("2.25.80", "R1", JOHN), proc("2.25.81", "R1")),
    ),
    Case(
        "an SR dose report does not narrow the modality",
        subject(accession="A7", modalities=("MR", "SR")),
        StudyState.MATCHED,
        RULE_ACCESSION,
        linked=("2.25.72",),
        known=(proc("2.25.71", "A7", rp="RP1"), proc("2.25.72", "A7", rp="RP2", modality="MR")),
    ),
    Case(
        "a completed order still takes late images by UID (append case)",
        subject("2.25.1"),
        StudyState.MATCHED,
        RULE_STUDY_UID,
        linked=("2.25.1",),
        known=(proc("2.25.1", "A1", status=StepStatus.COMPLETED),),
    ),
    Case(
        "without the patient rule, no guess",
        subject(modalities=("MR",)),
        StudyState.UNASSIGNED,
        RULE_NONE,
        Reason.NO_ACCESSION,
        policy=ReconciliationPolicy(rules=(RULE_STUDY_UID, RULE_ACCESSION)),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reconciliation_rules(case: Case) -> None:
    decision = reconcile(case.subject, case.known, case.policy)
    assert (decision.state, decision.rule, decision.reason) == (case.state, case.rule, case.reason)
    assert sorted(m.candidate.procedure_uid for m in decision.matches) == sorted(case.linked)
    if decision.state is not StudyState.MATCHED:
        assert decision.matches == ()
    json.dumps(decision.evidence())  # every decision is recordable as JSON


def test_every_rule_is_in_the_evidence_with_its_outcome() -> None:
    decision = reconcile(subject("2.25.99", accession="A2"), KNOWN, ReconciliationPolicy())
    rules = [(r["rule"], r["outcome"]) for r in decision.evidence()["rules"]]
    assert rules == [(RULE_STUDY_UID, "no_match"), (RULE_ACCESSION, "matched")]
    link = decision.evidence()["links"][0]
    assert link == {
        "procedure_uid": "2.25.2",
        "accession": "A2",
        "procedure_id": "RP2",
        "steps": ["SPS1"],
        "rule": RULE_ACCESSION,
    }


def test_conflict_names_the_procedure_claimed_and_why() -> None:
    decision = reconcile(subject("2.25.10"), KNOWN, ReconciliationPolicy())
    assert [c.procedure_uid for c in decision.conflicts] == ["2.25.10"]
    identity = decision.evidence()["rules"][0]["identity"]["2.25.10"]
    assert identity == {"patient_id": "differs"}


def test_evidence_carries_no_demographics() -> None:
    decision = reconcile(subject("2.25.1", name="Doe^Jnae"), KNOWN, ReconciliationPolicy())
    text = json.dumps(decision.evidence())
    assert "Doe" not in text and "Jnae" not in text and "1980" not in text


def test_request_item_step_id_picks_the_step() -> None:
    two_steps = replace(A1, steps=(ScheduledStep("SPS1", "PT", AT), ScheduledStep("SPS2", "CT", AT)))
    decision = reconcile(
        subject(items=(RequestItem(EntityId("A1"), "RP1", "SPS2"),), modalities=("PT", "CT")),
        (two_steps,),
        ReconciliationPolicy(),
    )
    assert decision.matches[0].step_ids == ("SPS2",)


def test_without_a_step_id_the_modality_picks_the_steps() -> None:
    two_steps = replace(A1, steps=(ScheduledStep("SPS1", "PT", AT), ScheduledStep("SPS2", "CT", AT)))
    decision = reconcile(subject("2.25.1", modalities=("CT",)), (two_steps,), ReconciliationPolicy())
    assert decision.matches[0].step_ids == ("SPS2",)


def test_an_mpps_with_scheduled_step_attributes_links_its_step() -> None:
    mpps = PerformedProcedureStep(
        "1.2.3.4.5",
        MppsStatus.IN_PROGRESS,
        PatientId("P1", HOSP),
        PersonName.of("Doe", "Jane"),
        dt.date(1980, 3, 4),
        modality="CT",
        start=AT,
        scheduled_steps=(RequestItem(EntityId("A1"), "RP1", "SPS1", "2.25.1"),),
    )
    decision = reconcile(Subject.of_mpps(mpps), KNOWN, ReconciliationPolicy())
    assert decision.state is StudyState.MATCHED
    assert [(m.candidate.procedure_uid, m.step_ids) for m in decision.matches] == [("2.25.1", ("SPS1",))]


def test_an_unscheduled_mpps_is_reconciled_like_an_unmatched_study() -> None:
    mpps = PerformedProcedureStep(
        "1.2.3.4.6",
        MppsStatus.IN_PROGRESS,
        PatientId("P1", HOSP),
        PersonName.of("Doe", "Jane"),
        modality="MR",
        start=AT,
    )
    decision = reconcile(Subject.of_mpps(mpps), KNOWN, ReconciliationPolicy())
    assert (decision.state, decision.rule) == (StudyState.MATCHED, RULE_PATIENT_MODALITY_DATE)


def test_manual_link_records_identity_but_does_not_enforce_it() -> None:
    decision = manual_decision(
        subject("9.9", pid="TEMP1", name="Unknown^Trauma"), (B1,), ReconciliationPolicy(), actor="alice"
    )
    assert (decision.state, decision.rule) == (StudyState.MATCHED, RULE_MANUAL)
    rule = decision.evidence()["rules"][0]
    assert rule["actor"] == "alice"
    assert rule["identity"]["2.25.10"]["patient_id"] == "differs"


def test_policy_refuses_unknown_rule_names() -> None:
    with pytest.raises(ValueError):
        ReconciliationPolicy(rules=("study_uid", "astrology"))
