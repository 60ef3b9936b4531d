"""Per-connection tuning of every radsync DICOM association, accepted or requested (EVT_CONN_OPEN).

Why each setting exists is told in server.py's module docstring: TCP_NODELAY (pynetdicom never sets it; Nagle +
delayed ACK cost up to ~40 ms per turn), pynetdicom's standard logging handlers unbound unless its logger is at
DEBUG, and the DIMSE provider of dimse.py (one-PDU C-FIND responses, no polling delay while messages flow). The
Q/R C-MOVE sub-association to the Move Destination gets the same tuning (qr_retrieve.py).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from pynetdicom import evt
from pynetdicom._handlers import (  # pynetdicom's own logging handlers, to unbind them
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)

from radsync.adapters.dicom.dimse import FindResponseProvider, wait_for_work

_STANDARD_LOG_HANDLERS = (
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
)


def tune_connection(event: Any) -> None:
    """EVT_CONN_OPEN: per-association socket and reactor settings (see the module docstring for why)."""
    assoc = event.assoc
    sock = getattr(assoc.dul.socket, "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not a TCP socket (tests may use other transports)
            pass
    if not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):  # keep them for whoever is debugging
        for event_type, handler in _STANDARD_LOG_HANDLERS:
            if handler in [h for h, _ in assoc.get_handlers(event_type)]:
                assoc.unbind(event_type, handler)
    assoc.dimse = FindResponseProvider(assoc)
    wait_for_work(assoc.dul)
