"""Rich renderings of the Unassigned queue and of one study, for `radsync studies`.

Event times are shown in UTC (``2024-06-12 09:00:00``); clinical dates as received.
"""

from __future__ import annotations

import datetime as dt

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from radsync.app.studies import StudyView
from radsync.domain.candidates import ScoredCandidate
from radsync.domain.ids import EntityId, PatientId
from radsync.domain.names import PersonName
from radsync.domain.study import StudyHeader, StudyState

_STATE_STYLE = {StudyState.MATCHED: "green", StudyState.UNASSIGNED: "yellow", StudyState.CONFLICT: "red"}


def render_queue(views: list[StudyView], state: StudyState) -> RenderableType:
    """One row per study: UID, patient and accession as received, reason, best candidate with its score."""
    table = Table(
        "study UID",
        "received (UTC)",
        "patient (as received)",
        "accession (as received)",
        "images",
        "reason",
        "best candidate",
        "score",
        title=f"{state.value} studies ({len(views)})",
    )
    for view in views:
        summary, header = view.summary, view.study.header
        best = view.candidates[0] if view.candidates else None
        table.add_row(
            Text(view.study.study_instance_uid, overflow="fold"),
            _time(summary.received_at),
            Text(_patient(header.patient_id, header.patient_name)),
            Text(_accession(header.accession) or "(none)"),
            f"{summary.series_count}/{summary.instance_count}",
            Text(view.study.reason or "-", style=_STATE_STYLE[view.study.state]),
            Text(_candidate(best) if best else "(none)"),
            f"{best.score:.2f}" if best else "",
        )
    return table


def render_study(view: StudyView) -> RenderableType:
    """Details, links, candidates with every score component, and the history of decisions."""
    parts: list[RenderableType] = [_details(view)]
    if view.study.links:
        links = Table(
            "accession", "procedure", "procedure Study UID", "steps", "source", "rule", title="links"
        )
        for link in view.study.links:
            links.add_row(
                _accession(link.accession),
                link.procedure_id,
                Text(link.procedure_uid, overflow="fold"),
                ", ".join(link.step_ids),
                link.source.value,
                link.rule,
            )
        parts.append(links)
    if view.candidates:
        parts.append(_candidates(view.candidates))
    if view.history:
        history = Table("at (UTC)", "actor", "rule", "outcome", "reason", "why", title="history")
        for record in view.history:
            why = record.evidence.get("why")
            history.add_row(
                _time(record.at),
                Text(record.actor),
                record.rule,
                record.outcome,
                record.reason or "-",
                Text(why if isinstance(why, str) else ""),
            )
        parts.append(history)
    return Group(*parts)


def _details(view: StudyView) -> Table:
    study, summary = view.study, view.summary
    header: StudyHeader = study.header
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    state = Text(study.state.value, style=f"bold {_STATE_STYLE[study.state]}")
    if study.reason:
        state.append(f" ({study.reason})", style=_STATE_STYLE[study.state])
    rows: list[tuple[str, str | Text]] = [
        ("study UID", Text(study.study_instance_uid, overflow="fold")),
        ("state", state),
        ("patient (as received)", Text(_patient(header.patient_id, header.patient_name))),
        ("birth date, sex", f"{_date(header.birth_date)}, {header.sex.value or '-'}"),
        ("accession (as received)", Text(_accession(header.accession) or "(none)")),
        ("study date", _date(header.study_date)),
        ("modalities", ", ".join(header.modalities) or "-"),
        ("description", Text(header.description or "-")),
        ("request attributes", Text(_items(view) or "-")),
        (
            "series / instances",
            f"{summary.series_count} / {summary.instance_count}"
            + (f" ({summary.quarantined_instances} quarantined)" if summary.quarantined_instances else ""),
        ),
        ("received (UTC)", f"{_time(summary.received_at)} .. {_time(summary.last_received_at)}"),
    ]
    for label, value in rows:
        grid.add_row(label, value)
    return grid


def _candidates(candidates: tuple[ScoredCandidate, ...]) -> Table:
    table = Table(
        "#", "accession", "patient (order)", "birth date", "steps", "score", "components", title="candidates"
    )
    for rank, scored in enumerate(candidates, start=1):
        c = scored.candidate
        components = "\n".join(
            f"{comp.name} {comp.score:.2f} x {comp.weight:.2f}: {comp.detail}" for comp in scored.components
        )
        steps = "\n".join(f"{s.modality} {s.start:%Y-%m-%d %H:%M} {s.status.value}" for s in c.steps)
        table.add_row(
            str(rank),
            _accession(c.accession),
            Text(_patient(c.patient.id, c.patient.name)),
            _date(c.patient.birth_date),
            steps,
            f"{scored.score:.2f}",
            Text(components),
        )
    return table


def _items(view: StudyView) -> str:
    return "; ".join(
        "/".join(v for v in (_accession(i.accession), i.requested_procedure_id, i.scheduled_step_id) if v)
        for i in view.study.header.request_items
    )


def _candidate(best: ScoredCandidate) -> str:
    c = best.candidate
    return f"{_accession(c.accession)} {_patient(c.patient.id, c.patient.name)}"


def _patient(pid: PatientId, name: PersonName) -> str:
    shown = name.canonical() or "(no name)"
    return f"{shown} [{pid}]" if pid.value else shown


def _accession(accession: EntityId) -> str:
    if accession.issuer.namespace:
        return f"{accession.value}^{accession.issuer.namespace}"
    return accession.value


def _time(moment: dt.datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment.isoformat(sep=" ", timespec="seconds")


def _date(value: dt.date | None) -> str:
    return value.isoformat() if value else "-"
