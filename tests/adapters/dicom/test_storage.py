"""The Storage SCP over loopback with real peers: dcmtk's storescu and pynetdicom as an SCU (PS3.4 Annex B).

Each test gets a fresh archive (data dir, database, blob store) and re-UID'd copies of pydicom's test files.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from archive_samples import (  # helper module next to this file
    DCMTK_ENV,
    DCMTK_STORESCU,
    dataset_bytes,
    place_order,
    run,
    running_archive,
    sample,
    step_statuses,
)
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, MRImageStorage  # type: ignore[attr-defined]

from radsync.adapters.dicom.status import NStatus
from radsync.bootstrap import Container
from radsync.domain.study import StudyState

needs_dcmtk = pytest.mark.skipif(not Path(DCMTK_STORESCU).exists(), reason="dcmtk is not installed")


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[tuple[Container, int]]:
    with running_archive(tmp_path / "data") as running:
        yield running


def send(port: int, *paths: Path, calling: str = "CT01") -> list[int]:
    """C-STORE each file on one pynetdicom association (Explicit VR Little Endian files); the statuses."""
    ae = AE(ae_title=calling)
    for sop_class in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)  # the files' own: sent without conversion
    assoc = ae.associate("127.0.0.1", port, ae_title="RADSYNC")
    assert assoc.is_established
    chunked = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send each file's data set bytes as they are, never re-encoded
    try:
        return [int(assoc.send_c_store(p).Status) for p in paths]
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = chunked
        assoc.release()


def stored(container: Container, sop_uid: str) -> Any:
    return run(container, lambda uow: uow.studies.instance(sop_uid))


def study_state(container: Container, study_uid: str) -> StudyState:
    return run(container, lambda uow: container.studies.get_study(uow, study_uid)).study.state


@needs_dcmtk
def test_storescu_stores_plain_and_compressed_instances_byte_for_byte(
    archive: tuple[Container, int], tmp_path: Path
) -> None:
    container, port = archive
    # storescu proposes a compressed transfer syntax only when told which (-xw JPEG 2000, -xr RLE, -xy JPEG 8-bit)
    batches = {"": ("CT_small.dcm", "MR_small.dcm"), "-xw": ("JPEG2000.dcm",), "-xr": ("SC_rgb_rle.dcm",),
               "-xy": ("SC_rgb_jpeg_dcmtk.dcm",)}
    files: list[Path] = []
    for option, names in batches.items():
        batch = [sample(name, tmp_path / "in" / name) for name in names]
        files += batch
        result = subprocess.run([DCMTK_STORESCU, *([option] if option else []), "-aet", "CT01", "-aec", "RADSYNC",
                                 "127.0.0.1", str(port), *map(str, batch)],
                                env=DCMTK_ENV, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        instance = stored(container, ds.SOPInstanceUID)
        assert instance is not None, path.name
        on_disk = container.blobs.path(instance.blob_key)
        kept = dcmread(on_disk)
        assert kept.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID  # stored as received
        sent = dcmread(path)
        sent.pop("DataSetTrailingPadding", None)  # storescu drops trailing padding before sending
        assert kept == sent  # every attribute and the pixel data as storescu sent them


def test_instance_is_on_disk_and_indexed_when_success_arrives(archive: tuple[Container, int], tmp_path: Path) -> None:
    container, port = archive
    path = sample("CT_small.dcm", tmp_path / "ct.dcm")
    sop_uid = dcmread(path).SOPInstanceUID
    assert send(port, path) == [NStatus.SUCCESS]
    instance = stored(container, sop_uid)  # checked right after the response: no waiting
    assert instance is not None
    assert container.blobs.verify(instance.blob_key)
    assert dataset_bytes(container.blobs.path(instance.blob_key)) == dataset_bytes(path)


def test_identical_resend_is_success_and_changes_nothing(archive: tuple[Container, int], tmp_path: Path) -> None:
    container, port = archive
    path = sample("CT_small.dcm", tmp_path / "ct.dcm")
    assert send(port, path) == [NStatus.SUCCESS]
    files_before = sorted(p.name for p in container.blobs.root.rglob("*") if p.is_file())
    assert send(port, path, path) == [NStatus.SUCCESS, NStatus.SUCCESS]
    assert sorted(p.name for p in container.blobs.root.rglob("*") if p.is_file()) == files_before


def test_conflicting_resend_keeps_the_original_and_sets_the_newcomer_aside(
    archive: tuple[Container, int], tmp_path: Path
) -> None:
    container, port = archive
    path = sample("CT_small.dcm", tmp_path / "ct.dcm")
    original = path.read_bytes()
    assert send(port, path) == [NStatus.SUCCESS]
    first = stored(container, dcmread(path).SOPInstanceUID)
    changed = dcmread(path)
    changed.SeriesDescription = "edited on the modality"
    changed.save_as(tmp_path / "changed.dcm")
    assert send(port, tmp_path / "changed.dcm") == [NStatus.WARNING_DUPLICATE_KEPT_ASIDE]
    after = stored(container, dcmread(path).SOPInstanceUID)
    assert after.blob_key == first.blob_key  # the index still points at the original
    assert dataset_bytes(container.blobs.path(after.blob_key)) == dataset_bytes(path)
    assert path.read_bytes() == original
    assert len([p for p in container.blobs.root.glob("??/*") if p.is_file()]) == 2  # original + the copy aside


def test_conflicting_resend_can_answer_success(tmp_path: Path) -> None:
    with running_archive(tmp_path / "data", dicom_duplicate_status="success") as (container, port):
        path = sample("CT_small.dcm", tmp_path / "ct.dcm")
        send(port, path)
        changed = dcmread(path)
        changed.SeriesDescription = "edited"
        changed.save_as(tmp_path / "changed.dcm")
        assert send(port, tmp_path / "changed.dcm") == [NStatus.SUCCESS]


def test_study_matching_an_order_moves_its_step_and_unmatched_is_unassigned(
    archive: tuple[Container, int], tmp_path: Path
) -> None:
    container, port = archive
    place_order(container, "ACC1")
    matched = sample("CT_small.dcm", tmp_path / "a.dcm", accession="ACC1")
    unmatched = sample("CT_small.dcm", tmp_path / "b.dcm", accession="NOPE", patient_id="P9")
    assert send(port, matched, unmatched) == [NStatus.SUCCESS, NStatus.SUCCESS]
    assert study_state(container, dcmread(matched).StudyInstanceUID) is StudyState.MATCHED
    assert step_statuses(container, "ACC1") != ["SCHEDULED"]
    assert study_state(container, dcmread(unmatched).StudyInstanceUID) is StudyState.UNASSIGNED


def test_instance_without_sop_instance_uid_is_refused_and_nothing_written(
    archive: tuple[Container, int], tmp_path: Path
) -> None:
    container, port = archive
    ds = dcmread(sample("CT_small.dcm", tmp_path / "ct.dcm"))
    del ds.SOPInstanceUID  # the command still names one (from the File Meta); the data set does not
    ds.save_as(tmp_path / "no-uid.dcm", enforce_file_format=False)
    assert send(port, tmp_path / "no-uid.dcm") == [NStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS]
    assert not [p for p in container.blobs.root.glob("??/*") if p.is_file()]


def test_undecodable_header_is_refused_and_the_listener_keeps_serving(
    archive: tuple[Container, int], tmp_path: Path
) -> None:
    container, port = archive
    good = sample("CT_small.dcm", tmp_path / "ct.dcm")
    raw = good.read_bytes()
    meta_end = 144 + int.from_bytes(raw[140:144], "little")
    # an element claiming 4 GB of value in a tiny data set
    (tmp_path / "broken.dcm").write_bytes(raw[:meta_end] + b"\x08\x00\x16\x00UI\xfe\xff" + b"\x10\x00\x10\x00PN\xff\xffabc")
    broken, fine = send(port, tmp_path / "broken.dcm", good)
    # pydicom reads what it can; either way a failure status, the association and the listener carry on
    assert broken in (NStatus.CANNOT_UNDERSTAND, NStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS)
    assert fine == NStatus.SUCCESS
    assert len([p for p in container.blobs.root.glob("??/*") if p.is_file()]) == 1
