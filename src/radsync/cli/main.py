"""The `radsync` command: serve, db and (later) operator commands."""

from __future__ import annotations

import typer

from radsync.cli import db, messages, outbox, patients, serve, studies

app = typer.Typer(name="radsync", help="Brokerless RIS-PACS integration hub.", no_args_is_help=True,
                  add_completion=False)
serve.register(app)
app.add_typer(db.app, name="db")
app.add_typer(messages.app, name="messages")
app.add_typer(studies.app, name="studies")
app.add_typer(outbox.app, name="outbox")
app.add_typer(patients.app, name="patients")


def main() -> None:
    app()
