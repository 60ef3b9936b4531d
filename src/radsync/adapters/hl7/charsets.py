"""Character sets: MSH-18 decides how each message's bytes are decoded (MAPPING.md §2.4, HL7 table 0211).

The MLLP block arrives as bytes. MSH only holds ASCII, so radsync reads MSH-18 from the raw bytes first and then
decodes the whole message with the codec it names. An empty MSH-18 means 7-bit ASCII in HL7, but real senders
send UTF-8 or Latin-1 without saying so (FIELD-NOTES C.19-20): radsync tries UTF-8 and falls back to the
configured ``hl7_fallback_charset``. An unknown or repeated MSH-18 is rejected (AR, ERR 103 at MSH-18): decoding
with a guess would store wrong names silently.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from radsync.adapters.hl7.errors import ErrorCode, Hl7Error, Location, rejected

BOM = codecs.BOM_UTF8
MSH18 = Location("MSH", 1, 18)


@dataclass(frozen=True, slots=True)
class Charset:
    """One MSH-18 value: the Python codec that decodes it and the DICOM Specific Character Set term."""

    hl7_name: str
    codec: str
    dicom_term: str = ""


_TABLE = (
    Charset("ASCII", "ascii", ""),
    Charset("8859/1", "latin-1", "ISO_IR 100"),
    Charset("8859/2", "iso8859-2", "ISO_IR 101"),
    Charset("8859/3", "iso8859-3", "ISO_IR 109"),
    Charset("8859/4", "iso8859-4", "ISO_IR 110"),
    Charset("8859/5", "iso8859-5", "ISO_IR 144"),
    Charset("8859/6", "iso8859-6", "ISO_IR 127"),
    Charset("8859/7", "iso8859-7", "ISO_IR 126"),
    Charset("8859/8", "iso8859-8", "ISO_IR 138"),
    Charset("8859/9", "iso8859-9", "ISO_IR 148"),
    Charset("8859/15", "iso8859-15", "ISO_IR 203"),
    Charset("ISO IR14", "shift_jis", "ISO_IR 13"),
    Charset("ISO IR87", "iso2022_jp", "ISO 2022 IR 87"),
    Charset("ISO IR159", "iso2022_jp_2", "ISO 2022 IR 159"),
    Charset("KS X 1001", "euc_kr", "ISO 2022 IR 149"),
    Charset("GB 18030-2000", "gb18030", "GB18030"),
    Charset("UNICODE UTF-8", "utf-8", "ISO_IR 192"),
    # v2.3.1 "UNICODE" named ISO 10646 without an encoding; dcm4che (and radsync) read it as UTF-8.
    Charset("UNICODE", "utf-8", "ISO_IR 192"),
    # No DICOM term: transcoded to UTF-8 (ISO_IR 192) on the way out.
    Charset("BIG-5", "big5", ""),
    Charset("WINDOWS-1252", "cp1252", ""),
)

# Aliases seen in the field (dcm4che#747 and friends), compared after _normalise().
_ALIASES = {
    "UTF-8": "UNICODE UTF-8",
    "UTF8": "UNICODE UTF-8",
    "CP1252": "WINDOWS-1252",
    "ISO-8859-1": "8859/1",
    "ISO8859-1": "8859/1",
    "LATIN1": "8859/1",
    "LATIN-1": "8859/1",
    "ISO-8859-15": "8859/15",
    "GB18030": "GB 18030-2000",
    "BIG5": "BIG-5",
    "US-ASCII": "ASCII",
}


def _normalise(name: str) -> str:
    return "".join(ch for ch in name.upper() if ch not in " -_/")


_BY_KEY: dict[str, Charset] = {_normalise(c.hl7_name): c for c in _TABLE}
_BY_KEY.update({_normalise(alias): _BY_KEY[_normalise(target)] for alias, target in _ALIASES.items()})


def charset_named(msh18: str) -> Charset | None:
    """The charset an MSH-18 value names, or ``None`` if radsync does not know it."""
    return _BY_KEY.get(_normalise(msh18.strip()))


@dataclass(frozen=True, slots=True)
class Decoded:
    """A message as text, with the charset it was decoded with (``declared`` False when MSH-18 was empty)."""

    text: str
    charset: Charset
    declared: bool


def strip_preamble(raw: bytes) -> bytes:
    """Drop a UTF-8 BOM and whitespace before ``MSH`` (FIELD-NOTES A.5)."""
    if raw.startswith(BOM):
        raw = raw[len(BOM):]
    return raw.lstrip(b" \t\r\n\x00")


def header_fields(raw: bytes) -> list[bytes]:
    """MSH split into fields, as bytes (MSH-n is element n-1, MSH-1 being the separator itself)."""
    end = len(raw)
    for terminator in (b"\r", b"\n"):
        at = raw.find(terminator)
        if at != -1:
            end = min(end, at)
    msh = raw[:end]
    if not msh.startswith(b"MSH") or len(msh) < 4:
        return []
    return msh.split(msh[3:4])


def decode(raw: bytes, fallback_codec: str) -> Decoded:
    """Decode one message as its MSH-18 says; raise an AR ``Hl7Error`` when that is impossible."""
    raw = strip_preamble(raw)
    fields = header_fields(raw)
    msh18 = fields[17] if len(fields) > 17 else b""
    try:
        declared_name = msh18.decode("ascii").strip()
    except UnicodeDecodeError:
        raise rejected(ErrorCode.TABLE_VALUE_NOT_FOUND, "MSH-18 is not ASCII", MSH18) from None
    repetition = fields[1][1:2] if len(fields) > 1 else b"~"
    if repetition and repetition.decode("latin-1") in declared_name:
        raise rejected(
            ErrorCode.TABLE_VALUE_NOT_FOUND,
            "MSH-18 repeats: ISO 2022 code extensions (several character sets) are not supported",
            Location("MSH", 1, 18, 2),
        )
    if not declared_name or declared_name == '""':
        try:
            return Decoded(raw.decode("utf-8"), _BY_KEY["UNICODEUTF8"], declared=False)
        except UnicodeDecodeError:
            fallback = Charset("", fallback_codec)
            return Decoded(raw.decode(fallback_codec, errors="replace"), fallback, declared=False)
    charset = charset_named(declared_name)
    if charset is None:
        raise rejected(
            ErrorCode.TABLE_VALUE_NOT_FOUND,
            f"MSH-18 character set {declared_name!r} is not supported (HL7 table 0211)",
            MSH18,
        )
    try:
        return Decoded(raw.decode(charset.codec), charset, declared=True)
    except UnicodeDecodeError as exc:
        raise Hl7Error(
            ErrorCode.DATA_TYPE,
            f"bytes at offset {exc.start} are not valid {charset.hl7_name} as MSH-18 declares",
            MSH18,
        ) from None
