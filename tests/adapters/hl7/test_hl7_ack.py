"""ACK structure, original mode (HL7 v2.5.1 ch. 2.9.2, 2.14.5; MAPPING.md §6.5 and §9.9)."""

from __future__ import annotations

import hl7
import pytest

from radsync.adapters.hl7.ack import DOMAIN_ERRORS, build_ack, error_from_domain, uses_err1
from radsync.adapters.hl7.codec import Message
from radsync.adapters.hl7.errors import AckCode, ErrorCode, Hl7Error, Location
from radsync.adapters.hl7.intake import new_control_id
from radsync.domain.errors import (
    DomainError,
    IdentityConflict,
    InvalidTransition,
    InvalidValue,
    MissingValue,
    UnknownOrder,
)
from tests.adapters.hl7 import samples as s


def ack_for(text: str, code: AckCode = AckCode.ACCEPT, error: Hl7Error | None = None, codec: str = "ascii") -> bytes:
    return build_ack(Message(text, codec), code, control_id="HUBACK0002", timestamp="20240611101501+0200", error=error)


def test_accept_for_a_v251_omi_matches_mapping_md_9_9() -> None:
    assert ack_for(s.OMI_STAT_9_2) == (
        b"MSH|^~\\&|MWL_HUB|RADDEPT|RIS|RADDEPT|20240611101501+0200||ACK^O23^ACK|HUBACK0002|P|2.5.1\r"
        b"MSA|AA|MSG00002\r"
    )


def test_v231_error_uses_err1_and_msa3() -> None:
    error = Hl7Error(ErrorCode.UNKNOWN_KEY, "Unknown filler order FIL-55599", Location("ORC", 1, 3))
    ack = ack_for(s.ORM_CANCEL_9_5, AckCode.ERROR, error)
    assert ack.split(b"\r")[1:] == [
        b"MSA|AE|MSG00005|Unknown filler order FIL-55599",
        b"ERR|ORC^1^3^204&Unknown key identifier&HL70357",
        b"",
    ]


def test_v251_error_uses_err2_err3_err4_err8() -> None:
    error = Hl7Error(ErrorCode.REQUIRED_FIELD_MISSING, "PID-3 patient identifier missing", Location("PID", 1, 3, 1, 1))
    ack = ack_for(s.OMI_STAT_9_2, AckCode.ERROR, error)
    assert ack.split(b"\r")[1:3] == [
        b"MSA|AE|MSG00002",
        b"ERR||PID^1^3^1^1|101^Required field missing^HL70357|E||||PID-3 patient identifier missing",
    ]


def test_the_ack_parses_and_swaps_sender_and_receiver() -> None:
    inbound = hl7.parse(s.ORM_NEW_9_1)
    ack = hl7.parse(ack_for(s.ORM_NEW_9_1).decode())
    msh_in, msh_out = inbound.segment("MSH"), ack.segment("MSH")
    assert [str(msh_out[n]) for n in (3, 4, 5, 6)] == [str(msh_in[n]) for n in (5, 6, 3, 4)]
    assert str(msh_out[9]) == "ACK^O01^ACK"
    assert str(msh_out[10]) == "HUBACK0002" != str(msh_in[10])
    assert [str(msh_out[n]) for n in (11, 12)] == ["P", "2.3.1"]
    assert str(ack.segment("MSA")[2]) == str(msh_in[10])


def test_free_text_is_escaped_with_the_message_delimiters() -> None:
    error = Hl7Error(ErrorCode.DATA_TYPE, "value A|B^C&D~E\\F is wrong", Location("OBR", 1, 18))
    ack = ack_for(s.OMI_STAT_9_2, AckCode.ERROR, error)
    err = hl7.parse(ack.decode()).segment("ERR")
    assert len(err) == 9  # nothing in the text split the segment
    msg = Message(s.OMI_STAT_9_2)
    assert msg.unescape(str(err[8])) == "value A|B^C&D~E\\F is wrong"


def test_the_ack_keeps_the_charset_and_custom_delimiters_of_the_message() -> None:
    ack = ack_for(s.ORM_CHANGE_LATIN1_9_3, codec="latin-1")
    assert ack.split(b"\r")[0].endswith(b"|P|2.3.1||||||8859/1")
    custom = "MSH*!#$%*A*B*C*D*20240611**ORM!O01*X1*P*2.5.1\r"
    assert ack_for(custom).startswith(b"MSH*!#$%*C*D*A*B*20240611101501+0200**ACK!O01!ACK*HUBACK0002*P*2.5.1\r")
    truncation = ack_for(s.A5_TRUNCATION_CHAR)
    assert truncation.startswith(b"MSH|^~\\&#|")


def test_non_ascii_error_text_is_hex_escaped_in_the_message_charset() -> None:
    error = Hl7Error(ErrorCode.DATA_TYPE, "Größer", Location("PV1", 1, 8))
    ack = ack_for(s.with_charset(s.OMI_STAT_9_2, "UNICODE UTF-8"), AckCode.ERROR, error, codec="utf-8")
    assert b"Gr\\XC3B6\\\\XC39F\\er" in ack
    assert Message(ack.decode(), "utf-8").unescape("Gr\\XC3B6\\\\XC39F\\er") == "Größer"


def test_reject_for_an_unsupported_version_has_no_location_narrower_than_the_field() -> None:
    error = Hl7Error(ErrorCode.UNSUPPORTED_VERSION, "version 2.6 is not supported", Location("MSH", 1, 12),
                     ack=AckCode.REJECT)
    ack = ack_for(s.with_field(s.OMI_STAT_9_2, "MSH", 12, "2.6"), AckCode.REJECT, error)
    assert b"MSA|AR|MSG00002\rERR||MSH^1^12|203^Unsupported version id^HL70357|E||||" in ack


def test_internal_errors_without_location() -> None:
    ack = ack_for(s.ORM_NEW_9_1, AckCode.ERROR, Hl7Error(ErrorCode.INTERNAL, "boom"))
    assert b"\rERR|^^^207&Application internal error&HL70357\r" in ack


@pytest.mark.parametrize(("version", "old"), [("2.3", True), ("2.3.1", True), ("2.4", True), ("2.5", False),
                                              ("2.5.1", False), ("2.6", False)])
def test_err_style_by_version(version: str, old: bool) -> None:
    assert uses_err1(version) is old


@pytest.mark.parametrize(
    ("error", "message_type", "code", "location"),
    [
        (MissingValue("x", field="patient.id"), "ORM", 101, "PID^1^3^1^1"),
        (InvalidValue("x", field="step.modality"), "OMI", 102, "IPC^1^5"),
        (UnknownOrder("x", field="order.number"), "ORM", 204, "ORC^1^3"),
        (UnknownOrder("x", field="step.id"), "OMI", 204, "IPC^1^4"),
        (IdentityConflict("x", field="procedure.study_instance_uid"), "ORM", 205, "ZDS^1^1"),
        (InvalidTransition("x", field="step.status"), "ORM", 207, "ORC^1^1"),
        (DomainError("x", field="something.else"), "ORM", 207, "None"),
    ],
)
def test_one_table_translates_domain_errors(error: DomainError, message_type: str, code: int, location: str) -> None:
    translated = error_from_domain(error, message_type)
    assert translated.code.value == code
    assert str(translated.location) == location
    assert translated.ack is AckCode.ERROR


def test_every_domain_error_class_has_a_code() -> None:
    for kind in (MissingValue, InvalidValue, UnknownOrder, IdentityConflict, InvalidTransition):
        assert kind in DOMAIN_ERRORS


def test_control_ids_are_new_each_time_and_fit_st20() -> None:
    ids = {new_control_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 20 for i in ids)
