"""``ForwardLedger`` (app/forwarding.py): the instances of a study a forwarding destination has not got yet.

One statement: the study's non-quarantined instances without a live forward entry for the destination. Entries
are found by (control ID = SOP Instance UID, destination) through ``ix_outbox_control_id``; no column of its own.
"""

from __future__ import annotations

from sqlalchemy import Connection, and_, bindparam, exists, select

from radsync.adapters.persistence.tables import instances, orders, outbox, studies, study_links
from radsync.app.forwarding import FORWARD_MESSAGE_TYPE
from radsync.domain.ids import EntityId, Issuer

_LIVE = ("pending", "sending", "failed", "sent")

_forwarded = exists().where(
    outbox.c.control_id == instances.c.sop_instance_uid,
    outbox.c.destination == bindparam("p_destination"),
    outbox.c.message_type == FORWARD_MESSAGE_TYPE,
    outbox.c.state.in_(_LIVE),
)
_BASE = (
    select(instances.c.sop_instance_uid)
    .select_from(instances.join(studies, studies.c.pk == instances.c.study_pk))
    .where(studies.c.study_instance_uid == bindparam("p_study"), instances.c.quarantine == "", ~_forwarded)
    .order_by(instances.c.pk)
)
_ALL = _BASE
_ONE = _BASE.where(and_(instances.c.sop_instance_uid == bindparam("p_sop")))


_FIRST_ORDER = (
    select(orders.c.accession, orders.c.accession_issuer)
    .select_from(study_links.join(studies, studies.c.pk == study_links.c.study_pk)
                 .join(orders, orders.c.pk == study_links.c.order_pk))
    .where(studies.c.study_instance_uid == bindparam("p_study"))
    .order_by(study_links.c.pk)
    .limit(1)
)


class SqlForwardLedger:
    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def unforwarded(self, destination: str, study_instance_uid: str, sop_instance_uid: str = "") -> list[str]:
        params = {"p_destination": destination, "p_study": study_instance_uid}
        if sop_instance_uid:
            params["p_sop"] = sop_instance_uid
        rows = self._conn.execute(_ONE if sop_instance_uid else _ALL, params)
        return [str(uid) for (uid,) in rows]

    def first_order(self, study_instance_uid: str) -> EntityId | None:
        row = self._conn.execute(_FIRST_ORDER, {"p_study": study_instance_uid}).first()
        return EntityId(row.accession, Issuer(row.accession_issuer)) if row is not None else None
