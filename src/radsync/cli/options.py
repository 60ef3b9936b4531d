"""Command-line options shared by the commands that need settings; flags override RADSYNC_* and the TOML."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from radsync.adapters.persistence.engine import Engines, create_engines
from radsync.config import Settings, load_settings

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", envvar="RADSYNC_CONFIG", help="TOML settings file.", exists=True, dir_okay=False),
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Data folder [default: ./radsync-data]")]
DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option("--database-url", help="SQLAlchemy URL [default: SQLite in the data folder]; "
                 "postgresql+psycopg://user@host/db works the same."),
]


def settings_from(config: Path | None, **overrides: Any) -> Settings:
    """Load settings or exit with a readable message (never a traceback) when they are invalid."""
    try:
        return load_settings(config, overrides)
    except ValidationError as exc:
        console = Console(stderr=True)
        console.print("[bold red]Invalid settings:[/]")
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            console.print(f"  {where}: {error['msg']}")
        raise typer.Exit(2) from None
    except (OSError, ValueError) as exc:
        Console(stderr=True).print(f"[bold red]Cannot read settings:[/] {exc}")
        raise typer.Exit(2) from None


@contextmanager
def database(config: Path | None, data_dir: Path | None, database_url: str | None) -> Iterator[Engines]:
    """The configured database for one operator command (works while the server runs), closed afterwards."""
    settings = settings_from(config, data_dir=data_dir, database_url=database_url)
    engines = create_engines(settings.effective_database_url)
    try:
        yield engines
    finally:
        engines.dispose()
