"""Query/Retrieve C-FIND over loopback with dcmtk's findscu (Study Root and Patient Root) and pynetdicom (C-CANCEL).

The archive (qr_archive.py) is stored through the app use cases; answers must show the current truth from the
database: the linked patient's demographics and the linked orders' accessions for a matched study, the values as
received for an unassigned one; quarantined instances never.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]
from qr_archive import (  # helper module next to this file
    QUARANTINED_SOP,
    SERIES_CT,
    STUDY_MATCHED,
    STUDY_UNASSIGNED,
    Archive,
    build_archive,
    dicom_file,
    store,
)
from tests.app.imaging import JANE

from radsync.adapters.dicom.server import DicomServer
from radsync.adapters.persistence.engine import Engines, create_engines
from radsync.adapters.persistence.migrate import upgrade
from radsync.app.commands import UpdatePatient
from radsync.config import Settings
from radsync.domain.names import PersonName
from radsync.domain.patient import PatientUpdate

FINDSCU = "/usr/bin/findscu"
needs_dcmtk = pytest.mark.skipif(not os.path.exists(FINDSCU), reason="dcmtk is not installed")
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


@pytest.fixture(scope="module")
def qr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Archive, int, Engines]]:
    data_dir = tmp_path_factory.mktemp("qr")
    engines = create_engines(f"sqlite:///{data_dir / 'radsync.db'}")
    upgrade(engines.write)
    archive = build_archive(engines, data_dir)
    server = DicomServer(Settings(data_dir=data_dir, dicom_port=0, ae_title="RADSYNC", qr_max_answers=500), engines)
    port = server.start()
    try:
        yield archive, port, engines
    finally:
        server.stop()
        engines.dispose()


def findscu(port: int, out: Path, *keys: str, root: str = "-S") -> list[Dataset]:
    """Run dcmtk's findscu and return the answers it extracted (rsp0001.dcm ...)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("rsp*.dcm"):
        old.unlink()
    argv = [FINDSCU, root, "-aec", "RADSYNC", "-X", "-od", str(out)]
    for key in keys:  # in order: a later -k for the same key wins
        argv += ["-k", key]
    argv += ["127.0.0.1", str(port)]
    result = subprocess.run(argv, capture_output=True, text=True, env=DCMTK_ENV, timeout=60)
    assert result.returncode == 0, result.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def study_keys(*extra: str) -> tuple[str, ...]:
    return ("QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName", "PatientID", "AccessionNumber",
            "StudyDate", "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", *extra)


@needs_dcmtk
def test_study_root_study_level_by_patient_id_answers_current_truth(qr, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, port, _ = qr
    answers = findscu(port, tmp_path, *study_keys("PatientID=P1"))
    assert len(answers) == 1
    ds = answers[0]
    assert ds.StudyInstanceUID == STUDY_MATCHED
    assert ds.AccessionNumber == "ACC1"  # from the linked order: the header had none
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.NumberOfStudyRelatedSeries == 2
    assert ds.NumberOfStudyRelatedInstances == 3  # the quarantined instance is not counted
    assert set(ds.ModalitiesInStudy) == {"CT", "MR"}
    assert "IssuerOfPatientID" not in ds  # only requested keys


@needs_dcmtk
def test_any_linked_accession_finds_the_grouped_study(qr, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, port, _ = qr
    for accession in ("ACC1", "ACC2"):
        answers = findscu(port, tmp_path, *study_keys(f"AccessionNumber={accession}"))
        assert [a.StudyInstanceUID for a in answers] == [STUDY_MATCHED]


@needs_dcmtk
def test_unassigned_study_answers_as_received(qr, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, port, _ = qr
    answers = findscu(port, tmp_path, *study_keys("AccessionNumber=UNKNOWN-ACC"))
    assert len(answers) == 1
    assert answers[0].StudyInstanceUID == STUDY_UNASSIGNED
    assert str(answers[0].PatientName) == "Nobody^Known"
    assert answers[0].PatientID == "X9"


@needs_dcmtk
def test_matching_date_range_wildcard_and_uid_list(qr, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, port, _ = qr
    by_date = findscu(port, tmp_path, *study_keys("StudyDate=20240101-20240131"))
    assert [a.StudyInstanceUID for a in by_date] == [STUDY_UNASSIGNED]
    open_range = findscu(port, tmp_path, *study_keys("StudyDate=20240601-"))
    assert [a.StudyInstanceUID for a in open_range] == [STUDY_MATCHED]
    by_name = findscu(port, tmp_path, *study_keys("PatientName=nob*"))  # case-insensitive, as for the MWL
    assert [a.StudyInstanceUID for a in by_name] == [STUDY_UNASSIGNED]
    by_uids = findscu(port, tmp_path, *study_keys(f"StudyInstanceUID={STUDY_MATCHED}\\{STUDY_UNASSIGNED}"))
    assert sorted(a.StudyInstanceUID for a in by_uids) == sorted([STUDY_MATCHED, STUDY_UNASSIGNED])
    universal = findscu(port, tmp_path, *study_keys())
    assert len(universal) == 2
    assert findscu(port, tmp_path, *study_keys("PatientID=NOPE")) == []


@needs_dcmtk
def test_series_and_image_levels_never_show_quarantined_instances(qr, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, port, _ = qr
    series = findscu(port, tmp_path, "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={STUDY_MATCHED}",
                     "SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances")
    assert {(s.SeriesInstanceUID, s.Modality, s.NumberOfSeriesRelatedInstances) for s in series} == {
        (SERIES_CT, "CT", 2), (f"{STUDY_MATCHED}.2", "MR", 1)}
    images = findscu(port, tmp_path, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={STUDY_MATCHED}",
                     f"SeriesInstanceUID={SERIES_CT}", "SOPInstanceUID", "SOPClassUID", "InstanceNumber")
    uids = {i.SOPInstanceUID for i in images}
    assert len(uids) == 2 and QUARANTINED_SOP not in uids
    only_ct = findscu(port, tmp_path, "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={STUDY_MATCHED}",
                      "SeriesInstanceUID", "Modality=CT")
    assert [s.SeriesInstanceUID for s in only_ct] == [SERIES_CT]


@needs_dcmtk
def test_series_query_without_study_uid_is_refused(qr, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, port, _ = qr
    argv = [FINDSCU, "-v", "-S", "-aec", "RADSYNC", "-k", "QueryRetrieveLevel=SERIES", "-k", "SeriesInstanceUID",
            "127.0.0.1", str(port)]
    result = subprocess.run(argv, capture_output=True, text=True, env=DCMTK_ENV, timeout=60)
    output = (result.stdout + result.stderr).lower()
    assert "datasetdoesnotmatchsopclass" in output, output  # dcmtk's name for 0xA900


@needs_dcmtk
def test_patient_root_patient_level_and_a_demographic_correction_shows_at_once(qr, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    archive, port, _ = qr
    keys = ("QueryRetrieveLevel=PATIENT", "PatientName", "PatientID", "PatientBirthDate",
            "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedInstances")
    patients = {p.PatientID: p for p in findscu(port, tmp_path, *keys, root="-P")}
    assert set(patients) == {"P1", "X9"}
    assert patients["P1"].NumberOfPatientRelatedStudies == 1
    assert patients["P1"].NumberOfPatientRelatedInstances == 3
    assert patients["P1"].PatientBirthDate == "19800304"
    # A08-style correction through the app: one patients row changes, no file is touched.
    update = PatientUpdate(JANE, {"name": PersonName.from_canonical("Łukasiewicz^Jane")})
    archive.hub.run(lambda uow: archive.hub.orders.update_patient(uow, UpdatePatient(update)))
    try:
        corrected = findscu(port, tmp_path, "QueryRetrieveLevel=STUDY", "PatientID=P1", "StudyInstanceUID",
                            "PatientName", root="-P")
        assert [str(a.PatientName) for a in corrected] == ["Łukasiewicz^Jane"]
        by_new_name = findscu(port, tmp_path, *study_keys("PatientName=*UKASIEWICZ^JANE"))
        assert [a.StudyInstanceUID for a in by_new_name] == [STUDY_MATCHED]
        assert findscu(port, tmp_path, *study_keys("PatientName=Doe*")) == []
    finally:
        restore = PatientUpdate(JANE, {"name": PersonName.from_canonical("Doe^Jane")})
        archive.hub.run(lambda uow: archive.hub.orders.update_patient(uow, UpdatePatient(restore)))


def test_c_cancel_stops_the_answers(tmp_path: Path) -> None:
    data_dir = tmp_path
    engines = create_engines(f"sqlite:///{data_dir / 'radsync.db'}")
    upgrade(engines.write)
    archive = build_archive(engines, data_dir)
    for i in range(300):
        store(archive, dicom_file("MR_small.dcm", study=f"1.2.826.0.1.3680043.10.998.{i}",
                                  series=f"1.2.826.0.1.3680043.10.998.{i}.1", sop=f"1.2.826.0.1.3680043.10.998.{i}.1.1",
                                  patient_id=f"C{i}", issuer="", name=f"Cancel^Test{i}"))
    server = DicomServer(Settings(data_dir=data_dir, dicom_port=0, ae_title="RADSYNC"), engines)
    port = server.start()
    try:
        ae = AE(ae_title="CANCELLER")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", port, ae_title="RADSYNC")
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        query.PatientName = "Cancel*"
        statuses = []
        names = []
        context_id = assoc._get_valid_context(StudyRootQueryRetrieveInformationModelFind, "", "scu").context_id
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind, msg_id=7):
            statuses.append(status.Status)
            if identifier is not None:
                names.append(str(identifier.PatientName))
            if len(statuses) == 1:
                assoc.send_c_cancel(7, context_id)
        assoc.release()
        assert statuses[-1] == 0xFE00
        assert names and all(n.startswith("Cancel^Test") for n in names)  # decodable (Implicit VR context)
        assert len(statuses) < 301
    finally:
        server.stop()
        engines.dispose()


def test_dcmtk_is_dcmtk() -> None:
    """The tests call /usr/bin/findscu explicitly: pynetdicom installs a Python ``findscu`` that shadows it."""
    if shutil.which("findscu") and os.path.exists(FINDSCU):
        out = subprocess.run([FINDSCU, "--version"], capture_output=True, text=True).stdout
        assert "dcmtk" in out.lower()
