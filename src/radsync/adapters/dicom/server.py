"""The DICOM listener: one pynetdicom AE serving radsync's SCPs (Verification, Modality Worklist; later MPPS,
Storage, Query/Retrieve), bound to ``settings.host:dicom_port`` under ``settings.ae_title``.

Composition root usage::

    server = DicomServer(settings, engines)
    port = server.start()      # non-blocking; port 0 binds an ephemeral port and returns it
    ...
    server.stop()              # aborts open associations, closes the socket

Association policy: any calling AE title is accepted (its charset comes from ``[[stations]]``); the called AE title
must be radsync's, so a modality configured for another archive is rejected with reason 7 ("called AE title not
recognised") instead of getting answers meant for someone else. Rejections are logged with peer address and both
AE titles.

Per connection (EVT_CONN_OPEN, before the association thread starts) radsync tunes pynetdicom, because each
answered MWL item costs a request/response turn on the wire (PERF-NOTES.md):

* TCP_NODELAY on the accepted socket: pynetdicom never sets it, and Nagle's algorithm then delays small PDUs by
  up to ~40 ms per turn;
* the standard debug-logging handlers pynetdicom binds to every PDU and DIMSE message are unbound unless the
  ``pynetdicom`` logger is at DEBUG: they format several log lines per C-FIND response even when nobody logs them;
* the association's DIMSE provider is ``dimse.FindResponseProvider``, which sends a pending C-FIND response as one
  PDU with a command set encoded from the standard instead of a pydicom Dataset (see dimse.py).

The same provider keeps pynetdicom's reactors from polling while messages flow (it lowers the DUL's idle sleep,
``_run_loop_delay``, while messages arrive and restores pynetdicom's 1 ms when idle): it made no difference to
MWL answers once they go out as one PDU each, but one C-STORE after another on one association waited ~3 ms per
instance in those sleeps (dimse.py).

Process-wide, ``pynetdicom._config.LOG_REQUEST_IDENTIFIERS`` / ``LOG_RESPONSE_IDENTIFIERS`` are switched off: the
first logs every query identifier (names, IDs: PHI) at INFO, the second pretty-prints every answer (decoding it
again) even when the log level would drop the lines. Both are documented pynetdicom settings, not patches. The
``pynetdicom`` logger is set to WARNING unless the logging setup gave it a level: it logs one INFO line per C-FIND
response (~15 % of a large answer's time); radsync logs one line per query instead.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import TYPE_CHECKING, Any

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, _config, evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.transport import ThreadedAssociationServer

from radsync.adapters.dicom.dimse import FindResponseProvider
from radsync.adapters.dicom.echo import verification_service
from radsync.adapters.dicom.imaging import image_services
from radsync.adapters.dicom.mwl import WorklistPolicy, worklist_service
from radsync.adapters.dicom.qr import query_retrieve_services
from radsync.adapters.dicom.service import DicomService
from radsync.adapters.persistence.engine import Engines
from radsync.adapters.persistence.worklist import SqlWorklistReader
from radsync.config import Settings

if TYPE_CHECKING:
    from radsync.bootstrap import Container

LOGGER = logging.getLogger(__name__)

# Every transfer syntax a query peer may propose; Implicit VR Little Endian alone must work (FIELD-NOTES H.59).
TRANSFER_SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                     ExplicitVRBigEndian]
# The largest PDU radsync accepts. Peers' own limits (e.g. 16000) govern what radsync sends them.
MAX_PDU_LENGTH = 128 * 1024

_STANDARD_LOG_HANDLERS = (
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
)


class DicomServer:
    """radsync's DICOM SCPs on one AE; ``start`` returns the bound port, ``stop`` shuts it all down."""

    def __init__(
        self, settings: Settings, engines: Engines, container: Container | None = None, *, reuse_port: bool = False
    ) -> None:
        self._settings = settings
        self._reuse_port = reuse_port  # several processes share the port (workers.py)
        self.services: list[DicomService] = [
            verification_service(),
            worklist_service(SqlWorklistReader(engines.read), WorklistPolicy.from_settings(settings)),
            *(image_services(container) if container is not None else ()),
        ]
        self.services += query_retrieve_services(settings, engines, self.services, container)
        self._ae: AE | None = None
        self._server: ThreadedAssociationServer | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int | None:
        return None if self._server is None else int(self._server.server_address[1])

    def start(self) -> int:
        """Bind and serve in background threads; return the bound port."""
        with self._lock:
            if self._server is not None:
                return int(self._server.server_address[1])
            _config.LOG_REQUEST_IDENTIFIERS = False
            _config.LOG_RESPONSE_IDENTIFIERS = False
            pynetdicom_logger = logging.getLogger("pynetdicom")
            if pynetdicom_logger.level == logging.NOTSET:
                pynetdicom_logger.setLevel(logging.WARNING)
            ae = AE(ae_title=self._settings.ae_title)
            ae.maximum_pdu_size = MAX_PDU_LENGTH
            ae.require_called_aet = True
            handlers: list[Any] = [
                (evt.EVT_CONN_OPEN, tune_connection),
                (evt.EVT_REJECTED, _log_rejection),
            ]
            for service in self.services:
                for sop_class in service.sop_classes:
                    ae.add_supported_context(sop_class, list(service.transfer_syntaxes) or TRANSFER_SYNTAXES)
                handlers.extend(service.handlers)
            address = (self._settings.host, self._settings.dicom_port)
            server: ThreadedAssociationServer | None
            if self._reuse_port:
                server = _start_reuse_port_server(ae, address, handlers)
            else:
                server = ae.start_server(address, block=False, evt_handlers=handlers)
            assert server is not None
            self._ae, self._server = ae, server
            port = int(server.server_address[1])
            LOGGER.info("DICOM listening on %s:%d as %s (%s)", self._settings.host, port, self._settings.ae_title,
                        ", ".join(s.name for s in self.services))
            return port

    def stop(self) -> None:
        """Abort open associations and close the listening socket; safe to call twice."""
        with self._lock:
            ae, self._ae, self._server = self._ae, None, None
        if ae is not None:
            ae.shutdown()
            LOGGER.info("DICOM listener stopped")


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


def _log_rejection(event: Any) -> None:
    primitive = event.assoc.requestor.primitive
    LOGGER.warning(
        "DICOM association from %s rejected: calling AE %r, called AE %r (radsync is %r)",
        event.assoc.requestor.address,
        primitive.calling_ae_title if primitive else "?",
        primitive.called_ae_title if primitive else "?",
        event.assoc.acceptor.ae_title,
    )


class ReusePortAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with SO_REUSEPORT set before bind: the kernel spreads new connections over
    every process bound to the port (Linux), so each receiving process runs its own GIL (workers.py)."""

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def _start_reuse_port_server(ae: AE, address: tuple[str, int], handlers: list[Any]) -> ThreadedAssociationServer:
    """``AE.start_server(block=False)`` with the server class above (pynetdicom's own non-blocking path)."""
    server = ae.make_server(address, evt_handlers=handlers, server_class=ReusePortAssociationServer)
    threading.Thread(target=server.serve_forever, name="DicomAcceptor", daemon=True).start()
    ae._servers.append(server)  # as start_server does, so ae.shutdown() stops it
    return server
