"""Run `radsync serve` as a real subprocess, the way a user does, for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_port

RADSYNC = Path(sys.executable).with_name("radsync")


@dataclass
class RadsyncProcess:
    data_dir: Path
    config: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    hl7_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> dict[str, object]:
        args = [str(RADSYNC), "serve", "--data-dir", str(self.data_dir),
                "--hl7-port", str(self.hl7_port), "--dicom-port", str(self.dicom_port),
                "--http-port", str(self.http_port), *self.extra_args]
        if self.config is not None:
            args += ["--config", str(self.config)]
        log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **self.env})
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"radsync exited with {self.process.returncode}: {self.log_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1) as rsp:
                    return json.loads(rsp.read())
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise TimeoutError(f"radsync did not become healthy: {self.log_text()}")

    def log_text(self) -> str:
        path = self.data_dir.parent / f"{self.data_dir.name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
