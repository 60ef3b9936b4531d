"""The relational schema (SQLAlchemy Core tables); Alembic migrations are generated from this metadata.

Why Core and not the ORM: the HL7 intake writes ~10 rows per message inside a budget of ~1 ms; Core statements
with cached compilation keep that budget, and repositories.py stays the only row <-> domain mapping.
Free-form details that are only read back whole (codes, visit data, physician names) live in JSON columns;
everything a query matches on (MWL keys, identifiers) is a real, indexed column.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Id = BigInteger().with_variant(Integer, "sqlite")  # INTEGER PRIMARY KEY is SQLite's rowid alias

patients = Table(
    "patients",
    metadata,
    Column("pk", Id, primary_key=True),
    Column("patient_id", String(64), nullable=False),
    Column("issuer", String(64), nullable=False, server_default=""),
    Column("issuer_uid", String(128), nullable=False, server_default=""),
    Column("issuer_uid_type", String(16), nullable=False, server_default=""),
    Column("name", String(400), nullable=False, server_default=""),
    Column("name_fold", String(200), nullable=False, server_default=""),
    Column("birth_date", String(8), nullable=False, server_default=""),
    Column("sex", String(1), nullable=False, server_default=""),
    Column("details", JSON, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("patient_id", "issuer", "issuer_uid", name="uq_patients_identifier"),
    Index("ix_patients_name_fold", "name_fold"),
)

orders = Table(
    "orders",
    metadata,
    Column("pk", Id, primary_key=True),
    Column("patient_pk", Id, ForeignKey("patients.pk"), nullable=False, index=True),
    Column("accession", String(64), nullable=False, server_default=""),
    Column("accession_issuer", String(64), nullable=False, server_default=""),
    Column("placer_number", String(64), nullable=False, server_default=""),
    Column("placer_issuer", String(64), nullable=False, server_default=""),
    Column("filler_number", String(64), nullable=False, server_default=""),
    Column("filler_issuer", String(64), nullable=False, server_default=""),
    Column("details", JSON, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_orders_accession", "accession"),
    Index("ix_orders_placer", "placer_number", "placer_issuer"),
    Index("ix_orders_filler", "filler_number", "filler_issuer"),
)

requested_procedures = Table(
    "requested_procedures",
    metadata,
    Column("pk", Id, primary_key=True),
    Column("order_pk", Id, ForeignKey("orders.pk"), nullable=False),
    Column("procedure_id", String(64), nullable=False),
    Column("study_instance_uid", String(64), nullable=False),
    Column("details", JSON, nullable=False),
    UniqueConstraint("order_pk", "procedure_id", name="uq_requested_procedures_order_procedure"),
    UniqueConstraint("study_instance_uid", name="uq_requested_procedures_study_instance_uid"),
)

scheduled_steps = Table(
    "scheduled_steps",
    metadata,
    Column("pk", Id, primary_key=True),
    Column("procedure_pk", Id, ForeignKey("requested_procedures.pk"), nullable=False),
    Column("order_pk", Id, ForeignKey("orders.pk"), nullable=False, index=True),
    Column("patient_pk", Id, ForeignKey("patients.pk"), nullable=False, index=True),
    Column("step_id", String(64), nullable=False),
    Column("modality", String(16), nullable=False),
    Column("start_at", DateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("station_ae_titles", String(200), nullable=False, server_default=""),
    Column("details", JSON, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("procedure_pk", "step_id", name="uq_scheduled_steps_procedure_step"),
    Index("ix_scheduled_steps_status_start", "status", "start_at"),
    Index("ix_scheduled_steps_step_id", "step_id"),
)

# One row per (step, station): the MWL's most common key is the station AE title, and a step may be
# scheduled on several stations (IPC-9 repetitions, or every station of its modality).
step_stations = Table(
    "step_stations",
    metadata,
    Column("step_pk", Id, ForeignKey("scheduled_steps.pk", ondelete="CASCADE"), primary_key=True),
    Column("ae_title", String(16), primary_key=True),
    Index("ix_step_stations_ae_title", "ae_title", "step_pk"),
)

message_log = Table(
    "message_log",
    metadata,
    Column("pk", Id, primary_key=True),
    Column("direction", String(3), nullable=False),
    Column("protocol", String(8), nullable=False),
    Column("sender", String(200), nullable=False, server_default=""),
    Column("receiver", String(200), nullable=False, server_default=""),
    Column("control_id", String(200), nullable=False, server_default=""),
    Column("message_type", String(32), nullable=False, server_default=""),
    Column("received_at", DateTime, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("outcome", String(8), nullable=False, server_default=""),
    Column("ack", LargeBinary, nullable=True),
    Column("error", Text, nullable=False, server_default=""),
    Column("flags", String(200), nullable=False, server_default=""),
    Column("peer", String(200), nullable=False, server_default=""),
    Index("ix_message_log_sender_control", "sender", "control_id"),
    Index("ix_message_log_received_at", "received_at"),
)

order_timeline = Table(
    "order_timeline",
    metadata,
    Column("pk", Id, primary_key=True),
    Column("order_pk", Id, ForeignKey("orders.pk"), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("summary", Text, nullable=False, server_default=""),
    Column("detail", JSON, nullable=False),
    Column("message_pk", Id, ForeignKey("message_log.pk"), nullable=True),
    Index("ix_order_timeline_order_at", "order_pk", "at"),
)
