"""Reconciliation: which requested procedures a study (or an MPPS) fulfils, decided by an ordered rule list.

The rules, in their default order (FIELD-NOTES §1, MAPPING.md §4.2 and §7, IHE SWF / PGP):

1. ``study_uid``            -- the Study Instance UID is a requested procedure's UID (from the worklist);
2. ``accession``            -- the Accession Number (+ issuer when both sides have one) is an order's;
3. ``request_attributes``   -- each item of the Request Attributes Sequence (MPPS: Scheduled Step Attributes)
                               names a procedure by its Study UID, or by accession + Requested Procedure ID;
4. ``patient_modality_date`` -- the patient's open orders with a step of the study's modality within the
                               date window: only when exactly one fits, and only when nothing in the header
                               names an order (an unknown accession is not overridden by guesswork).

Rules 1-3 are identifier rules and add up: a study fulfils every procedure its identifiers name (the group
case: an empty accession and three request items link three orders). Before anything is linked, every
procedure found passes the identity check (``identity.check_identity``); one that belongs to another patient
makes the whole study a CONFLICT -- quarantined, never merged. The decision records the deciding rule and, for
every rule, what it looked at and found (ARCHITECTURE invariant 6). Pure: no I/O; the caller passes the
candidate procedures.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from radsync.domain.identity import IdentityCheck, IdentityPolicy, Reason, check_identity
from radsync.domain.ids import EntityId, PatientId
from radsync.domain.mpps import PerformedProcedureStep
from radsync.domain.names import PersonName
from radsync.domain.order import ImagingOrder, ScheduledStep
from radsync.domain.patient import Patient
from radsync.domain.study import NON_ACQUISITION_MODALITIES, RequestItem, StudyHeader, StudyState

RULE_STUDY_UID = "study_uid"
RULE_ACCESSION = "accession"
RULE_REQUEST_ATTRIBUTES = "request_attributes"
RULE_PATIENT_MODALITY_DATE = "patient_modality_date"
RULE_MANUAL = "manual"
RULE_NONE = "none"
DEFAULT_RULES = (RULE_STUDY_UID, RULE_ACCESSION, RULE_REQUEST_ATTRIBUTES, RULE_PATIENT_MODALITY_DATE)


@dataclass(frozen=True, slots=True)
class ReconciliationPolicy:
    """Site policy for matching; every knob is documented in docs/reconciliation.md."""

    identity: IdentityPolicy = IdentityPolicy()
    rules: tuple[str, ...] = DEFAULT_RULES
    date_window_days: int = 1
    # Let rule 4 run even when the header carries an accession nobody knows (off: such studies wait).
    patient_rule_despite_unknown_accession: bool = False
    # Images complete a step an MPPS has started (off: the MPPS COMPLETED / DISCONTINUED decides).
    images_complete_started_steps: bool = False
    candidate_limit: int = 5
    candidate_window_days: int = 7

    def __post_init__(self) -> None:
        unknown = set(self.rules) - set(DEFAULT_RULES)
        if unknown:
            raise ValueError(f"unknown reconciliation rule(s): {sorted(unknown)}")


@dataclass(frozen=True, slots=True)
class Subject:
    """What reconciliation looks at: the identifiers and demographics a study or an MPPS arrived with."""

    study_instance_uid: str
    patient_id: PatientId
    patient_name: PersonName
    birth_date: dt.date | None
    accession: EntityId
    request_items: tuple[RequestItem, ...]
    modalities: frozenset[str]
    performed_on: dt.date | None

    @classmethod
    def of_study(cls, study_instance_uid: str, header: StudyHeader) -> Subject:
        return cls(
            study_instance_uid,
            header.patient_id,
            header.patient_name,
            header.birth_date,
            header.accession,
            tuple(i for i in header.request_items if not i.is_empty()),
            header.acquisition_modalities(),
            header.study_date,
        )

    @classmethod
    def of_mpps(cls, mpps: PerformedProcedureStep) -> Subject:
        modality = mpps.modality.upper()
        return cls(
            "",
            mpps.patient_id,
            mpps.patient_name,
            mpps.birth_date,
            EntityId(""),
            tuple(i for i in mpps.scheduled_steps if not i.is_empty()),
            frozenset({modality}) - NON_ACQUISITION_MODALITIES if modality else frozenset(),
            mpps.start.date() if mpps.start else None,
        )

    def names_an_order(self) -> bool:
        return bool(self.accession.value) or any(i.names_an_order() for i in self.request_items)

    def accessions(self) -> tuple[str, ...]:
        values = [self.accession.value] + [i.accession.value for i in self.request_items]
        return tuple(dict.fromkeys(v for v in values if v))

    def study_uids(self) -> tuple[str, ...]:
        values = [self.study_instance_uid] + [i.study_instance_uid for i in self.request_items]
        return tuple(dict.fromkeys(v for v in values if v))


@dataclass(frozen=True, slots=True)
class ProcedureCandidate:
    """A requested procedure as reconciliation sees it: its keys, its order's keys, its patient, its steps."""

    procedure_uid: str  # the requested procedure's Study Instance UID: unique, the link key
    procedure_id: str
    accession: EntityId
    patient: Patient
    steps: tuple[ScheduledStep, ...]
    filler_number: EntityId = EntityId("")
    placer_number: EntityId = EntityId("")
    description: str = ""

    @property
    def is_open(self) -> bool:
        return any(not s.status.is_final for s in self.steps)

    def order_identity(self) -> tuple[str, str, str]:
        return (self.accession.value, self.filler_number.value, self.placer_number.value)


def candidates_from_order(order: ImagingOrder, patient: Patient) -> tuple[ProcedureCandidate, ...]:
    return tuple(
        ProcedureCandidate(
            p.study_instance_uid,
            p.procedure_id,
            order.accession,
            patient,
            p.steps,
            order.filler_number,
            order.placer_number,
            p.description,
        )
        for p in order.procedures
    )


@dataclass(frozen=True, slots=True)
class ProcedureMatch:
    """A link to make: the subject fulfils ``step_ids`` of this procedure, found by ``rule``."""

    candidate: ProcedureCandidate
    step_ids: tuple[str, ...]
    rule: str


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    rule: str
    outcome: str  # matched | no_match | ambiguous | conflict | unknown_identity | not_applicable | not_run
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    state: StudyState
    rule: str
    reason: str = ""
    matches: tuple[ProcedureMatch, ...] = ()
    conflicts: tuple[ProcedureCandidate, ...] = ()
    trace: tuple[RuleOutcome, ...] = ()

    def evidence(self) -> dict[str, Any]:
        """JSON-ready: every rule's outcome, what was linked or refused (identifiers, no demographics)."""
        return {
            "rules": [{"rule": t.rule, "outcome": t.outcome, **t.detail} for t in self.trace],
            "links": [
                _describe(m.candidate) | {"steps": list(m.step_ids), "rule": m.rule} for m in self.matches
            ],
            "conflicts": [_describe(c) for c in self.conflicts],
        }


def reconcile(
    subject: Subject,
    candidates: tuple[ProcedureCandidate, ...] | list[ProcedureCandidate],
    policy: ReconciliationPolicy,
) -> Decision:
    """Run the rules over ``candidates`` (every procedure the subject's keys or patient could refer to)."""
    trace: list[RuleOutcome] = []
    matched: dict[str, ProcedureMatch] = {}
    conflicts: list[tuple[str, ProcedureCandidate, IdentityCheck]] = []
    unknown_identity: list[str] = []
    ambiguous: list[list[ProcedureCandidate]] = []
    for ref in _references(subject, policy.rules):
        outcome = _resolve(ref, candidates, subject, policy)
        trace.append(outcome.trace)
        if outcome.kind == "matched":
            for candidate in outcome.hits:
                steps = _steps_for(candidate, ref.step_id, subject.modalities)
                known = matched.get(candidate.procedure_uid)
                if known is None:
                    matched[candidate.procedure_uid] = ProcedureMatch(candidate, steps, ref.rule)
                else:
                    merged = tuple(dict.fromkeys(known.step_ids + steps))
                    matched[candidate.procedure_uid] = ProcedureMatch(candidate, merged, known.rule)
        elif outcome.kind == "conflict":
            conflicts.extend((ref.rule, c, outcome.checks[c.procedure_uid]) for c in outcome.hits)
        elif outcome.kind == "unknown_identity":
            unknown_identity.append(ref.rule)
        elif outcome.kind == "ambiguous":
            ambiguous.append(outcome.hits)

    if conflicts:
        rule, _, check = conflicts[0]
        unique = tuple({c.procedure_uid: c for _, c, _ in conflicts}.values())
        return Decision(StudyState.CONFLICT, rule, check.reason, conflicts=unique, trace=tuple(trace))
    if unknown_identity:
        return Decision(StudyState.UNASSIGNED, unknown_identity[0], Reason.NO_PATIENT_ID, trace=tuple(trace))
    if matched:
        orders = {m.candidate.order_identity() for m in matched.values()}
        open_ends = [hits for hits in ambiguous if not any(h.order_identity() in orders for h in hits)]
        if open_ends:
            left = [_describe(h) for h in open_ends[0]]
            trace.append(RuleOutcome("coverage", "ambiguous_left", {"procedures": left}))
        first_rule = next(t.rule for t in trace if t.outcome == "matched")
        return Decision(StudyState.MATCHED, first_rule, matches=tuple(matched.values()), trace=tuple(trace))
    if ambiguous:
        rule = next(t.rule for t in trace if t.outcome == "ambiguous")
        return Decision(StudyState.UNASSIGNED, rule, Reason.SEVERAL_CANDIDATES, trace=tuple(trace))
    return _by_patient(subject, candidates, policy, trace)


def manual_decision(
    subject: Subject, procedures: tuple[ProcedureCandidate, ...], policy: ReconciliationPolicy, actor: str
) -> Decision:
    """An operator links the subject to an order's procedures: the identity check is recorded, not enforced --
    linking applies the order's patient (issue 3 §5). Procedures are narrowed by UID, then modality."""
    chosen = [p for p in procedures if p.procedure_uid in subject.study_uids()]
    if not chosen and subject.modalities:
        chosen = [p for p in procedures if any(s.modality.upper() in subject.modalities for s in p.steps)]
    chosen = chosen or list(procedures)
    checks = {
        p.procedure_uid: check_identity(
            subject.patient_id, subject.patient_name, subject.birth_date, p.patient, policy.identity
        )
        for p in chosen
    }
    trace = (
        RuleOutcome(
            RULE_MANUAL,
            "matched",
            {
                "actor": actor,
                "procedures": [_describe(p) for p in chosen],
                "identity": {uid: c.fields for uid, c in checks.items()},
            },
        ),
    )
    matches = tuple(ProcedureMatch(p, _steps_for(p, "", subject.modalities), RULE_MANUAL) for p in chosen)
    return Decision(StudyState.MATCHED, RULE_MANUAL, matches=matches, trace=trace)


# -- rule machinery ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ref:
    rule: str
    study_uid: str = ""
    accession: EntityId = EntityId("")
    procedure_id: str = ""
    step_id: str = ""

    def keys(self) -> dict[str, str]:
        keys = {
            "study_uid": self.study_uid,
            "accession": self.accession.value,
            "accession_issuer": self.accession.issuer.namespace,
            "procedure_id": self.procedure_id,
            "step_id": self.step_id,
        }
        return {k: v for k, v in keys.items() if v}


@dataclass(frozen=True, slots=True)
class _Resolution:
    kind: str
    hits: list[ProcedureCandidate]
    checks: dict[str, IdentityCheck]
    trace: RuleOutcome


def _references(subject: Subject, rules: tuple[str, ...]) -> list[_Ref]:
    refs: list[_Ref] = []
    for rule in rules:
        if rule == RULE_STUDY_UID and subject.study_instance_uid:
            refs.append(_Ref(rule, study_uid=subject.study_instance_uid))
        elif rule == RULE_ACCESSION and subject.accession.value:
            refs.append(_Ref(rule, accession=subject.accession))
        elif rule == RULE_REQUEST_ATTRIBUTES:
            for item in dict.fromkeys(subject.request_items):
                refs.append(
                    _Ref(
                        rule,
                        item.study_instance_uid,
                        item.accession,
                        item.requested_procedure_id,
                        item.scheduled_step_id,
                    )
                )
    return refs


def _same_accession(known: EntityId, received: EntityId) -> bool:
    if known.value != received.value.strip():
        return False
    a, b = known.issuer, received.issuer
    if a.namespace and b.namespace:
        return a.namespace == b.namespace
    if a.universal_id and b.universal_id:
        return a.universal_id == b.universal_id
    return True


def _resolve(
    ref: _Ref,
    candidates: tuple[ProcedureCandidate, ...] | list[ProcedureCandidate],
    subject: Subject,
    policy: ReconciliationPolicy,
) -> _Resolution:
    detail: dict[str, Any] = {"keys": ref.keys()}
    hits = [c for c in candidates if ref.study_uid and c.procedure_uid == ref.study_uid]
    if not hits and ref.accession.value:
        hits = [c for c in candidates if _same_accession(c.accession, ref.accession)]
        for key, keep in (
            ("procedure_id", lambda c: c.procedure_id == ref.procedure_id),
            ("step_id", lambda c: any(s.step_id == ref.step_id for s in c.steps)),
        ):
            if hits and getattr(ref, key):
                narrowed = [c for c in hits if keep(c)]
                if narrowed:
                    hits = narrowed
                else:
                    detail[f"{key}_unknown"] = True
    if not hits:
        return _Resolution("no_match", [], {}, RuleOutcome(ref.rule, "no_match", detail))
    checks = {
        c.procedure_uid: check_identity(
            subject.patient_id, subject.patient_name, subject.birth_date, c.patient, policy.identity
        )
        for c in hits
    }
    detail["identity"] = {c.procedure_uid: checks[c.procedure_uid].fields for c in hits}
    same = [c for c in hits if checks[c.procedure_uid].same is True]
    if not same:
        kind = "unknown_identity" if any(checks[c.procedure_uid].same is None for c in hits) else "conflict"
        detail["procedures"] = [_describe(c) for c in hits]
        return _Resolution(kind, hits, checks, RuleOutcome(ref.rule, kind, detail))
    if len(same) < len(hits):
        detail["also_used_by_another_patient"] = [_describe(c) for c in hits if c not in same]
    hits = same
    if len(hits) > 1 and subject.modalities:
        narrowed = [c for c in hits if any(s.modality.upper() in subject.modalities for s in c.steps)]
        hits = narrowed or hits
    detail["procedures"] = [_describe(c) for c in hits]
    kind = "matched" if len(hits) == 1 else "ambiguous"
    return _Resolution(kind, hits, checks, RuleOutcome(ref.rule, kind, detail))


def _steps_for(candidate: ProcedureCandidate, step_id: str, modalities: frozenset[str]) -> tuple[str, ...]:
    if step_id and any(s.step_id == step_id for s in candidate.steps):
        return (step_id,)
    fitting = tuple(s.step_id for s in candidate.steps if s.modality.upper() in modalities)
    return fitting or tuple(s.step_id for s in candidate.steps)


def _by_patient(
    subject: Subject,
    candidates: tuple[ProcedureCandidate, ...] | list[ProcedureCandidate],
    policy: ReconciliationPolicy,
    trace: list[RuleOutcome],
) -> Decision:
    """Rule 4: the patient's one open order with a step of this modality within the date window."""
    rule = RULE_PATIENT_MODALITY_DATE
    names_order = subject.names_an_order()
    fallback = Reason.UNKNOWN_ACCESSION if names_order else Reason.NO_ACCESSION
    if rule not in policy.rules:
        return Decision(StudyState.UNASSIGNED, RULE_NONE, fallback, trace=tuple(trace))
    if names_order and not policy.patient_rule_despite_unknown_accession:
        trace.append(RuleOutcome(rule, "not_applicable", {"why": "the header names an order nobody knows"}))
        return Decision(StudyState.UNASSIGNED, rule, Reason.UNKNOWN_ACCESSION, trace=tuple(trace))
    received = subject.patient_id.value.strip()
    if not received:
        trace.append(RuleOutcome(rule, "not_applicable", {"why": "no patient ID"}))
        return Decision(StudyState.UNASSIGNED, rule, Reason.NO_PATIENT_ID, trace=tuple(trace))
    own = [c for c in candidates if c.is_open and c.patient.id.value.strip() == received]
    window = dt.timedelta(days=policy.date_window_days)
    fitting = [(c, steps) for c in own if (steps := _fitting_steps(c, subject, window))]
    detail: dict[str, Any] = {
        "open_procedures": len(own),
        "modalities": sorted(subject.modalities),
        "date": subject.performed_on.isoformat() if subject.performed_on else "unknown (not filtered)",
        "window_days": policy.date_window_days,
        "fitting": [_describe(c) for c, _ in fitting],
    }
    if len(fitting) != 1:
        reason = Reason.SEVERAL_CANDIDATES if fitting else (Reason.NO_CANDIDATE if own else fallback)
        trace.append(RuleOutcome(rule, "ambiguous" if fitting else "no_match", detail))
        return Decision(StudyState.UNASSIGNED, rule, reason, trace=tuple(trace))
    candidate, steps = fitting[0]
    check = check_identity(
        subject.patient_id, subject.patient_name, subject.birth_date, candidate.patient, policy.identity
    )
    detail["identity"] = {candidate.procedure_uid: check.fields}
    if check.same is not True:
        trace.append(RuleOutcome(rule, "conflict", detail))
        return Decision(StudyState.CONFLICT, rule, check.reason, conflicts=(candidate,), trace=tuple(trace))
    trace.append(RuleOutcome(rule, "matched", detail))
    return Decision(
        StudyState.MATCHED, rule, matches=(ProcedureMatch(candidate, steps, rule),), trace=tuple(trace)
    )


def _fitting_steps(candidate: ProcedureCandidate, subject: Subject, window: dt.timedelta) -> tuple[str, ...]:
    fitting = []
    for step in candidate.steps:
        if step.status.is_final:
            continue
        if subject.modalities and step.modality.upper() not in subject.modalities:
            continue
        if subject.performed_on and abs(step.start.date() - subject.performed_on) > window:
            continue
        fitting.append(step.step_id)
    return tuple(fitting)


def _describe(c: ProcedureCandidate) -> dict[str, str]:
    return {"procedure_uid": c.procedure_uid, "accession": c.accession.value, "procedure_id": c.procedure_id}
