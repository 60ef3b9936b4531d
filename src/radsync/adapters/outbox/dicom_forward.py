"""DICOM forwarding over the outbox: C-STORE of a stored instance, with the current truth, to one destination.

An outbox entry names a SOP Instance UID (app/forwarding.py). At send time this transport looks the instance up
(its study's current truth: patient, accession, linked orders, split UID), reads the stored original, applies that
truth to the in-memory copy with the Original Attributes Sequence (adapters/dicom/egress.py; the file is never
modified) and C-STOREs it on one association kept open between messages (pynetdicom SCU, TCP_NODELAY).

Outcomes, in the outbox's terms (transports.py):

* 0x0000, or a warning (0xB000, 0xB006, 0xB007: stored, perhaps coerced): sent. ``ack_code`` is the status's
  high byte in hex (``00``, ``B0``), the outbox column being two characters;
* any other status, no response within ``response_timeout``, an abort mid-send, no presentation context accepted
  for the instance: a failed attempt, retried with the destination's backoff, dead after ``max_attempts``; the
  association is dropped after anything but a status. A kept association the peer closed while idle gets one
  immediate resend on a fresh one (as MLLP does);
* no association (refused, rejected, unreachable, connect timeout): ``DestinationUnavailable``, not counted;
* the instance is no longer stored, is quarantined, its study is no longer MATCHED (unlinked meanwhile), or its
  original cannot be read: a permanent failure (dead letter) with the reason; relinking queues it again.

pynetdicom is blocking, so every exchange runs on one thread of the transport's own, never on the worker's loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.presentation import PresentationContext, build_context

from radsync.adapters.dicom.egress import apply_current_truth
from radsync.adapters.dicom.qr_retrieve import MAX_CONTEXTS, UNCOMPRESSED
from radsync.adapters.outbox.transports import DeliveryError, DestinationUnavailable, Receipt
from radsync.app.archive import ArchiveReader, InstanceRecord
from radsync.app.study_ports import BlobStore
from radsync.config import DicomDestinationSettings

log = logging.getLogger("radsync.outbox.dicom")

IDLE_RELEASE = 30.0  # seconds: a kept association idle this long is replaced before the next C-STORE
WARNINGS = frozenset({0xB000, 0xB006, 0xB007})  # PS3.4 B.2.3: stored (coerced, elements discarded, SOP mismatch)


@dataclass(frozen=True)
class ForwardingSource:
    """What forwarding reads: the archive (current truth), the originals, and who radsync is."""

    reader: ArchiveReader
    blobs: BlobStore
    ae_title: str
    clock: Callable[[], dt.datetime]


class DicomForwardTransport:
    """C-STOREs outbox entries (SOP Instance UIDs) to one ``[[dicom_destinations]]`` entry with ``forward``."""

    def __init__(self, destination: DicomDestinationSettings, source: ForwardingSource) -> None:
        self._dest = destination
        self._source = source
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"forward-{destination.ae_title}")
        self._assoc: Any = None
        self._wanted: dict[tuple[str, str], None] = {}  # (SOP class, transfer syntax) pairs proposed so far
        self._last_used = 0.0

    async def deliver(self, control_id: str, payload: bytes) -> Receipt:
        uid = payload.decode("ascii", "replace").strip() or control_id
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._send, uid)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._release)

    # -- on the transport's thread -------------------------------------------------------------------------------

    def _send(self, sop_instance_uid: str) -> Receipt:
        instance = self._instance(sop_instance_uid)
        ds = self._copy(instance)
        reused = self._assoc is not None
        started = time.monotonic()
        code, status = self._exchange(instance, ds)
        if code is None and reused:
            # The kept association had been closed by the peer meanwhile: once more on a fresh one (same instance,
            # so harmless if it did arrive), rather than a counted failure.
            log.debug("destination=%s: kept association was closed, sending again", self._dest.ae_title)
            started = time.monotonic()
            code, status = self._exchange(instance, ds)
        latency = time.monotonic() - started
        if code is None:
            raise DeliveryError(f"no C-STORE response for {sop_instance_uid} within {self._dest.response_timeout} s "
                                "or the association was aborted", reason="timeout")
        if code == 0x0000 or code in WARNINGS:
            if code:
                log.info("destination=%s: C-STORE warning 0x%04X", self._dest.ae_title, code)
            return Receipt(f"{code >> 8:02X}", latency)
        comment = str(status.get("ErrorComment", "") or "")
        raise DeliveryError(f"C-STORE failed with status 0x{code:04X} {comment}".rstrip(),
                            reason=f"0x{code:04X}", ack_code=f"{code >> 8:02X}")

    def _exchange(self, instance: InstanceRecord, ds: Any) -> tuple[int | None, Any]:
        """One C-STORE; (status code, response), or (None, None) with the association dropped when none came."""
        assoc = self._association(instance)
        self._last_used = time.monotonic()
        try:
            status = assoc.send_c_store(ds)
        except Exception as exc:  # no accepted context, encoding problem, connection gone
            self._release()
            raise DeliveryError(f"C-STORE of {instance.sop_instance_uid} could not be sent: {exc}",
                                reason="send") from None
        if status is None or "Status" not in status:
            self._release()
            return None, None
        return int(status.Status), status

    def _instance(self, sop_instance_uid: str) -> InstanceRecord:
        found = self._source.reader.instances_of(sop_instance_uids=[sop_instance_uid])
        if not found:
            raise DeliveryError(f"instance {sop_instance_uid} is no longer stored (deleted or quarantined)",
                                permanent=True, reason="gone")
        instance = found[0]
        if not instance.study.current_truth_applies:
            raise DeliveryError(f"study {instance.study.study_instance_uid} is {instance.study.state.value}, no "
                                "longer reconciled: not forwarded", permanent=True, reason="not matched")
        return instance

    def _copy(self, instance: InstanceRecord) -> Any:
        try:
            with self._source.blobs.open(instance.blob_key) as handle:
                ds = dcmread(handle)
        except Exception as exc:
            raise DeliveryError(f"the original of {instance.sop_instance_uid} cannot be read: "
                                f"{type(exc).__name__}: {exc}", permanent=True, reason="original") from None
        apply_current_truth(ds, instance.study, modifying_system=self._source.ae_title, now=self._source.clock())
        return ds

    def _association(self, instance: InstanceRecord) -> Any:
        pair = (instance.sop_class_uid, instance.transfer_syntax_uid)
        if self._assoc is not None and (
            not self._assoc.is_established or pair not in self._wanted
            or time.monotonic() - self._last_used > IDLE_RELEASE
        ):
            # Gone, idle for long (the peer may have dropped it silently), or it lacks this SOP class / transfer
            # syntax: associate again, proposing every pair seen so far.
            self._release()
        if self._assoc is not None:
            return self._assoc
        self._wanted[pair] = None
        if len(self._wanted) > MAX_CONTEXTS:
            self._wanted = {pair: None}
        ae = AE(ae_title=self._source.ae_title)
        ae.acse_timeout = ae.connection_timeout = self._dest.connect_timeout
        ae.network_timeout = None  # kept between messages; idleness is handled above, not by an abort
        ae.dimse_timeout = self._dest.response_timeout
        contexts = _contexts(self._wanted)
        assoc = ae.associate(self._dest.host, self._dest.port, contexts=contexts, ae_title=self._dest.ae_title)
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "unreachable"
            raise DestinationUnavailable(f"no association with {self._dest.ae_title} at "
                                         f"{self._dest.host}:{self._dest.port} ({why})", reason=why)
        _no_delay(assoc)
        self._assoc = assoc
        return assoc

    def _release(self) -> None:
        assoc, self._assoc = self._assoc, None
        if assoc is None:
            return
        try:
            if assoc.is_established:
                assoc.release()
            else:
                assoc.abort()
        except Exception:  # closing a broken association must not fail the caller
            log.debug("destination=%s: release failed", self._dest.ae_title, exc_info=True)


def _contexts(pairs: Iterable[tuple[str, str]]) -> list[PresentationContext]:
    """One presentation context per (SOP class, stored transfer syntax), as C-MOVE proposes them (qr_retrieve.py):
    an uncompressed instance may go in another uncompressed syntax, a compressed one only as stored."""
    contexts = []
    for sop_class, syntax in pairs:
        others = [s for s in UNCOMPRESSED[:2] if s != syntax] if syntax in UNCOMPRESSED else []
        contexts.append(build_context(sop_class, [syntax, *others]))
    return contexts


def _no_delay(assoc: Any) -> None:
    """TCP_NODELAY on the association's socket (pynetdicom never sets it; Nagle delays small PDUs ~40 ms)."""
    try:
        sock = assoc.dul.socket.socket
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):
        log.debug("TCP_NODELAY could not be set on the forwarding association", exc_info=True)
