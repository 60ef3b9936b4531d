"""Child servers for the benchmarks: start with a readiness wait, stop with SIGTERM, and `radsync serve` itself."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from _net import HOST, free_port, healthz_ok, port_accepts
from _orders import STATIONS


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


def variant(spec: str) -> tuple[str, Path]:
    """``--variant NAME=DIR`` (an argparse type): DIR holds a ``radsync`` package, a changed copy of src/ run
    side by side with the installed one for an A/B in the same rounds."""
    name, sep, directory = spec.partition("=")
    source = Path(directory).resolve()
    if not sep or not name or not (source / "radsync" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"expected NAME=DIR with DIR/radsync/__init__.py, got {spec!r}")
    return name, source
