"""The seam between the DICOM server and its services: what each SCP module contributes.

A service is the SOP classes it accepts and the pynetdicom event handlers that answer them. ``DicomServer`` adds
the presentation contexts and binds the handlers; adding MPPS, Storage or Query/Retrieve is one more module that
returns a ``DicomService`` (echo.py and mwl.py are the pattern), nothing in server.py changes shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynetdicom.events import EventType


@dataclass(frozen=True, slots=True)
class DicomService:
    """One DICOM service class radsync provides as SCP."""

    name: str
    sop_classes: tuple[str, ...]
    handlers: tuple[tuple[EventType, Callable[..., Any]], ...]
    # Transfer syntaxes for these SOP classes; empty = the server's default set (uncompressed + deflate).
    # Storage adds the compressed ones (PS3.5 A.4), which it stores as received.
    transfer_syntaxes: tuple[str, ...] = ()
