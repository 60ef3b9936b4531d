"""A small archive for the Query/Retrieve tests: pydicom's bundled CT/MR files re-UID'd, stored through the app.

Instances go in the way the storage SCP will put them: the file into the FileBlobStore, its header values into
``StudyService.record_instance`` (the tests do not depend on the C-STORE SCP). Orders are placed through
``OrderService``, so reconciliation links the studies exactly as in production.

Contents (patient JANE = P1^^^HOSP, "Doe^Jane", born 1980-03-04):

* STUDY_MATCHED: order ACC1 (RP1/SPS1) and ACC2 both linked (grouped: the images name both accessions in their
  Request Attributes Sequence); two CT instances (ISO_IR 100) in one series and one MR instance in another, with
  no accession number in the header; plus one instance with another patient's ID, quarantined.
* STUDY_UNASSIGNED: patient "X9", "Nobody^Known", accession "UNKNOWN-ACC", study date 2024-01-15.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
from dataclasses import dataclass, replace
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.sequence import Sequence
from tests.app.imaging import JANE, Hub

from radsync.adapters.blobstore import FileBlobStore
from radsync.adapters.persistence.engine import Engines
from radsync.app.studies import InstanceReceived
from radsync.domain.ids import EntityId, Issuer, PatientId
from radsync.domain.names import PersonName
from radsync.domain.patient import Sex
from radsync.domain.study import InstanceSummary, RequestItem, SeriesHeader, StudyHeader

ROOT = "1.2.826.0.1.3680043.10.999"
STUDY_MATCHED = f"{ROOT}.1"
STUDY_UNASSIGNED = f"{ROOT}.2"
SERIES_CT = f"{STUDY_MATCHED}.1"
SERIES_MR = f"{STUDY_MATCHED}.2"
SERIES_OTHER = f"{STUDY_UNASSIGNED}.1"
QUARANTINED_SOP = f"{ROOT}.9.9"
_sops = itertools.count(1)


@dataclass
class Archive:
    hub: Hub
    blobs: FileBlobStore
    keys: dict[str, str]  # SOP Instance UID -> blob key


def dicom_file(
    template: str,
    *,
    study: str,
    series: str,
    sop: str,
    patient_id: str,
    issuer: str,
    name: str,
    accession: str = "",
    study_date: str = "20240612",
    request_accessions: tuple[str, ...] = (),
) -> bytes:
    ds = dcmread(get_testdata_file(template))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.PatientID, ds.IssuerOfPatientID, ds.PatientName = patient_id, issuer, name
    ds.AccessionNumber = accession
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.StudyDescription = "Chest"
    if request_accessions:
        items = []
        for acc in request_accessions:
            item = Dataset()
            item.AccessionNumber = acc
            items.append(item)
        ds.RequestAttributesSequence = Sequence(items)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def received(data: bytes, calling: str = "CT01") -> InstanceReceived:
    """The values the storage SCP extracts from a header (what ``record_instance`` takes)."""
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    items = tuple(RequestItem(EntityId(i.get("AccessionNumber", ""))) for i in ds.get("RequestAttributesSequence", []))
    return InstanceReceived(
        study_instance_uid=ds.StudyInstanceUID,
        series=SeriesHeader(ds.SeriesInstanceUID, ds.Modality, int(ds.get("SeriesNumber", 1) or 1), "",
                            request_items=items),
        instance=InstanceSummary(ds.SOPInstanceUID, ds.SOPClassUID, ds.file_meta.TransferSyntaxUID, None,  # type: ignore[arg-type]
                                 int(ds.get("InstanceNumber", 1) or 1)),
        header=StudyHeader(
            patient_id=PatientId(str(ds.PatientID), Issuer(str(ds.get("IssuerOfPatientID", "")))),
            patient_name=PersonName.from_canonical(str(ds.PatientName)),
            sex=Sex.UNKNOWN,
            accession=EntityId(str(ds.get("AccessionNumber", ""))),
            study_date=dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date(),
            study_time=dt.time(10, 15),
            description=str(ds.get("StudyDescription", "")),
            modalities=(ds.Modality,),
        ),
        calling_ae_title=calling,
    )


def store(archive: Archive, data: bytes) -> str:
    ref = archive.blobs.put(data)
    command = received(data)
    command = replace(command, instance=replace(command.instance, blob=ref))
    archive.hub.store(command)
    archive.keys[command.instance.sop_instance_uid] = ref.key
    return command.instance.sop_instance_uid


def build_archive(engines: Engines, data_dir: Path) -> Archive:
    archive = Archive(Hub(engines), FileBlobStore(data_dir / "blobs"), {})
    archive.hub.place("ACC1", JANE, study_uid=STUDY_MATCHED)
    archive.hub.place("ACC2", JANE)
    common = {"study": STUDY_MATCHED, "patient_id": "P1", "issuer": "HOSP", "name": "Doe^Jane",
              "request_accessions": ("ACC1", "ACC2")}
    store(archive, dicom_file("CT_small.dcm", series=SERIES_CT, sop=f"{ROOT}.1.1.1", **common))  # type: ignore[arg-type]
    store(archive, dicom_file("CT_small.dcm", series=SERIES_CT, sop=f"{ROOT}.1.1.2", **common))  # type: ignore[arg-type]
    store(archive, dicom_file("MR_small.dcm", series=SERIES_MR, sop=f"{ROOT}.1.2.1", **common))  # type: ignore[arg-type]
    store(archive, dicom_file("CT_small.dcm", study=STUDY_MATCHED, series=SERIES_CT, sop=QUARANTINED_SOP,
                              patient_id="P777", issuer="HOSP", name="Other^Person"))
    store(archive, dicom_file("CT_small.dcm", study=STUDY_UNASSIGNED, series=SERIES_OTHER, sop=f"{ROOT}.2.1.1",
                              patient_id="X9", issuer="", name="Nobody^Known", accession="UNKNOWN-ACC",
                              study_date="20240115"))
    return archive
