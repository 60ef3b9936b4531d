"""HL7 v2 over MLLP to one receiver: one message at a time, each confirmed by its own ACK.

Framing is python-hl7's (``open_hl7_connection``, ``writeblock``/``readblock``); this module adds what a sender
must get right (FIELD-NOTES item 8, MAPPING.md §6.5):

- the answer must carry MSA-2 == our MSH-10. Anything else (a late ACK of an earlier message, a foreign or
  unparseable block) is discarded and we keep waiting until the ACK timeout; it never confirms this message
  (NextGen connect#1441: a late ACK "matched to the next message queued");
- one message in flight per connection, so the receiver sees the queue's order;
- after a timeout or a broken frame the connection is dropped: the receiver's state is unknown;
- a reused connection the receiver has meanwhile closed gets one immediate resend on a fresh connection (the same
  bytes and control ID, so harmless), instead of a counted failure;
- TCP_NODELAY on the socket (PERF-NOTES: Nagle costs ~40 ms per turn on loopback).

The ACK timeout is one watchdog timer per connection, not a timer per message: at thousands of messages a second
arming and cancelling an ``asyncio.timeout`` per message was a noticeable part of the sending loop. The watchdog
is armed at the deadline of the message in flight; when it fires and a later message is in flight by then, it
re-arms itself at that message's deadline; when the message in flight is overdue it aborts the connection, which
ends the wait for its ACK.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time

from hl7.mllp import HL7StreamReader, HL7StreamWriter, InvalidBlockError, open_hl7_connection

from radsync.adapters.outbox.ack import AckKind, is_plain_accept, parse_ack
from radsync.adapters.outbox.transports import DeliveryError, DestinationUnavailable, Receipt
from radsync.config import HL7DestinationSettings

log = logging.getLogger("radsync.outbox.mllp")

MAX_ACK_BYTES = 1024 * 1024


class _ConnectionLost(Exception):
    """The receiver closed or reset the connection; ``answered`` tells whether it had sent anything."""


class MllpTransport:
    """Delivers HL7 v2 messages to one destination over a connection kept open between messages."""

    def __init__(self, destination: HL7DestinationSettings) -> None:
        self._dest = destination
        self._reader: HL7StreamReader | None = None
        self._writer: HL7StreamWriter | None = None
        self._deadline = math.inf  # loop time by which the message in flight must be answered (inf: none)
        self._watchdog: asyncio.TimerHandle | None = None
        self._timed_out = False  # the watchdog aborted the connection

    async def deliver(self, control_id: str, payload: bytes) -> Receipt:
        reused = await self._ensure_connected()
        try:
            return await self._exchange(control_id, payload)
        except _ConnectionLost as lost:
            await self.close()
            if not reused:
                raise DeliveryError(f"connection lost before the ACK: {lost}", reason="connection lost") from None
        # The receiver had closed the idle connection before we wrote: resend once on a fresh one.
        log.debug("destination=%s control_id=%s: idle connection was closed, resending", self._dest.name, control_id)
        await self._ensure_connected()
        try:
            return await self._exchange(control_id, payload)
        except _ConnectionLost as lost:
            await self.close()
            raise DeliveryError(f"connection lost before the ACK: {lost}", reason="connection lost") from None

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        writer, self._reader, self._writer = self._writer, None, None
        if writer is None:
            return
        writer.close()
        try:
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
        except (OSError, TimeoutError):
            pass

    # -- internals ---------------------------------------------------------------------------------------------

    async def _raise_if_timed_out(self) -> None:
        if self._timed_out:
            await self.close()
            raise DeliveryError(f"no ACK within {self._dest.ack_timeout:g} s", reason="timeout")

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """The watchdog fired: re-arm for a later message in flight, or end an overdue wait by aborting."""
        self._watchdog = None
        if self._deadline == math.inf or self._writer is None:
            return  # nothing in flight: the next message arms a new watchdog
        if loop.time() < self._deadline:
            self._watchdog = loop.call_at(self._deadline, self._watch, loop)
            return
        self._timed_out = True
        self._writer.transport.abort()  # the pending readblock() ends with IncompleteReadError

    async def _ensure_connected(self) -> bool:
        """Open a connection unless a usable one is open; True when an existing one is reused."""
        if self._writer is not None and self._reader is not None:
            # A FIN the loop has already taken in shows here; one still in flight is caught by the resend.
            if not self._writer.is_closing() and not self._reader.at_eof():
                return True
            await self.close()
        try:
            async with asyncio.timeout(self._dest.connect_timeout):
                self._reader, self._writer = await open_hl7_connection(
                    self._dest.host, self._dest.port, limit=MAX_ACK_BYTES
                )
        except TimeoutError:
            raise DestinationUnavailable(
                f"no connection to {self._dest.host}:{self._dest.port} within {self._dest.connect_timeout:g} s",
                reason="connect timeout",
            ) from None
        except OSError as exc:
            raise DestinationUnavailable(
                f"cannot connect to {self._dest.host}:{self._dest.port}: {exc.strerror or exc}", reason="connect"
            ) from None
        self._timed_out = False
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.debug("destination=%s connected to %s:%s", self._dest.name, self._dest.host, self._dest.port)
        return False

    async def _exchange(self, control_id: str, payload: bytes) -> Receipt:
        try:
            return await self._await_ack(control_id, payload)
        finally:
            self._deadline = math.inf

    async def _await_ack(self, control_id: str, payload: bytes) -> Receipt:
        assert self._reader is not None and self._writer is not None
        reader, writer = self._reader, self._writer
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        self._deadline = loop.time() + self._dest.ack_timeout
        if self._watchdog is None:
            self._watchdog = loop.call_at(self._deadline, self._watch, loop)
        try:
            writer.writeblock(payload)
            await writer.drain()
        except OSError as exc:
            await self._raise_if_timed_out()
            raise _ConnectionLost(type(exc).__name__) from None
        while True:
            try:
                block = await reader.readblock()
            except (asyncio.IncompleteReadError, OSError) as exc:
                await self._raise_if_timed_out()
                if isinstance(exc, asyncio.IncompleteReadError):
                    raise _ConnectionLost("closed by the receiver") from None
                raise _ConnectionLost(type(exc).__name__) from None
            except (InvalidBlockError, ValueError):
                await self.close()
                raise DeliveryError("the receiver's answer is not a valid MLLP block", reason="framing") from None
            plain = is_plain_accept(block, control_id)
            if plain is not None:
                return Receipt(plain, time.perf_counter() - started)
            ack = parse_ack(block)
            if ack is None:
                log.warning("destination=%s control_id=%s: discarded an answer that is not an ACK",
                            self._dest.name, control_id)
                continue
            if ack.control_id != control_id:
                log.warning("destination=%s control_id=%s: discarded a stale or foreign ACK (MSA-2=%s)",
                            self._dest.name, control_id, ack.control_id)
                continue
            latency = time.perf_counter() - started
            if ack.kind is AckKind.ACCEPT:
                return Receipt(ack.code, latency)
            permanent = self._dest.dead_on_reject if ack.kind is AckKind.REJECT else self._dest.dead_on_error
            detail = f": {ack.text}" if ack.text else ""
            raise DeliveryError(f"{ack.code}{detail}", permanent, reason=ack.code or "error", ack_code=ack.code)
