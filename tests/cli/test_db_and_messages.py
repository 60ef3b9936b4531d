"""`radsync db` and `radsync messages` on a fresh data folder, through Typer's runner."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from radsync.adapters.persistence.migrate import head_revision
from radsync.cli.main import app

runner = CliRunner()


def test_db_upgrade_creates_the_schema_and_current_reports_it(tmp_path: Path) -> None:
    result = runner.invoke(app, ["db", "upgrade", "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "radsync.db").exists()
    result = runner.invoke(app, ["db", "current", "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 0
    assert f"database: {head_revision()}" in result.output


def test_messages_list_on_an_empty_log_shows_the_header(tmp_path: Path) -> None:
    runner.invoke(app, ["db", "upgrade", "--data-dir", str(tmp_path)])
    result = runner.invoke(app, ["messages", "list", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "control ID" in result.output


def test_missing_message_is_reported(tmp_path: Path) -> None:
    runner.invoke(app, ["db", "upgrade", "--data-dir", str(tmp_path)])
    result = runner.invoke(app, ["messages", "show", "42", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no message 42" in result.output
