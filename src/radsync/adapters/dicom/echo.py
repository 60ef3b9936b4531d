"""Verification SCP (PS3.4 Annex A): C-ECHO, the DICOM "ping" every peer uses to test its configuration."""

from __future__ import annotations

from typing import Any

from pynetdicom import evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated at import

from radsync.adapters.dicom.service import DicomService
from radsync.adapters.dicom.status import Status


def handle_echo(event: Any) -> Status:
    """Answer a C-ECHO: success whenever the association is up (PS3.4 A.4)."""
    return Status.SUCCESS


def verification_service() -> DicomService:
    return DicomService(name="Verification", sop_classes=(Verification,), handlers=((evt.EVT_C_ECHO, handle_echo),))
