"""C-GET and C-MOVE over loopback with dcmtk's getscu and movescu, a real storescp as the move destination.

What must hold (ARCHITECTURE invariant 5): the received copy carries the CURRENT patient name after a correction
made through the app, with an Original Attributes Sequence item holding the old value, while the archive's own
file stays byte-identical; quarantined instances are never sent; an unknown destination gets 0xA801.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from qr_archive import (
    QUARANTINED_SOP,
    ROOT,
    SERIES_MR,
    STUDY_MATCHED,
    STUDY_UNASSIGNED,
    Archive,
    build_archive,
)
from tests.app.imaging import JANE
from tests.dcmtk import running_storescp

from radsync.adapters.dicom.server import DicomServer
from radsync.adapters.persistence.engine import Engines, create_engines
from radsync.adapters.persistence.migrate import upgrade
from radsync.app.commands import UpdatePatient
from radsync.config import DicomDestinationSettings, Settings
from radsync.domain.names import PersonName
from radsync.domain.patient import PatientUpdate

GETSCU, MOVESCU, STORESCP = "/usr/bin/getscu", "/usr/bin/movescu", "/usr/bin/storescp"
pytestmark = pytest.mark.skipif(
    not all(os.path.exists(t) for t in (GETSCU, MOVESCU, STORESCP)), reason="dcmtk is not installed"
)
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
NEW_NAME = "Łukasiewicz^Jane"  # not in ISO_IR 100 (the CT files' set): the copy must switch to UTF-8


@pytest.fixture(scope="module")
def storescp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    out = tmp_path_factory.mktemp("received")
    with running_storescp(out) as port:
        yield port, out


@pytest.fixture(scope="module")
def qr(tmp_path_factory: pytest.TempPathFactory, storescp: tuple[int, Path]) -> Iterator[tuple[Archive, int]]:
    data_dir = tmp_path_factory.mktemp("qr")
    engines: Engines = create_engines(f"sqlite:///{data_dir / 'radsync.db'}")
    upgrade(engines.write)
    archive = build_archive(engines, data_dir)
    # The correction happens after the images were stored: only the patients row changes.
    update = PatientUpdate(JANE, {"name": PersonName.from_canonical(NEW_NAME)})
    archive.hub.run(lambda uow: archive.hub.orders.update_patient(uow, UpdatePatient(update)))
    settings = Settings(
        data_dir=data_dir,
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
        engines.dispose()


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=DCMTK_ENV, timeout=60)


def assert_current_truth(ds: Dataset) -> None:
    assert str(ds.PatientName) == NEW_NAME
    assert ds.AccessionNumber == "ACC1"
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    record = ds.OriginalAttributesSequence[-1]
    assert record.ReasonForTheAttributeModification == "COERCE"
    assert record.ModifyingSystem == "RADSYNC"
    assert record.AttributeModificationDateTime
    old = record.ModifiedAttributesSequence[0]
    assert str(old.PatientName) == "Doe^Jane"
    assert old.AccessionNumber in ("", None)
    accessions = sorted(item.AccessionNumber for item in ds.RequestAttributesSequence)
    assert accessions == ["ACC1", "ACC2"]  # every linked order


def assert_originals_untouched(archive: Archive) -> None:
    for key in archive.keys.values():
        assert hashlib.sha256(archive.blobs.read(key)).hexdigest() == key


def test_c_get_study_sends_current_truth_and_keeps_the_original(qr, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    archive, port = qr
    result = run([GETSCU, "-v", "-S", "-aec", "RADSYNC", "-od", str(tmp_path), "-k", "QueryRetrieveLevel=STUDY",
                  "-k", f"StudyInstanceUID={STUDY_MATCHED}", "127.0.0.1", str(port)])
    assert result.returncode == 0, result.stderr
    files = [dcmread(p) for p in tmp_path.iterdir() if p.is_file()]
    assert len(files) == 3  # two CT and one MR; the quarantined instance is never sent
    assert QUARANTINED_SOP not in {f.SOPInstanceUID for f in files}
    for ds in files:
        assert_current_truth(ds)
    assert_originals_untouched(archive)


def test_c_get_series_level(qr, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, port = qr
    result = run([GETSCU, "-S", "-aec", "RADSYNC", "-od", str(tmp_path), "-k", "QueryRetrieveLevel=SERIES",
                  "-k", f"StudyInstanceUID={STUDY_MATCHED}", "-k", f"SeriesInstanceUID={SERIES_MR}",
                  "127.0.0.1", str(port)])
    assert result.returncode == 0, result.stderr
    files = [dcmread(p) for p in tmp_path.iterdir() if p.is_file()]
    assert [f.Modality for f in files] == ["MR"]
    assert_current_truth(files[0])


def test_c_move_to_storescp_sends_current_truth(qr, storescp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    archive, port = qr
    _, received_dir = storescp
    before = set(received_dir.iterdir())
    result = run([MOVESCU, "-v", "-S", "-aec", "RADSYNC", "-aem", "STORESCP", "-k", "QueryRetrieveLevel=STUDY",
                  "-k", f"StudyInstanceUID={STUDY_MATCHED}", "127.0.0.1", str(port)])
    assert result.returncode == 0, result.stderr
    assert "received final move response (success)" in result.stderr.lower()
    assert "received move response 3 (pending)" in result.stderr.lower()
    new = [dcmread(p) for p in set(received_dir.iterdir()) - before]
    assert len(new) == 3
    for ds in new:
        assert_current_truth(ds)
    assert_originals_untouched(archive)


def test_c_move_of_an_unassigned_study_sends_it_as_received(qr, storescp) -> None:  # type: ignore[no-untyped-def]
    archive, port = qr
    _, received_dir = storescp
    before = set(received_dir.iterdir())
    result = run([MOVESCU, "-S", "-aec", "RADSYNC", "-aem", "STORESCP", "-k", "QueryRetrieveLevel=STUDY",
                  "-k", f"StudyInstanceUID={STUDY_UNASSIGNED}", "127.0.0.1", str(port)])
    assert result.returncode == 0, result.stderr
    new = [p for p in set(received_dir.iterdir()) - before]
    assert len(new) == 1
    sent = new[0].read_bytes()
    original = archive.blobs.read(archive.keys[f"{STUDY_UNASSIGNED}.1.1"])
    assert "OriginalAttributesSequence" not in dcmread(new[0])
    assert str(dcmread(new[0]).PatientName) == "Nobody^Known"
    assert len(sent) > 0 and len(original) > 0


def test_c_move_to_an_unknown_destination_is_refused(qr) -> None:  # type: ignore[no-untyped-def]
    _, port = qr
    result = run([MOVESCU, "-v", "-S", "-aec", "RADSYNC", "-aem", "NOWHERE", "-k", "QueryRetrieveLevel=STUDY",
                  "-k", f"StudyInstanceUID={STUDY_MATCHED}", "127.0.0.1", str(port)])
    assert "movedestinationunknown" in (result.stdout + result.stderr).lower().replace(" ", "")


def test_c_get_with_an_unreadable_original_ends_with_warning_and_counts(tmp_path: Path) -> None:
    """pynetdicom as C-GET SCU: a missing file is a failed sub-operation (0xB000), the others still go."""
    from pynetdicom import AE, build_role
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        CTImageStorage,
        MRImageStorage,
        StudyRootQueryRetrieveInformationModelGet,
    )

    from radsync.adapters.dicom.status import RetrieveStatus

    engines = create_engines(f"sqlite:///{tmp_path / 'radsync.db'}")
    upgrade(engines.write)
    archive = build_archive(engines, tmp_path)
    lost = archive.blobs.path(archive.keys[f"{ROOT}.1.2.1"])  # the MR instance's original
    lost.chmod(0o644)
    lost.unlink()
    server = DicomServer(Settings(data_dir=tmp_path, dicom_port=0, ae_title="RADSYNC"), engines)
    port = server.start()
    received: list[str] = []

    def on_store(event):  # type: ignore[no-untyped-def]
        received.append(event.dataset.SOPInstanceUID)
        return 0x0000

    try:
        ae = AE(ae_title="GETTER")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        for storage in (CTImageStorage, MRImageStorage):
            ae.add_requested_context(storage)
        roles = [build_role(CTImageStorage, scp_role=True), build_role(MRImageStorage, scp_role=True)]
        from pynetdicom import evt

        assoc = ae.associate("127.0.0.1", port, ae_title="RADSYNC", ext_neg=roles,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = STUDY_MATCHED
        responses = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
        assoc.release()
        final = responses[-1][0]
        assert final.Status == RetrieveStatus.SUB_OPERATIONS_COMPLETE_WITH_FAILURES
        assert final.NumberOfCompletedSuboperations == 2
        assert final.NumberOfFailedSuboperations == 1
        assert len(received) == 2
        assert f"{ROOT}.1.2.1" in str(responses[-1][1].FailedSOPInstanceUIDList)
    finally:
        server.stop()
        engines.dispose()


def test_dicom_destinations_load_from_toml(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from radsync.config import load_settings

    config = tmp_path / "radsync.toml"
    config.write_text('[[dicom_destinations]]\nae_title = "VIEWER"\nhost = "127.0.0.1"\nport = 11113\n')
    settings = load_settings(config)
    assert settings.dicom_destinations == (DicomDestinationSettings(ae_title="VIEWER", host="127.0.0.1", port=11113),)
    config.write_text(config.read_text() * 2)
    with pytest.raises(ValidationError, match="configured twice"):
        load_settings(config)
