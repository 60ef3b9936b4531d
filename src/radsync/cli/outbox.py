"""`radsync outbox`: what waits, what failed, what is dead, and resend (works while the server runs).

A resend from here is picked up by the running server's delivery worker within its poll interval (1 s).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from radsync.adapters.outbox.operations import NotResendable, OutboxOperations, UnknownEntry
from radsync.cli.options import ConfigOpt, DatabaseUrlOpt, DataDirOpt, database
from radsync.clock import utc_now

app = typer.Typer(help="Outbound messages (ORU^R01, ORM^O01) and their delivery.", no_args_is_help=True)
console = Console()

_STYLE = {"sent": "green", "pending": "cyan", "sending": "cyan", "failed": "yellow", "dead": "red"}
STATES = ("pending", "sending", "sent", "failed", "dead")


@app.command("list")
def list_command(
    state: Annotated[str | None, typer.Option(help="pending, sending, sent, failed or dead")] = None,
    destination: Annotated[str | None, typer.Option(help="Only this destination")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Newest entries first."""
    if state is not None and state not in STATES:
        console.print(f"[red]unknown state {state!r}; one of {', '.join(STATES)}[/]")
        raise typer.Exit(2)
    with database(config, data_dir, database_url) as engines:
        entries = OutboxOperations(engines, utc_now).entries(state, destination=destination, limit=limit)
    table = Table("id", "queued (UTC)", "destination", "type", "control ID", "accession", "state", "attempts",
                  "last error")
    for e in entries:
        style = _STYLE.get(e.state.value, "")
        table.add_row(str(e.id), e.created_at.isoformat()[:19], e.destination, e.message_type, e.control_id,
                      e.accession, f"[{style}]{e.state.value}[/]", str(e.attempts), e.last_error[:60])
    console.print(table)


@app.command("resend")
def resend_command(
    entry_id: int,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Queue a dead, failed or sent entry again, with the same control ID."""
    with database(config, data_dir, database_url) as engines:
        try:
            entry = OutboxOperations(engines, utc_now).resend(entry_id)
        except (UnknownEntry, NotResendable) as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
    console.print(f"outbox entry {entry.id} ({entry.message_type} {entry.control_id} to {entry.destination}) "
                  f"is [cyan]{entry.state.value}[/] again")
