"""The (ORC-1, ORC-5) table, row by row, checked against IHE RAD-4/RAD-13 (MAPPING.md §1.2)."""

from __future__ import annotations

import pytest

from radsync.adapters.hl7.errors import Hl7Error, Location
from radsync.adapters.hl7.order_control import (
    ANY,
    DEFAULT_TABLE,
    Action,
    OrderControl,
    OrderControlTable,
)
from radsync.domain.status import StepEvent

WHERE = Location("ORC", 1, 1)
TABLE = OrderControlTable()


@pytest.mark.parametrize(("pair", "row"), sorted(DEFAULT_TABLE.items(), key=lambda kv: kv[0]))
def test_every_row_of_the_table(pair: tuple[str, str], row: OrderControl) -> None:
    control, status = pair
    statuses = ["", "SC", "IP", "CM", "CA", "DC", "HD", '""'] if status == ANY else [status]
    for sent in statuses:
        assert TABLE.lookup(control, sent, WHERE) == row
        assert TABLE.lookup(control.lower(), f" {sent.lower()} ", WHERE) == row


IHE = {
    # RAD-4 / RAD-13 combinations and the dcm4chee hl7OrderSPSStatus keys (MAPPING.md §1.2)
    ("NW", "SC"): (Action.PLACE, None),
    ("NW", "IP"): (Action.PLACE, StepEvent.START),
    ("NW", ""): (Action.PLACE, None),
    ("XO", "SC"): (Action.UPDATE, None),
    ("XO", ""): (Action.UPDATE, None),
    ("XX", "SC"): (Action.UPDATE, None),
    ("XO", "CM"): (Action.STATUS, StepEvent.COMPLETE),
    ("SC", "CM"): (Action.STATUS, StepEvent.COMPLETE),
    ("SC", "A"): (Action.STATUS, StepEvent.COMPLETE),
    ("CA", "CA"): (Action.STATUS, StepEvent.CANCEL),
    ("CA", ""): (Action.STATUS, StepEvent.CANCEL),
    ("OC", "CA"): (Action.STATUS, StepEvent.CANCEL),
    ("DC", "CA"): (Action.STATUS, StepEvent.DISCONTINUE),
    ("DC", ""): (Action.STATUS, StepEvent.DISCONTINUE),
    ("DC", "DC"): (Action.STATUS, StepEvent.DISCONTINUE),
    ("OD", "DC"): (Action.STATUS, StepEvent.DISCONTINUE),
    ("SC", "IP"): (Action.STATUS, StepEvent.START),
    ("SC", "DC"): (Action.STATUS, StepEvent.DISCONTINUE),
    ("SC", "CA"): (Action.STATUS, StepEvent.CANCEL),
    ("HD", "HD"): (Action.STATUS, StepEvent.HOLD),
    ("OH", ""): (Action.STATUS, StepEvent.HOLD),
    ("RL", "SC"): (Action.STATUS, StepEvent.RESCHEDULE),
}


@pytest.mark.parametrize(("pair", "expected"), sorted(IHE.items()))
def test_ihe_defaults(pair: tuple[str, str], expected: tuple[Action, StepEvent | None]) -> None:
    row = TABLE.lookup(*pair, WHERE)
    assert (row.action, row.event) == expected


@pytest.mark.parametrize(("control", "status"), [("XO", "ZZ"), ("SC", ""), ("SC", "SC"), ("NW", "CM"), ("RP", ""),
                                                 ("ZZ", "SC"), ("", ""), ("CA", "CM")])
def test_a_pair_outside_the_table_is_refused_by_name(control: str, status: str) -> None:
    with pytest.raises(Hl7Error) as caught:
        TABLE.lookup(control, status, WHERE)
    assert caught.value.code == 103
    assert caught.value.location == WHERE
    assert f"{control or '(empty)'}_{status or 'NULL'}" in caught.value.message


def test_a_site_can_add_and_remove_rows() -> None:
    site = OrderControlTable({("SC", "SC"): OrderControl(Action.STATUS, StepEvent.RESCHEDULE), ("XX", ANY): None})
    assert site.lookup("SC", "SC", WHERE).event is StepEvent.RESCHEDULE
    with pytest.raises(Hl7Error):
        site.lookup("XX", "SC", WHERE)
    assert ("XX", ANY) in DEFAULT_TABLE  # the defaults are untouched
