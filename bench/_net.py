"""Loopback networking for the benchmarks: free ports, readiness probes, TCP_NODELAY, dcmtk tools and their environment.

Everything talks to 127.0.0.1 only and sets TCP_NODELAY on every socket it opens (see PERF-NOTES.md: with
Nagle's algorithm on, each request/response turn on loopback can cost ~40 ms and the figures mean nothing).
"""

from __future__ import annotations

import functools
import http.client
import os
import socket
import subprocess
from pathlib import Path

HOST = "127.0.0.1"


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
