"""C-STORE ingest: 1,000 instances (~40 KB and ~525 KB), 1 association and 4 parallel ones, side by side.

Senders: dcmtk's storescu (TCP_NODELAY=1), one process per association; 4 associations = 4 storescu processes of
250 instances each. Receivers, each fresh for every row (empty data dir / storage / index):

* dcmtk storescp --fork (writes files to a temp dir; the floor: no index, no fsync),
* Orthanc (Debian package, default SQLite index, storage in a temp dir, no HTTP auth, --no-jobs),
* radsync serve (full path: raw bytes, fsync, atomic link, one SQLite transaction, reconciliation), with
  ``dicom_processes`` receiving processes (default: auto = min(4, CPUs); ``--radsync-processes 1 2`` for more rows).

Instances: pydicom's CT_small.dcm (39 KB), and the same header with 512x512x16-bit pixel data (~525 KB), re-UID'd:
10 studies of 100 instances each, written to a temp dir once and sent to every receiver.

    .venv/bin/python bench/cstore_ingest.py [--count 1000] [--radsync-processes 0 1]
    .venv/bin/python bench/cstore_ingest.py --sizes 40KB --count 400 --no-floor --variant B=/tmp/srcB   # A/B

Besides inst/s, each row shows the receiver's CPU time per instance while it received (user + system time of the
server process and its children, from /proc): less sensitive to the machine's other load than the wall time, so
the figure to compare for a change. ``--variant NAME=DIR`` adds radsync started from DIR (a changed copy of src/,
as PYTHONPATH) to the same rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    HOST,
    RadsyncPorts,
    ServerProcess,
    dcmtk_env,
    dcmtk_tool,
    free_port,
    machine_line,
    port_accepts,
    print_table,
    running,
    start_radsync,
    variant,
    verdict,
)

SIZES = {"40KB": None, "525KB": 512}  # None = CT_small as is; 512 = 512x512 16-bit pixel data


def make_instances(directory: Path, count: int, rows: int | None) -> list[Path]:
    """``count`` re-UID'd copies of CT_small (optionally with rows x rows pixels), 100 per study."""
    template = dcmread(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    if rows:
        template.Rows = template.Columns = rows
        template.PixelData = bytes(range(256)) * (rows * rows * 2 // 256)
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    study = series = ""
    for i in range(count):
        if i % 100 == 0:
            study, series = generate_uid(), generate_uid()
            template.PatientID = f"BENCH{i // 100:03d}"
            template.AccessionNumber = f"BACC{i // 100:03d}"
        template.StudyInstanceUID = study
        template.SeriesInstanceUID = series
        template.SOPInstanceUID = generate_uid()
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.InstanceNumber = i % 100 + 1
        path = directory / f"{i:05d}.dcm"
        template.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` and its live descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])  # utime + stime
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += ticks.get(current, 0)
        todo.extend(children.get(current, ()))
    return total / os.sysconf("SC_CLK_TCK")


class Measured:
    """Wall time of a send and the receiver's CPU time meanwhile (its process tree), in seconds."""

    def __init__(self, seconds: float, cpu: float = float("nan")) -> None:
        self.seconds = seconds
        self.cpu = cpu


def send(port: int, called: str, files: Sequence[Path], associations: int, server_pid: int | None = None) -> Measured:
    """Send ``files`` over ``associations`` parallel storescu processes; wall time and the server's CPU time.

    The disk is synced first: the receiver measured before this one (and the instances written before the first
    row) leave tens to hundreds of MB of dirty pages whose writeback would otherwise compete with this receiver's
    fsyncs, a handicap for whichever receiver runs second in a row.
    """
    os.sync()
    storescu = dcmtk_tool("storescu")
    chunks = [files[i::associations] for i in range(associations)]
    cpu_before = tree_cpu_seconds(server_pid) if server_pid else float("nan")
    start = time.perf_counter()
    procs = [
        subprocess.Popen([storescu, "-aet", "BENCH", "-aec", called, HOST, str(port), *map(str, chunk)],
                         env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for chunk in chunks
    ]
    errors = [p.communicate()[1] for p in procs]
    elapsed = time.perf_counter() - start
    cpu = tree_cpu_seconds(server_pid) - cpu_before if server_pid else float("nan")
    for proc, err in zip(procs, errors, strict=True):
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return Measured(elapsed, cpu)


def run_storescp(work: Path, files: Sequence[Path], associations: int) -> Measured:
    port = free_port()
    out = work / "storescp-out"
    out.mkdir()
    server = ServerProcess("storescp", [dcmtk_tool("storescp"), "--fork", "-aet", "STORESCP", "-od", str(out),
                                        str(port)], work / "storescp.log", env=dcmtk_env())
    with running(server):
        server.wait_ready(lambda: port_accepts(port), 30)
        return send(port, "STORESCP", files, associations, server.proc.pid)


def run_orthanc(work: Path, files: Sequence[Path], associations: int) -> Measured:
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "bench", "StorageDirectory": str(work / "orthanc-storage"),
        "IndexDirectory": str(work / "orthanc-index"), "DicomAet": "ORTHANC", "DicomPort": dicom_port,
        "HttpPort": http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False, "Plugins": [], "StorageCompression": False, "HttpServerEnabled": True,
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    server = ServerProcess("Orthanc", ["Orthanc", "--no-jobs", str(work / "orthanc.json")], work / "orthanc.log",
                           env=dcmtk_env())
    with running(server):
        server.wait_ready(lambda: port_accepts(dicom_port), 60)
        return send(dicom_port, "ORTHANC", files, associations, server.proc.pid)


def run_radsync(
    work: Path, files: Sequence[Path], associations: int, processes: int, source: Path | None = None
) -> Measured:
    """radsync serve; from ``source`` (a copy of src/, as ``PYTHONPATH``) when given."""
    ports = RadsyncPorts.allocate()
    config = work / "radsync.toml"
    config.write_text(f"dicom_processes = {processes}\n")
    previous = os.environ.get("PYTHONPATH")
    if source is not None:
        os.environ["PYTHONPATH"] = str(source)
    try:
        server = start_radsync(work, ports, config)
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous
    with running(server):
        return send(ports.dicom, "RADSYNC", files, associations, server.proc.pid)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--radsync-processes", type=int, nargs="+", default=[0],
                        help="receiving processes per radsync row (0 = auto)")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--variant", type=variant, action="append", default=[], metavar="NAME=DIR",
                        help="also measure radsync from DIR (a changed copy of src/) in the same rows, for A/B")
    parser.add_argument("--no-floor", action="store_true", help="skip dcmtk storescp (the floor)")
    args = parser.parse_args(argv)
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="radsync-cstore-") as tmp:
        root = Path(tmp)
        rows: list[list[str]] = []
        ratios: list[tuple[str, float]] = []
        for size in args.sizes:
            files = make_instances(root / f"in-{size}", args.count, SIZES[size])
            megabytes = sum(p.stat().st_size for p in files) / 1e6
            for associations in (1, 4):
                results: dict[str, Measured] = {}
                receivers = [("Orthanc", lambda w, f=files, a=associations: run_orthanc(w, f, a))]
                if not args.no_floor:
                    receivers.insert(0, ("dcmtk storescp (floor)",
                                         lambda w, f=files, a=associations: run_storescp(w, f, a)))
                for processes in args.radsync_processes:
                    for tag, source in [("", None), *((f"{n}, ", d) for n, d in args.variant)]:
                        label = f"radsync ({tag}{processes or 'auto'} proc)"
                        receivers.append((label, lambda w, f=files, a=associations, p=processes, d=source:
                                          run_radsync(w, f, a, p, d)))
                for name, run in receivers:
                    work = Path(tempfile.mkdtemp(dir=root, prefix="run-"))
                    try:
                        results[name] = run(work)
                        print(f"  {size} x{associations}: {name}: {args.count / results[name].seconds:,.0f} inst/s,"
                              f" {results[name].cpu / args.count * 1e3:.2f} ms CPU/inst",
                              file=sys.stderr, flush=True)
                    except Exception as error:  # a missing peer must not hide the others' figures
                        print(f"  ! {name}: {error}", file=sys.stderr)
                        results[name] = Measured(float("nan"))
                for name, measured in results.items():
                    seconds = measured.seconds
                    rows.append([size, str(associations), name, f"{args.count / seconds:,.0f}",
                                 f"{megabytes / seconds:,.1f}", f"{seconds:.2f}",
                                 f"{measured.cpu / args.count * 1e3:.2f}"])
                orthanc = results.get("Orthanc", Measured(float("nan"))).seconds
                for name, measured in results.items():
                    if name.startswith("radsync"):
                        ratios.append((f"{size}, {associations} assoc, {name}", orthanc / measured.seconds))
        print_table(["size", "assocs", "receiver", "inst/s", "MB/s", "seconds", "receiver CPU ms/inst"], rows)
        print()
        print_table(["case", "radsync / Orthanc", "target >= 1.0"],
                    [[case, f"{ratio:.2f}x", verdict(ratio, 1.0)] for case, ratio in ratios])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
