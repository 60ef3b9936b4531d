"""Domain errors and bad requests -> HTTP status + one JSON error body, translated in one table.

Every error answer of the operator API has the same shape, so scripts can branch on ``error``::

    {"error": "unknown_study", "detail": "no such study", "field": "study.study_instance_uid"}

``error`` is a stable code, ``detail`` a human sentence (no patient data), ``field`` names the offending datum
(domain words for domain errors, ``body.reason`` style for request validation), or ``null``.
The most specific class wins: the table is searched along the exception's MRO (as httpx's
``map_httpcore_exceptions`` does), so a subclass may get its own row later without touching the handlers.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from radsync.domain.errors import (
    DomainError,
    IdentityConflict,
    InvalidTransition,
    InvalidValue,
    MissingValue,
    UnknownOrder,
    UnknownPatient,
)
from radsync.domain.study import UnknownStudy

# DomainError subclass -> (HTTP status, stable error code). UnknownOrder is 404: the order named does not exist
# (or, on unlink, is not one the study is linked to -- there is no such link to remove).
ERROR_TABLE: dict[type[DomainError], tuple[int, str]] = {
    UnknownStudy: (404, "unknown_study"),
    UnknownOrder: (404, "unknown_order"),
    UnknownPatient: (404, "unknown_patient"),
    IdentityConflict: (409, "identity_conflict"),
    InvalidTransition: (409, "invalid_transition"),
    InvalidValue: (422, "invalid_value"),
    MissingValue: (422, "missing_value"),
    DomainError: (409, "refused"),
}

INVALID_REQUEST = "invalid_request"


def error_body(code: str, detail: str, field: str | None = None) -> dict[str, Any]:
    """The one JSON error shape of the operator API."""
    return {"error": code, "detail": detail, "field": field or None}


def status_for(exc: DomainError) -> tuple[int, str]:
    """The table row for ``exc``: its own class first, then its bases."""
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return ERROR_TABLE[DomainError]


def domain_error_response(exc: DomainError) -> JSONResponse:
    status, code = status_for(exc)
    return JSONResponse(error_body(code, exc.message, exc.field), status_code=status)


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    """422 naming the first offending field (``body.reason``, ``query.limit``) and every problem found."""
    errors = list(exc.errors())
    first = errors[0] if errors else {}
    location = ".".join(str(part) for part in first.get("loc", ()))
    detail = "; ".join(_describe(e) for e in errors) or "invalid request"
    return JSONResponse(error_body(INVALID_REQUEST, detail, location), status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    """Register the translations on ``app`` (called once by ``create_app``)."""

    async def on_domain_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        return domain_error_response(exc)

    async def on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return validation_error_response(exc)

    app.add_exception_handler(DomainError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()))
    message = str(error.get("msg", "invalid"))
    return f"{where}: {message}" if where else message
