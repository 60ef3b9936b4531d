"""``GET /api/orders/{accession}/timeline``: every message in and out and every event of an order, with times
(ARCHITECTURE invariant 6; issue 4 §6)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from radsync.adapters.http.errors import error_body
from radsync.adapters.persistence.timeline import order_timeline_of


def timeline_router(read_engine: Engine) -> APIRouter:
    router = APIRouter(prefix="/api/orders", tags=["orders"])

    @router.get("/{accession}/timeline", response_model=None)
    def timeline(accession: str) -> dict[str, Any] | JSONResponse:
        found = order_timeline_of(read_engine, accession)
        if found is None:
            return JSONResponse(error_body("unknown_order", f"no order with accession {accession}"), status_code=404)
        return found

    return router
