"""Reference MLLP servers for bench/hl7_ingest.py, run as a separate process (never inside the client's process).

Two modes:

* ``echo``: the limit of the transport and of the load generator. Reads each MLLP block with python-hl7's
  ``readblock`` and answers an ACK built by splitting bytes (no ``hl7.parse``, no storage). The ACK carries
  MSA|AA|<MSH-10> so the client checks it exactly like any other server's.
* ``reference``: the minimal durable intake issue 2 compares radsync against. python-hl7 streams
  (``start_hl7_server``, ``readblock``), ``hl7.parse``, one SQLite row per message committed with WAL and
  synchronous=FULL, then ``create_ack()``. Nothing is acknowledged before its commit.

    python bench/_hl7_reference.py --mode reference --port 2575 --db /tmp/ref.sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import signal
import socket
import sqlite3
from pathlib import Path

import hl7
from hl7.mllp import HL7StreamReader, HL7StreamWriter, start_hl7_server

HOST = "127.0.0.1"


def _nodelay(writer: HL7StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def echo_ack(block: bytes) -> bytes:
    """Build an AA acknowledgement by splitting MSH on '|' (about 10 µs; no parser)."""
    msh = block.split(b"\r", 1)[0].split(b"|")
    now = dt.datetime.now().strftime("%Y%m%d%H%M%S").encode()
    header = b"|".join(
        (
            b"MSH",
            msh[1],
            msh[4],
            msh[5],
            msh[2],
            msh[3],
            now,
            b"",
            b"ACK^O01^ACK",
            b"E" + msh[9],
            msh[10],
            msh[11],
        )
    )
    return header + b"\rMSA|AA|" + msh[9] + b"\r"


async def serve_echo(reader: HL7StreamReader, writer: HL7StreamWriter) -> None:
    _nodelay(writer)
    try:
        while True:
            block = await reader.readblock()
            writer.writeblock(echo_ack(block))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


class ReferenceIntake:
    """Parse with python-hl7, commit one row per message (WAL, synchronous=FULL), then ACK."""

    def __init__(self, db_path: Path) -> None:
        self.db = sqlite3.connect(db_path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS message (id INTEGER PRIMARY KEY, sender TEXT, control_id TEXT, "
            "patient_id TEXT, accession TEXT, received_at TEXT, raw TEXT)"
        )

    def store(self, message: hl7.Message, raw: str) -> None:
        msh = message.segment("MSH")
        pid = message.segment("PID")
        obr = message.segment("OBR")
        row = (str(msh[3]), str(msh[10]), str(pid[3][0][0]), str(obr[18]), dt.datetime.now().isoformat(), raw)
        self.db.execute("BEGIN")
        self.db.execute(
            "INSERT INTO message (sender, control_id, patient_id, accession, received_at, raw) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            row,
        )
        self.db.execute("COMMIT")

    async def serve(self, reader: HL7StreamReader, writer: HL7StreamWriter) -> None:
        _nodelay(writer)
        try:
            while True:
                block = await reader.readblock()
                text = block.decode("ascii")
                message = hl7.parse(text)
                self.store(message, text)
                writer.writeblock(str(message.create_ack()).encode("ascii"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def main(mode: str, port: int, db_path: Path | None) -> None:
    if mode == "echo":
        handler = serve_echo
    else:
        assert db_path is not None, "--db is required in reference mode"
        handler = ReferenceIntake(db_path).serve
    server = await start_hl7_server(handler, HOST, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("echo", "reference"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", type=Path)
    args = parser.parse_args()
    asyncio.run(main(args.mode, args.port, args.db))
