"""`radsync serve` as a user runs it: one process, every listener, clean stop, nothing acknowledged is lost."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import hl7
import pytest
from hl7.client import MLLPClient
from sqlalchemy import create_engine, select

from radsync.adapters.persistence.tables import orders, scheduled_steps, step_stations
from tests.e2e.orm import orm_new
from tests.e2e.process import RADSYNC, RadsyncProcess

pytestmark = pytest.mark.timeout(180)


def ack_code(raw: bytes) -> tuple[str, str]:
    text = raw.decode().strip("\x0b\x1c\r")
    msa = hl7.parse(text).segment("MSA")
    return str(msa[1]), str(msa[2])


def stored_accessions(data_dir: Path) -> set[str]:
    engine = create_engine(f"sqlite:///{data_dir / 'radsync.db'}")
    try:
        with engine.connect() as conn:
            return set(conn.execute(select(orders.c.accession)).scalars())
    finally:
        engine.dispose()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "radsync.toml"
    path.write_text('ae_title = "HUB"\n\n[[stations]]\nae_title = "CT01"\nmodality = "CT"\n\n'
                    '[[stations]]\nae_title = "CT02"\nmodality = "CT"\n')
    return path


def test_serve_starts_every_listener_and_reports_them_on_healthz(tmp_path, config_file) -> None:
    radsync = RadsyncProcess(tmp_path / "data", config=config_file)
    health = radsync.start()
    try:
        assert health["status"] == "ok"
        assert health["ae_title"] == "HUB"  # from the TOML file
        listeners = health["listeners"]
        assert listeners == {
            "hl7_mllp": f"127.0.0.1:{radsync.hl7_port}",
            "dicom": f"127.0.0.1:{radsync.dicom_port}",
            "http": f"127.0.0.1:{radsync.http_port}",
        }
        for port in (radsync.hl7_port, radsync.dicom_port, radsync.http_port):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert (tmp_path / "data" / "radsync.db").exists()
    finally:
        assert radsync.terminate() == 0


def test_environment_variables_configure_and_flags_override_them(tmp_path) -> None:
    radsync = RadsyncProcess(tmp_path / "data", env={"RADSYNC_AE_TITLE": "FROMENV"})
    assert radsync.start()["ae_title"] == "FROMENV"
    radsync.terminate()
    radsync = RadsyncProcess(tmp_path / "data", env={"RADSYNC_AE_TITLE": "FROMENV"}, extra_args=["--ae-title", "FLAG"])
    assert radsync.start()["ae_title"] == "FLAG"
    radsync.terminate()


def test_invalid_settings_exit_with_a_message_not_a_traceback(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[stations]]\nae_title = "CT01"\nmodality = "CT"\n[[stations]]\nae_title = "CT01"\nmodality = "MR"\n')
    result = subprocess.run([str(RADSYNC), "serve", "--config", str(bad), "--data-dir", str(tmp_path / "d")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "configured twice" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_stops_cleanly_and_an_acknowledged_order_is_kept(tmp_path, config_file) -> None:
    radsync = RadsyncProcess(tmp_path / "data", config=config_file)
    radsync.start()
    with MLLPClient("127.0.0.1", radsync.hl7_port) as client:
        code, control = ack_code(client.send_message(orm_new(1)))
    assert (code, control) == ("AA", "MSG000001")
    assert radsync.terminate() == 0
    assert stored_accessions(tmp_path / "data") == {"A000001"}
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'radsync.db'}")
    with engine.connect() as conn:
        stations = set(conn.execute(select(step_stations.c.ae_title)).scalars())
        statuses = set(conn.execute(select(scheduled_steps.c.status)).scalars())
    engine.dispose()
    assert stations == {"CT01", "CT02"}  # no station in v2.3.1: every CT station
    assert statuses == {"SCHEDULED"}


def _send_until_killed(port: int, start: int, count: int, acked: list[str]) -> None:
    try:
        with MLLPClient("127.0.0.1", port) as client:
            for n in range(start, start + count):
                code, _ = ack_code(client.send_message(orm_new(n)))
                if code == "AA":
                    acked.append(f"A{n:06d}")
    except (OSError, ValueError, IndexError, KeyError, hl7.exceptions.HL7Exception):
        return  # the server died mid-conversation: what was ACKed so far is what counts


def test_kill_9_at_any_moment_loses_no_acknowledged_order(tmp_path, config_file) -> None:
    """Kill -9 while orders stream in, restart, repeat: every ACKed accession must be stored."""
    assert_kill_9_loses_no_acked_order(tmp_path / "data", config_file, rounds=3, seed=20241128, pause=(0.5, 1.5))


def assert_kill_9_loses_no_acked_order(
    data_dir: Path, config_file: Path, *, rounds: int, seed: int, pause: tuple[float, float],
    processes: Callable[[int], list[int]] = lambda pid: [pid],
) -> None:
    """Four senders stream ORM^O01s; kill -9 ``processes(serving pid)`` after a random pause; restart; repeat.
    Every ACKed accession must be stored after a final restart."""
    rng = random.Random(seed)
    acked: list[str] = []
    next_n = 1
    for _round in range(rounds):
        radsync = RadsyncProcess(data_dir, config=config_file)
        radsync.start(60)
        assert radsync.process is not None
        senders = [threading.Thread(target=_send_until_killed, args=(radsync.hl7_port, next_n + i * 10_000, 5_000, acked))
                   for i in range(4)]
        for sender in senders:
            sender.start()
        time.sleep(rng.uniform(*pause))
        for pid in processes(radsync.process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        radsync.process.wait(10)
        for sender in senders:
            sender.join(30)
        next_n += 40_000
    assert len(acked) > 50, "the load generator should have had orders acknowledged before each kill"
    restarted = RadsyncProcess(data_dir, config=config_file)
    restarted.start(60)
    restarted.terminate(30)
    missing = set(acked) - stored_accessions(data_dir)
    assert not missing, f"{len(missing)} acknowledged orders lost, e.g. {sorted(missing)[:5]}"


def test_healthz_is_json(tmp_path) -> None:
    radsync = RadsyncProcess(tmp_path / "data")
    radsync.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{radsync.http_port}/healthz") as rsp:
            assert rsp.headers["content-type"].startswith("application/json")
            assert json.loads(rsp.read())["status"] == "ok"
    finally:
        radsync.terminate()
