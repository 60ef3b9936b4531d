"""The lean message reader: every value equals python-hl7's, escapes go through python-hl7, terminators and
delimiters are read, never assumed (HL7 v2.5.1 ch. 2.5-2.7; FIELD-NOTES A and B)."""

from __future__ import annotations

import hl7
import pytest

from radsync.adapters.hl7.codec import (
    _DELIMITER_ESCAPES,
    NULL,
    Delimiters,
    Message,
    _normalise_escapes,
    split_segments,
)
from radsync.adapters.hl7.errors import Hl7Error
from tests.adapters.hl7 import samples as s

CORPUS = {
    name: value
    for name, value in vars(s).items()
    if isinstance(value, str) and value.startswith("MSH") and "\r" in value
}


def _walk(reference: hl7.Message):  # type: ignore[no-untyped-def]
    """(segment name, sequence, field, rep, comp, sub, raw leaf) for every leaf hl7.parse produced.

    python-hl7's tree: Field → str | Repetition, Repetition → str | Component, Component → str.
    """
    seen: dict[str, int] = {}
    for segment in reference:
        name = str(segment[0])
        seen[name] = seen.get(name, 0) + 1
        for field_no in range(1, len(segment)):
            if name == "MSH" and field_no in (1, 2):
                continue
            for r, rep in enumerate(segment[field_no], 1):
                for c, comp in enumerate(rep if isinstance(rep, hl7.Repetition) else [rep], 1):
                    for k, sub in enumerate(comp if isinstance(comp, hl7.Component) else [comp], 1):
                        yield name, seen[name], field_no, r, c, k, str(sub)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_every_leaf_equals_hl7_parse(name: str) -> None:
    text = CORPUS[name]
    # hl7.parse knows only CR terminators; the terminator rules are tested separately below
    reference = hl7.parse("\r".join(split_segments(text)))
    ours = Message(text)
    leaves = 0
    for seg_name, sequence, field_no, rep, comp, sub, raw in _walk(reference):
        segment = ours.all(seg_name)[sequence - 1]
        assert segment.raw(field_no, rep, comp, sub) == raw, (seg_name, field_no, rep, comp, sub)
        normalised, _ = _normalise_escapes(raw, ours.delimiters.escape)
        if normalised == raw:  # python-hl7 drops the rest of an invalid escape; radsync keeps it (ESCAPES below)
            expected = reference.unescape(raw, app_map=_app_map_for(ours, raw))
            assert segment.value(field_no, rep, comp, sub) == expected
        leaves += 1
    assert leaves > 20
    assert [seg.name for seg in ours.segments] == [str(seg[0]) for seg in reference]
    assert ours.msh.field(2) == str(reference.segment("MSH")[2])


def _app_map_for(msg: Message, raw: str) -> dict[str, str]:
    """The application map radsync hands python-hl7 for this leaf (so the comparison covers the splitting)."""
    _, names = _normalise_escapes(raw, msg.delimiters.escape)
    return {n: msg._substitute(n, False) for n in names if n not in _DELIMITER_ESCAPES}


def test_one_based_access_by_segment_field_repetition_component_subcomponent() -> None:
    msg = Message(s.OMI_STAT_9_2)
    assert msg.value("PID", 3) == "200345678"
    assert msg.value("PID", 3, rep=1, comp=4, sub=2) == "2.16.840.1.113883.3.9999.1"
    assert msg.value("PID", 3, comp=4, sub=3) == "ISO"
    assert msg.value("MSH", 9, comp=3) == "OMI_O23"
    assert msg.value("MSH", 1) == "|" and msg.value("MSH", 2) == "^~\\&"
    assert msg.value("IPC", 6, comp=2) == "Abdomen arterial phase"
    assert msg.all("IPC")[1].value(6, comp=2) == "Abdomen portal venous phase"
    assert msg.value("PID", 99) == "" and msg.value("ZZZ", 1) == ""
    assert [[seg.name for seg in g] for g in msg.groups("ORC")] == [["ORC", "TQ1", "OBR", "NTE", "IPC", "IPC"]]


def test_explicit_null_is_distinguishable_from_empty() -> None:
    msg = Message(s.with_field(s.ORM_NEW_9_1, "PID", 7, '""'))
    pid = msg.segment("PID")
    assert pid is not None
    assert pid.value(7) == NULL
    assert pid.value(9) == ""
    assert pid.rep(7).is_null and not pid.rep(9)


@pytest.mark.parametrize(
    ("terminated", "segments"),
    [
        ("MSH|^~\\&|A\rPID|1\rPV1|1\r", ["MSH|^~\\&|A", "PID|1", "PV1|1"]),
        ("MSH|^~\\&|A\nPID|1\nPV1|1\n", ["MSH|^~\\&|A", "PID|1", "PV1|1"]),
        ("MSH|^~\\&|A\r\nPID|1\r\nPV1|1\r\n", ["MSH|^~\\&|A", "PID|1", "PV1|1"]),
        # CR-terminated with a LF inside NTE text: the LF is data (FIELD-NOTES A.2)
        ("MSH|^~\\&|A\rNTE|1||line 1\nline 2\rPV1|1", ["MSH|^~\\&|A", "NTE|1||line 1\nline 2", "PV1|1"]),
        ("MSH|^~\\&|A\r\r\rPID|1", ["MSH|^~\\&|A", "PID|1"]),
    ],
)
def test_segment_terminators(terminated: str, segments: list[str]) -> None:
    assert split_segments(terminated) == segments


def test_lf_inside_report_text_stays_in_the_value() -> None:
    msg = Message(s.A2_LF_IN_NTE)
    assert msg.all("NTE")[0].value(3, text=True) == "first line\nsecond line"
    assert msg.segment("ZXX") is not None  # an unknown Z-segment is just another segment


def test_delimiters_come_from_msh_including_the_v27_truncation_character() -> None:
    custom = "MSH*!#$%*A*B\rPID*1**123!!!HOSP!MR#456**Doe!Jane$T$ Co\r"
    msg = Message(custom)
    assert msg.delimiters == Delimiters("*", "!", "#", "$", "%", "")
    assert msg.value("PID", 3, rep=2) == "456"
    assert msg.value("PID", 3, comp=4) == "HOSP"
    assert msg.value("PID", 5, comp=2) == "Jane% Co"  # $T$ = the sub-component separator, %
    v27 = Message(s.A5_TRUNCATION_CHAR)
    assert v27.delimiters.truncation == "#"
    assert v27.delimiters.encoding_characters == "^~\\&#"
    assert v27.value("PID", 5) == "Doe"
    assert v27.unescape("a\\P\\b") == "a#b"


@pytest.mark.parametrize("bad", ["MSH|^^\\&|A", "MSH|^~\\^|A", "MSH|a~\\&|A"])
def test_invalid_encoding_characters_are_refused(bad: str) -> None:
    with pytest.raises(Hl7Error) as caught:
        Message(bad)
    assert caught.value.code == 102


def test_a_message_must_begin_with_msh() -> None:
    with pytest.raises(Hl7Error):
        Message("PID|1||123")


ESCAPES = [
    # raw leaf, unescaped for a short string, unescaped for text (CR LF kept)
    ("JOHNSON \\T\\ JOHNSON", "JOHNSON & JOHNSON", None),
    ("O\\S\\NEIL", "O^NEIL", None),
    ("a\\F\\b\\R\\c\\E\\d", "a|b~c\\d", None),
    ("BSV 4\\5", "BSV 4\\5", None),  # invalid escape kept literally (FIELD-NOTES B.11)
    ("\\", "\\", None),
    ("left\\right unclear", "left\\right unclear", None),
    ("\\X00E0\\", "à", None),  # a Unicode code point written as hex (HL7-V2#3)
    ("Ren\\XE9\\", "René", None),  # a byte in the message charset (latin-1 here)
    ("\\E\\X09\\E\\", "\\X09\\", None),  # Epic double escaping: one level only
    ("\\H\\bold\\N\\ text", "bold text", None),
    ("line\\.br\\next", "line next", "line\r\nnext"),
    ("a\\.sp 2\\b", "a  b", "a\r\n\r\nb"),
    ("x\\Zlocal\\y", "xy", None),
    ("\\X0D0A\\", "\r\n", None),
]


@pytest.mark.parametrize(("raw", "short", "text"), ESCAPES)
def test_unescaping(raw: str, short: str, text: str | None) -> None:
    msg = Message("MSH|^~\\&|A|B\r", codec="latin-1")
    assert msg.unescape(raw) == short
    assert msg.unescape(raw, text=True) == (text if text is not None else short)


def test_hex_escapes_decode_with_the_message_charset() -> None:
    utf8 = Message("MSH|^~\\&|A|B\r", codec="utf-8")
    assert utf8.unescape("M\\XC3BC\\ller") == "Müller"
    latin1 = Message("MSH|^~\\&|A|B\r", codec="latin-1")
    assert latin1.unescape("M\\XFC\\ller") == "Müller"


@pytest.mark.parametrize("text", ["a|b^c&d~e\\f", "plain", "line1\rline2", "Müller ß", "tab\there"])
def test_outbound_escaping_round_trips_through_python_hl7(text: str) -> None:
    msg = Message("MSH|^~\\&|A|B\r", codec="utf-8")
    escaped = msg.escape(text)
    assert not set("|^&~") & set(escaped)
    assert escaped.isascii()
    assert msg.unescape(escaped, text=True).replace("\r\n", "\r") == text


def test_python_hl7_never_logs_field_values(caplog: pytest.LogCaptureFixture) -> None:
    """python-hl7 logs the whole field (PHI) for sequences it does not know; radsync's app map covers them all."""
    msg = Message("MSH|^~\\&|A|B\r", codec="utf-8")
    caplog.set_level("DEBUG")
    for value in ["\\C2842\\x", "\\M2442\\y", "\\XZZ\\", "\\X1\\", "a\\\\b", "\\.spx\\", "\\Zlocal\\", "\\Q\\", "\\"]:
        msg.unescape(value)
    assert not [r for r in caplog.records if "hl7" in r.pathname and "radsync" not in r.pathname]
