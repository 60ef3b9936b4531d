"""The transport seam: one async call that delivers one message or says why not.

Transports classify every failure as one ``DeliveryError`` (healthchecks' ``TransportError``): ``permanent``
failures make the message a dead letter at once, the others are retried with backoff until the destination's
``max_attempts``. ``DestinationUnavailable`` marks failures where the message never reached the receiver
(connection refused, connect timeout): the destination is down, the message is not at fault, and the attempt does
not count, so a long RIS outage delays the queue without turning it into dead letters one by one.

Transports: HL7 v2 over MLLP (``mllp_client.py``) and DICOM C-STORE forwarding (``dicom_forward.py``); FHIR
notifications will add theirs to ``build_transport``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from radsync.config import DicomDestinationSettings, HL7DestinationSettings

if TYPE_CHECKING:
    from radsync.adapters.outbox.dicom_forward import ForwardingSource


class DeliveryError(Exception):
    """A delivery attempt failed.

    ``message`` is stored as the entry's ``last_error`` and may quote the receiver (MSA-3), so it is logged at
    DEBUG only; ``reason`` is a short, PHI-free category for logs and metrics (``AE``, ``timeout``, ...).
    """

    def __init__(self, message: str, permanent: bool = False, *, reason: str = "error", ack_code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.reason = reason
        self.ack_code = ack_code


class DestinationUnavailable(DeliveryError):
    """The message could not be handed over at all (no connection); not counted as an attempt."""

    def __init__(self, message: str, *, reason: str = "connect") -> None:
        super().__init__(message, permanent=False, reason=reason)


@dataclass(frozen=True, slots=True)
class Receipt:
    """A positive acknowledgement: its code (AA or CA) and the time from handing over to the ACK, in seconds."""

    ack_code: str
    latency: float


class Transport(Protocol):
    async def deliver(self, control_id: str, payload: bytes) -> Receipt:
        """Send ``payload`` and wait for the receiver's answer to ``control_id``; raise ``DeliveryError``."""
        ...

    async def close(self) -> None:
        """Release the connection, if any; the next ``deliver`` opens a new one."""
        ...


def build_transport(
    destination: HL7DestinationSettings | DicomDestinationSettings, forwarding: ForwardingSource | None = None
) -> Transport:
    """The transport for a configured destination: MLLP for an HL7 one, C-STORE for a forwarding DICOM one
    (which needs ``forwarding``: where the stored instances and their current truth are read)."""
    if isinstance(destination, DicomDestinationSettings):
        from radsync.adapters.outbox.dicom_forward import DicomForwardTransport

        if forwarding is None:
            raise ValueError("a DICOM forwarding destination needs the archive to read from")
        return DicomForwardTransport(destination, forwarding)
    from radsync.adapters.outbox.mllp_client import MllpTransport

    return MllpTransport(destination)
