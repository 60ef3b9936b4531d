"""`radsync studies` on a data folder populated through the real use cases, through Typer's runner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radsync.cli.main import app
from tests.adapters.http.scenario import BEST, CONFLICT_UID, UNASSIGNED_UID, container_on, populate
from tests.app.imaging import Hub

runner = CliRunner()
WIDE = {"COLUMNS": "250"}  # no wrapping: assertions read whole cells


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def hub(data_dir: Path) -> Iterator[Hub]:
    container = container_on(data_dir)
    try:
        yield populate(container)
    finally:
        container.engines.dispose()


def studies(data_dir: Path, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["studies", *args, "--data-dir", str(data_dir)], env=WIDE)


def test_list_shows_the_unassigned_study_with_its_best_candidate(data_dir: Path, hub: Hub) -> None:
    result = studies(data_dir, "list", "--state", "unassigned")
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.output.splitlines() if UNASSIGNED_UID in line]
    for cell in ("Doe^Jnae", "ACC1243", "unknown_accession", f"{BEST} Doe^Jane", "0.84"):
        assert cell in row
    assert CONFLICT_UID not in result.output


def test_list_conflict_shows_the_quarantined_study(data_dir: Path, hub: Hub) -> None:
    result = studies(data_dir, "list", "--state", "conflict")
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.output.splitlines() if CONFLICT_UID in line]
    assert "patient_id_mismatch" in row


def test_show_lists_candidates_with_every_score_component_and_the_history(data_dir: Path, hub: Hub) -> None:
    result = studies(data_dir, "show", UNASSIGNED_UID)
    assert result.exit_code == 0, result.output
    assert "unassigned (unknown_accession)" in result.output
    for component in (
        "accession 0.86 x 0.25: 1 edit(s) apart",
        "name 0.86 x 0.20: similar",
        "birth_date 1.00 x 0.10: equal",
        "modality 1.00 x 0.10: a step has the study's modality",
        "date 1.00 x 0.10: 0 day(s) from the scheduled date",
    ):
        assert component in result.output
    (auto,) = [line for line in result.output.splitlines() if "radsync" in line and "unassigned" in line]
    assert "unknown_accession" in auto


def test_reconcile_then_unlink_are_recorded_with_user_and_reason(data_dir: Path, hub: Hub) -> None:
    linked = studies(
        data_dir, "reconcile", UNASSIGNED_UID, BEST, "--reason", "typo in accession", "--user", "alice"
    )
    assert linked.exit_code == 0, linked.output
    assert "study is now matched" in linked.output
    assert hub.statuses(BEST) == ["COMPLETED"]
    assert studies(data_dir, "list", "--json").stdout.strip() == "[]"  # the queue is empty now

    unlinked = studies(
        data_dir, "unlink", UNASSIGNED_UID, "--reason", "wrong order after all", "--user", "bob"
    )
    assert unlinked.exit_code == 0, unlinked.output
    assert "study is now unassigned" in unlinked.output

    shown = json.loads(studies(data_dir, "show", UNASSIGNED_UID, "--json").stdout)
    assert (shown["state"], shown["reason"], shown["links"]) == ("unassigned", "unlinked", [])
    assert [(h["actor"], h["outcome"], h["why"]) for h in shown["history"][-2:]] == [
        ("alice", "matched", "typo in accession"),
        ("bob", "unassigned", "wrong order after all"),
    ]


def test_unknown_study_exits_1_with_a_clear_message(data_dir: Path, hub: Hub) -> None:
    result = studies(data_dir, "show", "9.9.9")
    assert result.exit_code == 1
    assert "refused: no such study" in result.output


def test_unknown_accession_is_refused_and_changes_nothing(data_dir: Path, hub: Hub) -> None:
    result = studies(data_dir, "reconcile", UNASSIGNED_UID, "NOPE", "--reason", "x")
    assert result.exit_code == 1
    assert "no order has that accession number" in result.output
    assert hub.statuses(BEST) == ["SCHEDULED"]


def test_a_reason_is_required_for_manual_decisions(data_dir: Path, hub: Hub) -> None:
    for args in (
        ("reconcile", UNASSIGNED_UID, BEST),
        ("unlink", UNASSIGNED_UID),
        ("reconcile", UNASSIGNED_UID, BEST, "--reason", " "),
    ):
        result = studies(data_dir, *args)
        assert result.exit_code == 1
        assert "a reason is required" in result.output
    assert hub.statuses(BEST) == ["SCHEDULED"]


def test_a_manual_link_on_the_command_line_queues_the_order_status_for_the_ris(data_dir: Path, hub: Hub,
                                                                              tmp_path: Path) -> None:
    """The RIS must learn of a link made on the CLI as it does of one made over HTTP (issue 5 item 3, issue 4)."""
    from sqlalchemy import create_engine, select

    from radsync.adapters.persistence.tables import outbox

    config = tmp_path / "radsync.toml"
    config.write_text('[[hl7_destinations]]\nname = "ris"\nhost = "127.0.0.1"\nport = 2576\nevents = ["status"]\n')
    result = runner.invoke(app, ["studies", "reconcile", UNASSIGNED_UID, BEST, "--reason", "typo", "--user", "alice",
                                 "--config", str(config), "--data-dir", str(data_dir)], env=WIDE)
    assert result.exit_code == 0, result.output
    engine = create_engine(f"sqlite:///{data_dir / 'radsync.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(outbox.c.destination, outbox.c.message_type, outbox.c.accession,
                                       outbox.c.state)).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [("ris", "ORM^O01", BEST, "pending")]
