"""The Unassigned queue over HTTP JSON (issue 3 §5; FIELD-NOTES §1, §2): list, inspect, link, unlink; grouped
procedures (issue 5 §4): link a further order, unlink one, split series off to a new study (docs/reconciliation.md).

Thin endpoints: parse -> one use case in one transaction -> serialise (``study_json``). Errors are raised as
``DomainError`` and translated once, in ``errors.py``. The endpoints are plain ``def``: FastAPI runs them in its
thread pool, so the synchronous core never blocks the event loop.

Who acted: ``actor`` in the JSON body, else the ``X-Radsync-User`` header (set by an authenticating proxy),
else ``"api"``. A reason is required for every manual decision: it is the *why* of the audit trail.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, ConfigDict, Field

from radsync.adapters.http.study_json import study_json
from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.unit_of_work import transaction
from radsync.app.outbound import NO_OUTBOUND, Outbound
from radsync.app.reconcile import LinkOrder, ManualReconcile, Split, Unlink
from radsync.app.studies import StudyService
from radsync.clock import utc_now
from radsync.domain.ids import EntityId, Issuer
from radsync.domain.study import StudyState

DEFAULT_ACTOR = "api"
ACTOR_HEADER = "X-Radsync-User"

StateParam = Literal["unassigned", "conflict", "matched"]
ActorHeader = Annotated[str | None, Header(alias=ACTOR_HEADER, max_length=64)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = Field(min_length=1, max_length=1000, description="Why: kept in the study's history.")
    actor: str | None = Field(default=None, min_length=1, max_length=64)
    accession_issuer: str | None = Field(
        default=None, max_length=64, description="Issuer namespace, when one accession names several orders."
    )


class ReconcileBody(_Body):
    """``POST .../reconcile``: link the study to the order with this accession number."""

    accession_number: str = Field(min_length=1, max_length=64)


class UnlinkBody(_Body):
    """``POST .../unlink``: remove the link to this order, or every link when no accession is given."""

    accession_number: str | None = Field(default=None, min_length=1, max_length=64)


class LinkOrderBody(BaseModel):
    """``POST .../orders``: the study fulfils this order too (grouped procedures)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    accession_number: str = Field(min_length=1, max_length=64)
    accession_issuer: str | None = Field(default=None, max_length=64)
    reason: str = Field(default="", max_length=1000, description="Why: kept in the study's history.")
    actor: str | None = Field(default=None, min_length=1, max_length=64)


class SplitBody(LinkOrderBody):
    """``POST .../split``: move these series to a new study linked to the order with ``accession_number``."""

    series_instance_uids: list[str] = Field(min_length=1, max_length=1000)
    study_instance_uid: str | None = Field(
        default=None, min_length=1, max_length=64, description="The new study's UID; generated when absent."
    )


def studies_router(
    engines: Engines,
    studies: StudyService,
    clock: Callable[[], dt.datetime] = utc_now,
    outbound: Outbound = NO_OUTBOUND,
) -> APIRouter:
    """``outbound``: a manual link that completes an order sends its status (app/status_out.py)."""
    router = APIRouter(prefix="/api/studies", tags=["studies"])

    @router.get("")
    def list_studies(
        state: StateParam = "unassigned",
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """The queue of studies in ``state``, oldest first, each with ranked, explained candidate orders."""
        with transaction(engines.read, clock) as uow:
            views = studies.list_studies(uow, StudyState(state), limit=limit, offset=offset)
        return {
            "state": state,
            "limit": limit,
            "offset": offset,
            "count": len(views),
            "studies": [study_json(v) for v in views],
        }

    @router.get("/{study_instance_uid}")
    def get_study(study_instance_uid: str) -> dict[str, Any]:
        """One study: as received, state, links, candidates, and its history of decisions."""
        with transaction(engines.read, clock) as uow:
            view = studies.get_study(uow, study_instance_uid)
        return study_json(view, with_history=True)

    @router.post("/{study_instance_uid}/reconcile")
    def reconcile(
        study_instance_uid: str, body: ReconcileBody, x_radsync_user: ActorHeader = None
    ) -> dict[str, Any]:
        """Link the study to an order (and so to its patient); answers with the study as it now stands."""
        command = ManualReconcile(
            study_instance_uid,
            _accession(body.accession_number, body.accession_issuer),
            _actor(body.actor, x_radsync_user),
            body.reason,
        )
        with transaction(engines.write, clock, outbound) as uow:
            view = studies.reconcile_manually(uow, command)
        return study_json(view, with_history=True)

    @router.post("/{study_instance_uid}/unlink")
    def unlink(
        study_instance_uid: str, body: UnlinkBody, x_radsync_user: ActorHeader = None
    ) -> dict[str, Any]:
        """Undo links (one order's, or all); a study left without links returns to the Unassigned queue."""
        accession = (
            _accession(body.accession_number, body.accession_issuer) if body.accession_number else None
        )
        command = Unlink(study_instance_uid, _actor(body.actor, x_radsync_user), body.reason, accession)
        with transaction(engines.write, clock, outbound) as uow:
            view = studies.unlink(uow, command)
        return study_json(view, with_history=True)

    @router.post("/{study_instance_uid}/orders")
    def link_order(
        study_instance_uid: str, body: LinkOrderBody, x_radsync_user: ActorHeader = None
    ) -> dict[str, Any]:
        """Link a further order (grouped procedures); 409 when the order is another patient's."""
        command = LinkOrder(
            study_instance_uid,
            _accession(body.accession_number, body.accession_issuer),
            _actor(body.actor, x_radsync_user),
            body.reason,
        )
        with transaction(engines.write, clock, outbound) as uow:
            view = studies.link_order(uow, command)
        return study_json(view, with_history=True)

    @router.delete("/{study_instance_uid}/orders/{accession_number}")
    def unlink_order(
        study_instance_uid: str,
        accession_number: str,
        reason: Annotated[str, Query(max_length=1000)] = "",
        actor: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        accession_issuer: Annotated[str | None, Query(max_length=64)] = None,
        x_radsync_user: ActorHeader = None,
    ) -> dict[str, Any]:
        """Unlink one order; 404 when the study is not linked to it."""
        command = Unlink(
            study_instance_uid,
            _actor(actor, x_radsync_user),
            reason.strip(),
            _accession(accession_number.strip(), accession_issuer),
        )
        with transaction(engines.write, clock, outbound) as uow:
            view = studies.unlink(uow, command)
        return study_json(view, with_history=True)

    @router.post("/{study_instance_uid}/split", status_code=201)
    def split(study_instance_uid: str, body: SplitBody, x_radsync_user: ActorHeader = None) -> dict[str, Any]:
        """Move series to a new study for another order; answers 201 with the new study."""
        command = Split(
            study_instance_uid,
            tuple(body.series_instance_uids),
            _accession(body.accession_number, body.accession_issuer),
            _actor(body.actor, x_radsync_user),
            body.reason,
            body.study_instance_uid or "",
        )
        with transaction(engines.write, clock, outbound) as uow:
            view = studies.split(uow, command)
        return study_json(view, with_history=True)

    return router


def _accession(value: str, issuer: str | None) -> EntityId:
    return EntityId(value, Issuer(issuer)) if issuer else EntityId(value)


def _actor(from_body: str | None, from_header: str | None) -> str:
    header = (from_header or "").strip()
    return from_body or header or DEFAULT_ACTOR
