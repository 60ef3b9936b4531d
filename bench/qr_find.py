"""Study-level Query/Retrieve C-FIND over 10,000 stored studies: median latency of dcmtk's findscu against radsync.

How the archive is filled (honestly, through the app use cases, not with SQL inserts): for each study a small
synthetic instance (a real DICOM file of ~1 KB, no pixel data) is written to the blob store with
``FileBlobStore.put`` and indexed with ``StudyService.record_instance``; 80 % of the studies have their order placed
first through ``OrderService.place`` (so reconciliation links them: MATCHED, current truth from the patients and
orders tables), 20 % arrive without an order (UNASSIGNED, answered as received). Use cases run in batches of 250 per
transaction to keep the fill short; each one is the production code path. Then ``radsync serve`` runs on that data
directory and /usr/bin/findscu (TCP_NODELAY=1, Study Root, STUDY level, 9 return keys) asks:

* by PatientID (one patient: 4 studies), by AccessionNumber (1 study), by a one-week StudyDate range (~190
  studies), by PatientName wildcard (``SMI*``: one family name of 40, ~250 studies).

Each query runs ``--runs`` times (default 7) after one warm-up; the table shows the median and the fastest wall
time of the whole findscu process (start-up, association, query, answers, release), the number of answers, and
radsync's own handler time (from its log line: parse, database, encoding, sending). An echoscu row gives the floor
of process start-up plus association on the same machine.

    .venv/bin/python bench/qr_find.py [--studies 10000] [--runs 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pydicom import Dataset  # noqa: E402
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

FAMILIES = ("Smith", "Jones", "Brown", "Taylor", "Wilson", "Davies", "Evans", "Thomas", "Johnson", "Roberts",
            "Walker", "Wright", "Robinson", "Thompson", "White", "Hughes", "Edwards", "Green", "Hall", "Wood",
            "Harris", "Lewis", "Martin", "Jackson", "Clarke", "Clark", "Turner", "Hill", "Scott", "Cooper",
            "Morris", "Ward", "Moore", "King", "Watson", "Baker", "Harrison", "Morgan", "Patel", "Young")
GIVEN = ("Anna", "Ben", "Clara", "David", "Eva", "Felix", "Greta", "Hugo", "Ida", "Jonas")
MODALITIES = ("CT", "MR", "CR", "US", "DX")
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
HOSP = Issuer("HOSP")
FIRST_DAY = dt.date(2025, 1, 1)
BATCH = 250


def synthetic_file(study_uid: str, series_uid: str, sop_uid: str, patient: str, name: str, accession: str,
                   day: dt.date, modality: str) -> bytes:
    """A small but real DICOM file (no pixel data): what the blob store keeps for one instance."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.PatientID, ds.IssuerOfPatientID, ds.PatientName = patient, "HOSP", name
    ds.AccessionNumber, ds.StudyDate, ds.StudyTime, ds.Modality = accession, day.strftime("%Y%m%d"), "101500", modality
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def populate(data_dir: Path, studies: int, seed: int) -> dict[str, str]:
    """Fill the archive through the use cases; return sample keys for the queries."""
    rng = random.Random(seed)
    container = build_container(Settings(data_dir=data_dir))
    patients = max(1, studies // 4)
    samples: dict[str, str] = {}
    started = time.perf_counter()
    for first in range(0, studies, BATCH):
        with transaction(container.engines.write, utc_now) as uow:
            for i in range(first, min(first + BATCH, studies)):
                p = i % patients
                patient = PatientId(f"P{p:06d}", HOSP)
                name = f"{FAMILIES[p % len(FAMILIES)]}^{GIVEN[(p // len(FAMILIES)) % len(GIVEN)]}"
                day = FIRST_DAY + dt.timedelta(days=rng.randrange(365))
                modality = MODALITIES[i % len(MODALITIES)]
                study_uid = f"1.2.826.0.1.3680043.10.1000.{seed}.{i}"
                accession = f"A{i:07d}"
                matched = i % 5 != 0
                if matched:
                    order = ImagingOrder(
                        patient_id=patient,
                        accession=EntityId(accession),
                        procedures=(RequestedProcedure("RP1", study_uid, description=f"{modality} exam",
                                                       steps=(ScheduledStep("SPS1", modality,
                                                                            dt.datetime.combine(day, dt.time(10))),)),),
                    )
                    update = PatientUpdate(patient, {"name": PersonName.from_canonical(name),
                                                     "birth_date": dt.date(1950 + p % 50, 1 + p % 12, 1 + p % 28),
                                                     "sex": Sex.FEMALE if p % 2 else Sex.MALE})
                    container.orders.place(uow, PlaceOrder(update, order))
                series_uid, sop_uid = f"{study_uid}.1", f"{study_uid}.1.1"
                data = synthetic_file(study_uid, series_uid, sop_uid, patient.value, name,
                                      accession if matched else f"U{i:07d}", day, modality)
                blob = container.blobs.put(data)
                container.studies.record_instance(uow, InstanceReceived(
                    study_instance_uid=study_uid,
                    series=SeriesHeader(series_uid, modality, 1),
                    instance=InstanceSummary(sop_uid, CT_IMAGE, str(ExplicitVRLittleEndian), blob, 1),
                    header=StudyHeader(patient_id=patient, patient_name=PersonName.from_canonical(name),
                                       accession=EntityId(accession if matched else f"U{i:07d}"), study_date=day,
                                       study_time=dt.time(10, 15), modalities=(modality,)),
                    calling_ae_title="CT01",
                ))
                if i == studies // 2 + 1:  # a matched study (every fifth is unassigned)
                    samples = {"patient_id": patient.value, "accession": accession}
        if first and first % 2000 == 0:
            print(f"  … {first} studies ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    container.engines.dispose()
    print(f"filled {studies} studies in {time.perf_counter() - started:.1f} s "
          f"(OrderService.place + FileBlobStore.put + StudyService.record_instance)", file=sys.stderr)
    return samples


def findscu(port: int, keys: list[str], *, verbose: bool = False) -> tuple[float, str]:
    """One timed findscu run (the whole process: association, query, answers, release) and its log."""
    argv = ["/usr/bin/findscu", *(["-v"] if verbose else []), "-S", "-aec", "RADSYNC", "-aet", "BENCH"]
    for key in ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate",
                "AccessionNumber", "StudyDate", "ModalitiesInStudy", "NumberOfStudyRelatedInstances", *keys]:
        argv += ["-k", key]
    argv += [HOST, str(port)]
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=dcmtk_env(), timeout=120)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return elapsed, result.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep the filled archive here and reuse it on the next run (default: a temp dir)")
    args = parser.parse_args()
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="radsync-qr-bench-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        samples_file = work / f"samples-{args.studies}-{args.seed}.txt"
        if samples_file.exists():
            patient_id, accession = samples_file.read_text().split()
            samples = {"patient_id": patient_id, "accession": accession}
            print(f"reusing the archive filled in {work}", file=sys.stderr)
        else:
            samples = populate(work / "data", args.studies, args.seed)
            samples_file.write_text(f"{samples['patient_id']} {samples['accession']}")
        config = work / "radsync.toml"
        config.write_text("")
        ports = RadsyncPorts.allocate()
        week = (FIRST_DAY + dt.timedelta(days=140), FIRST_DAY + dt.timedelta(days=146))
        queries = [
            ("PatientID", [f"PatientID={samples['patient_id']}"]),
            ("AccessionNumber", [f"AccessionNumber={samples['accession']}"]),
            ("StudyDate range (7 days)", [f"StudyDate={week[0]:%Y%m%d}-{week[1]:%Y%m%d}"]),
            ("PatientName wildcard SMI*", ["PatientName=SMI*"]),
        ]
        rows = []
        log_path = work / "radsync.log"
        with running(start_radsync(work, ports, config)):
            floor = [_echoscu(ports.dicom) for _ in range(args.runs)]
            rows.append(["(echoscu: process + association, no query)", "–", ms(median(floor)), ms(min(floor)), "–"])
            for label, keys in queries:
                _, log = findscu(ports.dicom, keys, verbose=True)  # warm-up, and the answer count from the log
                answers = log.count("(Pending)")
                times = [findscu(ports.dicom, keys)[0] for _ in range(args.runs)]
                server = _server_times(log_path)[-args.runs:]
                rows.append([label, str(answers), ms(median(times)), ms(min(times)), ms(median(server))])
        print(f"\nStudy-level C-FIND over {args.studies:,} stored studies (radsync, Study Root, /usr/bin/findscu -S, "
              f"median of {args.runs} runs)\n")
        print_table(["query", "answers", "findscu median ms", "findscu min ms", "radsync handler median ms"], rows)


def _echoscu(port: int) -> float:
    started = time.perf_counter()
    subprocess.run(["/usr/bin/echoscu", "-aec", "RADSYNC", HOST, str(port)], capture_output=True, env=dcmtk_env(),
                   timeout=60, check=True)
    return time.perf_counter() - started


def _server_times(log_path: Path) -> list[float]:
    """radsync's own time per Q/R C-FIND (parse, database, encoding, sending), from its INFO log line."""
    pattern = re.compile(r"Q/R C-FIND \(STUDY\) from BENCH@.*?, ([0-9.]+) ms")
    return [float(m.group(1)) / 1000 for m in pattern.finditer(log_path.read_text(errors="replace"))]

if __name__ == "__main__":
    main()
