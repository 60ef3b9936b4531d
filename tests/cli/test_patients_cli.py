"""`radsync patients history`: a merge made through the use cases, read back on the command line (both backends)."""

from __future__ import annotations

import datetime as dt

from typer.testing import CliRunner

from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.unit_of_work import transaction
from radsync.app.commands import MergePatient
from radsync.app.patients import PatientService, apply_update
from radsync.cli.main import app
from radsync.domain.ids import Issuer, PatientId
from radsync.domain.names import PersonName
from radsync.domain.patient import PatientUpdate

runner = CliRunner()
HOSP = Issuer("HOSP")


def test_history_shows_the_survivor_its_alias_and_each_change(engines: Engines, database_url: str) -> None:
    clock = lambda: dt.datetime(2024, 6, 11, 12)  # noqa: E731
    with transaction(engines.write, clock) as uow:
        apply_update(uow, PatientUpdate(PatientId("TMP1", HOSP), {"name": PersonName.from_canonical("Trauma^X")}))
        apply_update(uow, PatientUpdate(PatientId("P1", HOSP), {"name": PersonName.from_canonical("Doe^Jane")}))
        PatientService().merge(uow, MergePatient(PatientId("TMP1", HOSP), PatientUpdate(PatientId("P1", HOSP))))

    result = runner.invoke(app, ["patients", "history", "TMP1", "--database-url", database_url])
    assert result.exit_code == 0, result.output
    assert "patient P1 (issuer HOSP): Doe^Jane" in result.output
    assert "TMP1 was merged into" in result.output and "aliases: TMP1 (merge)" in result.output
    assert result.output.count("patient.created") == 2 and "merge" in result.output

    missing = runner.invoke(app, ["patients", "history", "NOBODY", "--database-url", database_url])
    assert missing.exit_code == 1 and "no patient has that identifier" in missing.output
