"""StudyView -> JSON for the operator API: stable field names, event times in ISO 8601 UTC with ``Z``.

Two kinds of time appear and are kept apart on purpose:

* *event times* radsync recorded (received, decided) are UTC and end in ``Z``;
* *clinical dates and times* (birth date, study date, a step's scheduled start) are passed on as the RIS or
  the modality gave them -- a wall-clock value without an offset, never shifted (FIELD-NOTES §17).

Pure functions, no I/O; the CLI renders the same views with Rich instead.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from radsync.app.studies import StudyView
from radsync.domain.candidates import ScoredCandidate
from radsync.domain.ids import EntityId, PatientId
from radsync.domain.names import PersonName
from radsync.domain.order import ScheduledStep
from radsync.domain.patient import Patient
from radsync.domain.study import DecisionRecord, RequestItem, StudyHeader, StudyLink


def utc_z(moment: dt.datetime) -> str:
    """``2024-06-12T09:00:00Z``: naive values are UTC already (clock.utc_now); aware ones are converted."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds") + "Z"


def study_json(view: StudyView, *, with_history: bool = False) -> dict[str, Any]:
    """One study as the queue shows it; ``history`` is added for the single-study answers."""
    summary, study = view.summary, view.study
    body: dict[str, Any] = {
        "study_instance_uid": study.study_instance_uid,
        "state": study.state.value,
        "reason": study.reason or None,
        "as_received": header_json(study.header),
        "counts": {
            "series": summary.series_count,
            "instances": summary.instance_count,
            "quarantined_instances": summary.quarantined_instances,
        },
        "first_received_at": utc_z(summary.received_at),
        "last_received_at": utc_z(summary.last_received_at),
        "links": [link_json(link) for link in study.links],
        "candidates": [candidate_json(rank, c) for rank, c in enumerate(view.candidates, start=1)],
    }
    if with_history:
        # the patient as radsync holds it now (linked studies): a correction or merge shows here at once
        body["current_patient"] = patient_json(view.patient) if view.patient is not None else None
        body["history"] = [decision_json(record) for record in view.history]
    return body


def header_json(header: StudyHeader) -> dict[str, Any]:
    """Patient and study attributes exactly as the first instance (and later series) carried them."""
    return {
        "patient": {
            **patient_id_json(header.patient_id),
            "name": name_text(header.patient_name),
            "birth_date": _date(header.birth_date),
            "sex": header.sex.value or None,
        },
        "study": {
            **accession_json(header.accession),
            "study_date": _date(header.study_date),
            "study_time": header.study_time.isoformat() if header.study_time else None,
            "description": header.description,
            "modalities": list(header.modalities),
            "request_attributes": [request_item_json(item) for item in header.request_items],
            "referenced_mpps": list(header.referenced_mpps),
        },
    }


def candidate_json(rank: int, scored: ScoredCandidate) -> dict[str, Any]:
    """A suggested order: its keys, its patient as radsync holds it now, and the explained score."""
    c = scored.candidate
    return {
        "rank": rank,
        "score": scored.score,
        **accession_json(c.accession),
        "requested_procedure_id": c.procedure_id,
        "procedure_study_instance_uid": c.procedure_uid,
        "description": c.description,
        "patient": patient_json(c.patient),
        "steps": [step_json(s) for s in c.steps],
        "components": [
            {
                "name": comp.name,
                "score": comp.score,
                "weight": comp.weight,
                "weighted": round(comp.weighted, 4),
                "detail": comp.detail,
            }
            for comp in scored.components
        ],
    }


def link_json(link: StudyLink) -> dict[str, Any]:
    return {
        **accession_json(link.accession),
        "requested_procedure_id": link.procedure_id,
        "procedure_study_instance_uid": link.procedure_uid,
        "scheduled_step_ids": list(link.step_ids),
        "source": link.source.value,
        "rule": link.rule,
    }


def decision_json(record: DecisionRecord) -> dict[str, Any]:
    """Who decided what, when and why; ``evidence`` is what the rules looked at (ARCHITECTURE invariant 6)."""
    why = record.evidence.get("why")
    return {
        "at": utc_z(record.at),
        "actor": record.actor,
        "rule": record.rule,
        "outcome": record.outcome,
        "reason": record.reason or None,
        "why": why if isinstance(why, str) and why else None,
        "evidence": record.evidence,
    }


def patient_json(patient: Patient) -> dict[str, Any]:
    return {
        **patient_id_json(patient.id),
        "name": name_text(patient.name),
        "birth_date": _date(patient.birth_date),
        "sex": patient.sex.value or None,
    }


def step_json(step: ScheduledStep) -> dict[str, Any]:
    return {
        "scheduled_step_id": step.step_id,
        "modality": step.modality,
        "scheduled_start": step.start.isoformat(timespec="minutes"),
        "status": step.status.value,
    }


def request_item_json(item: RequestItem) -> dict[str, Any]:
    return {
        **accession_json(item.accession),
        "requested_procedure_id": item.requested_procedure_id,
        "scheduled_step_id": item.scheduled_step_id,
        "study_instance_uid": item.study_instance_uid,
    }


def patient_id_json(pid: PatientId) -> dict[str, Any]:
    return {"patient_id": pid.value, "issuer_of_patient_id": pid.issuer.namespace or None}


def accession_json(accession: EntityId) -> dict[str, Any]:
    return {"accession_number": accession.value, "accession_issuer": accession.issuer.namespace or None}


def name_text(name: PersonName) -> str:
    """DICOM PN form (``Doe^Jane``, groups joined with ``=``), the same text operators see on a viewer."""
    return name.canonical()


def _date(value: dt.date | None) -> str | None:
    return value.isoformat() if value else None
