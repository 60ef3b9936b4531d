"""`radsync studies link / unlink-order / split` on a data folder populated through the real use cases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radsync.cli.main import app
from tests.adapters.http.scenario import container_on
from tests.app.imaging import JOHN, Hub, instance

runner = CliRunner()
STUDY = "1.2.3.600"
MR_SERIES = f"{STUDY}.2"


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    container = container_on(data)
    try:
        hub = Hub(container.engines)
        hub.place("A1", study_uid=STUDY)
        hub.place("A2", modality="MR")
        hub.place("B1", JOHN)
        hub.store(instance(STUDY, series=f"{STUDY}.1"))
        hub.store(instance(STUDY, series=MR_SERIES, modality="MR"))
        yield data
    finally:
        container.engines.dispose()


def studies(data_dir: Path, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["studies", *args, "--data-dir", str(data_dir)], env={"COLUMNS": "250"})


def links(output: str) -> list[str]:
    return sorted(link["accession_number"] for link in json.loads(output)["links"])


def test_link_then_unlink_order(data_dir: Path) -> None:
    linked = studies(data_dir, "link", STUDY, "A2", "--reason", "one scan", "--user", "carol", "--json")
    assert linked.exit_code == 0, linked.output
    assert links(linked.output) == ["A1", "A2"]
    assert json.loads(linked.output)["history"][-1]["actor"] == "carol"
    unlinked = studies(data_dir, "unlink-order", STUDY, "A2", "--reason", "not performed", "--json")
    assert unlinked.exit_code == 0, unlinked.output
    assert links(unlinked.output) == ["A1"]


def test_link_refusals_exit_1_with_the_reason(data_dir: Path) -> None:
    refused = studies(data_dir, "link", STUDY, "B1", "--reason", "typo")
    assert refused.exit_code == 1
    assert "another patient" in refused.output
    no_reason = studies(data_dir, "link", STUDY, "A2")
    assert no_reason.exit_code == 1 and "reason is required" in no_reason.output


def test_split_prints_the_new_study(data_dir: Path) -> None:
    result = studies(data_dir, "split", STUDY, "A2", "--series", MR_SERIES, "--new-study-uid", "1.2.3.699",
                     "--reason", "MR is the other exam")
    assert result.exit_code == 0, result.output
    assert "split off as 1.2.3.699" in result.output
    shown = studies(data_dir, "show", "1.2.3.699", "--json")
    assert links(shown.output) == ["A2"]
