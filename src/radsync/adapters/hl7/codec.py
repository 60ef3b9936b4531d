"""HL7 v2 message access: a lean, lazy reader over one decoded message (HL7 v2.5.1 ch. 2.5-2.7, MAPPING.md §2.3).

Why not ``hl7.parse`` on the hot path: it builds ~260 containers for one ORM^O01 (~1.3 ms here) although the
mapping reads a few dozen values. This reader splits segments once and fields, repetitions, components and
sub-components only when asked, with the delimiters read from MSH-1/MSH-2 (never assumed; the v2.7 truncation
character in MSH-2 is understood). Positions are 1-based, as HL7 counts: ``msg.value("PID", 3, rep=1, comp=4,
sub=1)``. The tests compare every value with ``hl7.parse`` over a corpus of messages.

Leaf values are unescaped by python-hl7's own machinery (``hl7.containers.Message.unescape``), not by code of
ours: radsync only supplies the application map python-hl7 leaves to the application (``\\H\\``/``\\N\\``
dropped, ``\\.br\\`` as CR LF in text or a space elsewhere, ``\\Xhh..\\`` decoded with the message charset) and
turns escape characters that start no valid sequence (``BSV 4\\5``, a name that is just ``\\``) into ``\\E\\`` first,
so they survive literally (FIELD-NOTES B.11). Outbound text is escaped with ``hl7.util.escape``.

``""`` (two quotation marks) is HL7's explicit null, "delete the value"; an empty field means "no change"
(MAPPING.md §1.4). Both reach the caller unchanged: compare with ``NULL``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import hl7
from hl7.util import escape as hl7_escape

from radsync.adapters.hl7.errors import ErrorCode, Hl7Error, Location

NULL = '""'
HEADER_SEGMENTS = frozenset({"MSH", "BHS", "FHS"})
_new_location = tuple.__new__  # a Location without NamedTuple's argument handling: built for every field read
_DELIMITER_ESCAPES = frozenset({"F", "S", "T", "R", "E"})  # python-hl7 maps these from the separators
CRLF = "\r\n"


@dataclass(frozen=True, slots=True)
class Delimiters:
    """MSH-1 and MSH-2: field, component, repetition, escape, sub-component and (v2.7+) truncation characters."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @classmethod
    def from_msh(cls, msh: str) -> Delimiters:
        field = msh[3]
        end = msh.find(field, 4)
        return _delimiters(field, msh[4:end] if end != -1 else msh[4:])

    @classmethod
    def _parse(cls, field: str, chars: str) -> Delimiters:
        default = cls()
        picked = [chars[i] if len(chars) > i else d for i, d in enumerate(
            (default.component, default.repetition, default.escape, default.subcomponent, ""))]
        delimiters = cls(field, *picked)
        used = [c for c in (field, *picked) if c]
        if len(set(used)) != len(used) or any(c.isalnum() or c in "\r\n" for c in used):
            raise Hl7Error(ErrorCode.DATA_TYPE, "MSH-1/MSH-2 encoding characters are invalid", Location("MSH", 1, 2))
        return delimiters

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as it is written back (ACK)."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


@lru_cache(maxsize=64)
def _delimiters(field: str, chars: str) -> Delimiters:
    """Delimiters by MSH-1/MSH-2 (a sender uses the same few every time)."""
    return Delimiters._parse(field, chars)


def split_segments(text: str) -> list[str]:
    """Split on the segment terminator: CR; CR LF or LF only when the message has no bare CR (FIELD-NOTES A.1-2).

    A LF inside OBX-5/NTE text of a CR-terminated message stays data; a LF right after a CR belongs to a CR LF
    terminator.
    """
    if "\r" in text:
        chunks = text.split("\r")
        chunks = [c[1:] if c.startswith("\n") else c for c in chunks]
    else:
        chunks = text.split("\n")
    return [c for c in chunks if c.strip()]


class Composite:
    """One repetition of a field read by component, or one component read by sub-component (CNN inside NDL).

    ``get(i)`` is the unescaped leaf at position ``i`` (its first sub-component, for a repetition); ``raw(i)``
    the text as sent.
    """

    __slots__ = ("message", "text", "_separator", "_nested", "_parts")

    def __init__(self, message: Message, text: str, separator: str, nested: str) -> None:
        self.message = message
        self.text = text
        self._separator = separator
        self._nested = nested
        self._parts: list[str] | None = None

    def __bool__(self) -> bool:
        return bool(self.text)

    @property
    def is_null(self) -> bool:
        return self.text == NULL

    def parts(self) -> list[str]:
        if self._parts is None:
            self._parts = self.text.split(self._separator)
        return self._parts

    def raw(self, i: int) -> str:
        parts = self.parts()
        return parts[i - 1] if 0 < i <= len(parts) else ""

    def get(self, i: int, sub: int = 1, *, text: bool = False) -> str:
        parts = self._parts if self._parts is not None else self.parts()
        leaf = parts[i - 1] if 0 < i <= len(parts) else ""
        if self._nested and self._nested in leaf:
            subs = leaf.split(self._nested)
            leaf = subs[sub - 1] if 0 < sub <= len(subs) else ""
        elif sub != 1:
            return ""
        return self.message.unescape(leaf, text=text) if self.message.delimiters.escape in leaf else leaf

    def values(self, count: int) -> list[str]:
        """Components 1..count as unescaped leaves (first sub-component each), padded with "" — one call for a
        whole XPN/XCN/CX instead of one ``get`` per component."""
        parts = self._parts if self._parts is not None else self.parts()
        nested = self._nested
        esc = self.message.delimiters.escape
        out = []
        for leaf in parts[:count]:
            if nested and nested in leaf:
                leaf = leaf.split(nested, 1)[0]
            out.append(self.message.unescape(leaf) if esc in leaf else leaf)
        out.extend([""] * (count - len(out)))
        return out

    def sub(self, i: int) -> Composite:
        """Component ``i`` read by sub-component (e.g. CX.4 as HD, OBR-34.1 as CNN)."""
        return Composite(self.message, self.raw(i), self._nested or self._separator, "")


class Segment:
    """One segment; fields are split on first access. Field ``n`` is HL7's SEG-n (``MSH-1`` is the separator)."""

    __slots__ = ("message", "text", "name", "sequence", "_fields", "_reps")

    def __init__(self, message: Message, text: str, sequence: int = 1) -> None:
        self.message = message
        self.text = text
        self.name = text[:3]
        self.sequence = sequence  # 1 for the first segment of this name, 2 for the second ... (ERR locations)
        self._fields: list[str] | None = None
        self._reps: dict[int, list[Composite]] = {}

    def __repr__(self) -> str:
        return f"<Segment {self.name} #{self.sequence}>"

    def at(self, field: int, rep: int = 0, comp: int = 0, sub: int = 0) -> Location:
        """The ERR location of a position in this segment."""
        return _new_location(Location, (self.name, self.sequence, field, rep, comp, sub))

    def fields(self) -> list[str]:
        """``[name, SEG-1, SEG-2, ...]`` as sent (escaped)."""
        if self._fields is None:
            separator = self.message.delimiters.field
            parts = self.text.split(separator)
            if self.name in HEADER_SEGMENTS:
                parts = [parts[0], separator, *parts[1:]]
            self._fields = parts
        return self._fields

    def __len__(self) -> int:
        """Highest field number present."""
        return len(self.fields()) - 1

    def field(self, n: int) -> str:
        fields = self.fields()
        return fields[n] if 0 < n < len(fields) else ""

    def repetitions(self, n: int) -> list[Composite]:
        reps = self._reps.get(n)
        if reps is None:
            raw = self.field(n)
            d = self.message.delimiters
            if not raw:
                reps = []
            elif self.name in HEADER_SEGMENTS and n in (1, 2):
                reps = [Composite(self.message, raw, "\0", "")]
            else:
                reps = [Composite(self.message, r, d.component, d.subcomponent) for r in raw.split(d.repetition)]
            self._reps[n] = reps
        return reps

    def rep(self, n: int, rep: int = 1) -> Composite:
        reps = self.repetitions(n)
        if 0 < rep <= len(reps):
            return reps[rep - 1]
        return Composite(self.message, "", self.message.delimiters.component, self.message.delimiters.subcomponent)

    def raw(self, n: int, rep: int = 1, comp: int = 1, sub: int = 1) -> str:
        """The leaf at SEG-n.rep.comp.sub as sent; MSH-1 and MSH-2 are returned whole."""
        if self.name in HEADER_SEGMENTS and n in (1, 2):
            return self.field(n)
        field = self.field(n)
        if not field:
            return ""
        d = self.message.delimiters
        if d.component not in field and d.repetition not in field and d.subcomponent not in field:
            return field if rep == 1 and comp == 1 and sub == 1 else ""  # the common single-value field
        composite = self.rep(n, rep)
        leaf = composite.raw(comp)
        subcomponent = self.message.delimiters.subcomponent
        if subcomponent in leaf:
            subs = leaf.split(subcomponent)
            return subs[sub - 1] if 0 < sub <= len(subs) else ""
        return leaf if sub == 1 else ""

    def value(self, n: int, rep: int = 1, comp: int = 1, sub: int = 1, *, text: bool = False) -> str:
        """The unescaped leaf at SEG-n.rep.comp.sub ("" when absent); ``text`` for ST/TX/FT targets (CR LF kept)."""
        fields = self._fields if self._fields is not None else self.fields()
        field = fields[n] if 0 < n < len(fields) else ""
        if not field:
            return ""
        d = self.message.delimiters
        if d.component not in field and d.repetition not in field and d.subcomponent not in field:
            leaf = field if rep == 1 and comp == 1 and sub == 1 else ""  # the common single-value field
        elif self.name in HEADER_SEGMENTS and n in (1, 2):
            return field
        else:
            leaf = self.raw(n, rep, comp, sub)
        if not leaf or d.escape not in leaf or (n < 3 and self.name in HEADER_SEGMENTS):
            return leaf
        return self.message.unescape(leaf, text=text)


class Message:
    """One decoded HL7 v2 message; segments split at construction, everything else on demand."""

    __slots__ = ("text", "codec", "delimiters", "segments", "_index", "_container", "_unescaped")

    def __init__(self, text: str, codec: str = "utf-8") -> None:
        text = text.lstrip("\ufeff \t\r\n\x00")
        if not text.startswith("MSH") or len(text) < 8:
            raise Hl7Error(ErrorCode.SEGMENT_SEQUENCE, "message does not begin with an MSH segment", Location("MSH"))
        self.text = text
        self.codec = codec
        self.delimiters = Delimiters.from_msh(text)
        self.segments: list[Segment] = []
        self._index: dict[str, list[Segment]] = {}
        for chunk in split_segments(text):
            same_name = self._index.setdefault(chunk[:3], [])
            segment = Segment(self, chunk, len(same_name) + 1)
            same_name.append(segment)
            self.segments.append(segment)
        self._unescaped: dict[tuple[str, bool], str] = {}
        self._container: hl7.Message | None = None

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def segment(self, name: str) -> Segment | None:
        found = self._index.get(name)
        return found[0] if found else None

    def all(self, name: str) -> list[Segment]:
        return self._index.get(name, [])

    def value(self, name: str, n: int, rep: int = 1, comp: int = 1, sub: int = 1, *, text: bool = False) -> str:
        """Leaf of the first segment called ``name``; "" when the segment or the position is absent."""
        segment = self.segment(name)
        return segment.value(n, rep, comp, sub, text=text) if segment else ""

    def groups(self, start: str) -> Iterator[list[Segment]]:
        """Segments from each ``start`` segment up to the next one (ORC/OBR/NTE/OBX/IPC groups of an order)."""
        group: list[Segment] | None = None
        for segment in self.segments:
            if segment.name == start:
                if group:
                    yield group
                group = [segment]
            elif group is not None:
                group.append(segment)
        if group:
            yield group

    # -- escaping ----------------------------------------------------------------------------------------

    def unescape(self, value: str, *, text: bool = False) -> str:
        """Decode escape sequences in one leaf with python-hl7 (HL7 v2.5.1 ch. 2.7), radsync's app map added."""
        esc = self.delimiters.escape
        if not esc or esc not in value:
            return value
        known = self._unescaped.get((value, text))
        if known is None:
            normalised, names = _normalise_escapes(value, esc)
            app_map = {name: self._substitute(name, text) for name in names if name not in _DELIMITER_ESCAPES}
            known = self._unescaped[(value, text)] = str(self.container().unescape(normalised, app_map=app_map))
        return known

    def escape(self, value: str) -> str:
        """Escape free text for an outbound field with ``hl7.util.escape``; non-ASCII as \\Xhh\\ in the charset."""
        app_map: dict[str, str] = {}
        for ch in set(value):
            if self.delimiters.truncation and ch == self.delimiters.truncation:
                app_map[ch] = "P"
            elif not (" " <= ch <= "~") and ch != "\r":
                app_map[ch] = "X" + ch.encode(self.codec, errors="replace").hex().upper()
        return str(hl7_escape(self.container(), value, app_map or None))

    def container(self) -> hl7.Message:
        """An empty python-hl7 Message with this message's separators: the home of its escape machinery."""
        if self._container is None:
            d = self.delimiters
            self._container = hl7.Message(
                separators="\r" + d.field + d.repetition + d.component + d.subcomponent, esc=d.escape
            )
        return self._container

    def _substitute(self, name: str, text: bool) -> str:
        if name in ("H", "N") or name[0] in "ZCM":
            # Highlighting has no DICOM equivalent; locally defined (Z) and ISO 2022 switches (C, M) are dropped.
            return ""
        if name == "P":
            return self.delimiters.truncation or "#"
        if name[0] == "X":
            return _hex_text(name[1:], self.codec)
        command, _, count = name[1:3], None, name[3:].strip()
        repeat = int(count) if count.lstrip("+-").isdigit() else 1
        if command in ("br", "sp", "ce"):
            return (CRLF if text else " ") * max(repeat, 1)
        if command in ("in", "ti", "sk"):
            return " " * max(repeat, 1) if text else " "
        return ""  # .fi / .nf: fill mode switches


def _hex_text(digits: str, codec: str) -> str:
    """\\Xhh..\\: bytes in the message charset; a sender writing Unicode code points (\\X00E0\\) is understood too,
    and bytes that are not valid in the message charset are read as ISO 8859-1 rather than dropped."""
    data = bytes.fromhex(digits)
    try:
        decoded = data.decode(codec)
        if not any(ord(c) < 0x20 and c not in "\r\n\t" for c in decoded):
            return decoded
    except UnicodeDecodeError:
        pass
    if len(data) % 2 == 0:
        try:
            return data.decode("utf-16-be")
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1")


@lru_cache(maxsize=16)
def _escape_pattern(esc: str) -> re.Pattern[str]:
    e = re.escape(esc)
    body = (
        rf"[FSTREPHN]|X(?:[0-9A-Fa-f]{{2}})+|Z[^{e}]*|C[0-9A-Fa-f]{{4}}|M[0-9A-Fa-f]{{4}}(?:[0-9A-Fa-f]{{2}})?"
        rf"|\.(?:br|sp|in|ti|sk|ce|fi|nf)[^{e}]*"
    )
    return re.compile(rf"{e}({body}){e}")


def _normalise_escapes(value: str, esc: str) -> tuple[str, set[str]]:
    """Rewrite escape characters that start no valid sequence as ``\\E\\``; return the sequences found."""
    out: list[str] = []
    names: set[str] = set()
    literal = esc + "E" + esc
    position = 0
    for match in _escape_pattern(esc).finditer(value):
        out.append(value[position:match.start()].replace(esc, literal))
        out.append(match.group(0))
        names.add(match.group(1))
        position = match.end()
    out.append(value[position:].replace(esc, literal))
    return "".join(out), names
