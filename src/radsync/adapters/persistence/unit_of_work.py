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

from radsync.adapters.outbox.store import SqlOutbox
from radsync.adapters.persistence.forwarding import SqlForwardLedger
from radsync.adapters.persistence.message_log import SqlMessageLog
from radsync.adapters.persistence.mpps import SqlMppsRepository
from radsync.adapters.persistence.patients import SqlPatientIdentity
from radsync.adapters.persistence.procedure_lookup import SqlProcedureLookup
from radsync.adapters.persistence.reports import SqlReportRepository
from radsync.adapters.persistence.repositories import SqlOrderRepository, SqlPatientRepository
from radsync.adapters.persistence.studies import SqlStudyRepository
from radsync.adapters.persistence.study_split import SqlStudyRegrouping
from radsync.app.outbound import NO_OUTBOUND, Outbound


class SqlUnitOfWork:
    def __init__(
        self,
        connection: Connection,
        now: dt.datetime,
        message_id: int | None = None,
        outbound: Outbound = NO_OUTBOUND,
    ) -> None:
        self.connection = connection
        self._now = now
        self.message_id = message_id
        self.patients = SqlPatientRepository(connection, now)
        self.orders = SqlOrderRepository(connection, now, self.patients)
        self.identities = SqlPatientIdentity(connection, now, self.patients)
        self.messages = SqlMessageLog(connection)
        self.studies = SqlStudyRepository(connection, now)
        self.regrouping = SqlStudyRegrouping(connection, now)
        self.mpps = SqlMppsRepository(connection, now)
        self.procedures = SqlProcedureLookup(connection)
        self.reports = SqlReportRepository(connection, now)
        self.outbox = SqlOutbox(connection, now, outbound.routes)
        self.forwarding = SqlForwardLedger(connection)
        self.wire = outbound.wire

    def now(self) -> dt.datetime:
        return self._now


Clock = Callable[[], dt.datetime]


@contextmanager
def transaction(engine: Engine, clock: Clock, outbound: Outbound = NO_OUTBOUND) -> Iterator[SqlUnitOfWork]:
    """One command, one transaction: committed when the block ends, rolled back if it raises.

    With ``outbound``, messages the command queued are routed to its destinations, and the delivery workers
    are woken once the commit has succeeded (never before: a rolled-back message must not be looked for).
    """
    with engine.begin() as connection:
        uow = SqlUnitOfWork(connection, clock(), outbound=outbound)
        yield uow
    if uow.outbox.enqueued and outbound.notify is not None:
        outbound.notify()
