"""Reading ACKs: MSA-1 and MSA-2 from whatever a receiver sends back."""

from __future__ import annotations

import pytest

from radsync.adapters.outbox.ack import AckKind, is_plain_accept, parse_ack


@pytest.mark.parametrize(
    ("block", "code", "control_id", "kind"),
    [
        (b"MSH|^~\\&|RIS|H|RS|R|20240611||ACK^R01^ACK|A1|P|2.5.1\rMSA|AA|MSG1\r", "AA", "MSG1", AckKind.ACCEPT),
        (b"MSH|^~\\&|RIS|H|RS|R|20240611||ACK|A1|P|2.3.1\rMSA|CA|MSG1", "CA", "MSG1", AckKind.ACCEPT),
        (b"MSH|^~\\&|RIS|H|RS|R|20240611||ACK|A1|P|2.3.1\nMSA|AE|MSG2|Unknown order\n", "AE", "MSG2", AckKind.ERROR),
        (b"MSH|^~\\&|RIS|H|RS|R|20240611||ACK|A1|P|2.3.1\r\nMSA|ar|MSG3\r\n", "AR", "MSG3", AckKind.REJECT),
        (b"MSH|^~\\&|RIS|H|RS|R|2024||ACK|A1|P|2.5\rMSA|CR|M4\rERR||MSH^1^9|200^Unsupported^HL70357|E", "CR", "M4",
         AckKind.REJECT),
        (b"MSH|^~\\&|RIS|H|RS|R|2024||ACK|A1|P|2.5\rMSA|XX|M5", "XX", "M5", AckKind.ERROR),
        (b"MSH#^~\\&#RIS#H#RS#R#2024##ACK#A1#P#2.5\rMSA#AA#M6", "AA", "M6", AckKind.ACCEPT),
    ],
)
def test_msa_code_and_control_id_are_read(block: bytes, code: str, control_id: str, kind: AckKind) -> None:
    ack = parse_ack(block)
    assert ack is not None
    assert (ack.code, ack.control_id, ack.kind) == (code, control_id, kind)


def test_the_error_text_is_kept() -> None:
    ack = parse_ack(b"MSH|^~\\&|RIS|H|RS|R|2024||ACK|A1|P|2.3.1\rMSA|AE|MSG2|Unknown filler order\r")
    assert ack is not None and ack.text == "Unknown filler order"


@pytest.mark.parametrize(
    "block",
    [b"", b"hello", b"MSH|^~\\&|RIS|H|RS|R|2024||ORU^R01|X|P|2.5\rPID|1", b"MSH|^~\\&|R\rMSA|", b"\xff\xfe"],
)
def test_anything_else_is_not_an_ack(block: bytes) -> None:
    assert parse_ack(block) is None


ACKS = [
    b"MSH|^~\\&|RIS|H|RS|R|20240611||ACK^R01^ACK|A1|P|2.5.1\rMSA|AA|MSG1\r",
    b"MSH|^~\\&|RIS|H|RS|R|20240611||ACK^R01^ACK|A1|P|2.5.1\rMSA|AA|MSG1",
    b"MSH|^~\\&|RIS|H|RS|R|20240611||ACK^R01^ACK|A1|P|2.5.1\rMSA|AA|MSG1|all fine\r",
    b"MSH|^~\\&|RIS|H|RS|R|20240611||ACK|A1|P|2.3.1\nMSA|CA|MSG1\n",
    b"MSH#^~\\&#RIS#H#RS#R#2024##ACK#A1#P#2.5\rMSA#AA#MSG1",
    b"MSH|^~\\&|RIS|H|RS|R|20240611||ACK|A1|P|2.5.1\rMSA|AA|MSG10\r",  # another message (prefix of ours)
    b"MSH|^~\\&|RIS|H|RS|R|20240611||ACK|A1|P|2.5.1\rMSA|AA|MSG1^X\r",  # a component: not literally ours
    b"MSH|^~\\&|RIS|H|RS|R|20240611||ACK|A1|P|2.5.1\rMSA|AE|MSG1|MSA|AA|MSG1\r",  # the text quotes an accept
    b"MSH|^~\\&|RIS|H|RS|R|20240611||ACK|A1|P|2.5.1\rMSA|AA|OTHER\rNTE|1||MSA|AA|MSG1\r",
    b"MSH|^~\\&|RIS|H|RS|R|20240611||ACK|A1|P|2.5.1\rMSA|AR|MSG1\r",
    b"MSH|^~\\&|RIS|H|RS|R|20240611||ACK|A1|P|2.5.1\rMSA| AA|MSG1\r",
]


@pytest.mark.parametrize("block", ACKS)
def test_the_plain_accept_shortcut_agrees_with_the_parser(block: bytes) -> None:
    shortcut = is_plain_accept(block, "MSG1")
    parsed = parse_ack(block)
    parser_accepts = parsed is not None and parsed.control_id == "MSG1" and parsed.kind is AckKind.ACCEPT
    if shortcut is not None:
        assert parser_accepts and parsed is not None and parsed.code == shortcut
    elif parsed is not None and parsed.control_id == "MSG1" and parsed.code in ("AA", "CA"):
        assert block.find(b"MSA| ") > 0  # only unusual spacing falls through to the parser, which decides


def test_the_shortcut_reads_the_first_msa_only() -> None:
    block = b"MSH|^~\\&|RIS|H|RS|R|2024||ACK|A1|P|2.5.1\rMSA|AE|MSG1\rMSA|AA|MSG1\r"
    assert is_plain_accept(block, "MSG1") is None
    assert is_plain_accept(block.replace(b"AE", b"AA", 1), "MSG1") == "AA"
