"""The HTTP application: health, metrics and (later) FHIR, DICOMweb and the operator API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import radsync
from radsync.adapters.http.errors import install_error_handlers
from radsync.adapters.http.ops import ops_router
from radsync.adapters.http.outbox import outbox_router
from radsync.adapters.http.patients import patients_router
from radsync.adapters.http.reports import reports_router
from radsync.adapters.http.studies import studies_router
from radsync.adapters.http.timeline import timeline_router

if TYPE_CHECKING:
    from radsync.bootstrap import Container


def create_app(container: Container) -> FastAPI:
    app = FastAPI(title="radsync", version=radsync.__version__, docs_url="/api/docs", openapi_url="/api/openapi.json")

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """200 once every listener accepts connections, with where each one listens; 503 before."""
        listeners = container.listeners
        body: dict[str, Any] = {
            "status": "ok" if listeners.all_up() else "starting",
            "version": radsync.__version__,
            "ae_title": container.settings.ae_title,
            "listeners": listeners.describe(),
        }
        return JSONResponse(body, status_code=200 if listeners.all_up() else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(ops_router(container.engines.read))
    app.include_router(studies_router(container.engines, container.studies, outbound=container.outbound))
    app.include_router(reports_router(container.engines, container.outbound, container.zone))
    app.include_router(outbox_router(container.outbox.operations))
    app.include_router(timeline_router(container.engines.read))
    app.include_router(patients_router(container.engines, container.orders.patients, container.outbound))
    install_error_handlers(app)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, _exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "internal error", "detail": "see the server log"}, status_code=500)

    return app
