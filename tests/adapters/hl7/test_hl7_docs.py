"""docs/hl7.md prints the order-control table; it must say exactly what the code does."""

from __future__ import annotations

from pathlib import Path

from radsync.adapters.hl7.order_control import DEFAULT_TABLE

DOC = Path(__file__).parents[3] / "docs" / "hl7.md"


def test_the_documented_order_control_table_is_the_one_in_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    table = text.split("<!-- order-control-table", 1)[1].split("<!-- end of order-control-table -->", 1)[0]
    rows = [line.strip("|").split("|") for line in table.splitlines() if line.startswith("| ") and "ORC-1" not in line]
    documented = {
        (control.strip(), "" if status.strip() == "(empty)" else status.strip()): (action.strip(), event.strip())
        for control, status, action, event in rows
    }
    in_code = {
        key: (row.action.value, row.event.value if row.event else "") for key, row in DEFAULT_TABLE.items()
    }
    assert documented == in_code
