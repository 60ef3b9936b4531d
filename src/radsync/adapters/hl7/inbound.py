"""Inbound HL7: which messages radsync accepts and the use case each one drives (HL7 v2.5.1 ch. 2.9, 3, 4).

``prepare`` decodes (MSH-18), checks MSH (type, event, version 2.3-2.5.1, processing ID) and maps the message
into commands through the ``HANDLERS`` table; it touches no database, so it can run before the writer thread
takes the message. ``execute`` hands the commands to the order use cases inside the caller's unit of work.
Unsupported type → AR 200, event → AR 201, processing ID → AR 202, version → AR 203 (MAPPING.md §6.5).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from radsync.adapters.hl7 import charsets
from radsync.adapters.hl7.codec import Message
from radsync.adapters.hl7.demographics import first_identifier, patient_update
from radsync.adapters.hl7.errors import ErrorCode, Hl7Error, Location, rejected
from radsync.adapters.hl7.mapping import orders_from_message
from radsync.adapters.hl7.order_control import Action, OrderControlTable
from radsync.adapters.hl7.oru_in import on_result
from radsync.app.commands import (
    ChangeStepStatus,
    Command,
    MergePatient,
    PlaceOrder,
    UpdateOrder,
    UpdatePatient,
)
from radsync.app.orders import OrderService
from radsync.app.ports import UnitOfWork
from radsync.app.reports import RecordReport, record_report
from radsync.domain.patient_identity import IdentityChange

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = frozenset({"2.3", "2.3.1", "2.4", "2.5", "2.5.1"})


class NotHl7(ValueError):
    """Bytes without a readable MSH: nothing can be acknowledged (the server logs and drops them)."""


@dataclass(frozen=True, slots=True)
class InboundContext:
    """Site policy the mapping needs; built once from settings."""

    zone: dt.tzinfo | None = None
    controls: OrderControlTable = field(default_factory=OrderControlTable)
    fallback_charset: str = "cp1252"
    processing_ids: frozenset[str] = frozenset({"P"})


@dataclass(frozen=True, slots=True)
class Header:
    """What the message log and the deduplication need from MSH (raw, as sent)."""

    sender: str
    receiver: str
    control_id: str
    message_type: str
    structure: str  # "ORM", "OMI", "ADT" … (MSH-9.1), for error locations


@dataclass(frozen=True, slots=True)
class Prepared:
    """A decoded, checked and mapped message: commands to run, or the error to answer with."""

    message: Message
    header: Header
    commands: tuple[Command, ...] = ()
    error: Hl7Error | None = None
    internal: bool = False  # the error is radsync's fault (207): do not replay it to a resend


Handler = Callable[[Message, InboundContext], Sequence[Command]]


def on_order(msg: Message, ctx: InboundContext) -> list[Command]:
    """ORM^O01 / OMI^O23: place, update or change the status of each order (order_control.py decides)."""
    commands: list[Command] = []
    patient = None
    for request in orders_from_message(msg, ctx.controls, ctx.zone):
        event = request.control.event
        if request.control.action is Action.STATUS:
            assert event is not None
            commands.append(ChangeStepStatus(request.key, event, request.step_ids, request.reason))
            continue
        assert request.order is not None
        patient = patient or patient_update(msg, request.order.patient_id, zone=ctx.zone)
        kind = PlaceOrder if request.control.action is Action.PLACE else UpdateOrder
        commands.append(kind(patient, request.order))
        if event is not None:
            steps = tuple(s.step_id for _, s in request.order.steps())
            commands.append(ChangeStepStatus(request.key, event, steps, request.reason))
    return commands


def on_patient(msg: Message, ctx: InboundContext) -> list[Command]:
    """ADT A01/A04/A05/A08/A31: create or update the patient (IHE RAD-1/RAD-12)."""
    return [UpdatePatient(patient_update(msg, zone=ctx.zone))]


def on_merge(msg: Message, ctx: InboundContext) -> list[Command]:
    """ADT A40/A34 (merge) and A47 (change of identifier): each PID with the MRG after it (IHE RAD-12).

    PID-3 names the surviving identifier, MRG-1 the prior one; an MRG missing after a PID → AE 100.
    """
    trigger = msg.msh.value(9, comp=2).strip().upper()
    change = IdentityChange.CHANGE_ID if trigger == "A47" else IdentityChange.MERGE
    commands: list[Command] = []
    pid = None
    for segment in msg.segments:
        if segment.name == "PID":
            if pid is not None:
                raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "MRG segment missing after PID", Location("MRG"))
            pid = segment
        elif segment.name == "MRG":
            if pid is None:
                raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "MRG without a PID before it", segment.at(0))
            prior = first_identifier(segment, 1, "MRG-1 prior patient identifier")
            commands.append(MergePatient(prior, patient_update(msg, pid=pid, zone=ctx.zone), change))
            pid = None
    if pid is not None or not commands:
        raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "MRG segment missing", Location("MRG"))
    return commands


HANDLERS: dict[tuple[str, str], Handler] = {
    ("ORM", "O01"): on_order,
    ("OMI", "O23"): on_order,
    ("ADT", "A01"): on_patient,
    ("ADT", "A04"): on_patient,
    ("ADT", "A05"): on_patient,
    ("ADT", "A08"): on_patient,
    ("ADT", "A31"): on_patient,
    ("ADT", "A40"): on_merge,
    ("ADT", "A34"): on_merge,
    ("ADT", "A47"): on_merge,
    ("ORU", "R01"): on_result,
}
_TYPES = frozenset(kind for kind, _ in HANDLERS)


def header_of(msg: Message) -> Header:
    msh = msg.msh
    return Header(
        sender=f"{msh.field(3)}^{msh.field(4)}",
        receiver=f"{msh.field(5)}^{msh.field(6)}",
        control_id=msh.field(10),
        message_type=msh.field(9),
        structure=msh.value(9).upper(),
    )


def check_header(msg: Message, ctx: InboundContext) -> Handler:
    """The handler for this message, or the AR that refuses it."""
    msh = msg.msh
    kind, trigger = msh.value(9).strip().upper(), msh.value(9, comp=2).strip().upper()
    if kind not in _TYPES:
        raise rejected(ErrorCode.UNSUPPORTED_MESSAGE_TYPE, f"message type {kind or '(empty)'} is not supported",
                       Location("MSH", 1, 9, 1, 1))
    handler = HANDLERS.get((kind, trigger))
    if handler is None:
        raise rejected(ErrorCode.UNSUPPORTED_EVENT, f"event {kind}^{trigger or '(empty)'} is not supported",
                       Location("MSH", 1, 9, 1, 2))
    version = msh.value(12).strip()
    if version not in SUPPORTED_VERSIONS:
        raise rejected(ErrorCode.UNSUPPORTED_VERSION,
                       f"version {version or '(empty)'} is not supported (2.3 to 2.5.1 are)", Location("MSH", 1, 12))
    processing = msh.value(11).strip().upper()
    if processing not in ctx.processing_ids:
        raise rejected(ErrorCode.UNSUPPORTED_PROCESSING_ID,
                       f"processing ID {processing or '(empty)'} is not accepted here", Location("MSH", 1, 11))
    return handler


def header_only(raw: bytes) -> Message:
    """MSH alone, decoded byte for byte (latin-1), to answer a message whose body cannot be decoded."""
    body = charsets.strip_preamble(raw)
    end = min((i for i in (body.find(b"\r"), body.find(b"\n")) if i != -1), default=len(body))
    try:
        return Message(body[:end].decode("latin-1"), codec="latin-1")
    except Hl7Error:
        raise NotHl7("no MSH segment") from None


def prepare(raw: bytes, ctx: InboundContext) -> Prepared:
    """Decode, check and map one message; never raises except ``NotHl7``."""
    try:
        decoded = charsets.decode(raw, ctx.fallback_charset)
    except Hl7Error as error:
        msg = header_only(raw)
        return Prepared(msg, header_of(msg), error=error)
    try:
        msg = Message(decoded.text, decoded.charset.codec)
    except Hl7Error:
        raise NotHl7("no readable MSH segment") from None
    header = header_of(msg)
    try:
        handler = check_header(msg, ctx)
        return Prepared(msg, header, tuple(handler(msg, ctx)))
    except Hl7Error as refusal:
        return Prepared(msg, header, error=refusal)
    except Exception as exc:  # a mapping bug must cost one AE, not the listener
        log.error("HL7 %s %s could not be mapped (%s)", header.message_type, header.control_id, type(exc).__name__)
        log.debug("HL7 mapping failure", exc_info=True)
        internal = Hl7Error(ErrorCode.INTERNAL, f"internal error while reading the message ({type(exc).__name__})")
        return Prepared(msg, header, error=internal, internal=True)


def execute(service: OrderService, uow: UnitOfWork, commands: Sequence[Command]) -> None:
    """Run the commands in message order inside ``uow`` (the caller's savepoint)."""
    for command in commands:
        if isinstance(command, PlaceOrder | UpdateOrder):
            service.place(uow, command)
        elif isinstance(command, ChangeStepStatus):
            service.change_status(uow, command)
        elif isinstance(command, RecordReport):
            record_report(uow, command)
        elif isinstance(command, MergePatient):
            service.patients.merge(uow, command)
        else:
            service.update_patient(uow, command)
