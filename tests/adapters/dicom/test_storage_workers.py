"""Several receiving processes on one port (one shared listening socket, workers.py): parallel associations all succeed and
the shared database and blob store stay consistent."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from archive_samples import DCMTK_ENV, DCMTK_STORESCU, archive_settings, run, sample
from pydicom import dcmread

from radsync.adapters.dicom.workers import DicomWorkers, process_count
from radsync.bootstrap import build_container
from radsync.domain.study import StudyState


@pytest.mark.skipif(not Path(DCMTK_STORESCU).exists(), reason="dcmtk is not installed")
def test_two_processes_two_parallel_associations(tmp_path: Path) -> None:
    settings = archive_settings(tmp_path / "data", dicom_processes=2)
    container = build_container(settings)  # migrates once, as `radsync serve` does before starting workers
    workers = DicomWorkers(settings, process_count(settings))
    port = workers.start()
    try:
        assert len(workers.pids) == 2
        study_uid = "1.2.826.0.1.3680043.8.498.777"
        batches = [[sample("CT_small.dcm", tmp_path / f"in{b}" / f"{i}.dcm", study_uid=study_uid,
                           series_uid=f"{study_uid}.{b}") for i in range(10)] for b in range(2)]

        def send(batch: list[Path]) -> subprocess.CompletedProcess[str]:
            return subprocess.run([DCMTK_STORESCU, "-aet", "CT01", "-aec", "RADSYNC", "127.0.0.1", str(port),
                                   *map(str, batch)], env=DCMTK_ENV, capture_output=True, text=True, timeout=120)

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(send, batches))
        assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    finally:
        workers.stop()
    assert workers.pids == []
    uids = [dcmread(p, stop_before_pixels=True).SOPInstanceUID for batch in batches for p in batch]
    stored = run(container, lambda uow: [uow.studies.instance(uid) for uid in uids])
    assert all(s is not None for s in stored)
    assert {s.study_instance_uid for s in stored} == {study_uid}  # one study, whichever process stored what
    assert all(container.blobs.verify(s.blob_key) for s in stored)
    view = run(container, lambda uow: container.studies.get_study(uow, study_uid))
    assert view.study.state is StudyState.UNASSIGNED
    container.engines.dispose()


def test_a_killed_worker_is_replaced_and_stop_still_works(tmp_path: Path) -> None:
    import os
    import signal
    import socket
    import time

    settings = archive_settings(tmp_path / "data", dicom_processes=2)
    container = build_container(settings)
    workers = DicomWorkers(settings, 2)
    port = workers.start()
    try:
        victim = workers.pids[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (victim in workers.pids or len(workers.pids) != 2):
            time.sleep(0.2)
        assert victim not in workers.pids and len(workers.pids) == 2
        for _ in range(4):  # the port keeps accepting whichever process the kernel picks
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
    finally:
        started = time.monotonic()
        workers.stop()
        container.engines.dispose()
    assert workers.pids == []
    assert time.monotonic() - started < 30  # no hang on stop after a crash


def _sockets(pid: int) -> int:
    import os

    fds = os.listdir(f"/proc/{pid}/fd")
    return sum(1 for fd in fds if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))


def test_associations_are_spread_over_the_workers_and_a_stopped_worker_leaves_the_listener_up(
    tmp_path: Path,
) -> None:
    """One listening socket shared by the workers, the least busy one accepting (SO_REUSEPORT hashed 3:1)."""
    import os
    import signal
    import time

    from pynetdicom import AE

    settings = archive_settings(tmp_path / "data", dicom_processes=2)
    container = build_container(settings)
    workers = DicomWorkers(settings, 2)
    port = workers.start()
    scu = AE(ae_title="CT01")
    scu.add_requested_context("1.2.840.10008.1.1")
    try:
        before = {pid: _sockets(pid) for pid in workers.pids}
        associations = []
        for _ in range(4):
            assoc = scu.associate("127.0.0.1", port, ae_title="RADSYNC")
            assert assoc.is_established
            associations.append(assoc)
            time.sleep(0.2)
        served = {pid: _sockets(pid) - before[pid] for pid in workers.pids}
        assert sum(served.values()) == 4 and min(served.values()) >= 1, served
        for assoc in associations:
            assert assoc.send_c_echo().Status == 0
            assoc.release()
        victim = workers.pids[0]
        os.kill(victim, signal.SIGTERM)  # a clean stop closes its descriptor only, never the shared socket
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (victim in workers.pids or len(workers.pids) != 2):
            time.sleep(0.2)
        assert victim not in workers.pids and len(workers.pids) == 2
        for _ in range(4):  # the survivor (and then the replacement) keep accepting on the same socket
            assoc = scu.associate("127.0.0.1", port, ae_title="RADSYNC")
            assert assoc.is_established and assoc.send_c_echo().Status == 0
            assoc.release()
    finally:
        workers.stop()
        container.engines.dispose()


@pytest.mark.parametrize(("cpus", "expected"), [(1, 1), (2, 2), (4, 4), (8, 4), (None, 1)])
def test_auto_process_count_is_the_cpu_count_up_to_four(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpus: int | None, expected: int
) -> None:
    monkeypatch.setattr("radsync.adapters.dicom.workers.os.cpu_count", lambda: cpus)
    assert process_count(archive_settings(tmp_path, dicom_processes=0)) == expected
    assert process_count(archive_settings(tmp_path, dicom_processes=3)) == 3
