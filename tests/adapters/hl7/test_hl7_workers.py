"""Several HL7 receiving processes on one port (hl7/workers.py): real MLLP clients over loopback, SQLite and
PostgreSQL; connections spread over the workers, every ACK durable, duplicates processed once across processes,
a killed worker replaced, a clean stop, and the outbox woken from a worker."""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hl7
import pytest
from hl7.client import MLLPClient
from sqlalchemy import create_engine, text

from radsync.adapters.hl7.workers import Hl7Workers, process_count
from radsync.bootstrap import build_container
from radsync.config import Settings, load_settings
from tests.e2e.orm import orm_new
from tests.polling import wait_for

pytestmark = pytest.mark.timeout(180)

STATIONS = [{"ae_title": "CT01", "modality": "CT"}]


def worker_settings(tmp_path: Path, database_url: str, **extra: Any) -> Settings:
    return load_settings(None, {"data_dir": tmp_path / "data", "database_url": database_url, "hl7_port": 0,
                                "hl7_processes": 2, "stations": STATIONS, "log_level": "WARNING", **extra})


class Pool:
    def __init__(self, settings: Settings, notify: Any = None) -> None:
        self.settings = settings
        self.container = build_container(settings)  # migrates once, as `radsync serve` does before the workers
        self.workers = Hl7Workers(settings, process_count(settings), notify=notify)
        self.port = self.workers.start()

    def close(self) -> None:
        self.workers.stop()
        self.container.engines.dispose()

    def scalar(self, sql: str) -> Any:
        engine = create_engine(self.settings.effective_database_url)
        try:
            with engine.connect() as conn:
                return conn.execute(text(sql)).scalar()
        finally:
            engine.dispose()


@pytest.fixture
def pool(tmp_path: Path, database_url: str) -> Iterator[Pool]:
    started = Pool(worker_settings(tmp_path, database_url))
    try:
        yield started
    finally:
        started.close()


def msa(raw: bytes | str) -> tuple[str, str]:
    text_ = raw.decode() if isinstance(raw, bytes) else raw
    segment = hl7.parse(text_.strip("\x0b\x1c\r")).segment("MSA")
    return str(segment[1]), str(segment[2])


def connections(pool: Pool) -> dict[int, int]:
    """How many accepted HL7 connections each worker holds (established sockets on the HL7 port, by owner)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == pool.port and fields[3] == "01":  # local port, ESTABLISHED
            inodes.add(f"socket:[{fields[9]}]")
    counts = {}
    for pid in pool.workers.pids:
        links = (os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
        counts[pid] = sum(1 for link in links if link in inodes)
    return counts


def spread_clients(pool: Pool, count: int) -> tuple[list[MLLPClient], dict[int, int]]:
    """Open ``count`` connections one after another; how many each worker took."""
    clients = []
    for _ in range(count):
        client = MLLPClient("127.0.0.1", pool.port)
        client.send_message(orm_new(999_999, control_id=f"PING{len(clients)}-{time.monotonic_ns()}"))  # accepted
        clients.append(client)
    return clients, connections(pool)


def one_per_worker(pool: Pool, connect: Any) -> list[Any]:
    """A connection on each worker: connect until every worker has one, then close the extras (which process
    accepts is a 2 ms race that a busy machine can lose). Nothing closes meanwhile, so counts only grow."""
    kept: dict[int, Any] = {}
    extras = []
    before = connections(pool)
    for _ in range(20):
        conn = connect()
        seen = sum(before.values())
        now = wait_for(functools.partial(_grown, pool, seen), timeout=10)
        taker = next(pid for pid in now if now[pid] > before.get(pid, 0))
        before = now
        if taker not in kept:
            kept[taker] = conn
        else:
            extras.append(conn)
        if len(kept) == len(pool.workers.pids):
            break
    for conn in extras:
        conn.close()
    assert len(kept) == len(pool.workers.pids), "every worker accepts"
    return list(kept.values())


def _grown(pool: Pool, seen: int) -> dict[int, int] | None:
    counts = connections(pool)
    return counts if sum(counts.values()) > seen else None


def _pinged_client(pool: Pool) -> MLLPClient:
    client = MLLPClient("127.0.0.1", pool.port)
    client.send_message(orm_new(999_999, control_id=f"PING-{time.monotonic_ns()}"))  # answered: accepted
    return client


def _send_all(client: MLLPClient, numbers: range, acks: list[tuple[int, str]]) -> None:
    for n in numbers:
        code, control = msa(client.send_message(orm_new(n)))
        assert control == f"MSG{n:06d}"
        acks.append((n, code))


def test_connections_spread_over_two_workers_all_acked_and_stored_once(pool: Pool) -> None:
    assert len(pool.workers.pids) == 2
    clients, served = spread_clients(pool, 4)
    try:
        assert sum(served.values()) == 4 and min(served.values()) >= 1, served
        acks: list[tuple[int, str]] = []
        threads = [threading.Thread(target=_send_all, args=(c, range(1 + i * 1000, 1 + i * 1000 + 25), acks))
                   for i, c in enumerate(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for client in clients:
            client.close()
    assert len(acks) == 100 and {code for _, code in acks} == {"AA"}
    assert pool.scalar("SELECT count(*) FROM message_log WHERE control_id LIKE 'MSG%'") == 100
    assert pool.scalar("SELECT count(DISTINCT control_id) FROM message_log WHERE control_id LIKE 'MSG%'") == 100
    assert pool.scalar("SELECT count(*) FROM orders WHERE accession LIKE 'A00%'") == 100


def a08(k: int) -> str:
    """A demographic update of the patient of orm_new(777): nothing in it conflicts with itself in the database,
    so only the dedup lookup can tell a concurrent duplicate."""
    return ("MSH|^~\\&|ADT|GENHOSP|RIS_HUB|RADDEPT|20240611120000||ADT^A08^ADT_A01|DUPA08-" + f"{k:03d}|P|2.5.1\r"
            f"EVN|A08|2024061112{k:04d}\r"
            f"PID|1||P000777^^^GENHOSP^MR||Doe{k}^Jane^Marie^^Mrs||19700412|F\r"
            "PV1|1|O\r")


def _at_once(clients: list[MLLPClient], message: str) -> list[bytes]:
    barrier = threading.Barrier(len(clients))
    got: list[bytes] = []

    def send(client: MLLPClient) -> None:
        barrier.wait()
        got.append(client.send_message(message))

    threads = [threading.Thread(target=send, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return got


def test_the_same_control_id_on_two_connections_at_once_is_processed_once(pool: Pool) -> None:
    clients = one_per_worker(pool, lambda: _pinged_client(pool))  # one connection in each process
    try:
        assert msa(clients[0].send_message(orm_new(777)))[0] == "AA"
        answers = [_at_once(clients, a08(k)) for k in range(15)]
        answers += [_at_once(clients, orm_new(500 + k, control_id=f"DUPORM{k:03d}")) for k in range(10)]
    finally:
        for client in clients:
            client.close()
    for got in answers:
        assert [msa(a)[0] for a in got] == ["AA", "AA"]
        assert got[0] == got[1]  # the second was answered from the message log with the first's ACK
    assert pool.scalar("SELECT count(*) FROM message_log WHERE control_id LIKE 'DUPA08-%'") == 15
    assert pool.scalar("SELECT count(*) FROM message_log WHERE control_id LIKE 'DUPORM%'") == 10
    assert pool.scalar("SELECT count(*) FROM orders WHERE accession LIKE 'A0005%'") == 10


def _send_until_gone(port: int, numbers: range, acked: list[int]) -> None:
    try:
        with MLLPClient("127.0.0.1", port) as client:
            for n in numbers:
                code, _ = msa(client.send_message(orm_new(n)))
                assert code == "AA"
                acked.append(n)
    except (OSError, ValueError, IndexError, KeyError, hl7.exceptions.HL7Exception):
        return  # the worker serving this connection went away: what was ACKed so far is what counts


def _start_senders(port: int, each: int, acked: list[int]) -> list[threading.Thread]:
    """Four MLLP senders of ``each`` new orders apiece, started; returns once 40 orders are acknowledged."""
    senders = [threading.Thread(target=_send_until_gone, args=(port, range(10_000 * i, 10_000 * i + each), acked))
               for i in range(1, 5)]
    for sender in senders:
        sender.start()
    wait_for(lambda: len(acked) >= 40, timeout=60)
    return senders


def test_a_worker_killed_mid_stream_is_replaced_and_acked_messages_are_kept(pool: Pool) -> None:
    acked: list[int] = []
    senders = _start_senders(pool.port, 400, acked)
    victim = pool.workers.pids[0]
    os.kill(victim, signal.SIGKILL)
    for sender in senders:
        sender.join(120)
    wait_for(lambda: victim not in pool.workers.pids and len(pool.workers.accepting) == 2, timeout=60)
    wait_for(lambda: pool.scalar("SELECT count(*) FROM orders") >= len(acked), timeout=10)
    stored = {int(a[1:]) for a in _accessions(pool)}
    assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged orders lost"
    after: list[tuple[int, str]] = []
    clients = one_per_worker(pool, lambda: _pinged_client(pool))  # the survivor and the replacement both accept
    try:
        for i, client in enumerate(clients):
            _send_all(client, range(90_000 + i * 100, 90_000 + i * 100 + 5), after)
    finally:
        for client in clients:
            client.close()
    assert {code for _, code in after} == {"AA"} and len(after) == 10


def _accessions(pool: Pool) -> list[str]:
    engine = create_engine(pool.settings.effective_database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT accession FROM orders WHERE accession LIKE 'A%'")).scalars())
    finally:
        engine.dispose()


def test_stop_while_messages_flow_answers_or_leaves_each_message_and_keeps_every_ack(
    tmp_path: Path, database_url: str
) -> None:
    pool = Pool(worker_settings(tmp_path, database_url))
    acked: list[int] = []
    senders = _start_senders(pool.port, 5_000, acked)
    started = time.monotonic()
    pids = pool.workers.pids
    pool.workers.stop()
    stopped_in = time.monotonic() - started
    for sender in senders:
        sender.join(30)
    assert not any(s.is_alive() for s in senders)
    assert pool.workers.pids == []
    assert stopped_in < 10, stopped_in  # SIGTERM honoured, no kill after the grace period
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    stored = {int(a[1:]) for a in _accessions(pool)}
    assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged orders lost"
    pool.container.engines.dispose()


def test_a_commit_in_a_worker_that_queues_outbox_messages_wakes_the_serving_process(
    tmp_path: Path, database_url: str
) -> None:
    woken = threading.Event()
    destination = {"name": "ris", "host": "127.0.0.1", "port": 9, "events": ["report"]}
    pool = Pool(worker_settings(tmp_path, database_url, hl7_destinations=[destination]), notify=woken.set)
    try:
        with MLLPClient("127.0.0.1", pool.port) as client:
            assert msa(client.send_message(orm_new(1)))[0] == "AA"
            assert not woken.wait(0.3)  # an order queues nothing for a report-only destination
            oru = ("MSH|^~\\&|DICTATION|RAD|RADSYNC|RAD|20240612163000||ORU^R01^ORU_R01|DICT0001|P|2.5.1\r"
                   "PID|1||P000001^^^GENHOSP^MR\r"
                   "OBR|1|PLC1^HIS|FIL1^RIS||||20240612083000|||||||||||A000001||||||CT|P|||||||R9001&Lee&Hannah\r"
                   "OBX|1|TX|18782-3^Radiology Study observation^LN|1|Preliminary: normal.||||||P\r")
            assert msa(client.send_message(oru))[0] == "AA"
        assert woken.wait(5)  # the worker's datagram reached the serving process's dispatcher
        assert pool.scalar("SELECT count(*) FROM outbox WHERE destination = 'ris'") == 1
    finally:
        pool.close()


def test_auto_is_two_processes_at_most_one_per_cpu(tmp_path: Path) -> None:
    assert process_count(load_settings(None, {"data_dir": tmp_path})) == min(2, os.cpu_count() or 1)
    assert process_count(load_settings(None, {"data_dir": tmp_path, "hl7_processes": 3})) == 3


def test_malformed_input_never_stops_a_worker(pool: Pool) -> None:
    import socket

    pids = pool.workers.pids

    raws = one_per_worker(pool, lambda: socket.create_connection(("127.0.0.1", pool.port), timeout=10))
    try:
        for n, raw in enumerate(raws):
            raw.sendall(b"\x0bnot hl7 at all\x1c\r")  # no MSH: dropped, the connection stays
            raw.sendall(b"MSH|^~\\&|X|Y|Z|W|20240611||ORM^O01|UNFRAMED|P|2.3.1\r\x1c\r")  # no <VT>: AR
            raw.sendall(b"\x0b" + orm_new(700 + n).encode() + b"\x1c\r")
            answers = b""
            while answers.count(b"\x1c\r") < 2:
                chunk = raw.recv(65536)
                assert chunk, "the worker closed the connection"
                answers += chunk
            first, second = answers.split(b"\x1c\r")[:2]
            assert msa(first) == ("AR", "UNFRAMED")
            assert msa(second) == ("AA", f"MSG{700 + n:06d}")
    finally:
        for raw in raws:
            raw.close()
    assert pool.workers.pids == pids  # nothing was restarted
