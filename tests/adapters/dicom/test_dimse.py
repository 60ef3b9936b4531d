"""The fast pending C-FIND response path sends what pynetdicom itself would, byte for byte."""

from __future__ import annotations

import queue
from io import BytesIO
from typing import Any

import pytest
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import ModalityWorklistInformationFind

from radsync.adapters.dicom.dimse import FindResponseProvider, find_response_command


def pending(status: int = 0xFF00, message_id: int = 7, identifier: bytes = b"\x10\x00\x10\x00\x04\x00\x00\x00DOE ",
            **extra: Any) -> C_FIND:
    rsp = C_FIND()
    rsp.MessageID = message_id
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = ModalityWorklistInformationFind
    rsp.Status = status
    rsp.Identifier = BytesIO(identifier)
    for key, value in extra.items():
        setattr(rsp, key, value)
    return rsp


@pytest.mark.parametrize("status", [0xFF00, 0xFF01])
@pytest.mark.parametrize("message_id", [1, 65535])
def test_command_set_equals_pynetdicoms(status: int, message_id: int) -> None:
    message = C_FIND_RSP()
    message.primitive_to_message(pending(status, message_id))
    assert find_response_command(ModalityWorklistInformationFind, message_id, status) == encode(
        message.command_set, True, True
    )


class FakeDul:
    def __init__(self) -> None:
        self.sent: list[P_DATA] = []
        self.to_provider_queue: queue.Queue[P_DATA] = queue.Queue()  # stays empty: nothing waits for the wire

    def send_pdu(self, primitive: P_DATA) -> None:
        self.sent.append(primitive)

    def is_alive(self) -> bool:
        return True


class FakeAssoc:
    def __init__(self, peer_max_pdu: int, handlers: list[Any] | None = None) -> None:
        self.dul = FakeDul()
        self.is_requestor = False
        self.requestor = type("Requestor", (), {"maximum_length": peer_max_pdu})()
        self._handlers = handlers or []

    def get_handlers(self, event: Any) -> list[Any]:
        return self._handlers


def _pdvs(sent: list[P_DATA]) -> list[tuple[int, bytes]]:
    return [pdv for pdata in sent for pdv in pdata.presentation_data_value_list]


def test_pending_answer_is_one_pdu_with_the_same_pdvs_pynetdicom_sends() -> None:
    fast = FakeAssoc(16000)
    FindResponseProvider(fast).send_msg(pending(), 3)  # type: ignore[arg-type]
    assert len(fast.dul.sent) == 1

    slow = FakeAssoc(16000)
    message = C_FIND_RSP()
    message.primitive_to_message(pending())
    slow.dul.sent.extend(message.encode_msg(3, 16000))
    assert _pdvs(fast.dul.sent) == _pdvs(slow.dul.sent)


@pytest.mark.parametrize(
    ("assoc", "rsp"),
    [
        (FakeAssoc(16000), pending(status=0x0000, identifier=b"")),  # final success
        (FakeAssoc(16000), pending(status=0xA700, ErrorComment="too many")),  # failure with a comment
        (FakeAssoc(40), pending()),  # does not fit the peer's PDU: needs fragmenting
    ],
    ids=["final", "failure", "fragmenting"],
)
def test_everything_else_takes_pynetdicoms_path(assoc: FakeAssoc, rsp: C_FIND) -> None:
    if rsp.Status == 0x0000:
        rsp.Identifier = None
    FindResponseProvider(assoc).send_msg(rsp, 1)  # type: ignore[arg-type]
    message = C_FIND_RSP()
    message.primitive_to_message(rsp)
    expected = list(message.encode_msg(1, assoc.requestor.maximum_length))
    assert _pdvs(assoc.dul.sent) == _pdvs(expected)


def test_an_observed_association_takes_pynetdicoms_path() -> None:
    """Someone bound EVT_DIMSE_SENT: the message must go through pynetdicom so the event fires."""
    provider = FindResponseProvider(FakeAssoc(16000, handlers=[(print, None)]))  # type: ignore[arg-type]
    assert provider._fast_path(pending(), 1) is False


def test_pending_responses_wait_while_the_wire_queue_is_full() -> None:
    """A handler may not queue a whole answer ahead of the wire: it waits until the DUL drains below the bound."""
    import threading
    import time

    from radsync.adapters.dicom.dimse import MAX_QUEUED_PDUS

    assoc = FakeAssoc(16000)
    provider = FindResponseProvider(assoc)
    for _ in range(MAX_QUEUED_PDUS):
        assoc.dul.to_provider_queue.put(P_DATA())
    done = threading.Event()
    sender = threading.Thread(target=lambda: (provider.send_msg(pending(), 1), done.set()))
    sender.start()
    time.sleep(0.05)
    assert not done.is_set(), "the response must wait while the queue is full"
    assoc.dul.to_provider_queue.get()
    assert done.wait(2), "the response goes out once the queue drains"
    sender.join(2)


def test_the_reactor_serves_a_message_when_it_arrives_and_polls_fast_only_while_messages_flow() -> None:
    """No 1 ms sleeps per C-STORE while messages flow; pynetdicom's idle sleep again once they stop."""
    import threading
    import time

    from radsync.adapters.dicom.dimse import ACTIVE_LOOP_DELAY, ACTIVE_SECONDS, IDLE_LOOP_DELAY

    assoc = FakeAssoc(16000)
    assoc.dul._run_loop_delay = IDLE_LOOP_DELAY  # type: ignore[attr-defined]
    provider = FindResponseProvider(assoc)  # type: ignore[arg-type]
    threading.Timer(0.002, lambda: provider.msg_queue.put((1, "message"))).start()  # type: ignore[arg-type]
    assert provider.get_msg(block=False) == (1, "message")
    assert assoc.dul._run_loop_delay == ACTIVE_LOOP_DELAY  # type: ignore[attr-defined]
    time.sleep(ACTIVE_SECONDS)
    assert provider.get_msg(block=False) == (None, None)
    assert assoc.dul._run_loop_delay == IDLE_LOOP_DELAY  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", [0x0000, 0xB000, 0xA700])
@pytest.mark.parametrize("uids", [("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4"), ("1.2.840.10008.5.1.4.1.1.7", "1.2.34")])
def test_store_response_command_set_equals_pynetdicoms(status: int, uids: tuple[str, str]) -> None:
    from pynetdicom.dimse_messages import C_STORE_RSP
    from pynetdicom.dimse_primitives import C_STORE

    from radsync.adapters.dicom.dimse import store_response_command

    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 42
    rsp.AffectedSOPClassUID, rsp.AffectedSOPInstanceUID = uids
    rsp.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    assert store_response_command(uids[0], 42, status, uids[1]) == encode(message.command_set, True, True)
    assoc = FakeAssoc(16000)
    FindResponseProvider(assoc).send_msg(rsp, 5)  # type: ignore[arg-type]
    (pdata,) = assoc.dul.sent
    assert pdata.presentation_data_value_list == [(5, b"\x03" + encode(message.command_set, True, True))]
    rsp.ErrorComment = "with a comment: pynetdicom's path"
    assert FindResponseProvider(assoc)._store_response(rsp, 5) is False


def test_the_waiting_dul_serves_each_message_at_once_and_releases_promptly() -> None:
    """The accepted association's DUL waits for its socket or a queued PDU (no polling, no 50 ms waits per turn)."""
    import time

    from pynetdicom import AE, evt
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    from radsync.adapters.dicom.connection import tune_connection
    from radsync.adapters.dicom.dimse import DUL_WAIT_SECONDS, WaitingDUL

    duls: list[Any] = []

    def on_echo(event: Any) -> int:
        duls.append(event.assoc.dul)
        return 0x0000

    scp = AE(ae_title="SCP")
    scp.add_supported_context(Verification)
    server = scp.start_server(("127.0.0.1", 0), block=False,
                              evt_handlers=[(evt.EVT_CONN_OPEN, tune_connection), (evt.EVT_C_ECHO, on_echo)])
    try:
        scu = AE(ae_title="SCU")
        scu.add_requested_context(Verification)
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="SCP",
                              evt_handlers=[(evt.EVT_CONN_OPEN, tune_connection)])
        assert assoc.is_established
        assert type(assoc.dul) is not WaitingDUL  # a requestor's DUL is already running when tuned: left as is
        started = time.monotonic()
        for _ in range(100):
            assert assoc.send_c_echo().Status == 0x0000
        elapsed = time.monotonic() - started
        assert elapsed < 100 * DUL_WAIT_SECONDS / 2, f"{elapsed:.2f} s: a turn waited out the DUL's timeout"
        time.sleep(0.2)  # idle: the DUL blocks in select; a message after that is still served at once
        assert assoc.send_c_echo().Status == 0x0000
        started = time.monotonic()
        assoc.release()
        assert assoc.is_released
        assert time.monotonic() - started < 1.0
    finally:
        server.shutdown()
    assert duls and all(type(dul) is WaitingDUL for dul in duls)
    import gc
    import os

    wake = duls[0]._wake_r
    duls.clear()
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(wake)  # the wake-up pipe is closed once the association is gone


def test_the_pdu_read_returns_what_pynetdicoms_returns() -> None:
    """All ``nr_bytes`` across several segments, or what arrived before the peer closed."""
    import socket
    import threading
    from types import SimpleNamespace

    from radsync.adapters.dicom.dimse import _recv_into_one_buffer

    ours, theirs = socket.socketpair()
    payload = bytes(range(256)) * 1024  # 256 KiB, more than one socket buffer

    def send() -> None:
        theirs.sendall(payload[:100_000])
        theirs.sendall(payload[100_000:])
        theirs.sendall(b"tail")
        theirs.close()

    sender = threading.Thread(target=send)
    sender.start()
    transport = SimpleNamespace(socket=ours)
    assert _recv_into_one_buffer(transport, len(payload)) == payload  # type: ignore[arg-type]
    assert _recv_into_one_buffer(transport, 10) == b"tail"  # type: ignore[arg-type]
    assert isinstance(_recv_into_one_buffer(transport, 6), bytearray)  # type: ignore[arg-type]
    sender.join(2)
    ours.close()
