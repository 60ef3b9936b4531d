"""Units of work over SQLAlchemy connections.

``SqlUnitOfWork`` wraps a connection that is already inside a transaction (or a savepoint); whoever opened it
commits. That lets the HL7 intake run several messages in one transaction, each in its own savepoint (group
commit), while ``transaction()`` gives every other caller the plain one-command-one-transaction form.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine

from radsync.adapters.persistence.message_log import SqlMessageLog
from radsync.adapters.persistence.repositories import SqlOrderRepository, SqlPatientRepository


class SqlUnitOfWork:
    def __init__(self, connection: Connection, now: dt.datetime, message_id: int | None = None) -> None:
        self.connection = connection
        self._now = now
        self.message_id = message_id
        self.patients = SqlPatientRepository(connection, now)
        self.orders = SqlOrderRepository(connection, now, self.patients)
        self.messages = SqlMessageLog(connection)

    def now(self) -> dt.datetime:
        return self._now


Clock = Callable[[], dt.datetime]


@contextmanager
def transaction(engine: Engine, clock: Clock) -> Iterator[SqlUnitOfWork]:
    """One command, one transaction: committed when the block ends, rolled back if it raises."""
    with engine.begin() as connection:
        yield SqlUnitOfWork(connection, clock())
