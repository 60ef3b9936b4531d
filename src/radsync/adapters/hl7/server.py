"""The MLLP listener: python-hl7's asyncio streams in front of the durable intake (HL7 v2.5.1 Appendix C, MLLP).

Framing is python-hl7's (``start_hl7_server``, ``MLLPStreamReader.readblock``, ``writeblock``); radsync reads
each block as bytes and decodes it itself (charsets.py), because python-hl7's stream reader decodes every
message with one fixed encoding. Per connection: read a block, ``await intake.submit``, write the ACK block;
messages on one connection are answered in order, several per TCP read or one split over reads alike. While a
connection is the only one open, the intake may write its messages on this event loop (intake.py).
TCP_NODELAY is set on every accepted socket (PERF-NOTES: Nagle costs ~40 ms per turn on loopback).

Bad input never stops the listener (ARCHITECTURE invariant 8): a block that does not start with <VT>, or is
larger than ``max_message_bytes``, is answered AR when an MSH can be read from it and dropped otherwise; the
connection stays open. A peer that disconnects mid-message leaves nothing behind: only complete blocks reach
the intake.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from hl7.mllp import HL7StreamReader, HL7StreamWriter, InvalidBlockError
from hl7.mllp.streams import END_BLOCK, START_BLOCK, HL7StreamProtocol

from radsync.adapters.hl7.ack import build_ack
from radsync.adapters.hl7.errors import AckCode, ErrorCode, Hl7Error
from radsync.adapters.hl7.inbound import NotHl7, header_only
from radsync.adapters.hl7.intake import Hl7Intake, IntakeClosed, new_control_id

log = logging.getLogger(__name__)

_PEEK = 4096  # how much of an oversized block is kept to answer it


class _ObservedReader(HL7StreamReader):  # type: ignore[misc]  # python-hl7 ships no type information
    """python-hl7's reader, remembering the bytes of the last block read so a bad one can still be answered.

    ``readblock`` (the library's) consumes a block before it can refuse it (no <VT>) and clears its buffer on
    an oversized block; this keeps what it consumed, and the start of an oversized block, for the answer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_chunk = b""

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        try:
            chunk: bytes = await super().readuntil(separator)
        except asyncio.LimitOverrunError:
            self.last_chunk = bytes(self._buffer[:_PEEK])
            raise
        self.last_chunk = chunk
        return chunk


class Hl7Server:
    """An MLLP listener feeding an ``Hl7Intake``; ``start()`` returns the bound port (0 picks a free one)."""

    def __init__(self, intake: Hl7Intake, host: str, port: int, max_message_bytes: int) -> None:
        self._intake = intake
        self._host = host
        self._port = port
        self._limit = max_message_bytes
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self.protocol_factory(loop), self._host, self._port)
        bound = self._server.sockets[0].getsockname()[1]
        log.info("HL7 MLLP listening on %s:%d", self._host, bound)
        return int(bound)

    def protocol_factory(self, loop: asyncio.AbstractEventLoop) -> Callable[[], HL7StreamProtocol]:
        """What hl7.mllp.start_hl7_server builds, with the observing reader in place of HL7StreamReader; each
        connection is served by ``_serve`` (also for listeners that accept by other means, hl7/workers.py)."""

        def connected(reader: HL7StreamReader, writer: HL7StreamWriter) -> None:
            task = loop.create_task(self._serve(reader, writer))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

        def protocol() -> HL7StreamProtocol:
            return HL7StreamProtocol(_ObservedReader(limit=self._limit, loop=loop), connected, loop=loop)

        return protocol

    def connection_count(self) -> int:
        """Connections open now (a lone one's messages are written on the event loop, intake.py)."""
        return len(self._connections)

    async def stop(self) -> None:
        """Stop accepting, end open connections (their in-flight messages still commit; resends dedupe)."""
        if self._server is None:
            return
        self._server.close()
        # connections first: from Python 3.12 on, wait_closed() also waits for every open connection
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: _ObservedReader, writer: HL7StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer_info = writer.get_extra_info("peername")
        peer = f"{peer_info[0]}:{peer_info[1]}" if peer_info else ""
        try:
            while True:
                answer = await self._next_answer(reader, peer)
                if answer is None:
                    continue
                writer.writeblock(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IntakeClosed):
            pass  # peer gone (a partial block is simply discarded) or we are stopping
        except Exception as exc:  # a bug costs this connection, never the listener
            log.error("HL7 connection from %s ended by %s", peer, type(exc).__name__)
            log.debug("HL7 connection failure", exc_info=True)
        finally:
            writer.close()

    async def _next_answer(self, reader: _ObservedReader, peer: str) -> bytes | None:
        try:
            block = await reader.readblock()
        except InvalidBlockError:
            chunk = reader.last_chunk
            start = chunk.find(START_BLOCK)
            if start <= 0 or chunk[:start].strip(b" \t\r\n\x00"):
                return self._refuse_unframed(chunk, peer, "MLLP block did not begin with <VT>", ErrorCode.SEGMENT_SEQUENCE)
            block = chunk[start + 1 : -len(END_BLOCK) - 1]  # only whitespace between frames (FIELD-NOTES A.3)
        except ValueError:  # python-hl7 raises ValueError when a block exceeds the stream limit
            # 207: a limit of this receiver, not a fault in the data (a larger hl7_max_message_bytes accepts it)
            return self._refuse_unframed(reader.last_chunk, peer, f"message larger than {self._limit} bytes",
                                         ErrorCode.INTERNAL)
        try:
            return await self._intake.submit(block, peer, alone=self.connection_count() == 1)
        except NotHl7:
            log.warning("dropped %d bytes from %s: no MSH segment", len(block), peer)
            return None

    def _refuse_unframed(self, chunk: bytes, peer: str, reason: str, code: ErrorCode) -> bytes | None:
        """AR for a badly framed message whose MSH can be read; ``None`` (drop the bytes) otherwise.

        Not logged in the message log: its resend, properly framed, must be processed, not answered from there.
        """
        start = chunk.rfind(START_BLOCK)
        body = (chunk[start + 1 :] if start != -1 else chunk).removesuffix(END_BLOCK + b"\r")
        try:
            msg = header_only(body)
        except NotHl7:
            log.warning("dropped %d bytes from %s: %s, no MSH", len(chunk), peer, reason)
            return None
        log.warning("refused a message from %s: %s", peer, reason)
        error = Hl7Error(code, f"{reason}; message not processed", ack=AckCode.REJECT)
        return build_ack(msg, AckCode.REJECT, control_id=new_control_id(), timestamp=self._intake.ack_timestamp(),
                         error=error)
