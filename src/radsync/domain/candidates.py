"""Ranked candidate orders for a study in the Unassigned (or Conflict) queue, each score explained.

The score is a weighted sum of components, each in [0, 1] and listed with its weight and a short reason, so an
operator sees *why* an order is suggested (FIELD-NOTES §1: never filed by guesswork; suggestions only).
Component details name distances and verdicts, never the names or IDs themselves (they are on screen anyway
and must not end up in logs).
"""

from __future__ import annotations

from dataclasses import dataclass

from radsync.domain.reconciliation import ProcedureCandidate, Subject
from radsync.domain.similarity import damerau_levenshtein, name_similarity, similarity

WEIGHTS: dict[str, float] = {
    "study_uid": 0.10,
    "accession": 0.25,
    "patient_id": 0.15,
    "name": 0.20,
    "birth_date": 0.10,
    "modality": 0.10,
    "date": 0.10,
}


@dataclass(frozen=True, slots=True)
class ScoreComponent:
    name: str
    score: float  # 0..1 before weighting
    weight: float
    detail: str

    @property
    def weighted(self) -> float:
        return self.score * self.weight


@dataclass(frozen=True, slots=True)
class ScoredCandidate:
    candidate: ProcedureCandidate
    score: float
    components: tuple[ScoreComponent, ...]


def score(subject: Subject, candidate: ProcedureCandidate, window_days: int = 7) -> ScoredCandidate:
    components = (
        _study_uid(subject, candidate),
        _accession(subject, candidate),
        _patient_id(subject, candidate),
        _name(subject, candidate),
        _birth_date(subject, candidate),
        _modality(subject, candidate),
        _date(subject, candidate, window_days),
    )
    total = round(sum(c.weighted for c in components), 4)
    return ScoredCandidate(candidate, total, components)


def rank(
    subject: Subject,
    candidates: list[ProcedureCandidate] | tuple[ProcedureCandidate, ...],
    *,
    limit: int = 5,
    window_days: int = 7,
) -> tuple[ScoredCandidate, ...]:
    """The best ``limit`` candidates with a score above zero, best first (ties by procedure UID, stable)."""
    unique = {c.procedure_uid: c for c in candidates}
    scored = [score(subject, c, window_days) for c in unique.values()]
    scored = [s for s in scored if s.score > 0]
    scored.sort(key=lambda s: (-s.score, s.candidate.procedure_uid))
    return tuple(scored[:limit])


def _component(name: str, value: float, detail: str) -> ScoreComponent:
    return ScoreComponent(name, round(value, 4), WEIGHTS[name], detail)


def _study_uid(subject: Subject, c: ProcedureCandidate) -> ScoreComponent:
    if c.procedure_uid in subject.study_uids():
        return _component("study_uid", 1.0, "the study names this procedure's Study Instance UID")
    return _component("study_uid", 0.0, "not named")


def _accession(subject: Subject, c: ProcedureCandidate) -> ScoreComponent:
    received = subject.accessions()
    if not received:
        return _component("accession", 0.0, "no accession in the study")
    if not c.accession.value:
        return _component("accession", 0.0, "order has no accession")
    best = max(received, key=lambda a: similarity(a, c.accession.value))
    edits = damerau_levenshtein(best, c.accession.value)
    if edits == 0:
        return _component("accession", 1.0, "equal")
    return _component("accession", similarity(best, c.accession.value), f"{edits} edit(s) apart")


def _patient_id(subject: Subject, c: ProcedureCandidate) -> ScoreComponent:
    received, known = subject.patient_id.value.strip(), c.patient.id.value.strip()
    if not received:
        return _component("patient_id", 0.0, "no patient ID in the study")
    edits = damerau_levenshtein(received, known)
    if edits == 0:
        return _component("patient_id", 1.0, "equal")
    return _component("patient_id", similarity(received, known), f"{edits} edit(s) apart")


def _name(subject: Subject, c: ProcedureCandidate) -> ScoreComponent:
    if subject.patient_name.is_empty() or c.patient.name.is_empty():
        return _component("name", 0.0, "missing")
    value = name_similarity(subject.patient_name, c.patient.name)
    return _component(
        "name", value, "equal after folding" if value == 1.0 else "similar" if value else "differs"
    )


def _birth_date(subject: Subject, c: ProcedureCandidate) -> ScoreComponent:
    a, b = subject.birth_date, c.patient.birth_date
    if a is None or b is None:
        return _component("birth_date", 0.0, "missing")
    if a == b:
        return _component("birth_date", 1.0, "equal")
    swapped = a.year == b.year and a.month == b.day and a.day == b.month
    if swapped or damerau_levenshtein(a.strftime("%Y%m%d"), b.strftime("%Y%m%d")) == 1:
        return _component("birth_date", 0.5, "one digit off or day/month swapped")
    return _component("birth_date", 0.0, "differs")


def _modality(subject: Subject, c: ProcedureCandidate) -> ScoreComponent:
    if not subject.modalities:
        return _component("modality", 0.0, "study modality unknown")
    if any(s.modality.upper() in subject.modalities for s in c.steps):
        return _component("modality", 1.0, "a step has the study's modality")
    return _component("modality", 0.0, "no step of the study's modality")


def _date(subject: Subject, c: ProcedureCandidate, window_days: int) -> ScoreComponent:
    if subject.performed_on is None or not c.steps:
        return _component("date", 0.0, "date unknown")
    days = min(abs((s.start.date() - subject.performed_on).days) for s in c.steps)
    value = max(0.0, 1.0 - days / max(window_days, 1))
    return _component("date", value, f"{days} day(s) from the scheduled date")
