"""The outbox over HTTP JSON (issue 4 §6): what waits, what failed, what is dead, and resend.

``GET /api/outbox?state=pending|failed|dead|sent|sending`` lists entries newest first;
``GET /api/outbox/{id}`` shows one with its message; ``POST /api/outbox/{id}/resend`` queues it again with the
same control ID (404 unknown id, 409 while it is pending or being sent).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from radsync.adapters.http.errors import error_body
from radsync.adapters.outbox.operations import NotResendable, OutboxEntry, OutboxOperations, UnknownEntry

StateParam = Literal["pending", "failed", "dead", "sent", "sending"]


def entry_json(entry: OutboxEntry) -> dict[str, Any]:
    body = asdict(entry)
    body["state"] = entry.state.value
    for name in ("next_attempt_at", "created_at", "updated_at", "sent_at"):
        value = body[name]
        body[name] = value.isoformat() if value is not None else None
    payload = body.pop("payload")
    if payload is not None:
        body["message"] = payload.decode("utf-8", "replace")
    return body


def outbox_router(operations: OutboxOperations) -> APIRouter:
    router = APIRouter(prefix="/api/outbox", tags=["outbox"])

    @router.get("")
    def list_entries(
        state: StateParam | None = None,
        destination: str | None = None,
        accession: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        before_id: int | None = None,
    ) -> list[dict[str, Any]]:
        entries = operations.entries(state, destination=destination, accession=accession, limit=limit,
                                     before_id=before_id)
        return [entry_json(e) for e in entries]

    @router.get("/{entry_id}", response_model=None)
    def get_entry(entry_id: int) -> dict[str, Any] | JSONResponse:
        try:
            return entry_json(operations.get(entry_id))
        except UnknownEntry as exc:
            return JSONResponse(error_body("unknown_outbox_entry", str(exc)), status_code=404)

    @router.post("/{entry_id}/resend", response_model=None)
    def resend(entry_id: int) -> dict[str, Any] | JSONResponse:
        try:
            return entry_json(operations.resend(entry_id))
        except UnknownEntry as exc:
            return JSONResponse(error_body("unknown_outbox_entry", str(exc)), status_code=404)
        except NotResendable as exc:
            return JSONResponse(error_body("not_resendable", str(exc)), status_code=409)

    return router
