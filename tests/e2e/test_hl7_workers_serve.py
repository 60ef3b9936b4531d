"""`radsync serve --hl7-processes 2` as a user runs it: /healthz once every worker accepts, a clean SIGTERM,
and a kill -9 of the whole service (serving process and workers) loses no acknowledged order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hl7.client import MLLPClient

from tests.e2e.orm import orm_new
from tests.e2e.process import RadsyncProcess
from tests.e2e.test_serve import ack_code, assert_kill_9_loses_no_acked_order, stored_accessions

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "radsync.toml"
    path.write_text('hl7_processes = 2\ndicom_processes = 1\n\n[[stations]]\nae_title = "CT01"\nmodality = "CT"\n')
    return path


def descendants(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                children.append(int(entry))
    return children + [grandchild for child in children for grandchild in descendants(child)]


def test_two_hl7_processes_serve_report_on_healthz_and_stop_cleanly(tmp_path: Path, config_file: Path) -> None:
    radsync = RadsyncProcess(tmp_path / "data", config=config_file)
    health = radsync.start(60)
    try:
        assert health["listeners"]["hl7_mllp"] == f"127.0.0.1:{radsync.hl7_port}"  # only once both workers accept
        assert radsync.process is not None
        assert len(descendants(radsync.process.pid)) >= 2
        with MLLPClient("127.0.0.1", radsync.hl7_port) as one, MLLPClient("127.0.0.1", radsync.hl7_port) as two:
            assert ack_code(one.send_message(orm_new(1))) == ("AA", "MSG000001")
            assert ack_code(two.send_message(orm_new(2))) == ("AA", "MSG000002")
    finally:
        code = radsync.terminate(30)
    assert code == 0
    assert stored_accessions(tmp_path / "data") == {"A000001", "A000002"}


def test_kill_9_of_the_whole_service_loses_no_acknowledged_order(tmp_path: Path, config_file: Path) -> None:
    assert_kill_9_loses_no_acked_order(tmp_path / "data", config_file, rounds=2, seed=20261128, pause=(1.0, 2.0),
                                       processes=lambda pid: [*descendants(pid), pid])


def _hl7_connections_by_pid(port: int, pids: list[int]) -> dict[int, int]:
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":
            inodes.add(f"socket:[{fields[9]}]")
    counts = {}
    for pid in pids:
        links = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                continue
        counts[pid] = sum(1 for link in links if link in inodes)
    return counts


def test_a_lone_connection_is_served_by_the_serving_process_and_the_next_by_the_worker(
    tmp_path: Path, config_file: Path
) -> None:
    radsync = RadsyncProcess(tmp_path / "data", config=config_file)
    radsync.start(60)
    try:
        assert radsync.process is not None
        pids = [radsync.process.pid, *descendants(radsync.process.pid)]
        with MLLPClient("127.0.0.1", radsync.hl7_port) as first:
            assert ack_code(first.send_message(orm_new(1)))[0] == "AA"
            by_pid = _hl7_connections_by_pid(radsync.hl7_port, pids)
            assert by_pid[radsync.process.pid] == 1 and sum(by_pid.values()) == 1, by_pid
            with MLLPClient("127.0.0.1", radsync.hl7_port) as second:
                assert ack_code(second.send_message(orm_new(2)))[0] == "AA"
                by_pid = _hl7_connections_by_pid(radsync.hl7_port, pids)
                assert by_pid[radsync.process.pid] == 1 and sum(by_pid.values()) == 2, by_pid
    finally:
        assert radsync.terminate(30) == 0
    assert stored_accessions(tmp_path / "data") == {"A000001", "A000002"}
