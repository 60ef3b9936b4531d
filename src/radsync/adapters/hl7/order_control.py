"""Order control: (ORC-1, ORC-5) → what radsync does with the order, as data (HL7 tables 0119 and 0038).

Defaults follow IHE RAD-4 (Procedure Scheduled) and RAD-13 (Procedure Updated) and dcm4chee's
``hl7OrderSPSStatus`` keys, MAPPING.md §1.2: NW creates, XO/XX update (the Study Instance UID stays), CA/OC
cancel, DC/OD discontinue, SC with ORC-5 changes the status, HD/OH hold, RL releases a hold. A pair that is not
in the table is refused with AE and ERR 103 at ORC-1 naming the pair (dcm4chee#2849 "XO_NULL" shows what
silently skipping does). RIS vendors disagree, so a site can pass its own rows (``OrderControlTable(overrides)``).

``ANY`` as ORC-5 matches every status (including empty) for that ORC-1; an exact pair wins over it. An empty
ORC-5 and ``""`` are the same key, ``""``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from radsync.adapters.hl7.codec import NULL
from radsync.adapters.hl7.errors import ErrorCode, Hl7Error, Location
from radsync.domain.status import StepEvent


class Action(Enum):
    """What an order message asks for."""

    PLACE = "place"  # create, or update when already known (a resent NW is an update)
    UPDATE = "update"  # change details and reschedule; Study Instance UID kept
    STATUS = "status"  # status only (cancel, discontinue, complete, start, hold, release)


@dataclass(frozen=True, slots=True)
class OrderControl:
    """One row: the action, and for STATUS (or PLACE + start) the step event to apply."""

    action: Action
    event: StepEvent | None = None


ANY = "*"
PLACE = OrderControl(Action.PLACE)
UPDATE = OrderControl(Action.UPDATE)


def _status(event: StepEvent) -> OrderControl:
    return OrderControl(Action.STATUS, event)


E = StepEvent

DEFAULT_TABLE: dict[tuple[str, str], OrderControl] = {
    # RAD-4 new orders
    ("NW", "SC"): PLACE,
    ("NW", ""): PLACE,
    ("NW", "IP"): OrderControl(Action.PLACE, E.START),  # ordered and already in process
    # RAD-13 changes: XO from the order filler (IHE), XX unsolicited from the filler (HL7)
    ("XO", "SC"): UPDATE,
    ("XO", ""): UPDATE,
    ("XO", "CM"): _status(E.COMPLETE),
    ("XX", ANY): UPDATE,
    # cancel / discontinue (RAD-13 CA/CA, DC/CA; OC/OD are the unsolicited forms)
    ("CA", "CA"): _status(E.CANCEL),
    ("CA", ""): _status(E.CANCEL),
    ("OC", ANY): _status(E.CANCEL),
    ("DC", "CA"): _status(E.DISCONTINUE),
    ("DC", "DC"): _status(E.DISCONTINUE),
    ("DC", ""): _status(E.DISCONTINUE),
    ("OD", ANY): _status(E.DISCONTINUE),
    # status changed by the filler: status only, no demographic change
    ("SC", "IP"): _status(E.START),
    ("SC", "CM"): _status(E.COMPLETE),
    ("SC", "A"): _status(E.COMPLETE),
    ("SC", "DC"): _status(E.DISCONTINUE),
    ("SC", "CA"): _status(E.CANCEL),
    # hold and release (vendor practice: keep the item but take it off the worklist)
    ("HD", ANY): _status(E.HOLD),
    ("OH", ANY): _status(E.HOLD),
    ("RL", ANY): _status(E.RESCHEDULE),
}
del E


class OrderControlTable:
    """Look up (ORC-1, ORC-5); ``overrides`` add or replace rows (``None`` removes one)."""

    def __init__(self, overrides: Mapping[tuple[str, str], OrderControl | None] | None = None) -> None:
        table = dict(DEFAULT_TABLE)
        for key, row in (overrides or {}).items():
            if row is None:
                table.pop(key, None)
            else:
                table[key] = row
        self.rows: Mapping[tuple[str, str], OrderControl] = table

    def lookup(self, order_control: str, order_status: str, where: Location) -> OrderControl:
        control = order_control.strip().upper()
        status = order_status.strip().upper()
        if status == NULL:
            status = ""
        row = self.rows.get((control, status)) or self.rows.get((control, ANY))
        if row is None:
            shown = f"{control or '(empty)'}_{status or 'NULL'}"
            raise Hl7Error(
                ErrorCode.TABLE_VALUE_NOT_FOUND,
                f"order control {shown} (ORC-1 {control or 'empty'}, ORC-5 {status or 'empty'}) is not supported",
                where,
            )
        return row
