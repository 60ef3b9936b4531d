"""Shared helpers for the radsync benchmarks: ports, processes, HL7 orders, an MLLP load generator, stats, tables.

Everything here talks to 127.0.0.1 only and sets TCP_NODELAY on every socket it opens (see PERF-NOTES.md: with
Nagle's algorithm on, each request/response turn on loopback can cost ~40 ms and the figures mean nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import http.client
import importlib.util
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hl7.mllp.streams import CARRIAGE_RETURN, END_BLOCK, START_BLOCK

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
MLLP_TRAILER = END_BLOCK + CARRIAGE_RETURN

# One station per modality: v2.3.1 has no field naming the station, so radsync schedules an ORM on *every* station
# of its modality. Several stations sharing a modality would multiply the items (and make an accession query answer
# more than once), so each modality gets exactly one station here.
STATIONS: tuple[tuple[str, str], ...] = (
    ("CT01", "CT"),
    ("MR01", "MR"),
    ("US01", "US"),
    ("CR01", "CR"),
    ("DX01", "DX"),
    ("MG01", "MG"),
    ("NM01", "NM"),
    ("PT01", "PT"),
    ("XA01", "XA"),
    ("RF01", "RF"),
)


# --------------------------------------------------------------------------------------------------------------
# sockets and ports


def set_nodelay(sock: socket.socket) -> None:
    """Disable Nagle's algorithm on a TCP socket."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int) -> bool:
    """Tell whether something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        set_nodelay(sock)
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def healthz_ok(http_port: int) -> bool:
    """Tell whether GET /healthz answers 200."""
    conn = http.client.HTTPConnection(HOST, http_port, timeout=2)
    try:
        conn.connect()
        set_nodelay(conn.sock)  # http.client sets it too; be explicit
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@functools.cache
def dcmtk_tool(name: str) -> str:
    """The absolute path of a dcmtk command-line tool.

    Not simply the first `name` on PATH: pynetdicom installs Python console scripts called findscu, echoscu,
    storescu, ... into the virtualenv's bin/, so inside an activated venv `findscu` is pynetdicom's, not dcmtk's.
    """
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = Path(directory) / name
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        probe = subprocess.run([str(candidate), "--version"], capture_output=True, text=True, timeout=30)
        if "dcmtk" in (probe.stdout + probe.stderr).lower():
            return str(candidate)
    raise FileNotFoundError(f"dcmtk's {name} is not on PATH (apt-get install dcmtk)")


def dcmtk_env() -> dict[str, str]:
    """Environment for dcmtk tools: dcmtk 3.6.7 leaves Nagle on unless TCP_NODELAY=1 is exported."""
    return {**os.environ, "TCP_NODELAY": "1"}


# --------------------------------------------------------------------------------------------------------------
# processes


class ServerProcess:
    """A server started as a child process, with its output in a log file, stopped with SIGTERM."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
        )

    def wait_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        """Poll `ready()` until it is true; fail early if the process dies, fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before it was ready:\n{self.log_tail()}"
                )
            if ready():
                return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        """Send SIGTERM, wait, SIGKILL if it does not stop; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  ! {self.name} ignored SIGTERM for {timeout:.0f} s; killing it", file=sys.stderr)
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the process's output, for error messages."""
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@contextlib.contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    """Stop the server when the block ends, whatever happens inside it."""
    try:
        yield server
    finally:
        server.stop()


def radsync_command() -> list[str] | None:
    """The command that runs radsync from this interpreter's environment, or None when it is not installed."""
    script = Path(sys.executable).parent / "radsync"
    if script.exists():
        return [str(script)]
    if (
        importlib.util.find_spec("radsync") is not None
        and importlib.util.find_spec("radsync.__main__") is not None
    ):
        return [sys.executable, "-m", "radsync"]
    return None


@dataclass(frozen=True)
class RadsyncPorts:
    """The three listening ports of one radsync instance."""

    hl7: int
    dicom: int
    http: int

    @classmethod
    def allocate(cls) -> RadsyncPorts:
        return cls(hl7=free_port(), dicom=free_port(), http=free_port())


def write_stations_toml(path: Path, stations: Sequence[tuple[str, str]] = STATIONS) -> None:
    """Write a radsync configuration file with one [[stations]] table per (AE title, modality)."""
    tables = [f'[[stations]]\nae_title = "{ae}"\nmodality = "{modality}"\n' for ae, modality in stations]
    path.write_text("\n".join(tables))


def start_radsync(
    work_dir: Path, ports: RadsyncPorts, config: Path, ae_title: str = "RADSYNC", timeout: float = 90.0
) -> ServerProcess:
    """Start `radsync serve` on a fresh data dir under work_dir and wait until /healthz answers 200."""
    command = radsync_command()
    if command is None:
        raise RuntimeError("radsync is not installed in this environment")
    data_dir = work_dir / "data"
    argv = [
        *command,
        "serve",
        "--data-dir",
        str(data_dir),
        "--host",
        HOST,
        "--hl7-port",
        str(ports.hl7),
        "--dicom-port",
        str(ports.dicom),
        "--http-port",
        str(ports.http),
        "--ae-title",
        ae_title,
        "--config",
        str(config),
    ]
    # Keep the caller's RADSYNC_* variables out: the flags above are the whole configuration.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADSYNC_")}
    server = ServerProcess("radsync", argv, work_dir / "radsync.log", env=env)

    def ready() -> bool:
        return healthz_ok(ports.http) and port_accepts(ports.hl7) and port_accepts(ports.dicom)

    server.wait_ready(ready, timeout)
    return server


# --------------------------------------------------------------------------------------------------------------
# HL7 orders (ORM^O01 v2.3.1, shaped like MAPPING.md §9.1)

FAMILIES = (
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Muller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Okafor",
    "Novak",
)
GIVEN_F = (
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Barbara",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
)
GIVEN_M = ("James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas", "Charles")
# Planted for the patient-name wildcard query `Doe*`: no other family name starts with "doe" in any case.
DOE_FAMILIES = ("Doe", "Doe", "Doe", "Doe", "Doering", "Doebler")
PROCEDURES: dict[str, tuple[str, str, str, str, str, str]] = {
    # modality: (ordered code, ordered text, protocol code, protocol text, RP code, RP text)
    "CT": (
        "71250",
        "CT thorax w/o contrast",
        "P-CT-CHEST-NC",
        "Chest routine non-contrast",
        "RP-CTCHEST",
        "CT chest without contrast",
    ),
    "MR": ("70551", "MRI brain w/o contrast", "P-MR-BRAIN", "Brain routine", "RP-MRBRAIN", "MR brain"),
    "US": ("76700", "US abdomen complete", "P-US-ABD", "Abdomen complete", "RP-USABD", "US abdomen"),
    "CR": (
        "71046",
        "X-ray chest 2 views",
        "P-CR-CHEST2",
        "Chest PA and lateral",
        "RP-CRCHEST",
        "Chest X-ray",
    ),
    "DX": ("73030", "X-ray shoulder", "P-DX-SHOULDER", "Shoulder 2 views", "RP-DXSHOULDER", "Shoulder X-ray"),
    "MG": (
        "77067",
        "Screening mammography",
        "P-MG-SCREEN",
        "Bilateral screening",
        "RP-MGSCREEN",
        "Mammography",
    ),
    "NM": (
        "78452",
        "Myocardial perfusion",
        "P-NM-MPI",
        "Rest/stress SPECT",
        "RP-NMMPI",
        "NM myocardial perfusion",
    ),
    "PT": (
        "78815",
        "PET/CT skull base to thigh",
        "P-PT-WB",
        "Whole body FDG",
        "RP-PTWB",
        "PET/CT whole body",
    ),
    "XA": (
        "93458",
        "Coronary angiography",
        "P-XA-CORO",
        "Left heart cath",
        "RP-XACORO",
        "Coronary angiography",
    ),
    "RF": ("74220", "Esophagram", "P-RF-ESO", "Barium swallow", "RP-RFESO", "Fluoroscopy esophagus"),
}


@dataclass(frozen=True)
class Order:
    """One order with one scheduled procedure step: the facts both the HL7 message and the .wl file carry."""

    control_id: str
    patient_id: str
    family: str
    given: str
    birth_date: str
    sex: str
    accession: str
    rp_id: str
    sps_id: str
    placer: str
    filler: str
    modality: str
    station: str
    start: dt.datetime
    study_uid: str
    weight: int

    @property
    def procedure(self) -> tuple[str, str, str, str, str, str]:
        return PROCEDURES.get(
            self.modality,
            (
                "99999",
                f"{self.modality} exam",
                f"P-{self.modality}",
                f"{self.modality} protocol",
                f"RP-{self.modality}",
                f"{self.modality} procedure",
            ),
        )


def make_order(
    rng: random.Random,
    tag: str,
    index: int,
    station: tuple[str, str],
    start: dt.datetime,
    family: str | None = None,
) -> Order:
    """Build one order with IDs unique per (tag, index) and realistic random demographics."""
    sex = rng.choice("FM")
    given = rng.choice(GIVEN_F if sex == "F" else GIVEN_M)
    birth = dt.date(1930, 1, 1) + dt.timedelta(days=rng.randrange(365 * 90))
    key = f"{tag}{index:08d}"
    return Order(
        control_id=f"M{key}",
        patient_id=f"P{key}",
        family=family or rng.choice(FAMILIES),
        given=given,
        birth_date=birth.strftime("%Y%m%d"),
        sex=sex,
        accession=f"A{key}",
        rp_id=f"R{key}",
        sps_id=f"S{key}-1",
        placer=f"PLC-{key}",
        filler=f"FIL-{key}",
        modality=station[1],
        station=station[0],
        start=start,
        study_uid=f"2.25.{rng.getrandbits(127) | (1 << 126)}",
        weight=rng.randrange(40, 120),
    )


def orm_o01(order: Order, sent: dt.datetime) -> bytes:
    """Encode an order as an ORM^O01 v2.3.1 NW message with IHE field positions (MAPPING.md §9.1), CR-separated."""
    code, text, proto_code, proto_text, rp_code, rp_text = order.procedure
    ts = sent.strftime("%Y%m%d%H%M%S")
    start = order.start.strftime("%Y%m%d%H%M%S")
    tq = f"1^once^^{start}^^R"
    ordering = "D1234^Smith^Robert^^^Dr"
    segments = (
        f"MSH|^~\\&|HIS_ORD|GENHOSP|RIS_HUB|RADDEPT|{ts}||ORM^O01|{order.control_id}|P|2.3.1",
        f"PID|1||{order.patient_id}^^^GENHOSP^MR||{order.family}^{order.given}||{order.birth_date}|{order.sex}"
        f"|||12 Harbour Rd^^Springfield^^12345^USA|||||||ACCT{order.patient_id}^^^GENHOSP^AN",
        f"PV1|1|O|RADOPD^X1^^GENHOSP||||{ordering}|R5678^Jones^Alice^^^Dr^MD|||||||||||V{order.patient_id}"
        f"^^^GENHOSP^VN",
        f"ORC|NW|{order.placer}^HIS_ORD|{order.filler}^RIS_HUB||SC||{tq}||{ts}|||{ordering}|||||RAD^Radiology^99ORG",
        f"OBR|1|{order.placer}^HIS_ORD|{order.filler}^RIS_HUB|{code}^{text}^C4^{proto_code}^{proto_text}^99RADPROT"
        f"||||||||Claustrophobic|Persistent cough 6 weeks|||{ordering}||{order.accession}|{order.rp_id}"
        f"|{order.sps_id}||||{order.modality}|||{tq}|||WALK|R05^Cough^I10|||T001&Brown&Kim||||||||||"
        f"{rp_code}^{rp_text}^99RADPROC",
        f"OBX|1|NM|29463-7^Body weight^LN||{order.weight}|kg|||||F",
        f"ZDS|{order.study_uid}^RIS_HUB^Application^DICOM",
    )
    return ("\r".join(segments) + "\r").encode("ascii")


def ingest_orders(count: int, tag: str, seed: int, today: dt.date) -> list[Order]:
    """`count` orders spread over all stations, starting within a week of today (for the ingest benchmark)."""
    rng = random.Random(f"{seed}-{tag}")
    orders = []
    for i in range(count):
        day = today + dt.timedelta(days=rng.randrange(-1, 7))
        start = dt.datetime.combine(day, dt.time(rng.randrange(7, 19), rng.choice((0, 15, 30, 45))))
        orders.append(make_order(rng, tag, i, rng.choice(STATIONS), start))
    return orders


# --------------------------------------------------------------------------------------------------------------
# MLLP load generator


def frame(message: bytes) -> bytes:
    """Wrap an HL7 message in MLLP framing: <VT> message <FS><CR>."""
    return START_BLOCK + message + MLLP_TRAILER


def check_ack(ack: bytes, control_id: str) -> str | None:
    """Return None when the ACK is MSA-1 = AA and MSA-2 = control_id, else a short description of what is wrong."""
    for segment in ack.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA|"):
            fields = segment.split(b"|")
            code = fields[1].decode(errors="replace") if len(fields) > 1 else ""
            ref = fields[2].decode(errors="replace") if len(fields) > 2 else ""
            if code != "AA":
                return f"MSA-1 {code or '(empty)'}"
            if ref != control_id:
                return "MSA-2 differs from MSH-10"
            return None
    return "no MSA segment"


class _MllpClient(asyncio.Protocol):
    """One MLLP connection that sends a frame and waits for one framed answer (request/response)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[bytes] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        set_nodelay(transport.get_extra_info("socket"))
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(MLLP_TRAILER)
        if end >= 0 and self._waiter is not None and not self._waiter.done():
            start = self._buffer.find(START_BLOCK)
            self._waiter.set_result(bytes(self._buffer[start + 1 : end]))
            del self._buffer[: end + 2]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed by the server"))

    async def request(self, payload: bytes) -> bytes:
        self._waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(payload)
        return await self._waiter


@dataclass
class LoadResult:
    """What one load run measured."""

    sent: int
    elapsed: float
    client_cpu: float = 0.0  # CPU seconds this (client) process used during the run
    latencies: list[float] = field(default_factory=list)  # seconds, one per answered message
    failures: dict[str, int] = field(default_factory=dict)  # reason -> count

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def client_cpu_per_message(self) -> float:
        return self.client_cpu / len(self.latencies) if self.latencies else float("nan")

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


async def _send_all(client: _MllpClient, work: Sequence[tuple[bytes, str]], result: LoadResult) -> None:
    clock = time.perf_counter
    for payload, control_id in work:
        t0 = clock()
        try:
            ack = await client.request(payload)
        except ConnectionError as exc:
            result.failures[str(exc)] = result.failures.get(str(exc), 0) + 1
            return
        result.latencies.append(clock() - t0)
        problem = check_ack(ack, control_id)
        if problem is not None:
            result.failures[problem] = result.failures.get(problem, 0) + 1


async def _load(
    port: int, messages: Sequence[tuple[bytes, str]], connections: int, timeout: float
) -> LoadResult:
    loop = asyncio.get_running_loop()
    clients = []
    for _ in range(connections):
        _, client = await loop.create_connection(_MllpClient, HOST, port)
        clients.append(client)
    framed = [(frame(message), control_id) for message, control_id in messages]
    result = LoadResult(sent=len(framed), elapsed=0.0)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    tasks = [
        asyncio.create_task(_send_all(client, framed[k::connections], result))
        for k, client in enumerate(clients)
    ]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    result.elapsed = time.perf_counter() - t0
    result.client_cpu = time.process_time() - cpu0
    for task in pending:
        task.cancel()
    if pending:
        missing = result.sent - len(result.latencies) - result.failed
        result.failures[f"no ACK within {timeout:.0f} s"] = missing
    for task in done:
        task.result()  # surface bugs in the client itself
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    return result


def run_load(
    port: int, messages: Sequence[tuple[bytes, str]], connections: int, timeout: float | None = None
) -> LoadResult:
    """Send every (message, control ID) over `connections` parallel MLLP connections, each waiting for its ACK.

    One asyncio loop drives all connections (no GIL contention between client threads); the clock starts once every
    connection is open. Message k goes to connection k mod `connections`.
    """
    limit = timeout if timeout is not None else 120.0 + 0.1 * len(messages)
    return asyncio.run(_load(port, messages, connections, limit))


# --------------------------------------------------------------------------------------------------------------
# statistics and tables


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (0..100) of values; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    """Format a duration in milliseconds with sensible precision."""
    if seconds != seconds:  # NaN
        return "–"
    value = seconds * 1000.0
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a Markdown table with aligned columns (pastes straight into the README)."""
    widths = [
        max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
        for i, h in enumerate(headers)
    ]
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def verdict(value: float, target: float) -> str:
    """'met' / 'NOT met' for a ratio where bigger is better."""
    if value != value:
        return "not measured"
    return "met" if value >= target else "NOT met"


def machine_line() -> str:
    """One line describing the machine and the tools, printed above the tables."""
    load = os.getloadavg()
    return (
        f"python {sys.version.split()[0]} | {os.cpu_count()} CPUs | load average {load[0]:.2f} | "
        f"{dt.datetime.now().isoformat(timespec='seconds')}"
    )
