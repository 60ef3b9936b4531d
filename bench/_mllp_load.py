"""An asyncio MLLP load generator: many messages over N connections, each waiting for its ACK, latencies kept."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from hl7.mllp.streams import CARRIAGE_RETURN, END_BLOCK, START_BLOCK

from _net import HOST, set_nodelay

MLLP_TRAILER = END_BLOCK + CARRIAGE_RETURN


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
