"""MSH-18 decides how each message is decoded (MAPPING.md §2.4, FIELD-NOTES C.19-20)."""

from __future__ import annotations

import pytest

from radsync.adapters.hl7.charsets import charset_named, decode
from radsync.adapters.hl7.codec import Message
from radsync.adapters.hl7.datatypes import person_name_from_xpn
from radsync.adapters.hl7.errors import AckCode, Hl7Error, Location
from tests.adapters.hl7 import samples as s


@pytest.mark.parametrize(("msh18", "codec_and_name"), sorted(s.C19_CHARSETS.items()))
def test_each_declared_charset_decodes_the_name(msh18: str, codec_and_name: tuple[str, str]) -> None:
    codec, name = codec_and_name
    raw = s.with_charset(s.with_field(s.ORM_NEW_9_1, "PID", 5, name), msh18).encode(codec)
    decoded = decode(raw, "cp1252")
    assert decoded.declared
    msg = Message(decoded.text, decoded.charset.codec)
    pid = msg.segment("PID")
    assert pid is not None
    assert person_name_from_xpn(pid.repetitions(5), Location("PID")).canonical() == name


@pytest.mark.parametrize(
    ("msh18", "term"),
    [("8859/1", "ISO_IR 100"), ("UNICODE UTF-8", "ISO_IR 192"), ("utf-8", "ISO_IR 192"), ("UNICODE", "ISO_IR 192"),
     ("8859/15", "ISO_IR 203"), ("ISO IR87", "ISO 2022 IR 87"), ("GB 18030-2000", "GB18030"), ("ISO-8859-1", "ISO_IR 100"),
     ("Windows-1252", ""), ("CP1252", ""), ("KS X 1001", "ISO 2022 IR 149"), ("8859/5", "ISO_IR 144")],
)
def test_alias_table(msh18: str, term: str) -> None:
    charset = charset_named(msh18)
    assert charset is not None
    assert charset.dicom_term == term


def test_empty_msh18_tries_utf8_first() -> None:
    decoded = decode(s.C20_UTF8_WITHOUT_MSH18, "cp1252")
    assert not decoded.declared
    assert "Müller^Zoë" in decoded.text


def test_empty_msh18_falls_back_to_the_configured_charset_when_not_utf8() -> None:
    decoded = decode(s.C20_LATIN1_WITHOUT_MSH18, "cp1252")
    assert decoded.charset.codec == "cp1252"
    assert "Müller^Zoë" in decoded.text
    assert "Müller^Zoë" in decode(s.C20_LATIN1_WITHOUT_MSH18, "latin-1").text


def test_a_leading_bom_and_whitespace_are_ignored() -> None:
    decoded = decode(s.A5_BOM.encode("utf-8"), "cp1252")
    assert decoded.text.startswith("MSH|")


def test_unknown_charset_is_rejected_naming_msh18() -> None:
    with pytest.raises(Hl7Error) as caught:
        decode(s.C_UNKNOWN_CHARSET.encode(), "cp1252")
    assert caught.value.ack is AckCode.REJECT
    assert caught.value.code == 103
    assert caught.value.location == Location("MSH", 1, 18)
    assert "KLINGON-1" in caught.value.message


def test_repeated_msh18_is_rejected() -> None:
    with pytest.raises(Hl7Error) as caught:
        decode(s.C_REPEATED_CHARSET.encode(), "cp1252")
    assert (caught.value.ack, caught.value.code) == (AckCode.REJECT, 103)
    assert caught.value.location == Location("MSH", 1, 18, 2)


def test_bytes_that_do_not_match_the_declared_charset_are_an_error_not_a_guess() -> None:
    with pytest.raises(Hl7Error) as caught:
        decode(s.C_INVALID_UTF8, "cp1252")
    assert (caught.value.ack, caught.value.code) == (AckCode.ERROR, 102)
