"""`radsync db`: schema migrations (Alembic) on the configured database."""

from __future__ import annotations

import typer
from rich.console import Console

from radsync.adapters.persistence.engine import create_engines
from radsync.adapters.persistence.migrate import current_revision, head_revision, upgrade
from radsync.cli.options import ConfigOpt, DatabaseUrlOpt, DataDirOpt, settings_from

app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
console = Console()


@app.command("upgrade")
def upgrade_command(config: ConfigOpt = None, data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None) -> None:
    """Create or migrate the schema to the latest revision (serve does this too at start)."""
    settings = settings_from(config, data_dir=data_dir, database_url=database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engines = create_engines(settings.effective_database_url)
    try:
        upgrade(engines.write)
        console.print(f"schema at revision [bold]{current_revision(engines.write)}[/]")
    finally:
        engines.dispose()


@app.command("current")
def current_command(config: ConfigOpt = None, data_dir: DataDirOpt = None, database_url: DatabaseUrlOpt = None) -> None:
    """Show the schema revision of the database and the latest one radsync knows."""
    settings = settings_from(config, data_dir=data_dir, database_url=database_url)
    engines = create_engines(settings.effective_database_url)
    try:
        console.print(f"database: {current_revision(engines.write) or '(empty)'}  latest: {head_revision()}")
    finally:
        engines.dispose()
