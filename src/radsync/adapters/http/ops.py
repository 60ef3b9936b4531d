"""Operator API: what came in, what was answered, and why (JSON)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import Engine

from radsync.adapters.persistence.queries import message_content, recent_messages


def ops_router(read_engine: Engine) -> APIRouter:
    router = APIRouter(prefix="/api")

    @router.get("/messages")
    def list_messages(
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        outcome: Literal["AA", "AE", "AR"] | None = None,
        sender: str | None = None,
        control_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest messages first; filter by ACK outcome (e.g. AE for the ones the RIS must fix)."""
        return recent_messages(read_engine, limit=limit, outcome=outcome, sender=sender, control_id=control_id)

    @router.get("/messages/{message_id}")
    def get_message(message_id: int) -> dict[str, Any]:
        found = message_content(read_engine, message_id)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no message {message_id}")
        return found

    return router
