"""Grouped procedures over Q/R (issue 5 §4), SQLite and PostgreSQL: dcmtk's findscu, getscu and movescu.

The archive of qr_archive.py (STUDY_MATCHED fulfils ACC1 and ACC2); then, through the use cases, a further order
ACC4 is linked to it and its MR series is split off to a new study for order ACC3. What must hold: either linked
accession finds the study; the split series is found, listed and retrieved under the new Study Instance UID, with
the received UID in the Original Attributes Sequence, while the stored file stays byte-identical.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from qr_archive import ROOT, SERIES_CT, SERIES_MR, STUDY_MATCHED, Archive, build_archive, dicom_file
from tests.app.imaging import JANE, JOHN
from tests.dcmtk import running_storescp

from radsync.adapters.dicom.server import DicomServer
from radsync.adapters.persistence.engine import Engines
from radsync.app.reconcile import LinkOrder, Split
from radsync.bootstrap import build_container
from radsync.config import DicomDestinationSettings, Settings
from radsync.domain.errors import IdentityConflict
from radsync.domain.ids import EntityId

FINDSCU, GETSCU, MOVESCU = "/usr/bin/findscu", "/usr/bin/getscu", "/usr/bin/movescu"
STORESCP, STORESCU = "/usr/bin/storescp", "/usr/bin/storescu"
pytestmark = pytest.mark.skipif(
    not all(os.path.exists(t) for t in (FINDSCU, GETSCU, MOVESCU, STORESCP, STORESCU)), reason="dcmtk is not installed"
)
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
NEW_STUDY = "1.2.826.0.1.3680043.10.999.77"


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, env=DCMTK_ENV, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    out = tmp_path / "moved"
    out.mkdir()
    with running_storescp(out) as port:
        yield port, out


@pytest.fixture
def grouped(engines: Engines, tmp_path: Path, storescp: tuple[int, Path]) -> Iterator[tuple[Archive, int]]:
    archive = build_archive(engines, tmp_path / "data")
    hub = archive.hub
    hub.place("ACC3", JANE, modality="MR")
    hub.place("ACC4", JANE)
    hub.place("ACC9", JOHN)
    hub.run(lambda uow: hub.studies.link_order(
        uow, LinkOrder(STUDY_MATCHED, EntityId("ACC4"), "alice", "ribs done in the same scan")))
    hub.run(lambda uow: hub.studies.split(
        uow, Split(STUDY_MATCHED, (SERIES_MR,), EntityId("ACC3"), "alice", "MR is the other exam", NEW_STUDY)))
    settings = Settings(
        data_dir=tmp_path / "data",
        dicom_port=0,
        ae_title="RADSYNC",
        dicom_destinations=(DicomDestinationSettings(ae_title="STORESCP", host="127.0.0.1", port=storescp[0]),),
    )
    server = DicomServer(settings, engines)
    port = server.start()
    try:
        yield archive, port
    finally:
        server.stop()


def findscu(port: int, out: Path, *keys: str) -> list[Dataset]:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("rsp*.dcm"):
        old.unlink()
    argv = [FINDSCU, "-S", "-aec", "RADSYNC", "-X", "-od", str(out)]
    for key in keys:
        argv += ["-k", key]
    run([*argv, "127.0.0.1", str(port)])
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def study_level(port: int, out: Path, *keys: str) -> list[Dataset]:
    return findscu(port, out, "QueryRetrieveLevel=STUDY", "StudyInstanceUID", "AccessionNumber",
                   "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", *keys)


def received_dir(tmp_path: Path) -> Path:
    out = tmp_path / "got"
    out.mkdir()
    return out


def assert_split_copy(ds: Dataset) -> None:
    assert ds.StudyInstanceUID == NEW_STUDY
    assert ds.SeriesInstanceUID == SERIES_MR
    assert ds.AccessionNumber == "ACC3"
    assert [item.AccessionNumber for item in ds.RequestAttributesSequence] == ["ACC3"]
    old = ds.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0]
    assert old.StudyInstanceUID == STUDY_MATCHED


def assert_originals_untouched(archive: Archive) -> None:
    for key in archive.keys.values():
        assert hashlib.sha256(archive.blobs.read(key)).hexdigest() == key


def test_c_find_by_any_linked_accession_and_the_split_series_under_the_new_study(grouped, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, port = grouped
    for accession in ("ACC1", "ACC2", "ACC4"):  # ACC4 was linked through the use case, not by the header
        assert [a.StudyInstanceUID for a in study_level(port, tmp_path, f"AccessionNumber={accession}")] == [
            STUDY_MATCHED]
    [new] = study_level(port, tmp_path, "AccessionNumber=ACC3")
    assert (new.StudyInstanceUID, new.AccessionNumber, new.ModalitiesInStudy) == (NEW_STUDY, "ACC3", "MR")
    assert (int(new.NumberOfStudyRelatedSeries), int(new.NumberOfStudyRelatedInstances)) == (1, 1)
    [old] = study_level(port, tmp_path, f"StudyInstanceUID={STUDY_MATCHED}")
    assert (old.ModalitiesInStudy, int(old.NumberOfStudyRelatedSeries)) == ("CT", 1)

    def series_of(uid: str) -> list[str]:
        answers = findscu(port, tmp_path, "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={uid}",
                          "SeriesInstanceUID")
        return [a.SeriesInstanceUID for a in answers]

    assert series_of(NEW_STUDY) == [SERIES_MR]
    assert series_of(STUDY_MATCHED) == [SERIES_CT]


def test_c_get_of_the_original_lists_every_linked_order(grouped, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    archive, port = grouped
    out = received_dir(tmp_path)
    run([GETSCU, "-S", "-aec", "RADSYNC", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
         "-k", f"StudyInstanceUID={STUDY_MATCHED}", "127.0.0.1", str(port)])
    files = [dcmread(p) for p in out.iterdir()]
    assert len(files) == 2 and {f.Modality for f in files} == {"CT"}  # the MR went with the split
    for ds in files:
        assert ds.StudyInstanceUID == STUDY_MATCHED
        items = [(i.AccessionNumber, i.RequestedProcedureID, i.get("ScheduledProcedureStepID", ""))
                 for i in ds.RequestAttributesSequence]
        assert sorted(items) == [("ACC1", "RP1", "SPS1"), ("ACC2", "RP1", "SPS1"), ("ACC4", "RP1", "SPS1")]
    assert_originals_untouched(archive)


def test_c_get_and_c_move_send_the_split_series_under_the_new_uid(grouped, storescp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    archive, port = grouped
    out = received_dir(tmp_path)
    run([GETSCU, "-S", "-aec", "RADSYNC", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
         "-k", f"StudyInstanceUID={NEW_STUDY}", "127.0.0.1", str(port)])
    [got] = [dcmread(p) for p in out.iterdir()]
    assert_split_copy(got)

    _, moved_dir = storescp
    result = run([MOVESCU, "-v", "-S", "-aec", "RADSYNC", "-aem", "STORESCP", "-k", "QueryRetrieveLevel=SERIES",
                  "-k", f"StudyInstanceUID={NEW_STUDY}", "-k", f"SeriesInstanceUID={SERIES_MR}",
                  "127.0.0.1", str(port)])
    assert "received final move response (success)" in result.stderr.lower()
    [moved] = [dcmread(p) for p in moved_dir.iterdir()]
    assert_split_copy(moved)
    assert_originals_untouched(archive)


def test_linking_another_patients_order_is_refused(grouped) -> None:  # type: ignore[no-untyped-def]
    archive, _ = grouped
    with pytest.raises(IdentityConflict):
        archive.hub.run(lambda uow: archive.hub.studies.link_order(
            uow, LinkOrder(STUDY_MATCHED, EntityId("ACC9"), "alice", "wrong patient")))


def test_a_later_c_store_of_a_split_series_is_filed_under_the_new_study(database_url: str, tmp_path: Path) -> None:
    """The modality resends part of the exam under the Study Instance UID it knows: the split holds."""
    data = tmp_path / "data"
    settings = Settings(data_dir=data, database_url=database_url, dicom_port=0, ae_title="RADSYNC")
    container = build_container(settings)
    server: DicomServer | None = None
    try:
        archive = build_archive(container.engines, data)
        archive.hub.place("ACC3", JANE, modality="MR")
        archive.hub.run(lambda uow: archive.hub.studies.split(
            uow, Split(STUDY_MATCHED, (SERIES_MR,), EntityId("ACC3"), "alice", "MR is the other exam", NEW_STUDY)))
        server = DicomServer(settings, container.engines, container)
        port = server.start()
        late = tmp_path / "late.dcm"
        late.write_bytes(dicom_file("MR_small.dcm", study=STUDY_MATCHED, series=SERIES_MR, sop=f"{ROOT}.1.2.9",
                                    patient_id="P1", issuer="HOSP", name="Doe^Jane"))
        run([STORESCU, "-aet", "CT01", "-aec", "RADSYNC", "127.0.0.1", str(port), str(late)])

        answers = findscu(port, tmp_path / "find", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={NEW_STUDY}",
                          f"SeriesInstanceUID={SERIES_MR}", "SOPInstanceUID")
        assert sorted(a.SOPInstanceUID for a in answers) == sorted([f"{ROOT}.1.2.1", f"{ROOT}.1.2.9"])
        [old] = study_level(port, tmp_path / "find", f"StudyInstanceUID={STUDY_MATCHED}")
        assert int(old.NumberOfStudyRelatedSeries) == 1  # the original did not get the series back
    finally:
        if server is not None:
            server.stop()
        container.engines.dispose()
