"""C-FIND pending responses on the wire: one command set and one identifier in one P-DATA-TF PDU.

Why: after the identifier itself, most of a worklist answer's cost is pynetdicom turning each C-FIND response into
a DIMSE message: it builds the command set as a pydicom Dataset keyword by keyword, encodes it twice (once to
measure the group length) and sends the command and the identifier as two PDUs, each through the DUL reactor's
queue and its own ``send()``. For a 330-item answer that is ~0.5 ms per item (measured; PERF-NOTES.md).

``FindResponseProvider`` is pynetdicom's ``DIMSEServiceProvider`` with two fast paths. A *pending* C-FIND response
(status 0xFF00/0xFF01, an identifier, no Error Comment or Offending Element) is framed here from the standard --
the command set of PS3.7 Table 9.3-2 in Implicit VR Little Endian (PS3.7 §6.3.1), both message parts as PDVs of
one P-DATA-TF PDU (PS3.8 §9.3.5 allows several PDVs per PDU; message control header PS3.8 Annex E.2) -- and handed
to the same DUL ``send_pdu``. A plain C-STORE response (a status, no Error Comment or Offending Element) gets its
command set (Table 9.3-1's response fields) framed the same way: it goes out once per stored instance. Everything else (requests, final responses, failures, messages larger than the peer's
maximum PDU length, associations with EVT_DIMSE_SENT handlers bound) takes pynetdicom's own path unchanged. It is
installed per association by ``connection.tune_connection``; nothing in pynetdicom is patched, other services and other
AEs in the process are untouched. The tests check the bytes against pynetdicom's own encoding.

**Reactor latency.** pynetdicom polls: the association reactor sleeps 1 ms between looks at the DIMSE queue, and
the DUL reactor sleeps ``_run_loop_delay`` (1 ms) whenever a loop found nothing to do, both for incoming PDUs and
for the response the handler queued. On one association every C-STORE waits out ~3 such sleeps: a no-op C-STORE
handler answered 190 x 40 KB instances/s, Orthanc stores 190/s (measured side by side). So while messages flow,
``get_msg`` (the reactor's non-blocking look) waits on the queue for up to ``REACTOR_WAIT_SECONDS`` -- a message
is served the moment it is decoded -- and the DUL's idle sleep is ``ACTIVE_LOOP_DELAY``; after
``ACTIVE_SECONDS`` without a message the DUL goes back to pynetdicom's 1 ms, so an idle association costs no more
CPU than before (less: the reactor loop runs every ~6 ms instead of 1). The no-op handler then answers ~290/s.
A thread that pauses the reactor (to send a request and read its response) may see it paused while ``get_msg``
still waits (pynetdicom's ``_is_paused`` flag is set before its checkpoint is looked at): so ``get_msg`` waits for
a message without taking it, and leaves it to that thread when the checkpoint was cleared meanwhile.

**The DUL reactor waits instead of polling** on accepted associations (``WaitingDUL``): pynetdicom's DUL loop
looks at its socket every ``_run_loop_delay``; four associations woke ~40,000 times a second between them, ~0.6 ms
of CPU per 40 KB C-STORE on 2 cores. It now blocks in ``select`` on the socket and a wake-up pipe.
"""

from __future__ import annotations

import os
import queue
import select
import struct
import threading
import time
import types
import weakref
from collections import deque
from typing import Any

from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket

from radsync.adapters.dicom.status import Status

_C_FIND_RSP = 0x8020
_C_STORE_RSP = 0x8001
_DATA_SET_PRESENT = 0x0001
_NO_DATA_SET = 0x0101
_PENDING = frozenset({int(Status.PENDING), int(Status.PENDING_WARNING)})
# Message control headers (PS3.8 Annex E.2): bit 0 command (1) / data set (0), bit 1 last fragment.
_LAST_COMMAND_FRAGMENT = b"\x03"
_LAST_DATA_FRAGMENT = b"\x02"
_PDV_OVERHEAD = 6  # item length (4), presentation context ID (1), message control header (1)

_UL = struct.Struct("<HHLL")  # tag, length 4, value
_US = struct.Struct("<HHLH")  # tag, length 2, value
_HEADER = struct.Struct("<HHL")

# Pending responses queued for the wire before the handler waits. Why: pynetdicom's DUL queue is unbounded, so a
# fast handler would queue a whole large answer before the peer's C-CANCEL could even be read; a short queue keeps
# memory bounded and lets the handler see the cancel (PS3.4 C.4.1.2.3 / K.4.1.2.3) after a few responses.
MAX_QUEUED_PDUS = 8
_QUEUE_POLL_SECONDS = 0.0002

# Reactor latency (see the module docstring).
REACTOR_WAIT_SECONDS = 0.005
ACTIVE_LOOP_DELAY = 0.0001
IDLE_LOOP_DELAY = 0.001  # pynetdicom's own default
ACTIVE_SECONDS = 0.05
# The waiting DUL (WaitingDUL): the longest it blocks with nothing to do, so its timers (ARTIM) are still looked at.
DUL_WAIT_SECONDS = 0.05


def find_response_command(affected_sop_class_uid: str, message_id: int, status: int) -> bytes:
    """The encoded command set of a pending C-FIND-RSP carrying an identifier (PS3.7 Table 9.3-2)."""
    uid = affected_sop_class_uid.encode("ascii")
    if len(uid) % 2:
        uid += b"\x00"
    body = (
        _HEADER.pack(0x0000, 0x0002, len(uid)) + uid
        + _US.pack(0x0000, 0x0100, 2, _C_FIND_RSP)
        + _US.pack(0x0000, 0x0120, 2, message_id)
        + _US.pack(0x0000, 0x0800, 2, _DATA_SET_PRESENT)
        + _US.pack(0x0000, 0x0900, 2, status)
    )
    return _UL.pack(0x0000, 0x0000, 4, len(body)) + body


def store_response_command(
    affected_sop_class_uid: str, message_id: int, status: int, affected_sop_instance_uid: str
) -> bytes:
    """The encoded command set of a C-STORE-RSP without Error Comment or Offending Element (PS3.7 Table 9.3-2)."""
    body = (
        _ui(0x0002, affected_sop_class_uid)
        + _US.pack(0x0000, 0x0100, 2, _C_STORE_RSP)
        + _US.pack(0x0000, 0x0120, 2, message_id)
        + _US.pack(0x0000, 0x0800, 2, _NO_DATA_SET)
        + _US.pack(0x0000, 0x0900, 2, status)
        + _ui(0x1000, affected_sop_instance_uid)
    )
    return _UL.pack(0x0000, 0x0000, 4, len(body)) + body


def _ui(element: int, uid: str) -> bytes:
    raw = uid.encode("ascii")
    if len(raw) % 2:
        raw += b"\x00"
    return _HEADER.pack(0x0000, element, len(raw)) + raw


class FindResponseProvider(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider with a fast path for pending C-FIND responses and a reactor that does not poll
    while messages flow (see the module docstring)."""

    _last_message = 0.0

    def __init__(self, assoc: Any) -> None:
        super().__init__(assoc)
        self._responses = 0  # responses queued for the wire so far
        self._answered: deque[tuple[int, str, int]] = deque(maxlen=64)  # (sequence, primitive, Message ID)
        self._answered_changed = threading.Condition()

    def response_mark(self) -> int:
        """The number of responses queued so far: pass it to ``wait_until_answered`` (from the request's handler)."""
        with self._answered_changed:
            return self._responses

    def wait_until_answered(self, primitive: str, message_id: int, after: int, timeout: float) -> bool:
        """Block until a ``primitive`` response (``"N_ACTION"``) to ``message_id``, queued after the ``after`` mark,
        is queued for the wire (True), or ``timeout`` passes.

        For a thread that sends a request of its own on this association once a handler has returned (the Storage
        Commitment report after the N-ACTION response): the DUL sends PDUs in the order they were queued, so what it
        queues after this returns follows the response on the wire. pynetdicom's reactor pause does not ensure that:
        its ``_is_paused`` flag was seen set while the N-ACTION handler still ran, and the report then went out
        first or interleaved with the response. Message IDs repeat across requests, hence the mark.
        """
        deadline = time.monotonic() + timeout
        with self._answered_changed:
            while not any(seq > after and kind == primitive and answered == message_id
                          for seq, kind, answered in self._answered):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._answered_changed.wait(remaining)
        return True

    def get_msg(self, block: bool = False) -> Any:
        if block:  # an SCU-side wait for a response: pynetdicom's own blocking get, with its DIMSE timeout
            return super().get_msg(block)
        messages = self.msg_queue
        with messages.not_empty:  # wait for a message without taking it (woken by the DUL's put)
            if not messages.queue:
                messages.not_empty.wait(REACTOR_WAIT_SECONDS)
        checkpoint = getattr(self.assoc, "_reactor_checkpoint", None)
        if checkpoint is not None and not checkpoint.is_set():
            # Another thread paused the reactor while it waited (to send a request and read its response, e.g. the
            # Storage Commitment report): what arrived is that thread's to take, as with pynetdicom's own look.
            return None, None
        try:
            item = messages.get_nowait()
        except queue.Empty:
            if time.monotonic() - self._last_message > ACTIVE_SECONDS:
                self._set_loop_delay(IDLE_LOOP_DELAY)
            return None, None
        self._last_message = time.monotonic()
        self._set_loop_delay(ACTIVE_LOOP_DELAY)
        return item

    def _set_loop_delay(self, seconds: float) -> None:
        dul = self.dul
        if isinstance(dul, WaitingDUL):
            return  # it does not poll: it waits for the socket or a primitive to send
        if getattr(dul, "_run_loop_delay", None) not in (None, seconds):
            dul._run_loop_delay = seconds

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if isinstance(primitive, C_FIND) and primitive.Status in _PENDING:
            self._wait_for_room()
        if not (self._fast_path(primitive, context_id) or self._store_response(primitive, context_id)):
            super().send_msg(primitive, context_id)
        answered = getattr(primitive, "MessageIDBeingRespondedTo", None)
        if answered is not None:
            with self._answered_changed:
                self._responses += 1
                self._answered.append((self._responses, type(primitive).__name__, int(answered)))
                self._answered_changed.notify_all()

    def _store_response(self, primitive: Any, context_id: int) -> bool:
        """A plain C-STORE-RSP as one PDU with a command set framed here (~0.3 ms less than pynetdicom's path)."""
        if (
            not isinstance(primitive, C_STORE)
            or primitive.MessageIDBeingRespondedTo is None
            or primitive.Status is None
            or primitive.ErrorComment is not None
            or primitive.OffendingElement is not None
            or not primitive.AffectedSOPClassUID
            or not primitive.AffectedSOPInstanceUID
            or self.assoc.get_handlers(evt.EVT_DIMSE_SENT)
        ):
            return False
        command = store_response_command(
            str(primitive.AffectedSOPClassUID),
            int(primitive.MessageIDBeingRespondedTo),
            int(primitive.Status),
            str(primitive.AffectedSOPInstanceUID),
        )
        limit = self.maximum_pdu_size
        if limit and len(command) + _PDV_OVERHEAD > limit:
            return False
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, _LAST_COMMAND_FRAGMENT + command))
        self.dul.send_pdu(pdata)
        return True

    def _wait_for_room(self) -> None:
        """Block while the DUL already holds ``MAX_QUEUED_PDUS`` PDUs to send (see MAX_QUEUED_PDUS)."""
        queue = self.dul.to_provider_queue
        while queue.qsize() >= MAX_QUEUED_PDUS and self.dul.is_alive():
            time.sleep(_QUEUE_POLL_SECONDS)

    def _fast_path(self, primitive: Any, context_id: int) -> bool:
        if (
            not isinstance(primitive, C_FIND)
            or primitive.MessageIDBeingRespondedTo is None
            or primitive.Status not in _PENDING
            or primitive.Identifier is None
            or primitive.ErrorComment is not None
            or primitive.OffendingElement is not None
            or primitive.AffectedSOPClassUID is None
            or self.assoc.get_handlers(evt.EVT_DIMSE_SENT)
        ):
            return False
        command = find_response_command(
            str(primitive.AffectedSOPClassUID), int(primitive.MessageIDBeingRespondedTo), int(primitive.Status)
        )
        identifier = primitive.Identifier.getvalue()
        limit = self.maximum_pdu_size
        if limit and len(command) + len(identifier) + 2 * _PDV_OVERHEAD > limit:
            return False  # needs fragmenting: pynetdicom's path does that
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, _LAST_COMMAND_FRAGMENT + command))
        pdata.presentation_data_value_list.append((context_id, _LAST_DATA_FRAGMENT + identifier))
        self.dul.send_pdu(pdata)
        return True


class WaitingDUL(DULServiceProvider):
    """pynetdicom's DUL reactor, waiting for work instead of polling for it (installed by ``wait_for_work``).

    pynetdicom's DUL loop looks at its socket with a zero-timeout ``select`` and, finding nothing, sleeps
    ``_run_loop_delay``: 1 ms as shipped (latency on every PDU), or 0.1 ms while messages flow (what
    ``FindResponseProvider`` did). Four associations then woke ~40,000 times a second between them, each wake a
    ``select`` and a GIL hand-off: ~0.6 ms of CPU per 40 KB C-STORE on 2 cores (measured with the receiving
    processes' CPU time during bench/cstore_ingest.py).
    Here, when it has nothing to do (no primitive to send, no event queued), the loop blocks in one ``select`` on
    the association's socket and a wake-up pipe; ``send_pdu`` and ``kill_dul`` write a byte to the pipe,
    so a response goes out the moment it is queued and a PDU is read the moment it arrives. The wait is
    at most ``DUL_WAIT_SECONDS`` so the ARTIM timer is still checked. Nothing else of pynetdicom's loop, state
    machine or PDU handling changes; without a connected socket it sleeps ``IDLE_LOOP_DELAY`` as pynetdicom does.
    """

    _wake_r: int | None = None  # a pipe: its read end is watched with the socket, its write end wakes the loop
    _wake_w: int | None = None

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        self._wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()

    def _is_transport_event(self) -> bool:
        self._wait_for_work()
        return super()._is_transport_event()

    def _wait_for_work(self) -> None:
        if not self.to_provider_queue.empty() or not self.event_queue.empty() or self._kill_thread:
            return
        wake = self._wake_r
        transport = self.socket
        sock = getattr(transport, "socket", None)
        watched: list[Any] = [wake] if wake is not None else []
        if (
            sock is not None
            and getattr(transport, "_is_connected", False)
            and self.state_machine.current_state != "Sta13"  # pynetdicom closes the socket there: no wait
            and not _has_pending_tls_data(sock)
        ):
            watched.append(sock)
            timeout = DUL_WAIT_SECONDS
        else:
            timeout = IDLE_LOOP_DELAY
        if wake is None:
            time.sleep(timeout if sock is None else 0)
            return
        try:
            ready, _, _ = select.select(watched, [], [], timeout)
        except (OSError, ValueError):  # the socket was closed meanwhile: pynetdicom's own check reports it
            return
        if wake in ready:
            try:
                while os.read(wake, 4096):
                    pass
            except (BlockingIOError, OSError):
                pass

    def _wake(self) -> None:
        wake = self._wake_w
        if wake is not None:
            try:
                os.write(wake, b"\x00")
            except (BlockingIOError, OSError):  # full (a wake-up is pending anyway) or closed (the loop ended)
                pass



def wait_for_work(dul: DULServiceProvider) -> None:
    """Make an accepted association's DUL a ``WaitingDUL`` before its thread starts (see ``WaitingDUL``).

    Only accepted associations (EVT_CONN_OPEN fires before their DUL starts): a requested one is tuned from inside
    its running DUL, and keeps pynetdicom's polling DUL (C-MOVE sub-associations, forwarding, reports: not the
    C-STORE intake this is for).
    """
    if isinstance(dul, WaitingDUL) or type(dul) is not DULServiceProvider or dul.is_alive():
        return  # already, a subclass this module does not know, or a requestor's running DUL
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    dul._wake_r, dul._wake_w = wake_r, wake_w  # type: ignore[attr-defined]
    # Closed when the DUL is collected, when nothing can write to it any more: its thread's target is pynetdicom's
    # bound run_reactor, so no override of it runs at the end, and closing earlier could let a late wake-up write
    # to a reused descriptor.
    weakref.finalize(dul, _close_all, wake_r, wake_w)
    dul.__class__ = WaitingDUL
    dul._run_loop_delay = 0  # type: ignore[attr-defined]
    transport = dul.socket
    if transport is not None and type(transport).recv is AssociationSocket.recv:
        transport.recv = types.MethodType(_recv_into_one_buffer, transport)  # type: ignore[method-assign]


def _recv_into_one_buffer(transport: AssociationSocket, nr_bytes: int) -> bytearray:
    """``AssociationSocket.recv`` reading straight into one buffer of the PDU's size.

    pynetdicom's reads 4,096 bytes at a time and appends each to a bytearray: 32 calls per 128 KiB PDU, ~58 us of
    CPU against ~14 us here (measured over a socketpair). Same contract: ``nr_bytes`` bytes, fewer only when the
    peer closed the connection; the socket's errors and timeout are pynetdicom's to handle, as before.
    """
    sock = transport.socket
    assert sock is not None
    buffer = bytearray(nr_bytes)
    got = 0
    with memoryview(buffer) as view:
        while got < nr_bytes:
            count = sock.recv_into(view[got:], nr_bytes - got)
            if not count:
                break
            got += count
    if got < nr_bytes:
        del buffer[got:]
    return buffer


def _close_all(*descriptors: int) -> None:
    for descriptor in descriptors:
        os.close(descriptor)


def _has_pending_tls_data(sock: Any) -> bool:
    pending = getattr(sock, "pending", None)  # an SSLSocket may hold decrypted bytes select cannot see
    return bool(pending()) if callable(pending) else False
