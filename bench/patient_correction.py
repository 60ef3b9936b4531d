"""A demographic correction for a patient with 10 studies x 1,000 instances vs one with 1 study x 10 instances.

Issue 5's benchmark: the time from the correction (``PATCH /api/patients/{id}``) until a Study Root C-FIND for the
patient's studies and the ops API (``GET /api/patients/{id}``) show the new name, for both patients in the same
run. Target: <= 100 ms, and the ratio between the two <= 2 (the cost must not grow with the instances).

How the archive is filled: through the use cases (``OrderService.place``, ``StudyService.record_instance``), one
order per study so every study is MATCHED and answers with the current patient. One blob (a real, small DICOM
file) is stored per study and every instance row of that study names it: C-FIND and the correction never read
blobs, and 10,000 separate files would only lengthen the fill. Then ``radsync serve`` runs on that data directory
(SQLite, the default) and, ``--runs`` times, alternating the two patients, the script

1. sends the PATCH over HTTP (it returns once the change is committed),
2. runs one C-FIND (/usr/bin/findscu -S, STUDY level, PatientID=..., answers written with -X) and checks that
   every answer carries the new name and the instance counts add up,
3. GETs the patient from the ops API and checks the name.

The table shows the medians of each step and of the total (1 + 2 + 3).

    .venv/bin/python bench/patient_correction.py [--runs 9]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from pydicom import Dataset, dcmread  # noqa: E402
from pydicom.dataset import FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402

from _common import (  # noqa: E402
    HOST,
    RadsyncPorts,
    dcmtk_env,
    machine_line,
    median,
    ms,
    print_table,
    running,
    start_radsync,
)
from radsync.adapters.persistence.unit_of_work import transaction  # noqa: E402
from radsync.app.commands import PlaceOrder  # noqa: E402
from radsync.app.studies import InstanceReceived  # noqa: E402
from radsync.bootstrap import build_container  # noqa: E402
from radsync.clock import utc_now  # noqa: E402
from radsync.config import Settings  # noqa: E402
from radsync.domain.ids import EntityId, Issuer, PatientId  # noqa: E402
from radsync.domain.names import PersonName  # noqa: E402
from radsync.domain.order import ImagingOrder, RequestedProcedure, ScheduledStep  # noqa: E402
from radsync.domain.patient import PatientUpdate, Sex  # noqa: E402
from radsync.domain.study import InstanceSummary, SeriesHeader, StudyHeader  # noqa: E402

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
HOSP = Issuer("HOSP")
DAY = dt.date(2025, 3, 4)
PATIENTS = {"BIG": (10, 1000), "SMALL": (1, 10)}  # patient ID -> (studies, instances per study)


def small_file(study_uid: str, sop_uid: str, patient: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CT_IMAGE, sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.StudyInstanceUID = CT_IMAGE, sop_uid, study_uid
    ds.SeriesInstanceUID, ds.PatientID, ds.PatientName, ds.Modality = f"{study_uid}.1", patient, "Before^Name", "CT"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def populate(data_dir: Path) -> None:
    container = build_container(Settings(data_dir=data_dir))
    started = time.perf_counter()
    for patient_value, (studies, per_study) in PATIENTS.items():
        patient = PatientId(patient_value, HOSP)
        update = PatientUpdate(patient, {"name": PersonName.from_canonical("Before^Name"),
                                         "birth_date": dt.date(1960, 5, 6), "sex": Sex.FEMALE})
        for s in range(studies):
            study_uid = f"1.2.826.0.1.3680043.10.7070.{patient_value == 'BIG' and 1 or 2}.{s}"
            accession = f"{patient_value}-{s}"
            with transaction(container.engines.write, utc_now) as uow:
                order = ImagingOrder(patient_id=patient, accession=EntityId(accession), procedures=(
                    RequestedProcedure("RP1", study_uid, description="CT exam", steps=(
                        ScheduledStep("SPS1", "CT", dt.datetime.combine(DAY, dt.time(10))),)),))
                container.orders.place(uow, PlaceOrder(update, order))
                blob = container.blobs.put(small_file(study_uid, f"{study_uid}.1.1", patient_value))
                for i in range(per_study):
                    container.studies.record_instance(uow, InstanceReceived(
                        study_instance_uid=study_uid,
                        series=SeriesHeader(f"{study_uid}.1", "CT", 1),
                        instance=InstanceSummary(f"{study_uid}.1.{i + 1}", CT_IMAGE, str(ExplicitVRLittleEndian),
                                                 blob, i + 1),
                        header=StudyHeader(patient_id=patient, patient_name=PersonName.from_canonical("Before^Name"),
                                           accession=EntityId(accession), study_date=DAY,
                                           study_time=dt.time(10, 15), modalities=("CT",)),
                        calling_ae_title="CT01",
                    ))
    container.engines.dispose()
    print(f"filled in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def c_find(port: int, patient: str, out: Path) -> list[Dataset]:
    """One /usr/bin/findscu run (process, association, query, answers written with -X, release)."""
    for old in out.glob("rsp*.dcm"):
        old.unlink()
    argv = ["/usr/bin/findscu", "-S", "-aec", "RADSYNC", "-aet", "BENCH", "-X", "-od", str(out)]
    for key in ("QueryRetrieveLevel=STUDY", f"PatientID={patient}", "StudyInstanceUID", "PatientName",
                "NumberOfStudyRelatedInstances"):
        argv += ["-k", key]
    subprocess.run([*argv, HOST, str(port)], capture_output=True, env=dcmtk_env(), timeout=60, check=True)
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def one_correction(
    client: httpx.Client, ports: RadsyncPorts, patient: str, name: str, out: Path
) -> tuple[float, ...]:
    started = time.perf_counter()
    answer = client.patch(f"/api/patients/{patient}", json={"name": name}, headers={"X-Radsync-User": "bench"})
    patched = time.perf_counter()
    if answer.status_code != 200:
        raise RuntimeError(answer.text)
    found = c_find(ports.dicom, patient, out)
    queried = time.perf_counter()
    studies, instances = PATIENTS[patient]
    if len(found) != studies or any(str(ds.PatientName) != name for ds in found):
        raise RuntimeError(f"C-FIND does not show the correction for {patient}")
    if sum(int(ds.NumberOfStudyRelatedInstances) for ds in found) != studies * instances:
        raise RuntimeError("unexpected instance count")
    shown = client.get(f"/api/patients/{patient}").json()["name"]
    fetched = time.perf_counter()
    if shown != name:
        raise RuntimeError(f"the API does not show the correction for {patient}")
    return patched - started, queried - patched, fetched - queried, fetched - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="radsync-patient-bench-") as tmp:
        work = Path(tmp)
        populate(work / "data")
        config = work / "radsync.toml"
        config.write_text("")
        ports = RadsyncPorts.allocate()
        results: dict[str, list[tuple[float, ...]]] = {p: [] for p in PATIENTS}
        with running(start_radsync(work, ports, config)), httpx.Client(base_url=f"http://{HOST}:{ports.http}") as client:
            for patient in PATIENTS:  # warm-up
                one_correction(client, ports, patient, f"Warm^{patient}", work)
            for run in range(args.runs):
                for patient in PATIENTS:
                    results[patient].append(one_correction(client, ports, patient, f"Run{run}^{patient}", work))
    rows = []
    totals = {}
    for patient, (studies, per_study) in PATIENTS.items():
        columns = list(zip(*results[patient], strict=True))
        totals[patient] = median(columns[3])
        rows.append([f"{patient}: {studies} studies x {per_study:,} instances", *(ms(median(c)) for c in columns)])
    ratio = totals["BIG"] / totals["SMALL"]
    print(f"\nDemographic correction until C-FIND and the ops API show it (median of {args.runs} runs; "
          "radsync serve, SQLite)\n")
    print_table(["patient", "PATCH ms", "C-FIND ms", "GET ms", "total ms"], rows)
    print(f"\nratio 10x1000 / 1x10: {ratio:.2f} (target <= 2); worst total {ms(max(totals.values()))} ms "
          "(target <= 100 ms)")


if __name__ == "__main__":
    main()
