"""Reading the receiver's acknowledgement of an outbound HL7 message: MSA-1 and MSA-2, nothing more.

The inbound adapter (``adapters/hl7``) builds ACKs; this side only needs to know which message an answer is for
(MSA-2, the message control ID it acknowledges) and what it says (MSA-1). HL7 v2.5.1 ch. 2.9 / MAPPING.md §6.5:

- original mode: ``AA`` accepted, ``AE`` application error, ``AR`` application reject;
- enhanced mode (commit ACK): ``CA`` commit accept, ``CE`` commit error, ``CR`` commit reject.

python-hl7 does the parsing (escape sequences, any field and component separators), of what matters only: the
MSA segment behind the ACK's own MSH-1/MSH-2 (the rest of the MSH says nothing about which message is confirmed).

``is_plain_accept`` is the one shortcut: an ACK whose MSA line reads literally ``MSA|AA|<our control ID>`` (or CA)
is the positive answer for that message, whatever else it carries; bytes that match literally leave no room for
escapes or components, so no parser could read them differently. It skips the parser for the common case, which
costs 80-200 µs on these machines, as much as the whole MLLP round trip. Everything else is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import hl7


class AckKind(Enum):
    ACCEPT = "accept"
    ERROR = "error"
    REJECT = "reject"


ACK_CODES: dict[str, AckKind] = {
    "AA": AckKind.ACCEPT,
    "CA": AckKind.ACCEPT,
    "AE": AckKind.ERROR,
    "CE": AckKind.ERROR,
    "AR": AckKind.REJECT,
    "CR": AckKind.REJECT,
}


@dataclass(frozen=True, slots=True)
class Ack:
    code: str
    control_id: str
    text: str = ""

    @property
    def kind(self) -> AckKind:
        """An unknown code is an error: it did not say the message was accepted."""
        return ACK_CODES.get(self.code, AckKind.ERROR)


def parse_ack(block: bytes) -> Ack | None:
    """The MSA of an MLLP block, or None when the block is not an HL7 message with an MSA segment."""
    text = block.decode("utf-8", "replace").replace("\r\n", "\r").replace("\n", "\r")
    if not text.startswith("MSH") or len(text) < 8:
        return None
    segments = text.split("\r")
    header, separator = segments[0], text[3]
    end = header.find(separator, 4)
    encoding = header[4:end] if end > 0 else header[4:]
    msa_line = next((s for s in segments if s.startswith("MSA" + separator)), None)
    if msa_line is None:
        return None
    try:
        msa = hl7.parse(f"MSH{separator}{encoding}\r{msa_line}").segment("MSA")
    except (KeyError, IndexError, ValueError, hl7.HL7Exception):
        return None
    code = str(msa[1]).strip().upper() if len(msa) > 1 else ""
    control_id = str(msa[2]).strip() if len(msa) > 2 else ""
    detail = str(msa[3]).strip() if len(msa) > 3 else ""
    return Ack(code, control_id, detail) if code else None


def is_plain_accept(block: bytes, control_id: str) -> str | None:
    """``AA`` or ``CA`` when the block's (first) MSA reads literally ``MSA|AA|control_id``, else None.

    None means "parse it" (``parse_ack``), not "refused": an ACK with escapes, odd spacing or an error code is
    decided by the parser.
    """
    if len(block) < 8 or not block.startswith(b"MSH"):
        return None
    separator = block[3:4]
    text = block.replace(b"\n", b"\r")
    start = text.find(b"\rMSA" + separator)
    if start < 0:
        return None
    end = text.find(b"\r", start + 1)
    fields = text[start + 1 : end if end >= 0 else len(text)].split(separator, 3)
    if len(fields) >= 3 and fields[1] in (b"AA", b"CA") and fields[2] == control_id.encode("ascii", "replace"):
        return fields[1].decode()
    return None
