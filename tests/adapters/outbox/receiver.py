"""A real MLLP receiver standing in for the RIS: python-hl7's asyncio server, in a thread, scriptable.

It records every message it receives (control IDs in arrival order, repeats included) and answers according to
``script(control_id, times_seen) -> answers``: an ACK with any code and any MSA-2 (a stale ACK), a delay before
it, silence, or a hang-up. It can be stopped and restarted on the same port while radsync keeps sending.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from hl7.mllp import HL7StreamReader, HL7StreamWriter, start_hl7_server


@dataclass(frozen=True)
class Answer:
    """What the receiver does for one message: wait ``delay`` seconds, then ACK (or hang up)."""

    code: str = "AA"
    msa2: str | None = None  # None: the message's own control ID; anything else makes a stale/foreign ACK
    delay: float = 0.0
    hang_up: bool = False


ACCEPT = (Answer(),)
SILENCE: tuple[Answer, ...] = ()

Script = Callable[[str, int], Sequence[Answer]]


def ack_bytes(code: str, msa2: str) -> bytes:
    return (
        f"MSH|^~\\&|RIS|HOSP|RADSYNC|RAD|20240612084530||ACK^R01^ACK|ACK{msa2}|P|2.5.1\r"
        f"MSA|{code}|{msa2}|{'' if code == 'AA' else 'scripted answer'}\r"
    ).encode()


class Receiver:
    def __init__(self, script: Script | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.script: Script = script or (lambda _cid, _n: ACCEPT)
        self._lock = threading.Lock()
        self._received: list[str] = []
        self._messages: list[str] = []  # each message as received (segments separated by CR), arrival order
        self._seen: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-ris", daemon=True)
        self._thread.start()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[HL7StreamWriter] = set()

    # -- control (from the test's thread) -------------------------------------------------------------------

    def start(self) -> Receiver:
        self._call(self._start())
        return self

    def stop(self) -> None:
        """Stop listening and hang up on every client."""
        self._call(self._stop())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    @property
    def received(self) -> list[str]:
        with self._lock:
            return list(self._received)

    @property
    def messages(self) -> list[str]:
        with self._lock:
            return list(self._messages)

    def times_seen(self, control_id: str) -> int:
        with self._lock:
            return self._seen[control_id]

    def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float = 15.0) -> None:
        wait_until(lambda: predicate(self), timeout, what="the receiver's condition")

    # -- the server (on the receiver's loop) ----------------------------------------------------------------

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(10)

    async def _start(self) -> None:
        self._server = await start_hl7_server(self._client, "127.0.0.1", self.port, encoding="utf-8")

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _client(self, reader: HL7StreamReader, writer: HL7StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    message = await reader.readmessage()
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                control_id = str(message.segment("MSH")[10])
                with self._lock:
                    self._received.append(control_id)
                    self._messages.append(str(message))
                    self._seen[control_id] += 1
                    times = self._seen[control_id]
                for answer in self.script(control_id, times):
                    if answer.delay:
                        await asyncio.sleep(answer.delay)
                    if answer.hang_up or writer.is_closing():
                        writer.close()
                        return
                    writer.writeblock(ack_bytes(answer.code, answer.msa2 or control_id))
                    await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds (a readiness wait, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def oru(control_id: str, text: str = "FINDINGS: normal.") -> bytes:
    """A small ORU^R01 whose MSH-10 is ``control_id``."""
    return (
        f"MSH|^~\\&|RADSYNC|RAD|RIS|HOSP|20240612163000||ORU^R01^ORU_R01|{control_id}|P|2.5.1\r"
        "PID|1||100234567^^^GENHOSP^MR||Doe^Jane\r"
        "OBR|1|PLC-0001^HIS|FIL-1^RIS|71250^CT thorax^C4|||20240612083512||||||||||||A2024061100017|||||CT|F\r"
        f"OBX|1|TX|18782-3^Radiology Study observation^LN|1|{text}||||||F\r"
    ).encode()

