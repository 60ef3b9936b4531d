"""`radsync messages`: the message log on the command line (works while the server runs)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from radsync.adapters.persistence.queries import message_content, recent_messages
from radsync.cli.options import ConfigOpt, DatabaseUrlOpt, DataDirOpt, database

app = typer.Typer(help="Inbound and outbound messages, with their outcome.", no_args_is_help=True)
console = Console()

_STYLE = {"AA": "green", "AE": "yellow", "AR": "red"}


@app.command("list")
def list_command(
    outcome: Annotated[str | None, typer.Option(help="Only AA, AE or AR")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Newest messages first."""
    with database(config, data_dir, database_url) as engines:
        rows = recent_messages(engines.read, limit=limit, outcome=outcome)
    table = Table("id", "received (UTC)", "dir", "sender", "type", "control ID", "outcome", "error / flags")
    for r in rows:
        style = _STYLE.get(r["outcome"], "")
        note = r["error"] or ", ".join(r["flags"])
        table.add_row(str(r["id"]), r["received_at"][:19], r["direction"], r["sender"], r["message_type"],
                      r["control_id"], f"[{style}]{r['outcome']}[/]" if style else r["outcome"], note)
    console.print(table)


@app.command("show")
def show_command(
    message_id: int,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """One message as received and the answer radsync sent (segments on separate lines)."""
    with database(config, data_dir, database_url) as engines:
        found = message_content(engines.read, message_id)
    if found is None:
        console.print(f"[red]no message {message_id}[/]")
        raise typer.Exit(1)
    console.print(found["raw"].replace("\r", "\n"), markup=False, highlight=False)
    if found["ack"]:
        console.rule("answer")
        console.print(found["ack"].replace("\r", "\n"), markup=False, highlight=False)
