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
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
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
    # Source time (EVN-2, else MSH-7) of the last demographic update applied: an older one is not applied.
    Column("source_time", DateTime, nullable=True),
    UniqueConstraint("patient_id", "issuer", "issuer_uid", name="uq_patients_identifier"),
    Index("ix_patients_name_fold", "name_fold"),
    # MWL name-prefix queries run LIKE 'doe%' on PostgreSQL; a plain btree serves that only under the C collation,
    # the pattern-ops index under any (adapters/persistence/worklist.py). On SQLite it is a plain index like the one
    # above (GLOB uses either): kept on both backends so autogenerate sees the same schema everywhere.
    Index("ix_patients_name_fold_pattern", "name_fold", postgresql_ops={"name_fold": "varchar_pattern_ops"}),
)

# Identifiers a patient was known by before a merge (ADT A40/A34) or a change of identifier (A47): images and
# orders that arrive later under one attach to the surviving patient (adapters/persistence/patients.py).
patient_aliases = Table(
    "patient_aliases",
    metadata,
    Column("pk", Id, primary_key=True),
    Column("patient_pk", Id, ForeignKey("patients.pk"), nullable=False, index=True),
    Column("patient_id", String(64), nullable=False),
    Column("issuer", String(64), nullable=False, server_default=""),
    Column("issuer_uid", String(128), nullable=False, server_default=""),
    Column("issuer_uid_type", String(16), nullable=False, server_default=""),
    Column("kind", String(16), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("message_pk", Id, ForeignKey("message_log.pk"), nullable=True),
    UniqueConstraint("patient_id", "issuer", "issuer_uid", name="uq_patient_aliases_identifier"),
)

# Every change of a patient (demographics, merge, identifier change, alias, ignored stale update): old and new
# values, who caused it (a message, or an API user) and when. Follows the surviving patient after a merge.
patient_history = Table(
    "patient_history",
    metadata,
    Column("pk", Id, primary_key=True),
    Column("patient_pk", Id, ForeignKey("patients.pk"), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("patient_id", String(64), nullable=False, server_default=""),
    Column("issuer", String(64), nullable=False, server_default=""),
    Column("actor", String(200), nullable=False, server_default=""),
    Column("message_pk", Id, ForeignKey("message_log.pk"), nullable=True),
    Column("source_time", DateTime, nullable=True),
    Column("old", JSON, nullable=False),
    Column("new", JSON, nullable=False),
    Index("ix_patient_history_patient_at", "patient_pk", "at"),
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
    Index("ix_requested_procedures_procedure_id", "procedure_id"),  # MWL Requested Procedure ID key
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

OUTBOX_UNSENT = "state IN ('pending', 'sending', 'failed', 'dead')"
"""The predicate of the outbox's partial index, as literal SQL (a bound parameter could not prove it)."""

# The durable outbox (ARCHITECTURE invariant 4): one row per outbound message and destination, written in the
# transaction of the state change that causes it, delivered later by adapters/outbox. Rows are kept after delivery:
# they are the record of what was sent, when, and what the receiver answered.
# state: pending (to send) -> sending (claimed by a worker until lease_until) -> sent | failed (retry at
# next_attempt_at) | dead (given up; an operator may resend). Only pending/failed/sending rows form the queue.
# The message itself lives in outbox_payloads: written once, while the delivery state changes two or more times per
# message. Keeping the state row narrow makes each change rewrite ~200 bytes instead of the whole message (SQLite
# rewrites the full record, PostgreSQL writes a new tuple version), which is most of the outbox's database cost.
outbox = Table(
    "outbox",
    metadata,
    Column("pk", Id, primary_key=True),
    Column("destination", String(64), nullable=False),
    Column("message_type", String(32), nullable=False, server_default=""),
    Column("control_id", String(64), nullable=False),
    Column("order_pk", Id, ForeignKey("orders.pk"), nullable=True, index=True),
    Column("accession", String(64), nullable=False, server_default=""),
    Column("state", String(8), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime, nullable=False),
    Column("last_error", Text, nullable=False, server_default=""),
    Column("ack_code", String(2), nullable=False, server_default=""),
    Column("claimed_by", String(128), nullable=True),
    Column("lease_until", DateTime, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("sent_at", DateTime, nullable=True),
    Column("ack_latency", Float, nullable=True),
    # The worker's head-of-line ranges (destination = ? AND state = ? ORDER BY pk), queue statistics and listings
    # by state. Partial: a sent row (nearly all of them) leaves this index with its sent mark, so the index stays
    # the size of the queue; with no index on state alone a claim writes four index entries instead of five and
    # a sent mark three. Queries repeat OUTBOX_UNSENT literally, so both planners can prove it (outbox/store.py).
    Index("ix_outbox_unsent", "destination", "state", "pk",
          postgresql_where=text(OUTBOX_UNSENT), sqlite_where=text(OUTBOX_UNSENT)),
    Index("ix_outbox_control_id", "control_id"),
)

outbox_payloads = Table(
    "outbox_payloads",
    metadata,
    Column("outbox_pk", Id, ForeignKey("outbox.pk", ondelete="CASCADE"), primary_key=True),
    Column("payload", LargeBinary, nullable=False),  # the wire message, exactly as it is sent (every retry)
)

# -- images: studies, series, instances, reconciliation (issue 3) ---------------------------------------------
# Patient and study attributes are kept as received (the first instance's header); what radsync believes now
# is the state plus the links to requested procedures. Everything the hot path or the queues look up is an
# indexed column; the rest is JSON read back whole.

studies = Table(
    "studies",
    metadata,
    Column("pk", Id, primary_key=True),
    Column("study_instance_uid", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", String(32), nullable=False, server_default=""),
    Column("patient_id", String(64), nullable=False, server_default=""),
    Column("patient_issuer", String(64), nullable=False, server_default=""),
    Column("patient_name", String(400), nullable=False, server_default=""),
    Column("birth_date", String(8), nullable=False, server_default=""),
    Column("sex", String(1), nullable=False, server_default=""),
    Column("accession", String(64), nullable=False, server_default=""),
    Column("accession_issuer", String(64), nullable=False, server_default=""),
    Column("study_date", String(8), nullable=False, server_default=""),
    Column("study_time", String(16), nullable=False, server_default=""),
    Column("description", String(400), nullable=False, server_default=""),
    Column("modalities", String(200), nullable=False, server_default=""),
    Column("details", JSON, nullable=False),
    Column("received_at", DateTime, nullable=False),
    Column("last_received_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("quarantined_instances", Integer, nullable=False, server_default="0"),
    UniqueConstraint("study_instance_uid", name="uq_studies_study_instance_uid"),
    Index("ix_studies_state", "state", "received_at"),
    Index("ix_studies_accession", "accession"),
    Index("ix_studies_patient_id", "patient_id"),
    Index("ix_studies_study_date", "study_date"),  # Q/R Study Date ranges (archive_queries.py)
)

# Request Attributes Sequence items as received (series level in the images, accumulated per study): the join
# keys of the group case, looked up when a late order arrives.
study_request_items = Table(
    "study_request_items",
    metadata,
    Column("pk", Id, primary_key=True),
    Column("study_pk", Id, ForeignKey("studies.pk", ondelete="CASCADE"), nullable=False, index=True),
    Column("accession", String(64), nullable=False, server_default=""),
    Column("accession_issuer", String(64), nullable=False, server_default=""),
    Column("procedure_id", String(64), nullable=False, server_default=""),
    Column("step_id", String(64), nullable=False, server_default=""),
    Column("study_instance_uid", String(64), nullable=False, server_default=""),
    Index("ix_study_request_items_accession", "accession"),
    Index("ix_study_request_items_study_instance_uid", "study_instance_uid"),
)

series = Table(
    "series",
    metadata,
    Column("pk", Id, primary_key=True),
    Column("study_pk", Id, ForeignKey("studies.pk"), nullable=False, index=True),
    Column("series_instance_uid", String(64), nullable=False),
    Column("modality", String(16), nullable=False, server_default=""),
    Column("series_number", Integer, nullable=True),
    Column("description", String(400), nullable=False, server_default=""),
    Column("details", JSON, nullable=False),
    Column("received_at", DateTime, nullable=False),
    UniqueConstraint("series_instance_uid", name="uq_series_series_instance_uid"),
    Index("ix_series_modality", "modality", "study_pk"),  # Q/R Modalities in Study (archive_queries.py)
)

instances = Table(
    "instances",
    metadata,
    Column("pk", Id, primary_key=True),
    Column("study_pk", Id, ForeignKey("studies.pk"), nullable=False, index=True),
    Column("series_pk", Id, ForeignKey("series.pk"), nullable=False, index=True),
    Column("sop_instance_uid", String(64), nullable=False),
    Column("sop_class_uid", String(64), nullable=False),
    Column("transfer_syntax_uid", String(64), nullable=False),
    Column("instance_number", Integer, nullable=True),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("blob_key", String(200), nullable=False),
    Column("received_at", DateTime, nullable=False),
    # Non-empty when the instance's patient differs from its study's: stored, but kept out of the study.
    Column("quarantine", String(32), nullable=False, server_default=""),
    UniqueConstraint("sop_instance_uid", name="uq_instances_sop_instance_uid"),
)

# A known SOP Instance UID received again with other bytes: the original stays, the newcomer is kept here.
instance_duplicates = Table(
    "instance_duplicates",
    metadata,
    Column("pk", Id, primary_key=True),
    Column("instance_pk", Id, ForeignKey("instances.pk"), nullable=False, index=True),
    Column("sop_instance_uid", String(64), nullable=False),
    Column("study_instance_uid", String(64), nullable=False, server_default=""),
    Column("series_instance_uid", String(64), nullable=False, server_default=""),
    Column("transfer_syntax_uid", String(64), nullable=False, server_default=""),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("blob_key", String(200), nullable=False),
    Column("received_at", DateTime, nullable=False),
    Column("calling_ae_title", String(16), nullable=False, server_default=""),
    UniqueConstraint("sop_instance_uid", "sha256", name="uq_instance_duplicates_sop_sha256"),
)

# Many-to-many: a study fulfils one or more requested procedures (grouped procedures), a procedure may have
# several studies (IHE PGP; MAPPING.md §7).
study_links = Table(
    "study_links",
    metadata,
    Column("pk", Id, primary_key=True),
    Column("study_pk", Id, ForeignKey("studies.pk"), nullable=False),
    Column("procedure_pk", Id, ForeignKey("requested_procedures.pk"), nullable=False, index=True),
    Column("order_pk", Id, ForeignKey("orders.pk"), nullable=False, index=True),
    Column("step_ids", String(400), nullable=False, server_default=""),
    Column("source", String(8), nullable=False),
    Column("rule", String(32), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("created_by", String(200), nullable=False, server_default=""),
    UniqueConstraint("study_pk", "procedure_pk", name="uq_study_links_study_procedure"),
)

mpps = Table(
    "mpps",
    metadata,
    Column("pk", Id, primary_key=True),
    Column("sop_instance_uid", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", String(32), nullable=False, server_default=""),
    Column("patient_id", String(64), nullable=False, server_default=""),
    Column("patient_issuer", String(64), nullable=False, server_default=""),
    Column("modality", String(16), nullable=False, server_default=""),
    Column("station_ae_title", String(16), nullable=False, server_default=""),
    Column("start_at", DateTime, nullable=True),
    Column("end_at", DateTime, nullable=True),
    Column("details", JSON, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("sop_instance_uid", name="uq_mpps_sop_instance_uid"),
    Index("ix_mpps_state", "state"),
    Index("ix_mpps_patient_id", "patient_id"),
)

# Scheduled Step Attributes Sequence items as received: looked up when a late order arrives.
mpps_request_items = Table(
    "mpps_request_items",
    metadata,
    Column("pk", Id, primary_key=True),
    Column("mpps_pk", Id, ForeignKey("mpps.pk", ondelete="CASCADE"), nullable=False, index=True),
    Column("accession", String(64), nullable=False, server_default=""),
    Column("accession_issuer", String(64), nullable=False, server_default=""),
    Column("procedure_id", String(64), nullable=False, server_default=""),
    Column("step_id", String(64), nullable=False, server_default=""),
    Column("study_instance_uid", String(64), nullable=False, server_default=""),
    Index("ix_mpps_request_items_accession", "accession"),
    Index("ix_mpps_request_items_study_instance_uid", "study_instance_uid"),
)

# Which scheduled steps an MPPS performs (several for a grouped MPPS).
mpps_steps = Table(
    "mpps_steps",
    metadata,
    Column("mpps_pk", Id, ForeignKey("mpps.pk"), primary_key=True),
    Column("step_pk", Id, ForeignKey("scheduled_steps.pk"), primary_key=True),
    Column("order_pk", Id, ForeignKey("orders.pk"), nullable=False, index=True),
    Column("rule", String(32), nullable=False),
    Column("source", String(8), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Index("ix_mpps_steps_step_pk", "step_pk"),
)

# Every reconciliation decision about a study or an MPPS: the history behind its state (invariant 6).
reconciliation_decisions = Table(
    "reconciliation_decisions",
    metadata,
    Column("pk", Id, primary_key=True),
    Column("study_pk", Id, ForeignKey("studies.pk"), nullable=True),
    Column("mpps_pk", Id, ForeignKey("mpps.pk"), nullable=True),
    Column("at", DateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("rule", String(32), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("reason", String(32), nullable=False, server_default=""),
    Column("evidence", JSON, nullable=False),
    Column("message_pk", Id, ForeignKey("message_log.pk"), nullable=True),
    Index("ix_reconciliation_decisions_study", "study_pk", "at"),
    Index("ix_reconciliation_decisions_mpps", "mpps_pk", "at"),
)

# -- reports (issue 4) ------------------------------------------------------------------------------------------
# Every version of every report is kept; the current one per order has superseded_at NULL. A corrected report
# supersedes the final one (HL7 v2.5.1 ch. 7: each C is a full replacement).
reports = Table(
    "reports",
    metadata,
    Column("pk", Id, primary_key=True),
    Column("order_pk", Id, ForeignKey("orders.pk"), nullable=False),
    Column("status", String(1), nullable=False),
    Column("text", Text, nullable=False),
    Column("author", String(400), nullable=False, server_default=""),
    Column("author_id", String(64), nullable=False, server_default=""),
    Column("observed_at", DateTime, nullable=True),
    Column("received_at", DateTime, nullable=False),
    Column("superseded_at", DateTime, nullable=True),
    Column("source", String(8), nullable=False, server_default=""),
    Column("message_pk", Id, ForeignKey("message_log.pk"), nullable=True),
    Index("ix_reports_order", "order_pk", "pk"),
)
