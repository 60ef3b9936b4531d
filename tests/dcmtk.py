"""dcmtk as a real peer in tests: tool paths (always /usr/bin: pynetdicom installs look-alike scripts in .venv/bin),
the environment they run with, and a storescp to receive what radsync sends (C-MOVE destinations, forwarding)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom import dcmread

STORESCP = "/usr/bin/storescp"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_storescp(out: Path, port: int | None = None, ae_title: str = "STORESCP") -> Iterator[int]:
    """dcmtk's storescp writing every received object into ``out``; yields its port once it accepts connections."""
    out.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    proc = subprocess.Popen([STORESCP, "-aet", ae_title, "-od", str(out), str(port)], env=DCMTK_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def received_copies(out: Path) -> dict[str, Any]:
    """The files storescp has finished writing into ``out``, by SOP Instance UID (one being written waits)."""
    copies = {}
    for path in sorted(out.glob("*")):
        try:
            ds = dcmread(path)
            _ = ds.PixelData
        except Exception:
            continue  # still being written
        copies[str(ds.SOPInstanceUID)] = ds
    return copies
