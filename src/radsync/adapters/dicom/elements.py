"""Data element encoding for C-FIND answers (PS3.5 §7.1 data elements, §7.5 sequence items, §6.2 padding).

Why this exists: pynetdicom encodes the identifier a handler yields with pydicom. A Dataset built attribute by
attribute costs ~1.2 ms and its encoding ~0.6 ms per worklist item (PERF-NOTES.md), which is most of the time of a
330-item answer. radsync instead encodes each answer element once, here, straight from the domain values, and hands
pynetdicom a Dataset of ``RawDataElement``s whose original encoding equals the presentation context's transfer
syntax, so pydicom writes their bytes as they are. Character data is still encoded by pydicom (see charset.py);
this module only frames values: tag, VR, length, item delimitation and padding. The tests compare its output byte
for byte with pydicom's own writer for every transfer syntax.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag

from radsync.adapters.dicom.charset import ResponseCharset

# VRs whose explicit-VR header has two reserved bytes and a 32-bit length (PS3.5 Table 7.1-1).
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
# VRs whose values are character data in the Specific Character Set (PS3.5 §6.1.2.3).
TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC"})
_ITEM = 0xFFFEE000

Value = str | int | Sequence[str] | None
Encode = Callable[[Value], bytes]


@dataclass(frozen=True, slots=True)
class TransferSyntax:
    """The element encoding of a presentation context."""

    implicit_vr: bool
    little_endian: bool

    @property
    def byte_order(self) -> str:
        return "<" if self.little_endian else ">"


class ElementWriter:
    """Frames encoded values as data elements and sequence items in one transfer syntax."""

    def __init__(self, syntax: TransferSyntax) -> None:
        self.syntax = syntax
        order = syntax.byte_order
        self._implicit = struct.Struct(order + "HHL")
        self._short = struct.Struct(order + "HH2sH")
        self._long = struct.Struct(order + "HH2s2xL")
        self._us = struct.Struct(order + "H")

    def element(self, tag: int, vr: str, value: bytes) -> bytes:
        if self.syntax.implicit_vr:
            return self._implicit.pack(tag >> 16, tag & 0xFFFF, len(value)) + value
        if vr in _LONG_VRS:
            return self._long.pack(tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value
        return self._short.pack(tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value

    def item(self, body: bytes) -> bytes:
        """One sequence item of defined length."""
        return self._implicit.pack(_ITEM >> 16, _ITEM & 0xFFFF, len(body)) + body

    def raw(self, tag: BaseTag, vr: str, value: bytes) -> RawDataElement:
        """A top-level element for pydicom to write unchanged (its encoding matches the dataset's)."""
        return RawDataElement(
            tag, vr, len(value), value, 0, self.syntax.implicit_vr, self.syntax.little_endian, True, False
        )

    def value_encoder(self, vr: str, charset: ResponseCharset) -> Encode:
        """The function turning a domain value into the padded value bytes of one element of ``vr``."""
        if vr == "PN":
            return _text(charset.person_name)
        if vr in TEXT_VRS:
            return _text(charset.text)
        if vr == "US":
            us = self._us

            def encode_us(value: Value) -> bytes:
                return b"" if value is None or value == "" else us.pack(int(value))  # type: ignore[arg-type]

            return encode_us
        return _ascii(b"\x00" if vr == "UI" else b" ")


def _joined(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return "\\".join(str(v) for v in value)  # type: ignore[union-attr]


def _text(encode: Callable[[str], bytes]) -> Encode:
    def encode_text(value: Value) -> bytes:
        text = _joined(value)
        if not text:
            return b""
        data = encode(text)
        return data + b" " if len(data) % 2 else data

    return encode_text


def _ascii(pad: bytes) -> Encode:
    def encode_ascii(value: Value) -> bytes:
        data = _joined(value).encode("ascii", "replace")
        return data + pad if len(data) % 2 else data

    return encode_ascii
