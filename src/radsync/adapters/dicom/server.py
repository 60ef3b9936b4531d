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

The same tuning keeps pynetdicom's reactors from polling: an accepted association's DUL is a ``dimse.WaitingDUL``
(it blocks in ``select`` on its socket and a wake-up pipe instead of looking every 0.1-1 ms, and reads each PDU
into one buffer), and the association reactor waits on its message queue. One C-STORE after another on one
association once waited ~3 ms per instance in pynetdicom's sleeps, and the polling of four associations cost
~0.6 ms of CPU per 40 KB instance (dimse.py).

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
import time
from typing import TYPE_CHECKING, Any

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, _config, evt
from pynetdicom.transport import ThreadedAssociationServer

from radsync.adapters.dicom.connection import tune_connection
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

class DicomServer:
    """radsync's DICOM SCPs on one AE; ``start`` returns the bound port, ``stop`` shuts it all down."""

    def __init__(
        self,
        settings: Settings,
        engines: Engines,
        container: Container | None = None,
        *,
        listener: socket.socket | None = None,
    ) -> None:
        self._settings = settings
        self._listener = listener  # a listening socket shared with other processes (workers.py)
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
            if self._listener is not None:
                server = _start_shared_listener_server(ae, self._listener, handlers)
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


def _log_rejection(event: Any) -> None:
    primitive = event.assoc.requestor.primitive
    LOGGER.warning(
        "DICOM association from %s rejected: calling AE %r, called AE %r (radsync is %r)",
        event.assoc.requestor.address,
        primitive.calling_ae_title if primitive else "?",
        primitive.called_ae_title if primitive else "?",
        event.assoc.acceptor.ae_title,
    )


ACCEPT_DELAY_PER_ASSOCIATION = 0.002
RECENT_ACCEPT_SECONDS = 0.1


class SharedListenerAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server on a listening socket that other processes accept from too (workers.py).

    The socket is non-blocking: every process waiting in ``select`` wakes on a new connection and the first to
    ``accept`` takes it (the others get EAGAIN and wait again). A process waits ``ACCEPT_DELAY_PER_ASSOCIATION``
    per association it already serves before trying, so new associations go to the least busy process (SO_REUSEPORT
    hashes the addresses instead: 4 associations on 2 processes were split 3:1 in three rounds of three).
    Closing only closes this process's descriptor: a ``shutdown()`` of the socket would stop every process's
    listener.
    """

    listener: socket.socket
    _accepted_at = 0.0

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        # An association accepted a moment ago may not have its thread yet: count it as busy too.
        busy = len(self.ae.active_associations) + (time.monotonic() - self._accepted_at < RECENT_ACCEPT_SECONDS)
        if busy:
            time.sleep(ACCEPT_DELAY_PER_ASSOCIATION * busy)
        request = super().get_request()
        self._accepted_at = time.monotonic()
        return request

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.close()  # the one socketserver made; never bound
        self.socket = self.listener
        self.server_address = self.listener.getsockname()

    def server_activate(self) -> None:
        pass  # already listening

    def server_close(self) -> None:
        assert self.socket is not None
        self.socket.close()


def _start_shared_listener_server(ae: AE, listener: socket.socket, handlers: list[Any]) -> ThreadedAssociationServer:
    """``AE.start_server(block=False)`` on the shared socket (pynetdicom's own non-blocking path)."""
    listener.setblocking(False)
    server_class = type("SharedListener", (SharedListenerAssociationServer,), {"listener": listener})
    server = ae.make_server(listener.getsockname()[:2], evt_handlers=handlers, server_class=server_class)
    threading.Thread(target=server.serve_forever, name="DicomAcceptor", daemon=True).start()
    ae._servers.append(server)
    return server
