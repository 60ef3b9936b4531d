"""The real Hl7Intake + Hl7Server on a free port, fed by python-hl7's MLLPClient, on SQLite and PostgreSQL.

What a RIS sees: AA only after the commit, resends answered from the log, bad frames that do not hurt the
listener, charsets that arrive intact (ARCHITECTURE invariants 2, 3, 8; FIELD-NOTES A, C, F).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import fcntl
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hl7
import pytest
from hl7.client import MLLPClient
from sqlalchemy import event, text

from radsync.adapters.hl7.intake import Hl7Intake
from radsync.adapters.hl7.server import Hl7Server
from radsync.adapters.hl7.workers import WorkerIntake
from radsync.adapters.persistence.engine import Engines
from radsync.app.orders import OrderService
from radsync.app.stations import Station, StationDirectory
from radsync.clock import utc_now
from radsync.config import Settings
from tests.adapters.hl7 import samples as s

VT, FS_CR = b"\x0b", b"\x1c\r"


class LoopThread:
    """An asyncio loop in a thread, so the tests can use blocking clients against the server."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class Hub:
    port: int
    engines: Engines
    intake: Hl7Intake
    loop: LoopThread
    server: Hl7Server

    def send(self, message: str | bytes) -> bytes:
        """One message over python-hl7's MLLPClient; the ACK bytes without framing."""
        with MLLPClient("127.0.0.1", self.port) as client:
            answer = client.send_message(message if isinstance(message, bytes) else message.encode("ascii"))
        return answer.removeprefix(VT).removesuffix(FS_CR)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engines.read.connect() as connection:
            return list(connection.execute(text(sql), params).all())

    def scalar(self, sql: str, **params: Any) -> Any:
        rows = self.rows(sql, **params)
        return rows[0][0] if rows else None


@contextmanager
def running_hub(engines: Engines, intake_class: type[Hl7Intake] = Hl7Intake) -> Iterator[Hub]:
    uids = itertools.count(1)
    stations = StationDirectory([Station("CT01", "CT"), Station("CT02", "CT"), Station("MR01", "MR")])
    service = OrderService(stations, lambda: f"2.25.999{next(uids)}")
    intake = intake_class(Settings(timezone="Europe/Berlin", hl7_max_batch=16), engines, service, utc_now)
    intake.start()
    loop = LoopThread()
    server = Hl7Server(intake, "127.0.0.1", 0, max_message_bytes=64 * 1024)
    port = loop.run(server.start())
    try:
        yield Hub(port, engines, intake, loop, server)
    finally:
        loop.run(server.stop())
        intake.stop()
        loop.close()


@pytest.fixture
def hub(engines: Engines) -> Iterator[Hub]:
    """A running hub on each backend (SQLite and PostgreSQL)."""
    with running_hub(engines) as running:
        yield running


@contextmanager
def beside_another_connection(hub: Hub) -> Iterator[None]:
    """Keep a second, idle connection open: the hub's messages are then written by the intake's writer thread,
    not on the event loop as a lone connection's are."""
    with socket.create_connection(("127.0.0.1", hub.port)):
        deadline = time.monotonic() + 5
        while hub.server.connection_count() < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert hub.server.connection_count() == 1
        yield


@contextmanager
def alone(hub: Hub) -> Iterator[None]:
    yield


CONNECTIONS = pytest.mark.parametrize("connections", [alone, beside_another_connection], ids=["lone", "beside-another"])


def msa(ack: bytes) -> list[str]:
    return [str(f) for f in hl7.parse(ack.decode("latin-1")).segment("MSA")[1:]]


def err(ack: bytes) -> str:
    return str(hl7.parse(ack.decode("latin-1")).segment("ERR"))


def snapshot(hub: Hub) -> list[Any]:
    return [hub.rows(f"SELECT * FROM {table} ORDER BY pk") for table in
            ("patients", "orders", "requested_procedures", "scheduled_steps", "order_timeline", "message_log")]


# -- durability and deduplication ----------------------------------------------------------------------


def record_writers(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """The thread of each batch write from now on (the event loop's, or the intake's writer thread)."""
    writers: list[threading.Thread] = []
    write = hub.intake._write

    def recording(batch: Any, **options: Any) -> Any:
        writers.append(threading.current_thread())
        return write(batch, **options)

    monkeypatch.setattr(hub.intake, "_write", recording)
    return writers


def test_a_lone_connection_is_written_on_the_event_loop_and_two_by_the_writer_thread(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite; on PostgreSQL (where a write may wait on another session's row locks, which the loop cannot see
    beforehand) the writer thread writes everything."""
    writers = record_writers(hub, monkeypatch)
    assert msa(hub.send(s.ORM_NEW_9_1))[0] == "AA"
    with beside_another_connection(hub):
        assert msa(hub.send(s.ADT_A08))[0] == "AA"
    lone = hub.loop.thread if hub.engines.write.dialect.name == "sqlite" else hub.intake._thread
    assert writers == [lone, hub.intake._thread]
    assert hub.scalar("SELECT count(*) FROM message_log") == 2


def test_a_lone_connection_never_makes_the_event_loop_wait_for_another_processs_write(
    sqlite_hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another process holds SQLite's writer lock (persistence/engine.py), a lone connection's message goes
    to the writer thread, which waits for the lock; the event loop goes on serving meanwhile."""
    writers = record_writers(sqlite_hub, monkeypatch)
    other_process = os.open(f"{sqlite_hub.engines.write.url.database}-writer.lock", os.O_RDWR)
    answers: list[bytes] = []
    sending = threading.Thread(target=lambda: answers.append(sqlite_hub.send(s.ORM_NEW_9_1)))
    try:
        fcntl.flock(other_process, fcntl.LOCK_EX)
        sending.start()
        sending.join(0.5)
        assert sending.is_alive() and not answers  # not written while the other writer holds the lock
        started = time.monotonic()
        sqlite_hub.loop.run(asyncio.sleep(0), timeout=2)  # the loop is not stuck behind that lock
        assert time.monotonic() - started < 0.5
    finally:
        fcntl.flock(other_process, fcntl.LOCK_UN)
        os.close(other_process)
    sending.join(10)
    assert [msa(a)[:2] for a in answers] == [["AA", "MSG00001"]]
    assert writers == [sqlite_hub.intake._thread]


def test_a_lone_connection_waits_while_the_writer_thread_is_writing(hub: Hub) -> None:
    """Only one of the two writes at a time: a lone connection's message finding the writer thread busy is
    queued for it, and answered once that write is done."""
    with hub.intake._writing:  # what the writer thread holds while it writes a batch
        sending = threading.Thread(target=lambda: answers.append(hub.send(s.ORM_NEW_9_1)))
        answers: list[bytes] = []
        sending.start()
        sending.join(0.5)
        assert sending.is_alive() and not answers
        assert hub.scalar("SELECT count(*) FROM message_log") == 0
    sending.join(10)
    assert [msa(a)[:2] for a in answers] == [["AA", "MSG00001"]]
    assert hub.scalar("SELECT count(*) FROM scheduled_steps WHERE step_id = 'SPS00017-1'") == 1


@CONNECTIONS
def test_the_ack_is_sent_only_after_the_commit(hub: Hub, connections: Any) -> None:
    committed: list[float] = []

    @event.listens_for(hub.engines.write, "commit")
    def slow_commit(connection: Any) -> None:  # runs before the database commits
        time.sleep(0.3)
        committed.append(time.monotonic())

    with connections(hub):
        started = time.monotonic()
        ack = hub.send(s.ORM_NEW_9_1)
        arrived = time.monotonic()
    assert msa(ack)[:2] == ["AA", "MSG00001"]
    assert committed and arrived - started >= 0.3
    # a fresh connection sees everything the ACK vouches for
    assert hub.scalar("SELECT status FROM scheduled_steps WHERE step_id = 'SPS00017-1'") == "SCHEDULED"
    assert hub.scalar("SELECT name FROM patients WHERE patient_id = '100234567'") == "Doe^Jane^Marie^Mrs"
    logged = hub.rows("SELECT outcome, ack, raw FROM message_log WHERE control_id = 'MSG00001'")
    assert [(r.outcome, bytes(r.ack), bytes(r.raw)) for r in logged] == [("AA", ack, s.ORM_NEW_9_1.encode())]


@CONNECTIONS
def test_on_sqlite_the_ack_waits_for_the_wal_sync_after_the_commit(
    sqlite_hub: Hub, monkeypatch: pytest.MonkeyPatch, connections: Any
) -> None:
    """The write engine commits at synchronous=NORMAL and syncs the WAL itself (persistence/engine.py): the ACK
    must wait for that sync, not only for COMMIT."""
    synced: list[float] = []
    real = os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        time.sleep(0.3)
        real(fd)
        if os.readlink(f"/proc/self/fd/{fd}").endswith("-wal"):
            synced.append(time.monotonic())

    with connections(sqlite_hub):
        monkeypatch.setattr(os, "fdatasync", slow_fdatasync)
        started = time.monotonic()
        ack = sqlite_hub.send(s.ORM_NEW_9_1)
        arrived = time.monotonic()
    assert msa(ack)[:2] == ["AA", "MSG00001"]
    assert synced and started + 0.3 <= synced[0] <= arrived


@CONNECTIONS
@pytest.mark.parametrize("intake_class", [Hl7Intake, WorkerIntake], ids=["in-process", "receiving-process"])
def test_on_sqlite_a_commit_whose_sync_fails_is_refused_and_the_resend_gets_the_aa(
    sqlite_engines: Engines, monkeypatch: pytest.MonkeyPatch, intake_class: type[Hl7Intake], connections: Any
) -> None:
    """A commit is durable only once the WAL is synced: if that fails, no AA leaves (AR 207, send again); the
    resend finds the committed message in the log and gets its AA once a sync succeeds."""
    real = os.fdatasync
    failed: list[int] = []

    def fails_once(fd: int) -> None:
        if not failed and os.readlink(f"/proc/self/fd/{fd}").endswith("-wal"):
            failed.append(fd)
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    with running_hub(sqlite_engines, intake_class) as hub, connections(hub):
        monkeypatch.setattr(os, "fdatasync", fails_once)
        first = hub.send(s.ORM_NEW_9_1)
        assert failed and msa(first)[:2] == ["AR", "MSG00001"]
        again = hub.send(s.ORM_NEW_9_1)
        assert msa(again)[:2] == ["AA", "MSG00001"]
        assert hub.scalar("SELECT count(*) FROM message_log WHERE control_id = 'MSG00001'") == 1
        assert hub.scalar("SELECT count(*) FROM scheduled_steps WHERE step_id = 'SPS00017-1'") == 1


def test_a_resend_gets_the_same_ack_and_changes_nothing(hub: Hub) -> None:
    first = hub.send(s.ORM_NEW_9_1)
    before = snapshot(hub)
    assert hub.send(s.ORM_NEW_9_1) == first
    assert hub.send(s.A1_CRLF_TERMINATED) == first  # the same content with other terminators
    assert snapshot(hub) == before


def test_the_same_control_id_with_other_content_is_processed_and_flagged(hub: Hub) -> None:
    hub.send(s.ORM_NEW_9_1)
    other = s.with_field(s.ORM_NEW_9_1, "PID", 5, "Doe^Joan")
    assert msa(hub.send(other))[0] == "AA"
    assert hub.scalar("SELECT name FROM patients WHERE patient_id = '100234567'") == "Doe^Joan"
    logged = hub.rows("SELECT outcome, flags FROM message_log WHERE control_id = 'MSG00001' ORDER BY pk")
    assert [(r.outcome, r.flags) for r in logged] == [("AA", ""), ("AA", "duplicate-control-id")]


def test_an_error_answer_is_replayed_but_nothing_is_stored_twice(hub: Hub) -> None:
    first = hub.send(s.F42_CANCEL_UNKNOWN)
    assert msa(first)[0] == "AE" and "204" in err(first)
    assert hub.send(s.F42_CANCEL_UNKNOWN) == first
    assert hub.scalar("SELECT count(*) FROM message_log") == 1


# -- group commit and isolation ------------------------------------------------------------------------


def test_one_bad_message_in_a_batch_rolls_back_alone(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    commits: list[int] = []
    gate = threading.Event()

    @event.listens_for(hub.engines.write, "commit")
    def hold_first(connection: Any) -> None:
        commits.append(1)
        if len(commits) == 1:
            gate.wait(5)  # the first batch waits while the next messages queue up behind it

    place = OrderService.place

    def explode_on_a_marked_order(self: OrderService, uow: Any, command: Any) -> Any:
        placed = place(self, uow, command)
        if command.order.accession.value == "EXPLODE":  # after its rows are written: they must go, others stay
            raise RuntimeError("disk on fire")
        return placed

    monkeypatch.setattr(OrderService, "place", explode_on_a_marked_order)
    messages = [
        s.ORM_NEW_9_1.encode(),
        s.ORM_CHANGE_LATIN1_9_3_BYTES,
        s.F41_UNKNOWN_PAIR.encode(),
        s.with_field(s.with_field(s.ORM_CHANGE_LATIN1_9_3, "MSH", 10, "BOOM"), "OBR", 18, "EXPLODE").encode("latin-1"),
        s.ADT_A08.encode(),
    ]

    async def submit_all() -> list[bytes]:
        first = asyncio.ensure_future(hub.intake.submit(messages[0], "test"))
        await asyncio.sleep(0.2)
        rest = [asyncio.ensure_future(hub.intake.submit(m, "test")) for m in messages[1:]]
        await asyncio.sleep(0.2)
        gate.set()
        return await asyncio.gather(first, *rest)

    acks = hub.loop.run(submit_all())
    assert [msa(a)[0] for a in acks] == ["AA", "AA", "AE", "AE", "AA"]
    assert "207" in err(acks[3]) and "103" in err(acks[2])
    assert len(commits) == 2  # four messages, one transaction
    outcomes = hub.rows("SELECT control_id, outcome FROM message_log ORDER BY pk")
    assert [(r.control_id, r.outcome) for r in outcomes] == [
        ("MSG00001", "AA"), ("MSG00003", "AA"), ("MSG-XO-ZZ", "AE"), ("BOOM", "ERROR"), ("ADT00001", "AA")]
    assert hub.scalar("SELECT count(*) FROM orders WHERE accession = 'EXPLODE'") == 0
    assert hub.scalar("SELECT count(*) FROM orders") == 2
    # an internal error is not replayed: the resend is processed again (and succeeds once the cause is gone)
    monkeypatch.setattr(OrderService, "place", place)
    assert msa(hub.send(messages[3]))[0] == "AA"


def test_a_refused_message_leaves_nothing_half_written(hub: Hub) -> None:
    hub.send(s.ORM_NEW_9_1)
    # another patient and order claiming the first order's Study Instance UID: the patient row is written first,
    # then the order use case refuses; the savepoint takes the patient row back with it
    thief = s.with_field(s.with_field(s.ORM_NEW_9_1, "MSH", 10, "MSG-THIEF"), "PID", 3, "P999^^^GENHOSP^MR")
    for field in (2, 3):
        thief = s.with_field(s.with_field(thief, "ORC", field, f"OTHER-{field}^X"), "OBR", field, f"OTHER-{field}^X")
    thief = s.with_field(thief, "OBR", 18, "A-OTHER")
    ack = hub.send(thief)
    assert msa(ack)[0] == "AE" and "205" in err(ack)
    assert hub.scalar("SELECT count(*) FROM patients WHERE patient_id = 'P999'") == 0
    assert hub.scalar("SELECT outcome FROM message_log WHERE control_id = 'MSG-THIEF'") == "AE"


# -- what the messages do ------------------------------------------------------------------------------


def test_adt_a08_updates_the_patient_the_worklist_joins(hub: Hub) -> None:
    hub.send(s.ORM_NEW_9_1)
    assert msa(hub.send(s.ADT_A08))[0] == "AA"
    row = hub.rows(
        "SELECT p.name, p.birth_date, st.status FROM scheduled_steps st JOIN patients p ON p.pk = st.patient_pk"
    )[0]
    assert (row.name, row.birth_date, row.status) == ("Doe^Janet^Marie^Mrs", "19700413", "SCHEDULED")


def test_xo_reschedules_and_keeps_the_study_instance_uid(hub: Hub) -> None:
    hub.send(s.ORM_NEW_9_1)
    change = s.order_control(s.ORM_NEW_9_1, "XO", "SC", "MSG-XO-1")
    change = s.with_field(change, "ZDS", 1, "2.25.42^RIS_HUB^Application^DICOM")
    change = s.with_field(change, "ORC", 7, "1^once^^20240613140000^^S")
    assert msa(hub.send(change))[0] == "AA"
    uid = hub.scalar("SELECT study_instance_uid FROM requested_procedures WHERE procedure_id = 'RP00017'")
    assert uid == "2.25.186720139475620031884613650946921155417"
    start = hub.scalar("SELECT start_at FROM scheduled_steps WHERE step_id = 'SPS00017-1'")
    assert str(start).startswith("2024-06-13 14:00")


def test_cancel_takes_the_step_off_the_worklist_and_keeps_the_record(hub: Hub) -> None:
    hub.send(s.ORM_NEW_9_1)
    assert msa(hub.send(s.ORM_CANCEL_9_5))[0] == "AA"
    assert hub.scalar("SELECT status FROM scheduled_steps WHERE step_id = 'SPS00017-1'") == "CANCELED"
    assert hub.scalar("SELECT count(*) FROM orders") == 1
    kinds = [r.kind for r in hub.rows("SELECT kind FROM order_timeline ORDER BY pk")]
    assert kinds == ["order.created", "step.cancel"]


def test_an_unknown_order_control_pair_is_refused_naming_it(hub: Hub) -> None:
    ack = hub.send(s.F41_UNKNOWN_PAIR)
    assert msa(ack)[0] == "AE" and "XO_ZZ" in msa(ack)[2]
    assert err(ack) == "ERR|ORC^1^1^103&Table value not found&HL70357"
    assert hub.scalar("SELECT count(*) FROM orders") == 0
    assert hub.scalar("SELECT outcome FROM message_log") == "AE"


def test_latin1_and_utf8_names_arrive_intact(hub: Hub) -> None:
    assert msa(hub.send(s.ORM_CHANGE_LATIN1_9_3_BYTES))[0] == "AA"
    assert msa(hub.send(s.OMI_JAPANESE_UTF8_9_4_BYTES))[0] == "AA"
    names = {r.patient_id: r.name for r in hub.rows("SELECT patient_id, name FROM patients")}
    assert names == {"300456789": "Müller^Jürgen^^Dr", "0012345678": "Yamada^Taro=山田^太郎=やまだ^たろう"}
    raw = {r.control_id: bytes(r.raw) for r in hub.rows("SELECT control_id, raw FROM message_log")}
    assert raw == {"MSG00003": s.ORM_CHANGE_LATIN1_9_3_BYTES, "MSG00004": s.OMI_JAPANESE_UTF8_9_4_BYTES}


# -- framing (transport only: SQLite is enough) --------------------------------------------------------


def _read_acks(sock: socket.socket, count: int, timeout: float = 5) -> list[bytes]:
    sock.settimeout(timeout)
    data = b""
    while data.count(FS_CR) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return [block.removeprefix(VT) for block in data.split(FS_CR) if block]


@pytest.fixture
def sqlite_hub(sqlite_engines: Engines) -> Iterator[Hub]:
    with running_hub(sqlite_engines) as running:
        yield running


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def test_two_messages_in_one_write_are_answered_in_order(sqlite_hub: Hub) -> None:
    with _connect(sqlite_hub.port) as sock:
        sock.sendall(VT + s.ORM_NEW_9_1.encode() + FS_CR + VT + s.ADT_A08.encode() + FS_CR)
        acks = _read_acks(sock, 2)
    assert [msa(a)[:2] for a in acks] == [["AA", "MSG00001"], ["AA", "ADT00001"]]


def test_a_message_split_over_three_writes(sqlite_hub: Hub) -> None:
    framed = VT + s.ORM_NEW_9_1.encode() + FS_CR
    with _connect(sqlite_hub.port) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for part in (framed[:7], framed[7:200], framed[200:]):
            sock.sendall(part)
            time.sleep(0.05)
        (ack,) = _read_acks(sock, 1)
    assert msa(ack)[:2] == ["AA", "MSG00001"]


def test_lf_terminated_message(sqlite_hub: Hub) -> None:
    assert msa(sqlite_hub.send(s.A1_LF_TERMINATED))[0] == "AA"
    assert sqlite_hub.scalar("SELECT step_id FROM scheduled_steps") == "SPS00017-1"


def test_malformed_frames_do_not_hurt_the_listener(sqlite_hub: Hub) -> None:
    with _connect(sqlite_hub.port) as sock:
        sock.sendall(b"garbage without any framing" + FS_CR)  # no VT, no MSH: dropped
        sock.sendall(s.ADT_A08.encode() + FS_CR)  # no VT but an MSH: AR
        sock.sendall(VT + b"X" * 70_000 + FS_CR)  # larger than the limit: dropped
        sock.sendall(b"\r\n" + VT + s.ORM_NEW_9_1.encode() + FS_CR)  # whitespace between frames is fine
        acks = _read_acks(sock, 2)
    assert msa(acks[0])[:2] == ["AR", "ADT00001"] and "<VT>" in acks[0].decode()
    assert msa(acks[1])[:2] == ["AA", "MSG00001"]
    assert sqlite_hub.scalar("SELECT count(*) FROM message_log") == 1  # only the well-framed message
    assert msa(sqlite_hub.send(s.ADT_A08))[0] == "AA"  # and the listener still serves new connections


def test_an_oversized_message_with_a_header_is_rejected(sqlite_hub: Hub) -> None:
    big = s.appended(s.ORM_NEW_9_1, "NTE|1||" + "x" * 70_000)
    ack = sqlite_hub.send(big)
    assert msa(ack)[:2] == ["AR", "MSG00001"] and "larger than" in msa(ack)[2]
    assert "207" in err(ack)
    assert msa(sqlite_hub.send(s.ADT_A08))[0] == "AA"


def test_a_peer_that_disconnects_mid_message_leaves_nothing_behind(sqlite_hub: Hub) -> None:
    with _connect(sqlite_hub.port) as sock:
        sock.sendall(VT + s.ORM_NEW_9_1.encode()[:150])
    time.sleep(0.1)
    assert sqlite_hub.scalar("SELECT count(*) FROM message_log") == 0
    assert msa(sqlite_hub.send(s.ORM_NEW_9_1))[0] == "AA"


def test_the_mllp_send_console_script(sqlite_hub: Hub, tmp_path: Path) -> None:
    path = tmp_path / "orders.hl7"
    path.write_bytes(VT + s.ORM_NEW_9_1.encode() + FS_CR + VT + s.ADT_A08.encode() + FS_CR)
    script = Path(sys.executable).with_name("mllp_send")
    result = subprocess.run([str(script), "-p", str(sqlite_hub.port), "-f", str(path), "127.0.0.1"],
                            capture_output=True, timeout=30, check=True)
    assert result.stdout.count(b"MSA|AA|") == 2
    assert sqlite_hub.scalar("SELECT count(*) FROM message_log") == 2


def test_ack_timestamps_follow_the_clock_second_by_second(sqlite_engines: Engines) -> None:
    """MSH-7 of the ACK is kept per second (intake._timestamp): the same within a second, the next one after."""
    ticks = iter([
        dt.datetime(2026, 1, 5, 11, 0, 59, 100),
        dt.datetime(2026, 1, 5, 11, 0, 59, 999_000),
        dt.datetime(2026, 1, 5, 11, 1, 0, 0),
        dt.datetime(2026, 7, 5, 11, 1, 0, 0),  # summer time: the offset follows the instant, not the cache
    ])
    service = OrderService(StationDirectory([]), lambda: "2.25.1")
    intake = Hl7Intake(Settings(timezone="Europe/Berlin"), sqlite_engines, service, lambda: next(ticks))
    stamps = [intake.ack_timestamp() for _ in range(4)]
    assert stamps == ["20260105120059+0100", "20260105120059+0100", "20260105120100+0100", "20260705130100+0200"]
