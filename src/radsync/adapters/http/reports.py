"""``POST /api/reports``: a report from a reporting system that speaks HTTP instead of HL7 (issue 4 §2).

JSON in, the same use case as an inbound ORU^R01 (``app.reports.record_report``), one transaction; the ORU^R01
messages it queues are delivered by the outbox. An unknown accession is 404 (``errors.py``), a preliminary
report after a final one 409.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.unit_of_work import transaction
from radsync.app.outbound import Outbound
from radsync.app.ports import OrderKey
from radsync.app.reports import RecordReport, record_report
from radsync.clock import utc_now
from radsync.domain.ids import EntityId, Issuer
from radsync.domain.names import PersonName
from radsync.domain.report import Report, ReportStatus


class ReportBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    accession_number: str = Field(min_length=1, max_length=64)
    accession_issuer: str | None = Field(default=None, max_length=64)
    status: Literal["preliminary", "final", "corrected"]
    text: str = Field(min_length=1, max_length=1_000_000)
    author: str = Field(min_length=1, max_length=200, description="Signing radiologist, `Family^Given` or free text.")
    author_id: str = Field(default="", max_length=64)
    observed_at: dt.datetime | None = None


def reports_router(
    engines: Engines,
    outbound: Outbound,
    zone: dt.tzinfo | None = None,
    clock: Callable[[], dt.datetime] = utc_now,
) -> APIRouter:
    """``zone``: the site's time zone; ``observed_at`` with an offset is stored as wall-clock time there, like
    HL7 times (MAPPING.md §2.2); without an offset it already is."""
    router = APIRouter(prefix="/api/reports", tags=["reports"])

    @router.post("", status_code=201)
    def post_report(body: ReportBody) -> dict[str, Any]:
        """Store the report against its order and queue an ORU^R01 per linked order and destination."""
        observed = body.observed_at
        if observed is not None and observed.tzinfo is not None:
            observed = (observed.astimezone(zone) if zone is not None else observed.astimezone()).replace(tzinfo=None)
        report = Report(ReportStatus.from_word(body.status), body.text, PersonName.from_canonical(body.author),
                        body.author_id, observed)
        key = OrderKey(accession=EntityId(body.accession_number, Issuer(body.accession_issuer or "")))
        with transaction(engines.write, clock, outbound) as uow:
            recorded = record_report(uow, RecordReport(key, report, source="http"))
        return {
            "report_id": recorded.report_id,
            "accession_number": recorded.order.accession.value,
            "status": recorded.report.status.name.lower(),
            "control_ids": list(recorded.control_ids),
        }

    return router
