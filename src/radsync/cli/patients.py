"""`radsync patients`: a patient with its aliases and history (docs/patients.md); read-only, works while serving."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from radsync.adapters.persistence.unit_of_work import SqlUnitOfWork
from radsync.app.patients import PatientService
from radsync.cli.options import ConfigOpt, DatabaseUrlOpt, DataDirOpt, database
from radsync.clock import utc_now
from radsync.domain.errors import DomainError

app = typer.Typer(help="Patients: aliases and the history of every change.", no_args_is_help=True)
console = Console()


@app.command("history")
def history_command(
    patient_id: str,
    issuer: Annotated[str | None, typer.Option(help="Issuer namespace, when several patients share the ID")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Every change of the patient, oldest first; a merged-away ID shows the surviving patient."""
    with database(config, data_dir, database_url) as engines, engines.read.connect() as connection:
        try:
            view = PatientService().view(SqlUnitOfWork(connection, utc_now()), patient_id, issuer, with_history=True)
        except DomainError as exc:
            console.print(f"[red]{exc.message}[/]")
            raise typer.Exit(1) from None
    p = view.patient
    console.print(f"patient {p.id.value} (issuer {p.id.issuer.namespace or '-'}): {p.name.canonical()}, "
                  f"born {p.birth_date or '-'}, sex {p.sex.value or '-'}")
    if view.resolved_from is not None:
        console.print(f"[yellow]{patient_id} was merged into (or changed to) this patient[/]")
    if view.aliases:
        console.print("aliases: " + ", ".join(f"{a['patient_id']} ({a['kind']})" for a in view.aliases))
    for e in view.history or []:
        by = e["by"]
        who = by.get("user") or f"{by.get('message_type', '')} {by.get('control_id', '')} from {by.get('sender', '')}"
        console.print(f"{e['at'][:19]}  [bold]{e['kind']}[/]  by {who}", highlight=False, soft_wrap=True)
        console.print(f"    old: {json.dumps(e['old'], ensure_ascii=False)}", highlight=False, soft_wrap=True,
                      markup=False)
        console.print(f"    new: {json.dumps(e['new'], ensure_ascii=False)}", highlight=False, soft_wrap=True,
                      markup=False)
