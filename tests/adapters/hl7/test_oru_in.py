"""ORU^R01 in: mapping to RecordReport (no database); the AE for an unknown order is in tests/e2e."""

from __future__ import annotations

import datetime as dt

import pytest

from radsync.adapters.hl7.codec import Message
from radsync.adapters.hl7.errors import ErrorCode, Hl7Error
from radsync.adapters.hl7.inbound import InboundContext, prepare
from radsync.adapters.hl7.oru_in import reports_from_message
from radsync.app.reports import RecordReport
from radsync.domain.report import ReportStatus

ORU = (
    "MSH|^~\\&|REPORTING|RADDEPT|MWL_HUB|RADDEPT|20240612163000||ORU^R01^ORU_R01|MSG00008|P|2.5.1\r"
    "PID|1||100234567^^^GENHOSP^MR||Doe^Jane^Marie^^Mrs||19700412|F\r"
    "ORC|RE|PLC-0001^HIS_ORD|FIL-55501^RIS_HUB||CM\r"
    "OBR|1|PLC-0001^HIS_ORD|FIL-55501^RIS_HUB|71250^CT thorax w/o contrast^C4|||20240612083512|||||||||"
    "D1234^Smith^Robert^^^Dr||A2024061100017|RP00017|||20240612162900||CT|{status}|||||||R9001&Lee&Hannah&&&Dr\r"
    "OBX|1|TX|18782-3^Radiology Study observation^LN|1|FINDINGS: Lungs \\T\\ pleura clear.||||||F|||20240612162800\r"
    "OBX|2|TX|18782-3^Radiology Study observation^LN|1|No effusion.||||||F\r"
    "OBX|3|ST|113014^DICOM Study^DCM||2.25.1866||||||F\r"
)


def parse(status: str = "F") -> list[RecordReport]:
    return reports_from_message(Message(ORU.format(status=status)), dt.UTC)


def test_oru_maps_to_one_report_with_keys_status_text_author_and_time() -> None:
    [command] = parse()
    assert command.key.accession.value == "A2024061100017"
    assert command.key.filler_number.value == "FIL-55501" and command.key.placer_number.value == "PLC-0001"
    report = command.report
    assert report.status is ReportStatus.FINAL
    assert report.text == "FINDINGS: Lungs & pleura clear.\nNo effusion."
    assert report.author.alphabetic.family == "Lee" and report.author_id == "R9001"
    assert report.observed_at == dt.datetime(2024, 6, 12, 16, 28)
    assert command.source == "hl7"


@pytest.mark.parametrize("code,status", [("P", ReportStatus.PRELIMINARY), ("C", ReportStatus.CORRECTED)])
def test_result_status_follows_obr25(code: str, status: ReportStatus) -> None:
    assert parse(code)[0].report.status is status


def test_unknown_result_status_is_a_table_value_error() -> None:
    with pytest.raises(Hl7Error) as caught:
        parse("X")
    assert caught.value.code is ErrorCode.TABLE_VALUE_NOT_FOUND


def test_oru_is_in_the_dispatch_table() -> None:
    prepared = prepare(ORU.format(status="F").encode(), InboundContext())
    assert prepared.error is None
    assert isinstance(prepared.commands[0], RecordReport)
