"""HL7 v2 ingest benchmark: ORM^O01 over MLLP, each client waiting for its ACK before sending the next message.

What is measured, and why
-------------------------
Issue 2 promises an intake that acknowledges an order only after the message and its effects are committed, and
asks that this durable intake be at least as fast as a minimal reference on one connection (>= 1.0x) and faster
with 8 connections (>= 1.5x, which needs group commit). In one run, on the same machine and the same messages:

* ``raw MLLP echo``: a server that answers an ACK built by splitting bytes: no parsing, no storage. This is the
  limit of the transport *and of this load generator*; if radsync came close to it, the client would be the
  bottleneck and the figures would not mean anything.
* ``reference``: python-hl7 streams + ``hl7.parse`` + one SQLite row per message (WAL, synchronous=FULL) committed
  before ``create_ack()``; a separate process (bench/_hl7_reference.py).
* ``radsync``: ``radsync serve`` with a fresh data dir per run and one station per modality, so each order creates
  exactly one scheduled procedure step (full processing).

Each server gets ``--count`` distinct ORM^O01 messages (distinct control, patient and accession IDs, shaped like
MAPPING.md §9.1), first over one connection, then over 8 parallel connections (``--count`` in total, message k on
connection k mod 8), after ``--warmup`` untimed messages on a fresh server. Throughput is answered messages per
second from the moment all connections are open; latency is send-to-ACK per message. Every ACK must be MSA-1 AA
with MSA-2 equal to the message's MSH-10; anything else is counted as a failure and printed.

    python bench/hl7_ingest.py                 # 10,000 messages per run
    python bench/hl7_ingest.py --count 300     # smoke run
    python bench/hl7_ingest.py --count 2000 --repeat 3 --variant B=/tmp/srcB   # A/B: radsync from a changed copy of src/

A/B of a change: ``--variant NAME=DIR`` adds a radsync started with ``PYTHONPATH=DIR`` (a copy of src/ with the
change) to the same rounds; the radsync servers run in reverse order every other round, so compare each variant
with ``radsync`` round by round (the per-round lines) rather than across runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    BENCH_DIR,
    LoadResult,
    RadsyncPorts,
    ServerProcess,
    free_port,
    ingest_orders,
    machine_line,
    median,
    ms,
    orm_o01,
    percentile,
    port_accepts,
    print_table,
    radsync_command,
    run_load,
    running,
    start_radsync,
    variant,
    verdict,
    write_stations_toml,
)

CONNECTIONS = (1, 8)
TARGET_1 = 1.0
TARGET_8 = 1.5


@dataclass
class Target:
    """A server under test: how to start it on a fresh directory, and how to check what it stored."""

    name: str
    start: Callable[[Path], tuple[ServerProcess, int]]
    stored: Callable[[Path], int | None] = lambda _work: None
    runs: dict[int, list[LoadResult]] = field(default_factory=dict)


def start_reference_process(mode: str) -> Callable[[Path], tuple[ServerProcess, int]]:
    """A starter for bench/_hl7_reference.py in the given mode."""

    def start(work: Path) -> tuple[ServerProcess, int]:
        port = free_port()
        argv = [
            sys.executable,
            str(BENCH_DIR / "_hl7_reference.py"),
            "--mode",
            mode,
            "--port",
            str(port),
            "--db",
            str(work / "reference.sqlite"),
        ]
        server = ServerProcess(f"{mode} server", argv, work / f"{mode}.log")
        server.wait_ready(lambda: port_accepts(port), timeout=30)
        return server, port

    return start


def reference_rows(work: Path) -> int | None:
    db = work / "reference.sqlite"
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM message").fetchone()[0])


def start_radsync_process(work: Path) -> tuple[ServerProcess, int]:
    config = work / "radsync.toml"
    write_stations_toml(config)
    ports = RadsyncPorts.allocate()
    return start_radsync(work, ports, config), ports.hl7


def start_radsync_variant(source: Path) -> Callable[[Path], tuple[ServerProcess, int]]:
    """A starter for radsync imported from another source tree (``PYTHONPATH`` for the server process only)."""

    def start(work: Path) -> tuple[ServerProcess, int]:
        previous = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = str(source)
        try:
            return start_radsync_process(work)
        finally:
            if previous is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = previous

    return start


def messages(count: int, tag: str, seed: int) -> list[tuple[bytes, str]]:
    """`count` encoded ORM^O01 messages with their control IDs; the same tag and seed give the same messages."""
    now = dt.datetime.now()
    return [(orm_o01(order, now), order.control_id) for order in ingest_orders(count, tag, seed, now.date())]


def run_one(
    target: Target,
    root: Path,
    connections: int,
    load: list[tuple[bytes, str]],
    warmup: list[tuple[bytes, str]],
) -> LoadResult:
    """Start a fresh server, warm it up, measure one load, check what it stored, stop it."""
    work = Path(tempfile.mkdtemp(prefix=f"{target.name.split()[0]}-{connections}c-", dir=root))
    try:
        server, port = target.start(work)
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"  ! {target.name} did not start: {exc}", file=sys.stderr)
        return LoadResult(sent=len(load), elapsed=0.0, failures={"server did not start": len(load)})
    with running(server):
        if warmup:
            run_load(port, warmup, connections)
        os.sync()  # the servers measured before leave dirty pages; their writeback must not slow this one's fsyncs
        result = run_load(port, load, connections)
    if server.proc.returncode not in (0, -15):
        result.failures[f"server exit code {server.proc.returncode} on SIGTERM"] = 1
    stored = target.stored(work)
    expected = len(load) + len(warmup)
    if stored is not None and stored != expected:
        result.failures[f"stored {stored} rows, expected {expected}"] = abs(expected - stored)
    status = f"{result.failed} FAILED" if result.failed else "all AA"
    print(
        f"  {target.name:<24} {connections} conn: {result.rate:8,.0f} msg/s  p50 {ms(percentile(result.latencies, 50))}"
        f" ms  p99 {ms(percentile(result.latencies, 99))} ms  ({status})",
        file=sys.stderr,
        flush=True,
    )
    return result


def summarize(target: Target, connections: int) -> tuple[float, list[float], dict[str, int]]:
    """Median rate over rounds, pooled latencies, summed failures."""
    runs = target.runs.get(connections, [])
    latencies = [x for r in runs for x in r.latencies]
    failures: dict[str, int] = {}
    for r in runs:
        for reason, n in r.failures.items():
            failures[reason] = failures.get(reason, 0) + n
    return median([r.rate for r in runs]), latencies, failures


def client_cpu(target: Target) -> str:
    """The load generator's own CPU time per message (1 / 8 connections), in microseconds."""
    cells = []
    for c in CONNECTIONS:
        runs = target.runs.get(c, [])
        per_message = median([r.client_cpu_per_message for r in runs if r.latencies])
        cells.append(f"{per_message * 1e6:.0f}" if per_message == per_message else "–")
    return " / ".join(cells)


def report(targets: list[Target], reference: Target, args: argparse.Namespace) -> None:
    ref_rate = {c: summarize(reference, c)[0] for c in CONNECTIONS}
    rows = []
    all_failures: list[str] = []
    for target in targets:
        rates, cells = {}, []
        for c in CONNECTIONS:
            rate, latencies, failures = summarize(target, c)
            rates[c] = rate
            cells.append(
                f"{ms(percentile(latencies, 50))} / {ms(percentile(latencies, 99))} ms" if latencies else "–"
            )
            all_failures += [f"{target.name}, {c} conn: {n} x {reason}" for reason, n in failures.items()]
        ratio = " / ".join(f"{rates[c] / ref_rate[c]:.2f}x" if ref_rate[c] else "–" for c in CONNECTIONS)
        rows.append(
            [
                target.name,
                f"{rates[1]:,.0f}",
                f"{rates[8]:,.0f}",
                cells[0],
                cells[1],
                ratio,
                client_cpu(target),
            ]
        )
    print()
    print(
        f"HL7 ingest: {args.count:,} ORM^O01 per run, each waiting for its ACK; {args.warmup} warm-up messages; "
        f"median of {args.repeat} round(s)"
    )
    print(machine_line())
    print()
    print_table(
        [
            "server",
            "1 conn msg/s",
            "8 conn msg/s",
            "p50 / p99 ACK (1 conn)",
            "p50 / p99 ACK (8 conn)",
            "ratio vs reference (1 / 8 conn)",
            "client CPU µs/msg (1 / 8)",
        ],
        rows,
    )
    print()
    radsync = next((t for t in targets if t.name == "radsync"), None)
    if radsync is not None and radsync.runs:
        for c, goal in ((1, TARGET_1), (8, TARGET_8)):
            ratio = summarize(radsync, c)[0] / ref_rate[c] if ref_rate[c] else float("nan")
            print(
                f"target: radsync >= {goal:.1f}x the reference on {c} connection{'s' if c > 1 else ''}: "
                f"{ratio:.2f}x -> {verdict(ratio, goal)}"
            )
    else:
        print(
            f"targets (radsync not measured): >= {TARGET_1:.1f}x the reference on 1 connection, "
            f">= {TARGET_8:.1f}x on 8 connections"
        )
    print("failures: " + ("none (every ACK was MSA-1 AA with MSA-2 = MSH-10)" if not all_failures else ""))
    for line in all_failures:
        print(f"  {line}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=10_000, help="messages per run (default 10000)")
    parser.add_argument(
        "--warmup", type=int, default=200, help="untimed messages sent first to each fresh server"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds; servers alternate within a round (default 1)"
    )
    parser.add_argument("--seed", type=int, default=2, help="seed for the generated orders")
    parser.add_argument("--no-radsync", action="store_true", help="measure the references only")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, databases)")
    parser.add_argument(
        "--variant", type=variant, action="append", default=[], metavar="NAME=DIR",
        help="also measure radsync imported from DIR (a changed copy of src/), in the same rounds; repeatable",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    echo = Target("client limit: raw echo", start_reference_process("echo"))
    reference = Target("reference (parse+SQLite)", start_reference_process("reference"), reference_rows)
    targets = [echo, reference]
    if args.no_radsync:
        pass
    elif radsync_command() is None:
        print(
            f"! radsync is not installed next to {sys.executable} (no console script, no `python -m radsync`): "
            "measuring the references only",
            file=sys.stderr,
        )
    else:
        targets.append(Target("radsync", start_radsync_process))
        targets += [Target(name, start_radsync_variant(source)) for name, source in args.variant]
    warmup = messages(min(args.warmup, args.count), "W0", args.seed)
    loads = {c: messages(args.count, f"C{c}", args.seed) for c in CONNECTIONS}
    root = Path(tempfile.mkdtemp(prefix="radsync-bench-hl7-"))
    for rnd in range(args.repeat):
        print(f"round {rnd + 1}/{args.repeat} (work dir {root})", file=sys.stderr)
        measured = targets[2:] if rnd % 2 == 0 else targets[:1:-1]  # radsync and its variants, alternating
        for target in [*targets[:2], *measured]:
            for c in CONNECTIONS:
                target.runs.setdefault(c, []).append(run_one(target, root, c, loads[c], warmup))
    report(targets, reference, args)
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"work directory kept: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
