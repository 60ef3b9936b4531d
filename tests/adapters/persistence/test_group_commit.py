"""Group commit: concurrent callers share commits, each work stays atomic, a refused one rolls back alone."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.group_commit import GroupCommit
from radsync.adapters.persistence.tables import patients
from radsync.adapters.persistence.unit_of_work import SqlUnitOfWork

NOW = dt.datetime(2026, 1, 2, 3, 4, 5)


def add_patient(patient_id: str, fail: bool = False) -> Any:
    def work(uow: SqlUnitOfWork) -> str:
        uow.connection.execute(insert(patients).values(patient_id=patient_id, details={}, updated_at=NOW))
        if fail:
            raise ValueError(f"refused {patient_id}")
        return patient_id

    return work


def stored(engines: Engines) -> set[str]:
    with engines.read.connect() as connection:
        return set(connection.execute(select(patients.c.patient_id)).scalars())


def test_one_caller_commits_its_own_work_and_gets_its_result(engines: Engines) -> None:
    commits = GroupCommit(engines.write, lambda: NOW)
    assert commits.run(add_patient("P1")) == "P1"
    with pytest.raises(ValueError):
        commits.run(add_patient("P2", fail=True))
    assert stored(engines) == {"P1"}


def test_concurrent_callers_share_commits_and_a_refused_work_rolls_back_alone(engines: Engines) -> None:
    commits = GroupCommit(engines.write, lambda: NOW)
    results: dict[str, object] = {}
    hold = threading.Event()

    def slow_first(uow: SqlUnitOfWork) -> str:
        hold.wait(5)  # the others queue meanwhile and are committed together by the next leader
        return add_patient("FIRST")(uow)  # type: ignore[no-any-return]

    def call(name: str, work: Any) -> None:
        try:
            results[name] = commits.run(work)
        except Exception as error:  # noqa: BLE001 - the test records what each caller got
            results[name] = error

    first = threading.Thread(target=call, args=("FIRST", slow_first))
    first.start()
    others = [
        threading.Thread(target=call, args=(f"P{i}", add_patient(f"P{i}", fail=(i == 3)))) for i in range(6)
    ]
    for thread in others:
        thread.start()
    hold.set()
    for thread in [first, *others]:
        thread.join(10)
    assert isinstance(results["P3"], ValueError)
    assert {name for name, value in results.items() if value == name} == {"FIRST", "P0", "P1", "P2", "P4", "P5"}
    assert stored(engines) == {"FIRST", "P0", "P1", "P2", "P4", "P5"}
    with engines.read.connect() as connection:
        assert connection.execute(select(func.count()).select_from(patients)).scalar() == 6
