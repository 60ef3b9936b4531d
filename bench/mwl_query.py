"""Modality Worklist benchmark: findscu -W query latency against radsync and dcmtk's wlmscpfs, same items.

What is measured, and why
-------------------------
A modality asks for its worklist with one C-FIND per query, usually a fresh process and association each time, so
the figure that matters is the wall time of one ``findscu -W`` process (TCP_NODELAY=1), median of ``--runs`` runs
after one untimed warm-up. wlmscpfs (and Orthanc's plugin) read every worklist file on every query, so their time
grows with the number of items; issue 2 asks radsync to answer from database indexes instead:

* accession at 20,000 items: >= 10x faster than wlmscpfs; at 100,000 within 1.5x of radsync's own time at 1,000
  (an index, not a scan);
* station AE + today at 20,000 (~1/60 of the items, ~330 answers): >= 3x faster than wlmscpfs, which needs a
  per-answer cost well under the ~2.5 ms a naive pynetdicom handler spends.

For each size in ``--sizes`` the script generates the same orders twice: as ORM^O01 messages sent to a fresh
``radsync serve`` over 8 MLLP connections (each ACK checked), and, for sizes up to ``--wlm-max``, as .wl files
written with pydicom into ``<dir>/RADSYNC/`` (with the ``lockfile`` wlmscpfs expects) served by ``wlmscpfs``.
Exactly round(N/60) orders are CT on station CT01 today; the others are spread over ten stations (one per
modality, see _common.STATIONS) and 29 days; six patients have family names starting with "Doe". Every tool gets
the same pre-written query files:

* (a) AccessionNumber = one order's accession                      -> 1 answer
* (b) SPS ScheduledStationAETitle = CT01, SPS Start Date = today    -> round(N/60) answers
* (c) PatientName = ``Doe*``                                        -> 6 answers

Each query asks for the same realistic set of return keys. Answer counts are checked on every run.

    python bench/mwl_query.py                                # sizes 1000,20000,100000
    python bench/mwl_query.py --sizes 200,1000 --runs 3      # smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from _common import (
    DOE_FAMILIES,
    HOST,
    STATIONS,
    Order,
    RadsyncPorts,
    ServerProcess,
    dcmtk_env,
    dcmtk_tool,
    free_port,
    machine_line,
    make_order,
    median,
    ms,
    orm_o01,
    port_accepts,
    print_table,
    radsync_command,
    run_load,
    running,
    start_radsync,
    verdict,
    write_stations_toml,
)

AE_TITLE = "RADSYNC"
CALLING_AE = "BENCHSCU"
MWL_FIND_SOP_CLASS = "1.2.840.10008.5.1.4.31"
QUERIES = ("accession", "station+today", "name Doe*")
QUERY_LABELS = {
    "accession": "(a) accession",
    "station+today": "(b) CT01 + today",
    "name Doe*": "(c) name Doe*",
}


# --------------------------------------------------------------------------------------------------------------
# the items


@dataclass
class Worklist:
    """The generated orders of one size and the answer count each query must return."""

    orders: list[Order]
    today: dt.date
    accession: str
    expected: dict[str, int]


def mwl_orders(count: int, seed: int, today: dt.date) -> Worklist:
    """`count` orders: exactly round(count/60) on CT01 today, six `Doe*` patients, the rest spread out."""
    rng = random.Random(f"{seed}-mwl-{count}")
    ct01 = next(s for s in STATIONS if s[0] == "CT01")
    on_ct01_today = set(rng.sample(range(count), max(1, round(count / 60))))
    does = dict(zip(rng.sample(range(count), min(count, len(DOE_FAMILIES))), DOE_FAMILIES, strict=False))
    orders = []
    for i in range(count):
        if i in on_ct01_today:
            station, day = ct01, today
        else:
            while True:
                station, day = rng.choice(STATIONS), today + dt.timedelta(days=rng.randrange(-14, 15))
                if (station, day) != (ct01, today):
                    break
        start = dt.datetime.combine(day, dt.time(rng.randrange(7, 19), rng.choice((0, 15, 30, 45))))
        orders.append(make_order(rng, "WL", i, station, start, family=does.get(i)))
    accession = orders[count // 2].accession
    expected = {
        "accession": 1,
        "station+today": len(on_ct01_today),
        "name Doe*": sum(o.family.lower().startswith("doe") for o in orders),
    }
    return Worklist(orders, today, accession, expected)


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def worklist_item(order: Order) -> Dataset:
    """The MWL item radsync should make of the order (MAPPING.md §9.1), for wlmscpfs to serve."""
    _code, _text, proto_code, proto_text, rp_code, rp_text = order.procedure
    ds = Dataset()
    ds.AccessionNumber = order.accession
    ds.ReferringPhysicianName = "Jones^Alice^^Dr^MD"
    ds.ReferencedStudySequence = DicomSequence()
    ds.ReferencedPatientSequence = DicomSequence()
    ds.PatientName = f"{order.family}^{order.given}"
    ds.PatientID = order.patient_id
    ds.IssuerOfPatientID = "GENHOSP"
    ds.PatientBirthDate = order.birth_date
    ds.PatientSex = order.sex
    ds.PatientWeight = str(order.weight)
    ds.MedicalAlerts = "Persistent cough 6 weeks"
    ds.StudyInstanceUID = order.study_uid
    ds.RequestingPhysician = "Smith^Robert^^Dr"
    ds.RequestedProcedureDescription = rp_text
    ds.RequestedProcedureCodeSequence = DicomSequence([code_item(rp_code, "99RADPROC", rp_text)])
    ds.AdmissionID = f"V{order.patient_id}"
    sps = Dataset()
    sps.Modality = order.modality
    sps.ScheduledStationAETitle = order.station
    sps.ScheduledProcedureStepStartDate = order.start.strftime("%Y%m%d")
    sps.ScheduledProcedureStepStartTime = order.start.strftime("%H%M%S")
    sps.ScheduledPerformingPhysicianName = "Brown^Kim"
    sps.ScheduledProcedureStepDescription = proto_text
    sps.ScheduledProtocolCodeSequence = DicomSequence([code_item(proto_code, "99RADPROT", proto_text)])
    sps.ScheduledProcedureStepID = order.sps_id
    sps.ScheduledProcedureStepStatus = "SCHEDULED"
    ds.ScheduledProcedureStepSequence = DicomSequence([sps])
    ds.RequestedProcedureID = order.rp_id
    ds.RequestedProcedurePriority = "ROUTINE"
    ds.PatientTransportArrangements = "WALK"
    ds.PlacerOrderNumberImagingServiceRequest = order.placer
    ds.FillerOrderNumberImagingServiceRequest = order.filler
    return ds


def save_dicom(path: Path, ds: Dataset) -> None:
    """Write a DICOM file (explicit VR little endian, with file meta) as dcmtk tools expect."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MWL_FIND_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    dcmwrite(path, ds, enforce_file_format=True)


def _write_items(db: Path, orders: Sequence[Order]) -> None:
    for order in orders:
        save_dicom(db / f"{order.sps_id}.wl", worklist_item(order))


def write_wlmscpfs_db(root: Path, orders: Sequence[Order]) -> Path:
    """Write one .wl file per order into root/RADSYNC/ next to the (empty) lockfile wlmscpfs locks while reading.

    pydicom needs ~3 ms per file here, so the files are written by one process per CPU.
    """
    db = root / AE_TITLE
    db.mkdir(parents=True)
    (db / "lockfile").touch()
    workers = os.cpu_count() or 1
    chunk = max(1, -(-len(orders) // workers))
    with ProcessPoolExecutor(workers) as pool:
        for done in [
            pool.submit(_write_items, db, orders[i : i + chunk]) for i in range(0, len(orders), chunk)
        ]:
            done.result()
    return root


# --------------------------------------------------------------------------------------------------------------
# the queries


def query_dataset(accession: str = "", name: str = "", station: str = "", date: str = "") -> Dataset:
    """A C-FIND identifier with matching keys filled in and the return keys a modality typically asks for."""
    ds = Dataset()
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = ""
    ds.PatientName = name
    ds.PatientID = ""
    ds.IssuerOfPatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientWeight = ""
    ds.MedicalAlerts = ""
    ds.StudyInstanceUID = ""
    ds.RequestingPhysician = ""
    ds.RequestedProcedureDescription = ""
    ds.AdmissionID = ""
    sps = Dataset()
    sps.Modality = ""
    sps.ScheduledStationAETitle = station
    sps.ScheduledProcedureStepStartDate = date
    sps.ScheduledProcedureStepStartTime = ""
    sps.ScheduledPerformingPhysicianName = ""
    sps.ScheduledProcedureStepDescription = ""
    sps.ScheduledProcedureStepID = ""
    ds.ScheduledProcedureStepSequence = DicomSequence([sps])
    ds.RequestedProcedureID = ""
    ds.RequestedProcedurePriority = ""
    return ds


def write_queries(directory: Path, worklist: Worklist) -> dict[str, Path]:
    """Write the three query files every tool is given."""
    directory.mkdir(parents=True, exist_ok=True)
    datasets = {
        "accession": query_dataset(accession=worklist.accession),
        "station+today": query_dataset(station="CT01", date=worklist.today.strftime("%Y%m%d")),
        "name Doe*": query_dataset(name="Doe*"),
    }
    paths = {}
    for key, ds in datasets.items():
        paths[key] = directory / f"query-{key.split()[0].replace('+', '-')}.dcm"
        save_dicom(paths[key], ds)
    return paths


_PENDING = re.compile(r"Received Find Response \d+ \(Pending\)")


@dataclass
class Timing:
    """Wall times of repeated runs of one query, and any wrong answers seen."""

    seconds: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return median(self.seconds)


def findscu(port: int, query: Path) -> tuple[float, int, str | None]:
    """Run one findscu -W process; return its wall time, the number of answers, and a problem or None."""
    argv = [
        dcmtk_tool("findscu"),
        "-v",
        "-sr",
        "-W",
        "-aet",
        CALLING_AE,
        "-aec",
        AE_TITLE,
        HOST,
        str(port),
        str(query),
    ]
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=dcmtk_env(), timeout=600)
    elapsed = time.perf_counter() - t0
    log = done.stdout + done.stderr
    answers = len(_PENDING.findall(log))
    if done.returncode != 0 or "Received Final Find Response (Success)" not in log:
        last = log.strip().splitlines()[-3:]
        return elapsed, answers, f"findscu exit {done.returncode}: {' | '.join(last)}"
    return elapsed, answers, None


def echoscu(port: int) -> tuple[float, str | None]:
    """Run one echoscu process: the floor of a query (process start + association + one round trip)."""
    argv = [dcmtk_tool("echoscu"), "-aet", CALLING_AE, "-aec", AE_TITLE, HOST, str(port)]
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=dcmtk_env(), timeout=60)
    elapsed = time.perf_counter() - t0
    return (
        elapsed,
        None if done.returncode == 0 else f"echoscu exit {done.returncode}: {done.stderr.strip()[-200:]}",
    )


def measure(port: int, queries: dict[str, Path], expected: dict[str, int], runs: int) -> dict[str, Timing]:
    """Median-ready timings of C-ECHO and each query (one untimed warm-up each), answer counts checked."""
    results: dict[str, Timing] = {}
    echo = results["echo"] = Timing()
    for i in range(runs + 1):
        seconds, problem = echoscu(port)
        if problem:
            echo.problems.append(problem)
        elif i:
            echo.seconds.append(seconds)
    for key, path in queries.items():
        timing = results[key] = Timing()
        for i in range(runs + 1):
            seconds, answers, problem = findscu(port, path)
            if problem is None and answers != expected[key]:
                problem = f"{answers} answers, expected {expected[key]}"
            if problem is not None:
                timing.problems.append(problem)
            if i:
                timing.seconds.append(seconds)
    return results


# --------------------------------------------------------------------------------------------------------------
# the servers


def start_wlmscpfs(db_root: Path, work: Path) -> tuple[ServerProcess, int]:
    """Start wlmscpfs on the worklist files (fork per association, as deployed; no reverse DNS lookups)."""
    port = free_port()
    argv = [dcmtk_tool("wlmscpfs"), "-dhl", "-dfp", str(db_root), str(port)]
    server = ServerProcess("wlmscpfs", argv, work / "wlmscpfs.log", env=dcmtk_env())
    server.wait_ready(lambda: port_accepts(port), timeout=30)
    return server, port


def populate_radsync(port: int, worklist: Worklist) -> tuple[float, int]:
    """Send every order as ORM^O01 over 8 connections; return messages/s and the number of failed ACKs."""
    now = dt.datetime.now()
    messages = [(orm_o01(order, now), order.control_id) for order in worklist.orders]
    result = run_load(port, messages, connections=8)
    for reason, n in result.failures.items():
        print(f"  ! populate: {n} x {reason}", file=sys.stderr)
    return result.rate, result.failed


@dataclass
class SizeResult:
    """Everything measured at one number of items."""

    size: int
    expected: dict[str, int]
    radsync: dict[str, Timing] | None = None
    wlmscpfs: dict[str, Timing] | None = None
    populate_rate: float = float("nan")
    populate_failed: int = 0
    wl_write_seconds: float = float("nan")


def bench_radsync(
    root: Path, worklist: Worklist, queries: dict[str, Path], runs: int, result: SizeResult
) -> None:
    work = Path(tempfile.mkdtemp(prefix="radsync-", dir=root))
    config = work / "radsync.toml"
    write_stations_toml(config)
    ports = RadsyncPorts.allocate()
    try:
        server = start_radsync(work, ports, config)
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"  ! radsync did not start: {exc}", file=sys.stderr)
        return
    with running(server):
        print(
            f"  radsync: populating {len(worklist.orders):,} orders over 8 MLLP connections",
            file=sys.stderr,
            flush=True,
        )
        result.populate_rate, result.populate_failed = populate_radsync(ports.hl7, worklist)
        print(
            f"  radsync: {result.populate_rate:,.0f} msg/s, {result.populate_failed} failed; querying",
            file=sys.stderr,
            flush=True,
        )
        result.radsync = measure(ports.dicom, queries, worklist.expected, runs)


def bench_wlmscpfs(
    root: Path, worklist: Worklist, queries: dict[str, Path], runs: int, result: SizeResult
) -> None:
    work = Path(tempfile.mkdtemp(prefix="wlmscpfs-", dir=root))
    print(f"  wlmscpfs: writing {len(worklist.orders):,} .wl files", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    db_root = write_wlmscpfs_db(work / "worklists", worklist.orders)
    result.wl_write_seconds = time.perf_counter() - t0
    server, port = start_wlmscpfs(db_root, work)
    with running(server):
        print("  wlmscpfs: querying", file=sys.stderr, flush=True)
        result.wlmscpfs = measure(port, queries, worklist.expected, runs)


# --------------------------------------------------------------------------------------------------------------
# the report


def cell(timings: dict[str, Timing] | None, key: str) -> str:
    if timings is None:
        return "not run"
    timing = timings[key]
    return ms(timing.median) + (" (!)" if timing.problems else "")


def ratio(slow: dict[str, Timing] | None, fast: dict[str, Timing] | None, key: str) -> float:
    if slow is None or fast is None:
        return float("nan")
    return slow[key].median / fast[key].median


def report(results: list[SizeResult], args: argparse.Namespace) -> None:
    print()
    print(
        f"Modality Worklist C-FIND: median wall time of one findscu -W process (TCP_NODELAY=1), ms; "
        f"{args.runs} runs after 1 warm-up"
    )
    print(machine_line())
    print()
    rows = []
    for r in results:
        rows.append(
            [
                f"{r.size:,}",
                "C-ECHO (floor: process + association)",
                "–",
                cell(r.radsync, "echo"),
                cell(r.wlmscpfs, "echo"),
                "–",
            ]
        )
        for key in QUERIES:
            x = ratio(r.wlmscpfs, r.radsync, key)
            rows.append(
                [
                    f"{r.size:,}",
                    QUERY_LABELS[key],
                    str(r.expected[key]),
                    cell(r.radsync, key),
                    cell(r.wlmscpfs, key),
                    f"{x:.1f}x" if x == x else "–",
                ]
            )
    print_table(["items", "query", "answers", "radsync ms", "wlmscpfs ms", "wlmscpfs / radsync"], rows)
    print()
    for r in results:
        extra = []
        if r.radsync is not None:
            extra.append(
                f"radsync populated at {r.populate_rate:,.0f} msg/s over 8 connections "
                f"({r.populate_failed} failed ACKs)"
            )
        if r.wlmscpfs is not None:
            extra.append(f"{r.size:,} .wl files written in {r.wl_write_seconds:.1f} s")
        if extra:
            print(f"{r.size:,} items: " + "; ".join(extra))
    print_targets(results)
    problems = [
        (r.size, server, key, p)
        for r in results
        for server, timings in (("radsync", r.radsync), ("wlmscpfs", r.wlmscpfs))
        if timings
        for key, t in timings.items()
        for p in t.problems
    ]
    print(
        "wrong answers / errors: "
        + ("none (every run returned the expected number of answers)" if not problems else "")
    )
    for size, server, key, problem in dict.fromkeys(problems):
        print(f"  {size:,} items, {server}, {key}: {problem}")


def print_targets(results: list[SizeResult]) -> None:
    """Evaluate issue 2's MWL targets at the sizes that were run (20,000 / 1,000 / 100,000 by default)."""
    print()
    compared = [r for r in results if r.wlmscpfs is not None and r.radsync is not None]
    ran = [r for r in results if r.radsync is not None]
    if not ran:
        print(
            "targets (radsync not measured): accession >= 10x faster than wlmscpfs at 20,000; accession at "
            "100,000 within 1.5x of radsync at 1,000; station + today at 20,000 >= 3x faster than wlmscpfs"
        )
        return
    if compared:
        at = max(compared, key=lambda r: r.size)
        x = ratio(at.wlmscpfs, at.radsync, "accession")
        print(f"target: accession at {at.size:,} >= 10x faster than wlmscpfs: {x:.1f}x -> {verdict(x, 10)}")
        x = ratio(at.wlmscpfs, at.radsync, "station+today")
        print(
            f"target: station + today at {at.size:,} >= 3x faster than wlmscpfs: {x:.1f}x -> {verdict(x, 3)}"
        )
    small, large = min(ran, key=lambda r: r.size), max(ran, key=lambda r: r.size)
    if small is not large:
        assert small.radsync is not None and large.radsync is not None
        growth = large.radsync["accession"].median / small.radsync["accession"].median
        print(
            f"target: accession at {large.size:,} within 1.5x of radsync at {small.size:,}: {growth:.2f}x -> "
            f"{'met' if growth <= 1.5 else 'NOT met'}"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,20000,100000", help="comma-separated item counts")
    parser.add_argument("--wlm-max", type=int, default=20_000, help="largest size also served by wlmscpfs")
    parser.add_argument(
        "--runs", type=int, default=5, help="timed runs per query (median reported; >= 5 advised)"
    )
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--no-radsync", action="store_true", help="measure wlmscpfs only")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (logs, databases, .wl files)"
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()})
    with_radsync = not args.no_radsync and radsync_command() is not None
    if not args.no_radsync and not with_radsync:
        print(
            f"! radsync is not installed next to {sys.executable} (no console script, no `python -m radsync`): "
            "measuring wlmscpfs only",
            file=sys.stderr,
        )
    root = Path(tempfile.mkdtemp(prefix="radsync-bench-mwl-"))
    today = dt.date.today()
    results = []
    for size in sizes:
        print(f"{size:,} items (work dir {root})", file=sys.stderr, flush=True)
        worklist = mwl_orders(size, args.seed, today)
        queries = write_queries(root / f"queries-{size}", worklist)
        result = SizeResult(size, worklist.expected)
        if with_radsync:
            bench_radsync(root, worklist, queries, args.runs, result)
        if size <= args.wlm_max:
            bench_wlmscpfs(root, worklist, queries, args.runs, result)
        results.append(result)
    report(results, args)
    if args.keep:
        print(f"work directory kept: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
