"""fast_sql on SQLite and PostgreSQL: the same stored values as Connection.execute, inside the caller's transaction."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import bindparam, exc, insert, select

from radsync.adapters.persistence import fast_sql
from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.tables import message_log, patients

NOW = dt.datetime(2024, 6, 11, 9, 30, 0, 123456)
_INSERT_PATIENT = insert(patients).returning(patients.c.pk)
_INSERT_MESSAGE = insert(message_log).returning(message_log.c.pk)
_BY_IDS = select(patients.c.patient_id, patients.c.details).where(
    patients.c.patient_id.in_(bindparam("ids", expanding=True))
).order_by(patients.c.patient_id)


def patient(patient_id: str) -> dict[str, Any]:
    return {
        "patient_id": patient_id, "issuer": "HOSP", "issuer_uid": "", "issuer_uid_type": "", "name": "Doe^Jane",
        "name_fold": "doe^jane", "birth_date": "19800101", "sex": "F", "updated_at": NOW,
        "details": {"type_code": "MR", "other_ids": [], "address": "Rue de l'Été 1", "allergies": ["latex"]},
    }


def message(control_id: str) -> dict[str, Any]:
    return {
        "direction": "in", "protocol": "hl7", "sender": "RIS^HOSP", "receiver": "HUB^RAD", "control_id": control_id,
        "message_type": "ORM^O01", "received_at": NOW, "content_hash": "ab" * 32, "raw": b"MSH|^~\\&|\xe9\r",
        "peer": "127.0.0.1:1", "flags": "", "outcome": "AA", "ack": b"MSA|AA\r", "error": "",
    }


def stored(engines: Engines, table: str, key: str, value: str) -> tuple[Any, ...]:
    """The row as the driver returns it (no SQLAlchemy result processing), without its primary key."""
    with engines.read.connect() as conn:
        cursor = conn.exec_driver_sql(f"SELECT * FROM {table} WHERE {key} = '{value}'")
        row = cursor.fetchone()
        names = [d[0] for d in cursor.cursor.description]
    assert row is not None
    return tuple(v for n, v in zip(names, row, strict=True) if n not in ("pk", key))


@pytest.mark.parametrize(
    ("statement", "table", "key", "values"),
    [(_INSERT_PATIENT, "patients", "patient_id", patient), (_INSERT_MESSAGE, "message_log", "control_id", message)],
)
def test_stores_exactly_what_connection_execute_stores(engines: Engines, statement, table, key, values) -> None:  # type: ignore[no-untyped-def]
    with engines.write.begin() as conn:
        core_pk = conn.execute(statement, values("CORE")).scalar_one()
        fast_pk = fast_sql.scalar(conn, statement, values("FAST"))
    assert fast_pk == core_pk + 1
    assert stored(engines, table, key, "FAST") == stored(engines, table, key, "CORE")


def test_rows_come_back_processed_and_unsupported_forms_fall_back(engines: Engines) -> None:
    with engines.write.begin() as conn:
        for patient_id in ("P2", "P1", "P3"):
            fast_sql.scalar(conn, _INSERT_PATIENT, patient(patient_id))
        # an expanding IN runs through Connection.execute, with the same answer
        found = fast_sql.rows(conn, _BY_IDS, {"ids": ["P1", "P3"]})
        lookup = select(patients.c.name, patients.c.details).where(patients.c.patient_id == bindparam("v"))
        [(name, details)] = fast_sql.rows(conn, lookup, {"v": "P2"})
        # an IN over a list fixed in the statement is expanded once and runs on the cursor
        fixed = select(patients.c.patient_id).where(patients.c.sex.in_(["F", "O"]), patients.c.patient_id != "P2")
        same_sex = fast_sql.rows(conn, fixed.order_by(patients.c.patient_id), {})
    assert [r[0] for r in found] == ["P1", "P3"]
    assert [r.patient_id for r in same_sex] == ["P1", "P3"]
    assert found[0][1]["allergies"] == ["latex"]
    assert (name, details["address"]) == ("Doe^Jane", "Rue de l'Été 1")  # JSON parsed on both backends


def test_runs_inside_the_callers_transaction_and_savepoint(engines: Engines) -> None:
    with engines.write.connect() as conn:
        with conn.begin():
            fast_sql.scalar(conn, _INSERT_MESSAGE, message("KEPT"))
            with pytest.raises(exc.IntegrityError):  # the driver's error, as SQLAlchemy's (NOT NULL outcome)
                with conn.begin_nested():
                    fast_sql.scalar(conn, _INSERT_MESSAGE, message("BAD") | {"outcome": None})
            fast_sql.scalar(conn, _INSERT_MESSAGE, message("AFTER"))  # the savepoint rolled back alone
        with conn.begin() as rolled_back:
            fast_sql.scalar(conn, _INSERT_MESSAGE, message("GONE"))
            rolled_back.rollback()
    with engines.read.connect() as conn:
        kept = conn.execute(select(message_log.c.control_id).order_by(message_log.c.pk)).scalars().all()
    assert kept == ["KEPT", "AFTER"]
