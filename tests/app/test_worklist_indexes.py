"""Worklist queries run on indexes, never a table scan: EXPLAIN on SQLite and PostgreSQL (issue 2).

The statement is the one ``SqlWorklistReader`` executes, with its bound parameters; a cursor hook prefixes it with
EXPLAIN. PostgreSQL prefers sequential scans on small tables, so ``enable_seqscan`` is off: a Seq Scan that still
shows up means no index can serve the query.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import event, text

from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.worklist import worklist_statement
from radsync.app.worklist import AnyOf, Exact, InstantRange, Wildcard, WorklistQuery

DAY = InstantRange(dt.datetime(2024, 1, 5), dt.datetime(2024, 1, 5, 23, 59, 59, 999999))

# query, index SQLite must use (PostgreSQL: any index, no Seq Scan on the worklist tables)
QUERIES: dict[str, tuple[WorklistQuery, str]] = {
    "accession": (WorklistQuery(accession=Exact("A1001"), limit=5000), "ix_orders_accession"),
    "accession list": (WorklistQuery(accession=AnyOf(("A1", "A2")), limit=5000), "ix_orders_accession"),
    "station + today": (WorklistQuery(station_ae_title=Exact("CT01"), start=DAY, limit=5000), "ix_step_stations_ae_title"),
    "station": (WorklistQuery(station_ae_title=Exact("CT01"), limit=5000), "ix_step_stations_ae_title"),
    "date": (WorklistQuery(start=DAY, limit=5000), "ix_scheduled_steps_status_start (status=? AND start_at>?"),
    "modality + date": (WorklistQuery(modality=Exact("CT"), start=DAY), "ix_scheduled_steps_status_start (status=? AND"),
    "patient ID": (WorklistQuery(patient_id=Exact("PID1"), limit=5000), "sqlite_autoindex_patients_1"),
    "study UIDs": (WorklistQuery(study_instance_uid=AnyOf(("1.2.3", "1.2.4"))), "sqlite_autoindex_requested_procedures_2"),
    "name prefix": (WorklistQuery(patient_name=Wildcard("Doe*"), limit=5000), "name_fold>? AND name_fold<?"),
    "name exact": (WorklistQuery(patient_name=Exact("Doe^Jane")), "(name_fold=?)"),
    "requested procedure ID": (WorklistQuery(procedure_id=Exact("RP1")), "ix_requested_procedures_procedure_id"),
    "SPS ID": (WorklistQuery(step_id=Exact("SPS1")), "ix_scheduled_steps_step_id"),
    "placer number": (WorklistQuery(placer_number=Exact("PL1")), "ix_orders_placer"),
    "filler number": (WorklistQuery(filler_number=Exact("FL1")), "ix_orders_filler"),
}

WORKLIST_TABLES = ("scheduled_steps", "patients", "orders", "requested_procedures", "step_stations")


def explain(engines: Engines, query: WorklistQuery) -> list[str]:
    dialect = engines.read.dialect.name
    statement, _exact = worklist_statement(query, dialect)
    prefix = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "

    def add_explain(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> tuple[str, Any]:
        return prefix + sql, params

    with engines.read.connect() as conn:
        if dialect == "postgresql":
            conn.execute(text("SET enable_seqscan = off"))
        event.listen(conn, "before_cursor_execute", add_explain, retval=True)
        try:
            rows = conn.execute(statement).all()
        finally:
            event.remove(conn, "before_cursor_execute", add_explain)
    return [str(row[-1]) if dialect == "sqlite" else str(row[0]) for row in rows]


@pytest.mark.parametrize("name", list(QUERIES))
def test_worklist_query_uses_an_index(name: str, engines: Engines) -> None:
    query, sqlite_index = QUERIES[name]
    plan = explain(engines, query)
    text_plan = "\n".join(plan)
    if engines.read.dialect.name == "sqlite":
        scans = [line for line in plan if line.startswith("SCAN ") and line.split()[1] in WORKLIST_TABLES]
        assert not scans, text_plan
        assert sqlite_index in text_plan, text_plan
    else:
        assert not any(f"Seq Scan on {table}" in text_plan for table in WORKLIST_TABLES), text_plan


def test_postgres_name_prefix_runs_on_the_pattern_index(engines: Engines) -> None:
    if engines.read.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    plan = "\n".join(explain(engines, QUERIES["name prefix"][0]))
    assert "ix_patients_name_fold" in plan, plan


def test_selective_key_is_not_overridden_by_the_status_index(engines: Engines) -> None:
    """SQLite has no statistics: without the likely() hint it walks every open step for an accession query."""
    if engines.read.dialect.name != "sqlite":
        pytest.skip("SQLite planner behaviour")
    plan = "\n".join(explain(engines, QUERIES["accession"][0]))
    assert "ix_scheduled_steps_status_start (status=?)" not in plan, plan


def test_name_prefix_with_a_leading_wildcard_is_still_correct_sql(engines: Engines) -> None:
    """A leading wildcard cannot use an index (not one of the indexed query shapes) but must still run."""
    assert explain(engines, WorklistQuery(patient_name=Wildcard("*oe")))
